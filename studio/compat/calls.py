"""Running a compatibility call's work as its user, as the page's events run (studio.boundary): inside
`calling(caller)` — the host's admission, the lanes' fair turns and the actions' work counting read it — a guest
with no quota left refused up front, the work counted where it is done, and given back when it fails; and the
pictures both layers read and answer with."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from pipelines.image import GenerationCancelled, ImageParams, open_user_image
from pipelines.media import png_bytes
from studio.actions.images import make_images
from studio.compat.auth import ApiUser, caller_for
from studio.compat.wire import CompatError
from studio.caller import calling, run_steps


def _admitted(services, user: ApiUser, tab: str, generation: bool):
    caller = caller_for(services, user, tab)
    if generation and caller.guest and (services.access.remaining(caller.user) or 0) <= 0:
        caller.spend(1.0, "this request")  # no quota left: refused here, before any work (says when it resets)
    return caller


def _failed(services, caller, exc: BaseException) -> None:
    services.host.recover_from_out_of_memory(exc)
    caller.refund()


def run_as(services, user: ApiUser, tab: str, work: Callable, *, generation: bool = False):
    """`work()` as `user` in `tab`; `generation` counts one against a guest's quota (given back on failure)."""
    caller = _admitted(services, user, tab, generation)
    try:
        with calling(caller):
            return work()
    except BaseException as exc:
        _failed(services, caller, exc)
        raise


def stream_as(services, user: ApiUser, tab: str, steps: Iterator, *, generation: bool = True) -> Iterator:
    """`steps`, each step run as `user` (a streamed answer's steps may run on different threads)."""
    caller = _admitted(services, user, tab, generation)
    try:
        yield from run_steps(caller, steps)
    except BaseException as exc:
        _failed(services, caller, exc)
        raise


class Interrupted(CompatError):
    """The caller's own interrupt (or skip) stopped the job before its pictures were made: 409."""

    def __init__(self) -> None:
        super().__init__(409, "interrupted: the job was stopped before its pictures were made (nothing was kept)",
                         code="cancelled")


def make_pictures(services, user: ApiUser, params: ImageParams, model: str, progress=None):
    """The studio's pictures for `params`, kept in `user`'s History: (kept, out, pipe) as actions.make_images."""
    params.validate(services.settings.image_limits)  # a guest's own, lower limits: in the action
    try:
        return run_as(services, user, "image", lambda: make_images(services, params, model, user.name, user.session,
                                                                   progress), generation=True)
    except GenerationCancelled:
        raise Interrupted() from None


def picture(services, data: bytes | str, field: str, *, mode: str = "RGB"):
    """A picture from its bytes or base64 text (a data: URL too), or a 400 naming `field`."""
    if isinstance(data, str):
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            data = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            raise CompatError(400, f"{field}: not base64 image data", param=field) from None
    try:
        image, _ = open_user_image(io.BytesIO(data), services.settings.image_limits.max_image_pixels, mode=mode)
    except ValueError as exc:
        raise CompatError(400, f"{field}: {exc}", param=field) from None
    return image


def kept_pngs(kept: list[tuple]) -> list[bytes]:
    """The PNG files of pictures kept (with their parameters, credentials and watermark), or encoded anew
    when the disk was full."""
    return [Path(path).read_bytes() if isinstance(path, str) else png_bytes(path) for path, _seed, _id in kept]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

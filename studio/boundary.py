"""The user boundary: every event of the app runs as its request's `Caller`, or not at all.

`seal(app, services)` is the one place events pass through: called once the Blocks are built, it wraps the function
of every registered event — the page's own (private or not, queued or `queue=False`), the Gradio API, MCP tools,
`load` events and ones added later — so that before the handler runs, the request's Caller is built from the login
(`request_caller`) and set for the handler and everything it calls (`studio.caller`). A request that cannot name
its user is refused: no request at all, a studio with logins and no login on the request, a user the studio does
not know, or a studio without logins reached through a proxy (anyone behind it would be the owner).

What a Caller may do is decided where each thing is used — the model host (models, LoRAs, adapters, ControlNets,
engines), the style store, History and the file route (items) — never from a handler's argument names.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading

import gradio as gr

from studio.access import AccessDenied
from studio.caller import Caller, calling, current_caller, run_steps

PROXY_HEADERS = ("x-forwarded-for", "x-forwarded-host", "forwarded", "x-real-ip")
IMAGE_UNIT = 20 * 512 * 512  # steps × pixels of one unit of work: a 512×512 picture at 20 steps
TEXT_UNIT = 512  # tokens of one unit of work
MIN_UNITS = 0.05  # the least a request costs: even a tiny picture is work
GUEST_UNQUEUED = 4  # events that skip the queue a guest may have running at once


def caller_for(services, user: str, session: str = "local") -> Caller:
    """The Caller for `user` (a login name, an API key's user, or "local"): guest or owner, charged in units. The
    session is the browser's, under the user's name: a session id is the client's to choose, so one user's Stop
    or prompt cache can never be reached by another user naming their session."""
    access = services.access
    return Caller(user, guest=access.is_guest(user), session=f"{user}/{session or 'local'}",
                  charge=lambda units, what: access.admit(user, units, what))


def request_caller(services, request) -> Caller:
    """The Caller of a Gradio request, or AccessDenied when it cannot name its user."""
    if request is None:
        raise AccessDenied("This request carries no user; it is refused.")
    session = getattr(request, "session_hash", None) or "local"
    user = getattr(request, "username", None)
    settings = services.settings
    if settings.logins:
        if not user:
            raise AccessDenied("Sign in first: this studio needs a login.")
        if not services.access.knows(user):
            raise AccessDenied("This login is not known here any more; sign in again.")
        return caller_for(services, user, session)
    headers = getattr(request, "headers", None) or {}
    if not settings.insecure_public and any(name in headers for name in PROXY_HEADERS):
        raise AccessDenied("This studio has no login and was reached through a proxy, so anyone could act as its "
                           "owner: it is refused. Start it with --auth (and --guest-auth for guests), or with "
                           "--insecure-public if you really mean it.")
    return caller_for(services, "local", session)


def seal(app: gr.Blocks, services) -> int:
    """Make every event registered on `app` run as its request's Caller (call once, after building it). Returns
    how many events were sealed."""
    sealed = 0
    for block_fn in app.fns.values():
        fn = block_fn.fn
        if fn is None or getattr(fn, "_studio_sealed", False):
            continue
        block_fn.fn = _as_caller(services, fn, block_fn)
        if block_fn.renderable is not None and block_fn.renderable.fn is fn:
            block_fn.renderable.fn = block_fn.fn
        sealed += 1
    return sealed


def _refused(exc: AccessDenied) -> gr.Error:
    return gr.Error(str(exc))


class _AtTheDoor:
    """Events that skip Gradio's queue (`queue=False`: sliders, scrubbing, real-time pictures, page toggles) start
    at once on the server's threads. A guest may have at most `GUEST_UNQUEUED` of them running at a time, however
    many browser sessions they open: a flood is refused at the door, before any of it is worked on."""

    GUEST_UNQUEUED = GUEST_UNQUEUED

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def enter(self, caller: Caller, block_fn) -> bool:
        if not caller.guest or getattr(block_fn, "queue", True) is not False:
            return False
        with self._lock:
            if self._running.get(caller.user, 0) >= self.GUEST_UNQUEUED:
                raise AccessDenied("Too many previews at once: wait for the ones being drawn.")
            self._running[caller.user] = self._running.get(caller.user, 0) + 1
        return True

    def leave(self, caller: Caller) -> None:
        with self._lock:
            self._running[caller.user] -= 1
            if not self._running[caller.user]:
                del self._running[caller.user]


_DOOR = _AtTheDoor()


def _begin(services, block_fn, args: tuple, kwargs: dict) -> Caller:
    from gradio.context import LocalContext

    try:
        caller = request_caller(services, LocalContext.request.get(None))
        uploads_only(block_fn, args, kwargs)
        caller.at_door = _DOOR.enter(caller, block_fn)
        return caller
    except AccessDenied as exc:
        raise _refused(exc) from None


def _end(caller: Caller) -> None:
    if getattr(caller, "at_door", False):
        caller.at_door = False
        _DOOR.leave(caller)


FILE_COMPONENTS = (gr.Image, gr.File, gr.ImageEditor, gr.Gallery, gr.Video, gr.Audio, gr.Model3D, gr.UploadButton)


def uploads_only(block_fn, args: tuple, kwargs: dict) -> None:
    """The only files a client may hand the studio are its fresh uploads (Gradio's upload folder): a path of the
    server's own — another user's picture, the database, /etc/passwd — sent as a file input is refused here,
    whatever Gradio's own checks say."""
    special = (gr.Request, gr.Progress, gr.EventData)
    values = [a for a in (*args, *kwargs.values()) if not isinstance(a, special)]
    components = list(block_fn.inputs or [])
    if len(values) == 1 and isinstance(values[0], dict) and values[0] and all(
            isinstance(k, gr.components.Component) for k in values[0]):
        pairs = list(values[0].items())  # inputs given as a set: one dict keyed by component
    else:
        pairs = list(zip(components, values))
    for component, value in pairs:
        if isinstance(component, FILE_COMPONENTS):
            for path in _paths_in(value):
                if not _is_upload(path):
                    raise AccessDenied(f"{component.label or 'file'}: only files uploaded from your computer are read; "
                                       "upload it again.")


def _paths_in(value):
    if value is None or isinstance(value, (bytes, int, float, bool)):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in ("path", "background", "composite", "layers", "image", "video"):
            if key in value:
                yield from _paths_in(value[key])
    elif isinstance(value, tuple) and value:  # a gallery's (picture, caption)
        yield from _paths_in(value[0])
    elif isinstance(value, list):
        for part in value:
            yield from _paths_in(part)
    elif hasattr(value, "path") and isinstance(value.path, str):
        yield value.path
    elif hasattr(value, "name") and isinstance(value.name, str) and hasattr(value, "read"):
        yield value.name


def _is_upload(path: str) -> bool:
    import os

    from gradio.utils import get_upload_folder

    if not path or path.startswith(("http://", "https://", "data:")):
        return not path.startswith(("http://", "https://"))  # data: URLs are decoded by Gradio, not read from disk
    try:
        real = os.path.realpath(path)
        folder = os.path.realpath(get_upload_folder())
    except (OSError, ValueError):
        return False
    return os.path.commonpath([real, folder]) == folder


@contextlib.contextmanager
def _request(services, block_fn, args: tuple, kwargs: dict):
    """One request as its Caller: built (or refused) first; its quota given back when it fails (a guest's bad
    input or a crash costs them nothing); its place at the door freed when it ends."""
    caller = _begin(services, block_fn, args, kwargs)
    try:
        yield caller
    except GeneratorExit:  # the page went away mid-answer: the work done stays counted
        raise
    except BaseException:
        caller.refund()
        raise
    finally:
        _end(caller)


def _as_caller(services, fn, block_fn):
    """`fn` run as the request's Caller: set for the call, and for each step of a generator (a step may run on
    another thread). Signature, generator-ness and Gradio's special arguments are those of `fn`."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def sealed_asyncgen(*args, **kwargs):
            with _request(services, block_fn, args, kwargs) as caller:
                with calling(caller):
                    steps = fn(*args, **kwargs)
                while True:
                    with calling(caller):
                        try:
                            item = await steps.__anext__()
                        except StopAsyncIteration:
                            return
                    yield item
        wrapped = sealed_asyncgen
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def sealed_gen(*args, **kwargs):
            with _request(services, block_fn, args, kwargs) as caller:
                with calling(caller):
                    steps = fn(*args, **kwargs)
                yield from run_steps(caller, steps)
        wrapped = sealed_gen
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def sealed_async(*args, **kwargs):
            with _request(services, block_fn, args, kwargs) as caller, calling(caller):
                return await fn(*args, **kwargs)
        wrapped = sealed_async
    else:
        @functools.wraps(fn)
        def sealed(*args, **kwargs):
            with _request(services, block_fn, args, kwargs) as caller, calling(caller):
                return fn(*args, **kwargs)
        wrapped = sealed
    wrapped._studio_sealed = True
    return wrapped


def the_caller() -> Caller:
    """The request's Caller inside a handler. Refuses (fail closed) outside a sealed event."""
    caller = current_caller()
    if caller is None:
        raise AccessDenied("This request carries no user; it is refused.")
    return caller


# -- what work costs -----------------------------------------------------------------------------------------
def image_units(pictures: int, steps: int, width: int, height: int) -> float:
    """Units of work of `pictures` pictures at `steps` steps of width × height (a 512×512 picture at 20 steps is
    one unit), at least MIN_UNITS."""
    return max(MIN_UNITS, pictures * max(steps, 1) * width * height / IMAGE_UNIT)


def text_units(tokens: int) -> float:
    return max(MIN_UNITS, tokens / TEXT_UNIT)

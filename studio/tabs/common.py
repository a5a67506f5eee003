"""Small helpers the tabs share: error messages in plain words, seeds, sessions, restore hooks."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from pipelines.checks import short
from pipelines.device import free_memory
from pipelines.memory import is_out_of_memory, out_of_memory_where
from pipelines.packages import PackageError
from pipelines.registry import ModelNotAvailable
from pipelines.text_worker import EngineCrashed
from studio.access import AccessDenied

log = logging.getLogger("studio")


@dataclass
class TabHandle:
    """What other tabs need from a tab: restoring parameters from History, and sending images.

    restore_outputs / restore: the components History fills and how, from an item's params.
    send_to_vae: (button, inputs, fn) — fn(*inputs) returns the path of an image to send to the VAE tab.
    receive_images: a gr.File (multiple) that collects images sent from other tabs.
    owner_controls: components guests may not use (model choice, training…); the server refuses anyway.
    """

    restore_outputs: list
    restore: Callable[[dict], list]
    send_to_vae: tuple | None = None
    receive_images: object | None = None
    owner_controls: list = field(default_factory=list)  # made read-only on a guest's page


def origin(request) -> str:
    """The address the caller reached the studio at (scheme and host), for links it can open."""
    headers = request.headers if request is not None else {}
    return f"{headers.get('x-forwarded-proto', 'http')}://{headers.get('host', '127.0.0.1')}"


def parse_seed(value) -> int | None:
    """Blank → None (random); otherwise a whole number from 0 to 2**32-1."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        seed = int(number)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be blank (random) or a whole number from 0 to 4,294,967,295, got {short(value)}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be from 0 to 4,294,967,295, got {seed}")
    return seed


def as_int(name: str, value) -> int:
    """A UI number (sliders send floats such as 4.0) as a whole number, or a clear error naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {short(value)}")
    return int(number)


def check_fields(*checks):
    """A Gradio `validator` from per-input checks (None = not checked): each check raises ValueError for a
    bad value; the message then shows next to that field, and the event does not run."""
    def validator(*values, **_):
        results = []
        for value, check in zip(values, list(checks) + [None] * (len(values) - len(checks))):
            try:
                if check is not None:
                    check(value)
                results.append(gr.validate(True, ""))
            except ValueError as exc:
                results.append(gr.validate(False, str(exc)))
        return results

    return validator


def seed_field(value) -> None:
    parse_seed(value)


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def user_of(request: gr.Request | None) -> str:
    return getattr(request, "username", None) or "local"


def _explain(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if is_out_of_memory(exc):
        free_memory()
        where = out_of_memory_where(exc)
        return gr.Error(f"The {where} ran out of memory. Try a smaller size, batch or token count, or close other "
                        "programs; memory was freed, so the next request will work.")
    if isinstance(exc, (ValueError, ModelNotAvailable, PackageError, AccessDenied, EngineCrashed)):
        return gr.Error(str(exc))
    log.exception("unexpected error")
    return gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). Your inputs are kept; try again.")


def friendly_errors(fn):
    """Turn known failures into a readable message (a toast), keeping the server up."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapped_gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise _explain(exc) from exc
        return wrapped_gen

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _explain(exc) from exc
    return wrapped


def _guest_checks(services, user: str, arguments: dict) -> None:
    """What guests may not name in an otherwise allowed event: engines and LoRA files. (Model names are the
    host's admission: `ModelHost.admit_model`, on every path that reaches a model.)"""
    if not services.access.is_guest(user):
        return
    engine = arguments.get("engine_", arguments.get("backend"))
    if isinstance(engine, str) and engine not in ("", "auto", services.settings.text_backend):
        raise AccessDenied("Guests can't change the text engine; it is the owner's setting.")
    if arguments.get("loras") or arguments.get("lora_files"):
        raise AccessDenied("Guests can't load LoRA files; only the studio's owner can add weights.")


def guarded(services, tab: str, *, generation: bool = False, owner_only: str = ""):
    """Server-side permission check for an event handler (put it under @friendly_errors).

    Finds the request among the handler's arguments by name and runs the handler as that user's `Caller`, which
    the model host's admission reads (model names, limits, a guest's quota for full renders). `generation=True`
    counts one generation against a guest's quota up front (given back if the handler fails; the host then
    counts no more for this request); `owner_only="train models"` refuses guests outright. A handler using it
    must take a `request: gr.Request` parameter so Gradio passes the user in.
    """
    from studio.host import calling

    def decorate(fn):
        signature = inspect.signature(fn)

        def admit(args, kwargs):
            arguments = signature.bind_partial(*args, **kwargs).arguments
            request = next((v for v in arguments.values() if isinstance(v, gr.Request)), None)
            user = user_of(request)
            if owner_only:
                services.access.require_owner(user, owner_only)
            _guest_checks(services, user, arguments)
            caller = services.caller(user, tab)
            admission = services.access.admit(user, tab) if generation else None
            if admission is not None and caller.guest:
                caller.charged.append(admission)
            return caller, admission

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapped_gen(*args, **kwargs):
                caller, admission = admit(args, kwargs)
                steps = fn(*args, **kwargs)
                try:
                    while True:
                        with calling(caller):  # each step may run on another thread: the caller goes along
                            try:
                                item = next(steps)
                            except StopIteration:
                                return
                        yield item
                except BaseException as exc:
                    services.recover_from_out_of_memory(exc)
                    for charge in caller.charged:
                        if charge:
                            charge.refund()
                    raise
                finally:
                    steps.close()
            return wrapped_gen

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            caller, admission = admit(args, kwargs)
            try:
                with calling(caller):
                    return fn(*args, **kwargs)
            except BaseException as exc:
                services.recover_from_out_of_memory(exc)
                for charge in caller.charged:
                    if charge:
                        charge.refund()
                raise
        return wrapped
    return decorate


def keep_output(services, tab: str, files: dict[str, bytes], *, listed: bool = True, **fields):
    """Save an output to History; if the disk is full (or unwritable) warn and return None, so the
    caller still shows the result from memory and the user can download it. `listed=False`: written only;
    the caller lists a batch's items together (`list_outputs`)."""
    try:
        if not listed:
            return services.history.write(tab, files, **fields)
        return services.history.add(tab, files, **fields)
    except OSError as exc:
        _not_kept(tab, exc)
        return None


def list_outputs(services, tab: str, items: list) -> list:
    """List a batch's written items (None: not written) in History in one transaction, in the batch's order;
    returns them as listed, or Nones if they could not be (a full disk: the user is warned as by `keep_output`)."""
    written = [item for item in items if item is not None]
    if not written:
        return items
    try:
        listed = iter(services.history.list_items(written))
    except (OSError, sqlite3.OperationalError) as exc:
        _not_kept(tab, exc)
        return [None] * len(items)
    return [next(listed) if item is not None else None for item in items]


def _not_kept(tab: str, exc: Exception) -> None:
    log.error("could not save a %s output to History: %s", tab, exc)
    gr.Warning(f"Your result is shown but could not be saved to History ({getattr(exc, 'strerror', None) or exc}). "
               "Free some disk space; download anything you want to keep now.")

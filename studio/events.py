"""What every event handler shares, whichever door it serves (page, Gradio API, compatibility APIs): errors in
plain words (`friendly_errors`), the Caller's rules a handler asks for (`guarded`), the request's user and session
(read from its Caller), keeping outputs in History, and the seed and number fields every form has. Nothing here
builds UI: the tabs' own pieces are in `studio/tabs/common.py`."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
import sqlite3

import gradio as gr

from pipelines.checks import short
from pipelines.device import free_memory
from pipelines.memory import is_out_of_memory, out_of_memory_where
from pipelines.packages import PackageError
from pipelines.registry import ModelNotAvailable
from pipelines.text_worker import EngineCrashed
from studio.access import AccessDenied

log = logging.getLogger("studio")


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


def session_of(request: gr.Request | None = None) -> str:
    """The request's browser session, from its Caller (`request` is not read: the boundary already did)."""
    from studio.boundary import the_caller

    return the_caller().session


def user_of(request: gr.Request | None = None) -> str:
    """The request's user, from its Caller (never from the handler's arguments)."""
    from studio.boundary import the_caller

    return the_caller().user


_SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.~+-]+/)+[\w.~+-]*")


def _for_caller(message: str) -> str:
    """A message as the request's caller may read it: a guest is not shown the server's folders (the owner is,
    to fix them)."""
    from studio.caller import current_caller

    caller = current_caller()
    if caller is None or not caller.guest:
        return message
    return _SERVER_PATH.sub("(a folder on the server)", message)


def _explain(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if is_out_of_memory(exc):
        free_memory()
        where = out_of_memory_where(exc)
        return gr.Error(f"The {where} ran out of memory. Try a smaller size, batch or token count, or close other "
                        "programs; memory was freed, so the next request will work.")
    if isinstance(exc, (ValueError, ModelNotAvailable, PackageError, AccessDenied, EngineCrashed)):
        return gr.Error(_for_caller(str(exc)))
    import uuid

    reference = uuid.uuid4().hex[:8]  # the details (exception, server paths) stay in the server's log
    log.exception("unexpected error (reference %s)", reference)
    return gr.Error(f"Something went wrong on the server (reference {reference}: its log has the details). Your "
                    "inputs are kept; try again.")


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


def guarded(services, tab: str, *, generation: bool = False, owner_only: str = ""):
    """What a handler asks of its request's `Caller` (put it under @friendly_errors). The Caller itself is built
    once per request by `studio.boundary.seal`, before any handler runs; this reads it (and refuses when there is
    none: fail closed). `owner_only="train models"` refuses guests outright. `generation=True`: a guest's request
    is refused up front once their quota is used up; the work itself is counted where it is done (pictures by
    steps and size in `actions.start_generation`, text by tokens in `actions.run_text`, renders in the host), and
    a request that made something without being counted there costs one unit. A failed request is refunded
    (by the boundary) and a model that ran out of memory is freed."""
    from studio.boundary import the_caller

    def admit():
        caller = the_caller()
        if owner_only:
            services.access.require_owner(caller.user, owner_only)
        if generation and caller.guest and (services.access.remaining(caller.user) or 0) <= 0:
            caller.spend(1.0, "this request")  # says when the quota has room again
        return caller

    def settle(caller):
        if generation and caller.guest and not caller.charged:
            caller.spend(1.0, "this request")

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapped_gen(*args, **kwargs):
                caller = admit()
                try:
                    yield from fn(*args, **kwargs)
                except BaseException as exc:
                    services.host.recover_from_out_of_memory(exc)
                    raise
                settle(caller)
            return wrapped_gen

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            caller = admit()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                services.host.recover_from_out_of_memory(exc)
                raise
            settle(caller)
            return result
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


def check_named(checks: dict):
    """A Gradio `validator` for an event whose `inputs` are a set (its values come as one dict keyed by
    component): `checks` maps a component to a check that raises ValueError for a bad value; the message then
    shows next to that field, and the event does not run. Gradio puts the answers, keyed by component, in the
    event's own order of inputs."""
    def validator(values: dict, *_, **__):
        results = {}
        for component, check in checks.items():
            try:
                check(values.get(component))
                results[component] = gr.validate(True, "")
            except ValueError as exc:
                results[component] = gr.validate(False, str(exc))
        return results

    return validator


def seed_field(value) -> None:
    parse_seed(value)

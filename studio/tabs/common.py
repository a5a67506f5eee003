"""Small helpers the tabs share: error messages in plain words, seeds, sessions, restore hooks."""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import torch

from pipelines.device import free_memory
from pipelines.packages import PackageError
from pipelines.registry import ModelNotAvailable

log = logging.getLogger("studio")


@dataclass
class TabHandle:
    """What other tabs need from a tab: restoring parameters from History, and sending images.

    restore_outputs / restore: the components History fills and how, from an item's params.
    send_to_vae: (button, inputs, fn) — fn(*inputs) returns the path of an image to send to the VAE tab.
    receive_images: a gr.File (multiple) that collects images sent from other tabs.
    """

    restore_outputs: list
    restore: Callable[[dict], list]
    send_to_vae: tuple | None = None
    receive_images: object | None = None


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
        raise ValueError(f"seed must be blank (random) or a whole number from 0 to 4,294,967,295, got {value!r}")
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
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def user_of(request: gr.Request | None) -> str:
    return getattr(request, "username", None) or "local"


def _explain(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, torch.OutOfMemoryError):
        free_memory()
        return gr.Error("Out of memory. Try a smaller size, batch or token count; memory was freed, so the "
                        "next request will work.")
    if isinstance(exc, (ValueError, ModelNotAvailable, PackageError)):
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

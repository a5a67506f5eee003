"""The public API's registry: each endpoint is a module-level function registered with `@endpoint(...)`,
which says its public name, who may call it and which concurrency group it runs in.

An endpoint function takes the app's `Services` as its first parameter and the API's named fields after it:

    @endpoint("png_info")
    def png_info(services: Services, image: FileData) -> dict:
        ...

so a test can call it directly with any `Services`. `bind(spec, services)` makes what `gr.api` registers: the
function with `services` filled in, the Caller's rules (`studio.events.guarded`) and plain-words errors
(`studio.events.friendly_errors`) around it, and a signature without `services` — Gradio reads the API's
parameters, defaults and types from that signature and the docstring, so they are exactly the function's own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from studio.events import friendly_errors, guarded

# Concurrency groups: how many requests of a group run at once (Gradio's concurrency_limit / concurrency_id).
GROUPS = ("text", "image", "latent", "model", "vae-train", "unqueued", None)


@dataclass(frozen=True)
class Endpoint:
    """One public API endpoint. `tab` set: the request's Caller is required (`guarded`); `counted`: a guest's
    request is held to their quota; `owners_only`: guests are refused with "Guests can't <owners_only>"."""

    name: str
    fn: Callable
    concurrency: str | None = None
    tab: str | None = None
    counted: bool = False
    owners_only: str = ""


ENDPOINTS: dict[str, Endpoint] = {}


def endpoint(name: str, *, concurrency: str | None = None, tab: str | None = None, counted: bool = False,
             owners_only: str = "") -> Callable[[Callable], Callable]:
    """Register the decorated function as the public endpoint `/name` (the function itself is returned unchanged)."""
    if concurrency not in GROUPS:
        raise ValueError(f"concurrency must be one of {GROUPS}, got {concurrency!r}")
    if (counted or owners_only) and tab is None:
        raise ValueError(f"{name}: counted and owners_only endpoints need the Caller: give tab")

    def register(fn: Callable) -> Callable:
        known = ENDPOINTS.get(name)
        if known is not None and known.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"two endpoints are named {name!r}: {known.fn.__module__} and {fn.__module__}")
        ENDPOINTS[name] = Endpoint(name, fn, concurrency, tab, counted, owners_only)
        return fn

    return register


def documented(text: str) -> Callable[[Callable], Callable]:
    """Give the decorated endpoint `text` as its docstring: for an endpoint whose API fields need a long one (the
    function then reads as its code)."""

    def give(fn: Callable) -> Callable:
        fn.__doc__ = text
        return fn

    return give


def shared_doc(marker: str, text: str) -> Callable[[Callable], Callable]:
    """Put `text` (parameter lines for the `Args:` block, written once for several endpoints) into the decorated
    function's docstring where the line `marker` stands, at that line's indentation."""

    def fill(fn: Callable) -> Callable:
        lines = []
        for line in (fn.__doc__ or "").splitlines():
            if line.strip() == marker:
                indent = line[: len(line) - len(line.lstrip())]
                lines += [indent + part if part.strip() else part for part in inspect.cleandoc(text).splitlines()]
            else:
                lines.append(line)
        if len(lines) == len((fn.__doc__ or "").splitlines()):
            raise ValueError(f"{fn.__qualname__}: its docstring has no line {marker!r}")
        fn.__doc__ = "\n".join(lines)
        return fn

    return fill


def public_signature(fn: Callable) -> inspect.Signature:
    """The API's signature: the function's own without its first parameter (`services`)."""
    signature = inspect.signature(fn)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def bind(spec: Endpoint, services) -> Callable:
    """What `gr.api` registers for `spec`: its function with `services` given, guarded as the spec says."""
    fn = spec.fn
    if inspect.isgeneratorfunction(fn):
        def bound(*args, **kwargs):
            yield from fn(services, *args, **kwargs)
    else:
        def bound(*args, **kwargs):
            return fn(services, *args, **kwargs)
    functools.update_wrapper(bound, fn)
    bound.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "services"}
    if spec.tab is not None:
        bound = guarded(services, spec.tab, generation=spec.counted, owner_only=spec.owners_only)(bound)
    bound = friendly_errors(bound)
    bound.__signature__ = public_signature(fn)
    return bound


def options(spec: Endpoint, services) -> dict:
    """`gr.api`'s queue and concurrency options for the spec's group."""
    host, group = services.host, spec.concurrency
    if group == "text":
        return dict(concurrency_limit=host.text_concurrency, concurrency_id="text")
    if group == "image":
        return dict(concurrency_limit=host.image_slots, concurrency_id="image")
    if group == "latent":
        # GAN and VAE: one at a time on the model thread in-process; with the Ray model tier, as many as its
        # replicas take (their own concurrency group)
        remote = services.settings.ray.runs("latent")
        return dict(concurrency_limit=host.latent_concurrency, concurrency_id="latent" if remote else "model")
    if group in ("model", "vae-train"):
        return dict(concurrency_limit=1, concurrency_id=group)
    if group == "unqueued":
        return dict(queue=False)
    return {}

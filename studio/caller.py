"""Who a request comes from — the `Caller` — and the context that carries it to where things are used.

`studio.boundary` builds one Caller per request (page event, Gradio API, MCP tool) before any handler runs and
sets it here; the model host, the lanes, History and the stores read it from here and decide what this caller may
do. Nothing below the boundary takes a user name from a handler's arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Caller:
    """One request's user: their name, whether a guest, their browser session, and how to count work against a
    guest's quota (`charge(units, what)` returns an admission that can be refunded; `charged` lists them)."""

    user: str = "local"
    guest: bool = False
    session: str = "local"
    charge: Callable[[float, str], object] | None = None
    charged: list = field(default_factory=list)
    at_door: bool = False  # holds one of a guest's few unqueued events (studio.boundary)

    def spend(self, units: float, what: str) -> None:
        """Count `units` of work (a guest's quota; owners are not counted). Raises AccessDenied past the quota."""
        if self.guest and self.charge is not None:
            self.charged.append(self.charge(units, what))

    def refund(self) -> None:
        """Give back what this request was charged (it failed, or made nothing)."""
        while self.charged:
            admission = self.charged.pop()
            if admission:
                admission.refund()


_CALLER: ContextVar[Caller | None] = ContextVar("caller", default=None)


@contextlib.contextmanager
def calling(caller: Caller) -> Iterator[Caller]:
    """Run a block as `caller` (what admission, lanes and storage read)."""
    token = _CALLER.set(caller)
    try:
        yield caller
    finally:
        _CALLER.reset(token)


def run_steps(caller: Caller, steps: Iterator) -> Iterator:
    """Each step of the generator `steps` run as `caller` (a streamed answer's steps may run on other threads)."""
    try:
        while True:
            with calling(caller):
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item
    finally:
        steps.close()


def current_caller() -> Caller | None:
    """The caller of the request being served on this thread, or None outside any request."""
    return _CALLER.get()

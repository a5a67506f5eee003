"""Start a request as soon as it arrives in Gradio's queue, without polling fast while idle.

Gradio's queue loop looks for new work by sleeping `sleep_when_free` seconds between looks: 1 ms costs an idle
2-core machine ~7% of a core, 10 ms costs every request up to 10 ms (5 on average) before it starts. Here the
queue's idle sleep ends early when a request is pushed or a running one finishes (a waiting one may start), so
requests start at once and the idle loop wakes only every `IDLE_LOOK_SECONDS` (~50 ms: 20 looks a second).

How: `gradio.queueing` sees asyncio through `_Wakeable`, the same module except that a sleep of exactly
`IDLE_LOOK_SECONDS` (only the idle queue loop sleeps that long) can be ended early on its event loop; the queue's
`push` and `process_events` wake it. Should a Gradio release sleep elsewhere, it degrades to polling every
`IDLE_LOOK_SECONDS`.
"""

from __future__ import annotations

import functools
import weakref

IDLE_LOOK_SECONDS = 0.0497  # an unusual value on purpose: no other sleep in gradio.queueing is this long


class _Wakeable:
    """asyncio as gradio.queueing sees it: the same module, with a sleep that a push can end early."""

    def __init__(self, module) -> None:
        self._module = module
        self._sleepers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → its idle sleeps

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    async def sleep(self, delay: float, result=None):
        if delay != IDLE_LOOK_SECONDS:
            return await self._module.sleep(delay, result)
        loop = self._module.get_running_loop()
        waiter = loop.create_future()  # as cheap as asyncio.sleep: a future and a timer, no task
        timer = loop.call_later(delay, _finish, waiter)
        sleepers = self._sleepers.setdefault(loop, set())
        sleepers.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            sleepers.discard(waiter)
        return result

    def wake(self) -> None:
        for waiter in list(self._sleepers.get(self._module.get_running_loop(), ())):
            _finish(waiter)


def _finish(waiter) -> None:
    if not waiter.done():
        waiter.set_result(None)


def wake_on_arrival(queue) -> None:
    """Make this Gradio queue start work as soon as it is pushed (or a slot frees), polling only when idle."""
    import gradio.queueing as queueing

    if not isinstance(queueing.asyncio, _Wakeable):
        queueing.asyncio = _Wakeable(queueing.asyncio)
    wakeable = queueing.asyncio

    def waking(method):
        @functools.wraps(method)
        async def wrapped(*args, **kwargs):
            try:
                return await method(*args, **kwargs)
            finally:
                wakeable.wake()
        return wrapped

    queue.push = waking(queue.push)
    queue.process_events = waking(queue.process_events)
    queue.sleep_when_free = IDLE_LOOK_SECONDS

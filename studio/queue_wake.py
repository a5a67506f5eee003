"""Start a request as soon as it arrives in Gradio's queue, without polling fast while idle.

Gradio's queue loop looks for new work by sleeping `sleep_when_free` seconds between looks: 1 ms costs an idle
2-core machine ~7% of a core, 10 ms costs every request up to 10 ms (5 on average) before it starts. Here the
queue's idle sleep ends early when a request is pushed or a running one finishes (a waiting one may start), so
requests start at once and the idle loop still wakes only every `IDLE_LOOK_SECONDS`.

How: `gradio.queueing` sees asyncio through `_Wakeable`, the same module except that a sleep of exactly
`IDLE_LOOK_SECONDS` (only the idle queue loop sleeps that long) waits on a per-event-loop wake-up; the queue's
`push` and `process_events` wake it. Should a Gradio release sleep elsewhere, it degrades to polling every
`IDLE_LOOK_SECONDS`, today's behaviour.
"""

from __future__ import annotations

import asyncio
import functools
import weakref

IDLE_LOOK_SECONDS = 0.0125  # an unusual value on purpose: no other sleep in gradio.queueing is this long


class _Wakeable:
    """asyncio as gradio.queueing sees it: the same module, with a sleep that a push can end early."""

    def __init__(self, module) -> None:
        self._module = module
        self._wake_ups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → asyncio.Event

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def _wake_up(self) -> asyncio.Event:
        loop = self._module.get_running_loop()
        if loop not in self._wake_ups:
            self._wake_ups[loop] = self._module.Event()
        return self._wake_ups[loop]

    async def sleep(self, delay: float, result=None):
        if delay != IDLE_LOOK_SECONDS:
            return await self._module.sleep(delay, result)
        wake_up = self._wake_up()
        try:
            await self._module.wait_for(wake_up.wait(), delay)
        except (TimeoutError, self._module.TimeoutError):
            pass
        wake_up.clear()
        return result

    def wake(self) -> None:
        self._wake_up().set()


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

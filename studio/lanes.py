"""Long-lived worker threads ("lanes"), one per kind of long work, so model code always runs on the
same thread.

PyTorch's CPU kernels run on an OpenMP thread team that belongs to the thread calling them: a fresh
thread per request builds a fresh team, and several teams on few cores stall each other at every
barrier. A lane keeps one thread — and its team — for the life of the server. A job reports progress
through a queue the request thread reads; the job's result (or exception) comes back at the end.

    job = services.lanes.submit("image", lambda report: pipe(params, callback=report))
    for event in job:          # progress events, as the job reports them
        ...
    out = job.result()         # or raises the job's exception
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

_DONE = object()


class Job:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.future: Future | None = None

    def report(self, *event) -> None:
        self.events.put(event[0] if len(event) == 1 else event)

    def __iter__(self) -> Iterator:
        while (event := self.events.get()) is not _DONE:
            yield event

    def result(self):
        return self.future.result()


class Lanes:
    def __init__(self) -> None:
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def _pool(self, lane: str) -> ThreadPoolExecutor:
        with self._lock:
            if lane not in self._pools:
                self._pools[lane] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lane-{lane}")
            return self._pools[lane]

    def submit(self, lane: str, fn: Callable[[Callable], object]) -> Job:
        """Run `fn(report)` on the lane's thread; iterate the job for what it reports."""
        job = Job()

        def work():
            try:
                return fn(job.report)
            finally:
                job.events.put(_DONE)

        job.future = self._pool(lane).submit(work)
        return job

    def run(self, lane: str, fn: Callable, *args, **kwargs):
        """Run `fn(*args, **kwargs)` on the lane's thread and return its result (or raise its error)."""
        return self._pool(lane).submit(fn, *args, **kwargs).result()

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

"""Where model work runs: on the process's main thread when the studio is served from the command
line, else on one long-lived thread per lane.

Measured here (2 cores, PyTorch's CPU build): the same diffusion call runs about 25% slower on any
thread other than the process's main one (its OpenMP team gets little of the second core), and a new
thread per request is slower still. `studio launch` therefore gives its main thread to the model work
(`serve_here`) — Gradio's server runs on its own threads anyway — and every model call goes through
`run` / `submit`. Models are loaded there too: the same call ran ~50% slower on weights that another
thread had loaded.

Interactive work (a slider move, a map cell) jumps the queue. While a long job holds the lane it runs
beside it, on the lane's one interactive thread — never inside the long job's step callback: each request
owns its pipeline view, scheduler, generators and hooks (`ModelHost`), so the two share only read-only
weights, and the long job's pixels are the ones it makes alone.

    job = services.lanes.submit("model", lambda report: pipe(params, callback=report))
    for event in job:          # progress events, as the job reports them
        ...
    out = job.result()         # or raises the job's exception

Tests and notebooks that serve the app in-process without `serve_here` get one thread per lane.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

_DONE = object()
INTERACTIVE, BATCH = 0, 1
MAIN = "main"  # the lane name under which the main thread's batch work is counted


class Job:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.future: Future = Future()

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
        self._main: queue.PriorityQueue | None = None
        self._main_thread: threading.Thread | None = None
        self._order = itertools.count()
        self._here = threading.local()  # which lane the current thread is working for, if any
        self._batch_running: dict[str, int] = {}  # lane → batch tasks running on it now

    # -- the main thread ---------------------------------------------------------------------------------
    def serve_here(self, stop: threading.Event) -> None:
        """Run model work on this (the main) thread until `stop` is set. Call it once, from `main`."""
        self._main = queue.PriorityQueue()
        self._main_thread = threading.current_thread()
        try:
            while not stop.is_set():
                try:
                    priority, _, task = self._main.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._running(MAIN, priority, task)
        finally:
            self._main, self._main_thread = None, None

    def _running(self, lane: str, priority: int, task: Callable[[], None]) -> None:
        """Run `task`, counting it as the lane's batch work while it runs (interactive work then goes beside it)."""
        if priority != BATCH:
            task()
            return
        with self._lock:
            self._batch_running[lane] = self._batch_running.get(lane, 0) + 1
        try:
            task()
        finally:
            with self._lock:
                self._batch_running[lane] -= 1

    def busy(self, lane: str) -> bool:
        """Whether a batch job is running on `lane` now."""
        with self._lock:
            return self._batch_running.get(MAIN if self._main is not None else lane, 0) > 0

    # -- submitting ----------------------------------------------------------------------------------------
    def _dispatch(self, lane: str, work: Callable[[], None], priority: int) -> None:
        main = self._main
        if getattr(self._here, "lane", None) == lane or (main is not None and threading.current_thread()
                                                         is self._main_thread):
            work()  # a task on this lane asking for more of its work: run it inline (waiting would deadlock)
            return
        if priority == INTERACTIVE and self.busy(lane):
            self._pool(f"{lane}-interactive").submit(self._on_lane(lane, work, INTERACTIVE))
            return
        if main is not None:
            main.put((priority, next(self._order), work))
            return
        self._pool(lane).submit(self._on_lane(lane, work, priority))

    def _on_lane(self, lane: str, work: Callable[[], None], priority: int) -> Callable[[], None]:
        def on_lane():
            self._here.lane = lane
            self._running(lane, priority, work)

        return on_lane

    def submit(self, lane: str, fn: Callable[[Callable], object], *, interactive: bool = False) -> Job:
        """Run `fn(report)` on the lane; iterate the job for what it reports, then `job.result()`."""
        job = Job()

        def work():
            if not job.future.set_running_or_notify_cancel():
                return
            try:
                job.future.set_result(fn(job.report))
            except BaseException as exc:  # handed to the caller through the future
                job.future.set_exception(exc)
            finally:
                job.events.put(_DONE)

        self._dispatch(lane, work, INTERACTIVE if interactive else BATCH)
        return job

    def _pool(self, lane: str, workers: int = 1) -> ThreadPoolExecutor:
        with self._lock:
            if lane not in self._pools:
                self._pools[lane] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"lane-{lane}")
            return self._pools[lane]

    @staticmethod
    def _work(job: Job, fn: Callable[[Callable], object], on_error: Callable | None = None) -> Callable[[], None]:
        def work():
            try:
                job.future.set_result(fn(job.report))
            except BaseException as exc:  # handed to the caller through the future
                if on_error is not None:
                    on_error(exc)
                job.future.set_exception(exc)
            finally:
                job.events.put(_DONE)

        return work

    def submit_background(self, lane: str, fn: Callable[[Callable], object]) -> Job:
        """Work nobody waits for (History writes after the answer went back): always on its own thread, never
        the main one; errors are logged, not raised."""
        import logging

        job = Job()
        self._pool(lane).submit(self._work(job, fn, lambda exc: logging.getLogger("studio").error(
            "background %s work failed: %s", lane, exc)))
        return job

    def submit_parallel(self, lane: str, fn: Callable[[Callable], object], workers: int = 64) -> Job:
        """Work that waits on another process (the Ray model tier): many at once on a pool of its own,
        never on the main thread; iterate the job and take `job.result()` as for `submit`."""
        job = Job()
        self._pool(lane, workers).submit(self._work(job, fn))
        return job

    def drain(self, lane: str, timeout: float = 10.0) -> None:
        """Wait until work already given to a background lane is done (tests, shutdown)."""
        with self._lock:
            pool = self._pools.get(lane)
        if pool is not None:
            pool.submit(lambda: None).result(timeout=timeout)

    def run(self, lane: str, fn: Callable, *args, interactive: bool = False, **kwargs):
        """Run `fn(*args, **kwargs)` on the lane and return its result (or raise its error). A call to the Ray
        model tier (`fn` or its object marked `remote`) only waits for another process: it runs right here,
        so many run at once."""
        if getattr(getattr(fn, "__self__", fn), "remote", False) is True:
            return fn(*args, **kwargs)
        return self.submit(lane, lambda _report: fn(*args, **kwargs), interactive=interactive).result()

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

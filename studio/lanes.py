"""Where model work runs: on the process's main thread when the studio is served from the command
line, else on one long-lived thread per lane.

Measured here (2 cores, PyTorch's CPU build): the same diffusion call runs about 25% slower on any
thread other than the process's main one (its OpenMP team gets little of the second core), and a new
thread per request is slower still. `studio launch` therefore gives its main thread to the model work
(`serve_here`) — Gradio's server runs on its own threads anyway — and every model call goes through
`run` / `submit`. Models are loaded there too: the same call ran ~50% slower on weights that another
thread had loaded.

Waiting work takes turns between users (`FairQueue`): the user whose work ran least recently goes next, so another
user's queue never costs you more than the job in progress; the `Gate` holds a guest to one job waiting or running
and interactive work to one at a time per browser session. The user is the request's Caller (studio.caller).

Interactive work (a slider move, a map cell) jumps the queue. While a long job holds the lane it runs
beside it, on the lane's one interactive thread — never inside the long job's step callback: each request
owns its pipeline view, scheduler, generators and hooks (`ModelHost`), so the two share only read-only
weights, and the long job's pixels are the ones it makes alone.

    job = services.host.lanes.submit("model", lambda report: pipe(params, callback=report))
    for event in job:          # progress events, as the job reports them
        ...
    out = job.result()         # or raises the job's exception

Tests and notebooks that serve the app in-process without `serve_here` get one thread per lane.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
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


class FairQueue:
    """One lane's waiting work: interactive work first, in arrival order; then batch work, a turn per user — the
    user whose work ran least recently goes next, so another user's queue never costs you more than the job in
    progress (first-in-first-out made one user wait for another's whole queue)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._interactive: deque = deque()
        self._batch: dict[str, deque] = {}
        self._served: dict[str, int] = {}  # user → when their work last started (a counter)
        self._clock = itertools.count()

    def put(self, priority: int, user: str, work: Callable[[], None]) -> None:
        with self._ready:
            if priority == INTERACTIVE:
                self._interactive.append(work)
            else:
                self._batch.setdefault(user, deque()).append((next(self._clock), work))
            self._ready.notify()

    def get(self, timeout: float) -> tuple[int, Callable[[], None]] | None:
        with self._ready:
            if not self._ready.wait_for(lambda: self._interactive or self._batch, timeout):
                return None
            if self._interactive:
                return INTERACTIVE, self._interactive.popleft()
            user = min(self._batch, key=lambda u: (self._served.get(u, -1), self._batch[u][0][0]))
            _, work = self._batch[user].popleft()
            if not self._batch[user]:
                del self._batch[user]
            self._served[user] = next(self._clock)
            if len(self._served) > 10_000:  # forget the longest-idle users (they simply come first next time)
                for name in sorted(self._served, key=self._served.get)[:5_000]:
                    del self._served[name]
            return BATCH, work


class Gate:
    """Who may add work now: a guest has at most one batch job waiting or running; interactive work (a slider
    preview, a real-time picture) is one at a time per browser session, and a guest has at most
    `guest_interactive` of it waiting or running however many sessions they open."""

    def __init__(self, guest_interactive: int = 2) -> None:
        self.guest_interactive = guest_interactive
        self._lock = threading.Lock()
        self._jobs: dict[str, int] = {}
        self._previews: dict[str, int] = {}
        self._sessions: dict[str, threading.Lock] = {}

    def enter(self, interactive: bool) -> Callable[[], None]:
        """Admit the current caller's new work, or raise AccessDenied; returns what to call when it is done."""
        from studio.access import AccessDenied
        from studio.caller import current_caller

        caller = current_caller()
        if caller is None:
            return lambda: None
        user, counts = caller.user, self._previews if interactive else self._jobs
        with self._lock:
            limit = self.guest_interactive if interactive else 1
            if caller.guest and counts.get(user, 0) >= limit:
                raise AccessDenied("You already have a preview being drawn: wait for it (guests have one or two "
                                   "at a time)." if interactive else "You already have a job waiting or running: "
                                   "wait for it to finish (guests have one at a time).")
            counts[user] = counts.get(user, 0) + 1
            session = self._sessions.setdefault(caller.session, threading.Lock()) if interactive else None

        def leave() -> None:
            with self._lock:
                counts[user] -= 1
                if not counts[user]:
                    del counts[user]

        if session is None:
            return leave
        if not session.acquire(timeout=60):  # this session's previous preview is still being drawn
            leave()
            raise AccessDenied("The previous preview is still being drawn; try again in a moment.")

        def leave_session() -> None:
            session.release()
            leave()

        return leave_session


def _user() -> str:
    from studio.caller import current_caller

    caller = current_caller()
    return caller.user if caller is not None else ""


class Lanes:
    def __init__(self) -> None:
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._queues: dict[str, FairQueue] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._main: FairQueue | None = None
        self._main_thread: threading.Thread | None = None
        self._here = threading.local()  # which lane the current thread is working for, if any
        self._batch_running: dict[str, int] = {}  # lane → batch tasks running on it now
        self.gate = Gate()

    # -- the main thread ---------------------------------------------------------------------------------
    def serve_here(self, stop: threading.Event) -> None:
        """Run model work on this (the main) thread until `stop` is set. Call it once, from `main`."""
        self._main = FairQueue()
        self._main_thread = threading.current_thread()
        try:
            while not stop.is_set():
                task = self._main.get(timeout=0.2)
                if task is not None:
                    self._running(MAIN, *task)
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

    def _lane_queue(self, lane: str) -> FairQueue:
        """The lane's own queue and worker thread (when no main thread serves it)."""
        with self._lock:
            if lane not in self._queues:
                self._queues[lane] = waiting = FairQueue()

                def serve() -> None:
                    self._here.lane = lane
                    while True:
                        task = waiting.get(timeout=5.0)
                        if task is not None:
                            self._running(lane, *task)

                self._workers[lane] = threading.Thread(target=serve, name=f"lane-{lane}", daemon=True)
                self._workers[lane].start()
            return self._queues[lane]

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
        (main if main is not None else self._lane_queue(lane)).put(priority, _user(), work)

    def _on_lane(self, lane: str, work: Callable[[], None], priority: int) -> Callable[[], None]:
        def on_lane():
            self._here.lane = lane
            self._running(lane, priority, work)

        return on_lane

    def submit(self, lane: str, fn: Callable[[Callable], object], *, interactive: bool = False) -> Job:
        """Run `fn(report)` on the lane; iterate the job for what it reports, then `job.result()`. The request's
        Caller is admitted by the gate first (a guest's one job; one preview per session)."""
        job = Job()
        inline = getattr(self._here, "lane", None) == lane or (
            self._main is not None and threading.current_thread() is self._main_thread)
        done = (lambda: None) if inline else self.gate.enter(interactive)

        def work():
            try:
                if not job.future.set_running_or_notify_cancel():
                    return
                try:
                    job.future.set_result(fn(job.report))
                except BaseException as exc:  # handed to the caller through the future
                    job.future.set_exception(exc)
                finally:
                    job.events.put(_DONE)
            finally:
                done()

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

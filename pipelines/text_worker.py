"""llama.cpp in a worker process: a crash in native code costs one request, never the server.

    pipe = LlamaWorkerPipeline(LlamaWorkerConfig(path=gguf, name="smollm2", threads=2, n_ctx=5120))
    for piece in pipe.stream(TextParams(prompt="Hi", mode="chat"), cancel=stop_event): ...

llama.cpp is native code compiled on (or for) some CPU. When a build meets a CPU or an OS that does
not allow an instruction it uses (AMX tiles the kernel does not grant, AVX-512 on a CPU without it,
a wheel built elsewhere), the process dies with SIGILL; an abort or the OOM killer ends it just as
hard. In the server's own process that would take every user's page down, so each loaded GGUF model
lives in its own child process (`python -m pipelines.text_worker`), spoken to over its stdin/stdout
with length-prefixed pickle frames:

    parent → child   ("load", config) · ("generate", params, seed) · ("cancel",) · ("clear",) · ("close",)
    child → parent   ("ready", info) · ("piece", text) · ("done", stats) · ("error", kind, message)

The child runs `LlamaTextPipeline` unchanged (same prompt building, sampler chain, stop strings, prompt
cache), so seeds, streaming and caching behave exactly as in-process. Stop reaches the child as a
"cancel" frame that a reader thread turns into the pipeline's cancel event (checked every token).

When the child dies, the request in flight ends with `EngineCrashed` naming the likely cause; the
worker restarts in the background and the next request works. Before the child reports ready it runs
a real multi-token prompt (the probe), so a build that cannot run here fails at load — where the
studio can fall back to transformers — not in the middle of a user's answer; `BuildHealth` remembers
that verdict per build and CPU.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import platform
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.device import Placement
from pipelines.registry import ModelNotAvailable
from pipelines.text import TextLimits, TextOutput, TextParams
from pipelines.text_llama import REBUILD_HINT, cpu_variants, llama_lib_dir, load_cpu_backend

PROBE_PROMPT = "The quick brown fox jumps over the lazy dog. " * 2
_HEADER = struct.Struct("<I")


class EngineCrashed(RuntimeError):
    """The text engine's process died; the message says why (when known) and what happens next."""

    def __init__(self, message: str, *, at_load: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.at_load, self.cause = at_load, cause


# -- framing ---------------------------------------------------------------------------------------

def send_frame(stream, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream) -> tuple | None:
    """The next message, or None when the other side has gone (end of stream)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


# -- why a process died ------------------------------------------------------------------------------

SIGNAL_CAUSES = {
    "SIGILL": ("illegal instruction: this llama.cpp build uses a CPU feature this machine does not allow "
               "(built for another CPU, or AMX/AVX-512 that the operating system does not enable)"),
    "SIGKILL": "killed by the system (most often: out of memory)",
    "SIGSEGV": "a memory fault inside llama.cpp",
    "SIGBUS": "a memory fault inside llama.cpp (the model file may have changed on disk)",
    "SIGABRT": "llama.cpp stopped on an internal error",
    "SIGFPE": "an arithmetic fault inside llama.cpp",
}


def describe_exit(returncode: int | None, stderr_tail: str = "") -> str:
    """Plain words for how a worker ended (negative return codes are signals on POSIX)."""
    if returncode is None:
        what = "stopped answering"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        what = f"{name}, {SIGNAL_CAUSES[name]}" if name in SIGNAL_CAUSES else name
    else:
        what = f"exit code {returncode}"
    last = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    return what + (f" (it said: {last[-1][:200]})" if last else "")


# -- build health ------------------------------------------------------------------------------------

def build_fingerprint(lib_dir: Path | None = None, cpu_flags: str | None = None) -> str:
    """Identifies one llama.cpp build on one CPU: the native libraries (size, mtime) and the CPU's flags."""
    lib_dir = lib_dir or llama_lib_dir()
    parts = []
    if lib_dir and lib_dir.is_dir():
        for lib in sorted([*lib_dir.iterdir(), *cpu_variants(lib_dir)]):
            if lib.is_file() and not lib.is_symlink():
                stat = lib.stat()
                parts.append(f"{lib.name}:{stat.st_size}:{int(stat.st_mtime)}")
    parts.append(cpu_flags if cpu_flags is not None else _cpu_flags())
    parts.append(platform.machine())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


class BuildHealth:
    """What is known about the installed llama.cpp build on this machine: a JSON file in the cache,
    keyed by `build_fingerprint()`, so a build that crashed is not tried again until it changes."""

    def __init__(self, path: Path, fingerprint: str | None = None) -> None:
        self.path = Path(path)
        self._fingerprint = fingerprint
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = build_fingerprint()
        return self._fingerprint

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def broken_reason(self) -> str | None:
        """Why this build cannot run here, or None when it ran (or was never tried)."""
        entry = self._read().get(self.fingerprint)
        return entry.get("reason") if entry and not entry.get("ok") else None

    def record(self, ok: bool, reason: str = "") -> None:
        with self._lock:
            data = self._read()
            data[self.fingerprint] = {"ok": ok, "reason": reason, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)


# -- the child -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LlamaWorkerConfig:
    """What a worker loads: the GGUF file, threads, context size, limits and prompt-cache size."""

    path: str
    name: str
    threads: int
    n_ctx: int = 5120
    device: str = "cpu"
    limits: TextLimits = field(default_factory=TextLimits)
    prompt_cache_entries: int = 4
    probe: bool = True


def _probe(pipe) -> None:
    """A real multi-token prompt and two sampled tokens: the work a build that cannot run here dies
    on (a one-token prompt can pass where a batch of tokens crashes)."""
    params = TextParams(prompt=PROBE_PROMPT, max_new_tokens=2, temperature=0.7, seed=0)
    for _ in pipe.stream(params):  # evaluates the ~20-token prompt as one batch, then samples
        pass
    if pipe.model.has_chat_template:  # the chat template's renderer (a transformers import, ~1 s on 2 busy
        pipe.build_prompt(TextParams(prompt="Hi", mode="chat"))  # cores) is loaded now, not in the first chat
    pipe.model.llm.n_tokens = 0
    pipe.prompt_cache.clear()


def _serve(inbox, outbox) -> int:
    """The child's loop: load, report ready, then answer generate requests one at a time."""
    import queue

    message = read_frame(inbox)
    if message is None or message[0] != "load":
        return 2
    config: LlamaWorkerConfig = message[1]
    try:
        from pipelines.registry import ModelSpec, ResolvedModel
        from pipelines.text_llama import LlamaTextPipeline, load_llama_model

        lib_dir = llama_lib_dir()
        variant = load_cpu_backend(lib_dir) if lib_dir else None
        import torch

        spec = ModelSpec(config.name, "text", "file", config.path)
        placement = Placement(torch.device(config.device), torch.float32)
        model = load_llama_model(ResolvedModel(spec, Path(config.path)), placement, threads=config.threads,
                                 n_ctx=config.n_ctx)
        pipe = LlamaTextPipeline(model, config.limits, config.prompt_cache_entries)
        if config.probe:
            _probe(pipe)
    except Exception as exc:
        send_frame(outbox, ("error", type(exc).__name__, str(exc)))
        return 1
    send_frame(outbox, ("ready", {"has_chat_template": model.has_chat_template, "variant": variant,
                                  "n_ctx": model.llm.n_ctx(), "pid": os.getpid()}))

    # A reader thread turns "cancel" into the running request's cancel event; other frames queue up.
    requests: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def read_loop() -> None:
        while (frame := read_frame(inbox)) is not None:
            if frame[0] == "cancel":
                cancel.set()
            else:
                requests.put(frame)
        requests.put(("close",))  # the parent has gone

    threading.Thread(target=read_loop, name="worker-inbox", daemon=True).start()
    while True:
        frame = requests.get()
        kind = frame[0]
        if kind == "close":
            return 0
        if kind == "clear":  # forget every evaluated prompt: the saved states and the live context's
            pipe.prompt_cache.clear()
            pipe.model.llm.n_tokens = 0
            continue
        if kind == "prompt":
            send_frame(outbox, ("done", {"prompt": pipe.build_prompt(frame[1])}))
            continue
        if kind == "count":
            send_frame(outbox, ("done", pipe.count_tokens(frame[1])))
            continue
        if kind != "generate":
            continue
        params, seed = frame[1], frame[2]
        cancel.clear()
        stats: dict = {}
        try:
            for piece in pipe.stream(_with_seed(params, seed), cancel=cancel, stats=stats):
                send_frame(outbox, ("piece", piece))
            send_frame(outbox, ("done", stats))
        except Exception as exc:
            send_frame(outbox, ("error", type(exc).__name__, str(exc)))


def _with_seed(params: TextParams, seed: int) -> TextParams:
    from dataclasses import replace

    return replace(params, seed=seed)


def worker_main() -> int:
    # Frames go over the original stdout; anything native code prints goes to stderr instead.
    outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inbox = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    return _serve(inbox, outbox)


# -- the parent ----------------------------------------------------------------------------------------

@dataclass
class WorkerModel:
    """What the tabs read from `pipe.model` (name, placement, engine), for a model held by a worker."""

    name: str
    placement: Placement
    has_chat_template: bool = True
    backend: str = "llama.cpp"


class _Worker:
    """One child process and its pipes; `stderr` keeps the last lines it wrote (for crash reports)."""

    def __init__(self, config: LlamaWorkerConfig, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.text_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=str(Path(__file__).resolve().parent.parent), env=env,
        )
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._drain_stderr, name="worker-stderr", daemon=True).start()
        send_frame(self.process.stdin, ("load", config))
        self.info: dict = {}

    def _drain_stderr(self) -> None:
        for line in iter(self.process.stderr.readline, b""):
            text = line.decode("utf-8", errors="replace").rstrip()
            self.stderr.append(text)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: tuple) -> bool:
        try:
            send_frame(self.process.stdin, message)
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def receive(self) -> tuple | None:
        try:
            return read_frame(self.process.stdout)
        except (OSError, ValueError):
            return None

    def death(self) -> str:
        """How the process ended (waits briefly for it to be reaped)."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        time.sleep(0.05)  # let the stderr reader catch the last line
        return describe_exit(code, "\n".join(self.stderr))

    def close(self) -> None:
        if self.process.poll() is None:
            self.send(("close",))
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class LlamaWorkerPipeline:
    """The `LlamaTextPipeline` interface over a worker process: `stream()`, `__call__()`, `model`,
    `backend`. Requests to one model run one at a time (one KV cache), as in-process."""

    backend = "llama.cpp"

    def __init__(self, config: LlamaWorkerConfig, placement: Placement, *,
                 log: Callable[[str], None] | None = None, env: dict | None = None) -> None:
        self.config, self.placement, self.env = config, placement, env
        self.limits = config.limits
        self.log = log or (lambda _message: None)
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._closed = False
        self.restarts = 0
        self._start()  # raises EngineCrashed(at_load=True) or ModelNotAvailable
        self.model = WorkerModel(config.name, placement, self._worker.info.get("has_chat_template", True))

    # 1. Start a worker and wait until it loaded the model and passed the probe
    def _start(self) -> None:
        worker = _Worker(self.config, self.env)
        reply = worker.receive()
        if reply is None:
            cause = worker.death()
            worker.close()
            raise EngineCrashed(f"the llama.cpp engine crashed while loading {self.config.name}: {cause}",
                                at_load=True, cause=cause)
        if reply[0] == "error":
            worker.close()
            raise ModelNotAvailable(f"llama.cpp could not load {self.config.name}: {reply[2]}")
        worker.info = reply[1]
        self._worker = worker

    @property
    def runs_on(self) -> str:
        """Where and in which precision this model actually runs, for History and the status line."""
        return f"{self.placement.device.type}, GGUF weights as stored · llama.cpp"

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker else None

    def _restart_in_background(self) -> None:
        def restart() -> None:
            with self._lock:
                if self._closed or self._worker is not None:
                    return
                try:
                    self._start()
                    self.restarts += 1
                    self.log(f"The llama.cpp engine for {self.config.name} was restarted.")
                except (EngineCrashed, ModelNotAvailable, ValueError) as exc:
                    self.log(f"The llama.cpp engine for {self.config.name} could not restart: {exc}")

        threading.Thread(target=restart, name="worker-restart", daemon=True).start()

    def _seed(self, params: TextParams, generator) -> int:
        if params.seed is not None:
            return params.seed
        if generator is not None:
            return generator.initial_seed() % 2**32
        return random.SystemRandom().randrange(2**32)

    def stream(self, params: TextParams, *, generator=None, cancel: threading.Event | None = None,
               stats: dict | None = None) -> Iterator[str]:
        """Yield the new text piece by piece; `stats` (if given) is filled with the TextOutput fields."""
        params.validate(self.limits)
        cancel = cancel or threading.Event()
        stats = stats if stats is not None else {}
        seed = self._seed(params, generator)
        with self._lock:
            if self._worker is not None and self._worker.process.poll() is not None:
                self._crashed(self._worker, restart=False)  # it died while idle: start afresh below
            if self._worker is None:  # a restart failed or never ran: try once more, in this request
                try:
                    self._start()
                except EngineCrashed as exc:
                    raise EngineCrashed(f"the text engine cannot start: {exc.cause}. {REBUILD_HINT}",
                                        cause=exc.cause) from exc
            worker = self._worker
            if not worker.send(("generate", params, seed)):
                reply = None
            else:
                reply = ()
            finished = threading.Event()
            watcher = threading.Thread(target=self._forward_cancel, args=(worker, cancel, finished), daemon=True)
            watcher.start()
            try:
                while reply is not None:
                    reply = worker.receive()
                    if reply is None:
                        break
                    if reply[0] == "piece":
                        yield reply[1]
                    elif reply[0] == "done":
                        stats.update(reply[1])
                        return
                    elif reply[0] == "error":
                        raise ValueError(reply[2]) if reply[1] == "ValueError" else RuntimeError(reply[2])
            except GeneratorExit:
                # the consumer stopped reading (Stop, a closed page): end the child's request too
                worker.send(("cancel",))
                while (reply := worker.receive()) is not None and reply[0] == "piece":
                    pass
                if reply is None:
                    self._crashed(worker)
                raise
            finally:
                finished.set()
            # 2. The child died mid-request: this request fails, the next one gets a fresh worker
            cause = self._crashed(worker)
        raise EngineCrashed(f"the text engine crashed: {cause}. It is restarting — try again in a moment.",
                            cause=cause)

    def _crashed(self, worker: _Worker, restart: bool = True) -> str:
        cause = worker.death()
        worker.close()
        self._worker = None
        self.log(f"The llama.cpp engine for {self.config.name} crashed: {cause}")
        if restart:
            self._restart_in_background()
        return cause

    @staticmethod
    def _forward_cancel(worker: _Worker, cancel: threading.Event, finished: threading.Event) -> None:
        while not finished.is_set():
            if cancel.wait(0.02):
                worker.send(("cancel",))
                return

    def __call__(self, params: TextParams, *, generator=None, callback: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None) -> TextOutput:
        stats: dict = {}
        for piece in self.stream(params, generator=generator, cancel=cancel, stats=stats):
            if callback:
                callback(piece)
        return TextOutput(**stats)

    def count_tokens(self, params: TextParams) -> dict | None:
        """The worker's token count for `params`, or None while it is busy generating (counting waits for
        no one: it is a hint beside the message box)."""
        if not self._lock.acquire(timeout=0):
            return None
        try:
            worker = self._worker
            if worker is None or not worker.send(("count", params)):
                return None
            reply = worker.receive()
            return reply[1] if reply is not None and reply[0] == "done" else None
        finally:
            self._lock.release()

    def clear_prompt_cache(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.send(("clear",))

    def close(self) -> None:
        """End the worker process (the model cache calls this when it drops the model)."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(worker_main())

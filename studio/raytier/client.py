"""The UI tier's side of the Ray Serve model tier (studio/raytier/serve.py): a bridge process it owns, and
`RemoteImagePipeline` / `RemoteTextPipeline` / `RemoteLatentPipeline` (with `RemoteLatentModel`), which the
tabs and the API use exactly like the in-process image, text, GAN and VAE pipelines.

Ray is never imported here: the bridge process is the Ray driver, so a lost cluster can only cost
that process. Requests to it are multiplexed over one pipe; every request gets an answer — a result,
or a plain-words error — even when the bridge dies or the cluster stops answering (the bridge sends
("beat",) every 2 s while the cluster answers; `STALL_S` without one means it is gone). A request
may wait longer than that in Serve's queue: waiting is fine while the beats come.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pipelines.image import GenerationCancelled, ImageOutput, ImageParams
from pipelines.latent import LatentModel
from pipelines.registry import ModelNotAvailable
from studio.raytier.protocol import FAMILY_NAMES, TIERS, family_words  # noqa: F401 - FAMILY_NAMES: for readers

STALL_S = 30.0
START_S = {"local": 180.0}  # starting a local Ray and the deployment; joining a cluster: JOIN_S
JOIN_S = 60.0
class TierUnreachable(ModelNotAvailable):
    """The model tier cannot be reached; the message says so in plain words."""


class RayBridge:
    """The bridge process: started on first use (or by `start()`), restarted after it dies."""

    def __init__(self, settings, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.log = log
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._pending: dict[int, queue.Queue] = {}
        self._ids = itertools.count(1)
        self._write = threading.Lock()
        self.info: dict = {}
        self._beat = 0.0  # when the bridge last said the cluster answers
        self.stderr: collections.deque[str] = collections.deque(maxlen=30)

    @property
    def where(self) -> str:
        address = self.settings.ray.address
        return "a Ray on this machine" if address == "local" else f"the Ray cluster at {address}"

    @property
    def families(self) -> str:
        """"image models", "image, text and GAN/VAE models": what runs on the tier, in words."""
        return family_words(self.settings.ray.tiers)

    # -- the process ---------------------------------------------------------------------------------
    def start(self) -> dict:
        """Start (or reuse) the bridge; raises TierUnreachable with the reason when it cannot connect."""
        from pipelines.text_worker import read_frame, send_frame

        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self.info
            process = subprocess.Popen([sys.executable, "-m", "studio.raytier.serve"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       cwd=str(Path(__file__).resolve().parents[2]))
            threading.Thread(target=self._drain, args=(process,), daemon=True).start()
            send_frame(process.stdin, ("start", self.settings))
            answer: list = []
            reader = threading.Thread(target=lambda: answer.append(read_frame(process.stdout)), daemon=True)
            reader.start()
            reader.join(START_S.get(self.settings.ray.address, JOIN_S))
            first = answer[0] if answer else None
            if not first or first[0] != "ready":
                process.kill()
                reason = first[1] if first and first[0] == "failed" else (
                    "no answer in time" if not answer else "the bridge process ended: " + self._tail())
                raise TierUnreachable(f"The {self.families} run on {self.where}, which cannot be reached right "
                                      f"now ({_short(reason)}). Nothing was lost; try again in a moment.")
            self._process, self.info = process, first[1]
            self._beat = time.monotonic()
            threading.Thread(target=self._read, args=(process,), daemon=True).start()
            apps = ", ".join(f"'{TIERS[t][0]}'" for t in self.settings.ray.tiers)
            self.log(f"Model tier: {self.families} on {self.where} (Ray Serve apps {apps})"
                     + (f"; {self.info['note']}" if self.info.get("note") else ""))
            return self.info

    def _drain(self, process) -> None:
        for line in iter(process.stderr.readline, b""):
            self.stderr.append(line.decode("utf-8", errors="replace").rstrip())

    def _tail(self) -> str:
        lines = [line for line in self.stderr if line.strip()]
        return lines[-1] if lines else "no message"

    def _read(self, process) -> None:
        from pipelines.text_worker import read_frame

        while True:
            try:
                frame = read_frame(process.stdout)
            except (OSError, ValueError, EOFError):
                frame = None
            if frame is None:
                break
            if frame[0] == "beat":
                self._beat = time.monotonic()
                continue
            pending = self._pending.get(frame[1])
            if pending is not None:
                pending[0].put(frame)
        self._fail_all(process, "the connection to the model tier ended")

    def _fail_all(self, process, reason: str) -> None:
        """End `process` and answer every request sent to it (not those of a newer bridge) with `reason`."""
        with self._lock:
            if self._process is process:
                self._process = None
        if process.poll() is None:
            process.kill()
        for box, owner in list(self._pending.values()):
            if owner in (process, None):
                box.put(("error", 0, "unreachable", reason))

    def close(self) -> None:
        from pipelines.text_worker import send_frame

        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                with self._write:
                    send_frame(process.stdin, ("close",))
                process.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()

    # -- requests ------------------------------------------------------------------------------------
    def _send(self, message: tuple) -> subprocess.Popen:
        from pipelines.text_worker import send_frame

        self.start()
        process = self._process
        if process is None:
            raise TierUnreachable(f"The {self.families} run on {self.where}, which cannot be reached right now.")
        try:
            with self._write:
                send_frame(process.stdin, message)
        except (OSError, ValueError) as exc:
            self._fail_all(process, str(exc))
            raise TierUnreachable(f"The {self.families} run on {self.where}, which cannot be reached right now "
                                  f"({exc}). Nothing was lost; try again in a moment.") from None
        return process

    def request(self, kind: str, *args, on_event: Callable | None = None,
                cancel: threading.Event | None = None):
        """Send one request and wait for its answer, passing events to `on_event`; raises the request's
        error as the exception type the in-process code raises."""
        rid = next(self._ids)
        box: queue.Queue = queue.Queue()
        self._pending[rid] = (box, None)  # None until sent: an ending bridge answers it too
        try:
            process = self._send((kind, rid, *args))
            self._pending[rid] = (box, process)
            sent_cancel = False
            while True:
                if cancel is not None and cancel.is_set() and not sent_cancel:  # checked between frames too:
                    sent_cancel = True  # a text streams pieces without a pause
                    self._cancel(process, rid)
                try:
                    frame = box.get(timeout=0.1)
                except queue.Empty:
                    if time.monotonic() - self._beat > STALL_S:
                        self._fail_all(process, f"no word from the cluster for {STALL_S:.0f} s")
                    continue
                if frame[0] == "event":
                    if on_event is not None:
                        on_event(frame[2])
                    continue
                if frame[0] == "done":
                    return frame[2]
                raise _error(frame[2], frame[3], self.where, self.families)
        finally:
            self._pending.pop(rid, None)

    def _cancel(self, process, rid: int) -> None:
        from pipelines.text_worker import send_frame

        try:
            with self._write:
                send_frame(process.stdin, ("cancel", rid))
        except (OSError, ValueError):
            pass

    def status(self) -> dict:
        """Per family: Serve's status of its deployment and where each replica runs (Models tab)."""
        return self.request("status")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(kind: str, message: str, where: str, families: str) -> Exception:
    if kind == "cancelled":
        return GenerationCancelled(message or "stopped")
    if kind == "value":
        return ValueError(message)
    if kind == "model":
        return ModelNotAvailable(message)
    if kind == "lost":
        return TierUnreachable(f"The replica doing this on {where} stopped and another could not take over "
                               f"({_short(message)}). Nothing was saved; try again.")
    if kind == "runtime":
        return RuntimeError(message)
    return TierUnreachable(f"The {families} run on {where}, which cannot be reached right now "
                           f"({_short(message)}). Nothing was lost; the studio reconnects on the next request.")


@dataclasses.dataclass
class RemoteImageModel:
    """What the UI tier reads of a model (`pipe.model.*`) without holding its weights."""

    name: str
    default_size: int


class RemoteImagePipeline:
    """`ImagePipeline`'s interface over the model tier: `__call__` and `model`. Everything a request needs —
    LoRAs included — travels in its params, so no request's settings stay on this shared stand-in."""

    remote = True

    def __init__(self, bridge: RayBridge, spec) -> None:
        self.bridge = bridge
        info = bridge.request("call", "image", "describe", (spec,))
        self.model = RemoteImageModel(info["name"], int(info["default_size"]))
        self._spec = spec  # the UI tier's ModelSpec: models registered here load in the replicas too

    def __call__(self, params: ImageParams, *, generator=None, callback: Callable | None = None,
                 cancel: threading.Event | None = None, preview_every: int = 5,
                 progress_interval: float = 0.0) -> ImageOutput:
        """LoRA files must be at a path every replica can read: this machine with a local Ray, a shared folder
        on a cluster."""
        if generator is not None:
            raise ValueError("generator: a remote model takes seeds, not generator objects")
        if params.seed is None:  # fixed here, so a retry on another replica draws the same pictures
            params = dataclasses.replace(params, seed=random.SystemRandom().randrange(2**32 - 1))

        def on_event(event: tuple) -> None:
            if event[0] == "progress" and callback is not None:
                callback(*event[1:])

        interval = progress_interval if callback is not None else None  # no watcher: no progress frames
        out, _info = self.bridge.request("stream", "image", "generate", (self._spec, params, preview_every, interval),
                                         on_event=on_event, cancel=cancel)
        return out


@dataclasses.dataclass
class RemoteTextModel:
    name: str


class RemoteTextPipeline:
    """`TextPipeline`'s interface over the model tier: `stream`, `__call__`, `count_tokens`, `model.name`,
    `backend`, `runs_on`. The answer streams piece by piece as the replica writes it."""

    remote = True

    def __init__(self, bridge: RayBridge, spec, backend: str, limits=None) -> None:
        self.bridge, self._spec, self._backend, self.limits = bridge, spec, backend, limits
        info = bridge.request("call", "text", "describe", (spec, backend))
        self.model = RemoteTextModel(info["name"])
        self.backend, self.runs_on = info["backend"], info["runs_on"] + " · Ray Serve"

    def count_tokens(self, params) -> dict:
        return self.bridge.request("call", "text", "count_tokens", (self._spec, self._backend, params))

    def clear_prompt_cache(self) -> None:
        """Each replica keeps its own chat prefixes and frees them itself."""

    def stream(self, params, *, generator=None, cancel: threading.Event | None = None,
               stats: dict | None = None):
        """Yield the new text piece by piece; `stats` (if given) is filled with the TextOutput fields."""
        if generator is not None:
            raise ValueError("generator: a remote model takes seeds, not generator objects")
        params.validate(self.limits)  # the server's plain error, before anything is sent
        if params.seed is None:  # fixed here, so a retry on another replica writes the same text
            params = dataclasses.replace(params, seed=random.SystemRandom().randrange(2**32))
        cancel = cancel or threading.Event()
        pieces: queue.Queue = queue.Queue()
        answer: dict = {}

        def run() -> None:
            try:
                answer["stats"], answer["info"] = self.bridge.request(
                    "stream", "text", "stream", (self._spec, self._backend, params, uuid.uuid4().hex),
                    on_event=lambda event: pieces.put(event[1]) if event[0] == "piece" else None, cancel=cancel)
            except BaseException as exc:  # noqa: BLE001 - raised in the consuming thread
                answer["error"] = exc
            pieces.put(None)

        threading.Thread(target=run, name="remote-text", daemon=True).start()
        ended = False
        try:
            while (piece := pieces.get()) is not None:
                yield piece
            ended = True
        finally:
            if not ended:
                cancel.set()  # a consumer that stops early (a closed page) ends the answer on the replica too
        if "error" in answer:
            raise answer["error"]
        if stats is not None:
            stats.update(answer["stats"])

    def __call__(self, params, *, generator=None, callback: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None):
        from pipelines.text import TextOutput

        stats: dict = {}
        for piece in self.stream(params, generator=generator, cancel=cancel, stats=stats):
            if callback is not None:
                callback(piece)
        return TextOutput(**stats)


class _RemoteMethods:
    """Plain attributes as the replica reported them; public methods called on the replica."""

    remote = True

    def __init__(self, bridge: RayBridge, kind: str, spec, target: str, snapshot: dict) -> None:
        self._call = (bridge, kind, spec, target)
        self._methods = set(snapshot["methods"])
        self.__dict__.update(snapshot["values"])

    def _forward(self, method: str, *args, **kwargs):
        bridge, kind, spec, target = self._call
        return bridge.request("call", "latent", "call", (kind, spec, target, method, args, kwargs))

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in self.__dict__.get("_methods", ()):
            raise AttributeError(name)
        def forward(*args, **kwargs):
            return self._forward(name, *args, **kwargs)

        forward.remote = True  # the lanes run it in the caller's thread: it only waits for a replica
        return forward


class RemoteLatentPipeline(_RemoteMethods):
    """A GAN or VAE pipeline on the model tier: the same methods and attributes as `GANPipeline` /
    `VAEPipeline` (its `model` too), each call answered by a replica."""

    def __init__(self, bridge: RayBridge, kind: str, spec) -> None:
        info = bridge.request("call", "latent", "describe", (kind, spec))
        super().__init__(bridge, kind, spec, "pipe", info["pipe"])
        self.model = _RemoteMethods(bridge, kind, spec, "model", info["model"])
        self.latent_model = RemoteLatentModel(bridge, kind, spec, info["adapter"])
        self.latent_model.pipe = self  # as the in-process adapters have (the workbench reads pipe.model.size)

    def __call__(self, *args, **kwargs):
        return self._forward("__call__", *args, **kwargs)


class RemoteLatentModel(LatentModel):
    """The latent-space contract (`pipelines.latent.LatentModel`) of a GAN or VAE on the model tier: the
    workbench's renders, encodes and directions are answered by a replica, renders batched there."""

    remote = True

    def __init__(self, bridge: RayBridge, kind: str, spec, info: dict) -> None:
        self._call = (bridge, kind, spec)
        self.kind, self.name, self._z_shape = info["kind"], info["name"], tuple(info["z_shape"])
        self.direction_methods, self.can_encode = tuple(info["direction_methods"]), info["can_encode"]

    @property
    def z_shape(self) -> tuple[int, ...]:
        return self._z_shape

    def _forward(self, method: str, *args, **kwargs):
        bridge, kind, spec = self._call
        return bridge.request("call", "latent", "call", (kind, spec, "adapter", method, args, kwargs))

    def point_for_seed(self, seed: int, **condition):
        return self._forward("point_for_seed", seed, **condition)

    def prior(self, n: int, seed: int, **condition):
        return self._forward("prior", n, seed, **condition)

    def render(self, points, *, preview: bool = False):
        return self._forward("render", [self.check(p) for p in points], preview=preview)

    def encode(self, images, **options):
        return self._forward("encode", images, **options)

    def directions(self, method: str, k: int = 8, origin=None, **options):
        return self._forward("directions", method, k, origin, **options)

"""The model tier on Ray Serve: image, text, GAN and VAE models in Serve replicas, reached through a bridge
process.

    browser ─ Gradio UI tier (one process: pages, logins, quotas, History, queue)
                 │ pickle frames over a pipe (studio/raytier/client.py)
              bridge process (the Ray driver: Serve handles, retries)
                 │ Serve handles
              Ray Serve apps "studio-image" (ImageTier), "studio-text" (TextTier) and "studio-latent"
              (LatentTier: GAN and VAE): replicas (autoscaled, CPU/GPU shares per family), each with its own
              model cache and the same loading and generation code as the single-process studio

Why a bridge process: a Ray driver whose cluster goes away blocks in Ray calls (measured here: a
`ray.get` after the head stopped never returned), so the UI tier never embeds Ray itself. When the
bridge stops answering, the UI tier ends it, says so in plain words, and starts a new one on the next
request — which reconnects once the cluster is back.

This module runs in the bridge (`python -m studio.raytier.serve`) and in the replicas; it is also the
import path of the Serve config file (`studio/ray_serve.yaml`, `serve deploy`). Frames:

    UI → bridge   ("start", settings) · ("stream", rid, tier, method, args) · ("call", rid, tier, method, args)
                  · ("status", rid) · ("cancel", rid) · ("close",)
    bridge → UI   ("ready", info) · ("failed", message) · ("event", rid, event) · ("done", rid, value)
                  · ("error", rid, kind, message) · ("beat",) every 2 s while the cluster answers

A replica streams ("alive",) while it loads a model, ("progress", step, total, preview) while it
denoises or ("piece", text) while it writes, then ("done", output, info); errors come back as
("error", kind, message) so the UI tier raises the same exception types as in-process (ValueError,
ModelNotAvailable, GenerationCancelled). A request whose replica dies is retried once on another (seeds
are fixed before it is sent, so the pictures and texts are the same; text already shown is not sent
twice). Stop reaches the replica doing the work: a picture's stream is cancelled (the replica sets the
pipeline's cancel event); a text's stop word goes through Ray's key-value store, which the replica reads
while it writes, so the answer ends as in-process — the text so far, "ended by cancelled". GAN and VAE
work is a plain call of a pipeline's (or its latent-space adapter's) method; the pictures it renders go
through Serve's `@serve.batch`, so concurrent requests for one model share a batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time

from studio.raytier.protocol import KV_PREFIX, NAMESPACE, STOP_PREFIX, TIERS

APP, DEPLOYMENT = TIERS["image"]


def _failure(exc: BaseException) -> tuple:
    """An exception of a replica's work as an ("error", kind, message) event."""
    from pipelines.image import GenerationCancelled
    from pipelines.registry import ModelNotAvailable

    if isinstance(exc, GenerationCancelled):
        return ("error", "cancelled", str(exc))
    if isinstance(exc, ModelNotAvailable):
        return ("error", "model", str(exc))
    if isinstance(exc, ValueError):
        return ("error", "value", str(exc))
    return ("error", "runtime", f"{type(exc).__name__}: {exc}")


async def _relay(done, events: asyncio.Queue, check_stop=None):
    """Yield `events` as they come, and ("alive",) after 2 s of silence, until the `done` future ends; then
    the rest. `check_stop` (if given) is awaited every 0.25 s: it sets the work's cancel flag itself."""
    quiet = checked = time.monotonic()
    while True:
        getter = asyncio.ensure_future(events.get())
        await asyncio.wait({getter, done}, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
        now = time.monotonic()
        if check_stop is not None and now - checked >= 0.25:
            checked = now
            await check_stop()
        # the getter itself is read after check_stop's await: meanwhile it may have taken the last
        # event, and cancelling a finished getter would drop it (the tail of a text, lost once in CI)
        if getter.done() and not getter.cancelled():
            quiet = now
            yield getter.result()
            continue
        getter.cancel()
        if done.done():
            break
        if now - quiet >= 2.0:
            quiet = now
            yield ("alive",)  # loading or a long step: the UI tier knows the replica still works
    while not events.empty():
        yield events.get_nowait()


class _Replica:
    """What every replica has: a `ModelHost` (the UI process's kind), and a report of where it runs."""

    tier = "image"

    def __init__(self, settings) -> None:
        import torch

        from pipelines.cache import ModelCache
        from pipelines.device import pick_placement
        from pipelines.registry import Registry
        from studio.host import ModelHost

        sized = settings.ray.for_tier(self.tier)
        torch.set_num_threads(max(1, int(sized.replica_cpus)))
        # this replica runs its models itself (ray off), on as many threads as it holds CPUs
        settings = dataclasses.replace(settings, ray=dataclasses.replace(settings.ray, address=""),
                                       text_threads=max(1, int(sized.replica_cpus)))
        # the same host as the UI process's; its caller (the UI tier's host) admitted each request already
        self.host = ModelHost(settings=settings, placement=pick_placement(settings.device, settings.dtype),
                              registry=Registry(settings.cache_dir, offline=settings.offline),
                              cache=ModelCache(settings.models_per_modality), check_callers=False)
        self.started = time.time()
        self._last_report: dict | None = None
        self._publish()
        self._publish_every_second()

    def _replica_id(self) -> str:
        from ray import serve

        try:
            return str(serve.get_replica_context().replica_id.unique_id)
        except Exception:  # noqa: BLE001 - outside Serve (tests that build the class directly)
            return f"pid-{os.getpid()}"

    def _report(self) -> dict:
        """Where this replica runs and which models it holds, for the UI tier's Models tab."""
        import ray

        if not hasattr(self, "_where"):  # asked once: it does not change
            self._where = {"node": ray.util.get_node_ip_address(), "device": self.host.placement.describe()}
        return {"pid": os.getpid(), **self._where, "tier": self.tier, "since": self.started,
                "models": [key for _, key in self.host.cache.loaded(self.tier)]}

    def _publish(self, changed_models_only: bool = False) -> None:
        """Put this replica's report in Ray's key-value store when it changed (`changed_models_only`: only when
        its models did — a cheap check for the hot path; a background thread publishes the rest every second)."""
        import json

        try:
            import ray
            from ray.experimental import internal_kv

            if not ray.is_initialized():
                return
            info = self._report()
            last = self._last_report
            if info == last or (changed_models_only and last and info["models"] == last["models"]):
                return
            self._last_report = info
            internal_kv._internal_kv_put(KV_PREFIX + self._replica_id(), json.dumps(info), overwrite=True,
                                         namespace=NAMESPACE)
        except Exception:  # noqa: BLE001 - the report is a courtesy; generation never depends on it
            pass

    def _publish_every_second(self) -> None:
        def loop() -> None:
            while True:
                time.sleep(1.0)
                self._publish()

        threading.Thread(target=loop, name="replica-report", daemon=True).start()

    def pid(self) -> int:
        return os.getpid()

    def _register(self, spec) -> None:
        """Make `spec` (a ModelSpec from the UI tier) known here, so models it registered load here too."""
        if self.host.registry.all_by_name().get(spec.name) != spec:
            self.host.registry.add(spec)


class ImageTier(_Replica):
    """One image replica: a model cache and the image pipelines, as in the single-process studio."""

    tier = "image"

    def _pipe(self, spec):
        self._register(spec)
        return self.host.local_image_pipeline(spec.name)

    def describe(self, spec) -> dict:
        pipe = self._pipe(spec)
        self._publish()
        return {"name": pipe.model.name, "default_size": pipe.model.default_size, "pid": os.getpid()}

    async def generate(self, spec, params, preview_every: int, progress_interval: float | None):
        """Stream ("alive",) / ("progress", …) events, then ("done", output, info) or ("error", kind, message);
        `progress_interval` None: nobody watches, so no progress events at all."""
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def report(*event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("progress", *event))

        def work(_report):
            pipe = self._pipe(spec)  # the request's LoRAs are in its params: applied for it alone
            out = pipe(params, cancel=cancel, callback=None if progress_interval is None else report,
                       preview_every=preview_every, progress_interval=progress_interval or 0.0)
            return out, {"name": pipe.model.name, "pid": os.getpid()}

        job = self.host.lanes.submit("model", work)  # loads and runs on the replica's one model thread
        done = asyncio.wrap_future(job.future)
        try:
            async for event in _relay(done, events):
                yield event
            try:
                out, info = done.result()
            except Exception as exc:  # noqa: BLE001 - said in words to the UI tier; the replica lives on
                yield _failure(exc)
                return
            self._publish(changed_models_only=True)
            yield ("done", out, info)
        finally:
            cancel.set()  # a cancelled stream (Stop, or the caller gone) stops the pipeline at its next step


class TextTier(_Replica):
    """One text replica: text pipelines (transformers in the replica, llama.cpp in its worker processes)."""

    tier = "text"

    def __init__(self, settings) -> None:
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(settings)
        # a thread per answer in flight (the pipeline streams from it), as many as Serve sends this replica
        self._answers = ThreadPoolExecutor(settings.ray.for_tier("text").max_ongoing_requests + 1, "text-answer")

    def _pipe(self, spec, backend: str):
        self._register(spec)
        return self.host.text_pipeline(spec.name, backend=backend)

    def describe(self, spec, backend: str) -> dict:
        pipe = self._pipe(spec, backend)
        self._publish()
        return {"name": pipe.model.name, "backend": pipe.backend, "runs_on": pipe.runs_on, "pid": os.getpid()}

    def count_tokens(self, spec, backend: str, params) -> dict:
        return self._pipe(spec, backend).count_tokens(params)

    async def stream(self, spec, backend: str, params, stop_key: str):
        """Stream ("piece", text) as the model writes (("alive",) while it loads), then ("done", stats, info)
        or ("error", kind, message). A stop word under `stop_key` in Ray's key-value store (the UI's Stop)
        ends the answer as in-process: the text so far, "ended by cancelled"."""
        from ray.experimental import internal_kv

        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stats: dict = {}

        def work():
            self._register(spec)
            with self.host.text_lease(spec.name, backend=backend) as pipe:  # never closed mid-answer
                for piece in pipe.stream(params, cancel=cancel, stats=stats):
                    loop.call_soon_threadsafe(events.put_nowait, ("piece", piece))
                return {"name": pipe.model.name, "backend": pipe.backend, "runs_on": pipe.runs_on,
                        "pid": os.getpid()}

        async def check_stop() -> None:
            if await asyncio.to_thread(internal_kv._internal_kv_exists, STOP_PREFIX + stop_key, namespace=NAMESPACE):
                cancel.set()

        done = loop.run_in_executor(self._answers, work)
        try:
            async for event in _relay(done, events, check_stop):
                yield event
            try:
                info = done.result()
            except Exception as exc:  # noqa: BLE001 - said in words to the UI tier; the replica lives on
                yield _failure(exc)
                return
            self._publish(changed_models_only=True)
            yield ("done", dict(stats), info)
        finally:
            cancel.set()  # the caller gone: the model stops at its next token
            try:
                internal_kv._internal_kv_del(STOP_PREFIX + stop_key, namespace=NAMESPACE)
            except Exception:  # noqa: BLE001 - only tidying
                pass


def _plain(value) -> bool:
    """Numbers, names, devices and dataclasses of those: safe and small to send as they are."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str, torch.device, torch.dtype)):
        return True
    if isinstance(value, (tuple, list)):
        return len(value) <= 64 and all(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


def _snapshot(obj) -> dict:
    """The plain attributes of `obj` and the names of its public methods: what the UI tier's stand-in
    answers without a call."""
    import inspect

    values, methods = {}, []
    for name in sorted(set(dir(type(obj))) | set(vars(obj))):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(obj, name, None)
        if callable(static) and not isinstance(static, property):
            methods.append(name)
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - a property that cannot answer here: left out
            continue
        if callable(value):
            methods.append(name)
        elif _plain(value):
            values[name] = value
    return {"values": values, "methods": methods}


class LatentTier(_Replica):
    """One GAN and VAE replica: the same pipelines and latent-space adapters as in-process. Every request
    runs on its own thread, and while several are in the replica, every picture the pipelines render (a
    GAN's `render`, a VAE's `decode`) goes through Serve's `@serve.batch`: what they ask of the same model at
    about the same time is rendered as one batch. A lone request renders directly."""

    tier = "latent"

    def __init__(self, settings) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from ray import serve

        self.batch_sizes: list[int] = []  # latents per batched render, for the Models tab and the tests
        super().__init__(settings)  # publishes the first report, which counts them
        # a thread per request in flight (each may wait on the batcher), and one that renders the batches
        self._requests = ThreadPoolExecutor(settings.ray.for_tier("latent").max_ongoing_requests + 2, "latent-request")
        self._renderer = ThreadPoolExecutor(1, "latent-render")
        self._in_flight = 0  # requests in this replica now (changed on its event loop only)
        # a short wait: a lone request pays it; under load, requests queue while a batch renders anyway
        self._render_batch = serve.batch(max_batch_size=64, batch_wait_timeout_s=0.001)(self._render_many)
        self._loop = None

    def _pipe(self, kind: str, spec):
        self._register(spec)
        pipe = self.host.gan_pipeline(spec.name) if kind == "gan" else self.host.vae_pipeline(spec.name)
        if not getattr(pipe, "_batched", False):
            # the pipeline renders through the batcher; everything else it computes stays its own code
            owner = pipe if kind == "gan" else pipe.model
            method = "render" if kind == "gan" else "decode"
            plain = getattr(owner, method)
            setattr(owner, method, lambda latents, batch=64, _plain=plain, _key=(kind, spec.name):
                    self._render_from_thread(_key, _plain, latents))
            pipe._batched = True
        return pipe

    def _adapter(self, kind: str, spec):
        from pipelines.gan import GANLatentModel
        from pipelines.vae import VAELatentModel

        pipe = self._pipe(kind, spec)
        if getattr(pipe, "_latent_model", None) is None:
            pipe._latent_model = GANLatentModel(pipe) if kind == "gan" else VAELatentModel(pipe)
        return pipe._latent_model

    def _render_from_thread(self, key, plain, latents):
        """Called on a request's thread: hand the latents to the batcher on the replica's event loop — or,
        when this is the only request in the replica (nothing to batch with), render them right here."""
        if self._in_flight <= 1:
            self.batch_sizes.append(int(latents.shape[0]))
            return plain(latents)
        images = asyncio.run_coroutine_threadsafe(self._render_batch((key, plain, latents)), self._loop).result()
        if isinstance(images, BaseException):
            raise images
        return images

    async def _render_many(self, jobs: list) -> list:
        """@serve.batch: concatenate the latents of jobs for the same model (and latent shape), render
        each group once on a thread, and split the pictures back."""
        import torch

        groups: dict = {}
        for i, (key, plain, latents) in enumerate(jobs):
            groups.setdefault((key, tuple(latents.shape[1:]), latents.dtype), (plain, []))[1].append(i)
        answers: list = [None] * len(jobs)
        for plain, members in groups.values():
            latents = torch.cat([jobs[i][2] for i in members])
            self.batch_sizes.append(int(latents.shape[0]))
            try:
                images = await asyncio.get_running_loop().run_in_executor(self._renderer, plain, latents)
            except Exception as exc:  # noqa: BLE001 - each caller gets the error
                images, failure = None, exc
            start = 0
            for i in members:
                n = jobs[i][2].shape[0]
                answers[i] = images[start:start + n] if images is not None else failure
                start += n
        return answers

    def describe(self, kind: str, spec) -> dict:
        pipe = self._pipe(kind, spec)
        adapter = self._adapter(kind, spec)
        self._publish()
        return {"pipe": _snapshot(pipe), "model": _snapshot(pipe.model), "pid": os.getpid(),
                "adapter": {"name": adapter.name, "kind": adapter.kind, "z_shape": tuple(adapter.z_shape),
                            "direction_methods": tuple(adapter.direction_methods), "can_encode": adapter.can_encode}}

    async def call(self, kind: str, spec, target: str, method: str, args: tuple, kwargs: dict):
        """`method(*args, **kwargs)` of the pipeline ("pipe"), its model ("model") or its latent-space adapter
        ("adapter"), on a thread of its own; pictures it renders are batched with other requests'."""
        if method.startswith("_") and method != "__call__":
            raise ValueError(f"{method} is not a public method")
        self._loop = asyncio.get_running_loop()

        def work():
            pipe = self._pipe(kind, spec)
            owner = {"pipe": pipe, "model": pipe.model, "adapter": self._adapter(kind, spec)}[target]
            return getattr(owner, method)(*args, **kwargs)

        self._in_flight += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(self._requests, work)
        finally:
            self._in_flight -= 1
        self._publish(changed_models_only=True)
        return answer

    def _report(self) -> dict:
        sizes = list(self.batch_sizes)
        return {**super()._report(), "renders": len(sizes), "largest_batch": max(sizes, default=0),
                "models": [f"{m} {k}" for m in ("gan", "vae") for _, k in self.host.cache.loaded(m)]}


def deployment(settings, tier: str = "image"):
    """The Serve deployment of `tier` (image, text or latent), sized from the settings' [ray] table and its own
    [ray.<tier>] table."""
    from ray import serve

    r = settings.ray.for_tier(tier)
    return serve.deployment(
        {"image": ImageTier, "text": TextTier, "latent": LatentTier}[tier], name=TIERS[tier][1],
        max_ongoing_requests=r.max_ongoing_requests,
        autoscaling_config={"min_replicas": r.min_replicas, "max_replicas": r.max_replicas,
                            "target_ongoing_requests": r.target_ongoing_requests,
                            "upscale_delay_s": r.upscale_delay_s, "downscale_delay_s": r.downscale_delay_s},
        ray_actor_options={"num_cpus": r.replica_cpus, "num_gpus": r.replica_gpus},
    )


def build_app(args: dict):
    """Serve application builder (`serve deploy studio/ray_serve.yaml`): args name the family ("tier":
    image, text or latent) and may name a settings file ("config")."""
    from studio.config import load_settings

    tier = args.get("tier", "image")
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    settings = load_settings(args.get("config"))
    return deployment(settings, tier).bind(settings)


def replica_report(tiers=tuple(TIERS)) -> dict:
    """Per family: Serve's own view (status, replica states) plus what each live replica published."""
    import json

    import ray
    from ray import serve
    from ray.experimental import internal_kv

    status = serve.status()
    # Serve's replicas are named actors ("SERVE_REPLICA::app#deployment#id"): the live ones' ids
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    published: dict[str, list] = {}
    live: set = set()
    for tier in tiers:
        live |= {n.rsplit("#", 1)[-1] for n in names if "{}#{}#".format(*TIERS[tier]) in n}
    for key in internal_kv._internal_kv_list(KV_PREFIX, namespace=NAMESPACE):
        replica = key.decode()[len(KV_PREFIX):]
        raw = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
        info = json.loads(raw) if raw else {}
        if info.get("tier", "image") not in tiers:
            continue
        if replica not in live:  # a replica that is gone (killed, scaled down): forget its report
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)
            continue
        published.setdefault(info.get("tier", "image"), []).append({**info, "id": replica})
    report = {}
    for tier in tiers:
        app_name, deployment_name = TIERS[tier]
        app = status.applications.get(app_name)
        if app is None:
            report[tier] = {"status": "NOT_DEPLOYED", "replicas": {}, "published": []}
            continue
        found = app.deployments.get(deployment_name)
        report[tier] = {"status": str(app.status), "published": published.get(tier, []),
                        "replicas": {str(k): v for k, v in (dict(found.replica_states) if found else {}).items()}}
    return report


# -- the bridge process --------------------------------------------------------------------------------


def _connect(settings) -> tuple[dict, dict]:
    """Join (or start) Ray; find each family's Serve app, or deploy it. Returns the handles by family."""
    import ray
    from ray import serve

    r = settings.ray
    if r.address == "local":
        # "local" always starts a new Ray (never joins one found on this machine by accident)
        ray.init(address="local", num_cpus=r.cpus or None, include_dashboard=False, log_to_driver=False,
                 namespace=NAMESPACE)
    else:
        ray.init(address=r.address, log_to_driver=False, namespace=NAMESPACE)
    handles, missing = {}, []
    for tier in r.tiers:
        try:
            handles[tier] = serve.get_app_handle(TIERS[tier][0])  # deployed already (`serve deploy`, another studio)
        except Exception:  # noqa: BLE001 - Serve raises several kinds for "no such app"
            missing.append(tier)
    note = ""
    if missing:
        free = float(ray.available_resources().get("CPU", 0))
        settings, note = _fit(settings, free, r.address == "local", missing)
        # no HTTP proxies where the studio starts Serve: the UI tier calls through handles only (a Serve that
        # an operator runs already keeps its own settings)
        serve.start(proxy_location="Disabled")
        for tier in missing:
            handles[tier] = serve.run(deployment(settings, tier).bind(settings), name=TIERS[tier][0], route_prefix=None)
    return handles, {"address": r.address, "deployed": missing, "nodes": len(ray.nodes()), "note": note}


def _fit(settings, cpus: float, local: bool, tiers: list[str] | None = None):
    """Settings whose minimum replicas of `tiers` (those about to be deployed; default all) fit in `cpus`: a
    local Ray shares its CPUs among the families' replicas (said in the note); a cluster too small for them
    is a plain error rather than replicas that never start."""
    import math

    r = settings.ray
    tiers = list(tiers or r.tiers)
    need = sum(r.for_tier(t).min_replicas * r.for_tier(t).replica_cpus for t in tiers)
    if need <= cpus + 1e-9:
        return settings, ""
    if not local:
        raise ValueError(f"the model tier's smallest size needs {need:g} CPUs (min_replicas × replica_cpus over "
                         f"{', '.join(r.tiers)}) but the cluster has {cpus:g}: lower them in [ray] or add nodes")
    factor = cpus / need
    sizes = dict(r.tier_sizes)
    fitted = {**sizes, **{t: tuple(sorted({**dict(sizes.get(t, ())), "replica_cpus": math.floor(
        r.for_tier(t).replica_cpus * factor * 1000) / 1000}.items())) for t in tiers}}
    settings = dataclasses.replace(settings, ray=dataclasses.replace(r, tier_sizes=tuple(fitted.items())))
    shares = ", ".join(f"{t} {settings.ray.for_tier(t).replica_cpus:g}" for t in tiers)
    return settings, f"{cpus:g} CPUs for {need:g} CPUs of replicas: each replica's share is scaled to fit ({shares})"


def _lost(exc: BaseException) -> bool:
    """A replica (actor) died or went away: the request may be retried on another."""
    import ray.exceptions as rex

    kinds = tuple(k for k in (getattr(rex, "RayActorError", None), getattr(rex, "ActorDiedError", None),
                              getattr(rex, "ActorUnavailableError", None)) if k)
    return isinstance(exc, kinds)


class _Shown:
    """A text answer's pieces as sent to the UI tier, so a retry on another replica (same seed, same text)
    sends only what is new."""

    def __init__(self) -> None:
        self.sent, self.replayed = "", ""

    def restart(self) -> None:
        self.replayed = ""

    def new_part(self, piece: str) -> str:
        """The part of `piece` not sent yet; raises when the retried answer differs from what was shown."""
        before = self.replayed
        self.replayed += piece
        if len(self.replayed) <= len(self.sent):
            if not self.sent.startswith(self.replayed):
                raise LookupError("the retried answer differs from the one shown")
            return ""
        if not self.replayed.startswith(self.sent):
            raise LookupError("the retried answer differs from the one shown")
        fresh = self.replayed[max(len(self.sent), len(before)):]
        self.sent = self.replayed
        return fresh


class _Bridge:
    """The bridge process's side of the UI tier's requests: each runs on a thread of its own, answers in frames on
    `out` (one writer at a time), and can be stopped by its request id."""

    def __init__(self, out, handles: dict) -> None:
        self.out, self.handles = out, handles
        self.lock = threading.Lock()
        self.streams: dict = {}  # rid: the Serve stream answering it (pictures: cancelled on Stop)
        self.stop_keys: dict = {}  # rid: the key a text replica reads for its stop word
        self.cancelled: set = set()

    def send(self, message: tuple) -> None:
        from pipelines.text_worker import send_frame

        with self.lock:
            try:
                send_frame(self.out, message)
            except (BrokenPipeError, OSError, ValueError):
                os._exit(0)  # the UI tier is gone

    def heartbeat(self) -> None:
        """("beat",) every 2 s while the cluster answers; silence tells the UI tier it is gone."""
        import ray

        while True:
            answered: list = []
            probe = threading.Thread(target=lambda found=answered: found.append(ray.cluster_resources()), daemon=True)
            probe.start()
            probe.join(5.0)
            if answered:
                self.send(("beat",))
            time.sleep(2.0)

    def serve(self, inbox) -> None:
        """Start a thread per request until the UI tier closes the bridge (or its end of the pipe)."""
        from pipelines.text_worker import read_frame

        targets = {"stream": self.stream, "call": self.call, "status": self.status, "cancel": self.cancel}
        while (message := read_frame(inbox)) is not None:
            kind = message[0]
            if kind == "close":
                break
            target = targets.get(kind)
            if target is not None:
                threading.Thread(target=target, args=message[1:], daemon=True).start()

    def stream(self, rid: int, tier: str, method: str, args: tuple) -> None:
        try:
            self.stream_answer(rid, tier, method, args)
        finally:
            self.cancelled.discard(rid)
            self.stop_keys.pop(rid, None)

    def stream_answer(self, rid: int, tier: str, method: str, args: tuple) -> None:
        """A streamed answer (a text's pieces, a picture's previews), tried once more on another replica when the
        first is lost; a retried text sends only what is new."""
        from ray.serve.exceptions import RequestCancelledError

        send, cancelled = self.send, self.cancelled
        if tier == "text":
            self.stop_keys[rid] = args[-1]
            if rid in cancelled:  # Stop came before the answer started
                self.cancel(rid)
        shown = _Shown()
        for attempt in range(2):
            if rid in cancelled and tier != "text":
                break
            shown.restart()
            answer = getattr(self.handles[tier].options(stream=True), method).remote(*args)
            self.streams[rid] = answer
            try:
                for event in answer:
                    if event[0] == "piece":
                        event = ("piece", shown.new_part(event[1]))
                        if not event[1]:
                            continue
                    if event[0] == "done":
                        send(("done", rid, (event[1], event[2])))
                        return
                    if event[0] == "error":
                        send(("error", rid, event[1], event[2]))
                        return
                    send(("event", rid, event))
                send(("error", rid, "lost", "the replica ended the answer early"))
                return
            except RequestCancelledError:
                break
            except LookupError as exc:
                send(("error", rid, "lost", str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - sorted below
                if _lost(exc) and attempt == 0 and (rid not in cancelled or tier == "text"):
                    send(("event", rid, ("retry", f"{type(exc).__name__}")))
                    continue
                kind = "lost" if _lost(exc) else "unreachable"
                send(("error", rid, kind, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
                return
            finally:
                self.streams.pop(rid, None)
        send(("error", rid, "cancelled", "stopped"))

    def call(self, rid: int, tier: str, method: str, args: tuple) -> None:
        from ray.exceptions import RayTaskError

        for attempt in range(2):
            try:
                self.send(("done", rid, getattr(self.handles[tier], method).remote(*args).result(timeout_s=600)))
                return
            except Exception as exc:  # noqa: BLE001 - sorted as for a stream
                if _lost(exc) and attempt == 0:
                    continue
                if isinstance(exc, RayTaskError):  # the replica's own error: the same words as in-process
                    _, kind, text = _failure(exc.cause)
                    self.send(("error", rid, kind, text))
                elif _lost(exc):
                    self.send(("error", rid, "lost", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
                else:
                    self.send(("error", rid, "unreachable",
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
                return

    def status(self, rid: int) -> None:
        try:
            self.send(("done", rid, replica_report(tuple(self.handles))))
        except Exception as exc:  # noqa: BLE001
            self.send(("error", rid, "unreachable", f"{type(exc).__name__}: {exc}"))

    def cancel(self, rid: int) -> None:
        self.cancelled.add(rid)
        if rid in self.stop_keys:  # a text: the replica ends the answer itself, with the text so far
            from ray.experimental import internal_kv

            internal_kv._internal_kv_put(STOP_PREFIX + self.stop_keys[rid], b"1", overwrite=True, namespace=NAMESPACE)
        elif (answer := self.streams.get(rid)) is not None:
            answer.cancel()


def bridge_main() -> int:
    """The bridge process (the UI tier starts it): connect to the cluster, then answer the UI tier's frames on
    stdin/stdout until it closes; a cluster of its own ("local") is shut down at the end."""
    from pipelines.text_worker import read_frame

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever Ray prints goes to stderr, never into the frames
    inbox = sys.stdin.buffer
    start = read_frame(inbox)
    if not start or start[0] != "start":
        return 2
    settings = start[1]
    try:
        handles, info = _connect(settings)
    except Exception as exc:  # noqa: BLE001 - reported in words; the UI tier decides what next
        _Bridge(out, {}).send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    bridge = _Bridge(out, handles)
    bridge.send(("ready", info))
    threading.Thread(target=bridge.heartbeat, daemon=True).start()
    bridge.serve(inbox)
    if settings.ray.address == "local":
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(bridge_main())

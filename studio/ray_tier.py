"""The model tier on Ray Serve: image models in Serve replicas, reached through a bridge process.

    browser ─ Gradio UI tier (one process: pages, logins, quotas, History, queue)
                 │ pickle frames over a pipe (studio/remote.py)
              bridge process (the Ray driver: Serve handles, retries)
                 │ Serve handles
              Ray Serve app "studio-image": ImageTier replicas (autoscaled, CPU/GPU shares), each with
              its own model cache and the same loading and generation code as the single-process studio

Why a bridge process: a Ray driver whose cluster goes away blocks in Ray calls (measured here: a
`ray.get` after the head stopped never returned), so the UI tier never embeds Ray itself. When the
bridge stops answering, the UI tier ends it, says so in plain words, and starts a new one on the next
request — which reconnects once the cluster is back.

This module runs in the bridge (`python -m studio.ray_tier`) and in the replicas; it is also the
import path of the Serve config file (`studio/ray_serve.yaml`, `serve deploy`). Frames:

    UI → bridge   ("start", settings) · ("generate", rid, args) · ("call", rid, method, args)
                  · ("status", rid) · ("cancel", rid) · ("close",)
    bridge → UI   ("ready", info) · ("failed", message) · ("event", rid, event) · ("done", rid, value)
                  · ("error", rid, kind, message) · ("beat",) every 2 s while the cluster answers

A replica streams ("alive",) while it loads a model, ("progress", step, total, preview) while it
denoises, then ("done", output, info); errors come back as ("error", kind, message) so the UI tier
raises the same exception types as in-process (ValueError, ModelNotAvailable, GenerationCancelled).
A request whose replica dies is retried once on another (seeds are fixed before it is sent, so the
pictures are the same); Stop reaches the replica doing the work (Serve cancels the stream, the replica
sets the pipeline's cancel event).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

APP = "studio-image"
DEPLOYMENT = "ImageTier"
NAMESPACE = "genai-studio"
KV_PREFIX = "studio-replica/"  # each replica publishes where it runs and what it holds (Models tab)


class ImageTier:
    """One replica: a model cache and the image pipelines, as in the single-process studio."""

    def __init__(self, settings) -> None:
        import torch

        from pipelines.cache import ModelCache
        from pipelines.device import pick_placement
        from pipelines.registry import Registry
        from studio.services import Services

        torch.set_num_threads(max(1, int(settings.ray.replica_cpus)))
        self.services = Services(settings=settings, placement=pick_placement(settings.device, settings.dtype),
                                 registry=Registry(settings.cache_dir, offline=settings.offline),
                                 cache=ModelCache(settings.models_per_modality), history=None)
        self.started = time.time()
        self._publish()

    def _replica_id(self) -> str:
        from ray import serve

        try:
            return str(serve.get_replica_context().replica_id.unique_id)
        except Exception:  # noqa: BLE001 - outside Serve (tests that build the class directly)
            return f"pid-{os.getpid()}"

    def _publish(self) -> None:
        """Where this replica runs and which models it holds, for the UI tier's Models tab."""
        import json

        try:
            import ray
            from ray.experimental import internal_kv

            if not ray.is_initialized():
                return
            info = {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                    "device": self.services.placement.describe(),
                    "models": [key for _, key in self.services.cache.loaded("image")], "since": self.started}
            internal_kv._internal_kv_put(KV_PREFIX + self._replica_id(), json.dumps(info), overwrite=True,
                                         namespace=NAMESPACE)
        except Exception:  # noqa: BLE001 - the report is a courtesy; generation never depends on it
            pass

    def pid(self) -> int:
        return os.getpid()

    def _pipe(self, spec):
        """The pipeline of `spec` (a ModelSpec from the UI tier, so models it registered load here too)."""
        known = self.services.registry.all_by_name().get(spec.name)
        if known != spec:
            self.services.registry.add(spec)
        return self.services.local_image_pipeline(spec.name)

    def describe(self, spec) -> dict:
        pipe = self._pipe(spec)
        self._publish()
        return {"name": pipe.model.name, "default_size": pipe.model.default_size, "pid": os.getpid()}

    async def generate(self, spec, loras: dict, params, preview_every: int, progress_interval: float | None):
        """Stream ("alive",) / ("progress", …) events, then ("done", output, info) or ("error", kind, message);
        `progress_interval` None: nobody watches, so no progress events at all."""
        from pipelines.image import GenerationCancelled
        from pipelines.registry import ModelNotAvailable

        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def report(*event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("progress", *event))

        def work(_report):
            pipe = self._pipe(spec)
            pipe.set_loras(loras)
            out = pipe(params, cancel=cancel, callback=None if progress_interval is None else report,
                       preview_every=preview_every, progress_interval=progress_interval or 0.0)
            return out, {"name": pipe.model.name, "loras": dict(pipe.model.loras), "pid": os.getpid()}

        job = self.services.lanes.submit("model", work)  # loads and runs on the replica's one model thread
        done = asyncio.wrap_future(job.future)
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                finished, _ = await asyncio.wait({getter, done}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    yield getter.result()
                    continue
                getter.cancel()
                if done in finished:
                    break
                yield ("alive",)  # loading or a long step: the UI tier knows the replica still works
            while not events.empty():
                yield events.get_nowait()
            try:
                out, info = done.result()
            except GenerationCancelled as exc:
                yield ("error", "cancelled", str(exc))
                return
            except ModelNotAvailable as exc:
                yield ("error", "model", str(exc))
                return
            except ValueError as exc:
                yield ("error", "value", str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - said in words to the UI tier; the replica lives on
                yield ("error", "runtime", f"{type(exc).__name__}: {exc}")
                return
            self._publish()
            yield ("done", out, info)
        finally:
            cancel.set()  # a cancelled stream (Stop, or the caller gone) stops the pipeline at its next step


def image_deployment(settings):
    """The Serve deployment for image models, sized from the settings' [ray] table."""
    from ray import serve

    r = settings.ray
    return serve.deployment(
        ImageTier, name=DEPLOYMENT, max_ongoing_requests=r.max_ongoing_requests,
        autoscaling_config={"min_replicas": r.min_replicas, "max_replicas": r.max_replicas,
                            "target_ongoing_requests": r.target_ongoing_requests,
                            "upscale_delay_s": r.upscale_delay_s, "downscale_delay_s": r.downscale_delay_s},
        ray_actor_options={"num_cpus": r.replica_cpus, "num_gpus": r.replica_gpus},
    )


def build_app(args: dict):
    """Serve application builder (`serve deploy studio/ray_serve.yaml`): args may name a settings file."""
    from studio.config import load_settings

    settings = load_settings(args.get("config"))
    return image_deployment(settings).bind(settings)


def replica_report() -> dict:
    """Serve's own view (status, replica states) plus what each live replica published."""
    import json

    from ray import serve
    from ray.experimental import internal_kv

    status = serve.status()
    app = status.applications.get(APP)
    if app is None:
        return {"status": "NOT_DEPLOYED", "replicas": {}, "published": []}
    deployment = app.deployments.get(DEPLOYMENT)
    states = dict(deployment.replica_states) if deployment else {}
    import ray

    # Serve's replicas are named actors ("SERVE_REPLICA::app#deployment#id"): the live ones' ids
    live = {a["name"].rsplit("#", 1)[-1] for a in ray.util.list_named_actors(all_namespaces=True)
            if f"{APP}#{DEPLOYMENT}#" in a["name"]}
    published = []
    for key in internal_kv._internal_kv_list(KV_PREFIX, namespace=NAMESPACE):
        replica = key.decode()[len(KV_PREFIX):]
        if replica not in live:  # a replica that is gone (killed, scaled down): forget its report
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)
            continue
        raw = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
        if raw:
            published.append({**json.loads(raw), "id": replica})
    return {"status": str(app.status), "replicas": {str(k): v for k, v in states.items()},
            "published": published}


# -- the bridge process --------------------------------------------------------------------------------


def _connect(settings) -> tuple[object, dict]:
    import ray
    from ray import serve

    r = settings.ray
    if r.address == "local":
        # "local" always starts a new Ray (never joins one found on this machine by accident)
        ray.init(address="local", num_cpus=r.cpus or None, include_dashboard=False, log_to_driver=False,
                 namespace=NAMESPACE)
    else:
        ray.init(address=r.address, log_to_driver=False, namespace=NAMESPACE)
    try:
        handle = serve.get_app_handle(APP)  # deployed already (by `serve deploy`, or another studio)
        deployed = False
    except Exception:  # noqa: BLE001 - Serve raises several kinds for "no such app"
        handle = serve.run(image_deployment(settings).bind(settings), name=APP, route_prefix=None)
        deployed = True
    return handle, {"address": r.address, "deployed": deployed, "nodes": len(ray.nodes())}


def _lost(exc: BaseException) -> bool:
    """A replica (actor) died or went away: the request may be retried on another."""
    import ray.exceptions as rex

    kinds = tuple(k for k in (getattr(rex, "RayActorError", None), getattr(rex, "ActorDiedError", None),
                              getattr(rex, "ActorUnavailableError", None)) if k)
    return isinstance(exc, kinds)


def bridge_main() -> int:
    from pipelines.text_worker import read_frame, send_frame

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever Ray prints goes to stderr, never into the frames
    inbox = sys.stdin.buffer
    lock = threading.Lock()
    streams: dict = {}
    cancelled: set = set()

    def send(message: tuple) -> None:
        with lock:
            try:
                send_frame(out, message)
            except (BrokenPipeError, OSError, ValueError):
                os._exit(0)  # the UI tier is gone

    start = read_frame(inbox)
    if not start or start[0] != "start":
        return 2
    settings = start[1]
    try:
        handle, info = _connect(settings)
    except Exception as exc:  # noqa: BLE001 - reported in words; the UI tier decides what next
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    send(("ready", info))

    def heartbeat() -> None:
        """("beat",) every 2 s while the cluster answers; silence tells the UI tier it is gone."""
        import ray

        while True:
            answered: list = []
            probe = threading.Thread(target=lambda found=answered: found.append(ray.cluster_resources()), daemon=True)
            probe.start()
            probe.join(5.0)
            if answered:
                send(("beat",))
            time.sleep(2.0)

    threading.Thread(target=heartbeat, daemon=True).start()

    def generate(rid: int, args: tuple) -> None:
        try:
            stream_answer(rid, args)
        finally:
            cancelled.discard(rid)

    def stream_answer(rid: int, args: tuple) -> None:
        from ray.serve.exceptions import RequestCancelledError

        for attempt in range(2):
            if rid in cancelled:
                break
            stream = handle.options(stream=True).generate.remote(*args)
            streams[rid] = stream
            try:
                for event in stream:
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
            except Exception as exc:  # noqa: BLE001 - sorted below
                if _lost(exc) and attempt == 0 and rid not in cancelled:
                    send(("event", rid, ("retry", f"{type(exc).__name__}")))
                    continue
                kind = "lost" if _lost(exc) else "unreachable"
                send(("error", rid, kind, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
                return
            finally:
                streams.pop(rid, None)
        send(("error", rid, "cancelled", "stopped"))

    def call(rid: int, method: str, args: tuple) -> None:
        for attempt in range(2):
            try:
                send(("done", rid, getattr(handle, method).remote(*args).result(timeout_s=600)))
                return
            except Exception as exc:  # noqa: BLE001 - sorted as for generate
                if _lost(exc) and attempt == 0:
                    continue
                if exc.__class__.__name__ in ("ModelNotAvailable", "ValueError") or isinstance(exc, ValueError):
                    send(("error", rid, "value", str(exc)))
                else:
                    cause = getattr(exc, "cause", None)
                    kind = "model" if type(cause).__name__ == "ModelNotAvailable" else \
                        "value" if isinstance(cause, ValueError) else "unreachable"
                    text = str(cause) if cause is not None else f"{type(exc).__name__}: {exc}"
                    send(("error", rid, kind, text.splitlines()[0][:500]))
                return

    def status(rid: int) -> None:
        try:
            send(("done", rid, replica_report()))
        except Exception as exc:  # noqa: BLE001
            send(("error", rid, "unreachable", f"{type(exc).__name__}: {exc}"))

    while (message := read_frame(inbox)) is not None:
        kind = message[0]
        if kind == "close":
            break
        if kind == "cancel":
            cancelled.add(message[1])
            stream = streams.get(message[1])
            if stream is not None:
                stream.cancel()
            continue
        target = {"generate": generate, "call": call, "status": status}.get(kind)
        if target is not None:
            threading.Thread(target=target, args=message[1:], daemon=True).start()
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

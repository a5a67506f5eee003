"""The app's state, built once at start-up: settings, device, registry, model cache, history, jobs.

Only read-only weights are shared between users; per-user state (a running job's Stop flag) is
keyed by the Gradio session so one user's Stop never stops another user's job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from pipelines.cache import ModelCache
from pipelines.device import Placement, free_memory, physical_cores, pick_placement, text_placement
from pipelines.gan import GANPipeline, load_gan
from pipelines.image import ImagePipeline, load_image_model
from pipelines.memory import (
    MemoryPlan,
    held_bytes,
    is_out_of_memory,
    plan_image_memory,
    plan_text_memory,
    probe_memory,
)
from pipelines.registry import ModelSpec, Registry
from pipelines.text import TextPipeline, load_text_model
from pipelines.text_llama import BackendChoice, _gguf_path, choose_backend, llama_cpp_available
from pipelines.text_worker import BuildHealth, EngineCrashed, LlamaWorkerConfig, LlamaWorkerPipeline
from pipelines.vae import VAEPipeline, load_vae
from studio.access import Access
from studio.config import Settings
from studio.history import History
from studio.lanes import Lanes

log = logging.getLogger("studio")

def _console(message: str) -> None:
    log.warning(message)
    print(message, flush=True)


class Jobs:
    """Cancel flags of running jobs, one per (session, tab)."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str, tab: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[(session, tab)] = event
        return event

    def cancel(self, session: str, tab: str) -> bool:
        with self._lock:
            event = self._events.get((session, tab))
        if event is None:
            return False
        event.set()
        return True

    def finish(self, session: str, tab: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get((session, tab)) is event:
                del self._events[(session, tab)]


@dataclass
class Services:
    settings: Settings
    placement: Placement
    registry: Registry
    cache: ModelCache
    history: History
    jobs: Jobs = field(default_factory=Jobs)
    lanes: Lanes = field(default_factory=Lanes)
    repair_report: dict = field(default_factory=dict)
    access: Access = field(default_factory=Access)
    upscalers: dict = field(default_factory=dict)  # upscaler models loaded for the Upscale panel, by path

    @classmethod
    def create(cls, settings: Settings) -> Services:
        history = History(settings.outputs)
        if settings.text_threads:
            import torch

            torch.set_num_threads(settings.text_threads)
        return cls(
            settings=settings,
            placement=pick_placement(settings.device, settings.dtype),
            registry=Registry(settings.cache_dir, offline=settings.offline),
            cache=ModelCache(settings.models_per_modality),
            history=history,
            repair_report=history.repair(),
            access=Access(settings.auth, settings.guest_auth, settings.guest_generations_per_hour),
        )

    @cached_property
    def llama_health(self) -> BuildHealth:
        """Whether the installed llama.cpp build runs on this machine (remembered per build and CPU)."""
        return BuildHealth(self.settings.cache_dir / "llama-build-health.json")

    def text_backend(self, spec: ModelSpec, preference: str = "") -> BackendChoice:
        """Which engine serves a text model, and why (`preference` overrides the settings)."""
        broken = self.llama_health.broken_reason() if llama_cpp_available() else None
        return choose_backend(spec, self.placement.device, preference or self.settings.backend_for(spec.name),
                              broken=broken)

    def text_pipeline(self, model: str, log: Callable[[str], None] | None = None,
                      backend: str = "") -> TextPipeline | LlamaWorkerPipeline:
        """The cached pipeline for `model` (a registry name, folder, .gguf file or hub id) on the engine
        `backend` (auto | llama.cpp | transformers; default from the settings). llama.cpp runs in a
        worker process; a build that crashes there on first use is recorded and the model loads on
        transformers instead. With text on the Ray model tier: its stand-in, which streams from a replica."""
        spec = self.registry.lookup(model or self.registry.default("text"), "text")
        s = self.settings
        if s.ray.runs("text"):
            from studio.remote import RemoteTextPipeline

            return self.cache.get("text", f"{spec.name} [{backend or s.backend_for(spec.name)}] [ray]",
                                  lambda: RemoteTextPipeline(self.ray_bridge, spec, backend, s.text_limits))
        choice = self.text_backend(spec, backend)

        def load_transformers(resolved) -> TextPipeline:
            placement = text_placement(self.placement, s.dtype)
            if log:
                log(f"Loading {spec.name} with transformers on {placement.describe()}…")
            loaded = load_text_model(resolved, placement, offline=s.offline, trust_remote_code=s.trust_remote_code,
                                     plan_memory=self.plan_text_memory)
            return TextPipeline(loaded, s.text_limits, s.prompt_cache_entries)

        def load() -> TextPipeline | LlamaWorkerPipeline:
            resolved = self.registry.resolve(spec, log)
            if choice.backend == "transformers":
                return load_transformers(resolved)
            if log:
                log(f"Loading {spec.name} with llama.cpp on {self.placement.describe()}…")
            limits = s.text_limits
            config = LlamaWorkerConfig(
                path=str(_gguf_path(resolved)), name=spec.name, threads=s.text_threads or physical_cores(),
                n_ctx=limits.max_prompt_tokens + limits.max_new_tokens, device=self.placement.device.type,
                limits=limits, prompt_cache_entries=s.prompt_cache_entries)
            try:
                pipe = LlamaWorkerPipeline(config, self.placement, log=_console)
            except EngineCrashed as exc:
                # the build cannot run here: remember it, say so once, and serve the model on transformers
                self.llama_health.record(False, exc.cause)
                _console(f"llama.cpp cannot run on this machine ({exc.cause}); {spec.name} runs on transformers. "
                         "Rebuild: python3 studio/bootstrap.py rebuild-llama")
                if backend == "llama.cpp":
                    raise
                return load_transformers(resolved)
            self.llama_health.record(True)
            return pipe

        return self.cache.get("text", f"{spec.name} [{choice.backend}]", load)

    @cached_property
    def links(self):
        """Per-item share links (the secret lives in the settings folder inside the outputs folder)."""
        from studio.share import ItemLinks

        return ItemLinks(self.history, self.history.root / "settings" / "share.key")

    def loaded_text_pipeline(self, model: str, backend: str = ""):
        """The text pipeline for `model` if it is loaded already (never loads one), else None."""
        spec = self.registry.lookup(model or self.registry.default("text"), "text")
        if self.settings.ray.runs("text"):
            return self.cache.peek("text", f"{spec.name} [{backend or self.settings.backend_for(spec.name)}] [ray]")
        return self.cache.peek("text", f"{spec.name} [{self.text_backend(spec, backend).backend}]")

    def recover_from_out_of_memory(self, exc: BaseException) -> bool:
        """After an out-of-memory error (CUDA or MPS): drop prompt KV caches and return cached memory to
        the driver, so the next request works. True when `exc` was one."""
        if not is_out_of_memory(exc):
            return False
        self.free_prompt_caches()
        free_memory(self.placement.device)
        return True

    def free_prompt_caches(self) -> None:
        """Drop every text model's cached chat prefixes (KV caches), e.g. after running out of memory."""
        for _, key in self.cache.loaded("text"):
            pipe = self.cache.peek("text", key)
            if pipe is None:
                continue
            if hasattr(pipe, "clear_prompt_cache"):
                pipe.clear_prompt_cache()
            else:
                pipe.prompt_cache.clear()

    def gan_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> GANPipeline:
        """The cached GAN pipeline for `model` (a registry name, or a .safetensors file / folder)."""
        spec = self.registry.lookup(model or self.registry.default("gan"), "gan")
        if self.settings.ray.runs("latent"):
            return self._remote_latent("gan", spec)

        def load() -> GANPipeline:
            resolved = self.registry.resolve(spec, log)
            return GANPipeline(load_gan(resolved, self.placement, allow_pickle=self.settings.allow_pickle),
                               self.settings.gan_limits)

        return self.cache.get("gan", spec.name, lambda: self.lanes.run("model", load))

    def held_elsewhere(self, modality: str) -> int:
        """Bytes of weights the other tabs' loaded models hold on the accelerator (0 on CPU)."""
        if self.placement.device.type == "cpu":
            return 0
        return sum(held_bytes(self.cache.peek(m, key)) for m, key in self.cache.loaded() if m != modality)

    def plan_image_memory(self, sizes: dict[str, int]) -> MemoryPlan:
        """The memory plan for an image model about to load; unloads other tabs' models when the plan
        needs their room (the device's free memory already counts what they hold)."""
        memory = probe_memory(self.placement.device, held_by_others=self.held_elsewhere("image"))
        plan = plan_image_memory(sizes, memory)
        if plan.evict_others:
            for modality in ("text", "vae", "gan"):
                self.cache.clear(modality)
        _console(f"Image model memory plan on {memory.name or memory.kind}: {plan.describe()}")
        return plan

    def plan_text_memory(self, weights: int) -> MemoryPlan:
        """The memory plan for a text model about to load (unloads other tabs' models when it needs their room)."""
        memory = probe_memory(self.placement.device, held_by_others=self.held_elsewhere("text"))
        plan = plan_text_memory(weights, memory)
        if plan.evict_others:
            for modality in ("image", "vae", "gan"):
                self.cache.clear(modality)
        if memory.kind == "cuda":
            _console(f"Text model memory plan on {memory.name}: {plan.describe()}")
        return plan

    @property
    def image_concurrency(self) -> int:
        """Image requests the UI tier runs at once: one in-process (one model thread); with the Ray model
        tier, as many as its replicas take."""
        r = self.settings.ray.for_tier("image")
        return r.max_replicas * r.max_ongoing_requests if r.runs("image") else 1

    @property
    def text_concurrency(self) -> int:
        """Text answers the UI tier streams at once: the settings' `text_concurrency`; with the Ray model tier,
        at least as many as its replicas take."""
        r = self.settings.ray.for_tier("text")
        return max(self.settings.text_concurrency, r.max_replicas * r.max_ongoing_requests if r.runs("text") else 0)

    @cached_property
    def ray_bridge(self):
        """The UI tier's link to the Ray Serve model tier (studio/remote.py); started on first use."""
        from studio.remote import RayBridge

        return RayBridge(self.settings, log=_console)

    def image_pipeline(self, model: str, log: Callable[[str], None] | None = None):
        """The image pipeline for `model` (registry name, diffusers folder, .safetensors file or hub id): in
        this process, or its stand-in for the Ray Serve model tier when `--ray` is on."""
        if not self.settings.ray.runs("image"):
            return self.local_image_pipeline(model, log)
        from studio.remote import RemoteImagePipeline

        spec = self.registry.lookup(model or self.registry.default("image"), "image")
        return self.cache.get("image", f"{spec.name} [ray]", lambda: RemoteImagePipeline(self.ray_bridge, spec))

    def local_image_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> ImagePipeline:
        """The cached in-process image pipeline for `model` (the Explore tab's diffusion sliders always use
        this one: they read the model's latents directly)."""
        spec = self.registry.lookup(model or self.registry.default("image"), "image")

        def load() -> ImagePipeline:
            resolved = self.registry.resolve(spec, log)
            if log:
                log(f"Loading {spec.name} on {self.placement.describe()}…")
            plan = self.plan_image_memory if self.placement.device.type != "cpu" else None
            loaded = load_image_model(resolved, self.placement, offline=self.settings.offline,
                                      allow_pickle=self.settings.allow_pickle, plan_memory=plan)
            return ImagePipeline(loaded, self.settings.image_limits)

        # loaded on the thread that will run it: the same diffusion call ran ~50% slower (1.6 s vs 1.05 s,
        # 4 emoji images) when the weights had been loaded on another thread (glibc's per-thread arenas)
        return self.cache.get("image", spec.name, lambda: self.lanes.run("model", load))

    def vae_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> VAEPipeline:
        """The cached VAE pipeline for `model` (registry name, our VAE folder, or a diffusers VAE)."""
        spec = self.registry.lookup(model or self.registry.default("vae"), "vae")
        if self.settings.ray.runs("latent"):
            return self._remote_latent("vae", spec)

        def load() -> VAEPipeline:
            return VAEPipeline(load_vae(self.registry.resolve(spec, log), self.placement, offline=self.settings.offline))

        return self.cache.get("vae", spec.name, lambda: self.lanes.run("model", load))

    def _remote_latent(self, kind: str, spec: ModelSpec):
        """The stand-in for a GAN or VAE pipeline on the Ray model tier."""
        from studio.remote import RemoteLatentPipeline

        return self.cache.get(kind, f"{spec.name} [ray]", lambda: RemoteLatentPipeline(self.ray_bridge, kind, spec))

    @property
    def latent_concurrency(self) -> int:
        """GAN and VAE requests the UI tier runs at once: one in-process (the model thread); with the Ray
        model tier, as many as its replicas take."""
        r = self.settings.ray.for_tier("latent")
        return r.max_replicas * r.max_ongoing_requests if r.runs("latent") else 1

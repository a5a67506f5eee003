"""`ModelHost`: the one owner of model execution — loaded models, placement and memory plans, the cache
(reference-counted: nothing in use is evicted) and where model work runs (the lanes).

The same host runs in the UI process and in every Ray Serve replica (studio/raytier/serve.py). App state —
History, Access, Jobs, share links — is `studio.services.Services`, which holds a host.

Before it opens anything for a request, the host asks its admission (`host.admission`, a
`studio.admission.ModelAdmission`: model names, paths, add-ons, Explore's limits, guests' rules), so every path —
page, API, MCP, Explore, the compatibility APIs — is checked in one place. Explore's renders and the actions
call the same admission directly (`services.host.admission.admit_look`, `.admit_render`, `.caller()`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pipelines.cache import ModelCache
from pipelines.device import Placement, free_memory, physical_cores, pick_placement, text_placement
from pipelines.gan import GANPipeline, load_gan
from pipelines.image import ImagePipeline, load_image_model
from pipelines.image_speed import SpeedParams, speed_up
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
from pipelines.text_llama import BackendChoice, choose_backend, gguf_path, llama_cpp_available
from pipelines.text_worker import BuildHealth, EngineCrashed, LlamaWorkerConfig, LlamaWorkerPipeline
from pipelines.vae import VAEPipeline, load_vae
from studio.admission import ModelAdmission
from studio.caller import Caller, calling  # noqa: F401 (re-exported: tests, studio.compat.auth)
from studio.config import Settings
from studio.lanes import Lanes

log = logging.getLogger("studio")

REMOTE_IMAGE = "image [ray]"  # the cache slot of image stand-ins for the Ray tier


def _console(message: str) -> None:
    log.warning(message)
    print(message, flush=True)


@dataclass
class ModelHost:
    settings: Settings
    placement: Placement
    registry: Registry
    cache: ModelCache
    lanes: Lanes = field(default_factory=Lanes)
    check_callers: bool = True  # False in a Ray replica: its caller, the UI tier's host, admitted the request
    admission: ModelAdmission = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.admission = ModelAdmission(self.settings, self.registry, self.loaded_names, enforce=self.check_callers)

    @classmethod
    def create(cls, settings: Settings, *, check_callers: bool = True) -> ModelHost:
        if settings.text_threads:
            import torch

            torch.set_num_threads(settings.text_threads)
        return cls(settings=settings, placement=pick_placement(settings.device, settings.dtype),
                   registry=Registry(settings.cache_dir, offline=settings.offline),
                   cache=ModelCache(settings.models_per_modality), check_callers=check_callers)

    def loaded_names(self, modality: str) -> set[str]:
        """The names of `modality`'s models loaded now (in this process or, for images, as Ray stand-ins)."""
        slots = (modality, REMOTE_IMAGE) if modality == "image" else (modality,)
        return {key.split(" [")[0] for slot in slots for _, key in self.cache.loaded(slot)}

    # -- helper models ---------------------------------------------------------------------------------------
    def estimator(self, kind: str):
        """The ControlNet `kind` ("depth" or "pose") preprocessor's model — the settings' depth_model / pose_model,
        else the registry's (from the hub's cache, or downloaded when online) — loaded once into the model cache."""
        from pipelines.image_control import ESTIMATORS, load_estimator

        self.admission.admit_estimator(kind)
        location = getattr(self.settings, f"{kind}_model") or self.registry.all_by_name()[ESTIMATORS[kind]].location
        placement, offline = self.placement, self.settings.offline
        return self.cache.get("helper", location, lambda: load_estimator(kind, location, placement, offline=offline))

    # -- text ------------------------------------------------------------------------------------------------
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
        `backend` (auto | llama.cpp | transformers; default from the settings), for a short use."""
        return self.cache.get("text", *self._text_entry(model, log, backend))

    def text_lease(self, model: str, log: Callable[[str], None] | None = None, backend: str = ""):
        """`text_pipeline`, held in use (never evicted, its engine never closed) until the block ends."""
        return self.cache.lease("text", *self._text_entry(model, log, backend))

    def _text_entry(self, model: str, log, backend: str) -> tuple[str, Callable]:
        """The cache key and loader of a text model. llama.cpp runs in a worker process; a build that crashes
        there on first use is recorded and the model loads on transformers instead. With text on the Ray model
        tier: its stand-in, which streams from a replica."""
        self.admission.admit_backend(backend)
        spec = self.admission.admit_model("text", model)
        s = self.settings
        if s.ray.runs("text"):
            from studio.raytier.client import RemoteTextPipeline

            return (f"{spec.name} [{backend or s.backend_for(spec.name)}] [ray]",
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
                path=str(gguf_path(resolved)), name=spec.name, threads=s.text_threads or physical_cores(),
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

        return f"{spec.name} [{choice.backend}]", load

    def loaded_text_pipeline(self, model: str, backend: str = ""):
        """The text pipeline for `model` if it is loaded already (never loads one), else None."""
        spec = self.admission.admit_model("text", model)
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

    @property
    def text_concurrency(self) -> int:
        """Text answers the UI tier streams at once: the settings' `text_concurrency`; with the Ray model tier,
        at least as many as its replicas take."""
        r = self.settings.ray.for_tier("text")
        return max(self.settings.text_concurrency, r.max_replicas * r.max_ongoing_requests if r.runs("text") else 0)

    # -- memory ----------------------------------------------------------------------------------------------
    def held_elsewhere(self, modality: str) -> int:
        """Bytes of weights the other tabs' loaded models hold on the accelerator (0 on CPU)."""
        if self.placement.device.type == "cpu":
            return 0
        return sum(held_bytes(self.cache.peek(m, key)) for m, key in self.cache.loaded() if m != modality)

    def plan_image_memory(self, sizes: dict[str, int]) -> MemoryPlan:
        """The memory plan for an image model about to load; unloads other tabs' idle models when the plan
        needs their room (the device's free memory already counts what they hold)."""
        memory = probe_memory(self.placement.device, held_by_others=self.held_elsewhere("image"))
        plan = plan_image_memory(sizes, memory)
        if plan.evict_others:
            for modality in ("text", "vae", "gan"):
                self.cache.clear(modality)
        _console(f"Image model memory plan on {memory.name or memory.kind}: {plan.describe()}")
        return plan

    def plan_text_memory(self, weights: int) -> MemoryPlan:
        """The memory plan for a text model about to load (unloads other tabs' idle models when it needs room)."""
        memory = probe_memory(self.placement.device, held_by_others=self.held_elsewhere("text"))
        plan = plan_text_memory(weights, memory)
        if plan.evict_others:
            for modality in ("image", "vae", "gan"):
                self.cache.clear(modality)
        if memory.kind == "cuda":
            _console(f"Text model memory plan on {memory.name}: {plan.describe()}")
        return plan

    # -- image -----------------------------------------------------------------------------------------------
    def image_pipeline(self, model: str, log: Callable[[str], None] | None = None):
        """The image pipeline for `model` (registry name, diffusers folder, .safetensors file or hub id): in
        this process, or its stand-in for the Ray Serve model tier when `--ray` is on."""
        return self.cache.get(*self._image_entry(model, log, local=False))

    def image_lease(self, model: str, log: Callable[[str], None] | None = None):
        """`image_pipeline`, held in use until the block ends."""
        return self.cache.lease(*self._image_entry(model, log, local=False))

    def local_image_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> ImagePipeline:
        """The cached in-process image pipeline for `model` (the Explore tab's diffusion sliders always use
        this one: they read the model's latents directly)."""
        return self.cache.get(*self._image_entry(model, log, local=True))

    def _image_entry(self, model: str, log, *, local: bool) -> tuple[str, str, Callable]:
        """(cache slot, key, loader). A Ray stand-in holds no weights: it has a slot of its own ("image [ray]"), so
        it never takes the place of the in-process model that Explore renders with, nor that one its place."""
        spec = self.admission.admit_model("image", model)
        if not local and self.settings.ray.runs("image"):
            from studio.raytier.client import RemoteImagePipeline

            return REMOTE_IMAGE, f"{spec.name} [ray]", lambda: RemoteImagePipeline(self.ray_bridge, spec)

        def load() -> ImagePipeline:
            from pipelines.image_latent import install_mid_block_hook

            resolved = self.registry.resolve(spec, log)
            if log:
                log(f"Loading {spec.name} on {self.placement.describe()}…")
            plan = self.plan_image_memory if self.placement.device.type != "cpu" else None
            loaded = load_image_model(resolved, self.placement, offline=self.settings.offline,
                                      allow_pickle=self.settings.allow_pickle, plan_memory=plan)
            install_mid_block_hook(loaded)  # before any request runs: a hook added mid-run would race it
            loaded.speedups = speed_up(loaded, self.speed)
            if loaded.speedups:
                _console(f"{spec.name}: {', '.join(loaded.speedups)}")
            return ImagePipeline(loaded, self.settings.image_limits)

        # loaded on the thread that will run it: the same diffusion call ran ~50% slower (1.6 s vs 1.05 s,
        # 4 emoji images) when the weights had been loaded on another thread (glibc's per-thread arenas).
        return "image", spec.name, lambda: self.lanes.run("model", load)

    @cached_property
    def speed(self) -> SpeedParams:
        """How image models run here (chosen once): channels-last and fused projections on CUDA, torch.compile
        when the settings ask, TAESD previews when its weights are on disk (`studio fetch taesd`; never
        downloaded by itself)."""
        s = self.settings
        return SpeedParams.for_device(self.placement.device, compile=s.compile, compile_mode=s.compile_mode,
                                      compile_backend=s.compile_backend, preview_decoder=self._preview_decoder("taesd"),
                                      preview_decoder_xl=self._preview_decoder("taesdxl"),
                                      tiny_decoders=self._tiny_decoders())

    def _tiny_decoders(self) -> tuple[tuple[str, str], ...]:
        """The flow families' tiny autoencoders on disk (`studio fetch taef1` / `taesd3`), unless previews are off;
        a preview_decoder folder in the settings is SD's TAESD and is not used for them."""
        if self.settings.preview_decoder == "off":
            return ()
        found = {name: self._registry_location(name) for name in ("taef1", "taesd3")}
        return tuple((name, where) for name, where in found.items() if where)

    def _preview_decoder(self, name: str) -> str:
        """The folder (or hub id in the hub cache) of a TAESD model for live previews, "" when there is none."""
        choice = self.settings.preview_decoder
        if choice == "off":
            return ""
        if choice != "auto":
            return str(Path(choice).expanduser())
        return self._registry_location(name)

    def _registry_location(self, name: str) -> str:
        spec = self.registry.all_by_name().get(name)
        if spec is None or not self.registry.is_present(spec):
            return ""
        return spec.location

    @property
    def image_concurrency(self) -> int:
        """Image requests the UI tier runs at once: one in-process (one model thread); with the Ray model
        tier, as many as its replicas take."""
        r = self.settings.ray.for_tier("image")
        return r.max_replicas * r.max_ongoing_requests if r.runs("image") else 1

    @property
    def image_slots(self) -> int:
        """Image requests let in at once (Gradio's concurrency for the "image" events): the waiting room, so that
        the model lane — not Gradio's first-in-first-out queue — decides whose turn it is (a turn per user)."""
        return max(self.image_concurrency, self.settings.waiting_room)

    # -- GAN and VAE -----------------------------------------------------------------------------------------
    def gan_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> GANPipeline:
        """The cached GAN pipeline for `model` (a registry name, or a .safetensors file / folder)."""
        spec = self.admission.admit_model("gan", model)
        if self.settings.ray.runs("latent"):
            return self._remote_latent("gan", spec)

        def load() -> GANPipeline:
            resolved = self.registry.resolve(spec, log)
            return GANPipeline(load_gan(resolved, self.placement, allow_pickle=self.settings.allow_pickle),
                               self.settings.gan_limits)

        return self.cache.get("gan", spec.name, lambda: self.lanes.run("model", load))

    def vae_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> VAEPipeline:
        """The cached VAE pipeline for `model` (registry name, our VAE folder, or a diffusers VAE)."""
        spec = self.admission.admit_model("vae", model)
        if self.settings.ray.runs("latent"):
            return self._remote_latent("vae", spec)

        def load() -> VAEPipeline:
            resolved = self.registry.resolve(spec, log)
            return VAEPipeline(load_vae(resolved, self.placement, offline=self.settings.offline))

        return self.cache.get("vae", spec.name, lambda: self.lanes.run("model", load))

    def _remote_latent(self, kind: str, spec: ModelSpec):
        """The stand-in for a GAN or VAE pipeline on the Ray model tier."""
        from studio.raytier.client import RemoteLatentPipeline

        return self.cache.get(kind, f"{spec.name} [ray]", lambda: RemoteLatentPipeline(self.ray_bridge, kind, spec))

    @property
    def latent_concurrency(self) -> int:
        """GAN and VAE requests the UI tier runs at once: one in-process (the model thread); with the Ray
        model tier, as many as its replicas take."""
        r = self.settings.ray.for_tier("latent")
        return r.max_replicas * r.max_ongoing_requests if r.runs("latent") else 1

    # -- the Ray model tier ----------------------------------------------------------------------------------
    @cached_property
    def ray_bridge(self):
        """The UI tier's link to the Ray Serve model tier (studio/raytier/client.py); started on first use."""
        from studio.raytier.client import RayBridge

        return RayBridge(self.settings, log=_console)

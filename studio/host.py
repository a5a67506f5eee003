"""`ModelHost`: the one owner of model execution — loaded models, placement and memory plans, the cache
(reference-counted: nothing in use is evicted), where model work runs (the lanes), and admission.

The same host runs in the UI process and in every Ray Serve replica (studio/raytier/serve.py). App state —
History, Access, Jobs, share links — is `studio.services.Services`, which holds a host.

Admission is checked here, for every path (page, API, MCP, Explore, a replica's caller): model names
(listed names; for owners also hub ids and paths inside the model folders), server limits on what
Explore renders, and guests' rules. Who is asking comes from the request's `Caller` (`studio.caller`), which
`studio.boundary` sets around every event; a request with no caller on a studio that has guests is treated as a
guest (fail closed).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from pipelines.cache import ModelCache
from pipelines.checks import short
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
from pipelines.text_llama import BackendChoice, _gguf_path, choose_backend, llama_cpp_available
from pipelines.text_worker import BuildHealth, EngineCrashed, LlamaWorkerConfig, LlamaWorkerPipeline
from pipelines.vae import VAEPipeline, load_vae
from studio.access import AccessDenied
from studio.caller import Caller, calling, current_caller  # noqa: F401 (calling: re-exported for tests)
from studio.config import Settings
from studio.lanes import Lanes

log = logging.getLogger("studio")

MAX_MODEL_NAME = 512
MODEL_FILES = (".safetensors", ".gguf", ".ckpt", ".pt", ".pth", ".bin", ".tar")
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
    admission: bool = True  # False in a Ray replica: its caller, the UI tier's host, admitted the request

    @classmethod
    def create(cls, settings: Settings, *, admission: bool = True) -> ModelHost:
        if settings.text_threads:
            import torch

            torch.set_num_threads(settings.text_threads)
        return cls(settings=settings, placement=pick_placement(settings.device, settings.dtype),
                   registry=Registry(settings.cache_dir, offline=settings.offline),
                   cache=ModelCache(settings.models_per_modality), admission=admission)

    # -- admission -------------------------------------------------------------------------------------------
    def caller(self) -> Caller:
        """The request's caller; without one, a guest where the studio has guests (fail closed), else the owner."""
        caller = current_caller()
        if caller is not None:
            return caller
        return Caller("anonymous", guest=bool(self.settings.guest_auth) and self.admission)

    @property
    def model_dirs(self) -> tuple[Path, ...]:
        """The folders an owner's model paths may point into: the settings' `model_dirs`, the home folder,
        the folder the studio runs in, its cache and the temporary folder."""
        extra = tuple(Path(p).expanduser() for p in self.settings.model_dirs)
        return tuple(p.resolve() for p in (*extra, Path.home(), Path.cwd(), Path(self.settings.cache_dir),
                                           Path(tempfile.gettempdir())))

    def admit_model(self, modality: str, name: str) -> ModelSpec:
        """The spec for `name` if this caller may use it; a ValueError naming the `model` field (or AccessDenied
        for a guest) otherwise. Nothing is opened before it says yes."""
        text = (name or "").strip() or self.registry.default(modality)
        if len(text) > MAX_MODEL_NAME or any(ord(c) < 32 for c in text):
            raise ValueError(f"model: a model name, hub id or path has at most {MAX_MODEL_NAME} characters and no "
                             f"control characters (got {len(text):,} characters)")
        if not self.admission:
            return self.registry.lookup(text, modality)
        caller = self.caller()
        if caller.guest:
            slots = (modality, REMOTE_IMAGE) if modality == "image" else (modality,)
            allowed = {self.registry.default(modality)} | {key.split(" [")[0] for slot in slots
                                                            for _, key in self.cache.loaded(slot)}
            if text not in allowed:
                raise AccessDenied(f"Guests can't switch models: use {self.registry.default(modality)} (or leave the "
                                   "model blank). The studio's owner can load others.")
        if text not in self.registry.all_by_name():
            self._admit_path(text, modality)
        return self.registry.lookup(text, modality)

    def _admit_path(self, text: str, modality: str, field: str = "model") -> None:
        """A path (or what could be one) must lie inside the model folders and be a model folder or file; the
        errors name `field`."""
        try:
            path = Path(text).expanduser()
            exists = path.exists()
        except OSError:
            raise ValueError(f"{field}: {short(text)} is not a usable path or model name") from None
        if not exists and not text.startswith((".", "/", "~", "\\")):
            return  # a hub id (the registry checks its form)
        resolved = path.resolve()
        if not any(resolved == d or d in resolved.parents for d in self.model_dirs):
            folders = ", ".join(map(str, self.model_dirs))
            raise ValueError(f"{field}: {short(text)} is outside the model folders ({folders}); put the model in one "
                             f"of them (or add a folder with model_dirs in the settings file), or choose a listed "
                             f"{modality} model")
        if exists and resolved.is_file() and resolved.suffix.lower() not in MODEL_FILES:
            raise ValueError(f"{field}: {resolved.name} is not a model file (expected {', '.join(MODEL_FILES)}, or a "
                             "model folder)")

    def admit_controlnet(self, name: str) -> str:
        """Where a ControlNet a request names lives — a folder inside the model folders, or a hub id — if this
        caller may load one (guests may not: they load no weights of their own). A ValueError names the field."""
        return self._admit_addon(name, "ControlNet", "controlnet model", "lllyasviel/control_v11p_sd15_canny")

    def admit_ip_adapter(self, name: str) -> str:
        """Where an IP-Adapter a request names lives — a .safetensors file inside the model folders (its
        image_encoder folder beside it), or a hub file — if this caller may load one (guests may not)."""
        location = self._admit_addon(name, "IP-Adapter", "ip_adapter", "h94/IP-Adapter/models/ip-adapter_sd15"
                                                                       ".safetensors")
        if not location.endswith(".safetensors"):
            raise ValueError(f"ip_adapter: {short(name)} is not an IP-Adapter .safetensors file")
        return location

    def _admit_addon(self, name: str, kind: str, field: str, example: str) -> str:
        text = (name or "").strip()
        if not text:
            raise ValueError(f"{field}: give a {kind} folder, file or hub id (e.g. {example})")
        if len(text) > MAX_MODEL_NAME or any(ord(c) < 32 for c in text):
            raise ValueError(f"{field}: at most {MAX_MODEL_NAME} characters and no control characters")
        if self.admission and self.caller().guest:
            raise AccessDenied(f"Guests can't load {kind} models; the studio's owner can.")
        self._admit_path(text, kind, field=field)
        path = Path(text).expanduser()
        if path.exists():
            return str(path.resolve())
        if self.settings.offline:
            raise ValueError(f"{field}: {short(text)} is a model-hub id and the studio is offline: give the "
                             f"downloaded {kind} instead")
        return text

    def estimator(self, kind: str):
        """The ControlNet `kind` ("depth" or "pose") preprocessor's model — the settings' depth_model / pose_model,
        else the registry's (from the hub's cache, or downloaded when online) — loaded once into the model cache."""
        from pipelines.image_control import ESTIMATORS, load_estimator

        if self.admission and self.caller().guest:
            raise AccessDenied(f"Guests can't use the {kind} preprocessor (it loads a model of its own); the "
                               "studio's owner can.")
        location = getattr(self.settings, f"{kind}_model") or self.registry.all_by_name()[ESTIMATORS[kind]].location
        placement, offline = self.placement, self.settings.offline
        return self.cache.get("helper", location, lambda: load_estimator(kind, location, placement, offline=offline))

    def admit_look(self, look):
        """A diffusion look (Explore's render settings) within the server's image limits, its IP-Adapter admitted."""
        guest = self.admission and self.caller().guest
        limits = self.settings.guest_limits if guest else self.settings.image_limits
        if guest and look.preview_steps > self.settings.guest_preview_steps:
            raise ValueError(f"preview_steps must be from 1 to {self.settings.guest_preview_steps} for guests, got "
                             f"{look.preview_steps}")
        if look.ip_adapter:
            look = replace(look, ip_adapter=self.admit_ip_adapter(look.ip_adapter))
        for name in ("steps", "preview_steps"):
            value = getattr(look, name)
            if value > limits.max_steps:
                raise ValueError(f"{name} must be from 1 to {limits.max_steps} on this server, got {value}")
        megapixels = look.width * look.height / 1e6
        if megapixels > limits.max_megapixels + 1e-9:
            raise ValueError(f"size: {look.width}×{look.height} is {megapixels:.2f} megapixels; the limit is "
                             f"{limits.max_megapixels:g}. Choose a smaller width or height.")
        return look

    def render_cap(self, kind: str) -> int:
        """Pictures one latent render request may hold: the longest walk the tabs allow (diffusion: 2 × the
        frame limit; GAN and VAE: 10 × it, or a 24 × 24 map)."""
        frames = self.settings.gan_limits.max_frames
        return frames * 2 if kind == "diffusion" else max(frames * 10, 24 * 24)

    def admit_render(self, count: int, *, preview: bool, kind: str = "diffusion", units: float = 0.0) -> None:
        """A latent render of `count` pictures: within the cap; its `units` of work count against a guest's quota
        (slider previews too: they are work)."""
        cap = self.render_cap(kind)
        if not 1 <= count <= cap:
            raise ValueError(f"pictures: one {kind} request renders 1 to {cap:,} pictures, got {count:,}")
        self.caller().spend(units, "this preview" if preview else "this render")

    def admit_backend(self, backend: str) -> None:
        if backend not in ("", "auto", self.settings.text_backend) and self.admission and self.caller().guest:
            raise AccessDenied("Guests can't change the text engine; it is the owner's setting.")

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
        self.admit_backend(backend)
        spec = self.admit_model("text", model)
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

        return f"{spec.name} [{choice.backend}]", load

    def loaded_text_pipeline(self, model: str, backend: str = ""):
        """The text pipeline for `model` if it is loaded already (never loads one), else None."""
        spec = self.admit_model("text", model)
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
        spec = self.admit_model("image", model)
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
                                      preview_decoder_xl=self._preview_decoder("taesdxl"))

    def _preview_decoder(self, name: str) -> str:
        """The folder (or hub id in the hub cache) of a TAESD model for live previews, "" when there is none."""
        choice = self.settings.preview_decoder
        if choice == "off":
            return ""
        if choice != "auto":
            return str(Path(choice).expanduser())
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
        spec = self.admit_model("gan", model)
        if self.settings.ray.runs("latent"):
            return self._remote_latent("gan", spec)

        def load() -> GANPipeline:
            resolved = self.registry.resolve(spec, log)
            return GANPipeline(load_gan(resolved, self.placement, allow_pickle=self.settings.allow_pickle),
                               self.settings.gan_limits)

        return self.cache.get("gan", spec.name, lambda: self.lanes.run("model", load))

    def vae_pipeline(self, model: str, log: Callable[[str], None] | None = None) -> VAEPipeline:
        """The cached VAE pipeline for `model` (registry name, our VAE folder, or a diffusers VAE)."""
        spec = self.admit_model("vae", model)
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

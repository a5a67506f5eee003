"""Text-to-image, image-to-image and inpainting on Stable Diffusion-family models (diffusers).

    model = load_image_model(resolved, placement)
    out = ImagePipeline(model)(ImageParams(prompt="red heart", steps=20, seed=1))

The pipeline class comes from the model folder's `model_index.json` (or, for a single checkpoint
file, from its tensors), never from the model's name. Image-to-image and inpainting pipelines are
built from the same components (`from_pipe`), so switching mode costs no memory. Noise is drawn per
image from its own seeded generator (seed, seed+1, … across a batch, as AUTOMATIC1111 does), so an
image's seed reproduces it alone; a variation seed blends a second noise in by slerp.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from pipelines.checks import check_float, check_int, short
from pipelines.device import Placement
from pipelines.image_control import MAX_UNITS as MAX_CONTROL_UNITS
from pipelines.image_control import ControlUnit, control_inputs, control_pipeline
from pipelines.image_flow import (
    FLOW_SCHEDULERS,
    Family,
    file_base_repo,
    family_of,
    flow_scheduler,
    folder_family,
    generate_flow,
    hub_base,
    load_transformer_file,
    model_folder,
    read_pipeline,
    read_quantized,
    spec_family,
)
from pipelines.image_ipadapter import ImagePrompt, image_prompt_inputs, is_guided, read_ip_adapter
from pipelines.image_prompt import Conditioning, Style, encode_prompts, parse_weights
from pipelines.image_regions import MAX_REGIONS, Region, regional_unet, whole_prompt
from pipelines.image_upscale import (
    LATENT_UPSCALERS,
    HiresParams,
    OutpaintParams,
    UpscaleParams,
    keep_original,
    outpaint_canvas,
    upscale,
    upscale_latents,
)
from pipelines.latent import slerp
from pipelines.memory import (
    DoesNotFit,
    MemoryPlan,
    apply_image_plan,
    component_bytes,
    file_bytes,
    folder_component_bytes,
    plan_image_memory,
    probe_memory,
)
from pipelines.registry import ModelNotAvailable, ResolvedModel

MODES = ("txt2img", "img2img", "inpaint", "outpaint", "edit")
# what a front end calls each mode; "edit" (a start picture and the change as the prompt) is for instruction-editing
# models (Flux.1 Kontext, Qwen-Image-Edit): `ImageModel.modes` says which modes the loaded model runs
MODE_LABELS = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint", "outpaint": "Outpaint",
               "edit": "Edit by instruction"}
SD_MODES = ("txt2img", "img2img", "inpaint", "outpaint")
SCHEDULERS = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}
# Latent → RGB factors for SD-style 4-channel latents (a cheap preview without the VAE).
SD_PREVIEW_FACTORS = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                                   [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])


class GenerationCancelled(Exception):
    """The user pressed Cancel; nothing was produced or saved."""


@dataclass(frozen=True)
class ImageLimits:
    """Server-side caps, enforced whatever the sliders allow."""

    max_steps: int = 150
    max_megapixels: float = 1.05  # 1024×1024
    max_batch_size: int = 8
    max_batch_count: int = 16
    max_image_pixels: int = 16_000_000  # uploads: refuse bigger (decompression bombs)


@dataclass(frozen=True)
class Lora:
    """One LoRA of a request: a .safetensors file and its weight (-4 … 4)."""

    name: str
    path: Path
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 200:
            raise ValueError("LoRA name: give 1 to 200 characters")
        check_float(f"LoRA weight of {self.name}", self.weight, -4.0, 4.0)
        if self.path.suffix != ".safetensors":
            raise ValueError(f"LoRA {self.path.name}: only .safetensors LoRAs are loaded (pickles can run code)")


def lora_set(loras: dict[str, tuple[Path, float]] | None) -> tuple[Lora, ...]:
    """{name: (path, weight)} (what the page and the API collect) → the request's LoRAs."""
    return tuple(Lora(name, Path(path), float(weight)) for name, (path, weight) in (loras or {}).items())


@dataclass(frozen=True)
class ImageParams:
    """One image request; every front end builds this same object.

    prompt / negative_prompt: text (an empty prompt is allowed: unconditional generation).
    mode: "txt2img", "img2img" (needs init_image) or "inpaint" (needs init_image and mask; white = repaint);
        "edit" (needs init_image; the prompt says the change) on instruction-editing models only.
    steps: 1 … the server's max (150); guidance: classifier-free guidance scale 0 … 30.
    width / height: multiples of 8 from 64 to 2048, within the server's megapixel cap.
    scheduler: one of SCHEDULERS.
    seed: 0 … 2**32-1 or None (random; the seeds used are reported per image).
    variation_seed / variation_strength: blend a second noise by slerp (0 = the base image, 1 = the
        variation seed's image); txt2img only.
    strength: img2img/inpaint denoising strength, (0, 1].
    batch_size: images per run (1 … 8); batch_count: runs (1 … 16), seeds continue across runs.
    mode "outpaint": the start image (resized to width × height) grows by `outpaint`'s pixels per side.
    hires: a second, img2img pass at a bigger size (txt2img only); the final size is within the limits.
    style: a prompt/negative template applied before encoding (the prompt itself is kept as typed).
    loras: the LoRAs this request runs with (`Lora`: file and weight); they apply to this request alone.
    controls, regions, image_prompt: ControlNets, regional prompts and an image prompt (IP-Adapter).
    """

    prompt: str = ""
    negative_prompt: str = ""
    mode: str = "txt2img"
    steps: int = 20
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    scheduler: str = "DPM++ 2M"
    seed: int | None = None
    variation_seed: int | None = None
    variation_strength: float = 0.0
    strength: float = 0.75
    batch_size: int = 1
    batch_count: int = 1
    init_image: object = field(default=None, compare=False, repr=False)  # PIL.Image, RGB
    mask: object = field(default=None, compare=False, repr=False)  # PIL.Image, L
    hires: HiresParams | None = None
    outpaint: OutpaintParams | None = None
    style: Style | None = None
    loras: tuple[Lora, ...] = ()
    controls: tuple[ControlUnit, ...] = ()  # ControlNets with their pictures (pipelines.image_control)
    regions: tuple[Region, ...] = ()  # regional prompts (pipelines.image_regions); the prompt's BREAKs join
    image_prompt: ImagePrompt | None = None  # an IP-Adapter and its picture (pipelines.image_ipadapter)

    def prompts(self) -> tuple[str, str]:
        """The prompt and negative prompt the model reads: the style applied, when there is one; with regions,
        the whole picture reads every region's words."""
        prompt = whole_prompt(self.prompt) if self.regions else self.prompt
        return self.style.apply(prompt, self.negative_prompt) if self.style else (prompt, self.negative_prompt)

    def output_size(self) -> tuple[int, int]:
        """The size of the pictures made: the hires target, the outpainted canvas, or width × height."""
        if self.hires:
            return self.hires.target(self.width, self.height)
        if self.mode == "outpaint" and self.outpaint:
            return self.outpaint.size(self.width, self.height)
        return self.width, self.height

    # what a record (PNG text, a History row) does not hold: pictures, and LoRA files (their names and weights it does)
    NOT_RECORDED = ("init_image", "mask", "loras", "controls", "image_prompt")

    def to_record(self) -> dict:
        """The request as the plain, JSON-ready dict kept in a PNG's text and a History row (and read back by
        restore, PNG info and Explore). Pictures are not kept: ControlNets and the image prompt are kept by their
        settings, LoRAs by name and weight. `from_record` reads it back."""
        plain = {name: getattr(self, name) for name in self._plain_fields()}
        return {**plain, "loras": {lora.name: lora.weight for lora in self.loras},
                "controlnet": [unit.record() for unit in self.controls],
                "image_prompt": self.image_prompt.record() if self.image_prompt else None,
                "regions": [asdict(region) for region in self.regions],
                **{name: asdict(value) for name in ("hires", "outpaint", "style")
                   if (value := getattr(self, name)) is not None}}

    @classmethod
    def from_record(cls, record: dict, **kept_apart) -> ImageParams:
        """The request a record (`to_record`'s dict, e.g. from a PNG) describes. What a record does not hold is
        given by name — `init_image`, `mask`, `loras`, `controls`, `image_prompt` — or left out; other keys of
        the record (its model, a History row's own) are not settings and are ignored."""
        unknown = sorted(set(kept_apart) - set(cls.NOT_RECORDED))
        if unknown:
            raise ValueError(f"from_record: {', '.join(unknown)} are read from the record itself")
        values = {name: record[name] for name in cls._plain_fields() if name in record}
        parts = {"hires": HiresParams, "outpaint": OutpaintParams, "style": Style}
        values.update({name: kind(**record[name]) for name, kind in parts.items() if isinstance(record.get(name), dict)})
        values["regions"] = tuple(Region(r["prompt"], tuple(r["box"]), r["weight"]) for r in record.get("regions") or ())
        return cls(**values, **kept_apart)

    @classmethod
    def _plain_fields(cls) -> list[str]:
        """The fields kept as they are (numbers and text)."""
        parts = {"hires", "outpaint", "style", "regions", *cls.NOT_RECORDED}
        return [f.name for f in fields(cls) if f.name not in parts]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, limits: ImageLimits | None = None) -> None:
        limits = limits or ImageLimits(max_steps=1000, max_megapixels=4.2, max_batch_size=64, max_batch_count=100)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {short(self.mode)}")
        if not isinstance(self.loras, tuple) or not all(isinstance(lora, Lora) for lora in self.loras):
            raise ValueError("loras must be a tuple of Lora (file and weight)")
        if len({lora.name for lora in self.loras}) != len(self.loras):
            raise ValueError("loras: each LoRA once (two files have the same name)")
        if not isinstance(self.controls, tuple) or not all(isinstance(c, ControlUnit) for c in self.controls):
            raise ValueError("controls must be a tuple of ControlUnit")
        if len(self.controls) > MAX_CONTROL_UNITS:
            raise ValueError(f"controlnet: at most {MAX_CONTROL_UNITS} ControlNet units at once, got {len(self.controls)}")
        if not isinstance(self.regions, tuple) or not all(isinstance(r, Region) for r in self.regions):
            raise ValueError("regions must be a tuple of Region")
        if len(self.regions) > MAX_REGIONS:
            raise ValueError(f"regions: at most {MAX_REGIONS} regional prompts, got {len(self.regions)}")
        if self.controls and self.mode == "outpaint":
            raise ValueError("controlnet: not with outpainting (text to image, image to image and inpainting take it)")
        for name, kind in (("hires", HiresParams), ("outpaint", OutpaintParams), ("style", Style),
                           ("image_prompt", ImagePrompt)):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None")
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("prompt and negative_prompt must be text")
        if len(self.prompt) > 4000 or len(self.negative_prompt) > 4000:
            raise ValueError("prompt is too long: keep prompt and negative prompt under 4,000 characters each")
        for field_name, text in zip(("prompt", "negative_prompt"), self.prompts()):
            parse_weights(text, field_name)  # (word:1.3) weighting: a bad weight is named here
        check_int("steps", self.steps, 1, limits.max_steps)
        check_float("guidance", self.guidance, 0.0, 30.0)
        for name in ("width", "height"):
            value = getattr(self, name)
            check_int(name, value, 64, 2048)
            if value % 8:
                raise ValueError(f"{name} must be a multiple of 8 (from 64 to 2048), got {value}")
        for field_name, (w, h) in (("size", (self.width, self.height)), (
                "hires scale" if self.hires else "outpaint", self.output_size())):
            megapixels = w * h / 1e6
            if megapixels > limits.max_megapixels + 1e-9 or max(w, h) > 2048:
                raise ValueError(f"{field_name}: {w}×{h} is {megapixels:.2f} megapixels; the limit is "
                                 f"{limits.max_megapixels:g} (and 2048 a side). Choose a smaller "
                                 f"{'width or height' if field_name == 'size' else field_name}.")
        if self.hires is not None and self.mode != "txt2img":
            raise ValueError("hires fix: only for text to image (img2img and inpaint already start from a picture)")
        if self.mode == "outpaint" and not isinstance(self.outpaint, OutpaintParams):
            raise ValueError("outpaint: choose how many pixels to add on each side")
        if self.scheduler not in SCHEDULERS and self.scheduler not in FLOW_SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join([*SCHEDULERS, *FLOW_SCHEDULERS])}, got "
                             f"{short(self.scheduler)}")
        for name in ("seed", "variation_seed"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 0, 2**32 - 1)
        check_float("variation_strength", self.variation_strength, 0.0, 1.0)
        check_float("strength", self.strength, 0.0, 1.0)
        if self.strength == 0 and self.mode not in ("txt2img", "edit"):
            raise ValueError("strength must be above 0 for img2img and inpaint (0 would change nothing)")
        check_int("batch_size", self.batch_size, 1, limits.max_batch_size)
        check_int("batch_count", self.batch_count, 1, limits.max_batch_count)
        if self.mode != "txt2img" and self.init_image is None:
            raise ValueError(f"init_image: {self.mode} needs a starting image; upload one or send one from a gallery")
        if self.mode == "inpaint":
            if self.mask is None:
                raise ValueError("mask: paint over the part of the image to repaint")
            if self.mask.size != self.init_image.size:
                raise ValueError(f"mask is {self.mask.size[0]}×{self.mask.size[1]} but the image is "
                                 f"{self.init_image.size[0]}×{self.init_image.size[1]}; they must match")


def open_user_image(path, max_pixels: int = ImageLimits.max_image_pixels, mode: str = "RGB"):
    """Open an uploaded image safely: refuse non-images and oversized (bomb) images before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)  # reads only the header
    except Image.DecompressionBombError as exc:
        raise ValueError(f"the image is far too large to open safely ({exc}); the limit is "
                         f"{max_pixels / 1e6:.0f} megapixels. Resize it first.") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError("the uploaded file is not an image PIL can read (use PNG, JPEG or WebP)") from exc
    w, h = image.size
    if w * h > max_pixels:
        raise ValueError(f"the image is {w}×{h} ({w * h / 1e6:.0f} megapixels); the limit is "
                         f"{max_pixels / 1e6:.0f} megapixels. Resize it first.")
    notes = [] if image.mode in ("RGB", mode) else [f"converted from {image.mode} to {mode}"]
    if image.mode in ("RGBA", "LA", "P") and mode == "RGB":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        image = background
    return image.convert(mode), notes


class SerialTokenizer:
    """A shared tokenizer, called by one request at a time. `transformers`' tokenizers set truncation and
    padding on their Rust tokenizer at every call (diffusers calls with padding="max_length", then "longest"),
    so two requests tokenizing at once could each read the other's settings and get ids of the wrong length."""

    def __init__(self, tokenizer, lock) -> None:
        self._tokenizer, self._lock = tokenizer, lock

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str):
        value = getattr(self._tokenizer, name)
        if callable(value) and name in ("encode", "batch_decode", "decode", "tokenize", "pad"):
            def serial(*args, **kwargs):
                with self._lock:
                    return value(*args, **kwargs)
            return serial
        return value


class Adapters:
    """The LoRA set and IP-Adapter the model's shared weights hold, and how many requests run with them now. A
    request with the same set runs at once; one with another set waits until the running ones finish, then the
    set is switched (nothing a request sets outlives it: the next request states its own set, `()` and None for
    none)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.active: tuple[Lora, ...] = ()
        self.users = 0
        self.image_prompt = None  # pipelines.image_ipadapter.IPAdapterRef the UNet holds, or None

    @contextlib.contextmanager
    def using(self, model: ImageModel, loras: tuple[Lora, ...], image_prompt=None):
        """`image_prompt`: an IPAdapterRef whose weights `read_ip_adapter` has read for this model."""
        wanted = (tuple(loras), image_prompt)
        with self._cond:
            while self.users and (self.active, self.image_prompt) != wanted:
                self._cond.wait()
            if (self.active, self.image_prompt) != wanted:
                self._switch(model, *wanted)
            self.users += 1
        try:
            yield
        finally:
            with self._cond:
                self.users -= 1
                self._cond.notify_all()

    def _switch(self, model: ImageModel, wanted: tuple[Lora, ...], image_prompt) -> None:
        """Load (or reweight) exactly `wanted` and `image_prompt` on the shared weights; called with no request
        running."""
        from pipelines.image_ipadapter import switch_ip_adapter

        pipe, name = model.pipe, model.name
        if {lora.name for lora in wanted} != {lora.name for lora in self.active}:
            if wanted:
                from pipelines.image_speed import unfuse_projections

                unfuse_projections(model)  # LoRAs target the separate query, key and value projections
            if self.active:
                pipe.unload_lora_weights()
                self.active = ()
            for lora in wanted:
                try:
                    pipe.load_lora_weights(str(lora.path), adapter_name=lora.name)
                except (ValueError, KeyError, OSError) as exc:
                    pipe.unload_lora_weights()
                    raise ModelNotAvailable(f"LoRA {lora.path.name} does not fit {name}: {exc}") from exc
        if wanted:
            pipe.set_adapters([lora.name for lora in wanted], adapter_weights=[lora.weight for lora in wanted])
        self.active = wanted
        if image_prompt != self.image_prompt:
            previous, self.image_prompt = self.image_prompt, None
            try:
                switch_ip_adapter(model, previous, image_prompt)
            except Exception as exc:  # diffusers refused it: the UNet holds none
                if previous is not None or image_prompt is not None:
                    with contextlib.suppress(Exception):
                        pipe.unload_ip_adapter()
                raise ModelNotAvailable(f"the IP-Adapter {image_prompt.location if image_prompt else ''} does not "
                                        f"fit {name}: {exc}") from exc
            self.image_prompt = image_prompt


@dataclass
class ImageModel:
    """A loaded diffusers pipeline and its siblings for img2img / inpaint (sharing components).

    The pipeline objects are shared by every request and never changed by one: a request works on its own
    `view` (a shallow copy with its own scheduler instance and per-call state) and states its LoRAs through
    `adapters`."""

    pipe: object
    name: str
    placement: Placement
    plan: MemoryPlan | None = None
    _variants: dict = field(default_factory=dict)
    prompt_encoders: dict = field(default_factory=dict)  # compel, made on the first weighted prompt
    upscalers: dict = field(default_factory=dict)  # upscaler models (hires fix), by path
    allow_pickle: bool = False
    adapters: Adapters = field(default_factory=Adapters)
    lock: threading.RLock = field(default_factory=threading.RLock)  # made-once parts: variants, encoders, upcasts
    speedups: tuple[str, ...] = ()  # what pipelines.image_speed applied, in words (the Models tab)
    compiled: object = None  # image_speed.Compiled when the UNet and decoder are compiled
    fused: bool = False  # fused QKV projections (undone before a LoRA loads)
    preview_vae: object = None  # an AutoencoderTiny (TAESD) for live previews, when one is on disk
    controlnets: dict = field(default_factory=dict)  # ControlNetModels loaded for this model, by location
    ip_adapters: dict = field(default_factory=dict)  # IP-Adapters read for this model (image_ipadapter), by location
    family: Family | None = None  # a flow-matching transformer family (pipelines.image_flow); None: SD/SDXL UNet

    @property
    def addon_modules(self) -> list:
        """What this model loaded beside its pipeline (ControlNets, IP-Adapters' image encoders): memory it holds."""
        return [*self.controlnets.values(), *(weights.encoder for weights in self.ip_adapters.values())]

    @property
    def loras(self) -> dict[str, float]:
        """The LoRAs the shared weights hold now (the Models tab); a picture's own are in its params."""
        return {lora.name: lora.weight for lora in self.adapters.active}

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes (MODES) this model runs: its family's, or SD/SDXL's four."""
        return self.family.modes if self.family is not None else SD_MODES

    def for_mode(self, mode: str):
        """The pipeline for `mode` over the model's weights ("explore": the one the latent workbench draws with —
        the model's own, or its family's `explores_as`)."""
        family = self.family
        if mode == "txt2img" or mode == "edit" and family is not None and family.edits or \
                mode == "explore" and (family is None or not family.explores_as):
            return self.pipe
        with self.lock:
            if mode not in self._variants and self.family is not None:
                self._variants[mode] = self._family_variant(mode)
            if mode not in self._variants:
                from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

                auto = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
                try:
                    variant = auto.from_pipe(self.pipe)
                except (ValueError, KeyError) as exc:
                    raise ModelNotAvailable(f"{self.name} cannot do {mode}: {exc}") from exc
                variant.set_progress_bar_config(disable=True)
                self._variants[mode] = variant
            return self._variants[mode]

    def _family_variant(self, mode: str):
        """The family's own pipeline class for `mode` over the same components (ValueError in words if none)."""
        import diffusers

        class_name = self.family.pipeline_class(mode)
        if class_name == type(self.pipe).__name__:
            return self.pipe
        variant = getattr(diffusers, class_name).from_pipe(self.pipe)
        variant.set_progress_bar_config(disable=True)
        return variant

    def view(self, mode: str, scheduler: str, controls: tuple = ()):
        """A pipeline object for one request: the mode's pipeline sharing its weights, with a scheduler instance
        of its own (schedulers keep per-run state: step index, sigmas) and its own per-call attributes
        (diffusers keeps guidance scale, timesteps and the like on the pipeline object); with `controls`, the
        mode's ControlNet pipeline over the same weights. Its tokenizers are the shared ones, called one request
        at a time (`SerialTokenizer`)."""
        base = control_pipeline(self, mode, controls) if controls else self.for_mode(mode)
        view = object.__new__(type(base))
        view.__dict__.update(base.__dict__)
        view.scheduler = scheduler_for(base, scheduler)
        for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            if view.__dict__.get(name) is not None:  # set in __dict__: not a change of the pipeline's config
                view.__dict__[name] = SerialTokenizer(view.__dict__[name], self.lock)
        return view

    @property
    def vae_scale(self) -> int:
        return getattr(self.pipe, "vae_scale_factor", 8)

    @property
    def default_size(self) -> int:
        if self.family is not None:
            return int(getattr(self.pipe, "default_sample_size", 128)) * self.vae_scale
        unet = getattr(self.pipe, "unet", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", 64)
        return int(sample) * self.vae_scale


def load_image_model(
    resolved: ResolvedModel,
    placement: Placement,
    *,
    offline: bool = False,
    allow_pickle: bool = False,
    single_file_config: Path | None = None,
    plan_memory: Callable[[dict[str, int]], MemoryPlan] | None = None,
) -> ImageModel:
    """Load a diffusers folder, a hub id, or a single `.safetensors` checkpoint.

    `plan_memory(component sizes)` (default: from the device's free memory now) decides how the weights reach
    the accelerator, and only then does anything move (`apply_image_plan`). A flow family's folder, hub snapshot
    (downloaded first when online) or transformer file with its base folder is planned from its files' sizes
    before any weight is read, so the components the plan quantizes are read once, quantized, never in full first
    (a transformer file itself is quantized in place after reading). Anything else is read on the CPU first and
    planned from what it holds: SD/SDXL models (their plans never quantize), pickle weights, a hub model offline
    and not cached."""
    location = resolved.path
    name = resolved.spec.name
    planner = plan_memory or (lambda sizes: plan_image_memory(sizes, probe_memory(placement.device)))
    plan = None
    try:
        base = single_file_config or find_single_file_config(location) or lone_file_base(location, offline) \
            if isinstance(location, Path) and location.is_file() else None
        family = folder_family(base) if base is not None else None
        if family is not None:  # a transformer file beside its base model's folder (Flux, Z-Image… GGUF too)
            pipe, plan = _load_transformer_file(location, base, family, placement, planner, name, offline=offline)
        elif isinstance(location, Path) and location.suffix == ".gguf":
            raise ModelNotAvailable(f"{location.name} is a GGUF transformer of a model the studio cannot tell from its "
                                    "tensor names: put its base model's diffusers folder beside it as "
                                    f"{location.stem}/ or {location.stem}-config/ (with model_index.json)")
        elif isinstance(location, Path) and location.is_file():
            pipe = _load_single_file(location, placement, offline=offline, allow_pickle=allow_pickle,
                                     config=single_file_config or find_single_file_config(location))
        else:
            pipe, plan = _load_folder(resolved, placement, planner, offline=offline, allow_pickle=allow_pickle)
    except ModelNotAvailable:
        raise
    except Exception as exc:  # corrupt files raise many kinds (OSError, SafetensorError, KeyError…)
        hint = "" if isinstance(location, Path) else (
            " If this is a model-hub id, check the spelling and your network connection.")
        raise ModelNotAvailable(f"could not load image model {name!r}: {exc}{hint}") from exc
    if not hasattr(pipe, "unet") and not hasattr(pipe, "transformer"):
        raise ModelNotAvailable(f"{name} is a {type(pipe).__name__}, not a text-to-image model")
    if plan is None:  # read before it could be planned: planned from what it holds
        plan = _planned(planner, component_bytes(pipe), name)
    apply_image_plan(pipe, plan, placement.device)  # what the plan quantized arrived quantized: not read again
    pipe.set_progress_bar_config(disable=True)
    return ImageModel(pipe, name, placement, plan=plan, allow_pickle=allow_pickle,
                      family=family_of(type(pipe).__name__))


def _load_transformer_file(path: Path, base: Path, family: Family, placement: Placement, planner, name: str, *,
                           offline: bool):
    """(pipeline, plan) for a transformer file beside its base folder, planned from the file's and the folder's
    sizes first, so the text encoders the plan quantizes are read once, quantized (the transformer itself is
    quantized where it is, after reading: a file has no folder to be read from quantized; a GGUF one stays as it
    is). The plan is None when the base folder cannot be measured (the caller plans after reading then)."""
    sizes = folder_component_bytes(base, placement.dtype, skip=("transformer",))
    plan = _planned(planner, {**sizes, "transformer": file_bytes(path, placement.dtype)}, name) if sizes else None
    encoders = tuple(part for part in plan.quantized if part != "transformer") if plan and plan.quantize else ()
    parts = read_quantized(base, plan.quantize, encoders, placement.dtype) if encoders else {}
    return load_transformer_file(path, base, family, placement.dtype, offline=offline, parts=parts), plan


def _planned(planner: Callable[[dict[str, int]], MemoryPlan], sizes: dict[str, int], name: str) -> MemoryPlan:
    try:
        return planner(sizes)
    except DoesNotFit as exc:
        raise ModelNotAvailable(f"{name} does not fit on this machine: {exc}") from exc


def _load_folder(resolved: ResolvedModel, placement: Placement, planner, *, offline: bool, allow_pickle: bool):
    """(pipeline, plan) from a diffusers folder or hub id. A flow family's folder or hub snapshot (downloaded first
    when online) is planned from its files first (`folder_component_bytes`), and the components the plan quantizes
    are read quantized and given to the pipeline; the plan is None when it could not be made before reading (the
    caller plans then: SD/SDXL, whose plans never quantize; a hub model offline and not cached)."""
    location, spec = resolved.path, resolved.spec
    if isinstance(location, Path) and not (location / "model_index.json").is_file():
        raise ModelNotAvailable(
            f"{location} is not a diffusers model folder (it has no model_index.json). Point to the folder "
            "that contains model_index.json, or to a single .safetensors checkpoint file."
        )
    variant = {"variant": spec.variant} if spec.variant else {}
    folder = model_folder(location, offline=offline, use_safetensors=not allow_pickle or None, **variant)
    family = folder_family(folder) if folder is not None else spec_family(spec)
    sd_only = {} if family else dict(safety_checker=None, requires_safety_checker=False)
    sizes = folder_component_bytes(folder, placement.dtype, spec.variant or None) \
        if folder is not None and family is not None else None
    plan = _planned(planner, sizes, spec.name) if sizes else None
    quantized = read_quantized(folder, plan.quantize, plan.quantized, placement.dtype, spec.variant or None) \
        if plan is not None and plan.quantize and plan.quantized else {}
    pipe = read_pipeline(
        location, family, dtype=placement.dtype, local_files_only=offline or isinstance(location, Path),
        use_safetensors=not allow_pickle or None, **sd_only, **quantized, **variant,
    )
    return pipe, plan


def lone_file_base(path: Path, offline: bool) -> Path | None:
    """For a flow family's transformer file with no folder beside it, its base repo's folder from the hub (cached,
    or fetched when online: `image_flow.hub_base`); None for other files."""
    if path.suffix not in (".safetensors", ".gguf"):
        return None
    repo = file_base_repo(path)
    return hub_base(repo, offline=offline) if repo else None


def find_single_file_config(path: Path) -> Path | None:
    """A diffusers folder next to a checkpoint that describes it (`NAME/` or `NAME-config/` with a
    model_index.json): with it, single files load offline; without it diffusers fetches the config."""
    for candidate in (path.with_suffix(""), path.with_name(path.stem + "-config")):
        if (candidate / "model_index.json").is_file():
            return candidate
    return None


def _load_single_file(path: Path, placement: Placement, *, offline: bool, allow_pickle: bool, config: Path | None):
    import diffusers
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    if path.suffix in (".ckpt", ".pt", ".pth", ".bin") and not allow_pickle:
        raise ModelNotAvailable(
            f"{path.name} is a pickle checkpoint: loading it can run arbitrary code hidden in the file. Use a "
            ".safetensors version of the model, or start the studio with --allow-pickle if you trust its source."
        )
    if config is not None:
        class_name = json.loads((Path(config) / "model_index.json").read_text())["_class_name"]
    else:
        kind = infer_diffusers_model_type(load_single_file_checkpoint(str(path), local_files_only=True))
        class_name = {"xl_base": "StableDiffusionXLPipeline", "xl_refiner": "StableDiffusionXLImg2ImgPipeline",
                      "xl_inpaint": "StableDiffusionXLInpaintPipeline", "inpainting": "StableDiffusionInpaintPipeline",
                      "inpainting_v2": "StableDiffusionInpaintPipeline"}.get(kind, "StableDiffusionPipeline")
    cls = getattr(diffusers, class_name)
    kwargs = dict(dtype=placement.dtype, local_files_only=offline)
    if config is not None:
        kwargs["config"] = str(config)
    if "StableDiffusion" in class_name and "XL" not in class_name:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return cls.from_single_file(str(path), **kwargs)


def scheduler_for(pipe, name: str):
    import diffusers

    family = family_of(type(pipe).__name__)
    if name in FLOW_SCHEDULERS:
        if family is None:
            raise ValueError(f"scheduler: {name} is for flow-matching models; choose one of {', '.join(SCHEDULERS)}")
        return flow_scheduler(pipe, name)
    if family is not None:
        raise ValueError(f"scheduler: {family.label} is a flow-matching model; choose one of "
                         f"{', '.join(family.samplers)} (got {name})")
    class_name, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)


@dataclass
class ImageOutput:
    images: list  # PIL images
    seeds: list[int]
    seconds: float
    params: ImageParams  # as they ran (a flow family's hires fix records the Lanczos it used for "Latent")
    notes: tuple[str, ...] = ()  # e.g. how the prompt was read (weights ignored, long prompt chunked)


def preview_image(pipe, latents: torch.Tensor, tiny=None):
    """A cheap RGB preview of latents [C, h, w]: decode small latents with the model's VAE, larger ones with
    `tiny` (TAESD) when there is one, else a linear SD approximation."""
    from PIL import Image

    if tiny is not None and latents.shape[-1] * latents.shape[-2] > 32 * 32:
        with torch.inference_mode():
            rgb = tiny.decode(latents[None].to(tiny.device, tiny.dtype)).sample[0].float().clamp(-1, 1).add(1).div(2)
    elif latents.shape[-1] * latents.shape[-2] <= 32 * 32 and hasattr(pipe, "vae"):
        vae = pipe.vae
        with torch.inference_mode():
            decoded = vae_decode(vae, latents[None] / vae.config.scaling_factor)[0]
        rgb = decoded.float().clamp(-1, 1).add(1).div(2)
    elif latents.shape[0] == 4:
        rgb = torch.einsum("chw,cr->rhw", latents.float().cpu(), SD_PREVIEW_FACTORS).add(1).div(2).clamp(0, 1)
    else:
        return None
    array = (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


_UPCAST = threading.Lock()


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """`vae.decode(latents).sample`, in float32 when the VAE is stored in float16 but its config says
    `force_upcast` (SDXL's VAE overflows in half precision: black or NaN pictures) — the way diffusers'
    SDXL pipeline decodes its final image, for our previews too. The float32 VAE is a copy made once: the
    shared one is never switched (another request may be decoding with it)."""
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        with _UPCAST:
            full = vae.__dict__.get("_studio_float32")
            if full is None:
                import copy

                full = copy.deepcopy(vae).to(torch.float32)
                vae.__dict__["_studio_float32"] = full  # not a submodule: outside state dicts and .to()
        return full.decode(latents.to(torch.float32)).sample
    return vae.decode(latents.to(vae.dtype)).sample


def prompt_inputs(prompt: str, negative: str, conditioning: Conditioning | None, n: int) -> dict:
    """The prompt arguments for a batch of `n`: the strings, or the (weighted) embeddings repeated."""
    if conditioning is None:
        return {"prompt": [prompt] * n, "negative_prompt": [negative] * n}
    return {k: ([v] * n if isinstance(v, str) else v.expand(n, *v.shape[1:])) for k, v in conditioning.kwargs.items()}


def denoised_steps(steps: int, strength: float, flow: bool) -> int:
    """The steps an image-to-image pass runs: SD's pipelines round steps × strength down; the flow families'
    start at int(steps × (1 − strength)), so they run the rest."""
    if flow:
        return max(1, steps - int(max(steps - steps * strength, 0)))
    return max(1, int(steps * strength))


def pass_steps(params: ImageParams, flow: bool, mode: str = "") -> tuple[int, int]:
    """The denoising steps each picture's first pass and hires pass run (0 without one) as the pipelines count
    them; `mode`: the mode that runs when not the request's (an editing model runs image to image as an edit)."""
    hires = params.hires
    second = denoised_steps(hires.steps or params.steps, hires.strength, flow) if hires else 0
    first = params.steps if (mode or params.mode) in ("txt2img", "edit") else \
        denoised_steps(params.steps, params.strength, flow)
    return first, second


class _Progress:
    """Steps done across runs and passes, reported to `callback` (throttled), and the cancel check."""

    def __init__(self, params: ImageParams, callback, cancel, preview_every: int, interval: float, started: float,
                 tiny=None, flow: bool = False, mode: str = ""):
        self.params, self.callback, self.cancel, self.tiny = params, callback, cancel, tiny
        self.preview = preview_image  # (pipe, latents of one image, tiny) → PIL or None; a flow family has its own
        self.preview_every, self.interval, self.last = preview_every, interval, started
        self.first, self.second = pass_steps(params, flow, mode)
        self.per_run = self.first + self.second
        self.total = self.per_run * params.batch_count

    def step_callback(self, run: int, stage: int):
        offset = run * self.per_run + (self.first if stage else 0)
        limit = offset + (self.second if stage else self.first)

        def on_step(p, step, timestep, callback_kwargs):
            if self.cancel is not None and self.cancel.is_set():
                raise GenerationCancelled()
            if self.callback is not None:
                done = min(limit, offset + step + 1)
                now = time.perf_counter()
                if self.interval and done < self.total and now - self.last < self.interval:
                    return callback_kwargs
                self.last = now
                every = self.preview_every
                due = (step + 1) % every == 0 if every and not self.interval else True
                preview = self.preview(p, callback_kwargs["latents"][0], self.tiny) if every and due else None
                self.callback(done, self.total, preview)
            return callback_kwargs

        return on_step


class ImagePipeline:
    def __init__(self, model: ImageModel, limits: ImageLimits | None = None) -> None:
        self.model = model
        self.limits = limits or ImageLimits()

    def _noise(self, seed: int, shape: tuple, params: ImageParams, index: int) -> torch.Tensor:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        if params.variation_seed is not None and params.variation_strength > 0:
            other = torch.randn(shape, generator=torch.Generator().manual_seed(params.variation_seed + index))
            noise = slerp(noise.flatten(), other.flatten(), params.variation_strength).view(shape)
        return noise

    def __call__(
        self,
        params: ImageParams,
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[int, int, object], None] | None = None,
        cancel: threading.Event | None = None,
        preview_every: int = 5,
        progress_interval: float = 0.0,
    ) -> ImageOutput:
        """Generate batch_count × batch_size images. `callback(step, total_steps, preview_or_None)` after
        each step — or, with `progress_interval` > 0, at most that often (and on the last step), with a
        preview decoded only for those calls: a server then spends its time denoising, not reporting.
        With `params.hires`, each batch gets its second (img2img) pass at the target size. The request runs on
        its own view of the model (scheduler, per-call state) with its own LoRAs: nothing it sets outlives it."""
        params.validate(self.limits)
        if self.model.family is None and params.mode == "edit":
            raise ValueError(f"mode: {self.model.name} is an SD/SDXL model and does not edit pictures by instruction; "
                             "load an instruction-editing model (Flux.1 Kontext, Qwen-Image-Edit), or use image to "
                             "image or inpaint")
        if self.model.family is not None:
            self.model.family.refuse(params)
            with self.model.adapters.using(self.model, params.loras):
                return generate_flow(self, params, callback, cancel, preview_every, progress_interval)
        image_prompt = params.image_prompt
        embedding = read_ip_adapter(image_prompt.adapter.location, self.model).embed(image_prompt.image) \
            if image_prompt else None
        with self.model.adapters.using(self.model, params.loras, image_prompt.adapter if image_prompt else None):
            return self._generate(params, callback, cancel, preview_every, progress_interval, embedding)

    def compile_note(self, params: ImageParams) -> str:
        """With a compiled model, what a request of a picture shape not compiled yet waits for ("" otherwise)."""
        from pipelines.image_speed import compile_note

        return compile_note(self.model, params)

    def _generate(self, params: ImageParams, callback, cancel, preview_every: int, progress_interval: float,
                  embedding: torch.Tensor | None):
        # 1. This request's pipeline view (its own scheduler) and seeds
        pipe = self.model.view("inpaint" if params.mode == "outpaint" else params.mode, params.scheduler,
                               params.controls)
        device, dtype = self.model.placement.device, self.model.placement.dtype
        base = params.seed if params.seed is not None else random.SystemRandom().randrange(2**32 - 1024)
        total = params.batch_size * params.batch_count
        seeds = [(base + i) % 2**32 for i in range(total)]
        started = time.perf_counter()
        images = []
        # 2. The prompt: the style, A1111 weighting and long prompts through compel (plain prompts as they are)
        prompt, negative = params.prompts()
        with self.model.lock:  # one compel object per model, made once
            conditioning = encode_prompts(pipe, prompt, negative, self.model.prompt_encoders)
        progress = _Progress(params, callback, cancel, preview_every, progress_interval, started,
                             self.model.preview_vae)
        canvas = outpaint_canvas(params.init_image.resize((params.width, params.height)), params.outpaint) \
            if params.mode == "outpaint" else None
        for run in range(params.batch_count):
            run_seeds = seeds[run * params.batch_size:(run + 1) * params.batch_size]
            n = len(run_seeds)
            kwargs: dict = dict(num_inference_steps=params.steps, guidance_scale=params.guidance,
                                generator=[torch.Generator().manual_seed(s) for s in run_seeds],
                                output_type="latent" if params.hires and params.hires.upscaler in LATENT_UPSCALERS
                                else "pil")
            kwargs.update(prompt_inputs(prompt, negative, conditioning, n))
            if params.regions:  # this request's stand-in for the UNet blends each region's prompt in its box
                pipe.__dict__["unet"] = regional_unet(pipe, params, device)
            if params.controls:
                kwargs.update(control_inputs(params, params.controls))
            image_prompt = self._image_prompt_inputs(pipe, params, embedding)
            kwargs.update(image_prompt)
            # 3. Inputs per mode: our own seeded noise for txt2img; the start image (and mask) otherwise
            if params.mode == "txt2img":
                channels = pipe.unet.config.in_channels if hasattr(pipe, "unet") else 4
                shape = (channels, params.height // self.model.vae_scale, params.width // self.model.vae_scale)
                noise = torch.stack([self._noise(s, shape, params, run * params.batch_size + i)
                                     for i, s in enumerate(run_seeds)])
                kwargs.update(latents=noise.to(device, dtype), width=params.width, height=params.height)
            elif canvas is not None:
                kwargs.update(image=[canvas[0]] * n, mask_image=[canvas[1]] * n, strength=params.strength,
                              width=canvas[0].width, height=canvas[0].height)
            else:
                init = params.init_image.resize((params.width, params.height))
                kwargs.update(image=[init] * n, strength=params.strength)
                if params.mode == "inpaint":
                    kwargs.update(mask_image=[params.mask.resize((params.width, params.height))] * n,
                                  width=params.width, height=params.height)
            # 4. Denoise, with previews and a cancel check after every step
            kwargs["callback_on_step_end"] = progress.step_callback(run, 0)
            with torch.inference_mode():
                result = pipe(**kwargs).images
            # 5. Hires fix: upscale (latents or pixels), then img2img at the target size
            if params.hires:
                result = self._hires_pass(params, result, run_seeds, prompt, negative, conditioning, progress, run,
                                          image_prompt)
            if canvas is not None:
                init = params.init_image.resize((params.width, params.height))
                result = [keep_original(image, init, params.outpaint) for image in result]
            images.extend(result)
            if self.model.compiled is not None:
                self.model.compiled.done_with(params)
        return ImageOutput(images, seeds, time.perf_counter() - started, params,
                           conditioning.notes if conditioning else ())

    def _image_prompt_inputs(self, pipe, params: ImageParams, embedding) -> dict:
        if embedding is None:
            return {}
        weights = self.model.ip_adapters[params.image_prompt.adapter.location]
        return image_prompt_inputs(embedding, weights, is_guided(pipe, params.guidance), self.model.placement.device,
                                   self.model.placement.dtype)

    def _hires_pass(self, params: ImageParams, first, seeds, prompt, negative, conditioning, progress, run,
                    image_prompt: dict):
        hires = params.hires
        width, height = hires.target(params.width, params.height)
        if hires.upscaler in LATENT_UPSCALERS:
            scale = self.model.vae_scale
            start = upscale_latents(first, (height // scale, width // scale), hires.upscaler)
        else:
            start = [upscale(image, UpscaleParams(width / params.width, hires.upscaler), models=self.model.upscalers,
                             device=self.model.placement.device, allow_pickle=self.model.allow_pickle)
                     .resize((width, height)) for image in first]
        pipe = self.model.view("img2img", params.scheduler)
        # big pictures on an accelerator: decode in tiles so the VAE fits in a consumer GPU's memory — by this
        # request alone (switching the shared VAE's tiling would change other requests' decodes)
        tiled = width * height > 1024 * 1024 and self.model.placement.device.type != "cpu" and \
            not getattr(pipe.vae, "use_tiling", False)
        kwargs = dict(image=start, strength=hires.strength, num_inference_steps=hires.steps or params.steps,
                      guidance_scale=params.guidance, generator=[torch.Generator().manual_seed(s) for s in seeds],
                      output_type="latent" if tiled else "pil", callback_on_step_end=progress.step_callback(run, 1))
        kwargs.update(prompt_inputs(prompt, negative, conditioning, len(seeds)), **image_prompt)
        with torch.inference_mode():
            images = pipe(**kwargs).images
            if tiled:
                latents = images.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
                images = pipe.image_processor.postprocess(pipe.vae.tiled_decode(latents, return_dict=False)[0],
                                                          output_type="pil")
        return images

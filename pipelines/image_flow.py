"""Today's flow-matching transformer families (Flux.1, Flux.2, SD3/3.5, Z-Image, Qwen-Image, Chroma, Sana):
what each one is, read from the folder's `model_index.json` `_class_name` (never the model's name), and what
differs from the SD/SDXL UNet path in `pipelines.image`.

    family = family_of("FluxPipeline")               # FAMILIES["flux"]
    family.refuse(params)                            # ValueError in words for what it cannot do
    kwargs = flow_inputs(family, pipe, params, seeds, noise_for)   # prompt, guidance, packed noise

A family's samplers are flow-matching ones (diffusers' FlowMatchEulerDiscreteScheduler with its sigma
schedules); its guidance is "distilled" (a guidance embedding: Flux.1-dev, Flux.2), "cfg" (classifier-free
guidance with a negative prompt) or "true-cfg" (Qwen-Image's true_cfg_scale). Latents: the noise is drawn
unpacked per image, [C, h, w], exactly as diffusers draws it from a per-image generator, then packed into
the pipeline's layout here ("packed": 2×2 patches as a token sequence, Flux/Chroma/Qwen-Image).

Instruction editing (Flux.1 Kontext, Qwen-Image-Edit) is its own mode, "edit": a start picture and the change in
words as the prompt, denoised from full noise beside the picture's own tokens (no strength). Other families refuse
it in words; image to image on an editing model runs as an edit, said in a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pipelines.checks import short
from pipelines.image_upscale import LATENT_UPSCALERS

# name → (scheduler class, config overrides); built from the model's own scheduler config (shift, dynamic shift)
FLOW_SCHEDULERS = {
    "Flow Euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "Flow Euler Karras": ("FlowMatchEulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "Flow Euler exponential": ("FlowMatchEulerDiscreteScheduler", {"use_exponential_sigmas": True}),
}
GUIDANCE_KINDS = ("distilled", "cfg", "true-cfg")


@dataclass(frozen=True)
class Family:
    """One model family: its pipeline classes and what it can do.

    classes: model_index.json `_class_name`s that are this family. transformer: the denoiser's class (for single
    files). img2img / inpaint: the diffusers classes for those modes ("" = the family has none; `missing` says
    why in words). guidance: one of GUIDANCE_KINDS. channel_div / stride: the unpacked noise per image is
    [transformer in_channels / channel_div, H / (vae_scale·stride), W / (vae_scale·stride)]. packed: the
    pipeline takes that noise as 2×2 patches in a token sequence. patch: sizes must be multiples of
    vae_scale·patch. edits: the model edits a start picture by instruction (mode "edit"; its img2img is one)."""

    key: str
    label: str
    classes: tuple[str, ...]
    transformer: str
    img2img: str = ""
    inpaint: str = ""
    guidance: str = "cfg"
    channel_div: int = 1
    stride: int = 1
    packed: bool = False
    patch: int = 2
    edits: bool = False
    negative: bool = True  # whether the pipeline reads a negative prompt
    missing: str = ""  # why img2img/inpaint is missing, when it is
    explores_as: str = ""  # the class Explore draws with, when not the model's own (it needs no start picture)
    tiny_decoder: str = ""  # the registry name of the tiny autoencoder (TAE) that previews its latents, if any

    @property
    def samplers(self) -> tuple[str, ...]:
        return tuple(FLOW_SCHEDULERS)

    def size_multiple(self, pipe) -> int:
        return int(getattr(pipe, "vae_scale_factor", 8)) * self.patch

    def pipeline_class(self, mode: str) -> str:
        """The diffusers class for `mode`, or a ValueError in words when the family has none. "explore": the
        class the latent workbench draws with when not the model's own (a seed and a prompt, no start picture)."""
        if mode == "explore" and self.explores_as:
            return self.explores_as
        if mode == "edit" and not self.edits:
            raise ValueError(f"mode: {self.label} does not edit pictures by instruction; load an instruction-editing "
                             f"model (Flux.1 Kontext, Qwen-Image-Edit), or use {self._choices()}")
        if self.edits and mode == "txt2img":
            raise ValueError(f"mode: {self.label} edits a picture by instruction; choose edit with a start image "
                             "and write the change as the prompt")
        name = {"img2img": self.img2img, "inpaint": self.inpaint, "edit": self.classes[0]}.get(mode, self.classes[0])
        if not name:
            what = {"img2img": "image to image", "inpaint": "inpainting"}.get(mode, mode)
            raise ValueError(f"mode: {self.label} has no {what} in diffusers{self.missing}; use {self._choices()}")
        return name

    @property
    def modes(self) -> tuple[str, ...]:
        """The Image tab's modes (pipelines.image.MODES) this family runs."""
        return tuple(mode for mode, what in (("txt2img", "text to image"), ("img2img", "image to image"),
                                             ("inpaint", "inpainting"), ("edit", "edit")) if self._has(what))

    def _choices(self) -> str:
        return " or ".join(m for m in ("edit", "text to image", "image to image", "inpainting") if self._has(m))

    def _has(self, what: str) -> bool:
        return {"text to image": not self.edits, "image to image": bool(self.img2img) and not self.edits,
                "inpainting": bool(self.inpaint), "edit": self.edits}[what]

    def refuse(self, params) -> None:
        """ValueError in words for what this family cannot do with `params` (checked before any work)."""
        if params.scheduler not in FLOW_SCHEDULERS:
            raise ValueError(f"scheduler: {self.label} is a flow-matching model; choose one of "
                             f"{', '.join(self.samplers)} (got {params.scheduler})")
        if params.mode == "outpaint":
            raise ValueError(f"mode: outpainting is for SD/SDXL models here; with {self.label}, inpaint on a "
                             "bigger canvas")
        self.pipeline_class(params.mode)
        for name, what in (("controls", "ControlNet"), ("regions", "regional prompts"),
                           ("image_prompt", "IP-Adapter image prompts")):
            if getattr(params, name):
                raise ValueError(f"{name}: {what} are for SD/SDXL models here; {self.label} runs without them")
        if params.hires is not None and (not self.img2img or self.edits):
            raise ValueError(f"hires: the hires fix is a second, image-to-image pass, which {self.label} has not in "
                             f"diffusers; make {self.label} pictures at the size you want (up to the megapixel limit)")


FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("flux", "Flux.1", ("FluxPipeline",), "FluxTransformer2DModel", "FluxImg2ImgPipeline",
           "FluxInpaintPipeline", guidance="distilled", channel_div=4, packed=True, negative=False,
           tiny_decoder="taef1"),
    Family("flux-kontext", "Flux.1 Kontext", ("FluxKontextPipeline",), "FluxTransformer2DModel",
           "FluxKontextPipeline", "FluxKontextInpaintPipeline", guidance="distilled", channel_div=4, packed=True,
           edits=True, negative=False, tiny_decoder="taef1"),
    Family("flux2", "Flux.2", ("Flux2Pipeline", "Flux2KleinPipeline"), "Flux2Transformer2DModel", "",
           "Flux2KleinInpaintPipeline", guidance="distilled", stride=2, negative=False,
           missing=" (Flux.2 takes reference pictures in text to image instead)"),
    Family("sd3", "Stable Diffusion 3/3.5", ("StableDiffusion3Pipeline",), "SD3Transformer2DModel",
           "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline", tiny_decoder="taesd3"),
    Family("z-image", "Z-Image", ("ZImagePipeline",), "ZImageTransformer2DModel", "ZImageImg2ImgPipeline",
           "ZImageInpaintPipeline", tiny_decoder="taef1"),
    Family("qwen-image", "Qwen-Image", ("QwenImagePipeline",), "QwenImageTransformer2DModel",
           "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline", guidance="true-cfg", channel_div=4, packed=True),
    Family("qwen-image-edit", "Qwen-Image-Edit", ("QwenImageEditPipeline", "QwenImageEditPlusPipeline"),
           "QwenImageTransformer2DModel", "QwenImageEditPipeline", "QwenImageEditInpaintPipeline",
           guidance="true-cfg", channel_div=4, packed=True, edits=True, explores_as="QwenImagePipeline"),
    Family("chroma", "Chroma", ("ChromaPipeline",), "ChromaTransformer2DModel", "ChromaImg2ImgPipeline",
           channel_div=4, packed=True, tiny_decoder="taef1",
           missing=" that runs (its inpainting pipeline reads a Flux setting Chroma's transformer lacks)"),
    Family("sana", "Sana", ("SanaPipeline", "SanaSprintPipeline"), "SanaTransformer2DModel", patch=1,
           missing=" (SanaSprint has image to image; the Sana pipeline has neither it nor inpainting)"),
)}


# A family's pipeline class that runs fewer of its modes than the family: Flux.2 dev has text to image alone
# (diffusers' one Flux.2 inpainting pipeline is Klein's: it reads Klein's Qwen3 layers, and no guidance embedding).
NARROWER: dict[str, Family] = {
    "Flux2Pipeline": replace(FAMILIES["flux2"], label="Flux.2 dev", inpaint="",
                             missing=" (Flux.2 takes reference pictures in text to image instead; its inpainting "
                                     "pipeline is Klein's, which reads another text encoder)"),
}


def family_of(class_name: str) -> Family | None:
    """The flow family of a pipeline class name (narrowed to what that class runs), or None for the SD/SDXL (UNet)
    path."""
    for family in FAMILIES.values():
        if class_name in family.classes:
            return NARROWER.get(class_name, family)
    for family in FAMILIES.values():  # its image-to-image and inpainting pipelines are the family too
        if class_name in (family.img2img, family.inpaint):
            return family
    return None


def folder_family(folder: Path) -> Family | None:
    """The family a diffusers folder declares in model_index.json (None: not one of these)."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        return None
    return family_of(json.loads(index.read_text()).get("_class_name", ""))


def flow_scheduler(pipe, name: str):
    """A new flow-matching scheduler `name` from the model's own scheduler config (its shift schedule kept)."""
    import diffusers

    class_name, extra = FLOW_SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)


# -- latents ------------------------------------------------------------------------------------------------
def noise_shape(family: Family, pipe, width: int, height: int) -> tuple[int, int, int]:
    """The unpacked noise of one image, [C, h, w], as the family's pipeline draws it."""
    channels = int(pipe.transformer.config.in_channels) // family.channel_div
    scale = int(getattr(pipe, "vae_scale_factor", 8)) * family.stride
    return channels, height // scale, width // scale


def pack(family: Family, pipe, noise: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] noise → the latents the pipeline's `latents=` takes (2×2 patches as tokens when packed)."""
    if not family.packed:
        return noise
    b, c, h, w = noise.shape
    return noise.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(family: Family, latents: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of `pack`: the pipeline's latents [B, …] → [B, C, h, w]."""
    if not family.packed:
        return latents
    c, h, w = shape
    b = latents.shape[0]
    return latents.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


# -- one request's inputs -----------------------------------------------------------------------------------
def guidance_inputs(family: Family, guidance: float, negative: str, n: int) -> dict:
    """The guidance arguments: a distilled guidance embedding, CFG with a negative prompt, or Qwen-Image's
    true CFG (it needs a negative prompt to guide at all: a blank one when none is given)."""
    if family.guidance == "distilled":
        return {"guidance_scale": guidance}
    if family.guidance == "true-cfg":
        kwargs = {"true_cfg_scale": guidance, "guidance_scale": 1.0}
        if guidance > 1.0:
            kwargs["negative_prompt"] = [negative or " "] * n
        return kwargs
    return {"guidance_scale": guidance, **({"negative_prompt": [negative] * n} if family.negative else {})}


def prompt_notes(family: Family, prompt: str, negative: str) -> tuple[str, str, tuple[str, ...]]:
    """The prompt and negative prompt the family reads (A1111 (word:1.3) weighting is SD's: removed here, with a
    note), and the notes."""
    from pipelines.image_prompt import has_syntax, plain_text

    notes = []
    if has_syntax(prompt) or has_syntax(negative):
        prompt, negative = plain_text(prompt), plain_text(negative)
        notes.append(f"{family.label} does not weight words; the prompt was used without (…) and […]")
    if negative.strip() and not family.negative:
        notes.append(f"{family.label} is guidance-distilled and reads no negative prompt; it was not used")
    return prompt, negative, tuple(notes)


def check_size(family: Family, pipe, width: int, height: int) -> None:
    multiple = family.size_multiple(pipe)
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            raise ValueError(f"{name}: {family.label} makes pictures in steps of {multiple} pixels; choose a "
                             f"multiple of {multiple} (got {value})")


def generate_flow(image_pipeline, params, callback=None, cancel=None, preview_every: int = 5,
                  progress_interval: float = 0.0):
    """`ImagePipeline.__call__` for a flow family (its LoRAs already in place): batch_count runs of batch_size
    pictures, each from its seed's own noise, drawn unpacked and packed here."""
    import random
    import time

    from pipelines.image import ImageOutput, _Progress

    model = image_pipeline.model
    family = model.family
    mode = "edit" if family.edits and params.mode == "img2img" else params.mode
    # 1. This request's pipeline view (its own scheduler), seeds and the prompt the family reads
    pipe = model.view(mode, params.scheduler)
    check_size(family, pipe, params.width, params.height)
    base = params.seed if params.seed is not None else random.SystemRandom().randrange(2**32 - 1024)
    seeds = [(base + i) % 2**32 for i in range(params.batch_size * params.batch_count)]
    prompt, negative = params.prompts()
    prompt, negative, notes = prompt_notes(family, prompt, negative)
    if mode != params.mode:
        notes += ((f"{family.label} edits by instruction: image to image ran as an edit of the start picture "
                   "(strength is not used)"),)
    if params.hires is not None and params.hires.upscaler in LATENT_UPSCALERS:
        notes += (f"hires: {family.label} upscales pictures, not latents, between its passes: Lanczos was used "
                  f"instead of {params.hires.upscaler}",)
    started = time.perf_counter()
    progress = _Progress(params, callback, cancel, preview_every, progress_interval, started, model.preview_vae,
                         flow=True, mode=mode)
    size = [params.width, params.height]  # the pass being previewed (the hires pass's is bigger)
    progress.preview = lambda p, latents, tiny: flow_preview(family, p, latents, *size, tiny=tiny)
    shape = noise_shape(family, pipe, params.width, params.height)
    device, dtype = model.placement.device, model.placement.dtype
    images = []
    for run in range(params.batch_count):
        run_seeds = seeds[run * params.batch_size:(run + 1) * params.batch_size]
        n = len(run_seeds)
        kwargs = dict(prompt=[prompt] * n, num_inference_steps=params.steps, width=params.width,
                      height=params.height, generator=[torch.Generator().manual_seed(s) for s in run_seeds],
                      callback_on_step_end=progress.step_callback(run, 0))
        kwargs.update(guidance_inputs(family, params.guidance, negative, n))
        # 2. Inputs per mode: our own seeded noise (packed as the family wants) for text to image
        if params.mode == "txt2img":
            noise = torch.stack([image_pipeline._noise(s, shape, params, run * params.batch_size + i)
                                 for i, s in enumerate(run_seeds)])
            kwargs["latents"] = pack(family, pipe, noise).to(device, dtype)
        else:
            kwargs.update(mode_inputs(family, pipe, params, n))
        # 3. Denoise, with a cancel check after every step
        with torch.inference_mode():
            made = pipe(**kwargs).images
        if params.hires is not None:  # 4. The hires fix: upscaled pictures, then image to image at the target size
            size[:] = hires_size(family, pipe, params)
            made = hires_pass(model, params, made, run_seeds, (prompt, negative), progress.step_callback(run, 1))
            size[:] = [params.width, params.height]
        images.extend(made)
    if params.hires is not None and params.hires.upscaler in LATENT_UPSCALERS:  # recorded as it ran
        params = replace(params, hires=replace(params.hires, upscaler="Lanczos"))
    return ImageOutput(images, seeds, time.perf_counter() - started, params, notes)


def hires_size(family: Family, pipe, params) -> tuple[int, int]:
    """The hires target rounded down to the family's size steps (Flux: 16 pixels)."""
    multiple = family.size_multiple(pipe)
    target = params.hires.target(params.width, params.height)
    return tuple(max(multiple, side // multiple * multiple) for side in target)


def hires_pass(model, params, first: list, seeds: list[int], prompts: tuple[str, str], on_step) -> list:
    """The hires fix's second pass on a flow family: each picture upscaled in pixels (Lanczos, or an upscaler
    model) to the target size, then the family's image-to-image pipeline over it, seeded as the first pass."""
    from pipelines.image_upscale import UpscaleParams, upscale

    hires, family = params.hires, model.family
    pipe = model.view("img2img", params.scheduler)
    width, height = hires_size(family, pipe, params)
    upscaler = "Lanczos" if hires.upscaler in LATENT_UPSCALERS else hires.upscaler
    start = [upscale(image, UpscaleParams(width / params.width, upscaler), models=model.upscalers,
                     device=model.placement.device, allow_pickle=model.allow_pickle).resize((width, height))
             for image in first]
    kwargs = dict(prompt=[prompts[0]] * len(seeds), image=start, strength=hires.strength, width=width, height=height,
                  num_inference_steps=hires.steps or params.steps, callback_on_step_end=on_step,
                  generator=[torch.Generator().manual_seed(s) for s in seeds])
    kwargs.update(guidance_inputs(family, params.guidance, prompts[1], len(seeds)))
    with torch.inference_mode():
        return pipe(**kwargs).images


def mode_inputs(family: Family, pipe, params, n: int) -> dict:
    """The start picture (and mask) of image to image, inpainting and instruction edits. An edit reads the start
    picture at the request's size: Kontext's own resizing (to its preferred sizes, and the picture to a megapixel)
    is turned off, so width and height mean what they say."""
    import inspect

    size = (params.width, params.height)
    kwargs = dict(image=[params.init_image.resize(size)] * n)
    if not family.edits or params.mode == "inpaint":
        kwargs["strength"] = params.strength
    if params.mode == "inpaint":
        kwargs["mask_image"] = [params.mask.resize(size)] * n
    accepted = inspect.signature(type(pipe).__call__).parameters
    if "max_area" in accepted:  # Flux.1 Kontext: keep the request's size
        kwargs.update(max_area=params.width * params.height, _auto_resize=False)
    return kwargs


def read_pipeline(source, family: Family | None, **kwargs):
    """`DiffusionPipeline.from_pretrained(source, **kwargs)` with the parts `family_parts` gives the family."""
    from diffusers import DiffusionPipeline

    given, after = family_parts(family, source)
    pipe = DiffusionPipeline.from_pretrained(source, **kwargs, **given)
    for name, part in after.items():
        setattr(pipe, name, part)
    return pipe


def family_parts(family: Family | None, source) -> tuple[dict, dict]:
    """Parts a family's pipeline is given, where torchvision is missing (beside a CPU torch from the default package
    index): transformers makes the processors these two read prompts through only with torchvision, for the
    pictures and videos neither passes here. Qwen-Image-Edit gets its Qwen2-VL processor for pictures only; Flux.2
    dev its PixtralProcessor's tokenizer, set after loading (diffusers checks a given part's class against the
    processor's, which transformers holds as a placeholder then) — the pipeline asks of it only the chat template,
    text alone. Returns (`from_pretrained` keyword arguments, attributes set after). `source`: a folder or hub id."""
    import importlib.util

    if family is None or family.label not in ("Qwen-Image-Edit", "Flux.2 dev") or \
            importlib.util.find_spec("torchvision") is not None:
        return {}, {}
    from transformers import AutoTokenizer

    if family.label == "Flux.2 dev":
        return {"tokenizer": None}, {"tokenizer": AutoTokenizer.from_pretrained(source, subfolder="tokenizer")}
    from transformers import Qwen2VLImageProcessorPil

    pictures = Qwen2VLImageProcessorPil.from_pretrained(source, subfolder="processor")
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="processor")
    return {"processor": picture_processor(pictures, tokenizer)}, {}


def picture_processor(image_processor, tokenizer):
    """transformers' Qwen2VLProcessor without a video processor: the same tokens and patches for text and
    pictures (its `__call__` is the shared one); it refuses videos by having none."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class PictureQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return PictureQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def load_transformer_file(path: Path, base: Path, family: Family, dtype: torch.dtype, *, offline: bool,
                          parts: dict | None = None):
    """A family pipeline from the base folder's configs and parts (`parts`: some of them already read, quantized),
    with its transformer from one file: a `.safetensors` (diffusers' or the original layout) or a GGUF-quantized
    `.gguf` (kept quantized, computed in `dtype`)."""
    import diffusers

    kwargs = dict(config=str(base), subfolder="transformer", dtype=dtype, local_files_only=True)
    if path.suffix == ".gguf":
        kwargs["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    elif path.suffix != ".safetensors":
        raise ValueError(f"{path.name}: a {family.label} transformer file must be .safetensors or .gguf")
    transformer = getattr(diffusers, family.transformer).from_single_file(str(path), **kwargs)
    transformer.register_to_config(_name_or_path=str(path))  # where it came from, as from_pretrained records it
    return read_pipeline(base, family, transformer=transformer, dtype=dtype, local_files_only=True, **(parts or {}))


# the lone transformer files diffusers recognises by their tensor names (its model types), whose base repo (configs,
# text encoders, VAE) diffusers names: the flow families' (not Sana's: its one type stands for models of several
# widths, and a base of another width would not fit the file)
FLOW_FILE_TYPES = ("flux-dev", "flux-schnell", "flux-2-dev", "chroma", "z-image-turbo", "sd3", "sd35_medium",
                   "sd35_large")
BASE_PARTS = ["model_index.json", "scheduler/*", "text_encoder*/*", "tokenizer*/*", "processor/*", "vae/*",
              "transformer/config.json"]  # what a transformer file needs of its base repo: all but its weights


def _tensor_shapes(path: Path) -> dict:
    """A checkpoint's tensor names and shapes, from its header alone, for diffusers' `infer_diffusers_model_type`
    (it asks only `key in checkpoint` and `checkpoint[key].shape`)."""
    from types import SimpleNamespace

    if path.suffix == ".gguf":
        import gguf

        return {t.name: SimpleNamespace(shape=tuple(reversed([int(n) for n in t.shape])))
                for t in gguf.GGUFReader(str(path)).tensors}
    from pipelines.memory import safetensors_header

    header = safetensors_header(path)
    return {k: SimpleNamespace(shape=tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}


# Flux.2's text input width (3 stacked layers of its text encoder) tells dev (Mistral Small) from Klein (Qwen3)
FLUX2_BY_TEXT_WIDTH = {15360: "black-forest-labs/FLUX.2-dev", 7680: "black-forest-labs/FLUX.2-klein-4B",
                       12288: "black-forest-labs/FLUX.2-klein-9B"}


def file_base_repo(path: Path) -> str | None:
    """The hub repo a lone transformer file of a flow family belongs with, as diffusers tells the family from the
    file's tensor names (Flux.1 dev or schnell, Flux.2, Chroma, Z-Image, SD3/3.5) and this from what the names
    leave open: Flux.2 dev or Klein 4B/9B by its text input's width, Flux.1 Kontext (a Flux.1 dev to the names) by
    the file's name. None for anything else (an SD/SDXL checkpoint, a file whose header does not read); a Flux.2
    file of another width is refused in words."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type

    from pipelines.registry import ModelNotAvailable

    try:
        shapes = _tensor_shapes(path)
        kind = infer_diffusers_model_type(shapes)
    except Exception:  # noqa: BLE001 - a header that does not read (a broken or truncated file): not told
        return None
    if kind not in FLOW_FILE_TYPES:
        return None
    if kind == "flux-2-dev":
        text_in = next((shapes[k].shape for k in ("txt_in.weight", "model.diffusion_model.txt_in.weight")
                        if k in shapes), (0, 0))
        if text_in[-1] not in FLUX2_BY_TEXT_WIDTH:
            raise ModelNotAvailable(f"{path.name} is a Flux.2 transformer of a size the studio does not know (text "
                                    f"width {text_in[-1]}): put its base model's diffusers folder beside it as "
                                    f"{path.stem}/ or {path.stem}-config/")
        return FLUX2_BY_TEXT_WIDTH[text_in[-1]]
    if kind == "flux-dev" and "kontext" in path.name.lower():
        return "black-forest-labs/FLUX.1-Kontext-dev"
    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"]


def hub_base(repo: str, *, offline: bool) -> Path:
    """The base repo's folder for a lone transformer file: its configs, text encoders and VAE (not its own
    transformer weights) from the hub's cache, fetched first when online. ModelNotAvailable in words otherwise."""
    from huggingface_hub import snapshot_download

    from pipelines.registry import ModelNotAvailable

    try:
        folder = Path(snapshot_download(repo, allow_patterns=BASE_PARTS, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - not cached offline, no network, a gated repo: said in words
        how = "it is not in the model cache and the studio is offline" if offline else "it could not be fetched"
        raise ModelNotAvailable(f"this transformer file needs the rest of its model from {repo}, and {how}: run the "
                                "studio online once (a gated repo needs `huggingface-cli login` first), or put that "
                                "model's diffusers folder beside the file as NAME/ or NAME-config/ "
                                f"({short(str(exc), 160)})") from exc
    if folder_family(folder) is None:
        raise ModelNotAvailable(f"{repo} in the model cache is not a diffusers folder of a flow model")
    return folder


def quantization_config(method: str, *, for_diffusers: bool, dtype: torch.dtype):
    """The `quantization_config` that reads a component quantized by `method` (a key of memory_flow.QUANTIZERS):
    diffusers' config class for the transformer, transformers' own for a text encoder."""
    import diffusers
    import transformers

    library = diffusers if for_diffusers else transformers
    if method == "bnb-nf4":
        return library.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    if method == "bnb-int8":
        return library.BitsAndBytesConfig(load_in_8bit=True)
    if method == "torchao-int8":
        from torchao.quantization import Int8WeightOnlyConfig

        return library.TorchAoConfig(Int8WeightOnlyConfig())
    if method.startswith("sdnq-"):
        import sdnq  # one config for both libraries: importing sdnq registers it with transformers

        return sdnq.SDNQConfig(weights_dtype=method.removeprefix("sdnq-"))
    raise ValueError(f"no quantizer called {method!r}")


def read_quantized(folder: Path, method: str, names: tuple[str, ...], dtype: torch.dtype,
                   variant: str | None = None) -> dict:
    """The named components of a diffusers folder read quantized by `method` (a key of memory_flow.QUANTIZERS) as
    their library loads them — the pipeline's `from_pretrained` keyword arguments, so that the unquantized copy of
    each is never read. Their classes come from the folder's model_index.json; `variant`: its weights files, where
    a component has them."""
    import importlib

    index = json.loads((Path(folder) / "model_index.json").read_text())
    parts = {}
    for name in names:
        library, class_name = index[name]
        cls = getattr(importlib.import_module(library), class_name)
        parts[name] = _read_quantized(cls, Path(folder), name, method, dtype, variant)
    return parts


def _read_quantized(cls, source: Path, name: str, method: str, dtype: torch.dtype, variant: str | None = None):
    """One component of the folder `source` read quantized: diffusers' quantization config for its models,
    transformers' own for a text encoder; a quantizer's failure said in words (ModelNotAvailable)."""
    import diffusers

    from pipelines.memory import QUANTIZER_LABELS
    from pipelines.registry import ModelNotAvailable

    given = variant and any(source.joinpath(name).glob(f"*.{variant}*.safetensors"))
    try:
        config = quantization_config(method, for_diffusers=issubclass(cls, diffusers.ModelMixin), dtype=dtype)
        return cls.from_pretrained(source, subfolder=name, quantization_config=config, dtype=dtype,
                                   local_files_only=True, **({"variant": variant} if given else
                                                             _variant(source / name)))
    except Exception as exc:  # noqa: BLE001 - a quantizer's own errors are many kinds; said in words
        raise ModelNotAvailable(f"could not read {name} quantized with {QUANTIZER_LABELS[method]}: {exc}") from exc


def quantize_at_load(pipe, method: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Read each named component again, quantized by `method`, from where the pipeline came from (its folder, or
    the hub's cached copy of it) — for a pipeline read before it was planned (a hub model not cached then, a
    transformer file): the unquantized copy read first is dropped; a transformer read from one `.safetensors` file
    is quantized in place. A component that arrived quantized (read so from its folder, or a GGUF transformer)
    stays as it is. Returns the names it quantized."""
    from pipelines.memory import QUANTIZER_LABELS
    from pipelines.memory_flow import is_quantized
    from pipelines.registry import ModelNotAvailable

    source, done = None, []
    for name in names:
        module = getattr(pipe, name, None)
        if module is None or is_quantized(module):
            continue
        origin = Path(str(getattr(module.config, "_name_or_path", "") or ""))
        if origin.suffix == ".safetensors" and origin.is_file():  # a transformer file beside its base folder
            try:
                quantized = _quantize_in_place(module, method)
            except ModelNotAvailable:
                raise
            except Exception as exc:  # noqa: BLE001 - a quantizer's own errors are many kinds; said in words
                label = QUANTIZER_LABELS[method]
                raise ModelNotAvailable(f"could not read {name} quantized with {label}: {exc}") from exc
        else:
            source = source or _local_source(pipe)
            quantized = _read_quantized(type(module), source, name, method, module.dtype)
        setattr(pipe, name, quantized)  # a registered component: the pipeline's config follows
        done.append(name)
    return tuple(done)


def _quantize_in_place(module, method: str):
    """A transformer read from one `.safetensors` file has no folder to be read again from: torchao and SDNQ
    quantize its weights where they are (what their diffusers quantizers do while reading); bitsandbytes cannot."""
    from pipelines.registry import ModelNotAvailable

    if method == "torchao-int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(module, Int8WeightOnlyConfig())
        return module
    if method.startswith("sdnq-"):
        from sdnq import sdnq_post_load_quant

        return sdnq_post_load_quant(module, weights_dtype=method.removeprefix("sdnq-"))
    raise ModelNotAvailable("bitsandbytes quantizes a transformer while reading it from a diffusers folder, and this "
                            "one came from a single file: use the model's diffusers folder or a GGUF file of it")


def _local_source(pipe) -> Path:
    """The folder a pipeline was read from: its own, or the hub's cached snapshot of its id (read just now: the
    files `from_pretrained` read, as diffusers' `download` finds them — a bare snapshot lookup would call the
    snapshot incomplete for the repo's files it never fetched). ModelNotAvailable in words when it is gone."""
    from pipelines.registry import ModelNotAvailable

    where = str(pipe.config._name_or_path)
    if Path(where).is_dir():
        return Path(where)
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(where, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - the hub library's several kinds, said in words
        raise ModelNotAvailable(f"could not find {where}'s files in the model cache to read them quantized: {exc}") \
            from exc


def model_folder(location: Path | str, *, offline: bool, **download) -> Path | None:
    """The folder a model is read from, known before anything is read: a local folder as it is; for a hub id of a
    flow family (its model_index.json read first), its snapshot holding the files `from_pretrained` reads —
    downloaded first when online (diffusers' `DiffusionPipeline.download`, with `download`'s variant and
    safetensors choice), the cached ones offline. None for an SD/SDXL hub model (read as before) and offline when
    not cached; a download's own errors are raised (the caller says them in words)."""
    if isinstance(location, Path):
        return location if location.is_dir() else None
    from diffusers import DiffusionPipeline
    from huggingface_hub import hf_hub_download

    try:
        if folder_family(Path(hf_hub_download(location, "model_index.json", local_files_only=offline)).parent) is None:
            return None
        return Path(DiffusionPipeline.download(location, local_files_only=offline, **download))
    except Exception:  # noqa: BLE001 - offline: not cached (the hub library raises several kinds)
        if offline:
            return None
        raise


def _variant(folder: Path) -> dict:
    """`variant=` when a component's folder has only variant weights (`model.fp16.safetensors`), else nothing."""
    names = [f.name for f in folder.glob("*.safetensors")]
    if not names or any(n.count(".") == 1 for n in names):
        return {}
    return {"variant": names[0].split(".")[-2].split("-")[0]}


def spec_family(spec) -> Family | None:
    """The family of a registry spec when it can be known without loading or downloading anything: a folder's
    (or a transformer file's base folder's) model_index.json, or a hub model's cached one; None otherwise."""
    if spec.source == "folder":
        return folder_family(Path(spec.location))
    if spec.source == "file":
        from pipelines.image import find_single_file_config

        location = Path(spec.location)
        base = find_single_file_config(location)
        if base is None and location.suffix in (".safetensors", ".gguf"):  # its base repo, if cached already
            try:
                base = hub_base(repo, offline=True) if (repo := file_base_repo(location)) else None
            except Exception:  # noqa: BLE001 - not cached, not told: the family is known once it loads
                return None
        return folder_family(base) if base is not None else None
    if spec.source == "hub":
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(spec.location, "model_index.json")
        return folder_family(Path(found).parent) if isinstance(found, str) else None
    return None


def sampler_choices(spec, sd_samplers: tuple[str, ...]) -> tuple[list[str], str]:
    """The samplers the Image tab offers for a model, and the one it starts on: the family's flow samplers, SD's
    for a UNet model, or both when the family cannot be known yet (a hub model not downloaded)."""
    if spec is not None and spec.source in ("asset", "package"):
        return list(sd_samplers), "DPM++ 2M"
    family = spec_family(spec) if spec is not None else None
    if family is not None:
        return list(family.samplers), family.samplers[0]
    if spec is not None and spec.source in ("folder", "file"):
        return list(sd_samplers), "DPM++ 2M"
    return [*sd_samplers, *FLOW_SCHEDULERS], "DPM++ 2M"


PREVIEW_LATENT = 32  # previews decode at most 32×32 latents (256² pictures from a VAE scaling by 8)


def flow_preview(family: Family, pipe, latents: torch.Tensor, width: int, height: int, tiny=None):
    """A live preview of one image's latents in the pipeline's layout: unpacked into the VAE's latent grid, then
    decoded whole by `tiny` — the family's tiny autoencoder (TAEF1, TAESD3), when on disk: sharp, full size — or
    else shrunk to at most 32×32 (area average) and decoded by the model's own VAE: a small, blurry picture of
    where denoising is, at a fraction of a full decode's cost. None without a VAE."""
    import torch.nn.functional as F
    from PIL import Image

    vae = getattr(pipe, "vae", None)
    if vae is None:
        return None
    shape = noise_shape(family, pipe, width, height)
    if family.key == "flux2":
        x = flux2_vae_latents(vae, latents.float(), shape)
    else:
        x = unpack(family, latents[None].float(), shape)[0] if family.packed else latents.float()
    sharp = tiny is not None and family.tiny_decoder and tiny.config.latent_channels == x.shape[0]
    decoder = tiny if sharp else vae  # a tiny VAE reads the latents as the family's pipeline would with it in place
    h, w = x.shape[-2:]
    if not sharp and max(h, w) > PREVIEW_LATENT:
        scale = PREVIEW_LATENT / max(h, w)
        x = F.interpolate(x[None], size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")[0]
    config = decoder.config
    with torch.inference_mode():
        if family.key == "flux2":  # de-normalized already: the VAE reads them as they are
            rgb = vae.decode(x[None].to(vae.device, vae.dtype)).sample[0]
        elif getattr(config, "latents_mean", None) is not None:  # Qwen-Image's causal-3D VAE: [B, C, frames, h, w]
            mean = torch.tensor(config.latents_mean).view(-1, 1, 1)
            std = torch.tensor(config.latents_std).view(-1, 1, 1)
            raw = (x * std + mean)[None, :, None]
            rgb = vae.decode(raw.to(vae.device, vae.dtype)).sample[0, :, 0]
        else:
            raw = x / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
            rgb = decoder.decode(raw[None].to(decoder.device, decoder.dtype)).sample[0]
    array = (rgb.float().clamp(-1, 1).add(1).div(2).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)


def flux2_vae_latents(vae, tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Flux.2's latents as its pipelines hold them while denoising — tokens [h·w, 4C], row by row, of the VAE's
    2×2-patchified and batch-normalized latents (`shape` = [4C, h, w]) — as the VAE decodes them, [C, 2h, 2w]: what
    its pipelines do after the last step (`_unpack_latents_with_ids`, the batch norm's running statistics undone,
    `_unpatchify_latents`)."""
    channels, h, w = shape
    x = tokens.reshape(h, w, channels).permute(2, 0, 1)  # [4C, h, w]
    mean = vae.bn.running_mean.float().to(x.device).view(-1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.float().to(x.device).view(-1, 1, 1) + vae.config.batch_norm_eps)
    x = x * std + mean
    c = channels // 4
    return x.view(c, 2, 2, h, w).permute(0, 3, 1, 4, 2).reshape(c, 2 * h, 2 * w)  # each channel's 2×2 patch

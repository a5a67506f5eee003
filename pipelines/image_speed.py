"""Speed on an accelerator, chosen once at the edge (`SpeedParams.for_device`) and applied when an image model
loads (`speed_up`): PyTorch's SDPA attention, channels-last memory, fused QKV projections, an opt-in
`torch.compile` of the UNet and the VAE decoder (one compiled graph per picture shape, kept on disk by
inductor's cache), and a tiny autoencoder (TAESD) for sharp live previews of SD-family models.

Nothing here changes what a model draws beyond float rounding: fused projections and compiled kernels add and
multiply in another order. On the CPU they are off unless asked for, so CPU pictures stay bit for bit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
import torch

from pipelines.checks import short

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKENDS = ("inductor", "eager")  # eager: dynamo captures the graphs, runs them as they are (tests)


@dataclass(frozen=True)
class SpeedParams:
    """How image models run.

    compile: `torch.compile` the UNet and the VAE decoder. The first picture of each shape (size, batch,
        guidance on or off) compiles for a while — the Image tab says so — and later ones of that shape are fast.
    compile_mode: one of COMPILE_MODES; "max-autotune-no-cudagraphs" tries GEMM and convolution kernels at the
        first compile (slowest to compile, fastest after) without CUDA graphs, which do not mix with the
        studio's threads.
    compile_backend: one of COMPILE_BACKENDS ("inductor" generates kernels).
    channels_last: UNet and VAE in channels-last memory (NHWC), which tensor cores prefer.
    fuse_qkv: one matrix for the query, key and value projections of each attention layer (unfused again
        before a LoRA loads: LoRAs target the separate projections).
    preview_decoder: a folder (or "" for none) holding an AutoencoderTiny (TAESD) for live previews of
        4-channel SD-family latents; SDXL models take `preview_decoder_xl`.
    tiny_decoders: (registry name, folder) of the flow families' tiny autoencoders on disk (TAEF1, TAESD3):
        a family previews with the one its `Family.tiny_decoder` names.
    """

    compile: bool = False
    compile_mode: str = "max-autotune-no-cudagraphs"
    compile_backend: str = "inductor"
    channels_last: bool = False
    fuse_qkv: bool = False
    preview_decoder: str = ""
    preview_decoder_xl: str = ""
    tiny_decoders: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {short(self.compile_mode)}")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"compile_backend must be one of {', '.join(COMPILE_BACKENDS)}, got "
                             f"{short(self.compile_backend)}")

    @classmethod
    def for_device(cls, device: torch.device, **chosen) -> SpeedParams:
        """Channels-last and fused projections on CUDA (where they pay); compile only when asked for."""
        fast = device.type == "cuda"
        return cls(**{"channels_last": fast, "fuse_qkv": fast, **chosen})


@dataclass
class Compiled:
    """What `torch.compile` has compiled for one model: the picture shapes done, so a request of a new shape is
    told that it waits for a compile (dynamo compiles one graph at a time; later calls of a shape reuse it)."""

    mode: str
    backend: str
    shapes: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_shapes(self, params) -> list:
        with self.lock:
            return [shape for shape in picture_shapes(params) if shape not in self.shapes]

    def done_with(self, params) -> None:
        with self.lock:
            self.shapes.update(picture_shapes(params))


def picture_shapes(params) -> list[tuple]:
    """The shapes an ImageParams request runs its UNet and decoder at, each its own compiled graph: the mode, the
    UNet's batch (doubled by guidance) and the size — and the hires pass's, when there is one."""
    unet_batch = params.batch_size * (2 if params.guidance > 1 else 1)
    mode = "inpaint" if params.mode == "outpaint" else params.mode
    shapes = [(mode, unet_batch, params.width, params.height)]
    if params.hires:
        shapes.append(("img2img", unet_batch, *params.hires.target(params.width, params.height)))
    return shapes


def compile_note(model, params) -> str:
    """What a request waits for when its model is compiled and its picture shape is not yet ("" otherwise)."""
    if model.compiled is None or not model.compiled.new_shapes(params):
        return ""
    return (f"Compiling the model for {params.width}×{params.height} pictures, batch {params.batch_size} "
            "(once per size; a minute or more — later pictures of this size are fast)…")


def speed_up(model, speed: SpeedParams) -> tuple[str, ...]:
    """Apply `speed` to a loaded ImageModel (before any request runs). Returns what was applied, in words."""
    pipe = model.pipe
    unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
    applied = []
    plan = model.plan
    offloaded = plan is not None and plan.placement != "device"
    sliced = plan is not None and plan.attention_slicing  # sliced attention processors stay as the plan set them
    if unet is not None and uses_sdpa(unet):
        applied.append("SDPA attention")
    if speed.channels_last and not offloaded:
        for part in (unet, vae):
            if part is not None:
                part.to(memory_format=torch.channels_last)
        applied.append("channels-last")
    if speed.fuse_qkv and unet is not None and not (offloaded or sliced) and hasattr(unet, "fuse_qkv_projections"):
        fuse_projections(model)
        applied.append("fused QKV projections")
    if speed.compile and unet is not None:
        if offloaded:  # offload hooks move weights module by module: nothing a compiled graph can hold
            applied.append("not compiled (the memory plan offloads weights)")
        else:
            options = dict(mode=speed.compile_mode, backend=speed.compile_backend, dynamic=False)
            if speed.compile_backend != "inductor":
                options.pop("mode")
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            unet.compile(**options)
            if vae is not None and hasattr(vae, "decoder"):
                vae.decoder.compile(**options)
            model.compiled = Compiled(speed.compile_mode, speed.compile_backend)
            applied.append(f"torch.compile ({speed.compile_backend}, {speed.compile_mode})")
    decoder = speed.preview_decoder_xl if hasattr(pipe, "text_encoder_2") else speed.preview_decoder
    if decoder and takes_taesd(model):
        try:
            model.preview_vae = load_preview_decoder(decoder, model.placement)
            applied.append("TAESD live previews")
        except (OSError, ValueError) as exc:  # previews are a nicety: a broken TAESD never stops the model
            applied.append(f"approximate previews (TAESD did not load: {short(str(exc))})")
    family = getattr(model, "family", None)
    tiny = dict(speed.tiny_decoders).get(family.tiny_decoder, "") if family is not None else ""
    if tiny:
        name = family.tiny_decoder.upper()
        try:
            model.preview_vae = load_preview_decoder(tiny, model.placement)
            applied.append(f"{name} live previews")
        except (OSError, ValueError) as exc:
            applied.append(f"previews by the model's own VAE ({name} did not load: {short(str(exc))})")
    return tuple(applied)


def uses_sdpa(unet) -> bool:
    """Whether every attention layer runs on PyTorch's scaled_dot_product_attention (diffusers' default)."""
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    processors = getattr(unet, "attn_processors", {})
    return bool(processors) and all(isinstance(p, (AttnProcessor2_0, FusedAttnProcessor2_0))
                                    for p in processors.values())


def fuse_projections(model) -> None:
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    model.pipe.unet.fuse_qkv_projections()
    model.pipe.unet.set_attn_processor(FusedAttnProcessor2_0())
    model.fused = True


def unfuse_projections(model) -> None:
    """Separate query, key and value projections again (before a LoRA loads; called with no request running)."""
    if getattr(model, "fused", False):
        model.pipe.unet.unfuse_qkv_projections()
        model.fused = False


def takes_taesd(model) -> bool:
    """TAESD decodes SD 1.x/2.x and SDXL latents: 4 channels, 8 pixels per latent. Small latents are previewed
    with the model's own VAE anyway (`preview_image`)."""
    vae = getattr(model.pipe, "vae", None)
    return vae is not None and getattr(vae.config, "latent_channels", 0) == 4 and model.vae_scale == 8


def load_preview_decoder(location: str, placement):
    """An AutoencoderTiny from a folder or the hub cache (never downloaded here); its decoder is all previews use."""
    from diffusers import AutoencoderTiny

    taesd = AutoencoderTiny.from_pretrained(location, local_files_only=True)
    dtype = placement.dtype if placement.device.type != "cpu" else torch.float32
    return taesd.to(placement.device, dtype).eval()

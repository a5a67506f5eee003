"""The latent workbench on flow-matching transformer models (Flux.1, Flux.2, SD3/3.5, Qwen-Image, Chroma, Sana,
Z-Image), behind the one explorer contract (`pipelines.latent`), as `DiffusionLatentModel` is on UNet models.

    space = FlowLatentModel(image_model, DiffusionLook(steps=20, guidance=3.5, scheduler="Flow Euler"))
    a, b = space.point_for_seed(1, prompt="red heart"), space.point_for_seed(2, prompt="blue heart")
    frames = space.render(walk([a, b], WalkParams(frames=(16,))))

A point is the start noise, unpacked [C, h, w] exactly as the Image tab draws it for its seed (the packed token
layout is the pipeline's business: `image_flow.pack`), plus the prompt as the family's text encoders read it: Flux —
the T5 token embeddings [512, E] and CLIP's pooled embedding [P]; SD3/3.5 — CLIP-L, CLIP-G and T5 tokens [77 + 256,
E] and the two CLIPs' pooled [P]; Qwen-Image — the Qwen2.5-VL token embeddings padded to 512 tokens [512, E] with
their attention mask in `pooled` [512] (mixed masks keep every token either prompt has); Chroma and Sana — the T5 /
Gemma tokens at the pipeline's fixed length [512 or 300, E] with their attention mask in `pooled`; Z-Image — the
Qwen3 tokens of the prompt padded to 512 [512, E], mask in `pooled`; Flux.2 — the text encoder's stacked middle
layers (Qwen3 for Klein, Mistral for dev) of the prompt padded to 512 tokens [512, 3·E], nothing pooled (its
transformer reads the padded tokens whole, with no mask; its noise is the VAE's 2×2-patchified latents [4·C, h, w],
which its pipeline packs itself). An editing model explores what it draws from a prompt alone (no start picture):
Flux.1 Kontext through its own pipeline, Qwen-Image-Edit through Qwen-Image's over the same weights
(`Family.explores_as`). Rendering is the family's own pipeline called with those embeddings: a point made from a
seed and a prompt renders the very picture the Image tab makes from them. Directions come from prompt pairs, and
"h-space": PCA of a middle transformer block's image-token output at the first step (one forward hook per model,
what it does read from the running request's context), moved along by adding the offset to that output while
rendering.
"""

from __future__ import annotations

import inspect
import threading
from contextvars import ContextVar

import numpy as np
import torch

from pipelines.checks import check_int, short
from pipelines.image import GenerationCancelled
from pipelines.image_flow import FLOW_SCHEDULERS, guidance_inputs, noise_shape, pack
from pipelines.latent import DiffusionSpace, Direction, LatentPoint, pca

RENDER_BATCH = 8
TOKENS = 512  # the pipelines' own max_sequence_length default: the Image tab's prompts are read at this length
# how each family's prompt is held and handed back: T5 + pooled (Flux), SD3's three encoders, Qwen's masked tokens,
# fixed-length tokens with an attention mask (Chroma, Sana), a list of unpadded token runs (Z-Image), fixed-length
# tokens alone (Flux.2)
EXPLORABLE = {"flux": "pooled", "flux-kontext": "pooled", "qwen-image": "mask", "qwen-image-edit": "mask", "sd3": "sd3",
              "chroma": "attention", "sana": "attention", "z-image": "list", "flux2": "tokens"}
SD3_TOKENS = 256  # StableDiffusion3Pipeline's own max_sequence_length default
SANA_TOKENS = 300  # SanaPipeline's

# What the middle block's one hook does for the request running in this thread (never a hook another request
# sees): add these h offsets to the image tokens (one per picture of the batch), and/or keep the activations.
_H_OFFSETS: ContextVar[list | None] = ContextVar("flow_h_offsets", default=None)
_H_CAPTURE: ContextVar[list | None] = ContextVar("flow_h_capture", default=None)
_HOOKED = threading.Lock()


def middle_block(transformer):
    """The transformer block in the middle of the family's main stack (its image stream is what h-space reads)."""
    blocks = getattr(transformer, "transformer_blocks", None) or getattr(transformer, "layers", None)
    return blocks[len(blocks) // 2] if blocks else None


def _middle_block_hook(module, args, output):
    """Dual-stream blocks return (text, image): the image stream is the last; single-stream Z-Image puts the
    image tokens first in its one sequence. An h offset [T, D] adds to the first T tokens."""
    image = output[-1] if isinstance(output, tuple) else output
    captured = _H_CAPTURE.get()
    if captured is not None:
        captured.append(image.float().cpu())
    offsets = _H_OFFSETS.get()
    if offsets is None:
        return None
    shape = next(h for h in offsets if h is not None).shape
    delta = torch.stack([h if h is not None else torch.zeros(shape) for h in offsets]).to(image.device, image.dtype)
    delta = delta.repeat(image.shape[0] // delta.shape[0], 1, 1)  # both halves of a guidance batch
    moved = image.clone()
    moved[:, :shape[0]] += delta
    return (*output[:-1], moved) if isinstance(output, tuple) else moved


def install_middle_block_hook(model) -> None:
    """The one forward hook on the transformer's middle block, installed once per model."""
    transformer = model.pipe.transformer
    block = middle_block(transformer)
    if block is None:
        return
    with _HOOKED:
        if not transformer.__dict__.get("_studio_h_hook"):
            block.register_forward_hook(_middle_block_hook)
            transformer.__dict__["_studio_h_hook"] = True


class FlowLatentModel(DiffusionSpace):
    can_encode = False
    direction_methods = ("prompt-pair", "h-space")

    def __init__(self, model, look) -> None:
        if model.family.key not in EXPLORABLE:
            raise ValueError(f"model: Explore reaches Flux.1, Flux.2, SD3/3.5, Qwen-Image, Chroma, Sana and Z-Image among "
                             f"the flow models so far; {model.family.label} is not one yet")
        super().__init__(model, look)
        # an SD sampler in the look (Explore's default) means the family's own: flow-matching Euler
        self.scheduler = look.scheduler if look.scheduler in FLOW_SCHEDULERS else "Flow Euler"
        install_middle_block_hook(model)

    @property
    def family(self):
        return self.model.family

    @property
    def pipe(self):
        return self.model.pipe

    @property
    def device(self) -> torch.device:
        return self.model.placement.device

    @property
    def z_shape(self) -> tuple[int, ...]:
        return noise_shape(self.family, self.pipe, self.look.width, self.look.height)

    # -- points ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt as the family reads it, on the CPU: (tokens [L, E], pooled [P] or mask [L]; None for Flux.2)."""
        return self.prompts.get(prompt, self._encode)

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        kind, pipe, device = EXPLORABLE[self.family.key], self.model.for_mode("explore"), self.device
        with self.model.adapters.using(self.model, ()), self.model.lock:  # no LoRA; the shared tokenizers
            if kind == "sd3":  # CLIP-L + CLIP-G + T5 tokens, the two CLIPs pooled
                out = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device=device,
                                         do_classifier_free_guidance=False, max_sequence_length=SD3_TOKENS)
                return out[0][0].float().cpu(), out[2][0].float().cpu()
            if kind == "pooled":
                tokens, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                                       max_sequence_length=TOKENS)
                return tokens[0].float().cpu(), pooled[0].float().cpu()
            if kind == "attention" and self.family.key == "sana":  # with the instruction the pipeline adds itself
                instruction = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
                tokens, mask, _, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=device,
                                                        max_sequence_length=SANA_TOKENS,
                                                        complex_human_instruction=instruction)
                return tokens[0].float().cpu(), mask[0].float().cpu()
            if kind == "attention":  # Chroma
                out = pipe.encode_prompt(prompt=prompt, device=device, do_classifier_free_guidance=False,
                                         max_sequence_length=TOKENS)
                return out[0][0].float().cpu(), out[2][0].float().cpu()
            if kind == "tokens":  # Flux.2: padded to TOKENS by its tokenizer, no mask, nothing pooled
                tokens, _ = pipe.encode_prompt(prompt=prompt, device=device, max_sequence_length=TOKENS)
                return tokens[0].float().cpu(), None
            if kind == "list":  # Z-Image: the prompt's own tokens, no padding
                tokens, _ = pipe.encode_prompt(prompt=prompt, device=device, do_classifier_free_guidance=False,
                                               max_sequence_length=TOKENS)
                return self._padded(tokens[0].float().cpu(), None)
            tokens, mask = pipe.encode_prompt(prompt=prompt, device=device, max_sequence_length=TOKENS)
            return self._padded(tokens[0].float().cpu(), mask[0].float().cpu() if mask is not None else None)

    @staticmethod
    def _padded(tokens: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings and mask padded to TOKENS (two prompts of different lengths mix token by token)."""
        length = tokens.shape[0]
        mask = torch.ones(length) if mask is None else mask
        return (torch.cat([tokens, tokens.new_zeros(TOKENS - length, tokens.shape[1])]),
                torch.cat([mask, mask.new_zeros(TOKENS - length)]))

    def point_for_seed(self, seed: int, prompt: str = "", image=None, **_) -> LatentPoint:
        """The noise the Image tab draws for `seed` (unpacked) and the prompt's embeddings."""
        check_int("seed", seed, 0, 2**32 - 1)
        if image is not None:
            raise ValueError(f"image prompt: IP-Adapters are for SD/SDXL models here; {self.family.label} points "
                             "are a seed and a prompt")
        noise = torch.randn(self.z_shape, generator=torch.Generator().manual_seed(seed))
        tokens, pooled = self.embed(prompt)
        return LatentPoint(noise, tokens, pooled, None, self.name,
                           f"seed {seed}" + (f" · {prompt[:60]}" if prompt else ""), seed)

    def check(self, point: LatentPoint) -> LatentPoint:
        point = super().check(point)
        if point.text is None or (point.pooled is None and EXPLORABLE[self.family.key] != "tokens"):
            raise ValueError("this point has no prompt embedding: open it from a seed and a prompt")
        return point

    def encode(self, images: np.ndarray, **options) -> list[LatentPoint]:
        raise ValueError(f"{self.family.label}: turning a picture into a point (inversion) is not available for "
                         "flow models yet; open the picture's seed and prompt instead (Explore this picture)")

    # -- rendering -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def render(self, points: list[LatentPoint], *, preview: bool = False, callback=None, cancel=None) -> np.ndarray:
        """uint8 [N, H, W, 3], RENDER_BATCH points per denoising run, without LoRAs, each with its own generator."""
        points = [self.check(p) for p in points]
        steps = self.look.preview_steps if preview else self.look.steps
        out: list = []
        with self.model.adapters.using(self.model, ()):
            pipe = self.model.view("explore", self.scheduler)
            for start in range(0, len(points), RENDER_BATCH):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled()
                batch = points[start:start + RENDER_BATCH]
                token = _H_OFFSETS.set([p.h for p in batch] if any(p.h is not None for p in batch) else None)
                try:
                    images = pipe(num_inference_steps=steps, width=self.look.width, height=self.look.height,
                                  output_type="np", **self._inputs(pipe, batch),
                                  generator=[torch.Generator().manual_seed(p.noise_seed()) for p in batch]).images
                finally:
                    _H_OFFSETS.reset(token)
                out.extend((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
                if callback is not None:
                    callback(len(out), len(points))
        return np.stack(out)

    def _inputs(self, pipe, batch: list[LatentPoint], scale: float | None = None) -> dict:
        """The pipeline's inputs for `batch` under the look (its guidance, or `scale`)."""
        scale = self.look.guidance if scale is None else scale
        device, dtype = self.device, self.model.placement.dtype
        n = len(batch)
        kwargs = {"latents": pack(self.family, pipe, torch.stack([p.z for p in batch])).to(device, dtype)}
        if "max_area" in inspect.signature(type(pipe).__call__).parameters:  # Kontext: the look's size as it is
            kwargs.update(max_area=self.look.width * self.look.height, _auto_resize=False)
        guidance = guidance_inputs(self.family, scale, self.look.negative_prompt, n)
        kwargs.update({k: v for k, v in guidance.items() if k != "negative_prompt"})
        tokens = torch.stack([p.text for p in batch])
        kind = EXPLORABLE[self.family.key]
        if kind == "attention":  # the negative prompt (CFG) the pipeline encodes itself, as in the Image tab
            mask = torch.stack([p.pooled for p in batch]) > 0  # Chroma's mask is in the model's dtype, Sana's ids'
            mask = mask.to(device, dtype if self.family.key == "chroma" else torch.long)
            return {**kwargs, **guidance, "prompt_embeds": tokens.to(device, dtype), "prompt_attention_mask": mask}
        if kind == "tokens":
            kwargs["prompt_embeds"] = tokens.to(device, dtype)
            if self._true_cfg(pipe, scale):  # an undistilled Klein guides against a blank prompt, as its pipeline does
                kwargs["negative_prompt_embeds"] = self.embed("")[0][None].expand(n, -1, -1).to(device, dtype)
            return kwargs
        if kind == "list":
            kwargs["prompt_embeds"] = [p.text[:self._length(p.pooled)].to(device, dtype) for p in batch]
            if scale > 0:  # Z-Image guides above 0: CFG against the look's negative, as the Image tab
                text, mask = self.embed(self.look.negative_prompt)
                kwargs["negative_prompt_embeds"] = [text[:self._length(mask)].to(device, dtype)] * n
            return kwargs
        if kind != "mask":
            kwargs.update(prompt_embeds=tokens.to(device, dtype),
                          pooled_prompt_embeds=torch.stack([p.pooled for p in batch]).to(device, dtype))
            if self.family.guidance == "cfg" and scale > 1:  # SD3: CFG against the look's negative
                negative = self.embed(self.look.negative_prompt)
                kwargs.update(negative_prompt_embeds=negative[0][None].expand(n, -1, -1).to(device, dtype),
                              negative_pooled_prompt_embeds=negative[1][None].expand(n, -1).to(device, dtype))
            return kwargs
        kwargs.update(self._masked("", tokens, torch.stack([p.pooled for p in batch])))
        if "negative_prompt" in guidance:  # true CFG: the look's negative prompt (a blank one when none)
            negative = self.embed(guidance["negative_prompt"][0])
            kwargs.update(self._masked("negative_", negative[0][None].expand(n, -1, -1), negative[1][None].expand(n, -1)))
        return kwargs

    @staticmethod
    def _true_cfg(pipe, scale: float) -> bool:
        """Whether a Flux.2 pipeline runs CFG at `scale`: Klein's undistilled base above 1 (the distilled Klein and
        Flux.2 dev read guidance as an embedding)."""
        return scale > 1 and getattr(pipe.config, "is_distilled", True) is False

    @staticmethod
    def _length(mask: torch.Tensor) -> int:
        """The tokens a (mixed) mask keeps: up to the last one any prompt had."""
        keep = (mask > 0).nonzero()
        return int(keep.max()) + 1 if len(keep) else 1

    def _masked(self, prefix: str, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """Token embeddings cut after the last token any of them keeps (a prompt alone: its own length exactly)."""
        keep = mask > 0
        length = int(keep.any(0).nonzero().max()) + 1 if keep.any() else 1
        return {f"{prefix}prompt_embeds": tokens[:, :length].to(self.device, self.model.placement.dtype),
                f"{prefix}prompt_embeds_mask": keep[:, :length].long().to(self.device)}

    # -- directions -------------------------------------------------------------------------------------
    def directions(self, method: str, k: int = 8, origin: LatentPoint | None = None, **options) -> list[Direction]:
        if method == "h-space":
            return self.h_space_directions(k, origin, samples=int(options.get("samples", 16)))
        if method != "prompt-pair":
            raise ValueError(f"method must be one of {', '.join(self.direction_methods)} for a "
                             f"{self.family.label} model, got {short(method)}")
        return [self.prompt_direction(options.get("positive", ""), options.get("negative", ""))]

    @torch.inference_mode()
    def h_space_directions(self, k: int, origin: LatentPoint | None, samples: int = 16,
                           seed: int = 0) -> list[Direction]:
        """PCA of the middle block's image tokens at the first denoising step over `samples` seeds (with the
        origin's prompt, if any; guidance off, so one pass per picture): orthonormal directions in h-space, one
        slider unit = their spread."""
        check_int("directions", k, 1, 16)
        check_int("samples", samples, k + 1, 256)
        if middle_block(self.pipe.transformer) is None:
            raise ValueError(f"method: {self.family.label}'s transformer has no block stack to read h-space from")
        template = origin if origin is not None else self.point_for_seed(0)
        captured: list[torch.Tensor] = []
        token = _H_CAPTURE.set(captured)  # this request's activations only (the hook reads this context)
        try:
            with self.model.adapters.using(self.model, ()):
                pipe = self.model.view("explore", self.scheduler)
                look = self.look
                for start in range(0, samples, RENDER_BATCH):
                    batch = [template.with_parts(z=torch.randn(self.z_shape, generator=torch.Generator().manual_seed(
                        seed + start + i))) for i in range(min(RENDER_BATCH, samples - start))]
                    first = len(captured)
                    # guidance off (Z-Image guides above 0, the others above 1); a distilled model's is its input
                    off = look.guidance if self.family.guidance == "distilled" else \
                        0.0 if EXPLORABLE[self.family.key] == "list" else 1.0
                    off = 1.0 if self._true_cfg(pipe, off) else off  # Klein's undistilled base: CFG off
                    pipe(num_inference_steps=1, width=look.width, height=look.height, output_type="latent",
                         **self._inputs(pipe, batch, off))
                    del captured[first + 1:]  # the first (conditional) pass of the one step
        finally:
            _H_CAPTURE.reset(token)
        acts = torch.cat(captured)
        tokens = acts.shape[1] if self.family.key != "z-image" else self._image_tokens()
        acts = acts[:, :tokens]
        _, vectors, std = pca(acts.flatten(1), min(k, acts.shape[0] - 1))
        return [Direction(f"h {i + 1}", "h", v.view(tokens, -1), float(s), "h-space")
                for i, (v, s) in enumerate(zip(vectors, std))]

    def _image_tokens(self) -> int:
        """Z-Image's image tokens at the look's size (its 2×2 patches, padded to a multiple of 32)."""
        _, h, w = self.z_shape
        count = (h // 2) * (w // 2)
        return -(-count // 32) * 32

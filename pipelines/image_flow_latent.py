"""The latent workbench on flow-matching transformer models (Flux.1, SD3/3.5, Qwen-Image), behind the one explorer
contract (`pipelines.latent`), as `DiffusionLatentModel` is on UNet models.

    space = FlowLatentModel(image_model, DiffusionLook(steps=20, guidance=3.5, scheduler="Flow Euler"))
    a, b = space.point_for_seed(1, prompt="red heart"), space.point_for_seed(2, prompt="blue heart")
    frames = space.render(walk([a, b], WalkParams(frames=(16,))))

A point is the start noise, unpacked [C, h, w] exactly as the Image tab draws it for its seed (the packed token
layout is the pipeline's business: `image_flow.pack`), plus the prompt as the family's text encoders read it:
Flux — the T5 token embeddings [512, E] and CLIP's pooled embedding [P]; SD3/3.5 — CLIP-L, CLIP-G and T5 tokens
[77 + 256, E] and the two CLIPs' pooled [P]; Qwen-Image — the Qwen2.5-VL token
embeddings padded to 512 tokens [512, E] with their attention mask in `pooled` [512] (mixed masks keep every
token either prompt has). Rendering is the family's own pipeline called with those embeddings: a point made from
a seed and a prompt renders the very picture the Image tab makes from them. Directions come from prompt pairs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from pipelines.checks import check_int, short
from pipelines.image import GenerationCancelled
from pipelines.image_flow import FLOW_SCHEDULERS, guidance_inputs, noise_shape, pack
from pipelines.latent import Direction, LatentModel, LatentPoint

RENDER_BATCH = 8
TOKENS = 512  # the pipelines' own max_sequence_length default: the Image tab's prompts are read at this length
EXPLORABLE = {"flux": "pooled", "flux-kontext": "pooled", "qwen-image": "mask", "sd3": "sd3"}
SD3_TOKENS = 256  # StableDiffusion3Pipeline's own max_sequence_length default


class FlowLatentModel(LatentModel):
    kind = "diffusion"
    can_encode = False
    direction_methods = ("prompt-pair",)

    def __init__(self, model, look) -> None:
        if model.family.key not in EXPLORABLE:
            raise ValueError(f"model: Explore reaches Flux.1, SD3/3.5 and Qwen-Image among the flow models so far; "
                             f"{model.family.label} is not one yet")
        self.model, self.look, self.name = model, look, model.name
        # an SD sampler in the look (Explore's default) means the family's own: flow-matching Euler
        self.scheduler = look.scheduler if look.scheduler in FLOW_SCHEDULERS else "Flow Euler"
        self._prompts: OrderedDict[str, tuple] = OrderedDict()
        self._prompts_lock = threading.Lock()

    def with_look(self, look) -> FlowLatentModel:
        other = FlowLatentModel(self.model, look)
        other._prompts, other._prompts_lock = self._prompts, self._prompts_lock
        return other

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
        """The prompt as the family reads it, on the CPU: (tokens [512, E], pooled [P] or mask [512])."""
        if not isinstance(prompt, str) or len(prompt) > 4000:
            raise ValueError("prompt must be text of at most 4,000 characters")
        with self._prompts_lock:
            if prompt in self._prompts:
                self._prompts.move_to_end(prompt)
                return self._prompts[prompt]
        with self.model.adapters.using(self.model, ()), self.model.lock:  # no LoRA; the shared tokenizers
            if EXPLORABLE[self.family.key] == "sd3":  # CLIP-L + CLIP-G + T5 tokens, the two CLIPs pooled
                out = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device=self.device,
                                              do_classifier_free_guidance=False, max_sequence_length=SD3_TOKENS)
                parts = (out[0][0].float().cpu(), out[2][0].float().cpu())
            elif EXPLORABLE[self.family.key] == "pooled":
                tokens, pooled, _ = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device,
                                                            max_sequence_length=TOKENS)
                parts = (tokens[0].float().cpu(), pooled[0].float().cpu())
            else:
                tokens, mask = self.pipe.encode_prompt(prompt=prompt, device=self.device, max_sequence_length=TOKENS)
                parts = self._padded(tokens[0].float().cpu(), mask[0].float().cpu() if mask is not None else None)
        with self._prompts_lock:
            self._prompts[prompt] = parts
            while len(self._prompts) > 64:
                self._prompts.popitem(last=False)
        return parts

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
        if point.text is None or point.pooled is None:
            raise ValueError("this point has no prompt embedding: open it from a seed and a prompt")
        if point.h is not None:
            raise ValueError(f"h-space offsets are for UNet models; {self.family.label} points have none")
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
            pipe = self.model.view("txt2img", self.scheduler)
            for start in range(0, len(points), RENDER_BATCH):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled()
                batch = points[start:start + RENDER_BATCH]
                images = pipe(num_inference_steps=steps, width=self.look.width, height=self.look.height,
                              output_type="np", generator=[torch.Generator().manual_seed(p.noise_seed()) for p in batch],
                              **self._inputs(pipe, batch)).images
                out.extend((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
                if callback is not None:
                    callback(len(out), len(points))
        return np.stack(out)

    def _inputs(self, pipe, batch: list[LatentPoint]) -> dict:
        device, dtype = self.device, self.model.placement.dtype
        n = len(batch)
        kwargs = {"latents": pack(self.family, pipe, torch.stack([p.z for p in batch])).to(device, dtype)}
        guidance = guidance_inputs(self.family, self.look.guidance, self.look.negative_prompt, n)
        kwargs.update({k: v for k, v in guidance.items() if k != "negative_prompt"})
        tokens = torch.stack([p.text for p in batch])
        if EXPLORABLE[self.family.key] != "mask":
            kwargs.update(prompt_embeds=tokens.to(device, dtype),
                          pooled_prompt_embeds=torch.stack([p.pooled for p in batch]).to(device, dtype))
            if self.family.guidance == "cfg" and self.look.guidance > 1:  # SD3: CFG against the look's negative
                negative = self.embed(self.look.negative_prompt)
                kwargs.update(negative_prompt_embeds=negative[0][None].expand(n, -1, -1).to(device, dtype),
                              negative_pooled_prompt_embeds=negative[1][None].expand(n, -1).to(device, dtype))
            return kwargs
        kwargs.update(self._masked("", tokens, torch.stack([p.pooled for p in batch])))
        if "negative_prompt" in guidance:  # true CFG: the look's negative prompt (a blank one when none)
            negative = self.embed(guidance["negative_prompt"][0])
            kwargs.update(self._masked("negative_", negative[0][None].expand(n, -1, -1), negative[1][None].expand(n, -1)))
        return kwargs

    def _masked(self, prefix: str, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """Token embeddings cut after the last token any of them keeps (a prompt alone: its own length exactly)."""
        keep = mask > 0
        length = int(keep.any(0).nonzero().max()) + 1 if keep.any() else 1
        return {f"{prefix}prompt_embeds": tokens[:, :length].to(self.device, self.model.placement.dtype),
                f"{prefix}prompt_embeds_mask": keep[:, :length].long().to(self.device)}

    # -- directions -------------------------------------------------------------------------------------
    def directions(self, method: str, k: int = 8, origin: LatentPoint | None = None, **options) -> list[Direction]:
        if method != "prompt-pair":
            raise ValueError(f"method must be one of {', '.join(self.direction_methods)} for a "
                             f"{self.family.label} model, got {short(method)}")
        return [self.prompt_direction(options.get("positive", ""), options.get("negative", ""))]

    def prompt_direction(self, positive: str, negative: str) -> Direction:
        """From `negative` toward `positive` in the token-embedding space (one slider unit: half the way)."""
        positive, negative = (positive or "").strip(), (negative or "").strip()
        if not positive or not negative:
            side = "positive" if not positive else "negative"
            raise ValueError(f"prompt direction: the {side} side is empty; give a word or phrase on both sides, "
                             "e.g. smiling ↔ frowning")
        if positive == negative:
            raise ValueError("prompt direction: both sides are the same text, so there is no direction")
        diff = (self.embed(positive)[0] - self.embed(negative)[0]).flatten()
        norm = float(diff.norm())
        return Direction(f"{negative} → {positive}", "text", diff / norm, norm / 2, "prompt-pair",
                         f"{negative} ↔ {positive}")

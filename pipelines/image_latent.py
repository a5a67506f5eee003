"""The latent space of a diffusion model, behind the one explorer contract (`pipelines.latent`).

    look = DiffusionLook(steps=20, guidance=5.0, width=64, height=64)
    space = DiffusionLatentModel(image_model, look)
    a = space.point_for_seed(1, prompt="red heart")
    b = space.point_for_seed(2, prompt="blue heart")
    frames = space.render(walk([a, b], WalkParams(frames=(16,))))

A point is the initial noise latent plus the prompt's text embedding (token embeddings, and the pooled
embedding where the model has one, e.g. SDXL), optionally with an offset for the UNet's mid-block
activations ("h-space"), and optionally an image prompt: a picture's CLIP embedding, read by the look's
IP-Adapter (a walk between two image prompts mixes their embeddings). Rendering is the model's own denoising
run with fixed sampler, steps, guidance and size (`DiffusionLook`), called with the embeddings instead of
prompt strings — the same numbers the Image tab's pipeline computes, so a point made from a seed and a prompt
renders the very image that seed and prompt make there. Many points render in batches. The preview runs fewer steps.

Directions: "prompt-pair" — the difference of two prompts' embeddings ("smiling" ↔ "frowning") in
text-embedding space; "h-space" — unsupervised directions from PCA of the UNet's mid-block activations
over sampled seeds, added to those activations at every step (training-free, after Haas et al. 2023,
"Discovering Interpretable Directions in h-space"). Encoding an image is DDIM inversion (the whole way
at strength 1; part of the way, then the seed's noise for the rest, below 1).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.checks import check_float, check_int, short
from pipelines.image import SCHEDULERS, GenerationCancelled, ImageModel, scheduler_for
from pipelines.image_flow import FLOW_SCHEDULERS
from pipelines.image_ipadapter import (
    DEFAULT_WEIGHT,
    IPAdapterRef,
    IPAdapterWeights,
    is_guided,
    per_picture_image_prompts,
    read_ip_adapter,
)
from pipelines.image_prompt import can_weight, encode_prompts, has_syntax, plain_text
from pipelines.latent import DiffusionSpace, Direction, LatentPoint, pca

RENDER_BATCH = 8

# What the UNet mid-block's one hook does for the request running in this thread: add these h offsets (one per
# image of the batch), or keep the activations. A context of the request's own, never a hook another request sees.
_H_OFFSETS: ContextVar[list | None] = ContextVar("h_offsets", default=None)
_H_CAPTURE: ContextVar[list | None] = ContextVar("h_capture", default=None)
_HOOKED = threading.Lock()


def _mid_block_hook(module, args, output):
    captured = _H_CAPTURE.get()
    if captured is not None:
        captured.append(output.float().cpu())
    offsets = _H_OFFSETS.get()
    if offsets is None:
        return None
    shape = output.shape[1:]
    delta = torch.stack([(h if h is not None else torch.zeros(shape)).view(shape) for h in offsets])
    delta = delta.to(output.device, output.dtype)
    repeat = output.shape[0] // delta.shape[0]  # both halves of a classifier-free-guidance batch
    return output + delta.repeat(repeat, 1, 1, 1)


def install_mid_block_hook(model: ImageModel) -> None:
    """The one forward hook on the UNet's mid-block, installed once per model (before any render of its
    latent space); what it does comes from the running request's context."""
    unet = getattr(model.pipe, "unet", None)
    if unet is None or getattr(unet, "mid_block", None) is None:
        return
    with _HOOKED:
        if not unet.__dict__.get("_studio_h_hook"):
            unet.mid_block.register_forward_hook(_mid_block_hook)
            unet.__dict__["_studio_h_hook"] = True


@dataclass(frozen=True)
class DiffusionLook:
    """How points become pictures: the sampler, steps, guidance, size and negative prompt held fixed
    while exploring; `preview_steps` for scrubbing and sliders (fewer steps, same point)."""

    steps: int = 20
    guidance: float = 7.0
    scheduler: str = "DPM++ 2M"
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    preview_steps: int = 8
    ip_adapter: str = ""  # the IP-Adapter that reads points' image prompts ("" = none; pipelines.image_ipadapter)
    ip_weight: float = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1, 150)
        check_int("preview_steps", self.preview_steps, 1, 150)
        check_float("guidance", self.guidance, 0.0, 30.0)
        if self.scheduler not in SCHEDULERS and self.scheduler not in FLOW_SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join([*SCHEDULERS, *FLOW_SCHEDULERS])}, got "
                             f"{short(self.scheduler)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            check_int(name, value, 64, 2048)
            if value % 8:
                raise ValueError(f"{name} must be a multiple of 8 (from 64 to 2048), got {value}")
        if not isinstance(self.negative_prompt, str) or len(self.negative_prompt) > 4000:
            raise ValueError("negative_prompt must be text of at most 4,000 characters")
        if not isinstance(self.ip_adapter, str) or len(self.ip_adapter) > 512:
            raise ValueError("ip_adapter must be an IP-Adapter file or hub file of at most 512 characters")
        check_float("ip_weight", self.ip_weight, 0.0, 2.0)


class DiffusionLatentModel(DiffusionSpace):
    can_encode = True
    direction_methods = ("prompt-pair", "h-space")

    def __new__(cls, model: ImageModel, look: DiffusionLook):
        """A flow-matching transformer model (Flux, SD3, Qwen-Image) gets its own adapter, behind the same contract."""
        if cls is DiffusionLatentModel and getattr(model, "family", None) is not None:
            from pipelines.image_flow_latent import FlowLatentModel

            return FlowLatentModel(model, look)
        return super().__new__(cls)

    def __init__(self, model: ImageModel, look: DiffusionLook) -> None:
        super().__init__(model, look)  # prompt → (tokens, pooled), a few kept, shared by every look
        install_mid_block_hook(model)

    @property
    def pipe(self):
        return self.model.pipe

    @property
    def z_shape(self) -> tuple[int, ...]:
        channels = self.pipe.unet.config.in_channels
        scale = self.model.vae_scale
        return (channels, self.look.height // scale, self.look.width // scale)

    @property
    def device(self) -> torch.device:
        return self.model.placement.device

    # -- points ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's token embeddings [T, E] (and pooled [E2] where the model has one), on the CPU: what the
        Image tab's pipeline reads for it — A1111 weighting through compel as there (a long prompt is read in
        its first chunk here: one point holds one chunk)."""
        def make(text: str):
            with self.model.adapters.using(self.model, ()):  # never another request's LoRAs
                return self._encode(text)

        return self.prompts.get(prompt, make)

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        pipe = self.pipe
        if has_syntax(prompt) and can_weight(pipe):
            with self.model.lock:  # the model's one compel object
                conditioning = encode_prompts(pipe, prompt, "", self.model.prompt_encoders)
            if conditioning is not None and "prompt_embeds" in conditioning.kwargs:
                kwargs = conditioning.kwargs
                limit = getattr(pipe.tokenizer, "model_max_length", 77)
                tokens = kwargs["prompt_embeds"][0, :limit].float().cpu()
                pooled = kwargs.get("pooled_prompt_embeds")
                return tokens, pooled[0].float().cpu() if pooled is not None else None
        with self.model.lock:  # the shared tokenizer, one call at a time (see pipelines.image.SerialTokenizer)
            out = pipe.encode_prompt(prompt=plain_text(prompt) if has_syntax(prompt) else prompt, device=self.device,
                                     num_images_per_prompt=1, do_classifier_free_guidance=False)
        tokens = out[0][0].float().cpu()
        pooled = out[2][0].float().cpu() if len(out) == 4 and out[2] is not None else None
        return tokens, pooled

    def point_for_seed(self, seed: int, prompt: str = "", image=None, **_) -> LatentPoint:
        """The noise the Image tab draws for `seed` (one generator per image) and the prompt's embedding; with
        `image` (PIL), the picture's embedding as the point's image prompt (read by the look's IP-Adapter)."""
        check_int("seed", seed, 0, 2**32 - 1)
        noise = torch.randn(self.z_shape, generator=torch.Generator().manual_seed(seed))
        tokens, pooled = self.embed(prompt)
        point = LatentPoint(noise, tokens, pooled, None, self.name, f"seed {seed}" + (f" · {prompt[:60]}" if prompt
                                                                                     else ""), seed)
        return self.with_image_prompt(point, image) if image is not None else point

    def with_image_prompt(self, point: LatentPoint, image) -> LatentPoint:
        """The point with `image` (PIL) as its image prompt: the picture's embedding by the look's IP-Adapter."""
        return point.with_parts(image=self.image_adapter()[1].embed(image), label=f"{point.label} · image prompt")

    def image_adapter(self) -> tuple[IPAdapterRef, IPAdapterWeights]:
        """The look's IP-Adapter, read for this model (image prompts of points need one)."""
        if not self.look.ip_adapter:
            raise ValueError("image prompt: choose an IP-Adapter in the render settings first (it reads the picture)")
        ref = IPAdapterRef(self.look.ip_adapter, self.look.ip_weight)
        return ref, read_ip_adapter(ref.location, self.model)

    def check(self, point: LatentPoint) -> LatentPoint:
        point = super().check(point)
        if point.text is None:
            raise ValueError("this point has no prompt embedding: open it from a seed and a prompt")
        return point

    # -- rendering -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def render(self, points: list[LatentPoint], *, preview: bool = False, callback=None, cancel=None) -> np.ndarray:
        """uint8 [N, H, W, 3], RENDER_BATCH points per denoising run. `callback(done, total)` after each
        batch; `cancel` (an Event) stops between batches with GenerationCancelled. Each render has its own
        pipeline view and scheduler, each point its own sampler generator (`LatentPoint.noise_seed`), and
        runs without LoRAs: the same point always gives the same picture, whatever else runs."""
        points = [self.check(p) for p in points]
        steps = self.look.preview_steps if preview else self.look.steps
        negative = self.embed(self.look.negative_prompt)
        out: list = [None] * len(points)
        done = 0
        for prompted in sorted({p.image is not None for p in points}):  # without image prompts, then with
            indices = [i for i, p in enumerate(points) if (p.image is not None) == prompted]
            ref, weights = self.image_adapter() if prompted else (None, None)
            with self.model.adapters.using(self.model, (), ref):
                pipe = self.model.view("txt2img", self.look.scheduler)
                for start in range(0, len(indices), RENDER_BATCH):
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled()
                    chosen = indices[start:start + RENDER_BATCH]
                    batch = [points[i] for i in chosen]
                    kwargs = self._inputs(batch, negative)
                    if weights is not None:
                        kwargs.update(per_picture_image_prompts(pipe, [p.image for p in batch], weights,
                                                                is_guided(pipe, self.look.guidance), self.device,
                                                                self.model.placement.dtype))
                    generators = [torch.Generator().manual_seed(p.noise_seed()) for p in batch]
                    token = _H_OFFSETS.set([p.h for p in batch] if any(p.h is not None for p in batch) else None)
                    try:
                        images = pipe(num_inference_steps=steps, guidance_scale=self.look.guidance,
                                      width=self.look.width, height=self.look.height, output_type="np",
                                      generator=generators, **kwargs).images
                    finally:
                        _H_OFFSETS.reset(token)
                    for i, image in zip(chosen, (np.clip(images, 0, 1) * 255).round().astype(np.uint8)):
                        out[i] = image
                    done += len(batch)
                    if callback is not None:
                        callback(done, len(points))
        return np.stack(out)

    def _inputs(self, batch: list[LatentPoint], negative: tuple) -> dict:
        dtype, device = self.model.placement.dtype, self.device
        n = len(batch)
        kwargs = dict(latents=torch.stack([p.z for p in batch]).to(device, dtype),
                      prompt_embeds=torch.stack([p.text for p in batch]).to(device, dtype),
                      negative_prompt_embeds=negative[0][None].expand(n, -1, -1).to(device, dtype))
        if batch[0].pooled is not None:
            kwargs["pooled_prompt_embeds"] = torch.stack([p.pooled for p in batch]).to(device, dtype)
            kwargs["negative_pooled_prompt_embeds"] = negative[1][None].expand(n, -1).to(device, dtype)
        return kwargs

    # -- encoding an image: DDIM inversion --------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, images: np.ndarray, strength: float = 1.0, prompt: str = "", seed: int = 0,
               **_) -> list[LatentPoint]:
        """Images → points whose render gives them back (closely under the DDIM sampler): DDIM inversion
        with the prompt's embedding over the look's steps. `strength` < 1 inverts only that share of the
        schedule and fills the rest with the seed's noise (img2img-style: more freedom to change)."""
        check_float("strength", strength, 0.05, 1.0)
        tokens, pooled = self.embed(prompt)
        with self.model.adapters.using(self.model, ()):
            return self._invert(images, strength, tokens, pooled, seed)

    def _invert(self, images: np.ndarray, strength: float, tokens, pooled, seed: int) -> list[LatentPoint]:
        pipe, device = self.pipe, self.device
        from PIL import Image

        size = (self.look.width, self.look.height)
        x = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(im).resize(size), dtype=np.float32))
                         for im in images]).permute(0, 3, 1, 2) / 127.5 - 1
        latents = pipe.vae.encode(x.to(device, pipe.vae.dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(pipe.scheduler.config)
        ddim.set_timesteps(self.look.steps)
        ascending = ddim.timesteps.flip(0).tolist()  # e.g. 1, 51, …, 951 for 20 steps
        alphas = ddim.alphas_cumprod.float()
        stop = max(1, round(len(ascending) * strength))
        points = []
        for i in range(latents.shape[0]):
            x_t = latents[i:i + 1].float()
            previous = None
            for t in ascending[:stop]:  # the DDIM update run backwards, ε evaluated at the next timestep
                eps = self._unet(x_t, t, tokens, pooled).float()
                a_prev = alphas[previous] if previous is not None else ddim.final_alpha_cumprod.float()
                a_t = alphas[t]
                x0 = (x_t - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
                x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
                previous = t
            last = ascending[-1]
            if stop < len(ascending):  # the rest of the way: forward-noise with the seed's noise
                ratio = alphas[last] / alphas[previous]
                noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed + i)).to(x_t.device)
                x_t = ratio.sqrt() * x_t + (1 - ratio).sqrt() * noise
            points.append(LatentPoint(self._as_start_noise(x_t.cpu()[0], float(alphas[last])), tokens, pooled, None,
                                      self.name, f"image {i + 1} (inverted)"))
        return points

    def _as_start_noise(self, x_vp: torch.Tensor, alpha_last: float) -> torch.Tensor:
        """A variance-preserving x_T as the point's start noise: samplers that work in σ-space (Euler,
        DPM with sigmas…) multiply the noise by init_noise_sigma ≈ 1/√ᾱ_T, variance-preserving ones by 1."""
        sigma = float(getattr(scheduler_for(self.pipe, self.look.scheduler), "init_noise_sigma", 1.0))
        return x_vp if sigma <= 1.0 + 1e-6 else x_vp / (alpha_last ** 0.5 * sigma)

    def _unet(self, x: torch.Tensor, t: int, tokens: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        unet, dtype = self.pipe.unet, self.model.placement.dtype
        kwargs = {}
        if pooled is not None:  # SDXL: pooled text and the size conditioning
            h, w = self.look.height, self.look.width
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled[None].to(self.device, dtype),
                                           "time_ids": torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=dtype)}
        return unet(x.to(self.device, dtype), t, tokens[None].to(self.device, dtype), **kwargs).sample

    # -- directions -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def directions(self, method: str, k: int = 8, origin: LatentPoint | None = None, **options) -> list[Direction]:
        if method == "prompt-pair":
            return [self.prompt_direction(options.get("positive", ""), options.get("negative", ""))]
        if method == "h-space":
            return self.h_space_directions(k, origin, samples=int(options.get("samples", 16)))
        raise ValueError(f"method must be one of {', '.join(self.direction_methods)} for a diffusion model, "
                         f"got {short(method)}")

    @torch.inference_mode()
    def h_space_directions(self, k: int, origin: LatentPoint | None, samples: int = 16, seed: int = 0) -> list[Direction]:
        """PCA of the mid-block activations at the first denoising step over `samples` seeds (with the
        origin's prompt, if any): orthonormal directions in h-space, one slider unit = their spread."""
        check_int("directions", k, 1, 16)
        check_int("samples", samples, k + 1, 256)
        tokens = origin.text if origin is not None and origin.text is not None else self.embed("")[0]
        pooled = origin.pooled if origin is not None else self.embed("")[1]
        captured: list[torch.Tensor] = []
        token = _H_CAPTURE.set(captured)  # this request's activations only (the hook reads this context)
        try:
            with self.model.adapters.using(self.model, ()):
                scheduler = scheduler_for(self.pipe, self.look.scheduler)
                scheduler.set_timesteps(self.look.steps)
                t = int(scheduler.timesteps[0])
                for start in range(0, samples, RENDER_BATCH):
                    n = min(RENDER_BATCH, samples - start)
                    noise = torch.stack([torch.randn(self.z_shape,
                                                     generator=torch.Generator().manual_seed(seed + start + i))
                                         for i in range(n)]) * scheduler.init_noise_sigma
                    x = scheduler.scale_model_input(noise, t) if hasattr(scheduler, "scale_model_input") else noise
                    for i in range(n):
                        self._unet(x[i:i + 1], t, tokens, pooled)
        finally:
            _H_CAPTURE.reset(token)
        acts = torch.cat(captured).flatten(1)
        _, vectors, std = pca(acts, min(k, acts.shape[0] - 1))
        return [Direction(f"h {i + 1}", "h", v, float(s), "h-space") for i, (v, s) in enumerate(zip(vectors, std))]

"""Regional prompts: two or more prompts, each over its own part of one picture ("a castle BREAK a dragon" in two
columns), as AUTOMATIC1111's Regional Prompter and "latent couple" do it.

How: latent couple. At every step the UNet's guided (prompted) prediction is made once for the whole prompt and
once more for each region's prompt, and each region's prediction takes the place of the whole one inside its box
(by its weight). Why not attention masks: those swap the UNet's attention processors, which every request on the
model shares (another user's picture would run through them), and they are written per model family; blending
predictions needs nothing of the model but its UNet call, so it works on SD 1.x, SDXL and the emoji model alike,
for one more UNet call per region per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.checks import check_float, short

MAX_REGIONS = 4
LAYOUTS = ("columns", "rows")


@dataclass(frozen=True)
class Region:
    """One regional prompt: `prompt` over `box` = (left, top, right, bottom) as fractions of the picture (0–1),
    with `weight` 0–1 (1: the region's prompt alone inside its box; 0: the whole prompt's)."""

    prompt: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip() or len(self.prompt) > 4000:
            raise ValueError("regions: each region needs a prompt (at most 4,000 characters)")
        if not isinstance(self.box, tuple) or len(self.box) != 4:
            raise ValueError("regions: a box is (left, top, right, bottom), each 0 to 1")
        for value in self.box:
            check_float("region box", value, 0.0, 1.0)
        left, top, right, bottom = self.box
        if left >= right or top >= bottom:
            raise ValueError(f"regions: a box's left must be before its right and its top above its bottom, got "
                             f"{self.box}")
        check_float("region weight", self.weight, 0.0, 1.0)


def regions_from_layout(prompt: str, layout: str, ratios: str, weight: float = 1.0) -> tuple[Region, ...]:
    """Regional Prompter's way: the prompt's parts between `BREAK`s, side by side in `layout` (columns or rows)
    with sizes in `ratios` ("1,1", "2,1,1"; blank: equal)."""
    if layout not in LAYOUTS:
        raise ValueError(f"regions layout must be one of {', '.join(LAYOUTS)}, got {short(layout)}")
    parts = [part.strip() for part in prompt.split("BREAK")]
    if len(parts) < 2:
        raise ValueError("regions: separate the regions' prompts with BREAK, e.g. \"a castle BREAK a dragon\"")
    if len(parts) > MAX_REGIONS:
        raise ValueError(f"regions: at most {MAX_REGIONS} regions, got {len(parts)}")
    try:
        sizes = [float(r) for r in ratios.replace(";", ",").split(",") if r.strip()] or [1.0] * len(parts)
    except ValueError:
        raise ValueError(f"regions ratios: numbers such as 1,1 or 2,1,1, got {short(ratios)}") from None
    if len(sizes) != len(parts) or min(sizes) <= 0:
        raise ValueError(f"regions ratios: one positive number per region ({len(parts)}), got {short(ratios)}")
    edges = [sum(sizes[:i]) / sum(sizes) for i in range(len(sizes) + 1)]
    boxes = [(a, 0.0, b, 1.0) if layout == "columns" else (0.0, a, 1.0, b) for a, b in zip(edges, edges[1:])]
    return tuple(Region(part, box, weight) for part, box in zip(parts, boxes))


def whole_prompt(prompt: str) -> str:
    """The prompt the whole picture reads beside the regions: every region's words ("a castle, a dragon")."""
    return ", ".join(part.strip() for part in prompt.split("BREAK") if part.strip())


def region_masks(regions: tuple[Region, ...], height: int, width: int) -> torch.Tensor:
    """[regions, 1, height, width] masks at latent size: each region's weight inside its box, 0 outside."""
    masks = torch.zeros(len(regions), 1, height, width)
    for i, region in enumerate(regions):
        left, top, right, bottom = region.box
        masks[i, :, round(top * height):round(bottom * height), round(left * width):round(right * width)] = \
            region.weight
    return masks


class RegionalUNet:
    """A request's stand-in for the shared UNet: the guided half of each call is remade for every region's
    prompt and blended in inside its box. Everything else (config, dtype, device, hooks) is the UNet's own; the
    shared UNet itself is never changed."""

    def __init__(self, unet, region_embeds: list[torch.Tensor], masks: torch.Tensor, guided: bool) -> None:
        self._unet, self._embeds, self._masks, self._guided = unet, region_embeds, masks, guided

    def __getattr__(self, name: str):
        return getattr(self._unet, name)

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *args, **kwargs):
        out = self._unet(sample, timestep, encoder_hidden_states, *args, **kwargs)
        noise = out[0] if isinstance(out, tuple) else out.sample
        n = sample.shape[0] // 2 if self._guided else sample.shape[0]
        prompted = slice(n, None) if self._guided else slice(None)  # the guided half: [unconditional, prompted]
        blended = noise[prompted]
        masks = self._masks.to(noise.device, noise.dtype)
        for embeds, mask in zip(self._embeds, masks):
            region_kwargs = {k: _half(v, n, self._guided) for k, v in kwargs.items() if k != "return_dict"}
            region = self._unet(sample[prompted], timestep, embeds.expand(n, *embeds.shape[1:]).to(noise.dtype),
                                *args, return_dict=False, **region_kwargs)[0]
            blended = blended * (1 - mask) + region * mask
        noise = torch.cat([noise[:n], blended]) if self._guided else blended
        return (noise,) if isinstance(out, tuple) else type(out)(sample=noise)


def _half(value, n: int, guided: bool):
    """A keyword argument of the UNet call for the prompted half alone (ControlNet residuals, SDXL's added
    conditions, timestep conditions: whatever is batched with the picture)."""
    if not guided:
        return value
    if isinstance(value, torch.Tensor) and value.shape[:1] == (2 * n,):
        return value[n:]
    if isinstance(value, dict):
        return {k: _half(v, n, guided) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_half(v, n, guided) for v in value)
    return value


def regional_unet(pipe, params, device) -> RegionalUNet:
    """The request's regional UNet over the view's own (the region prompts encoded once, plainly, by the model's
    own text encoder; masks at the latent size of the pass)."""
    unet = pipe.__dict__.get("unet", pipe.unet)
    unet = unet._unet if isinstance(unet, RegionalUNet) else unet
    embeds = []
    with torch.inference_mode():
        for region in params.regions:
            embeds.append(pipe.encode_prompt(region.prompt, device, 1, False)[0])
    scale = pipe.vae_scale_factor
    guided = params.guidance > 1 and getattr(unet.config, "time_cond_proj_dim", None) is None
    return RegionalUNet(unet, embeds, region_masks(params.regions, params.height // scale, params.width // scale),
                        guided)

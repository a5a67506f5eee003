"""Bigger pictures: hires fix, upscaling and outpainting.

- Hires fix (`HiresParams`): the picture is made at its base size, upscaled — in latent space ("Latent",
  "Latent (nearest)") or as pixels (Lanczos, or an upscaler model) — then refined by an img2img pass at
  the target size with its own steps and denoising strength. `ImagePipeline` runs both passes.
- Upscale (`UpscaleParams`, `upscale`): any picture, by Lanczos or an upscaler model (Real-ESRGAN,
  SwinIR… `.safetensors`, or `.pth` with `allow_pickle`) loaded through spandrel, run in tiles.
- Outpainting (`OutpaintParams`, `outpaint_canvas`, `keep_original`): the canvas grows by N pixels on
  each side, the new area (plus a blurred seam) is inpainted, and the original pixels are put back
  outside the seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.checks import check_float, check_int, short

LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (nearest)": "nearest-exact"}
PIXEL_UPSCALERS = ("Lanczos",)
UPSCALER_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")


def check_upscaler(field: str, name: str, *, latent_ok: bool) -> None:
    """`name` is a built-in upscaler or a path to an upscaler model file."""
    if name in PIXEL_UPSCALERS or (latent_ok and name in LATENT_UPSCALERS):
        return
    if isinstance(name, str) and Path(name).suffix.lower() in UPSCALER_SUFFIXES:
        return
    known = [*LATENT_UPSCALERS, *PIXEL_UPSCALERS] if latent_ok else list(PIXEL_UPSCALERS)
    raise ValueError(f"{field} must be one of {', '.join(known)} or an upscaler model file "
                     f"({', '.join(UPSCALER_SUFFIXES)}), got {short(name)}")


@dataclass(frozen=True)
class HiresParams:
    """scale: 1 … 4 (the target size is the base size × scale, rounded to a multiple of 8);
    upscaler: "Latent", "Latent (nearest)", "Lanczos" or an upscaler model file;
    steps: the second pass's steps, 0 = as many as the first; strength: its denoising strength, (0, 1]."""

    scale: float = 2.0
    upscaler: str = "Latent"
    steps: int = 0
    strength: float = 0.5

    def __post_init__(self) -> None:
        check_float("hires scale", self.scale, 1.0, 4.0, low_open=True)
        check_upscaler("hires upscaler", self.upscaler, latent_ok=True)
        check_int("hires steps", self.steps, 0, 150)
        check_float("hires strength", self.strength, 0.0, 1.0, low_open=True)

    def target(self, width: int, height: int) -> tuple[int, int]:
        return _multiple_of_8(width * self.scale), _multiple_of_8(height * self.scale)


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


@dataclass(frozen=True)
class UpscaleParams:
    """scale: 1 … 8; upscaler: "Lanczos" or an upscaler model file; tile: model tiles in pixels (64 … 1024)."""

    scale: float = 2.0
    upscaler: str = "Lanczos"
    tile: int = 256
    max_megapixels: float = 16.8  # 4096×4096

    def __post_init__(self) -> None:
        check_float("upscale scale", self.scale, 1.0, 8.0, low_open=True)
        check_upscaler("upscaler", self.upscaler, latent_ok=False)
        check_int("tile", self.tile, 64, 1024)

    def check_size(self, width: int, height: int) -> tuple[int, int]:
        """The output size, or a clear error when it passes the megapixel limit."""
        w, h = round(width * self.scale), round(height * self.scale)
        if w * h / 1e6 > self.max_megapixels + 1e-9:
            raise ValueError(f"upscale scale: {width}×{height} × {self.scale:g} would be {w}×{h} "
                             f"({w * h / 1e6:.1f} megapixels); the limit is {self.max_megapixels:g}. "
                             "Choose a smaller scale.")
        return w, h


# -- pixels -----------------------------------------------------------------------------------------------

def upscale_latents(latents: torch.Tensor, size: tuple[int, int], upscaler: str) -> torch.Tensor:
    """Latents [B, C, h, w] resized to `size` (latent pixels), as A1111's latent upscalers do."""
    mode = LATENT_UPSCALERS[upscaler]
    extra = {"antialias": False, "align_corners": False} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(latents.float(), size=size, mode=mode, **extra).to(latents.dtype)


def load_upscaler(path: Path, *, device: torch.device, allow_pickle: bool = False):
    """An upscaler model through spandrel: `.safetensors` always; pickles (`.pth`/`.pt`/`.ckpt`) only with
    `allow_pickle` (they can run code when opened)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"upscaler: no model file at {short(str(path))}")
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise ValueError(f"upscaler: {path.name} is a pickle file, which can run code when opened; convert it to "
                         ".safetensors, or start the studio with --allow-pickle if you trust where it came from")
    try:
        import spandrel
    except (ImportError, RuntimeError, OSError) as exc:  # not installed, or a torchvision not matching torch
        raise ValueError("upscaler models need the spandrel package and a torchvision that matches your torch: "
                         "pip install 'genai-studio[upscale]' (Lanczos works without it)") from exc
    try:
        loader = spandrel.ModelLoader(device=device)
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            descriptor = loader.load_from_state_dict(load_file(str(path), device="cpu"))
        else:
            descriptor = loader.load_from_file(str(path))
    except Exception as exc:  # spandrel raises its own errors for unknown architectures
        raise ValueError(f"upscaler: {path.name} is not an upscaler model spandrel knows ({exc})") from exc
    if not hasattr(descriptor, "scale") or getattr(descriptor, "purpose", "SR") not in ("SR", "Restoration"):
        raise ValueError(f"upscaler: {path.name} is not a super-resolution model")
    return descriptor.to(device).eval()


def run_tiled(model, image: np.ndarray, scale: int, tile: int, overlap: int = 16) -> np.ndarray:
    """Run an image-to-image model on float [H, W, 3] in overlapping tiles; returns [H·s, W·s, 3]."""
    h, w, _ = image.shape
    out = np.zeros((h * scale, w * scale, 3), np.float32)
    device = next(iter(model.model.parameters())).device if hasattr(model, "model") else torch.device("cpu")
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            t0, l0 = max(0, top - overlap), max(0, left - overlap)
            t1, l1 = min(h, top + tile + overlap), min(w, left + tile + overlap)
            patch = torch.from_numpy(image[t0:t1, l0:l1]).permute(2, 0, 1)[None].to(device)
            with torch.inference_mode():
                result = model(patch.float()).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            bottom, right = min(h, top + tile), min(w, left + tile)
            out[top * scale:bottom * scale, left * scale:right * scale] = result[
                (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale]
    return out


def upscale(image, params: UpscaleParams, *, device: torch.device | None = None, allow_pickle: bool = False,
            models: dict | None = None):
    """A PIL picture upscaled by `params.scale` (a model upscales by its own factor, then Lanczos makes
    the exact size). `models` caches loaded upscalers by path."""
    from PIL import Image

    size = params.check_size(*image.size)
    if params.upscaler in PIXEL_UPSCALERS:
        return image.convert("RGB").resize(size, Image.LANCZOS)
    models = models if models is not None else {}
    device = device or torch.device("cpu")
    key = str(Path(params.upscaler).resolve())
    if key not in models:
        models[key] = load_upscaler(Path(params.upscaler), device=device, allow_pickle=allow_pickle)
    model = models[key]
    array = np.asarray(image.convert("RGB"), np.float32) / 255.0
    result = run_tiled(model, array, int(model.scale), params.tile)
    picture = Image.fromarray((result * 255).round().clip(0, 255).astype(np.uint8))
    return picture if picture.size == size else picture.resize(size, Image.LANCZOS)


# -- outpainting ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutpaintParams:
    """Pixels to add on each side (0 … 1024, multiples of 8, at least one side above 0) and the seam: how
    far the repainted area reaches into the picture, blurred (0 … 64 pixels)."""

    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0
    seam: int = 16

    def __post_init__(self) -> None:
        for side in ("left", "right", "up", "down"):
            value = getattr(self, side)
            check_int(f"outpaint {side}", value, 0, 1024)
            if value % 8:
                raise ValueError(f"outpaint {side} must be a multiple of 8 (from 0 to 1024), got {value}")
        if not any((self.left, self.right, self.up, self.down)):
            raise ValueError("outpaint: add pixels on at least one side (left, right, up or down: 8 to 1024)")
        check_int("outpaint seam", self.seam, 0, 64)

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width + self.left + self.right, height + self.up + self.down


def outpaint_mask(width: int, height: int, params: OutpaintParams) -> np.ndarray:
    """float [H', W'] in 0…1: 1 over the new area, ramping down to 0 across the seam inside the picture on
    each extended side, 0 deeper inside (kept as it is)."""
    mask = np.ones((height + params.up + params.down, width + params.left + params.right), np.float32)
    inside = np.full((height, width), np.inf, np.float32)
    ys, xs = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]
    for extended, distance in ((params.left, xs), (params.right, width - 1 - xs), (params.up, ys),
                               (params.down, height - 1 - ys)):
        if extended:
            inside = np.minimum(inside, np.broadcast_to(distance, inside.shape))
    ramp = np.clip(1.0 - (inside + 1) / (params.seam + 1), 0.0, 1.0) if params.seam else np.zeros_like(inside)
    mask[params.up:params.up + height, params.left:params.left + width] = ramp
    return mask


def outpaint_canvas(image, params: OutpaintParams):
    """(canvas, mask): the picture on a bigger canvas whose new area is filled with its stretched, blurred
    edges (a start the model can blend with), and the mask (white = repaint) over the new area and the seam."""
    from PIL import Image, ImageFilter

    image = image.convert("RGB")
    w, h = image.size
    width, height = params.size(w, h)
    array = np.asarray(image)
    rows = np.clip(np.arange(height) - params.up, 0, h - 1)
    cols = np.clip(np.arange(width) - params.left, 0, w - 1)
    canvas = Image.fromarray(array[rows][:, cols]).filter(ImageFilter.GaussianBlur(8))
    canvas.paste(image, (params.left, params.up))
    mask = Image.fromarray((outpaint_mask(w, h, params) * 255).round().astype(np.uint8), "L")
    return canvas, mask


def keep_original(result, original, params: OutpaintParams):
    """The outpainted picture with the original pixels put back wherever the mask did not reach: the seam
    blends, everything inside it is the original, pixel for pixel."""
    from PIL import Image

    original = original.convert("RGB")
    mask = outpaint_mask(*original.size, params)[..., None]
    size = (mask.shape[1], mask.shape[0])
    made = np.asarray(result.convert("RGB").resize(size, Image.LANCZOS) if result.size != size
                      else result.convert("RGB"), np.float32)
    base = np.zeros_like(made)
    base[params.up:params.up + original.size[1], params.left:params.left + original.size[0]] = np.asarray(original)
    return Image.fromarray((made * mask + base * (1 - mask)).round().clip(0, 255).astype(np.uint8))

"""VAE workbench: encode/decode, reconstruct, sample, morph, latent maps, sliders, and training.

Two kinds of model share one interface (`VAEModel`):
- our small convolutional VAE with a vector latent (`ConvVAE`: the shipped digit VAEs with 2-D and
  16-D latents, and the models users train in the tab), stored as safetensors + config.json;
- diffusers `AutoencoderKL` / `AutoencoderTiny` with spatial latents (the emoji model's VAE, Stable
  Diffusion's VAE from a hub id or folder).

The loss is the textbook one (Kingma & Welling): reconstruction (binary cross-entropy, summed over
pixels) plus the KL divergence of the approximate posterior from the N(0, I) prior.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.checks import short
from pipelines.device import Placement
from pipelines.latent import EASES, METHODS, Direction, LatentModel, LatentPoint, interpolate, pca
from pipelines.registry import ModelNotAvailable, ResolvedModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass(frozen=True)
class ConvVAEConfig:
    """size: 28 … 64 px, a multiple of 4; channels: 1 (grey) or 3 (RGB); latent_dim: 2 … 256; width: base filters."""

    size: int = 28
    channels: int = 1
    latent_dim: int = 2
    width: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 28 <= self.size <= 64 or self.size % 4:
            raise ValueError(f"size must be a multiple of 4 from 28 to 64, got {short(self.size)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {short(self.channels)}")
        if not isinstance(self.latent_dim, int) or not 2 <= self.latent_dim <= 256:
            raise ValueError(f"latent_dim must be a whole number from 2 to 256, got {short(self.latent_dim)}")
        if not isinstance(self.width, int) or not 8 <= self.width <= 256:
            raise ValueError(f"width must be a whole number from 8 to 256, got {short(self.width)}")


class ConvVAE(nn.Module):
    """x [N, C, S, S] in [0, 1] → (mu, logvar) [N, D] → x̂ [N, C, S, S] in [0, 1]."""

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__()
        self.config = config
        w, c, s4 = config.width, config.channels, config.size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(c, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * w * s4 * s4, 8 * w), nn.LeakyReLU(0.2),
        )
        self.to_mu = nn.Linear(8 * w, config.latent_dim)
        self.to_logvar = nn.Linear(8 * w, config.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, 8 * w), nn.ReLU(),
            nn.Linear(8 * w, 2 * w * s4 * s4), nn.ReLU(),
            nn.Unflatten(1, (2 * w, s4, s4)),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, c, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h).clamp(-20, 10)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


def vae_loss(model: ConvVAE, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per image: BCE summed over pixels + KL(q(z|x) || N(0, I)); also returns both parts."""
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise
    recon = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return recon + kl, recon, kl


@dataclass
class VAEModel:
    """A loaded VAE behind one interface: images (uint8 [N, H, W, 3]) ↔ latents [N, …]."""

    name: str
    net: nn.Module
    placement: Placement
    kind: str  # "vector" (ConvVAE) or "spatial" (diffusers)
    size: int
    channels: int = 3

    @property
    def latent_dim(self) -> int:
        if self.kind == "vector":
            return self.net.config.latent_dim
        c, h, w = self.spatial_shape
        return c * h * w

    def _to_input(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if self.kind == "vector" and self.channels == 1:
            x = x.mean(1, keepdim=True)
        if self.kind == "spatial":
            x = x * 2 - 1
        return x.to(self.placement.device, self.placement.dtype if self.kind == "spatial" else torch.float32)

    def _to_images(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().float()
        if self.kind == "spatial":
            x = (x.clamp(-1, 1) + 1) / 2
        x = x.clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, size, size, 3] → latent means (vector [N, D] or spatial [N, C, h, w])."""
        x = self._to_input(images)
        if self.kind == "vector":
            return self.net.encode(x)[0].float().cpu()
        encoded = self.net.encode(x)
        latent = encoded.latent_dist.mean if hasattr(encoded, "latent_dist") else encoded.latents
        return latent.float().cpu()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, batch: int = 64) -> np.ndarray:
        out = []
        for start in range(0, latents.shape[0], batch):
            z = latents[start:start + batch]
            if self.kind == "vector":
                out.append(self._to_images(self.net.decode(z.to(self.placement.device, torch.float32))))
            else:
                out.append(self._to_images(self.net.decode(z.to(self.placement.device, self.placement.dtype)).sample))
        return np.concatenate(out)

    def prior(self, n: int, seed: int) -> torch.Tensor:
        shape = (self.latent_dim,) if self.kind == "vector" else self.spatial_shape
        return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(channels, h, w) of the latent of one size×size image. AutoencoderKL halves the size once per
        block after the first; AutoencoderTiny always downsamples 8×."""
        blocks = getattr(self.net.config, "block_out_channels", None)
        factor = 2 ** (len(blocks) - 1) if blocks else 8
        return (self.net.config.latent_channels, self.size // factor, self.size // factor)


def save_conv_vae(model: ConvVAE, folder: Path, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "vae.safetensors")
    (folder / "config.json").write_text(json.dumps({"arch": "conv-vae", **asdict(model.config), **(extra or {})},
                                                   indent=2))
    return folder


def halve_weights(folder: Path) -> None:
    """Store a ConvVAE's weights as float16 (half the bytes, for the models shipped in assets/); they load
    into the float32 model as before."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "vae.safetensors"
    save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in load_file(path).items()},
              path)


def _save_replacing(model: ConvVAE, out_dir: Path, extra: dict) -> None:
    """Write the model next to `out_dir`, then swap it in: the old folder is renamed aside first and
    removed only after the new one is in place, so a crash at any moment leaves a loadable model."""
    import shutil

    tmp = out_dir.with_name(out_dir.name + ".partial")
    old = out_dir.with_name(out_dir.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_conv_vae(model, tmp, extra)
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        out_dir.replace(old)
    tmp.replace(out_dir)
    if old.exists():
        shutil.rmtree(old)


def trained_vae_folders(models_dir: Path) -> list[Path]:
    """Folders of VAEs trained in the studio; a save cut short between its two renames is completed."""
    models_dir = Path(models_dir)
    for old in models_dir.glob("*.old"):
        target = old.with_name(old.name.removesuffix(".old"))
        if not target.exists():
            old.replace(target)  # the new folder never arrived: the previous model comes back
    return sorted(c.parent for c in models_dir.glob("*/config.json") if not c.parent.name.endswith((".old", ".partial")))


def load_vae(resolved: ResolvedModel, placement: Placement, *, offline: bool = False) -> VAEModel:
    """Our ConvVAE folder (config.json with arch conv-vae) or a diffusers AutoencoderKL/Tiny."""
    location = resolved.path
    name = resolved.spec.name
    if isinstance(location, Path) and (location / "config.json").is_file():
        config = json.loads((location / "config.json").read_text())
        if config.get("arch") == "conv-vae":
            from safetensors.torch import load_file

            fields = {k: config[k] for k in ("size", "channels", "latent_dim", "width")}
            net = ConvVAE(ConvVAEConfig(**fields))
            try:
                net.load_state_dict(load_file(location / "vae.safetensors"))
            except (RuntimeError, OSError) as exc:
                raise ModelNotAvailable(f"{name}: the weights do not match its config.json ({exc})") from exc
            return VAEModel(name, net.to(placement.device).eval(), placement, "vector", fields["size"],
                            fields["channels"])
        class_name = config.get("_class_name", "AutoencoderKL")
    else:
        class_name = "AutoencoderKL"
    import diffusers

    if class_name not in ("AutoencoderKL", "AutoencoderTiny"):
        raise ModelNotAvailable(f"{name} is a {class_name}; the VAE tab loads AutoencoderKL or AutoencoderTiny")
    try:
        net = getattr(diffusers, class_name).from_pretrained(location, local_files_only=offline or isinstance(location, Path))
    except Exception as exc:  # corrupt or missing files raise many kinds
        raise ModelNotAvailable(f"could not load VAE {name!r}: {exc}") from exc
    placement = vae_placement(placement, getattr(net.config, "force_upcast", False))
    size = int(getattr(net.config, "sample_size", 512) or 512)
    if placement.device.type != "cpu":  # large maps and morphs decode image by image, big images in tiles
        if hasattr(net, "enable_slicing"):
            net.enable_slicing()
        if size > 512 and hasattr(net, "enable_tiling"):
            net.enable_tiling()
    return VAEModel(name, net.to(placement.device, placement.dtype).eval(), placement, "spatial", size)


def vae_placement(placement: Placement, force_upcast: bool) -> Placement:
    """A VAE whose config says `force_upcast` (SDXL's) runs in float32 even where models are float16:
    it overflows in half precision (black or NaN pictures)."""
    if force_upcast and placement.dtype == torch.float16:
        return Placement(placement.device, torch.float32)
    return placement


# -- images in ------------------------------------------------------------------------------------

def prepare_images(images: list, size: int) -> tuple[np.ndarray, list[str]]:
    """PIL images of any size/mode → uint8 [N, size, size, 3] (centre-cropped square), with notes
    saying what was converted (grey, RGBA, CMYK → RGB; other sizes → size×size)."""
    notes = []
    for i, image in enumerate(images):
        if image.mode != "RGB":
            notes.append(f"image {i + 1}: converted from {image.mode} to RGB")
        if image.size != (size, size):
            notes.append(f"image {i + 1}: cropped and resized from {image.width}×{image.height} to {size}×{size}")
    return np.stack([np.asarray(_square(im, size)) for im in images]), notes


def _square(image, size: int):
    from PIL import Image

    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "P"):
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            canvas.alpha_composite(image.convert("RGBA"))
            image = canvas
        image = image.convert("RGB")
    if image.size != (size, size):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return image


@dataclass(frozen=True)
class DatasetLimits:
    min_images: int = 8
    max_images: int = 20_000
    max_total_bytes: int = 500 * 2**20  # compressed files in a folder or zip
    max_unzipped_bytes: int = 1 * 2**30  # zip bombs stop here
    max_image_pixels: int = 16_000_000


def load_image_folder(source: Path, size: int, limits: DatasetLimits = DatasetLimits()) -> tuple[np.ndarray, list[str]]:
    """Images from a folder or a .zip for training: checked for count, size and zip bombs."""
    from PIL import Image, UnidentifiedImageError

    source = Path(source)
    notes: list[str] = []
    blobs: list[tuple[str, bytes]] = []
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            unzipped = sum(m.file_size for m in members)
            if unzipped > limits.max_unzipped_bytes:
                raise ValueError(f"the zip would unpack to {unzipped / 2**20:,.0f} MB; the limit is "
                                 f"{limits.max_unzipped_bytes / 2**20:,.0f} MB (zip bomb guard)")
            for m in members:
                if m.file_size and m.compress_size and m.file_size / m.compress_size > 1000:
                    raise ValueError(f"{m.filename} is compressed {m.file_size // m.compress_size}:1, which only "
                                     "zip bombs do; refusing the zip")
                if Path(m.filename).suffix.lower() in IMAGE_SUFFIXES:
                    blobs.append((m.filename, archive.read(m)))
                else:
                    notes.append(f"skipped {m.filename} (not an image)")
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in files)
        if total > limits.max_total_bytes:
            raise ValueError(f"the folder holds {total / 2**20:,.0f} MB; the limit is "
                             f"{limits.max_total_bytes / 2**20:,.0f} MB. Use a smaller folder.")
        for p in files:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                blobs.append((p.name, p.read_bytes()))
            else:
                notes.append(f"skipped {p.name} (not an image)")
    else:
        raise ValueError(f"{source} is neither a folder nor a .zip of images")
    images = []
    for name, data in blobs[: limits.max_images]:
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > limits.max_image_pixels:
                    notes.append(f"skipped {name} (too large)")
                    continue
                images.append(_square(im.copy(), size))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            notes.append(f"skipped {name} (not a readable image)")
    if len(images) < limits.min_images:
        raise ValueError(f"found {len(images)} usable images; training needs at least {limits.min_images}")
    return np.stack([np.asarray(im) for im in images]), notes


# -- params and the pipeline ------------------------------------------------------------------------

@dataclass(frozen=True)
class MorphParams:
    """frames: 2 … 240; method: lerp | slerp; ease: see EASES; fps: 1 … 60."""

    frames: int = 24
    method: str = "slerp"
    ease: str = "ease-in-out"
    fps: int = 12

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or not 2 <= self.frames <= 240:
            raise ValueError(f"frames must be a whole number from 2 to 240, got {short(self.frames)}")
        if self.method not in METHODS:
            raise ValueError(f"method must be 'lerp' or 'slerp', got {short(self.method)}")
        if self.ease not in EASES:
            raise ValueError(f"ease must be one of {', '.join(EASES)}, got {short(self.ease)}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be a whole number from 1 to 60, got {short(self.fps)}")


@dataclass(frozen=True)
class MapParams:
    """A decoded grid over two axes: `grid` 2 … 24 cells a side, `extent` 0.1 … 5 prior std each way;
    axes are latent dimensions (vector latents) or PCA directions (spatial or many-dimensional)."""

    grid: int = 12
    extent: float = 2.5
    axis_x: int = 0
    axis_y: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or not 2 <= self.grid <= 24:
            raise ValueError(f"grid must be a whole number from 2 to 24, got {short(self.grid)}")
        if not isinstance(self.extent, (int, float)) or not math.isfinite(self.extent) or not 0.1 <= self.extent <= 5:
            raise ValueError(f"extent must be a number from 0.1 to 5, got {short(self.extent)}")
        if self.axis_x == self.axis_y:
            raise ValueError("axis_x and axis_y must differ")


class VAEPipeline:
    def __init__(self, model: VAEModel) -> None:
        self.model = model

    def reconstruct(self, images: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Encode → decode, with PSNR (dB) per image."""
        recon = self.model.decode(self.model.encode(images))
        return recon, [psnr(a, b) for a, b in zip(images, recon)]

    def morph(self, images: np.ndarray, params: MorphParams) -> tuple[np.ndarray, np.ndarray]:
        """Frames through the latents of `images` (in order) and the plain pixel crossfade beside them."""
        if len(images) < 2:
            raise ValueError("images: give at least two images to morph between")
        latents = self.model.encode(images)
        return self.morph_latents(latents, params, images)

    def morph_latents(self, latents: torch.Tensor, params: MorphParams,
                      images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames through `latents` and the pixel crossfade between `images` (default: the latents'
        own decoded pictures, so both rows start and end on the same pictures)."""
        flat = latents.flatten(1)
        path = interpolate(flat, params.frames, params.method, params.ease)
        frames = self.model.decode(path.view(params.frames, *latents.shape[1:]))
        images = self.model.decode(latents) if images is None else images
        pixels = torch.from_numpy(images.astype(np.float32)).flatten(1)
        fade = interpolate(pixels, params.frames, "lerp", params.ease)
        crossfade = fade.view(params.frames, *images.shape[1:]).round().clamp(0, 255).numpy().astype(np.uint8)
        return frames, crossfade

    def axes(self, reference: np.ndarray | None, k: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(origin, unit directions [k, D], spread [k]): every latent dimension for vector latents of up
        to 16 dimensions, otherwise the top-k PCA directions of the reference images' latents (or of prior
        samples)."""
        dim = self.model.latent_dim
        if self.model.kind == "vector" and dim <= 16:
            return torch.zeros(dim), torch.eye(dim), torch.ones(dim)
        if reference is not None and len(reference) >= 3:
            flat = self.model.encode(reference).flatten(1)
        else:
            flat = self.model.prior(256, seed).flatten(1)
        k = min(k, flat.shape[0] - 1, flat.shape[1])
        mean, components, std = pca(flat, k)
        return mean, components, std

    def map_points(self, params: MapParams, axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The latents of a map's cells [grid*grid, …]: row-major, y from top (+extent) to bottom (−extent)."""
        origin, directions, std = axes
        for name, axis in (("axis_x", params.axis_x), ("axis_y", params.axis_y)):
            if not 0 <= axis < directions.shape[0]:
                raise ValueError(f"{name} must be from 0 to {directions.shape[0] - 1}, got {axis}")
        ticks = torch.linspace(-params.extent, params.extent, params.grid)
        points = [origin + x * std[params.axis_x] * directions[params.axis_x] + y * std[params.axis_y] * directions[params.axis_y]
                  for y in ticks.flip(0) for x in ticks]
        shape = (self.model.latent_dim,) if self.model.kind == "vector" else self.model.spatial_shape
        return torch.stack(points).view(-1, *shape)

    def latent_map(self, params: MapParams, reference: np.ndarray | None = None,
                   axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
        """uint8 [grid*grid, S, S, 3] over `axes` (default: `self.axes(reference)`); see `map_points`."""
        return self.model.decode(self.map_points(params, axes or self.axes(reference)))

    def slide(self, latent: torch.Tensor, directions: torch.Tensor, std: torch.Tensor, amounts: list[float]) -> np.ndarray:
        """Decode `latent` moved by amount_i × std_i along direction i (amounts −4 … 4)."""
        for a in amounts:
            if not isinstance(a, (int, float)) or not math.isfinite(a) or not -4 <= a <= 4:
                raise ValueError(f"slider values must be from -4 to 4, got {short(a)}")
        flat = latent.flatten() + (torch.tensor(amounts, dtype=torch.float32) * std[: len(amounts)]) @ directions[: len(amounts)]
        return self.model.decode(flat.view(1, *latent.shape))[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


# -- training ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VAETrainParams:
    """size: 28 … 64 (multiple of 4); latent_dim: 2 … 256; epochs: 1 … 500; batch: 8 … 512; lr: (0, 0.1]."""

    size: int = 28
    channels: int = 1
    latent_dim: int = 16
    epochs: int = 10
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        ConvVAEConfig(size=self.size, channels=self.channels, latent_dim=self.latent_dim)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 1 <= self.epochs <= 500:
            raise ValueError(f"epochs must be a whole number from 1 to 500, got {short(self.epochs)}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or not 8 <= self.batch <= 512:
            raise ValueError(f"batch must be a whole number from 8 to 512, got {short(self.batch)}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or not 0 < self.lr <= 0.1:
            raise ValueError(f"lr must be a number in (0, 0.1], got {short(self.lr)}")


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    loss: float
    recon: float
    kl: float
    seconds: float
    images_per_second: float
    samples: np.ndarray  # reconstructions of fixed images, uint8


def train_conv_vae(
    params: VAETrainParams,
    images: np.ndarray,
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[EpochReport], None] | None = None,
    cancel: threading.Event | None = None,
    extra_config: dict | None = None,
) -> list[EpochReport]:
    """Train a ConvVAE on uint8 images [N, S, S, 3]; after every epoch the model is saved to `out_dir`
    (atomically), so Cancel keeps the last good epoch."""
    config = ConvVAEConfig(size=params.size, channels=params.channels, latent_dim=params.latent_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = ConvVAE(config).to(device)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if params.channels == 1:
        x = x.mean(1, keepdim=True)
    fixed = x[:8].to(device)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    gen = torch.Generator().manual_seed(params.seed + 1)
    reports = []
    for epoch in range(1, params.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        totals = torch.zeros(3)
        for start in range(0, len(x), params.batch):
            if cancel is not None and cancel.is_set():
                return reports
            batch = x[order[start:start + params.batch]].to(device)
            noise = torch.randn((len(batch), config.latent_dim), generator=gen).to(device)
            loss, recon, kl = vae_loss(model, batch, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            totals += torch.tensor([loss.item(), recon.item(), kl.item()]) * len(batch)
        model.eval()
        seconds = time.perf_counter() - started
        with torch.inference_mode():
            recon_fixed = model.decode(model.encode(fixed)[0])
        samples = (recon_fixed.expand(-1, 3, -1, -1) if params.channels == 1 else recon_fixed)
        samples = (samples.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        _save_replacing(model, Path(out_dir), {**(extra_config or {}), "epochs_trained": epoch})
        mean = totals / len(x)
        report = EpochReport(epoch, params.epochs, float(mean[0]), float(mean[1]), float(mean[2]), seconds,
                             len(x) / seconds, samples)
        reports.append(report)
        if on_epoch:
            on_epoch(report)
    return reports


# -- the explorer contract ----------------------------------------------------------------------------

class VAELatentModel(LatentModel):
    """A VAE behind the one latent contract: a point is its latent (a vector, or a spatial latent for
    diffusers VAEs); images encode to points."""

    kind = "vae"
    can_encode = True

    def __init__(self, pipe: VAEPipeline) -> None:
        self.pipe = pipe
        self.name = pipe.model.name

    @property
    def direction_methods(self) -> tuple[str, ...]:
        small = self.pipe.model.kind == "vector" and self.pipe.model.latent_dim <= 16
        return ("dimensions", "pca") if small else ("pca",)

    @property
    def z_shape(self) -> tuple[int, ...]:
        m = self.pipe.model
        return (m.latent_dim,) if m.kind == "vector" else m.spatial_shape

    def point_for_seed(self, seed: int, **_) -> LatentPoint:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be a whole number from 0 to 4,294,967,295, got {short(seed)}")
        return LatentPoint(self.pipe.model.prior(1, seed)[0], model=self.name, label=f"seed {seed}")

    def render(self, points: list[LatentPoint], *, preview: bool = False) -> np.ndarray:
        return self.pipe.model.decode(torch.stack([self.check(p).z for p in points]))

    def encode(self, images: np.ndarray, **options) -> list[LatentPoint]:
        latents = self.pipe.model.encode(images)
        return [LatentPoint(z, model=self.name, label=f"image {i + 1}") for i, z in enumerate(latents)]

    def directions(self, method: str, k: int = 8, origin: LatentPoint | None = None, **options) -> list[Direction]:
        """"dimensions": every latent dimension (vector latents of up to 16); "pca": the top-k PCA
        directions of `reference` images' latents (options), else of prior samples."""
        if method not in self.direction_methods:
            raise ValueError(f"method must be one of {', '.join(self.direction_methods)} for {self.name}, got {short(method)}")
        if method == "dimensions":
            _, vectors, std = self.pipe.axes(None)
            return [Direction(f"dimension {i + 1}", "z", v, float(s), "dimensions") for i, (v, s) in
                    enumerate(zip(vectors[:k], std[:k]))]
        reference = options.get("reference")
        flat = (self.pipe.model.encode(reference) if reference is not None and len(reference) >= 3
                else self.pipe.model.prior(256, 0)).flatten(1)
        k = min(k, flat.shape[0] - 1, flat.shape[1])
        _, vectors, std = pca(flat, k)
        return [Direction(f"PCA {i + 1}", "z", v, float(s), "pca") for i, (v, s) in enumerate(zip(vectors, std))]

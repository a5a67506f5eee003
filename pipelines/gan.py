"""GAN explorer: DCGAN generators, seeded sampling, truncation, variations, keyframe walks,
GANSpace-style latent directions and breeding.

    model = load_gan(resolved, placement)
    pipe = GANPipeline(model)
    grid = pipe(GANParams(seed=0, grid=4, truncation=0.7))          # 16 faces, one seed each
    walk = pipe.interpolate(InterpolationParams(keyframes=(1, 2, 3), frames=48))

A latent is a plain float tensor [z_dim]. Each seed maps to one latent through its own
`torch.Generator`, so "seed 123" is the same face in a grid, a walk or the CLI.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipelines.checks import check_float, check_int, short
from pipelines.device import Placement
from pipelines.latent import (
    EASES,
    METHODS,
    Direction,
    LatentModel,
    LatentPoint,
    interpolate,
    orthonormalize,
    pca,
    sefa,
)
from pipelines.media import to_uint8
from pipelines.registry import ModelNotAvailable, ResolvedModel

RESOLUTIONS = (32, 64, 128)


@dataclass(frozen=True)
class GANConfig:
    """The architecture of a generator, as stored in a JSON file next to its weights.

    arch: "dcgan" (transposed convolutions, batch norm, ReLU, tanh — Radford et al. 2015).
    resolution: 32, 64 or 128 output pixels.
    z_dim: latent size; channels: output channels (3 = RGB); ngf: feature width of the last block.
    """

    arch: str = "dcgan"
    resolution: int = 64
    z_dim: int = 100
    channels: int = 3
    ngf: int = 64

    def __post_init__(self) -> None:
        if self.arch != "dcgan":
            raise ValueError(f"arch must be 'dcgan', got {short(self.arch)}")
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {short(self.resolution)}")
        for name, high in (("z_dim", 4096), ("ngf", 1024)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= high:
                raise ValueError(f"{name} must be a whole number from 1 to {high}, got {short(value)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {short(self.channels)}")

    @classmethod
    def from_json(cls, path: Path) -> GANConfig:
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


class DCGANGenerator(nn.Module):
    """z [N, z_dim] → image [N, channels, R, R] in [-1, 1]. Layer names match the PyTorch DCGAN
    tutorial (`main.0`, `main.1`, …), so its checkpoints load directly."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        doublings = int(math.log2(config.resolution // 4))
        widths = [config.ngf * 2 ** i for i in reversed(range(doublings))]  # 64 px: 8, 4, 2, 1 × ngf
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.z_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], config.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def early_features(self, z: torch.Tensor) -> torch.Tensor:
        """Activations after the first block (4×4), where GANSpace finds its directions."""
        return self.main[:3](z[:, :, None, None]).flatten(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None])


@dataclass
class GANModel:
    generator: DCGANGenerator
    config: GANConfig
    name: str
    placement: Placement

    @property
    def z_dim(self) -> int:
        return self.config.z_dim


def _load_state(path: Path, allow_pickle: bool = False) -> dict:
    """Tensors from .safetensors, or from a PyTorch file through `torch.load(weights_only=True)` (which
    refuses anything but tensors). Full pickles (.ckpt/.pkl) can run code: only with `allow_pickle`."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if path.suffix not in (".ckpt", ".pkl", ".pickle"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif allow_pickle:  # the owner's --allow-pickle: a full pickle from a source they trust
        state = torch.load(path, map_location="cpu", weights_only=False)
    else:
        raise ModelNotAvailable(f"{path.name}: pickle files can run code when loaded; convert it to .safetensors, "
                                "or start the studio with --allow-pickle if you trust its source")
    if isinstance(state, dict) and "netG_state_dict" in state:
        state = state["netG_state_dict"]
    if not isinstance(state, dict):
        raise ModelNotAvailable(f"{path.name} does not hold a generator state dict")
    return state


def _find_weights(location: Path, file: str) -> tuple[Path, Path | None]:
    if location.is_file():
        config = location.with_suffix(".json")
        return location, config if config.is_file() else None
    if file:
        return location / file, None
    weights = sorted(location.glob("*.safetensors"))
    if not weights:
        raise ModelNotAvailable(f"{location} has no .safetensors generator weights")
    config = location / "config.json"
    return weights[0], config if config.is_file() else weights[0].with_suffix(".json")


def load_gan(resolved: ResolvedModel, placement: Placement, config: GANConfig | None = None, *,
             allow_pickle: bool = False) -> GANModel:
    """Load a DCGAN generator: the embedded package weights, or a user's .safetensors + JSON config."""
    if not isinstance(resolved.path, Path):
        raise ModelNotAvailable("GAN models load from local files: give a .safetensors file (with a .json config)")
    weights, config_path = _find_weights(resolved.path, resolved.file)
    if config is None:
        if config_path is not None and config_path.is_file():
            config = GANConfig.from_json(config_path)
        elif resolved.spec.source == "package":
            config = GANConfig()  # the embedded DCGAN: 64 px, z 100, ngf 64
        else:
            raise ModelNotAvailable(
                f"{weights.name} needs a config: put a JSON file next to it ({weights.with_suffix('.json').name}) like "
                '{"arch": "dcgan", "resolution": 64, "z_dim": 100, "channels": 3, "ngf": 64}'
            )
    generator = DCGANGenerator(config)
    state = _load_state(weights, allow_pickle)
    expected = generator.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ModelNotAvailable(f"the weights do not match the config: {key} is missing from {weights.name} "
                                    "(check resolution)")
        if state[key].shape != tensor.shape:
            raise ModelNotAvailable(
                f"the weights do not match the config: {key} has shape {tuple(state[key].shape)} in "
                f"{weights.name} but the config ({asdict(config)}) needs {tuple(tensor.shape)}; check z_dim, ngf, "
                "channels and resolution"
            )
    generator.load_state_dict({k: state[k] for k in expected})
    generator.to(placement.device, placement.dtype).eval()
    return GANModel(generator, config, resolved.spec.name, placement)


@dataclass(frozen=True)
class GANLimits:
    max_grid: int = 8
    max_frames: int = 240
    max_children: int = 16


@dataclass(frozen=True)
class GANParams:
    """A seed grid: `grid`×`grid` samples for seeds seed, seed+1, …

    seed: 0 … 2**32-1 − grid²; grid: 1 … the server's max (default 8); truncation ψ: 0 … 1.5
    (0 = the mean face, 1 = plain samples, below 1 = more typical, above 1 = more unusual).
    """

    seed: int = 0
    grid: int = 4
    truncation: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, limits: GANLimits | None = None) -> None:
        limits = limits or GANLimits(max_grid=32)
        check_int("grid", self.grid, 1, limits.max_grid)
        check_int("seed", self.seed, 0, 2**32 - 1 - self.grid ** 2)
        check_float("truncation", self.truncation, 0.0, 1.5)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.grid ** 2))


@dataclass(frozen=True)
class InterpolationParams:
    """A walk through keyframes (seeds), rendered as frames.

    keyframes: 2 … 16 seeds, visited in order; frames: 2 … the server's max (default 240);
    method: "lerp" or "slerp"; ease: see EASES; loop: return to the first keyframe;
    truncation: ψ applied to every keyframe; fps: 1 … 60 (for GIF/MP4).
    """

    keyframes: tuple[int, ...] = (0, 1)
    frames: int = 32
    method: str = "slerp"
    ease: str = "ease-in-out"
    loop: bool = False
    truncation: float = 1.0
    fps: int = 12

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, limits: GANLimits | None = None) -> None:
        limits = limits or GANLimits(max_frames=10_000)
        if not 2 <= len(self.keyframes) <= 16:
            raise ValueError(f"keyframes: give 2 to 16 seeds, got {len(self.keyframes)}")
        for seed in self.keyframes:
            check_int("keyframe seed", seed, 0, 2**32 - 1)
        check_int("frames", self.frames, 2, limits.max_frames)
        if self.method not in METHODS:
            raise ValueError(f"method must be 'lerp' or 'slerp', got {short(self.method)}")
        if self.ease not in EASES:
            raise ValueError(f"ease must be one of {', '.join(EASES)}, got {short(self.ease)}")
        check_float("truncation", self.truncation, 0.0, 1.5)
        check_int("fps", self.fps, 1, 60)


@dataclass
class GANOutput:
    images: np.ndarray  # uint8 [N, H, W, 3]
    latents: torch.Tensor  # [N, z_dim], after truncation
    seeds: list[int | None]


@dataclass
class Directions:
    """Named unit directions in latent space [k, z_dim] and the spread of samples along each."""

    vectors: torch.Tensor
    std: torch.Tensor
    names: list[str]


class GANPipeline:
    def __init__(self, model: GANModel, limits: GANLimits | None = None) -> None:
        self.model = model
        self.limits = limits or GANLimits()

    # -- latents -----------------------------------------------------------------------------
    def latent_for_seed(self, seed: int) -> torch.Tensor:
        return torch.randn(self.model.z_dim, generator=torch.Generator().manual_seed(seed))

    def latents_for_seeds(self, seeds: list[int]) -> torch.Tensor:
        return torch.stack([self.latent_for_seed(s) for s in seeds])

    def mean_latent(self) -> torch.Tensor:
        """The centre truncation pulls toward: the mean of the latent prior z ~ N(0, I), which is exactly
        zero (a DCGAN has no mapping network whose output mean would have to be estimated, as StyleGAN's
        truncation trick does in W)."""
        return torch.zeros(self.model.z_dim)

    def truncate(self, latents: torch.Tensor, psi: float) -> torch.Tensor:
        mean = self.mean_latent()
        return mean + psi * (latents - mean)

    def check_latent(self, latent: torch.Tensor) -> torch.Tensor:
        latent = torch.as_tensor(latent, dtype=torch.float32).flatten()
        if latent.numel() != self.model.z_dim:
            raise ValueError(f"latent has {latent.numel()} numbers but {self.model.name} needs {self.model.z_dim}")
        if not torch.isfinite(latent).all():
            raise ValueError("latent contains NaN or infinite values")
        return latent

    # -- rendering ---------------------------------------------------------------------------
    @torch.inference_mode()
    def render(self, latents: torch.Tensor, batch: int = 64) -> np.ndarray:
        """Latents [N, z_dim] → uint8 images [N, H, W, 3]."""
        g, placement = self.model.generator, self.model.placement
        out = []
        for start in range(0, latents.shape[0], batch):
            z = latents[start:start + batch].to(placement.device, placement.dtype)
            images = g(z)
            if images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            out.append(to_uint8(images))
        return np.concatenate(out)

    def __call__(self, params: GANParams, *, generator: torch.Generator | None = None, callback=None) -> GANOutput:
        """A seed grid with truncation."""
        params.validate(self.limits)
        latents = self.truncate(self.latents_for_seeds(params.seeds), params.truncation)
        return GANOutput(self.render(latents), latents, params.seeds)

    # -- exploring around a latent -------------------------------------------------------------
    def variations(self, latent: torch.Tensor, strength: float, count: int, seed: int) -> GANOutput:
        """`count` small random moves around `latent` (strength 0 … 2, in units of the prior's spread)."""
        check_float("strength", strength, 0.0, 2.0)
        check_int("count", count, 1, self.limits.max_children)
        latent = self.check_latent(latent)
        noise = torch.randn(count, self.model.z_dim, generator=torch.Generator().manual_seed(seed))
        latents = latent + strength * noise
        return GANOutput(self.render(latents), latents, [None] * count)

    def interpolate(self, params: InterpolationParams, extra_keys: torch.Tensor | None = None) -> GANOutput:
        """Frames walking through the keyframe seeds (or explicit latents in `extra_keys`)."""
        params.validate(self.limits)
        keys = self.latents_for_seeds(list(params.keyframes)) if extra_keys is None else extra_keys
        keys = self.truncate(keys, params.truncation)
        path = interpolate(keys, params.frames, params.method, params.ease, params.loop)
        return GANOutput(self.render(path), path, [None] * params.frames)

    @torch.inference_mode()
    def directions(self, k: int = 8, samples: int = 2048, seed: int = 0, space: str = "features") -> Directions:
        """GANSpace: PCA of early-layer activations of `samples` random latents, carried back into
        latent space by least squares (as GANSpace does for BigGAN), then made orthonormal.
        `space="latent"` runs PCA on the latents themselves."""
        check_int("k", k, 1, min(32, self.model.z_dim))
        check_int("samples", samples, 4 * k, 100_000)
        z = torch.randn(samples, self.model.z_dim, generator=torch.Generator().manual_seed(seed))
        if space == "latent":
            _, vectors, std = pca(z, k)
            return Directions(vectors, std, [f"PC{i + 1}" for i in range(k)])
        if space != "features":
            raise ValueError(f"space must be 'features' or 'latent', got {short(space)}")
        g, placement = self.model.generator, self.model.placement
        feats = torch.cat([g.early_features(z[s:s + 256].to(placement.device, placement.dtype)).float().cpu()
                           for s in range(0, samples, 256)])
        mean, components, _ = pca(feats, k)
        coords = (feats - mean) @ components.T  # [N, k]
        coords = coords / coords.std(0, keepdim=True)
        mapping = torch.linalg.lstsq(coords.double(), z.double()).solution.float()  # [k, z]
        vectors = orthonormalize(mapping)
        std = (z @ vectors.T).std(0)
        return Directions(vectors, std, [f"PC{i + 1}" for i in range(k)])

    def move(self, latent: torch.Tensor, vectors: torch.Tensor, amounts: list[float]) -> torch.Tensor:
        """latent + Σ amount_i · direction_i (amounts in units of one standard deviation, −5 … 5)."""
        latent = self.check_latent(latent)
        if len(amounts) != vectors.shape[0]:
            raise ValueError(f"got {len(amounts)} slider values for {vectors.shape[0]} directions")
        for a in amounts:
            check_float("direction amount", a, -5.0, 5.0)
        return latent + torch.tensor(amounts, dtype=torch.float32) @ vectors.float()

    def breed(self, parents: torch.Tensor, children: int, crossover: float, mutation: float, seed: int) -> GANOutput:
        """Children of two or more parents: each latent dimension is inherited from a parent
        (uniform crossover: `crossover` 0 … 1 is the share taken from parents other than the first,
        spread evenly), then each dimension mutates to a fresh random value with probability `mutation`."""
        if parents.shape[0] < 2:
            raise ValueError("parents: pick at least two parents to breed")
        check_int("children", children, 1, self.limits.max_children)
        check_float("crossover", crossover, 0.0, 1.0)
        check_float("mutation", mutation, 0.0, 1.0)
        parents = torch.stack([self.check_latent(p) for p in parents])
        gen = torch.Generator().manual_seed(seed)
        p, d = parents.shape
        u = torch.rand(children, d, generator=gen)
        others = torch.randint(1, p, (children, d), generator=gen)
        choice = torch.where(u < crossover, others, torch.zeros_like(others))
        kids = parents[choice, torch.arange(d)]
        mutate = torch.rand(children, d, generator=gen) < mutation
        kids = torch.where(mutate, torch.randn(children, d, generator=gen), kids)
        return GANOutput(self.render(kids), kids, [None] * children)


# -- saving and loading latents ----------------------------------------------------------------

def latent_to_json(latent: torch.Tensor, model: str, **extra) -> str:
    return json.dumps({"model": model, "z_dim": int(latent.numel()), "latent": [float(x) for x in latent.flatten()],
                       **extra})


def latent_from_file(path: Path) -> torch.Tensor:
    """A latent from our JSON format or a .npy array (size checked later against the model)."""
    path = Path(path)
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        return torch.from_numpy(np.asarray(array, dtype=np.float32)).flatten()
    try:
        data = json.loads(path.read_text())
        values = data["latent"] if isinstance(data, dict) else data
        return torch.tensor([float(x) for x in values], dtype=torch.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path.name} is not a latent file (JSON with a 'latent' list, or .npy): {exc}") from exc


# -- the explorer contract ----------------------------------------------------------------------------

class GANLatentModel(LatentModel):
    """A GAN behind the one latent contract (`pipelines.latent`): a point is z; no encoder."""

    kind = "gan"
    direction_methods = ("ganspace", "sefa")

    def __init__(self, pipe: GANPipeline) -> None:
        self.pipe = pipe
        self.name = pipe.model.name

    @property
    def z_shape(self) -> tuple[int, ...]:
        return (self.pipe.model.z_dim,)

    def point_for_seed(self, seed: int, truncation: float = 1.0, **_) -> LatentPoint:
        check_int("seed", seed, 0, 2**32 - 1)
        check_float("truncation", truncation, 0.0, 1.5)
        z = self.pipe.truncate(self.pipe.latent_for_seed(seed)[None], truncation)[0]
        return LatentPoint(z, model=self.name, label=f"seed {seed}")

    def render(self, points: list[LatentPoint], *, preview: bool = False) -> np.ndarray:
        return self.pipe.render(torch.stack([self.check(p).z for p in points]))

    def directions(self, method: str, k: int = 8, origin: LatentPoint | None = None, **options) -> list[Direction]:
        check_int("directions", k, 1, min(32, self.pipe.model.z_dim))
        if method == "ganspace":
            found = self.pipe.directions(k=k)
            return [Direction(name, "z", v, float(s), "ganspace") for name, v, s in
                    zip(found.names, found.vectors, found.std)]
        if method == "sefa":
            first = self.pipe.model.generator.main[0].weight  # ConvTranspose2d(z, C, 4, 1, 0): [z, C, 4, 4]
            vectors, _ = sefa(first, k)
            return [Direction(f"SeFa {i + 1}", "z", v, 1.0, "sefa") for i, v in enumerate(vectors)]
        raise ValueError(f"method must be one of {', '.join(self.direction_methods)} for a GAN, got {short(method)}")

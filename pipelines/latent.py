"""Latent-space tools shared by every explorable model: lerp, slerp, easing, keyframes, PCA, and the
one contract GANs, VAEs and diffusion models answer (`LatentModel`, `LatentPoint`, `Direction`) with the
model-independent moves on it: `move`, `between`, `walk`, `point_at`, `map_points`, `breed`, `sefa`.

The tensor helpers work on float tensors whose last dimension is the latent vector (flatten spatial
latents first); nothing here knows about a particular model.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipelines.checks import short

EASES = ("linear", "ease-in-out", "ease-in", "ease-out")
METHODS = ("lerp", "slerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation; norms are interpolated linearly, so |slerp| moves from |a| to |b|.

    For (anti)parallel vectors the direction is undefined; lerp is used there.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(eps), b / nb.clamp_min(eps)
    dot = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(dot)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so.clamp_min(eps)
    direction = torch.where(so.abs() < 1e-4, lerp(ua, ub, t), direction)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(eps)
    return direction * lerp(na, nb, t)


def ease(t: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "linear":
        return t
    if mode == "ease-in-out":
        return (1 - torch.cos(math.pi * t)) / 2
    if mode == "ease-in":
        return 1 - torch.cos(math.pi * t / 2)
    if mode == "ease-out":
        return torch.sin(math.pi * t / 2)
    raise ValueError(f"ease must be one of {', '.join(EASES)}, got {short(mode)}")


def check_keyframes(keys: torch.Tensor) -> None:
    """Adjacent keyframes must differ, or there is nothing to interpolate."""
    if keys.shape[0] < 2:
        raise ValueError("keyframes: give at least two keyframes to interpolate between")
    for i in range(keys.shape[0] - 1):
        if torch.allclose(keys[i], keys[i + 1]):
            raise ValueError(
                f"keyframes {i + 1} and {i + 2} are identical, so there is nothing to interpolate: "
                "choose two different seeds or images"
            )


def interpolate(keys: torch.Tensor, frames: int, method: str = "slerp", easing: str = "linear",
                loop: bool = False) -> torch.Tensor:
    """`frames` latents passing through every keyframe in order ([K, D] → [frames, D]).

    Without `loop` the first and last frames are the first and last keyframes; with `loop` the path
    returns to the first keyframe, which is not repeated, so the animation cycles seamlessly.
    """
    if method not in METHODS:
        raise ValueError(f"method must be 'lerp' or 'slerp', got {short(method)}")
    check_keyframes(keys)
    if loop:
        if torch.allclose(keys[-1], keys[0]):
            raise ValueError("keyframes: the last keyframe equals the first; with loop on, leave it out")
        keys = torch.cat([keys, keys[:1]])
    segments = keys.shape[0] - 1
    # Global time for each frame in [0, segments]; with loop, stop one frame short of the start.
    positions = torch.linspace(0, segments, frames + 1 if loop else frames, dtype=torch.float64)[:frames]
    out = []
    for pos in positions:
        index = min(int(pos), segments - 1)
        local = ease(torch.tensor(float(pos) - index), easing)
        fn = slerp if method == "slerp" else lerp
        out.append(fn(keys[index], keys[index + 1], local.to(keys.dtype)))
    return torch.stack(out)


def pca(samples: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean [D], top-k orthonormal components [k, D] and their standard deviations [k]."""
    if not 1 <= k <= min(samples.shape):
        raise ValueError(f"k must be from 1 to {min(samples.shape)}, got {k}")
    mean = samples.mean(0)
    centered = (samples - mean).double()
    if centered.numel() > 4_000_000 and k + 8 < min(centered.shape) // 2:
        # large matrices (GANSpace's 2,048 × 8,192 features): a randomized SVD of the top components
        # takes a second instead of twenty, and agrees with the full one on them
        gen = torch.Generator().manual_seed(0)
        q = min(k + 16, min(centered.shape))
        sketch = centered @ torch.randn(centered.shape[1], q, dtype=centered.dtype, generator=gen)
        for _ in range(3):  # power iterations sharpen the leading subspace
            sketch = centered @ (centered.T @ torch.linalg.qr(sketch).Q)
        basis = torch.linalg.qr(sketch).Q
        _, s, vh = torch.linalg.svd(basis.T @ centered, full_matrices=False)
    else:
        _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    std = s[:k] / math.sqrt(max(1, samples.shape[0] - 1))
    return mean, vh[:k].to(samples.dtype), std.to(samples.dtype)


def orthonormalize(vectors: torch.Tensor) -> torch.Tensor:
    """Rows made orthonormal (QR), each keeping the sign of its original direction."""
    q, r = torch.linalg.qr(vectors.double().T)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return (q * signs).T.to(vectors.dtype)


# -- one contract for every explorable model (GAN, VAE, diffusion) ----------------------------------

SPACES = ("z", "text", "h")


@dataclass
class LatentPoint:
    """One place in a model's latent space.

    z: the latent the model starts from — a GAN's z [D], a VAE's latent [D] or [C, h, w], a diffusion
        model's initial noise [C, h, w].
    text / pooled: a diffusion model's prompt embeddings (tokens [T, E]; pooled [E2] where the model has
        one, e.g. SDXL); None elsewhere.
    h: an offset added to a diffusion UNet's mid-block activations (h-space directions); None = none.
    model: the model it belongs to (points of another model are refused by name).
    label: what a person calls it ("seed 42", "red heart", "map cell 3, 7").
    image: a diffusion model's image prompt — the CLIP embedding of a picture, read by an IP-Adapter ([1, D], or
        [1, T, D] for Plus adapters); None = no image prompt. Walks and breeding mix it like the text.
    seed: the seed of the sampler's own noise while rendering (ancestral and LCM samplers draw noise at
        every step): a point from a seed keeps that seed, as the Image tab's picture of it does; a moved point
        keeps its origin's. None: one derived from z (`noise_seed`), so a render is always reproducible.
    """

    z: torch.Tensor
    text: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    h: torch.Tensor | None = None
    model: str = ""
    label: str = ""
    seed: int | None = None
    image: torch.Tensor | None = None

    def noise_seed(self) -> int:
        """The seed of this point's sampler noise: its own, or one made from its z (the same z, the same seed)."""
        if self.seed is not None:
            return int(self.seed)
        import hashlib

        data = self.z.detach().float().contiguous().cpu().numpy().tobytes()
        return int.from_bytes(hashlib.sha256(data).digest()[:4], "little")

    def part(self, space: str) -> torch.Tensor | None:
        return {"z": self.z, "text": self.text, "h": self.h}[space]

    def with_parts(self, **parts) -> LatentPoint:
        return replace(self, **parts)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """For saving as .safetensors (see `save_points` / `load_points`)."""
        out = {"z": self.z.detach().clone().contiguous()}  # copies: points may share a prompt's tensor
        for name in ("text", "pooled", "h", "image"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.detach().clone().contiguous()
        return out


@dataclass(frozen=True)
class Direction:
    """A named unit direction in one part of the latent space ("z", "text" or "h"); a slider unit is
    `std` (the spread of samples along it), so ±3 covers most of what the model makes."""

    name: str
    space: str
    vector: torch.Tensor
    std: float = 1.0
    method: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"direction space must be one of {', '.join(SPACES)}, got {short(self.space)}")


class LatentModel:
    """What every explorable model answers; GANs, VAEs and diffusion models implement it.

    kind: "gan", "vae" or "diffusion"; name: the registry name; z_shape: the shape of `LatentPoint.z`.
    """

    kind = ""
    name = ""
    direction_methods: tuple[str, ...] = ()
    can_encode = False

    @property
    def z_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def point_for_seed(self, seed: int, **condition) -> LatentPoint:
        """The point a seed names (diffusion: with `prompt=`); the same seed is always the same point."""
        raise NotImplementedError

    def prior(self, n: int, seed: int, **condition) -> list[LatentPoint]:
        return [self.point_for_seed((seed + i) % 2**32, **condition) for i in range(n)]

    def render(self, points: list[LatentPoint], *, preview: bool = False) -> np.ndarray:
        """uint8 images [N, H, W, 3]; `preview` trades quality for speed where the model can."""
        raise NotImplementedError

    def encode(self, images: np.ndarray, **options) -> list[LatentPoint]:
        raise ValueError(f"{self.name} cannot encode images: a {self.kind} has no encoder. Start from a seed "
                         "or a grid cell instead.")

    def directions(self, method: str, k: int = 8, origin: LatentPoint | None = None, **options) -> list[Direction]:
        raise NotImplementedError

    def check(self, point: LatentPoint) -> LatentPoint:
        """The point, if it belongs to this model; otherwise a clear error naming the mismatch."""
        if point.model and point.model != self.name:
            raise ValueError(f"this latent belongs to {point.model!r}, not {self.name!r}: open it with that model, "
                             "or start from a seed of this one")
        if tuple(point.z.shape) != tuple(self.z_shape):
            raise ValueError(f"latent has shape {tuple(point.z.shape)} but {self.name} needs {tuple(self.z_shape)}")
        if not torch.isfinite(point.z).all():
            raise ValueError("latent contains NaN or infinite values")
        return point


def move(point: LatentPoint, directions: list[Direction], amounts: list[float], limit: float = 5.0) -> LatentPoint:
    """The point moved `amount_i × std_i` along each direction (amounts −limit … limit)."""
    if len(amounts) > len(directions):
        raise ValueError(f"got {len(amounts)} slider values for {len(directions)} directions")
    parts = {space: point.part(space) for space in SPACES}
    for direction, amount in zip(directions, amounts):
        if not isinstance(amount, (int, float)) or not math.isfinite(amount) or abs(amount) > limit:
            raise ValueError(f"{direction.name}: slider values must be from {-limit:g} to {limit:g}, got {short(amount)}")
        if amount == 0:
            continue
        base = parts[direction.space]
        step = (amount * direction.std * direction.vector.float())
        if base is None:
            if direction.space != "h":
                raise ValueError(f"{direction.name} moves the {direction.space} part, which this point does not have")
            base = torch.zeros_like(step)
        parts[direction.space] = base + step.view(base.shape)
    return point.with_parts(**parts)


def between(a: LatentPoint, b: LatentPoint, t: float, method: str = "slerp", text_method: str = "lerp") -> LatentPoint:
    """The point a fraction `t` of the way from `a` to `b`: the noise/latent by `method` (slerp keeps a
    Gaussian's norm), text embeddings by `text_method`, h offsets linearly."""
    if a.model and b.model and a.model != b.model:
        raise ValueError(f"keyframes come from two models ({a.model!r} and {b.model!r}); a walk stays in one model")
    if a.z.shape != b.z.shape:
        raise ValueError(f"keyframes have different latent shapes {tuple(a.z.shape)} and {tuple(b.z.shape)}")
    fn = {"slerp": slerp, "lerp": lerp}
    if method not in fn or text_method not in fn:
        raise ValueError(f"method and text_method must be 'lerp' or 'slerp', got {short(method)}, {text_method!r}")
    z = fn[method](a.z.flatten().float(), b.z.flatten().float(), t).view(a.z.shape)

    def mix(x, y, how):
        if x is None and y is None:
            return None
        x = x if x is not None else torch.zeros_like(y)
        y = y if y is not None else torch.zeros_like(x)
        return fn[how](x.flatten().float(), y.flatten().float(), t).view(x.shape)

    if (a.image is None) != (b.image is None):
        raise ValueError("one keyframe has an image prompt and the other none: give both one (or neither)")
    return LatentPoint(z, mix(a.text, b.text, text_method), mix(a.pooled, b.pooled, text_method),
                       mix(a.h, b.h, "lerp"), a.model or b.model, f"{t:.2f} of the way",
                       image=mix(a.image, b.image, text_method))


@dataclass(frozen=True)
class WalkParams:
    """A keyframe walk: `frames` per segment between consecutive keyframes (2 … 240; one number for
    all, or one per segment), `ease`, `method` for the noise/latent, `text_method` for prompt
    embeddings, `loop` (return to the first keyframe), `fps` for GIF/MP4."""

    frames: tuple[int, ...] = (24,)
    ease: str = "ease-in-out"
    method: str = "slerp"
    text_method: str = "lerp"
    loop: bool = False
    fps: int = 12
    max_total: int = 2400

    def __post_init__(self) -> None:
        if not self.frames or any(isinstance(f, bool) or not isinstance(f, int) or not 1 <= f <= 240
                                  for f in self.frames):
            raise ValueError(f"frames per segment must be whole numbers from 1 to 240, got {list(self.frames)!r}")
        if self.ease not in EASES:
            raise ValueError(f"ease must be one of {', '.join(EASES)}, got {short(self.ease)}")
        if self.method not in METHODS or self.text_method not in METHODS:
            raise ValueError("method and text_method must be 'lerp' or 'slerp'")
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be a whole number from 1 to 60, got {short(self.fps)}")

    def segment_frames(self, segments: int) -> list[int]:
        if len(self.frames) == 1:
            return list(self.frames) * segments
        if len(self.frames) != segments:
            raise ValueError(f"frames: give one number for every segment ({segments}), or one for all; "
                             f"got {len(self.frames)}")
        return list(self.frames)


def walk_positions(keyframes: int, params: WalkParams) -> list[tuple[int, float]]:
    """(segment, eased local t) of every frame: the last keyframe closes the walk (or, with loop, the
    walk returns to the first keyframe without repeating it)."""
    if keyframes < 2:
        raise ValueError("keyframes: add at least two keyframes to walk between")
    segments = keyframes if params.loop else keyframes - 1
    counts = params.segment_frames(segments)
    total = sum(counts) + (0 if params.loop else 1)
    if total > params.max_total:
        raise ValueError(f"frames: the walk would have {total:,} frames; the limit is {params.max_total:,}. "
                         "Use fewer frames per segment or fewer keyframes.")
    positions = []
    for segment, count in enumerate(counts):
        for i in range(count):
            positions.append((segment, float(ease(torch.tensor(i / count), params.ease))))
    if not params.loop:
        positions.append((segments - 1, 1.0))
    return positions


def walk(keyframes: list[LatentPoint], params: WalkParams) -> list[LatentPoint]:
    """Every frame of the walk through `keyframes`; frame 0 is the first keyframe exactly, and (without
    loop) the last frame is the last keyframe exactly."""
    for i in range(len(keyframes) - 1):
        if _same(keyframes[i], keyframes[i + 1]):
            raise ValueError(f"keyframes {i + 1} and {i + 2} are identical, so there is nothing to walk between: "
                             "change one (another seed, prompt or cell), or remove it")
    ring = keyframes + keyframes[:1] if params.loop else keyframes
    if params.loop and _same(keyframes[-1], keyframes[0]):
        raise ValueError("keyframes: the last keyframe equals the first; with loop on, leave it out")
    out = []
    for segment, t in walk_positions(len(keyframes), params):
        a, b = ring[segment], ring[segment + 1]
        out.append(a if t == 0 else b if t == 1 else between(a, b, t, params.method, params.text_method))
    return out


def point_at(keyframes: list[LatentPoint], params: WalkParams, frame: int) -> LatentPoint:
    """The point of one frame of the walk, without computing the others (timeline scrubbing)."""
    positions = walk_positions(len(keyframes), params)
    if not 0 <= frame < len(positions):
        raise ValueError(f"frame must be from 0 to {len(positions) - 1}, got {frame}")
    segment, t = positions[frame]
    ring = keyframes + keyframes[:1] if params.loop else keyframes
    a, b = ring[segment], ring[segment + 1]
    return a if t == 0 else b if t == 1 else between(a, b, t, params.method, params.text_method)


def keyframe_frames(keyframes: int, params: WalkParams) -> list[int]:
    """The frame index where each keyframe sits on the timeline."""
    counts = params.segment_frames(keyframes if params.loop else keyframes - 1)
    starts = [0]
    for count in counts[: keyframes - 1]:
        starts.append(starts[-1] + count)
    return starts


def _same(a: LatentPoint, b: LatentPoint) -> bool:
    def eq(x, y):
        return (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))

    return eq(a.z, b.z) and eq(a.text, b.text) and eq(a.pooled, b.pooled) and eq(a.h, b.h) and eq(a.image, b.image)


def map_points(origin: LatentPoint, x: Direction, y: Direction, extent: float, grid: int) -> list[LatentPoint]:
    """A grid × grid map around `origin` over two directions, ±extent slider units each way; row-major,
    the top row at +extent on `y`."""
    if not 2 <= grid <= 24:
        raise ValueError(f"grid must be from 2 to 24 cells a side, got {grid}")
    if not (isinstance(extent, (int, float)) and math.isfinite(extent) and 0.1 <= extent <= 5):
        raise ValueError(f"extent must be from 0.1 to 5, got {short(extent)}")
    if x.name == y.name and torch.equal(x.vector, y.vector):
        raise ValueError("the map's two axes must be different directions")
    ticks = torch.linspace(-extent, extent, grid).tolist()
    cells = []
    for row, dy in enumerate(reversed(ticks)):
        for col, dx in enumerate(ticks):
            cell = move(origin, [x, y], [dx, dy], limit=5.0)
            cells.append(cell.with_parts(label=f"map cell {row + 1}, {col + 1}"))
    return cells


def breed(parents: list[LatentPoint], children: int, crossover: float, mutation: float, seed: int,
          max_children: int = 16) -> list[LatentPoint]:
    """Children of two or more parents: each number of z is inherited from one parent (uniform crossover;
    `crossover` 0 … 1 is the share from parents other than the first), then mutates to a fresh Gaussian
    value with probability `mutation`; text embeddings and h offsets are mixed by a random share of the
    parents. Diffusion noise keeps its Gaussian norm."""
    if len(parents) < 2:
        raise ValueError("parents: pick at least two parents to breed")
    if not 1 <= children <= max_children:
        raise ValueError(f"children must be from 1 to {max_children}, got {children}")
    for name, value in (("crossover", crossover), ("mutation", mutation)):
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"{name} must be from 0 to 1, got {short(value)}")
    models = {p.model for p in parents if p.model}
    if len(models) > 1:
        raise ValueError(f"parents come from different models ({', '.join(sorted(models))}); breed within one model")
    shape = parents[0].z.shape
    if any(p.z.shape != shape for p in parents):
        raise ValueError("parents have different latent shapes")
    gen = torch.Generator().manual_seed(seed)
    z = torch.stack([p.z.flatten().float() for p in parents])
    n, d = z.shape
    u = torch.rand(children, d, generator=gen)
    others = torch.randint(1, n, (children, d), generator=gen)
    choice = torch.where(u < crossover, others, torch.zeros_like(others))
    kids = z[choice, torch.arange(d)]
    mutate = torch.rand(children, d, generator=gen) < mutation
    kids = torch.where(mutate, torch.randn(children, d, generator=gen), kids)
    out = []
    for i in range(children):
        w = torch.rand(n, generator=gen)
        w = w / w.sum()

        def mix(name):
            values = [getattr(p, name) for p in parents]
            if all(v is None for v in values):
                return None
            ref = next(v for v in values if v is not None)
            return sum(wi * (v if v is not None else torch.zeros_like(ref)).float() for wi, v in zip(w, values))

        out.append(LatentPoint(kids[i].view(shape), mix("text"), mix("pooled"), mix("h"), parents[0].model,
                               f"child {i + 1}", image=mix("image")))
    return out


def sefa(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SeFa (Shen & Zhou 2021): the latent directions a generator's first layer stretches most — the top
    eigenvectors of WᵀW, where W maps z to the first layer's outputs. `weight` is that layer's weight with
    z along dim 0 (a DCGAN's first ConvTranspose2d: [z_dim, C, 4, 4]). Returns ([k, z_dim], eigenvalues)."""
    w = weight.detach().double().reshape(weight.shape[0], -1)  # [z, out]
    gram = w @ w.T  # = AᵀA for A = wᵀ (the map z → outputs)
    values, vectors = torch.linalg.eigh(gram)
    order = torch.argsort(values, descending=True)[:k]
    vectors = vectors[:, order].T  # [k, z]
    signs = torch.sign(vectors[torch.arange(len(order)), vectors.abs().argmax(1)])
    return (vectors * signs[:, None]).float(), values[order].float()


def points_bytes(points: list[LatentPoint]) -> bytes:
    """Points as the bytes of one .safetensors file (safe to load anywhere), with the model name, labels and
    seeds in its metadata; made in memory (no file another request could race)."""
    from safetensors.torch import save

    tensors = {f"{i}.{name}": t for i, p in enumerate(points) for name, t in p.to_tensors().items()}
    return save(tensors, metadata={"model": points[0].model if points else "",
                                   "labels": "\n".join(p.label.replace("\n", " ") for p in points),
                                   "seeds": ",".join("" if p.seed is None else str(p.seed) for p in points)})


def save_points(points: list[LatentPoint], path) -> None:
    """Points as one .safetensors file (see `points_bytes`), written atomically."""
    import os

    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{id(points)}.partial")
    partial.write_bytes(points_bytes(points))
    os.replace(partial, path)


def load_points(path) -> list[LatentPoint]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{Path(path).name} is not a latent file saved by the studio (.safetensors): {exc}") from exc
    count = 1 + max((int(k.split(".")[0]) for k in tensors), default=-1)
    labels = meta.get("labels", "").split("\n")
    seeds = [int(s) if s.isdigit() and int(s) < 2**32 else None for s in meta.get("seeds", "").split(",")]
    return [LatentPoint(tensors[f"{i}.z"], tensors.get(f"{i}.text"), tensors.get(f"{i}.pooled"), tensors.get(f"{i}.h"),
                        meta.get("model", ""), labels[i] if i < len(labels) else "",
                        seeds[i] if i < len(seeds) else None, tensors.get(f"{i}.image")) for i in range(count)]


# -- walk quality (AID, NeurIPS 2024): smoothness and consistency of consecutive frames --------------

def perceptual_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 − SSIM of two uint8 images (grey, 7×7 windows): a structural distance that needs no network
    weights, so it runs offline."""
    x = torch.from_numpy(a.astype(np.float32)).mean(-1)[None, None] / 255
    y = torch.from_numpy(b.astype(np.float32)).mean(-1)[None, None] / 255
    window = torch.ones(1, 1, 7, 7) / 49
    f = torch.nn.functional.conv2d
    mx, my = f(x, window), f(y, window)
    vx, vy = f(x * x, window) - mx * mx, f(y * y, window) - my * my
    cov = f(x * y, window) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(1 - ssim.mean())


def walk_quality(frames: np.ndarray) -> dict[str, float]:
    """AID's smoothness (1 − Gini coefficient of consecutive-frame distances; 1 = perfectly even steps)
    and consistency (mean consecutive distance; lower = smaller jumps)."""
    d = np.array([perceptual_distance(frames[i], frames[i + 1]) for i in range(len(frames) - 1)])
    if len(d) == 0 or d.sum() == 0:
        return {"smoothness": 1.0, "consistency": 0.0}
    sorted_d = np.sort(d)
    n = len(d)
    gini = (2 * np.arange(1, n + 1) - n - 1) @ sorted_d / (n * sorted_d.sum())
    return {"smoothness": float(1 - gini), "consistency": float(d.mean())}


def save_directions(directions: list[Direction], path) -> None:
    """Named directions with their vectors, as one .safetensors file (reloaded by `load_directions`)."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i}": d.vector.float().contiguous() for i, d in enumerate(directions)}
    meta = [{"name": d.name, "space": d.space, "std": d.std, "method": d.method, "hint": d.hint} for d in directions]
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"directions": json.dumps(meta)})
    tmp.replace(path)


def load_directions(path) -> list[Direction]:
    import json

    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return []
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("directions", "[]"))
        return [Direction(m["name"], m["space"], f.get_tensor(str(i)), float(m["std"]), m.get("method", ""),
                          m.get("hint", "")) for i, m in enumerate(meta)]


def vary(point: LatentPoint, strength: float, count: int, seed: int) -> list[LatentPoint]:
    """`count` variations of a point: its z turned toward fresh Gaussian draws by `strength` (0 … 1, a
    slerp, so noise stays noise-like), as a variation seed does in the Image tab; the prompt stays."""
    if not (isinstance(strength, (int, float)) and 0 <= strength <= 1):
        raise ValueError(f"strength must be from 0 to 1, got {short(strength)}")
    if not 1 <= count <= 64:
        raise ValueError(f"count must be from 1 to 64, got {count}")
    gen = torch.Generator().manual_seed(seed)
    flat = point.z.flatten().float()
    out = []
    for i in range(count):
        other = torch.randn(flat.shape, generator=gen)
        z = slerp(flat, other * (flat.norm() / other.norm()), strength).view(point.z.shape)
        out.append(point.with_parts(z=z, label=f"{point.label} · variation {i + 1}"))
    return out


class PromptCache:
    """A few prompts' embeddings of one model, kept (most recent last) and shared by its latent spaces under every
    look; thread-safe. `get(prompt, make)` returns the kept value or `make(prompt)`'s, then keeps it."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, prompt: str, make) -> tuple:
        if not isinstance(prompt, str) or len(prompt) > 4000:
            raise ValueError("prompt must be text of at most 4,000 characters")
        with self._lock:
            if prompt in self._items:
                self._items.move_to_end(prompt)
                return self._items[prompt]
        value = make(prompt)
        with self._lock:
            self._items[prompt] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


class DiffusionSpace(LatentModel):
    """What the UNet and the flow-transformer adapters share: a loaded image model under one look (render
    settings) with a prompt cache that every look of the model shares."""

    kind = "diffusion"

    def __init__(self, model, look) -> None:
        self.model, self.look, self.name = model, look, model.name
        self.prompts = PromptCache()

    def with_look(self, look):
        """The same model under other render settings (shares the loaded weights and prompt cache)."""
        other = type(self)(self.model, look)
        other.prompts = self.prompts
        return other

    def prompt_direction(self, positive: str, negative: str) -> Direction:
        """From `negative` toward `positive` in text-embedding space; one slider unit is half the way between the
        two prompts (±2 = the whole difference, added to or taken from the current prompt)."""
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

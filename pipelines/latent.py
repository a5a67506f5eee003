"""Latent-space tools shared by the GAN and VAE tabs: lerp, slerp, easing, keyframes, PCA.

All functions work on float tensors whose last dimension is the latent vector (flatten spatial
latents first); nothing here knows about a particular model.
"""

from __future__ import annotations

import math

import torch

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
    raise ValueError(f"ease must be one of {', '.join(EASES)}, got {mode!r}")


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
        raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")
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
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    std = s[:k] / math.sqrt(max(1, samples.shape[0] - 1))
    return mean, vh[:k].to(samples.dtype), std.to(samples.dtype)


def orthonormalize(vectors: torch.Tensor) -> torch.Tensor:
    """Rows made orthonormal (QR), each keeping the sign of its original direction."""
    q, r = torch.linalg.qr(vectors.double().T)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return (q * signs).T.to(vectors.dtype)

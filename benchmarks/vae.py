"""VAE speed: a 32-frame morph and a 16×16 map, studio vs bare encode/decode calls, plus training throughput.

    python benchmarks/vae.py [--reps 3]

Bare side: the same network called directly (one encode → slerp in a Python loop → decode; a map over
the same axes as the studio's, built with a double loop and decoded in one batch), on the same inputs,
alternating with the studio in one run. The map's axes (PCA for the emoji VAE) are computed once, outside
both timers, and given to both sides. Results go to benchmarks/results/vae-*.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.device import pick_placement
from pipelines.latent import slerp
from pipelines.registry import Registry
from pipelines.vae import MapParams, MorphParams, VAEPipeline, VAETrainParams, load_vae, train_conv_vae
from studio.config import default_cache_dir


def bare_morph(model, images: np.ndarray, frames: int) -> np.ndarray:
    latents = model.encode(images)
    a, b = latents.flatten(1)
    path = torch.stack([slerp(a, b, t) for t in torch.linspace(0, 1, frames)])
    return model.decode(path.view(frames, *latents.shape[1:]))


def bare_map(model, grid: int, axes) -> np.ndarray:
    origin, directions, std = axes
    shape = (model.latent_dim,) if model.kind == "vector" else model.spatial_shape
    ticks = torch.linspace(-2.5, 2.5, grid)
    points = torch.zeros(grid * grid, origin.numel())
    for i, y in enumerate(ticks.flip(0)):
        for j, x in enumerate(ticks):
            points[i * grid + j] = origin + x * std[0] * directions[0] + y * std[1] * directions[1]
    return model.decode(points.view(-1, *shape))


def median_pair(fn_a, fn_b, reps: int) -> tuple[float, float]:
    a, b = [], []
    for rep in range(reps + 1):
        for fn, out in ((fn_a, a), (fn_b, b)):
            start = time.perf_counter()
            fn()
            if rep:
                out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    registry = Registry(default_cache_dir())
    placement = pick_placement("auto")
    report = Report("vae")
    print = report.line
    print(f"\nVAE benchmark on {placement.describe()}, {torch.get_num_threads()} threads, median of {args.reps}")
    print(f"{'model':16} {'measure':26} {'studio s':>9} {'bare s':>9} {'ratio':>7}")
    for name in ("digit-vae-2d", "emoji-vae"):
        pipe = VAEPipeline(load_vae(registry.resolve(registry.lookup(name, "vae")), placement))
        images = pipe.model.decode(pipe.model.prior(2, 0))
        s, b = median_pair(lambda: pipe.morph(images, MorphParams(frames=32, ease="linear")),
                           lambda: bare_morph(pipe.model, images, 32), args.reps)
        print(f"{name:16} {'32-frame morph':26} {s:9.3f} {b:9.3f} {b / s:7.3f}")
        axes = pipe.axes(None)
        s, b = median_pair(lambda: pipe.latent_map(MapParams(grid=16), axes=axes),
                           lambda: bare_map(pipe.model, 16, axes), args.reps)
        print(f"{name:16} {'16×16 map':26} {s:9.3f} {b:9.3f} {b / s:7.3f}")
    digits = VAEPipeline(load_vae(registry.resolve(registry.lookup("digit-vae-2d", "vae")), placement))
    train_images = digits.model.decode(digits.model.prior(2048, 1))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        reports = train_conv_vae(VAETrainParams(latent_dim=16, epochs=2), train_images, Path(tmp) / "m")
    print(f"training throughput (28×28, 16-D, batch 64): {reports[-1].images_per_second:.0f} images/s")
    report.save()


if __name__ == "__main__":
    main()

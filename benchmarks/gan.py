"""GAN speed: studio pipeline vs bare generator calls, measured alternately in one run.

    python benchmarks/gan.py [--model dcgan-faces-64] [--reps 5]

Rows: samples/s at batch 1 and 64, and seconds to render a 64-frame interpolation GIF
(studio: `GANPipeline.interpolate` + `gif_bytes`; bare: slerp loop + generator + PIL GIF).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.device import pick_placement
from pipelines.gan import GANParams, GANPipeline, InterpolationParams, load_gan
from pipelines.media import gif_bytes
from pipelines.registry import Registry
from studio.config import default_cache_dir


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_samples(generator, batch: int, seed: int):
    z = torch.randn(batch, 100, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        images = generator(z)
    return images.clamp(-1, 1).add(1).mul(127.5).byte().permute(0, 2, 3, 1).numpy()


def bare_gif(generator, frames: int) -> bytes:
    from PIL import Image

    a = torch.randn(100, generator=torch.Generator().manual_seed(1))
    b = torch.randn(100, generator=torch.Generator().manual_seed(2))
    omega = torch.arccos((a / a.norm()) @ (b / b.norm()))
    ts = torch.linspace(0, 1, frames)
    z = torch.stack([(torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega) for t in ts])
    with torch.inference_mode():
        images = generator(z).clamp(-1, 1).add(1).mul(127.5).byte().permute(0, 2, 3, 1).numpy()
    pics = [Image.fromarray(i).resize((256, 256), Image.Resampling.LANCZOS) for i in images]
    buffer = io.BytesIO()
    pics[0].save(buffer, format="GIF", save_all=True, append_images=pics[1:], duration=83, loop=0, disposal=2)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="dcgan-faces-64")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    registry = Registry(default_cache_dir())
    pipe = GANPipeline(load_gan(registry.resolve(registry.lookup(args.model, "gan")), pick_placement("auto")))
    generator = pipe.model.generator
    z_dim = pipe.model.z_dim
    assert z_dim == 100, "the bare side assumes the embedded z=100 model"

    rows = []
    for batch, grid in ((1, 1), (64, 8)):
        studio, bare = [], []
        for rep in range(args.reps + 1):
            s = timed(lambda: pipe(GANParams(seed=rep, grid=grid)))
            b = timed(lambda: bare_samples(generator, batch, rep))
            if rep:
                studio.append(batch / s)
                bare.append(batch / b)
        rows.append((f"samples/s, batch {batch}", statistics.median(studio), statistics.median(bare)))
    studio, bare = [], []
    for rep in range(args.reps + 1):
        s = timed(lambda: gif_bytes(pipe.interpolate(InterpolationParams(keyframes=(1, 2), frames=64, ease="linear",
                                                                         fps=12)).images, 12, scale=4))
        b = timed(lambda: bare_gif(generator, 64))
        if rep:
            studio.append(s)
            bare.append(b)
    rows.append(("64-frame GIF, seconds (lower is better)", statistics.median(studio), statistics.median(bare)))

    report = Report("gan")
    print = report.line
    print(f"\nGAN {args.model} on {pipe.model.placement.describe()}, {torch.get_num_threads()} threads, "
          f"median of {args.reps}")
    print(f"{'measure':42} {'studio':>10} {'bare':>10} {'ratio':>7}")
    for label, s, b in rows:
        ratio = b / s if "seconds" in label else s / b  # ratio > 1 means the studio is faster
        print(f"{label:42} {s:10.2f} {b:10.2f} {ratio:7.3f}")
    report.save()


if __name__ == "__main__":
    main()

"""The latent workbench on the embedded diffusion model, in one run:

    python benchmarks/latent.py [--model emoji-ldm] [--frames 32] [--pairs 4] [--reps 3]

1. A 32-frame walk rendered in batches vs the same 32 pictures made as 32 separate generations through
   the Image tab's pipeline (prompt strings, one call each) — target ≤ 0.6 of their time.
2. Timeline scrubbing: one frame's preview (fewer steps), in-process — target ≤ 0.5 s.
3. Walk quality as defined by AID (NeurIPS 2024): smoothness = 1 − Gini coefficient of consecutive-frame
   distances (1 = perfectly even steps) and consistency = mean consecutive distance (lower = smaller
   jumps), with 1 − SSIM as the perceptual distance (no network weights, runs offline). Compared:
   slerp of the noise + lerp of the prompt embeddings (the studio's walk), lerp of the noise, and a plain
   pixel crossfade between the same two end pictures. Medians over `--pairs` keyframe pairs.
Results: benchmarks/results/latent-*.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.device import pick_placement
from pipelines.image import ImageParams, ImagePipeline, load_image_model
from pipelines.image_latent import DiffusionLatentModel, DiffusionLook
from pipelines.latent import WalkParams, point_at, walk, walk_quality
from pipelines.registry import Registry
from studio.config import default_cache_dir

PAIRS = [("red heart", "blue heart"), ("smiling face", "crying face"), ("red apple", "green apple"),
         ("sun", "moon"), ("cat face", "dog face"), ("rocket", "airplane")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="emoji-ldm")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    registry = Registry(default_cache_dir())
    placement = pick_placement("auto")
    model = load_image_model(registry.resolve(registry.lookup(args.model, "image")), placement)
    size = model.default_size
    look = DiffusionLook(steps=20, guidance=5.0, scheduler="DPM++ 2M", width=size, height=size, preview_steps=8)
    space = DiffusionLatentModel(model, look)
    pipe = ImagePipeline(model)
    report = Report("latent")
    report.line(f"{args.model} on {placement.describe()}, {size}×{size}, {look.steps} steps ({look.preview_steps} for "
                f"previews), {look.scheduler}, guidance {look.guidance}; median of {args.reps}")

    # 1. batched walk vs separate generations
    a, b = space.point_for_seed(1, prompt="red heart"), space.point_for_seed(2, prompt="green apple")
    params = WalkParams(frames=(args.frames - 1,), ease="linear")
    points = walk([a, b], params)
    batched, separate = [], []
    for rep in range(args.reps + 1):
        start = time.perf_counter()
        space.render(points)
        t_batched = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(len(points)):  # what a person would do without the workbench: one image at a time
            pipe(ImageParams(prompt="red heart" if i < len(points) // 2 else "green apple", steps=look.steps,
                             guidance=look.guidance, scheduler=look.scheduler, width=size, height=size, seed=i))
        t_separate = time.perf_counter() - start
        if rep:
            batched.append(t_batched)
            separate.append(t_separate)
    tb, ts = statistics.median(batched), statistics.median(separate)
    report.line(f"\n{'measure':52} {'seconds':>9} {'target':>8}")
    report.line(f"{f'{len(points)}-frame walk, batched':52} {tb:9.2f}")
    report.line(f"{f'{len(points)} separate generations':52} {ts:9.2f}")
    report.line(f"{'batched ÷ separate':52} {tb / ts:9.3f} {'≤ 0.6':>8}")

    # 2. scrub preview
    scrubs = []
    for rep in range(args.reps * 3 + 1):
        start = time.perf_counter()
        space.render([point_at([a, b], params, (rep * 7) % len(points))], preview=True)
        if rep:
            scrubs.append(time.perf_counter() - start)
    report.line(f"{'timeline scrub: one preview frame':52} {statistics.median(scrubs):9.3f} {'≤ 0.5':>8}")

    # 3. walk quality
    results: dict[str, list[dict]] = {"slerp noise + lerp prompt (studio)": [], "lerp noise + lerp prompt": [],
                                       "pixel crossfade": []}
    for k, (p1, p2) in enumerate(PAIRS[: args.pairs]):
        x, y = space.point_for_seed(10 + k, prompt=p1), space.point_for_seed(20 + k, prompt=p2)
        quality = WalkParams(frames=(15,), ease="linear")
        ours = space.render(walk([x, y], quality))
        lerped = space.render(walk([x, y], WalkParams(frames=(15,), ease="linear", method="lerp")))
        ends = ours[[0, -1]].astype(np.float32)
        fade = np.stack([(ends[0] * (1 - t) + ends[1] * t).round().astype(np.uint8) for t in np.linspace(0, 1, 16)])
        for label, frames in zip(results, (ours, lerped, fade)):
            results[label].append(walk_quality(frames))
    report.line(f"\nWalk quality over {args.pairs} prompt pairs, 16 frames each (AID; distance 1 − SSIM)")
    report.line(f"{'path':40} {'smoothness ↑':>13} {'consistency ↓':>14}")
    for label, values in results.items():
        report.line(f"{label:40} {statistics.median(v['smoothness'] for v in values):13.3f} "
                    f"{statistics.median(v['consistency'] for v in values):14.4f}")
    report.save()


if __name__ == "__main__":
    main()

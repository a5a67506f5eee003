"""Image speed: studio pipeline vs a bare diffusers call, and UNet step time at SD scale.

    python benchmarks/image.py [--model emoji-ldm] [--size 64] [--steps 20] [--batch 4] [--reps 3] [--unet-512]

1. Seconds per image: `ImagePipeline` vs `pipe(prompt, …)` on the same loaded model, size, steps,
   scheduler and seed, measured alternately in one run (ratio = bare / studio; ≥ 0.97 is the target).
2. Hires fix 2× (Latent upscaler): `ImagePipeline` with `HiresParams` vs the same two passes called by hand
   (txt2img to latents → F.interpolate → img2img on the latents), alternately (target ≥ 0.95).
3. `--unet-512`: seconds per UNet step of a random-weight UNet with the real SD 1.5 architecture at
   512×512 (batch 2 = one image with classifier-free guidance), and SDXL's with `--sdxl`, so GPU runs
   can be compared with published figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.device import pick_placement
from pipelines.image import ImageParams, ImagePipeline, load_image_model, scheduler_for
from pipelines.image_upscale import HiresParams
from pipelines.registry import Registry
from studio.config import default_cache_dir

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=2048,
                 block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
                 transformer_layers_per_block=(1, 2, 10), addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True)


def unet_step_seconds(config: dict, latent: int, tokens: int, width: int, placement, reps: int, xl: bool) -> float:
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config).to(placement.device, placement.dtype).eval()
    x = torch.randn(2, 4, latent, latent, device=placement.device, dtype=placement.dtype)
    ctx = torch.randn(2, tokens, width, device=placement.device, dtype=placement.dtype)
    extra = {}
    if xl:
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 1280, device=placement.device, dtype=placement.dtype),
                                      "time_ids": torch.randn(2, 6, device=placement.device, dtype=placement.dtype)}
    times = []
    with torch.inference_mode():
        for rep in range(reps + 1):
            if placement.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            unet(x, 500, ctx, **extra)
            if placement.device.type == "cuda":
                torch.cuda.synchronize()
            if rep:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def hires_fix_times(pipe: ImagePipeline, args) -> tuple[float, float]:
    """Median seconds: the studio's hires fix vs the same two diffusers passes called by hand."""
    hires = HiresParams(scale=2.0, upscaler="Latent", steps=args.steps, strength=0.5)
    params = ImageParams(prompt="red heart", steps=args.steps, width=args.size, height=args.size, seed=0,
                         batch_size=args.batch, scheduler="DPM++ 2M", hires=hires)
    first, second = pipe.model.pipe, pipe.model.for_mode("img2img")
    prompts = ["red heart"] * args.batch
    studio_times, bare_times = [], []
    for rep in range(args.reps + 1):
        start = time.perf_counter()
        pipe(params)
        s = time.perf_counter() - start
        first.scheduler = scheduler_for(first, "DPM++ 2M")
        second.scheduler = scheduler_for(second, "DPM++ 2M")
        start = time.perf_counter()
        with torch.inference_mode():
            latents = first(prompts, num_inference_steps=args.steps, width=args.size, height=args.size,
                            guidance_scale=params.guidance, generator=torch.Generator().manual_seed(0),
                            output_type="latent").images
            latents = torch.nn.functional.interpolate(latents, scale_factor=2, mode="bilinear")
            second(prompts, image=latents, strength=0.5, num_inference_steps=args.steps,
                   guidance_scale=params.guidance, generator=torch.Generator().manual_seed(0))
        b = time.perf_counter() - start
        if rep:
            studio_times.append(s)
            bare_times.append(b)
    return statistics.median(studio_times), statistics.median(bare_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="emoji-ldm")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--unet-512", action="store_true")
    parser.add_argument("--sdxl", action="store_true")
    args = parser.parse_args()
    placement = pick_placement("auto")
    registry = Registry(default_cache_dir())
    pipe = ImagePipeline(load_image_model(registry.resolve(registry.lookup(args.model, "image")), placement))
    bare = pipe.model.pipe
    params = ImageParams(prompt="red heart", steps=args.steps, width=args.size, height=args.size, seed=0,
                         batch_size=args.batch, scheduler="DPM++ 2M")
    studio_times, bare_times = [], []
    for rep in range(args.reps + 1):
        start = time.perf_counter()
        pipe(params)
        s = time.perf_counter() - start
        bare.scheduler = scheduler_for(bare, "DPM++ 2M")
        start = time.perf_counter()
        with torch.inference_mode():
            bare(["red heart"] * args.batch, num_inference_steps=args.steps, width=args.size, height=args.size,
                 guidance_scale=params.guidance, generator=torch.Generator().manual_seed(0))
        b = time.perf_counter() - start
        if rep:
            studio_times.append(s)
            bare_times.append(b)
    s, b = statistics.median(studio_times), statistics.median(bare_times)
    hires_s, hires_b = hires_fix_times(pipe, args)
    report = Report("image")
    print = report.line
    print(f"\n{args.model} on {placement.describe()}, {torch.get_num_threads()} threads, {args.batch} images "
          f"{args.size}×{args.size}, {args.steps} steps, median of {args.reps}")
    print(f"{'measure':44} {'studio':>9} {'bare':>9} {'ratio':>7}")
    print(f"{'seconds for the batch':44} {s:9.3f} {b:9.3f} {b / s:7.3f}")
    print(f"{'seconds per image':44} {s / args.batch:9.3f} {b / args.batch:9.3f}")
    print(f"{f'hires fix 2× ({args.size}→{2 * args.size}), the batch':44} {hires_s:9.3f} {hires_b:9.3f} "
          f"{hires_b / hires_s:7.3f}")
    if args.unet_512:
        print(f"SD 1.5 UNet step, 512×512, batch 2 (CFG): {unet_step_seconds(SD15_UNET, 64, 77, 768, placement, 3, False):.3f} s")
    if args.sdxl:
        print(f"SDXL UNet step, 1024×1024, batch 2 (CFG): {unet_step_seconds(SDXL_UNET, 128, 77, 2048, placement, 3, True):.3f} s")
    report.save()


if __name__ == "__main__":
    main()

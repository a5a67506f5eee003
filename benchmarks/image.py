"""Image speed: studio pipeline vs a bare diffusers call, and UNet step time eager vs compiled.

    python benchmarks/image.py [--model emoji-ldm] [--size 64] [--steps 20] [--batch 4] [--reps 3]
                               [--unet-512] [--sdxl] [--compile] [--compile-mode MODE]

1. Seconds per batch: `ImagePipeline` vs a bare `DiffusionPipeline` loaded on its own from the same folder (same
   device, dtype, scheduler, steps, seeds and starting noise; neither shares an object with the other), measured
   alternately in one run, each timing ended by a device synchronize (ratio = bare / studio; ≥ 0.97 is the
   target). With `--compile` the studio side runs what `studio launch --compile` runs (pipelines.image_speed).
2. Hires fix 2× (Latent upscaler): `ImagePipeline` with `HiresParams` vs the same two passes called by hand on
   the bare pipeline (txt2img to latents → F.interpolate → img2img on the latents), alternately (target ≥ 0.95).
3. `--unet-512`: seconds per UNet step of a random-weight UNet with the real SD 1.5 architecture at 512×512
   (batch 2 = one image with classifier-free guidance), and SDXL's at 1024² with `--sdxl`: eager, and with
   `--compile` also channels-last + fused QKV + torch.compile (the studio's GPU path), side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.device import pick_placement
from pipelines.image import ImageParams, ImagePipeline, load_image_model, scheduler_for
from pipelines.image_speed import SpeedParams, speed_up
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


def unet_step_seconds(config: dict, latent: int, tokens: int, width: int, placement, reps: int, xl: bool,
                      speed: SpeedParams | None = None) -> float:
    """Median seconds of one UNet step (batch 2), eager or with `speed` applied as the studio applies it."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config).to(placement.device, placement.dtype).eval()
    if speed is not None:
        pipe = SimpleNamespace(unet=unet, vae=None)
        speed_up(SimpleNamespace(pipe=pipe, plan=None, placement=placement, vae_scale=8, compiled=None),
                 replace(speed, preview_decoder="", preview_decoder_xl=""))
    x = torch.randn(2, 4, latent, latent, device=placement.device, dtype=placement.dtype)
    if speed is not None and speed.channels_last:
        x = x.to(memory_format=torch.channels_last)
    ctx = torch.randn(2, tokens, width, device=placement.device, dtype=placement.dtype)
    extra = {}
    if xl:
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 1280, device=placement.device, dtype=placement.dtype),
                                      "time_ids": torch.randn(2, 6, device=placement.device, dtype=placement.dtype)}
    times = []
    with torch.inference_mode():
        for rep in range(reps + 3):  # three warm-ups: the compile, then autotuned kernels settle
            synchronize(placement)
            start = time.perf_counter()
            unet(x, 500, ctx, **extra)
            synchronize(placement)
            if rep >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronize(placement) -> None:
    if placement.device.type == "cuda":
        torch.cuda.synchronize()
    elif placement.device.type == "mps":
        torch.mps.synchronize()


def load_bare(location, placement):
    """The bare side: diffusers' own loading of the same folder, nothing of the studio's."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(location, torch_dtype=placement.dtype, safety_checker=None,
                                             requires_safety_checker=False).to(placement.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bare_call(bare, args, guidance: float, seed: int, placement, **more):
    """One bare batch with the studio's starting noise (CPU generator per picture, as ImagePipeline draws it)."""
    scale = bare.vae_scale_factor
    shape = (bare.unet.config.in_channels, args.size // scale, args.size // scale)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(args.batch)])
    bare.scheduler = scheduler_for(bare, "DPM++ 2M")
    with torch.inference_mode():
        out = bare(["red heart"] * args.batch, num_inference_steps=args.steps, width=args.size, height=args.size,
                   guidance_scale=guidance, latents=noise.to(placement.device, placement.dtype), **more).images
    synchronize(placement)
    return out


def hires_fix_times(pipe: ImagePipeline, bare, placement, args) -> tuple[float, float]:
    """Median seconds: the studio's hires fix vs the same two diffusers passes called by hand."""
    from diffusers import AutoPipelineForImage2Image

    hires = HiresParams(scale=2.0, upscaler="Latent", steps=args.steps, strength=0.5)
    params = ImageParams(prompt="red heart", steps=args.steps, width=args.size, height=args.size, seed=0,
                         batch_size=args.batch, scheduler="DPM++ 2M", hires=hires)
    second = AutoPipelineForImage2Image.from_pipe(bare)
    prompts = ["red heart"] * args.batch
    studio_times, bare_times = [], []
    for rep in range(args.reps + 1):
        start = time.perf_counter()
        pipe(params)
        synchronize(placement)
        s = time.perf_counter() - start
        start = time.perf_counter()
        latents = bare_call(bare, args, params.guidance, 0, placement, output_type="latent")
        latents = torch.nn.functional.interpolate(latents, scale_factor=2, mode="bilinear")
        second.scheduler = scheduler_for(second, "DPM++ 2M")
        with torch.inference_mode():
            second(prompts, image=latents, strength=0.5, num_inference_steps=args.steps,
                   guidance_scale=params.guidance, generator=torch.Generator().manual_seed(0))
        synchronize(placement)
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
    parser.add_argument("--compile", action="store_true", help="the studio side and UNet rows with torch.compile")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    args = parser.parse_args()
    placement = pick_placement("auto")
    registry = Registry(default_cache_dir())
    resolved = registry.resolve(registry.lookup(args.model, "image"))
    speed = SpeedParams.for_device(placement.device, compile=args.compile, compile_mode=args.compile_mode)
    model = load_image_model(resolved, placement)
    applied = speed_up(model, speed)
    pipe = ImagePipeline(model)
    bare = load_bare(resolved.path, placement)
    params = ImageParams(prompt="red heart", steps=args.steps, width=args.size, height=args.size, seed=0,
                         batch_size=args.batch, scheduler="DPM++ 2M")
    studio_times, bare_times = [], []
    for rep in range(args.reps + 2):  # two warm-ups (a compiled studio compiles in the first)
        start = time.perf_counter()
        pipe(params)
        synchronize(placement)
        s = time.perf_counter() - start
        start = time.perf_counter()
        bare_call(bare, args, params.guidance, 0, placement)
        b = time.perf_counter() - start
        if rep >= 2:
            studio_times.append(s)
            bare_times.append(b)
    s, b = statistics.median(studio_times), statistics.median(bare_times)
    hires_s, hires_b = hires_fix_times(pipe, bare, placement, args)
    report = Report("image")
    print = report.line
    print(f"\n{args.model} on {placement.describe()}, {torch.get_num_threads()} threads, {args.batch} images "
          f"{args.size}×{args.size}, {args.steps} steps, median of {args.reps}")
    print(f"studio side: {', '.join(applied) or 'as loaded'}; bare side: DiffusionPipeline.from_pretrained, eager")
    print(f"{'measure':44} {'studio':>9} {'bare':>9} {'ratio':>7}")
    print(f"{'seconds for the batch':44} {s:9.3f} {b:9.3f} {b / s:7.3f}")
    print(f"{'seconds per image':44} {s / args.batch:9.3f} {b / args.batch:9.3f}")
    print(f"{f'hires fix 2× ({args.size}→{2 * args.size}), the batch':44} {hires_s:9.3f} {hires_b:9.3f} "
          f"{hires_b / hires_s:7.3f}")
    cases = [("SD 1.5 UNet step, 512×512, batch 2 (CFG)", SD15_UNET, 64, 77, 768, False)] if args.unet_512 else []
    if args.sdxl:
        cases.append(("SDXL UNet step, 1024×1024, batch 2 (CFG)", SDXL_UNET, 128, 77, 2048, True))
    for label, config, latent, tokens, width, xl in cases:
        eager = unet_step_seconds(config, latent, tokens, width, placement, args.reps, xl)
        line = f"{label}: eager {eager * 1000:.1f} ms"
        if args.compile:
            fast = unet_step_seconds(config, latent, tokens, width, placement, args.reps, xl, speed)
            line += f", compiled ({', '.join(applied)}) {fast * 1000:.1f} ms, {eager / fast:.2f}× faster"
        print(line)
    report.save()


if __name__ == "__main__":
    main()

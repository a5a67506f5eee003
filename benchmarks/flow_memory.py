"""One denoising step of a real-size, random-weight Flux.1 / Z-Image transformer under each memory profile the
studio's plan picks for 8/12/16/24 GB cards (pipelines.memory_flow): seconds per step and peak GPU memory.

    python benchmarks/flow_memory.py [--model flux|z-image|both] [--size 1024] [--reps 3]

For each card size the plan is made from the model's real component sizes (bfloat16 weights as published), the
card is imitated by capping this process's share of the GPU (`torch.cuda.set_per_process_memory_fraction`), and
the profile is applied to the transformer alone (its text encoders are not part of a step): all on the GPU, fp8
layerwise casting, or group offload (blocks streamed from the CPU with CUDA streams). An out-of-memory is a result
too ("OOM"), never a crash. Needs a CUDA GPU with room for the largest profile (an H100/H200); random weights:
the numbers are about memory and speed, not pictures.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.memory import DeviceMemory, DoesNotFit, GiB
from pipelines.memory_flow import plan_flow_memory

# Component sizes of the published models in bfloat16 (what the plan reasons about)
SIZES = {"flux": {"transformer": int(23.8 * GiB), "text_encoder_2": int(9.5 * GiB), "text_encoder": int(0.25 * GiB),
                  "vae": int(0.17 * GiB)},
         "z-image": {"transformer": int(12.3 * GiB), "text_encoder": int(8.0 * GiB), "vae": int(0.17 * GiB)}}
CARDS_GB = (80, 24, 16, 12, 8)


def build(model: str):
    """The transformer with the published architecture (the class defaults), random weights, bf16, on the CPU."""
    import diffusers

    cls = diffusers.FluxTransformer2DModel if model == "flux" else diffusers.ZImageTransformer2DModel
    config = {"guidance_embeds": True} if model == "flux" else {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # made in bf16 directly: half the memory and time of fp32 then cast
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return cls(**config).eval()
    finally:
        torch.set_default_dtype(previous)


def step_inputs(model: str, transformer, size: int, device) -> dict:
    """One step's inputs at size×size (VAE scale 8, 2×2 patches) with a 512-token prompt."""
    tokens = (size // 16) ** 2
    bf16 = dict(device=device, dtype=torch.bfloat16)
    if model == "flux":
        ids = torch.zeros(tokens, 3, device=device)
        return dict(hidden_states=torch.randn(1, tokens, 64, **bf16), encoder_hidden_states=torch.randn(1, 512, 4096, **bf16),
                    pooled_projections=torch.randn(1, 768, **bf16), timestep=torch.tensor([0.5], **bf16),
                    img_ids=ids, txt_ids=torch.zeros(512, 3, device=device), guidance=torch.tensor([3.5], **bf16),
                    return_dict=False)
    return dict(x=[torch.randn(16, 1, size // 8, size // 8, **bf16)], t=torch.tensor([0.5], **bf16),
                cap_feats=[torch.randn(512, 2560, **bf16)], return_dict=False)


def place(transformer, plan, device) -> None:
    if plan.fp8_storage:
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if plan.placement == "group_offload":
        transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                         offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    else:  # device or model offload: during a step the transformer is on the GPU either way
        transformer.to(device)


def run_profile(model: str, base, card_gb: int, size: int, reps: int, report: Report) -> None:
    device = torch.device("cuda")
    total = torch.cuda.get_device_properties(0).total_memory
    card = DeviceMemory("cuda", card_gb * GiB, int((card_gb - 0.4) * GiB), host_free=100 * GiB)
    try:
        plan = plan_flow_memory(SIZES[model], card)
    except DoesNotFit as exc:
        report.line(f"{model:8} {card_gb:>3} GB  refused: {exc}")
        return
    torch.cuda.set_per_process_memory_fraction(min(1.0, card_gb * GiB / total))
    import copy

    transformer = copy.deepcopy(base)  # each profile hooks its own copy (casting and offload hooks stay on it)
    try:
        place(transformer, plan, device)
        inputs = step_inputs(model, transformer, size, device)
        torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.inference_mode():
            for _ in range(reps + 1):  # the first is warm-up
                torch.cuda.synchronize()
                start = time.perf_counter()
                transformer(**inputs)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / GiB
        report.line(f"{model:8} {card_gb:>3} GB  {statistics.median(times[1:]):7.3f} s/step  peak {peak:5.1f} GB  "
                    f"{plan.describe()}")
    except torch.OutOfMemoryError:
        report.line(f"{model:8} {card_gb:>3} GB  OOM under {plan.describe()}")
    finally:
        del transformer
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("flux", "z-image", "both"), default="both")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cards", default=",".join(map(str, CARDS_GB)), help="card sizes in GB to imitate")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("flow_memory.py needs a CUDA GPU (run it from benchmarks/gpu_session.sh on a lent machine)")
    report = Report("flow-memory")
    report.line(f"one transformer step at {args.size}², random weights, bfloat16 compute; median of {args.reps}")
    for model in ("flux", "z-image") if args.model == "both" else (args.model,):
        started = time.perf_counter()
        base = build(model)
        report.line(f"{model}: {sum(p.numel() for p in base.parameters()) / 1e9:.1f} B parameters, built in "
                    f"{time.perf_counter() - started:.0f} s")
        for card_gb in (int(c) for c in args.cards.split(",")):
            run_profile(model, base, card_gb, args.size, args.reps, report)
        del base
        gc.collect()
    report.save()


if __name__ == "__main__":
    main()

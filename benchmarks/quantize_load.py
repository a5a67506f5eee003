"""System memory while a flow model is read quantized at load: the studio's one read (planned from the files'
sizes, the planned transformer read once, quantized) beside the older way (read in full, planned, then read again
quantized) and an unquantized read, each in a fresh process, in one run.

    python benchmarks/quantize_load.py [--layers 4 --single-layers 8 --width 1024]

A random-weight Flux.1-shaped folder is built once (its transformer about 1 GB in float32; tiny text encoders and
VAE), then each way loads it through `pipelines.image.load_image_model` on the CPU with a plan that quantizes the
transformer (torchao int8 weight-only; needs `pip install .[quantize]`). Reported: the process's peak resident
memory above what it held before loading (`ru_maxrss`), and the seconds the load took.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WAYS = {"once": "read once, quantized (planned from the files first)",
        "twice": "read in full, planned, read again quantized",
        "plain": "read in full, not quantized"}


def build(folder: Path, layers: int, single_layers: int, width: int) -> Path:
    """The tiny Flux folder of the tests with a bigger random transformer put in its place."""
    import torch
    from diffusers import FluxTransformer2DModel

    from tests.families import build_tiny_flux

    base = build_tiny_flux(folder)
    heads = width // 128
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=layers,
                                             num_single_layers=single_layers, attention_head_dim=128,
                                             num_attention_heads=heads, joint_attention_dim=32,
                                             pooled_projection_dim=32, axes_dims_rope=[16, 56, 56])
    transformer.save_pretrained(base / "transformer")
    return base


def worker(way: str, folder: Path) -> dict:
    """Load `folder` one way in this (fresh) process; its peak memory above the start, in MiB."""
    import torch  # noqa: F401 - imported before the baseline: the libraries are not what is measured

    import pipelines.image as image
    from pipelines.device import pick_placement
    from pipelines.memory import MemoryPlan
    from pipelines.registry import Registry

    plan = MemoryPlan("device", reason="benchmark") if way == "plain" else \
        MemoryPlan("device", quantize="torchao-int8", quantized=("transformer",), reason="benchmark")
    if way == "twice":  # the older way: nothing measured before reading, so the plan comes after a full read
        image.folder_component_bytes = lambda *a, **k: None
    import torchao  # noqa: F401 - the quantizer's import is not what is measured either

    registry = Registry(folder.parent / "cache", offline=True)
    resolved = registry.resolve(registry.lookup(str(folder), "image"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    model = image.load_image_model(resolved, pick_placement("cpu"), offline=True, plan_memory=lambda sizes: plan)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    to_q = model.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    return {"way": way, "peak_mib": (peak - before) / 1024, "seconds": seconds, "weight": type(to_q).__name__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--single-layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--worker", choices=list(WAYS))
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder)))
        return
    from benchmarks.common import Report
    from pipelines.memory import folder_component_bytes

    report = Report("quantize-load")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp), args.layers, args.single_layers, args.width)
        import torch

        size = folder_component_bytes(folder, torch.float32)["transformer"] / 2**20
        report.line(f"random Flux.1-shaped transformer: {args.layers} double + {args.single_layers} single blocks, "
                    f"width {args.width}: {size:.0f} MiB in float32; plan: torchao int8 at load, CPU")
        report.line(f"{'way':<48} {'peak MiB':>9} {'load s':>7}  transformer weights")
        results = {}
        for way in WAYS:
            out = subprocess.run([sys.executable, __file__, "--worker", way, "--folder", str(folder)],
                                 capture_output=True, text=True, check=True, timeout=900)
            results[way] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[way]
            report.line(f"{WAYS[way]:<48} {r['peak_mib']:>9.0f} {r['seconds']:>7.1f}  {r['weight']}")
        once, twice = results["once"]["peak_mib"], results["twice"]["peak_mib"]
        report.line(f"peak memory, read once / read twice: {once / twice:.2f}; "
                    f"read once / unquantized read: {once / results['plain']['peak_mib']:.2f}")
    report.save()


if __name__ == "__main__":
    main()

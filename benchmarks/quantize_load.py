"""System memory while a flow model is read quantized at load: the studio's one read (planned from the files'
sizes, the planned transformer read once, quantized) beside the older way (read in full, planned, then read again
quantized) and an unquantized read, each in a fresh process, in one run.

    python benchmarks/quantize_load.py [--layers 4 --single-layers 8 --width 1024]

A random-weight Flux.1-shaped folder is built (its transformer about 1 GB in float32; tiny text encoders and VAE),
stored in float32 and in bfloat16, then each way loads each through `pipelines.image.load_image_model` on the CPU
at bfloat16 (what GPUs load at) with a plan that quantizes the transformer (torchao int8 weight-only; needs
`pip install .[quantize]`). Reported: the peak of the process's anonymous memory (`RssAnon`: what cannot be given
back without swapping) and of its resident file pages (`RssFile`: memory-mapped weights, given back under
pressure) above what it held before loading, sampled every 2 ms, and the seconds the load took.
"""

from __future__ import annotations

import argparse
import json
import threading
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WAYS = {"once": "read once, quantized (planned from the files first)",
        "twice": "read in full, planned, read again quantized",
        "plain": "read in full, not quantized"}


def build(folder: Path, layers: int, single_layers: int, width: int, stored) -> Path:
    """The tiny Flux folder of the tests with a bigger random transformer, stored as `stored`, in its place."""
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
    transformer.to(stored).save_pretrained(base / "transformer")
    return base


def worker(way: str, folder: Path) -> dict:
    """Load `folder` one way in this (fresh) process; its peak memory above the start, in MiB."""
    import torch  # imported before the baseline: the libraries are not what is measured

    import pipelines.image as image
    from pipelines.device import Placement
    from pipelines.memory import MemoryPlan
    from pipelines.registry import Registry

    plan = MemoryPlan("device", reason="benchmark") if way == "plain" else \
        MemoryPlan("device", quantize="torchao-int8", quantized=("transformer",), reason="benchmark")
    if way == "twice":  # the older way: nothing measured before reading, so the plan comes after a full read
        image.folder_component_bytes = lambda *a, **k: None
    import torchao  # noqa: F401 - the quantizer's import is not what is measured either

    registry = Registry(folder.parent / "cache", offline=True)
    resolved = registry.resolve(registry.lookup(str(folder), "image"))
    before, peak, done = rss(), rss(), threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            now = rss()
            for kind in peak:
                peak[kind] = max(peak[kind], now[kind])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    placement = Placement(torch.device("cpu"), torch.bfloat16)
    model = image.load_image_model(resolved, placement, offline=True, plan_memory=lambda sizes: plan)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    to_q = model.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    return {"way": way, "anon_mib": (peak["RssAnon"] - before["RssAnon"]) / 1024,
            "file_mib": (peak["RssFile"] - before["RssFile"]) / 1024, "seconds": seconds,
            "weight": type(to_q).__name__}


def rss() -> dict[str, int]:
    """This process's resident anonymous and file-backed memory now, in KiB (/proc/self/status)."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("RssAnon:", "RssFile:")):
                name, value = line.split(":")
                found[name] = int(value.split()[0])
    return found


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
    import torch

    for stored in (torch.float32, torch.bfloat16):
        with tempfile.TemporaryDirectory() as tmp:
            folder = build(Path(tmp), args.layers, args.single_layers, args.width, stored)
            size = folder_component_bytes(folder, torch.bfloat16)["transformer"] / 2**20
            report.line(f"random Flux.1-shaped transformer ({args.layers} double + {args.single_layers} single blocks, "
                        f"width {args.width}) stored in {str(stored)[6:]}: {size:.0f} MiB at bfloat16; torchao int8")
            report.line(f"  {'way':<52} {'anon MiB':>8} {'file MiB':>8} {'load s':>6}  transformer weights")
            results = {}
            for way in WAYS:
                out = subprocess.run([sys.executable, __file__, "--worker", way, "--folder", str(folder)],
                                     capture_output=True, text=True, check=True, timeout=900)
                results[way] = r = json.loads(out.stdout.strip().splitlines()[-1])
                report.line(f"  {WAYS[way]:<52} {r['anon_mib']:>8.0f} {r['file_mib']:>8.0f} {r['seconds']:>6.1f}  "
                            f"{r['weight']}")
            once, twice = results["once"], results["twice"]
            report.line(f"  read once / read twice: anonymous memory {once['anon_mib'] / max(twice['anon_mib'], 1):.2f},"
                        f" load time {once['seconds'] / twice['seconds']:.2f}")
            report.line()
    report.save()


if __name__ == "__main__":
    main()

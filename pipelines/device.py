"""Choose the compute device and dtype once, at the app's edge.

CUDA → Apple MPS → CPU unless the user overrides it. Half precision on CUDA/MPS (float16),
float32 on CPU: half precision on a CPU is many times slower and some kernels lack it.
Nothing here runs at import time; callers ask once and pass the result down.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import torch

from pipelines.checks import short

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    """Where models run: a torch device and the dtype their weights use there."""

    device: torch.device
    dtype: torch.dtype

    def describe(self) -> str:
        name = self.device.type
        if name == "cuda":
            name = f"cuda ({torch.cuda.get_device_name(self.device)})"
        return f"{name}, {str(self.dtype).removeprefix('torch.')}"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def pick_device(requested: str = "auto") -> torch.device:
    """The device for `requested` (auto|cuda|mps|cpu); a clear error when it is missing."""
    if requested not in DEVICES and not requested.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {short(requested)})")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but this torch build sees no CUDA GPU; use --device cpu")
    if requested == "mps" and not _mps_available():
        raise ValueError("device 'mps' was requested but Apple MPS is not available here; use --device cpu")
    return torch.device(requested)


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """float16 on CUDA/MPS, float32 on CPU, unless `requested` names one of DTYPES."""
    if requested == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if requested not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)} (got {short(requested)})")
    return DTYPES[requested]


def pick_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    chosen = pick_device(device)
    return Placement(chosen, pick_dtype(chosen, dtype))


def free_memory(device: torch.device | None = None) -> None:
    """Return cached accelerator memory to the driver after a model was dropped."""
    import gc

    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
    if _mps_available() and (device is None or device.type == "mps"):
        torch.mps.empty_cache()


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads share one core's arithmetic units, so
    matrix-heavy inference runs best with one thread per physical core), at most OMP_NUM_THREADS when it is set:
    the cap every OpenMP program honours, torch's included, so llama.cpp keeps to it too."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        usable = min(usable, int(cap))
    cores = None
    if sys.platform == "linux":
        try:
            text = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
        except OSError:
            text = ""
        pairs, physical = set(), "0"
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                physical = value.strip()
            elif key.strip() == "core id":
                pairs.add((physical, value.strip()))
        cores = len(pairs) or None
    elif sys.platform == "darwin":
        try:
            cores = int(subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True,
                                       timeout=5).stdout.strip())
        except (OSError, ValueError, subprocess.TimeoutExpired):
            cores = None
    return max(1, min(cores or usable, usable))


@functools.cache
def cpu_bf16_speedup(size: int = 4096, rounds: int = 5, reps: int = 4) -> float:
    """How much faster a bfloat16 matrix-vector product is than float32 on this CPU (measured once,
    ~0.2 s: the best of interleaved rounds, so a busy moment does not decide it).

    Decoding a language model is one such product per weight matrix per token, bound by memory
    traffic; bfloat16 halves the bytes, and CPUs with AVX-512/AMX bf16 paths turn that into speed
    while older ones emulate it slowly — so we measure instead of guessing from flags."""
    operands = {dtype: (torch.full((size, size), 0.01, dtype=dtype), torch.full((1, size), 0.5, dtype=dtype))
                for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(operands, float("inf"))
    for _ in range(rounds):
        for dtype, (weight, vector) in operands.items():
            torch.nn.functional.linear(vector, weight)
            start = time.perf_counter()
            for _ in range(reps):
                torch.nn.functional.linear(vector, weight)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def text_placement(placement: Placement, requested_dtype: str = "auto") -> Placement:
    """The placement for language models: bfloat16 where it is real and faster — CUDA GPUs that
    compute it natively (compute capability ≥ 8.0; fp16 overflows in some LLMs), Macs whose MPS has it
    (else float32, never float16 by default), and CPUs where bf16 measures ≥1.2× faster (same greedy
    text as float32 on SmolLM2 here: benchmarks/text.py) — otherwise the general placement."""
    if requested_dtype != "auto":
        return placement
    if placement.device.type in ("cuda", "mps"):
        from pipelines.memory import text_dtype

        return replace(placement, dtype=text_dtype(placement.device))
    if placement.device.type == "cpu" and cpu_bf16_speedup() >= 1.2:
        return replace(placement, dtype=torch.bfloat16)
    return placement

"""Choose the compute device and dtype once, at the app's edge.

CUDA → Apple MPS → CPU unless the user overrides it. Half precision on CUDA/MPS (float16),
float32 on CPU: half precision on a CPU is many times slower and some kernels lack it.
Nothing here runs at import time; callers ask once and pass the result down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {requested!r})")
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
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)} (got {requested!r})")
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

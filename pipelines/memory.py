"""Memory plans for accelerators: decided before any weight moves, from what the device has free.

    memory = probe_memory(placement.device, held_by_others=services.device_bytes())
    plan = plan_image_memory(component_bytes(pipe), memory, force_upcast_vae=…)
    apply_image_plan(pipe, plan, placement.device)       # the only place weights reach the device

diffusers' own guidance, followed here: model CPU offload must be enabled *instead of* `.to("cuda")`
(never after it); sequential offload is for cards too small for the largest component; VAE slicing and
tiling are the VAE's own methods (`pipe.vae.enable_slicing()` / `enable_tiling()`); on Apple silicon,
attention slicing is recommended below 64 GB of unified memory. Every decision is a pure function of
the numbers in `DeviceMemory`, so tests can drive it for any card without having one.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

GiB = 2**30
# memory_flow.QUANTIZERS' keys in words (here so describing a plan imports nothing)
QUANTIZER_LABELS = {"torchao-int8": "torchao int8 weight-only", "sdnq-int8": "SDNQ int8",
                    "bnb-int8": "bitsandbytes 8-bit", "bnb-nf4": "bitsandbytes 4-bit NF4", "sdnq-uint4": "SDNQ uint4"}
MPS_SLICING_BELOW = 64 * GiB  # diffusers' MPS guide: attention slicing below 64 GB of RAM


@dataclass(frozen=True)
class DeviceMemory:
    """What an accelerator offers at the moment a model is about to load.

    kind: "cuda", "mps" or "cpu". total / free: bytes (free counts what is already allocated, by us or
    others). held_by_others: bytes our other cached models hold on this device (they can be evicted).
    host_free: system RAM available, for what offloading keeps on the CPU.
    """

    kind: str
    total: int
    free: int
    held_by_others: int = 0
    host_free: int = 64 * GiB
    name: str = ""


@dataclass(frozen=True)
class MemoryPlan:
    """How a pipeline is placed: `placement` is "device", "model_offload" (each component moves to the
    GPU while it runs) or "sequential_offload" (layer by layer: slowest, smallest)."""

    placement: str
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    evict_others: bool = False
    reason: str = ""
    fp8_storage: bool = False  # transformer weights stored in float8, computed in bfloat16 (layerwise casting)
    quantize: str = ""  # a key of memory_flow.QUANTIZERS: these components are read quantized at load time
    quantized: tuple[str, ...] = ()  # which components ("transformer", "text_encoder_2"…)

    def describe(self) -> str:
        label = QUANTIZER_LABELS.get(self.quantize, self.quantize)
        extras = [name for name, on in ((f"{' and '.join(self.quantized)} quantized at load ({label})",
                                         bool(self.quantize and self.quantized)),
                                        ("fp8 layerwise casting of the transformer", self.fp8_storage),
                                        ("attention slicing", self.attention_slicing),
                                        ("VAE slicing", self.vae_slicing), ("VAE tiling", self.vae_tiling),
                                        ("other tabs' models unloaded", self.evict_others)) if on]
        where = {"device": "all on the GPU", "model_offload": "model CPU offload",
                 "sequential_offload": "sequential CPU offload",
                 "group_offload": "group offload (transformer blocks stream to the GPU)"}.get(self.placement,
                                                                                            self.placement)
        return where + (f" + {', '.join(extras)}" if extras else "") + (f" ({self.reason})" if self.reason else "")


class DoesNotFit(RuntimeError):
    """Even the smallest plan cannot hold the model; the message names the sizes and the fix."""


def host_memory_free() -> int:
    """Available system RAM in bytes (Linux /proc/meminfo, macOS vm_stat; a generous guess elsewhere)."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return unified_memory_total() or 16 * GiB


def unified_memory_total() -> int | None:
    """A Mac's unified memory in bytes (`sysctl hw.memsize`), or None elsewhere."""
    if sys.platform != "darwin":
        return None
    try:
        return int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                                  timeout=5).stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def probe_memory(device: torch.device, held_by_others: int = 0) -> DeviceMemory:
    """Read the device's memory now (CUDA: `torch.cuda.mem_get_info`, MPS: unified memory)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return DeviceMemory("cuda", total, free, held_by_others, host_memory_free(),
                            torch.cuda.get_device_name(device))
    if device.type == "mps":
        total = unified_memory_total() or 16 * GiB
        return DeviceMemory("mps", total, host_memory_free(), held_by_others, host_memory_free(), "Apple silicon")
    free = host_memory_free()
    return DeviceMemory("cpu", free, free, held_by_others, free, "CPU")


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (0 for anything that is not a torch module)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def held_bytes(obj, depth: int = 3) -> int:
    """Bytes of weights a loaded pipeline holds (its torch modules, found through `model`, `net`,
    `pipe` and diffusers components, and the add-ons it loaded since: ControlNets, image encoders) — what
    unloading it would give back."""
    if isinstance(obj, torch.nn.Module):
        return module_bytes(obj)
    if depth == 0 or obj is None:
        return 0
    components = getattr(obj, "components", None)
    if isinstance(components, dict):
        return sum(module_bytes(part) for part in components.values())
    addons = sum(module_bytes(part) for part in getattr(obj, "addon_modules", ()) or ())
    return addons + sum(held_bytes(getattr(obj, name, None), depth - 1)
                        for name in ("model", "net", "pipe", "generator"))


def check_addon_fits(device: torch.device, name: str, weights: int, memory: DeviceMemory | None = None) -> None:
    """An add-on (a ControlNet, an IP-Adapter's image encoder) joins a model already on the accelerator: its
    weights and about half as much again for its activations must fit in what is free now (DoesNotFit, in words,
    otherwise). On the CPU nothing is checked: the system's memory is the model's too."""
    if device.type == "cpu":
        return
    memory = memory or probe_memory(device)
    need = weights + weights // 2
    if memory.free < need:
        raise DoesNotFit(f"{name} needs about {need / GiB:.1f} GB of GPU memory beside the model, and "
                         f"{memory.free / GiB:.1f} GB is free: close other tabs' models (the Models tab) or use a "
                         "smaller model")


def component_bytes(pipe) -> dict[str, int]:
    """Bytes per torch component of a diffusers pipeline (unet/transformer, text encoders, vae…)."""
    components = getattr(pipe, "components", {}) or {}
    return {name: size for name, part in components.items() if (size := module_bytes(part))}


def folder_component_bytes(folder: Path | str, dtype: torch.dtype | None, variant: str | None = None,
                           skip: tuple[str, ...] = ()) -> dict[str, int] | None:
    """`component_bytes` of the pipeline a diffusers folder would load as, measured from its files without reading a
    weight: each torch component listed in model_index.json, from its safetensors headers (names, dtypes and shapes;
    a sharded model's index too), floating tensors at `dtype`'s size (the loader casts them; a class's
    `_keep_in_fp32_modules` stay float32 where its library keeps them so), others at their own. `variant`: its
    `model.<variant>.safetensors` files, else the plain ones (else the one variant a folder has, as
    `image_flow._variant` reads it). None when a component cannot be measured so (pickle `.bin` weights, a class
    that does not import, missing files: a hub snapshot not yet complete): then the pipeline must be read to know.
    `skip`: components read from elsewhere (a transformer file beside its base folder), left out.

    It equals `component_bytes` of the loaded pipeline but for what no file holds, or holds twice: buffers a model
    makes itself (CLIP's position ids, rotary tables; a few KB) are not counted, a tied weight stored twice in a
    file would be counted twice, and the fp32 lists of a composite model's parts (transformers merges them when it
    builds the model) are not seen."""
    folder = Path(folder)
    listed = _listed_components(folder)
    if listed is None:
        return None
    sizes = {}
    for name, (library, class_name) in listed.items():
        if name in skip:
            continue
        try:
            cls = getattr(importlib.import_module(library), class_name)
        except (ImportError, AttributeError):
            return None
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            continue  # a tokenizer, a scheduler, a processor: no weights
        files = _weight_files(folder / name, variant)
        if files is None:
            return None
        kept = _kept_in_fp32(cls, dtype)
        sizes[name] = sum(_safetensors_bytes(file, dtype, kept) for file in files)
    return {name: size for name, size in sizes.items() if size}


def file_bytes(file: Path, dtype: torch.dtype | None) -> int:
    """Bytes one weights file takes once read at `dtype`: a safetensors file from its header, a GGUF file as it is
    (it stays quantized)."""
    return _safetensors_bytes(file, dtype, ()) if file.suffix == ".safetensors" else file.stat().st_size


def folder_weights_whole(folder: Path | str, variant: str | None = None) -> bool:
    """Whether every model of a diffusers folder (each component of model_index.json with a `config.json`: not a
    tokenizer, scheduler or processor) has its safetensors weights there, every shard of a sharded one. A hub
    snapshot fetched as a lone transformer file's base (configs, text encoders and VAE) is not whole: its
    transformer's weights were never fetched."""
    folder = Path(folder)
    listed = _listed_components(folder)
    return listed is not None and all(_weight_files(folder / name, variant) is not None for name in listed
                                      if (folder / name / "config.json").is_file())


def _listed_components(folder: Path) -> dict[str, tuple[str, str]] | None:
    """The components a diffusers folder's model_index.json lists, as name: (library, class); None when it does not
    read. Settings (`_class_name`…) and parts left out (`[null, null]`) are not components."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    return {name: tuple(entry) for name, entry in index.items()
            if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2 and None not in entry}


def _weight_files(folder: Path, variant: str | None) -> list[Path] | None:
    """The safetensors files a component's folder is read from (None: none, or only pickle weights)."""
    by_variant: dict[str, list] = {}
    for file in sorted(folder.glob("*.safetensors")):
        parts = file.name.split(".")
        by_variant.setdefault(parts[-2].split("-")[0] if len(parts) > 2 else "", []).append(file)
    wanted = variant if variant in by_variant else "" if "" in by_variant else next(iter(by_variant), None)
    if wanted is None:
        return None
    for index in folder.glob("*.safetensors.index*.json"):  # a sharded model: its shards, as its index names them
        parts = index.name.split(".")
        if (parts[-2] if len(parts) > 4 else "") == wanted:
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            return [folder / shard for shard in shards] if all((folder / s).is_file() for s in shards) else None
    return by_variant[wanted]


def _kept_in_fp32(cls, dtype: torch.dtype | None) -> tuple[str, ...]:
    """The module names a class keeps in float32 when read at `dtype`: diffusers keeps its list at any dtype;
    transformers keeps `_keep_in_fp32_modules` for float16 only (T5's `wo`) and the strict list for bfloat16 too."""
    if dtype is None or dtype == torch.float32:
        return ()
    names = list(getattr(cls, "_keep_in_fp32_modules_strict", None) or ()) if dtype in (torch.float16,
                                                                                       torch.bfloat16) else []
    library = cls.__module__.split(".")[0]
    if library != "transformers" or dtype == torch.float16:
        names += list(getattr(cls, "_keep_in_fp32_modules", None) or ())
    return tuple(names)


MAX_HEADER = 100 * 2**20  # the safetensors library's own limit on a header's length


def safetensors_header(file: Path) -> dict:
    """A safetensors file's header (tensor names → dtype, shape, offsets), read without its weights; ValueError for
    a file whose header length is beyond the format's limit (a broken or crafted file)."""
    with open(file, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > MAX_HEADER:
            raise ValueError(f"{Path(file).name} is not a safetensors file (its header would be {length} bytes)")
        return json.loads(f.read(length))


def _safetensors_bytes(file: Path, dtype: torch.dtype | None, kept: tuple[str, ...]) -> int:
    """Bytes the tensors of one safetensors file take once read at `dtype`, from its header alone (8 bytes of
    length, then JSON: each tensor's dtype, shape and place in the file; floating dtypes are F64…F8_*, BF16)."""
    header = safetensors_header(file)
    keep = re.compile("|".join(rf"(^|\.){re.escape(name)}($|\.)" for name in kept)) if kept else None
    load_size = torch.tensor([], dtype=dtype).element_size() if dtype is not None else None
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        floating = info["dtype"].startswith(("F", "BF"))
        if not floating or load_size is None:
            total += end - start
        else:
            total += math.prod(info["shape"]) * (4 if keep is not None and keep.search(key) else load_size)
    return total


def activation_headroom(denoiser_bytes: int) -> int:
    """Working memory for one denoising step at the model's native size: about half the denoiser's
    weights (SD 1.5 at 512²: ~1 GB; SDXL at 1024²: ~2.5 GB), at least 1 GiB."""
    return max(GiB, denoiser_bytes // 2)


def plan_image_memory(components: dict[str, int], memory: DeviceMemory) -> MemoryPlan:
    """The placement for a diffusion pipeline with these component sizes on this device (a flow-matching
    transformer's pipeline: `pipelines.memory_flow`)."""
    if "transformer" in components:
        from pipelines.memory_flow import plan_flow_memory

        return plan_flow_memory(components, memory)
    total = sum(components.values())
    denoiser = max((components.get(k, 0) for k in ("unet", "transformer")), default=0) or max(components.values(), default=0)
    largest = max(components.values(), default=0)
    headroom = activation_headroom(denoiser)
    if memory.kind == "mps":
        slicing = memory.total < MPS_SLICING_BELOW
        return MemoryPlan("device", attention_slicing=slicing, vae_slicing=slicing, vae_tiling=False,
                          reason=f"{memory.total / GiB:.0f} GB unified memory" + (" (< 64 GB: attention slicing)"
                                                                                  if slicing else ""))
    if memory.kind != "cuda":
        return MemoryPlan("device", reason="CPU")
    reclaimable = memory.free + memory.held_by_others
    tight = lambda room: room < total + headroom + 2 * GiB
    if total + headroom <= memory.free:
        return MemoryPlan("device", vae_slicing=tight(memory.free), vae_tiling=tight(memory.free),
                          reason=f"{total / GiB:.1f} GB of weights fit in {memory.free / GiB:.1f} GB free")
    if total + headroom <= reclaimable:
        return MemoryPlan("device", vae_slicing=tight(reclaimable), vae_tiling=tight(reclaimable), evict_others=True,
                          reason="fits once other tabs' models are unloaded")
    if total > memory.host_free + reclaimable:
        raise DoesNotFit(
            f"this model needs {total / GiB:.1f} GB but the GPU has {reclaimable / GiB:.1f} GB and the system "
            f"{memory.host_free / GiB:.1f} GB free. Close other programs, or choose a smaller model (SD 1.5-class "
            "models need about 2 GB).")
    if largest + headroom <= reclaimable:
        return MemoryPlan("model_offload", attention_slicing=largest + headroom > memory.free * 0.9,
                          vae_slicing=True, vae_tiling=True, evict_others=largest + headroom > memory.free,
                          reason=f"{total / GiB:.1f} GB of weights, {reclaimable / GiB:.1f} GB usable on the GPU")
    return MemoryPlan("sequential_offload", attention_slicing=True, vae_slicing=True, vae_tiling=True,
                      evict_others=memory.held_by_others > 0,
                      reason=f"the largest part ({largest / GiB:.1f} GB) does not fit in {reclaimable / GiB:.1f} GB")


def plan_text_memory(weights: int, memory: DeviceMemory, context_bytes: int = GiB // 2) -> MemoryPlan:
    """The placement for a language model of `weights` bytes: on the device when it fits (after
    unloading other tabs' models if need be), else split between GPU and CPU by accelerate's device
    map ("offload": slower, but it runs); `context_bytes` is room for the KV cache and activations."""
    if memory.kind != "cuda":
        return MemoryPlan("device", reason=memory.kind.upper())
    need = weights + context_bytes
    reclaimable = memory.free + memory.held_by_others
    if need <= memory.free:
        return MemoryPlan("device", reason=f"{weights / GiB:.1f} GB of weights fit in {memory.free / GiB:.1f} GB free")
    if need <= reclaimable:
        return MemoryPlan("device", evict_others=True, reason="fits once other tabs' models are unloaded")
    if weights > memory.host_free + reclaimable:
        raise DoesNotFit(f"this model needs {weights / GiB:.1f} GB but the GPU has {reclaimable / GiB:.1f} GB and the "
                         f"system {memory.host_free / GiB:.1f} GB free. Choose a smaller model or a quantized GGUF.")
    return MemoryPlan("offload", evict_others=memory.held_by_others > 0,
                      reason=f"{weights / GiB:.1f} GB of weights; {reclaimable / GiB:.1f} GB on the GPU, the rest on the CPU")


def apply_text_plan(model, plan: MemoryPlan, device: torch.device, memory: DeviceMemory | None = None):
    """Place a language model that is still on the CPU as `plan` says."""
    if plan.placement != "offload":
        return model.to(device)
    from accelerate import dispatch_model, infer_auto_device_map

    gpu_room = int(((memory.free + memory.held_by_others) if memory else torch.cuda.mem_get_info(device)[0]) * 0.85)
    device_map = infer_auto_device_map(model, max_memory={device.index or 0: gpu_room, "cpu": memory.host_free
                                                          if memory else host_memory_free()},
                                       no_split_module_classes=getattr(model, "_no_split_modules", None))
    return dispatch_model(model, device_map=device_map)


def apply_image_plan(pipe, plan: MemoryPlan, device: torch.device) -> None:
    """Place a pipeline that is still on the CPU as `plan` says. Offload hooks are installed *instead of*
    moving to the device (diffusers: moving first defeats the offload and can run out of memory). Components the
    plan quantizes arrive quantized when the plan was made from the folder's files (`folder_component_bytes`);
    those that do not (a pipeline read before it was planned) are read again, quantized, before anything is
    placed."""
    if plan.quantize and plan.quantized:
        from pipelines.image_flow import quantize_at_load

        quantize_at_load(pipe, plan.quantize, plan.quantized)
    if plan.fp8_storage:
        from pipelines.memory_flow import cast_transformer_fp8

        cast_transformer_fp8(pipe)
    if plan.placement == "group_offload":
        from pipelines.memory_flow import enable_group_offload

        enable_group_offload(pipe, device)
    elif plan.placement == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.placement == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if plan.attention_slicing:
        pipe.enable_attention_slicing()
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        if plan.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        if plan.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()


def text_dtype(device: torch.device, requested: str = "auto", *, capability: tuple[int, int] | None = None,
               mps_bf16: bool | None = None) -> torch.dtype | None:
    """The dtype for language models on an accelerator, or None to keep the general choice.

    CUDA: bfloat16 only where the GPU computes it natively (compute capability 8.0, Ampere, or newer);
    older cards emulate it slowly, so they get float16. MPS: bfloat16 where macOS supports it (14+),
    else float32 — never float16 by default: its range overflows in many LLMs and sampling then sees NaN.
    """
    if requested != "auto":
        return None
    if device.type == "cuda":
        major, minor = capability or torch.cuda.get_device_capability(device)
        return torch.bfloat16 if (major, minor) >= (8, 0) else torch.float16
    if device.type == "mps":
        supported = mps_bf16 if mps_bf16 is not None else _mps_supports_bf16()
        return torch.bfloat16 if supported else torch.float32
    return None


def _mps_supports_bf16() -> bool:
    backend = getattr(torch.backends, "mps", None)
    check = getattr(backend, "is_macos_or_newer", None)
    try:
        return bool(check(14, 0)) if check else False
    except Exception:
        return False


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and MPS's RuntimeError ("MPS backend out of memory …")."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def out_of_memory_where(exc: BaseException) -> str:
    """Which memory an out-of-memory error ran out of, in words for people."""
    if "mps" in str(exc).lower():
        return "Apple GPU (MPS)"
    return "GPU" if torch.cuda.is_available() else "machine"

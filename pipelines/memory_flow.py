"""Memory plans for flow-matching transformer pipelines (Flux, Z-Image, Qwen-Image, SD3.5, Chroma, Sana) — the
big denoisers of today, on the cards artists have (8, 12, 16, 24 GB and more, Apple silicon, the CPU).

The steps, smallest change first, each taken only when the one before does not fit the GPU's usable memory
(free now, plus what other tabs' models hold and would give back):
1. all on the GPU;
2. model CPU offload: each component visits the GPU while it runs (the text encoders leave before denoising);
3. + fp8 layerwise casting: the transformer's weights stored in float8 (half of bfloat16), each layer cast up to
   its compute dtype as it runs (diffusers' `enable_layerwise_casting`; CUDA only);
4. quantized at load: the transformer and/or the large text encoders (T5-XXL, Qwen2.5-VL, Mistral, Gemma) read
   quantized by an installed quantizer — 8-bit first (torchao int8 weight-only, SDNQ int8, bitsandbytes 8-bit),
   then 4-bit (bitsandbytes NF4, SDNQ uint4) — all on the GPU when that fits, else with model offload;
5. group offload: the transformer's blocks stream to the GPU one group at a time (diffusers'
   `enable_group_offload`, overlapping copies with compute), with fp8 storage;
6. refused in words, with the fix (the quantizer to install, a GGUF-quantized transformer file, a smaller model).
On Apple silicon and the CPU, where offloading does not help, a model that does not fit is quantized at load when
a quantizer for that platform is installed (SDNQ on MPS; torchao or SDNQ on the CPU), else refused in words.
A GGUF transformer arrives quantized: its component size is already the small one, and it is never cast or
quantized again. Which quantizers are installed is found by importing them when a plan is made (never at import
of this module); every other decision is a pure function of the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.memory import MPS_SLICING_BELOW, QUANTIZER_LABELS, DeviceMemory, DoesNotFit, GiB, MemoryPlan

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
LARGE_ENCODER = 2 * GiB  # T5-XXL (9.5 GB), Qwen2.5-VL, Mistral, Gemma are quantized with the transformer; CLIP is not


@dataclass(frozen=True)
class Quantizer:
    """A way to quantize weights at load time: `package` is what to import (and `pip install`), `devices` the
    torch device kinds it runs on, `bits` per weight."""

    key: str
    package: str
    bits: int
    devices: tuple[str, ...]

    @property
    def label(self) -> str:
        return QUANTIZER_LABELS[self.key]

    def size(self, loaded: int) -> int:
        """About the bytes of a component of `loaded` bytes in 16-bit once quantized: the weights at `bits`, plus
        their scales and the layers left as they are (norms, embeddings). Conservative for the CPU's float32."""
        return int(loaded * (self.bits / 16 + 0.04))


# the order of preference: 8-bit before 4-bit (closer to the model's own pictures), the fastest first per size
QUANTIZERS = (
    Quantizer("torchao-int8", "torchao", 8, ("cuda", "cpu")),
    Quantizer("sdnq-int8", "sdnq", 8, ("cuda", "mps", "cpu")),
    Quantizer("bnb-int8", "bitsandbytes", 8, ("cuda",)),
    Quantizer("bnb-nf4", "bitsandbytes", 4, ("cuda",)),
    Quantizer("sdnq-uint4", "sdnq", 4, ("cuda", "mps", "cpu")),
)
SUGGESTED = {"cuda": "bitsandbytes", "mps": "sdnq", "cpu": "torchao"}  # what to install, per device kind


def available_quantizers(kind: str) -> tuple[Quantizer, ...]:
    """The quantizers that run on device `kind` and import here (tried now, at plan time: a broken install, such
    as a bitsandbytes without its CUDA libraries, counts as absent)."""
    import importlib

    found = []
    for quantizer in QUANTIZERS:
        if kind not in quantizer.devices:
            continue
        try:
            importlib.import_module(quantizer.package)
        except Exception:  # noqa: BLE001 - ImportError, or a library that fails while loading its kernels
            continue
        found.append(quantizer)
    return tuple(found)


def quantized_fit(components: dict[str, int], quantizers, fits) -> tuple[Quantizer, tuple[str, ...], dict] | None:
    """The first quantizer and components (the transformer; the large text encoders; both) whose quantized sizes
    satisfy `fits(sizes)`, or None: 8-bit before 4-bit, and as few components touched as will do."""
    large = tuple(n for n in TEXT_ENCODERS if components.get(n, 0) >= LARGE_ENCODER)
    own = ("transformer",) if "transformer" in components else ()
    choices = [names for names in (own, large, own + large) if names]
    for quantizer in quantizers:
        for names in dict.fromkeys(choices):
            sizes = {n: quantizer.size(b) if n in names else b for n, b in components.items()}
            if fits(sizes):
                return quantizer, names, sizes
    return None


def install_hint(kind: str) -> str:
    """The refusal's words for quantizing at load on this kind of device."""
    package = SUGGESTED[kind]
    return f"install a quantizer to read it quantized at load (pip install {package})"


def flow_headroom(transformer: int) -> int:
    """Working memory for one step at about a megapixel: activations of a transformer are smaller than a UNet's
    share of its weights (Flux.1 at 1024²: ~3 GB beside 23.8 GB of weights), at least 1.5 GiB."""
    return max(3 * GiB // 2, transformer // 8)


def gb(n: int) -> str:
    return f"{n / GiB:.1f} GB"


def _quantized_plan(placement: str, choice, why: str, **extra) -> MemoryPlan:
    quantizer, names, sizes = choice
    shrunk = ", ".join(f"{name} {gb(sizes[name])}" for name in names)
    return MemoryPlan(placement, quantize=quantizer.key, quantized=names, **extra,
                      reason=f"{why}; read quantized at load with {quantizer.label} ({shrunk})")


def plan_flow_memory(components: dict[str, int], memory: DeviceMemory, quantizers=None) -> MemoryPlan:
    """The placement for a transformer pipeline with these component sizes (bytes, as loaded) on this device.
    `quantizers`: those installed (default: found by importing them, only once a model does not fit as it is);
    only those that run on this kind of device are used."""
    found = [quantizers]

    def installed() -> tuple[Quantizer, ...]:
        if found[0] is None:
            found[0] = available_quantizers(memory.kind)
        return tuple(q for q in found[0] if memory.kind in q.devices)

    transformer = components.get("transformer", 0)
    total = sum(components.values())
    headroom = flow_headroom(transformer)
    if memory.kind == "cpu":
        if total <= memory.host_free:
            return MemoryPlan("device", reason=f"CPU: {gb(total)} of weights in system memory; slow (minutes a "
                                               "picture)")
        choice = quantized_fit(components, installed(), lambda sizes: sum(sizes.values()) <= memory.host_free)
        if choice is not None:
            return _quantized_plan("device", choice, f"CPU: {gb(total)} of weights are more than the "
                                   f"{gb(memory.host_free)} free")
        raise DoesNotFit(f"this model needs {gb(total)} of memory and the system has {gb(memory.host_free)} free"
                         f"{_even_quantized(installed())}: {_hint(installed(), 'cpu')}choose a GGUF-quantized "
                         "transformer file or a smaller model (Sana, SD3.5 Medium)")
    if memory.kind == "mps":
        return _plan_mps(components, memory, installed, headroom)
    return _plan_cuda(components, memory, installed, headroom)


def _even_quantized(quantizers) -> str:
    return " even quantized to 4-bit" if quantizers else ""


def _hint(quantizers, kind: str) -> str:
    return "" if quantizers else f"{install_hint(kind)}, or "


def _plan_mps(components: dict[str, int], memory: DeviceMemory, installed, headroom: int) -> MemoryPlan:
    total = sum(components.values())
    usable = int(memory.total * 0.7)  # macOS keeps about a third of unified memory for itself and the GPU's
    slicing = memory.total < MPS_SLICING_BELOW
    if total + headroom <= usable:
        return MemoryPlan("device", attention_slicing=slicing, vae_tiling=True,
                          reason=f"{gb(total)} of weights fit in {gb(memory.total)} of unified memory")
    choice = quantized_fit(components, installed(), lambda sizes: sum(sizes.values()) + headroom <= usable)
    if choice is not None:
        return _quantized_plan("device", choice, f"{gb(total)} of weights are more than the {gb(usable)} this Mac "
                               "lends the GPU", attention_slicing=slicing, vae_tiling=True)
    fix = _hint(installed(), "mps") + "use"
    raise DoesNotFit(f"this model needs about {gb(total + headroom)} and this Mac lends the GPU about "
                     f"{gb(usable)} of its {gb(memory.total)}{_even_quantized(installed())}; offloading does not "
                     f"help with unified memory. {fix[0].upper() + fix[1:]} a GGUF-quantized transformer file (Q4: "
                     "about a quarter of the size) or a smaller model (Sana, SD3.5 Medium, Flux.2 Klein 4B)")


def _plan_cuda(components: dict[str, int], memory: DeviceMemory, installed, headroom: int) -> MemoryPlan:
    transformer = components.get("transformer", 0)
    total = sum(components.values())
    room = memory.free + memory.held_by_others
    evict = lambda need: need > memory.free
    if total + headroom <= room:
        return MemoryPlan("device", vae_tiling=total + headroom + 2 * GiB > room, evict_others=evict(total + headroom),
                          reason=f"{gb(total)} of weights fit in {gb(room)} usable")
    if total > memory.host_free + room:
        raise DoesNotFit(f"this model needs {gb(total)} but the GPU has {gb(room)} and the system "
                         f"{gb(memory.host_free)} free: use a GGUF-quantized transformer file or a smaller model")
    largest = max(components.values())
    if largest + headroom <= room:
        return MemoryPlan("model_offload", vae_tiling=True, evict_others=evict(largest + headroom),
                          reason=f"{gb(total)} of weights do not fit in {gb(room)}; the largest part "
                                 f"({gb(largest)}) does, so each part visits the GPU in turn")
    fp8 = transformer // 2
    encoders = max((components.get(name, 0) for name in TEXT_ENCODERS), default=0)
    if max(fp8, encoders) + headroom <= room:
        return MemoryPlan("model_offload", fp8_storage=True, vae_tiling=True, evict_others=evict(fp8 + headroom),
                          reason=f"the transformer ({gb(transformer)}) fits in {gb(room)} only stored in fp8 "
                                 f"({gb(fp8)}), computed in bfloat16 layer by layer")
    parts_fit = lambda sizes: max(sizes.values()) + headroom <= room
    choice = quantized_fit(components, installed(), parts_fit)
    if choice is not None:
        sizes = choice[2]
        whole = sum(sizes.values()) + headroom <= room
        need = sum(sizes.values()) + headroom if whole else max(sizes.values()) + headroom
        return _quantized_plan("device" if whole else "model_offload", choice,
                               f"even in fp8 the transformer ({gb(fp8)}) or a text encoder ({gb(encoders)}) is "
                               f"too much for {gb(room)}" + ("" if whole else "; each part visits the GPU in turn"),
                               vae_tiling=True, evict_others=evict(need))
    if headroom + GiB <= room:
        could = quantized_fit(components, [q for q in QUANTIZERS if "cuda" in q.devices], parts_fit)
        faster = (f" ({install_hint('cuda')}: it would fit with {could[0].label}, and run faster)"
                  if could is not None and not installed() else "")
        return MemoryPlan("group_offload", fp8_storage=True, vae_tiling=True, evict_others=memory.held_by_others > 0,
                          reason=f"the transformer in fp8 ({gb(fp8)}) is still more than {gb(room)}: its blocks "
                                 f"stream from the CPU a group at a time (slower, but it runs){faster}")
    raise DoesNotFit(f"even streaming its blocks, this model needs about {gb(headroom + GiB)} of GPU memory and "
                     f"{gb(room)} is usable: close other tabs' models, {_hint(installed(), 'cuda')}choose a "
                     "GGUF-quantized transformer file or a smaller model")


def is_quantized(module) -> bool:
    return getattr(module, "hf_quantizer", None) is not None or getattr(module, "is_quantized", False)


def cast_transformer_fp8(pipe) -> None:
    """Store the transformer's weights in float8 (e4m3), computing in the dtype it was loaded in (bfloat16 on a
    GPU) — never a quantized (GGUF) one."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is None or is_quantized(transformer):
        return
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=transformer.dtype)


def enable_group_offload(pipe, device: torch.device) -> None:
    """Every component streams to `device` a block at a time, copies overlapped with compute on CUDA."""
    pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                              num_blocks_per_group=1, use_stream=device.type == "cuda")

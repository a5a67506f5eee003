"""Memory plans for flow-matching transformer pipelines (Flux, Z-Image, Qwen-Image, SD3.5, Chroma, Sana) — the
big denoisers of today, on the cards artists have (8, 12, 16, 24 GB and more, Apple silicon, the CPU).

The steps, smallest change first, each taken only when the one before does not fit the GPU's usable memory
(free now, plus what other tabs' models hold and would give back):
1. all on the GPU;
2. model CPU offload: each component visits the GPU while it runs (the text encoders leave before denoising);
3. + fp8 layerwise casting: the transformer's weights stored in float8 (half of bfloat16), each layer cast up to
   its compute dtype as it runs (diffusers' `enable_layerwise_casting`; CUDA only);
4. group offload: the transformer's blocks stream to the GPU one group at a time (diffusers'
   `enable_group_offload`, overlapping copies with compute), with fp8 storage;
5. refused in words, with the fix (a GGUF-quantized transformer file, or a smaller model).
A GGUF transformer arrives quantized: its component size is already the small one, and it is never cast again.
Quantizing at load time (bitsandbytes, torchao, SDNQ) needs packages this environment does not install; the
plan names them in its refusal rather than pretending. Every decision is a pure function of the numbers.
"""

from __future__ import annotations

import torch

from pipelines.memory import MPS_SLICING_BELOW, DeviceMemory, DoesNotFit, GiB, MemoryPlan

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def flow_headroom(transformer: int) -> int:
    """Working memory for one step at about a megapixel: activations of a transformer are smaller than a UNet's
    share of its weights (Flux.1 at 1024²: ~3 GB beside 23.8 GB of weights), at least 1.5 GiB."""
    return max(3 * GiB // 2, transformer // 8)


def plan_flow_memory(components: dict[str, int], memory: DeviceMemory) -> MemoryPlan:
    """The placement for a transformer pipeline with these component sizes (bytes, as loaded) on this device."""
    transformer = components.get("transformer", 0)
    total = sum(components.values())
    headroom = flow_headroom(transformer)
    gb = lambda n: f"{n / GiB:.1f} GB"
    if memory.kind == "cpu":
        if total > memory.host_free:
            raise DoesNotFit(f"this model needs {gb(total)} of memory and the system has {gb(memory.host_free)} free: "
                             "choose a GGUF-quantized transformer file or a smaller model (Sana, SD3.5 Medium)")
        return MemoryPlan("device", reason=f"CPU: {gb(total)} of weights in system memory; slow (minutes a picture)")
    if memory.kind == "mps":
        usable = int(memory.total * 0.7)  # macOS keeps about a third of unified memory for itself and the GPU's
        if total + headroom > usable:
            raise DoesNotFit(f"this model needs about {gb(total + headroom)} and this Mac lends the GPU about "
                             f"{gb(usable)} of its {gb(memory.total)}; offloading does not help with unified memory. "
                             "Use a GGUF-quantized transformer file (Q4: about a quarter of the size) or a smaller "
                             "model (Sana, SD3.5 Medium, Flux.2 Klein 4B)")
        slicing = memory.total < MPS_SLICING_BELOW
        return MemoryPlan("device", attention_slicing=slicing, vae_tiling=True,
                          reason=f"{gb(total)} of weights fit in {gb(memory.total)} of unified memory")
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
    if headroom + GiB <= room:
        return MemoryPlan("group_offload", fp8_storage=True, vae_tiling=True, evict_others=memory.held_by_others > 0,
                          reason=f"the transformer in fp8 ({gb(fp8)}) is still more than {gb(room)}: its blocks "
                                 "stream from the CPU a group at a time (slower, but it runs)")
    raise DoesNotFit(f"even streaming its blocks, this model needs about {gb(headroom + GiB)} of GPU memory and "
                     f"{gb(room)} is usable: close other tabs' models or choose a smaller model")


def _is_quantized(module) -> bool:
    return getattr(module, "hf_quantizer", None) is not None or getattr(module, "is_quantized", False)


def cast_transformer_fp8(pipe) -> None:
    """Store the transformer's weights in float8 (e4m3), computing in the dtype it was loaded in (bfloat16 on a
    GPU) — never a quantized (GGUF) one."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is None or _is_quantized(transformer):
        return
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=transformer.dtype)


def enable_group_offload(pipe, device: torch.device) -> None:
    """Every component streams to `device` a block at a time, copies overlapped with compute on CUDA."""
    pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                              num_blocks_per_group=1, use_stream=device.type == "cuda")

"""Memory plans on machines we do not have: 4, 8 and 24 GB CUDA cards and a 16 GB Mac, each loading
SD 1.5, SDXL and a 1.5 B text model — decided from mocked device numbers, applied before any weight
moves; dtypes per device; out-of-memory recovery on CUDA and MPS."""

from __future__ import annotations

import os

import pytest
import torch

from pipelines.memory import (
    DeviceMemory,
    DoesNotFit,
    GiB,
    MemoryPlan,
    apply_image_plan,
    is_out_of_memory,
    plan_image_memory,
    plan_text_memory,
    probe_memory,
    text_dtype,
)

# float16 component sizes of the real models (parameters × 2 bytes)
SD15 = {"unet": 859_520_964 * 2, "text_encoder": 123_060_480 * 2, "vae": 83_653_863 * 2}
SDXL = {"unet": 2_567_463_684 * 2, "text_encoder": 123_060_480 * 2, "text_encoder_2": 694_659_840 * 2,
        "vae": 83_653_863 * 2}
TEXT_1_5B = 1_543_714_304 * 2  # Qwen2.5-1.5B in bfloat16


def card(total_gb: float, used_gb: float = 0.4, held_by_others_gb: float = 0.0) -> DeviceMemory:
    """A CUDA card as `torch.cuda.mem_get_info` would describe it (the driver's context takes some)."""
    total = int(total_gb * GiB)
    return DeviceMemory("cuda", total, total - int((used_gb + held_by_others_gb) * GiB),
                        int(held_by_others_gb * GiB), host_free=28 * GiB)


MAC16 = DeviceMemory("mps", 16 * GiB, 10 * GiB, host_free=10 * GiB, name="Apple M2")

PLANS = [
    # (memory, model, placement, attention slicing, VAE slicing, VAE tiling)
    (card(4), SD15, "device", False, True, True),
    (card(4), SDXL, "sequential_offload", True, True, True),
    (card(8), SD15, "device", False, False, False),
    (card(8), SDXL, "model_offload", True, True, True),
    (card(24), SD15, "device", False, False, False),
    (card(24), SDXL, "device", False, False, False),
    (MAC16, SD15, "device", True, True, False),
    (MAC16, SDXL, "device", True, True, False),
]


@pytest.mark.parametrize("memory, model, placement, attention, vae_slicing, vae_tiling", PLANS)
def test_image_plans_for_each_machine(memory, model, placement, attention, vae_slicing, vae_tiling):
    plan = plan_image_memory(model, memory)
    assert (plan.placement, plan.attention_slicing, plan.vae_slicing, plan.vae_tiling) == \
        (placement, attention, vae_slicing, vae_tiling), plan.describe()
    assert not plan.evict_others


def test_other_tabs_models_are_unloaded_only_when_the_new_one_needs_their_room():
    # an 8 GB card already holding a 3 GB text model: SD 1.5 still fits beside it, SDXL needs the room
    busy = card(8, held_by_others_gb=3)
    assert plan_image_memory(SD15, busy) == MemoryPlan("device", vae_slicing=True, vae_tiling=True,
                                                       reason=plan_image_memory(SD15, busy).reason)
    sdxl = plan_image_memory(SDXL, busy)
    assert sdxl.placement == "model_offload" and sdxl.evict_others
    # a 24 GB card holding 12 GB of other models: SDXL fits after unloading them, fully on the GPU
    crowded = plan_image_memory(SDXL, card(24, held_by_others_gb=16))
    assert crowded.placement == "device" and crowded.evict_others


def test_a_model_that_fits_nowhere_is_refused_with_sizes():
    tiny_machine = DeviceMemory("cuda", 4 * GiB, 3 * GiB, host_free=2 * GiB)
    with pytest.raises(DoesNotFit, match=r"needs 6\.5 GB but the GPU has 3\.0 GB and the system 2\.0 GB"):
        plan_image_memory(SDXL, tiny_machine)


@pytest.mark.parametrize("memory, placement, evict", [
    (card(3), "offload", False),  # a 3 GB card: part of the layers stay on the CPU
    (card(4), "device", False),  # 2.9 GB of weights + 0.5 GB for the KV cache fit in 3.6 GB free
    (card(8), "device", False),
    (card(24), "device", False),
    (card(8, held_by_others_gb=6), "device", True),
    (MAC16, "device", False),
])
def test_text_plans(memory, placement, evict):
    plan = plan_text_memory(TEXT_1_5B, memory)
    assert (plan.placement, plan.evict_others) == (placement, evict), plan.describe()


@pytest.mark.parametrize("capability, dtype", [((6, 1), torch.float16), ((7, 5), torch.float16),
                                               ((8, 0), torch.bfloat16), ((8, 9), torch.bfloat16)])
def test_bfloat16_only_where_the_gpu_computes_it(capability, dtype):
    assert text_dtype(torch.device("cuda"), capability=capability) == dtype


def test_text_on_mps_is_never_float16_by_default():
    assert text_dtype(torch.device("mps"), mps_bf16=True) == torch.bfloat16
    assert text_dtype(torch.device("mps"), mps_bf16=False) == torch.float32
    assert text_dtype(torch.device("mps"), "float16") is None  # an explicit choice is kept as asked


def test_probe_reads_cuda_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(5.5 * GiB), 8 * GiB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3070")
    memory = probe_memory(torch.device("cuda"), held_by_others=GiB)
    assert (memory.kind, memory.free, memory.total, memory.held_by_others) == ("cuda", int(5.5 * GiB), 8 * GiB, GiB)
    assert memory.name == "NVIDIA GeForce RTX 3070"


class _Recorder:
    """Stands in for a diffusers pipeline: records how weights would reach the device, in order."""

    def __init__(self, calls: list) -> None:
        self.calls = calls
        self.vae = self

    def to(self, *args, **kwargs):
        self.calls.append("to")
        return self

    def __getattr__(self, name):
        if name.startswith("enable_"):
            return lambda *a, **k: self.calls.append(name)
        raise AttributeError(name)


@pytest.mark.parametrize("plan, expected", [
    (MemoryPlan("device"), ["to"]),
    (MemoryPlan("device", vae_slicing=True, vae_tiling=True), ["to", "enable_slicing", "enable_tiling"]),
    (MemoryPlan("model_offload", attention_slicing=True, vae_slicing=True, vae_tiling=True),
     ["enable_model_cpu_offload", "enable_attention_slicing", "enable_slicing", "enable_tiling"]),
    (MemoryPlan("sequential_offload", attention_slicing=True, vae_slicing=True, vae_tiling=True),
     ["enable_sequential_cpu_offload", "enable_attention_slicing", "enable_slicing", "enable_tiling"]),
])
def test_offload_replaces_moving_to_the_device(plan, expected):
    calls: list = []
    apply_image_plan(_Recorder(calls), plan, torch.device("cuda"))
    assert calls == expected  # never .to("cuda") and then offload


def test_load_image_model_plans_before_any_weight_moves(tiny_sd_dir, monkeypatch):
    """The loader computes the plan while every weight is still on the CPU and applies it once."""
    from diffusers import DiffusionPipeline

    from pipelines.device import Placement
    from pipelines.image import load_image_model
    from pipelines.registry import Registry

    events: list = []

    def planner(sizes):
        events.append(("plan", sorted(sizes)))
        return MemoryPlan("model_offload", vae_slicing=True)

    monkeypatch.setattr(DiffusionPipeline, "enable_model_cpu_offload", lambda self, device=None: events.append("offload"))
    monkeypatch.setattr(DiffusionPipeline, "to", lambda self, *a, **k: events.append("to") or self)
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")),
                             Placement(torch.device("cuda"), torch.float32), offline=True, plan_memory=planner)
    assert events == [("plan", ["text_encoder", "unet", "vae"]), "offload"]
    assert model.plan.placement == "model_offload" and model.pipe.vae.use_slicing


def test_out_of_memory_is_recognised_on_cuda_and_mps():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: "
                                         "1.00 GB, max allowed: 18.13 GB). Tried to allocate 256 MB on private pool."))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_force_upcast_vae_decodes_in_float32_and_returns_to_half():
    from diffusers import AutoencoderKL

    from pipelines.image import vae_decode
    from pipelines.vae import vae_placement

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4, force_upcast=True)
    vae = vae.half()
    seen = []
    vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    out = vae_decode(vae, torch.randn(1, 4, 8, 8, dtype=torch.float16))
    assert seen == [torch.float32] and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert vae.dtype == torch.float16  # back to half for the pipeline
    from pipelines.device import Placement

    half = Placement(torch.device("cuda"), torch.float16)
    assert vae_placement(half, force_upcast=True).dtype == torch.float32
    assert vae_placement(half, force_upcast=False).dtype == torch.float16


def test_out_of_memory_frees_prompt_caches_and_says_so_in_plain_words(tmp_path, tiny_lm_dir):
    from pipelines.text import TextParams
    from studio.config import load_settings
    from studio.services import Services
    from studio.events import _explain

    services = Services.create(load_settings(None, outputs=tmp_path / "out", cache_dir=tmp_path / "cache",
                                             device="cpu", offline=True))
    pipe = services.host.text_pipeline(str(tiny_lm_dir))
    pipe(TextParams(prompt="Hello there, how are you today?", mode="chat", max_new_tokens=4, temperature=0))
    assert len(pipe.prompt_cache) == 1
    assert not services.host.recover_from_out_of_memory(RuntimeError("shape mismatch"))
    assert len(pipe.prompt_cache) == 1
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB). Tried to allocate 256 MB")
    assert services.host.recover_from_out_of_memory(mps)
    assert len(pipe.prompt_cache) == 0
    message = str(_explain(mps))
    assert "Apple GPU (MPS) ran out of memory" in message and "the next request will work" in message
    # the retry works
    assert pipe(TextParams(prompt="Hello again", max_new_tokens=3, temperature=0)).new_tokens > 0


def test_an_addon_is_counted_against_the_gpu_memory_free_and_in_what_a_model_holds():
    """A ControlNet or an IP-Adapter's encoder joins a model on the GPU: it must fit (weights and half again for
    its work) in what is free, said in words otherwise; and what the model holds counts it."""
    from types import SimpleNamespace

    from pipelines.memory import DeviceMemory, DoesNotFit, check_addon_fits, held_bytes

    gpu = DeviceMemory("cuda", 8 * GiB, 2 * GiB)
    check_addon_fits(torch.device("cuda"), "the ControlNet x", GiB, gpu)  # 1.5 GB of 2 free
    with pytest.raises(DoesNotFit, match=r"the ControlNet x needs about 2.2 GB of GPU memory beside the model, and "
                                         r"2.0 GB is free"):
        check_addon_fits(torch.device("cuda"), "the ControlNet x", int(1.5 * GiB), gpu)
    check_addon_fits(torch.device("cpu"), "the ControlNet x", 100 * GiB)  # the CPU: not checked
    net = torch.nn.Linear(100, 10)  # 1,010 float32 numbers
    model = SimpleNamespace(pipe=SimpleNamespace(components={"unet": torch.nn.Linear(10, 10)}), addon_modules=[net])
    assert held_bytes(SimpleNamespace(model=model)) == 4 * (110 + 1010)


def test_cpu_threads_keep_to_omp_num_threads_when_it_is_set(monkeypatch):
    from pipelines.device import physical_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = physical_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert physical_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4096")  # a cap above the cores gives the cores
    assert physical_cores() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored, as OpenMP ignores it
    assert physical_cores() == cores

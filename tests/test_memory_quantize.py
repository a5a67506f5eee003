"""Quantizing at load time: the plan per mocked card (8/12/16/24 GB CUDA, Apple silicon, the CPU) with the
quantizers present or absent, found by import only when needed; and a tiny random Flux-shaped folder read
quantized (torchao int8 weight-only, SDNQ) on the CPU that still draws — skipped where the package is missing."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from pipelines import memory_flow
from pipelines.memory import DeviceMemory, DoesNotFit, GiB, MemoryPlan
from pipelines.memory_flow import QUANTIZERS, available_quantizers, plan_flow_memory
from tests.test_memory_families import FLUX_DEV, Z_IMAGE_TURBO, card

QWEN_IMAGE = {"transformer": int(40.9 * GiB), "text_encoder": int(16.6 * GiB), "vae": int(0.25 * GiB)}
ALL = QUANTIZERS
NONE = ()
BNB = tuple(q for q in QUANTIZERS if q.package == "bitsandbytes")
MAC = DeviceMemory("mps", 32 * GiB, 20 * GiB, host_free=20 * GiB)
CPU = DeviceMemory("cpu", 24 * GiB, 24 * GiB, host_free=24 * GiB)

PLANS = [
    # (memory, model, quantizers installed, placement, quantizer chosen, components quantized)
    (card(24), FLUX_DEV, ALL, "model_offload", "", ()),  # fp8 casting fits: nothing to install, nothing touched
    (card(16), FLUX_DEV, ALL, "model_offload", "", ()),
    (card(12), FLUX_DEV, ALL, "model_offload", "bnb-nf4", ("transformer", "text_encoder_2")),
    (card(12), FLUX_DEV, NONE, "group_offload", "", ()),
    (card(8), FLUX_DEV, ALL, "group_offload", "", ()),  # 4-bit and a megapixel's activations: still too much
    (card(24), Z_IMAGE_TURBO, ALL, "device", "", ()),
    (card(16), Z_IMAGE_TURBO, ALL, "model_offload", "", ()),
    (card(12), Z_IMAGE_TURBO, ALL, "model_offload", "", ()),
    (card(8), Z_IMAGE_TURBO, ALL, "device", "bnb-nf4", ("transformer", "text_encoder")),
    (card(8), Z_IMAGE_TURBO, NONE, "group_offload", "", ()),
    (card(24), QWEN_IMAGE, ALL, "model_offload", "bnb-nf4", ("transformer",)),
    (card(24), QWEN_IMAGE, BNB, "model_offload", "bnb-nf4", ("transformer",)),
    (card(16), QWEN_IMAGE, ALL, "group_offload", "", ()),
    (MAC, FLUX_DEV, ALL, "device", "sdnq-int8", ("transformer", "text_encoder_2")),
    (MAC, QWEN_IMAGE, ALL, "device", "sdnq-uint4", ("transformer", "text_encoder")),
    (MAC, Z_IMAGE_TURBO, NONE, "device", "", ()),
    (CPU, FLUX_DEV, ALL, "device", "torchao-int8", ("transformer",)),
    (CPU, QWEN_IMAGE, ALL, "device", "sdnq-uint4", ("transformer", "text_encoder")),
]


@pytest.mark.parametrize("memory, model, quantizers, placement, method, names", PLANS)
def test_the_plan_quantizes_only_what_would_not_fit_otherwise(memory, model, quantizers, placement, method, names):
    plan = plan_flow_memory(model, memory, quantizers=quantizers)
    assert (plan.placement, plan.quantize, plan.quantized) == (placement, method, names), plan.describe()
    assert not (plan.quantize and plan.fp8_storage), "a quantized transformer is never cast to fp8 as well"
    if method:
        label = memory_flow.QUANTIZER_LABELS[method]
        assert f"{' and '.join(names)} quantized at load ({label})" in plan.describe()
        assert f"read quantized at load with {label} (transformer " in plan.reason  # the sizes it expects


def test_the_plan_says_what_it_chose_and_why_in_words():
    text = plan_flow_memory(FLUX_DEV, card(12), quantizers=ALL).describe()
    assert text.startswith("model CPU offload + transformer and text_encoder_2 quantized at load (bitsandbytes "
                           "4-bit NF4), VAE tiling (even in fp8 the transformer (11.9 GB) or a text encoder (9.5 GB) "
                           "is too much for 11.6 GB; each part visits the GPU in turn; read quantized at load with "
                           "bitsandbytes 4-bit NF4 (transformer 6.9 GB, text_encoder_2 2.8 GB))"), text


def test_without_a_quantizer_the_slow_plan_names_the_one_that_would_be_faster():
    text = plan_flow_memory(FLUX_DEV, card(12), quantizers=NONE).describe()
    assert "blocks stream from the CPU" in text
    assert "pip install bitsandbytes): it would fit with bitsandbytes 4-bit NF4, and run faster" in text


@pytest.mark.parametrize("memory, model, quantizers, words", [
    (MAC, FLUX_DEV, NONE, "offloading does not help with unified memory. Install a quantizer to read it quantized "
                          "at load \\(pip install sdnq\\), or use a GGUF-quantized transformer file"),
    (MAC, FLUX_DEV, BNB, "pip install sdnq"),  # bitsandbytes is for CUDA: on a Mac it does not count
    (CPU, FLUX_DEV, NONE, "24.0 GB free: install a quantizer to read it quantized at load \\(pip install torchao\\), "
                          "or choose a GGUF-quantized transformer file"),
    (DeviceMemory("cpu", 8 * GiB, 8 * GiB, host_free=8 * GiB), QWEN_IMAGE, ALL,
     "8.0 GB free even quantized to 4-bit: choose a GGUF-quantized transformer file"),
    (card(4), FLUX_DEV, NONE, "3.6 GB is usable: close other tabs' models, install a quantizer to read it quantized "
                              "at load \\(pip install bitsandbytes\\), or choose a GGUF-quantized transformer file"),
])
def test_what_cannot_fit_is_refused_naming_what_to_install(memory, model, quantizers, words):
    with pytest.raises(DoesNotFit, match=words):
        plan_flow_memory(model, memory, quantizers=quantizers)


def _modules(monkeypatch, **present: bool) -> None:
    """Mock which quantizer packages import: a stand-in module, or None (which makes `import` fail)."""
    for name, here in present.items():
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name) if here else None)


@pytest.mark.parametrize("present, kind, keys", [
    (dict(torchao=True, sdnq=False, bitsandbytes=False), "cuda", ("torchao-int8",)),
    (dict(torchao=False, sdnq=False, bitsandbytes=True), "cuda", ("bnb-int8", "bnb-nf4")),
    (dict(torchao=False, sdnq=False, bitsandbytes=True), "cpu", ()),
    (dict(torchao=True, sdnq=True, bitsandbytes=True), "mps", ("sdnq-int8", "sdnq-uint4")),
    (dict(torchao=True, sdnq=True, bitsandbytes=True), "cpu", ("torchao-int8", "sdnq-int8", "sdnq-uint4")),
    (dict(torchao=False, sdnq=False, bitsandbytes=False), "cuda", ()),
])
def test_quantizers_are_found_by_import_per_platform(monkeypatch, present, kind, keys):
    _modules(monkeypatch, **present)
    assert tuple(q.key for q in available_quantizers(kind)) == keys


def test_a_quantizer_is_looked_for_at_plan_time_and_only_when_the_model_does_not_fit(monkeypatch):
    looked = []
    monkeypatch.setattr(memory_flow, "available_quantizers", lambda kind: looked.append(kind) or ())
    plan_flow_memory(Z_IMAGE_TURBO, card(24))
    plan_flow_memory(FLUX_DEV, card(16))  # fp8 casting is enough
    assert looked == []
    assert plan_flow_memory(FLUX_DEV, card(12)).placement == "group_offload"
    assert looked == ["cuda"]


def test_importing_the_planner_imports_no_quantizer():
    import subprocess

    code = ("import sys, pipelines.memory_flow, pipelines.image_flow, pipelines.memory; "
            "print([m for m in ('torchao', 'sdnq', 'bitsandbytes') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"


# -- a tiny Flux-shaped folder, read quantized on the CPU ------------------------------------------------------

def _load(folder, tmp_path, plan_memory):
    from pipelines.device import pick_placement
    from pipelines.image import load_image_model
    from pipelines.registry import Registry

    registry = Registry(tmp_path / "cache", offline=True)
    resolved = registry.resolve(registry.lookup(str(folder), "image"))
    return load_image_model(resolved, pick_placement("cpu"), offline=True, plan_memory=plan_memory)


def _picture(model, seed=1):
    from pipelines.image import ImageLimits, ImageParams, ImagePipeline

    params = ImageParams(prompt="a red fox", steps=2, width=64, height=64, scheduler="Flow Euler", seed=seed)
    return np.asarray(ImagePipeline(model, ImageLimits())(params).images[0]).astype(float)


def _too_big_for_the_cpu(quantizer_key):
    """A planner as on a CPU with a little less free memory than the model needs as loaded."""
    quantizer = next(q for q in QUANTIZERS if q.key == quantizer_key)
    return lambda sizes: plan_flow_memory(sizes, DeviceMemory("cpu", 0, 0, host_free=sum(sizes.values()) - 1),
                                          quantizers=(quantizer,))


@pytest.mark.parametrize("package, key", [("torchao", "torchao-int8"), ("sdnq", "sdnq-int8")])
def test_a_tiny_flux_folder_read_quantized_on_the_cpu_still_draws(tmp_path, monkeypatch, package, key):
    pytest.importorskip(package, reason=f"{package} is not installed (pip install .[quantize]): nothing to quantize "
                                        "with")
    from tests.families import build_tiny_flux

    folder = build_tiny_flux(tmp_path)
    reference = _picture(_load(folder, tmp_path, lambda sizes: MemoryPlan("device", reason="test")))
    events: list = []
    _record_reads(monkeypatch, events)
    model = _load(folder, tmp_path, _too_big_for_the_cpu(key))
    assert (model.plan.quantize, model.plan.quantized) == (key, ("transformer",)), model.plan.describe()
    assert [e for e in events if e[0] == "file"].count(("file", "transformer")) == 1, "read once, quantized"
    assert model.pipe.transformer.is_quantized and model.pipe.transformer.hf_quantizer is not None
    assert not getattr(model.pipe.text_encoder_2, "is_quantized", False)  # a tiny T5: under LARGE_ENCODER
    picture = _picture(model)
    assert picture.std() > 1
    assert np.abs(picture - reference).mean() < 8, "int8 weights draw nearly the same picture"
    assert np.array_equal(picture, _picture(model)), "reproducible by seed"


def test_text_encoders_are_read_quantized_too(tmp_path):
    pytest.importorskip("torchao", reason="torchao is not installed (pip install .[quantize])")
    from tests.families import build_tiny_flux

    plan = MemoryPlan("device", quantize="torchao-int8", quantized=("transformer", "text_encoder_2"), reason="test")
    model = _load(build_tiny_flux(tmp_path), tmp_path, lambda sizes: plan)
    assert model.pipe.text_encoder_2.hf_quantizer is not None
    assert type(model.pipe.transformer.transformer_blocks[0].attn.to_q.weight).__name__ == "Int8Tensor"
    assert _picture(model).std() > 1


def test_a_transformer_file_is_read_quantized_from_that_file(tmp_path):
    pytest.importorskip("torchao", reason="torchao is not installed (pip install .[quantize])")
    from tests.families import build_tiny_flux
    from tests.test_families import _transformer_file

    from safetensors.torch import load_file, save_file

    file = _transformer_file(build_tiny_flux(tmp_path), tmp_path, ".safetensors")
    weights = {key: value * 1.5 for key, value in load_file(file).items()}  # not the base folder's transformer
    save_file(weights, file)
    plan = MemoryPlan("device", quantize="torchao-int8", quantized=("transformer",), reason="test")
    model = _load(file, tmp_path, lambda sizes: plan)
    to_q = model.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(to_q).__name__ == "Int8Tensor"
    expected = weights["transformer_blocks.0.attn.to_q.weight"]
    assert (to_q.dequantize().float() - expected.float()).abs().max() < expected.abs().max() / 50
    assert _picture(model).std() > 1


def test_a_gguf_transformer_stays_as_it_is(tmp_path):
    from tests.families import build_tiny_flux
    from tests.test_families import _transformer_file

    file = _transformer_file(build_tiny_flux(tmp_path), tmp_path, ".gguf")
    # the quantizer is never asked for: the GGUF transformer is quantized already
    plan = MemoryPlan("device", quantize="torchao-int8", quantized=("transformer",), reason="test")
    model = _load(file, tmp_path, lambda sizes: plan)
    assert model.pipe.transformer.hf_quantizer.__class__.__name__ == "GGUFQuantizer"


# -- planned from the folder's files before a weight is read; what the plan quantizes is read once, quantized ------

@pytest.mark.parametrize("builder", ["build_tiny_flux", "build_tiny_qwen_image", "build_tiny_sd3", "build_tiny_z_image",
                                     "build_tiny_sana"])
def test_a_folder_is_measured_from_its_files_as_it_would_load(tmp_path, builder):
    from tests import families

    _assert_measured_as_loaded(getattr(families, builder)(tmp_path))


def test_the_tiny_sd_folder_is_measured_as_it_would_load(tiny_sd_dir):
    _assert_measured_as_loaded(tiny_sd_dir, safety_checker=None, requires_safety_checker=False)


def _assert_measured_as_loaded(folder, **kwargs):
    """`folder_component_bytes` against `component_bytes` of the pipeline read at float32, bfloat16 and float16
    (float16 keeps T5's `wo` in float32: the flux and sd3 folders' T5 checks that)."""
    import torch
    from diffusers import DiffusionPipeline

    from pipelines.memory import component_bytes, folder_component_bytes

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        measured = folder_component_bytes(folder, dtype)
        loaded = component_bytes(DiffusionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True,
                                                                   **kwargs))
        assert measured.keys() == loaded.keys(), (dtype, measured, loaded)
        for name, size in loaded.items():
            # no file holds the buffers a model makes itself (CLIP's position ids, rotary tables): a few hundred
            # bytes, under 1% of these tiny models (and nothing next to a real model's gigabytes)
            assert 0.99 * size <= measured[name] <= size, (dtype, name, measured[name], size)


def test_sharded_variant_and_pickle_weights(tmp_path):
    import torch
    from diffusers import FluxTransformer2DModel

    from pipelines.memory import folder_component_bytes
    from tests.families import build_tiny_flux

    folder = build_tiny_flux(tmp_path)
    before = folder_component_bytes(folder, torch.float32)
    transformer = FluxTransformer2DModel.from_pretrained(folder / "transformer")
    for file in (folder / "transformer").glob("*.safetensors"):
        file.unlink()
    transformer.to(torch.float16).save_pretrained(folder / "transformer", variant="fp16", max_shard_size="100KB")
    assert len(list((folder / "transformer").glob("*.fp16-*.safetensors"))) > 1  # shards, and their index
    assert folder_component_bytes(folder, torch.float32) == before  # float16 files, read as float32
    assert folder_component_bytes(folder, torch.float32, "fp16") == before
    assert folder_component_bytes(folder, torch.float16)["transformer"] == before["transformer"] // 2
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    vae.rename(vae.with_suffix(".bin"))
    assert folder_component_bytes(folder, torch.float32) is None, "pickle weights cannot be measured unread"


class _StandInConfig:
    """What `image_flow.quantization_config` gives here: a quantizer's config, for a quantizer not installed."""

    def __init__(self, method: str) -> None:
        self.method = method


def _record_reads(monkeypatch, events: list) -> None:
    """Record every component read (diffusers' and transformers' `from_pretrained`: its folder's name and its
    quantization config) and every diffusers weights file read, in order. A read with a stand-in config gives
    the model as it is, marked quantized (as a quantizer's own would be)."""
    import diffusers
    import transformers
    from diffusers.models import modeling_utils

    for base in (diffusers.ModelMixin, transformers.PreTrainedModel):
        def spy(cls, source, *args, _original=base.from_pretrained.__func__, **kwargs):
            config = kwargs.get("quantization_config")
            events.append(("read", kwargs.get("subfolder") or Path(str(source)).name, config))
            if isinstance(config, _StandInConfig):
                kwargs.pop("quantization_config")
            model = _original(cls, source, *args, **kwargs)
            if isinstance(config, _StandInConfig):
                model.is_quantized = True
            return model

        monkeypatch.setattr(base, "from_pretrained", classmethod(spy))
    read_file = modeling_utils.load_state_dict
    monkeypatch.setattr(modeling_utils, "load_state_dict", lambda file, *a, **k: events.append(
        ("file", Path(str(file)).parent.name)) or read_file(file, *a, **k))


def _stand_in_quantizers(monkeypatch) -> None:
    from pipelines import image_flow

    monkeypatch.setattr(image_flow, "quantization_config",
                        lambda method, *, for_diffusers, dtype: _StandInConfig(method))


def _planner(events: list, plan: MemoryPlan):
    return lambda sizes: events.append(("plan", sizes)) or plan


TRANSFORMER_AT_LOAD = MemoryPlan("device", quantize="torchao-int8", quantized=("transformer",), reason="test")


def test_a_planned_transformer_is_read_once_quantized_after_the_plan(tmp_path, monkeypatch):
    import torch

    from pipelines.memory import folder_component_bytes
    from tests.families import build_tiny_flux

    folder = build_tiny_flux(tmp_path)
    measured = folder_component_bytes(folder, torch.float32)
    events: list = []
    _record_reads(monkeypatch, events)
    _stand_in_quantizers(monkeypatch)
    model = _load(folder, tmp_path, _planner(events, TRANSFORMER_AT_LOAD))
    assert events[0] == ("plan", measured), "planned from the files' sizes before any weight was read"
    reads = [(name, config) for kind, name, config in (e for e in events if e[0] == "read")]
    assert sorted(name for name, _ in reads) == ["text_encoder", "text_encoder_2", "transformer", "vae"], reads
    assert [(name, config.method) for name, config in reads if config] == [("transformer", "torchao-int8")]
    assert [e for e in events if e[0] == "file"].count(("file", "transformer")) == 1, "its weights read once"
    assert model.plan is TRANSFORMER_AT_LOAD and model.pipe.transformer.is_quantized
    assert model.plan.describe().startswith("all on the GPU + transformer quantized at load (torchao int8")
    assert _picture(model).std() > 1


def _hub_cache(monkeypatch, tmp_path, folder, repo: str = "tiny/flux", unfetched: tuple[str, ...] = ()):
    """The hub's cache (in tmp_path) holding `folder` as the snapshot of `repo`, as a download leaves it; with
    `unfetched`, also the repo's file listing the hub library keeps, naming files of the repo never fetched (as
    diffusers' download leaves a repo that holds more than its pipeline reads: Flux.1-dev's root checkpoint)."""
    import shutil

    import huggingface_hub.constants

    from pipelines.registry import ModelSpec, ResolvedModel

    cache = tmp_path / "hub"
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, entry / "snapshots" / ("0" * 40))
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("0" * 40)
    if unfetched:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

        snapshot = entry / "snapshots" / ("0" * 40)
        listing = {f.relative_to(snapshot).as_posix(): TreeCacheEntry(size=f.stat().st_size, blob_id="kept")
                   for f in snapshot.rglob("*") if f.is_file()}
        listing.update({name: TreeCacheEntry(size=1, blob_id="never-fetched") for name in unfetched})
        write_tree_cache(str(entry), "0" * 40, listing)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return ResolvedModel(ModelSpec(repo.split("/")[-1], "image", "hub", repo), repo)


def _load_resolved(resolved, planner):
    from pipelines.device import pick_placement
    from pipelines.image import load_image_model

    return load_image_model(resolved, pick_placement("cpu"), offline=True, plan_memory=planner)


def test_a_hub_model_in_the_cache_is_planned_from_its_snapshot(tmp_path, monkeypatch):
    import torch

    from pipelines.image_flow import model_folder
    from pipelines.memory import folder_component_bytes
    from tests.families import build_tiny_flux

    resolved = _hub_cache(monkeypatch, tmp_path, build_tiny_flux(tmp_path))
    assert model_folder("tiny/flux", offline=True).is_dir()
    assert model_folder("tiny/not-downloaded", offline=True) is None
    events: list = []
    _record_reads(monkeypatch, events)
    _stand_in_quantizers(monkeypatch)
    model = _load_resolved(resolved, _planner(events, TRANSFORMER_AT_LOAD))
    assert events[0] == ("plan", folder_component_bytes(model_folder("tiny/flux", offline=True), torch.float32))
    assert [e for e in events if e[0] == "file"].count(("file", "transformer")) == 1
    assert model.pipe.transformer.is_quantized and model.pipe.config._name_or_path == "tiny/flux"


def _read_then_planned(monkeypatch, events: list) -> None:
    """Record when `load_image_model` measures the pipeline it has read (the read-then-plan way)."""
    from pipelines import image

    measure = image.component_bytes
    monkeypatch.setattr(image, "component_bytes", lambda pipe: events.append("measured the read pipeline") or
                        measure(pipe))


def test_a_hub_model_not_in_the_cache_is_downloaded_then_planned_before_it_is_read(tmp_path, monkeypatch):
    """Online, a flow model's files are downloaded first (diffusers' `DiffusionPipeline.download`: what
    `from_pretrained` would fetch), then planned from their sizes, then read once, quantized where planned."""
    import torch
    from diffusers import DiffusionPipeline

    from pipelines.device import pick_placement
    from pipelines.image import load_image_model
    from pipelines.memory import folder_component_bytes
    from tests.families import build_tiny_flux

    resolved = _hub_cache(monkeypatch, tmp_path, build_tiny_flux(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no hub here: the cache answers
    events: list = []
    download = DiffusionPipeline.download.__func__  # the cache already holds it: "downloading" finds it there
    monkeypatch.setattr(DiffusionPipeline, "download", classmethod(lambda cls, repo, **kw: events.append(
        ("download", repo, kw.get("local_files_only"))) or download(cls, repo, **{**kw, "local_files_only": True})))
    _record_reads(monkeypatch, events)
    _stand_in_quantizers(monkeypatch)
    model = load_image_model(resolved, pick_placement("cpu"), offline=False,
                             plan_memory=_planner(events, TRANSFORMER_AT_LOAD))
    assert events[0] == ("download", "tiny/flux", False)
    snapshot = next((tmp_path / "hub" / "models--tiny--flux" / "snapshots").iterdir())
    assert events[1] == ("plan", folder_component_bytes(snapshot, torch.float32)), "planned before any read"
    assert [e for e in events if e[0] == "file"].count(("file", "transformer")) == 1
    assert model.pipe.transformer.is_quantized


def test_an_sd_hub_model_is_read_then_planned_as_before(tmp_path, monkeypatch, tiny_sd_dir):
    """Its model_index.json says SD: nothing is downloaded ahead of `from_pretrained` (which fetches only what it
    reads, without the safety checker); its plans never quantize, so it is read, then planned."""
    from pipelines.image_flow import model_folder

    resolved = _hub_cache(monkeypatch, tmp_path, tiny_sd_dir, "tiny/sd")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no hub here: the cache answers
    assert model_folder("tiny/sd", offline=False) is None
    events: list = []
    _read_then_planned(monkeypatch, events)
    model = _load_resolved(resolved, lambda sizes: events.append("plan") or MemoryPlan("device", reason="test"))
    assert events == ["measured the read pipeline", "plan"] and model.family is None


def test_a_single_sd_file_is_read_then_planned(tmp_path, tiny_sd_dir, monkeypatch):
    from pipelines.device import pick_placement
    from pipelines.image import load_image_model
    from pipelines.memory import component_bytes
    from pipelines.registry import Registry
    from tests.ldm_export import export_ldm_checkpoint

    single = export_ldm_checkpoint(tiny_sd_dir, tmp_path / "tiny-sd.safetensors")
    events: list = []
    _read_then_planned(monkeypatch, events)
    registry = Registry(tmp_path / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(single), "image")), pick_placement("cpu"),
                             offline=True, single_file_config=tiny_sd_dir,
                             plan_memory=_planner(events, MemoryPlan("device", reason="test")))
    assert events[0] == "measured the read pipeline"
    assert events[1] == ("plan", component_bytes(model.pipe))


def test_a_transformer_file_is_planned_with_its_base_folder_and_its_text_encoder_read_once_quantized(tmp_path,
                                                                                                    monkeypatch):
    """A transformer file beside its base folder: the plan sees the file's size with the folder's other parts before
    any weight is read, and a text encoder it quantizes is read once, quantized (not read, then read again)."""
    import torch

    from pipelines.memory import file_bytes, folder_component_bytes
    from tests.families import build_tiny_flux
    from tests.test_families import _transformer_file

    from safetensors.torch import load_file

    folder = build_tiny_flux(tmp_path)
    file = _transformer_file(folder, tmp_path, ".safetensors")
    base = tmp_path / "flux-tiny-config"
    shutil.rmtree(base / "transformer")  # a base folder as downloaded for a transformer file: no transformer
    (base / "transformer").mkdir()
    shutil.copy(folder / "transformer" / "config.json", base / "transformer" / "config.json")
    measured = {**folder_component_bytes(base, torch.float32, skip=("transformer",)),
                "transformer": file_bytes(file, torch.float32)}
    assert measured["transformer"] == sum(t.numel() * 4 for t in load_file(file).values())
    events: list = []
    _record_reads(monkeypatch, events)
    _stand_in_quantizers(monkeypatch)
    plan = MemoryPlan("device", quantize="torchao-int8", quantized=("text_encoder_2",), reason="test")
    model = _load(file, tmp_path, _planner(events, plan))
    assert events[0] == ("plan", measured), "planned from the files' sizes before any weight was read"
    reads = [(name, config) for kind, name, config in (e for e in events if e[0] == "read")]
    assert [name for name, config in reads if config] == ["text_encoder_2"]
    assert [name for name, _ in reads].count("text_encoder_2") == 1, reads
    assert model.plan is plan and model.pipe.text_encoder_2.is_quantized and _picture(model).std() > 1


@pytest.mark.parametrize("measured", [True, False])
def test_a_hub_model_fetched_by_its_pipeline_is_found_whole_though_its_repo_holds_more(tmp_path, monkeypatch,
                                                                                        measured):
    """The hub library calls a snapshot incomplete when files of the repo's listing were never fetched (a root
    checkpoint, a pickle twin); what the pipeline reads is all there: planned from it before reading, or — when it
    is read first — read again quantized from it."""
    from pipelines import image
    from tests.families import build_tiny_flux

    resolved = _hub_cache(monkeypatch, tmp_path, build_tiny_flux(tmp_path), unfetched=(
        "flux1-dev.safetensors", "transformer/diffusion_pytorch_model.bin"))
    if not measured:  # the read-then-plan way (quantize_at_load's `_local_source`)
        monkeypatch.setattr(image, "folder_component_bytes", lambda *a, **k: None)
    events: list = []
    _record_reads(monkeypatch, events)
    _stand_in_quantizers(monkeypatch)
    model = _load_resolved(resolved, _planner(events, TRANSFORMER_AT_LOAD))
    assert (events[0][0] == "plan") is measured
    assert model.pipe.transformer.is_quantized

"""Memory plans for today's transformer families on mocked cards (8/12/16/24/80 GB, Apple silicon, the CPU):
what the plan picks, that it says why, and that it refuses in words when nothing fits."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.memory import DeviceMemory, DoesNotFit, GiB, MemoryPlan, plan_image_memory

# Component sizes as loaded in bfloat16 (the models' own files)
FLUX_DEV = {"transformer": int(23.8 * GiB), "text_encoder_2": int(9.5 * GiB), "text_encoder": int(0.25 * GiB),
            "vae": int(0.17 * GiB)}
Z_IMAGE_TURBO = {"transformer": int(12.3 * GiB), "text_encoder": int(8.0 * GiB), "vae": int(0.17 * GiB)}
FLUX_DEV_GGUF_Q4 = {**FLUX_DEV, "transformer": int(6.8 * GiB)}


@pytest.fixture(autouse=True)
def no_quantizer_installed(monkeypatch):
    """These plans are for an install without quantizers (tests/test_memory_quantize.py has those with them)."""
    from pipelines import memory_flow

    monkeypatch.setattr(memory_flow, "available_quantizers", lambda kind: ())


def card(total_gb: float, used_gb: float = 0.4, held_by_others_gb: float = 0.0) -> DeviceMemory:
    total = int(total_gb * GiB)
    return DeviceMemory("cuda", total, total - int((used_gb + held_by_others_gb) * GiB), int(held_by_others_gb * GiB),
                        host_free=60 * GiB)


PLANS = [
    # (memory, model, placement, fp8 storage)
    (card(80), FLUX_DEV, "device", False),
    (card(24), FLUX_DEV, "model_offload", True),
    (card(16), FLUX_DEV, "model_offload", True),
    (card(12), FLUX_DEV, "group_offload", True),
    (card(8), FLUX_DEV, "group_offload", True),
    (card(24), Z_IMAGE_TURBO, "device", False),
    (card(16), Z_IMAGE_TURBO, "model_offload", False),
    (card(12), Z_IMAGE_TURBO, "model_offload", True),
    (card(8), Z_IMAGE_TURBO, "group_offload", True),
    (card(16), FLUX_DEV_GGUF_Q4, "model_offload", False),
    (DeviceMemory("mps", 64 * GiB, 40 * GiB, host_free=40 * GiB), FLUX_DEV, "device", False),
    (DeviceMemory("cpu", 60 * GiB, 60 * GiB, host_free=60 * GiB), FLUX_DEV, "device", False),
]


@pytest.mark.parametrize("memory, model, placement, fp8", PLANS)
def test_flow_plans_for_each_card(memory, model, placement, fp8):
    plan = plan_image_memory(model, memory)
    assert (plan.placement, plan.fp8_storage) == (placement, fp8), plan.describe()
    assert plan.reason  # a sentence saying why
    if memory.kind == "cuda" and memory.total <= 16 * GiB:
        assert plan.vae_tiling, "small cards decode a megapixel in tiles"


def test_the_plan_says_what_it_chose_and_why():
    text = plan_image_memory(FLUX_DEV, card(16)).describe()
    assert text.startswith("model CPU offload + fp8 layerwise casting of the transformer")
    assert "only stored in fp8 (11.9 GB)" in text
    assert "blocks stream from the CPU" in plan_image_memory(FLUX_DEV, card(8)).describe()


@pytest.mark.parametrize("memory, words", [
    (card(4), "even streaming its blocks, this model needs about 4.0 GB of GPU memory and 3.6 GB is usable"),
    (DeviceMemory("mps", 16 * GiB, 10 * GiB, host_free=10 * GiB), "offloading does not help with unified memory"),
    (DeviceMemory("cpu", 16 * GiB, 16 * GiB, host_free=16 * GiB), "choose a GGUF-quantized transformer file"),
])
def test_what_cannot_fit_is_refused_in_words(memory, words):
    with pytest.raises(DoesNotFit, match=words):
        plan_image_memory(FLUX_DEV, memory)


def test_other_tabs_models_give_their_room_only_when_needed():
    assert not plan_image_memory(Z_IMAGE_TURBO, card(48, held_by_others_gb=4)).evict_others
    plan = plan_image_memory(Z_IMAGE_TURBO, card(24, held_by_others_gb=4))
    assert (plan.placement, plan.evict_others) == ("device", True)


def test_fp8_storage_applies_to_the_transformer_and_it_still_draws(tmp_path):
    import torch

    from pipelines.device import pick_placement
    from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
    from pipelines.registry import Registry
    from tests.families import build_tiny_flux

    folder = build_tiny_flux(tmp_path)
    registry = Registry(tmp_path / "cache", offline=True)
    resolved = registry.resolve(registry.lookup(str(folder), "image"))
    plan = MemoryPlan("device", fp8_storage=True, reason="test")
    model = load_image_model(resolved, pick_placement("cpu"), offline=True, plan_memory=lambda sizes: plan)
    weights = dict(model.pipe.transformer.named_parameters())
    assert weights["transformer_blocks.0.attn.to_q.weight"].dtype == torch.float8_e4m3fn
    out = ImagePipeline(model, ImageLimits())(ImageParams(prompt="a red fox", steps=2, width=64, height=64,
                                                          scheduler="Flow Euler", seed=1))
    assert np.asarray(out.images[0]).std() > 1
    assert model.plan.describe().startswith("all on the GPU + fp8 layerwise casting")


def test_group_offload_places_the_pipeline_and_it_still_draws(tmp_path):
    from pipelines.device import pick_placement
    from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
    from pipelines.registry import Registry
    from tests.families import build_tiny_z_image

    folder = build_tiny_z_image(tmp_path)
    registry = Registry(tmp_path / "cache", offline=True)
    resolved = registry.resolve(registry.lookup(str(folder), "image"))
    reference = load_image_model(resolved, pick_placement("cpu"), offline=True,
                                 plan_memory=lambda sizes: MemoryPlan("device", reason="test"))
    plan = MemoryPlan("group_offload", reason="test")  # (tiling would tile even 64² with this tiny VAE)
    model = load_image_model(resolved, pick_placement("cpu"), offline=True, plan_memory=lambda sizes: plan)
    assert getattr(model.pipe.transformer, "_diffusers_hook", None) is not None  # the offload hooks are in place
    params = ImageParams(prompt="a red fox", steps=2, width=64, height=64, scheduler="Flow Euler", seed=4)
    picture = np.asarray(ImagePipeline(model, ImageLimits())(params).images[0])
    assert np.array_equal(picture, np.asarray(ImagePipeline(reference, ImageLimits())(params).images[0]))

"""The hires fix on flow-matching families that have image to image in diffusers: the first pass, upscaled in
pixels, then the family's image-to-image pipeline at the target size, seeded picture by picture; families without
it refuse in words naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
from pipelines.image_flow import guidance_inputs
from pipelines.image_upscale import HiresParams
from pipelines.registry import Registry
from tests.families import build_tiny_flux, build_tiny_sana, build_tiny_z_image


def load(folder):
    registry = Registry(folder.parent / "cache", offline=True)
    return load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                            offline=True)


@pytest.fixture(scope="module", params=["flux", "z-image"])  # packed and unpacked latents (the pass is one code
def model(request, tmp_path_factory):                        # path for every family; tiny Qwen-Image is slow at 128²)
    build = {"flux": build_tiny_flux, "z-image": build_tiny_z_image}
    return load(build[request.param](tmp_path_factory.mktemp(request.param)))


def make(model, **kw):
    params = dict(prompt="a red fox", steps=2, guidance=3.5, width=64, height=64, scheduler="Flow Euler", seed=5,
                  batch_size=2, hires=HiresParams(scale=2.0, upscaler="Lanczos", strength=0.6))
    params.update(kw)
    seen = []
    out = ImagePipeline(model, ImageLimits())(ImageParams(**params), callback=lambda d, t, p: seen.append((d, t, p)),
                                              preview_every=1)
    return out, seen


def pixels(out) -> np.ndarray:
    return np.stack([np.asarray(image) for image in out.images])


def test_the_hires_fix_makes_the_target_size_from_the_first_pass_reproducibly(model):
    out, seen = make(model)
    hires = pixels(out)
    assert hires.shape == (2, 128, 128, 3) and hires.std() > 1
    assert np.array_equal(hires, pixels(make(model)[0]))  # by seed, picture by picture
    assert not np.array_equal(hires[0], hires[1])
    first = make(model, hires=None)[0].images
    upscaled = [image.resize((128, 128), Image.LANCZOS) for image in first]
    by_hand = model.view("img2img", "Flow Euler")(  # the family's image to image over the upscaled first pass
        prompt=["a red fox"] * 2, image=upscaled, strength=0.6, width=128, height=128, num_inference_steps=2,
        generator=[torch.Generator().manual_seed(s) for s in (5, 6)],
        **guidance_inputs(model.family, 3.5, "", 2)).images
    assert np.array_equal(hires, np.stack([np.asarray(image) for image in by_hand]))
    assert not np.array_equal(hires, np.stack([np.asarray(image) for image in upscaled]))
    # progress counts both passes (2 steps, then the flow img2img's 2 of 2 × 0.6) and previews the bigger one too
    assert [d for d, _, _ in seen] == [1, 2, 3, 4] and {t for _, t, _ in seen} == {4}
    last = seen[-1][2]  # the 128² pass's latents read at its own size (at most 32² latents decoded)
    assert last is not None and last.size[0] == last.size[1] >= 64 and np.asarray(last).std() > 1


def test_a_latent_upscaler_on_a_flow_model_runs_as_lanczos_and_says_so(model):
    out, _ = make(model, hires=HiresParams(scale=2.0, upscaler="Latent", strength=0.6))
    assert any("Lanczos was used instead of Latent" in note for note in out.notes)
    assert out.params.hires.upscaler == "Lanczos"  # recorded as it ran: the PNG and History say Lanczos
    assert np.array_equal(pixels(out), pixels(make(model)[0]))


def test_a_family_without_image_to_image_refuses_the_hires_fix_in_words(tmp_path):
    with pytest.raises(ValueError, match="hires: the hires fix is a second, image-to-image pass, which Sana has not"):
        make(load(build_tiny_sana(tmp_path)))

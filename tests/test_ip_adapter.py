"""Image prompts (IP-Adapter) on tiny random-weight models: a picture steers the picture by its weight and is
gone for the next request; another model family's adapter, a file that is not one, and one without its image
encoder are refused in words; Explore points carry the picture's embedding — a point renders the Image tab's
picture byte for byte, a walk between two image prompts mixes them, and a saved point keeps it; requests with
and without an image prompt take turns on the shared UNet."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.image import ImageParams
from pipelines.image_ipadapter import ImagePrompt, IPAdapterRef
from pipelines.image_latent import DiffusionLatentModel, DiffusionLook
from pipelines.latent import between, load_points, save_points
from pipelines.registry import ModelNotAvailable
from tests.conftest import build_tiny_ip_adapter
from tests.test_control import tiny  # noqa: F401 (the tiny SD model, a fixture of this module's own)

PARAMS = ImageParams(prompt="a red fox", steps=3, batch_size=2, width=64, height=64, seed=4, scheduler="Euler")
RED, BLUE = Image.new("RGB", (80, 80), (230, 20, 20)), Image.new("RGB", (80, 80), (20, 20, 230))


@pytest.fixture(scope="module")
def adapters(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("ip-adapters")
    unet = tiny.model.pipe.unet
    return {"good": str(build_tiny_ip_adapter(root / "good", unet, 1)),
            "other": str(build_tiny_ip_adapter(root / "other", unet, 2, text_width=48)),
            "plus": str(build_tiny_ip_adapter(root / "plus", unet, 3, plus=True))}


def pixels(out) -> np.ndarray:
    return np.stack([np.asarray(image) for image in out.images]).astype(np.int16)


def prompt(location: str, picture=RED, weight: float = 1.0) -> ImagePrompt:
    return ImagePrompt(IPAdapterRef(location, weight), picture)


def test_an_image_prompt_steers_by_its_weight_and_leaves_nothing_behind(tiny, adapters):
    plain = pixels(tiny(PARAMS))
    red = pixels(tiny(replace(PARAMS, image_prompt=prompt(adapters["good"]))))
    assert np.abs(red - plain).mean() > 2  # the picture changed it
    assert np.array_equal(red[0], red[1]) is False  # the batch's own seeds still differ
    assert np.array_equal(pixels(tiny(replace(PARAMS, image_prompt=prompt(adapters["good"])))), red)  # seeded
    blue = pixels(tiny(replace(PARAMS, image_prompt=prompt(adapters["good"], BLUE))))
    assert np.abs(blue - red).mean() > 2  # another picture, another result
    half = pixels(tiny(replace(PARAMS, image_prompt=prompt(adapters["good"], weight=0.5))))
    assert 0 < np.abs(half - plain).mean() < np.abs(red - plain).mean()
    off = pixels(tiny(replace(PARAMS, image_prompt=prompt(adapters["good"], weight=0.0))))
    assert np.array_equal(off, plain)  # weight 0 adds nothing
    assert np.array_equal(pixels(tiny(PARAMS)), plain)  # the next request without one: as before, bit for bit
    assert tiny.model.adapters.image_prompt is None
    start = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    img2img = replace(PARAMS, mode="img2img", init_image=start, strength=0.8)
    assert np.abs(pixels(tiny(replace(img2img, image_prompt=prompt(adapters["good"])))) -
                  pixels(tiny(img2img))).mean() > 1


def test_wrong_adapters_are_refused_in_words(tiny, adapters, tmp_path):
    with pytest.raises(ModelNotAvailable, match=r"made for another kind of model \(it reads text width \[48\]"):
        tiny(replace(PARAMS, image_prompt=prompt(adapters["other"])))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(adapters["good"], lonely / "ip.safetensors")
    with pytest.raises(ModelNotAvailable, match="its CLIP image encoder was not found"):
        tiny(replace(PARAMS, image_prompt=prompt(str(lonely / "ip.safetensors"))))
    import torch
    from safetensors.torch import save_file

    beside = tmp_path / "beside"
    shutil.copytree(Path(adapters["good"]).parent, beside)
    save_file({"lora.down.weight": torch.zeros(2, 2)}, str(beside / "lora.safetensors"))
    with pytest.raises(ModelNotAvailable, match="lora.safetensors. is not an IP-Adapter"):
        tiny(replace(PARAMS, image_prompt=prompt(str(beside / "lora.safetensors"))))
    with pytest.raises(ValueError, match="ip_adapter weight must be .* 2"):
        IPAdapterRef(adapters["good"], 3.0)
    assert pixels(tiny(replace(PARAMS, batch_size=1))).shape == (1, 64, 64, 3)  # still draws without one


def test_an_explore_point_carries_its_image_prompt(tiny, adapters, tmp_path):
    look = DiffusionLook(steps=3, guidance=5.0, width=64, height=64, scheduler="Euler", ip_adapter=adapters["good"],
                         ip_weight=1.0)
    space = DiffusionLatentModel(tiny.model, look)
    red, blue = (space.point_for_seed(1, prompt="red heart", image=picture) for picture in (RED, BLUE))
    plain = space.point_for_seed(1, prompt="red heart")
    assert red.image.shape == (1, 24) and plain.image is None
    middle = between(red, blue, 0.5)
    frames = space.render([red, plain, blue, middle])  # one batch with image prompts, one without
    tab = ImageParams(prompt="red heart", steps=3, guidance=5.0, width=64, height=64, seed=1, scheduler="Euler")
    tab_red = np.asarray(tiny(replace(tab, image_prompt=prompt(adapters["good"]))).images[0])
    assert np.array_equal(space.render([red])[0], tab_red)  # the Image tab's picture, byte for byte
    assert np.array_equal(frames[1], np.asarray(tiny(tab).images[0]))
    for batched, point in ((frames[0], red), (frames[2], blue)):  # in a batch of 3: within float rounding
        assert np.abs(batched.astype(int) - space.render([point])[0]).max() <= 2
    ends = [np.abs(frames[3].astype(int) - frames[i]).mean() for i in (0, 2)]
    assert min(ends) > 0.5  # the walk's middle is neither end
    with pytest.raises(ValueError, match="one keyframe has an image prompt and the other none"):
        between(red, plain, 0.5)
    save_points([red, plain], tmp_path / "points.safetensors")
    loaded = load_points(tmp_path / "points.safetensors")
    assert np.array_equal(loaded[0].image.numpy(), red.image.numpy()) and loaded[1].image is None
    with pytest.raises(ValueError, match="choose an IP-Adapter in the render settings"):
        space.with_look(replace(look, ip_adapter="")).point_for_seed(1, image=RED)


def test_requests_with_and_without_an_image_prompt_take_turns(tiny, adapters):
    """Two users at once, one with an image prompt: each gets the picture it gets alone."""
    alone = {name: pixels(tiny(params)) for name, params in
             (("with", replace(PARAMS, image_prompt=prompt(adapters["good"]))), ("without", PARAMS))}
    results, errors = {}, []

    def run(name, params):
        try:
            for _ in range(3):
                results.setdefault(name, []).append(pixels(tiny(params)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("with", replace(PARAMS, image_prompt=prompt(adapters["good"])))),
               threading.Thread(target=run, args=("without", PARAMS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for name, pictures in results.items():
        assert all(np.array_equal(p, alone[name]) for p in pictures), name


def test_an_image_prompt_joins_controlnets_regions_and_the_hires_pass(tiny, adapters, tmp_path, tiny_sd_dir):
    from diffusers import UNet2DConditionModel

    from pipelines.image_control import ControlUnit
    from pipelines.image_regions import regions_from_layout
    from pipelines.image_upscale import HiresParams
    from tests.test_control import build_controlnet, square

    net = build_controlnet(tmp_path / "net", UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet"), 1)
    one = replace(PARAMS, batch_size=1)
    for name, params in (("controlnet", replace(one, controls=(ControlUnit(net, square(), "canny"),))),
                         ("regions", replace(one, prompt="red heart BREAK blue cat",
                                             regions=regions_from_layout("red heart BREAK blue cat", "columns", ""))),
                         ("hires", replace(one, hires=HiresParams(1.5, "Latent", 2, 0.5)))):
        plain = pixels(tiny(params))
        steered = pixels(tiny(replace(params, image_prompt=prompt(adapters["good"]))))
        assert steered.shape == plain.shape and np.abs(steered - plain).mean() > 1, name


@pytest.mark.slow  # the real embedded emoji model
def test_the_emoji_model_says_no_sd_ip_adapter_fits_it(emoji_pipeline, adapters):
    """The embedded emoji model reads MiniLM's 384-wide text: an SD IP-Adapter (here one 32 wide) is refused in
    words, and the model still draws without it."""
    emoji = emoji_pipeline
    params = replace(PARAMS, batch_size=1)
    with pytest.raises(ModelNotAvailable, match=r"emoji-ldm cannot take an image prompt|another kind of model .*"
                                                r"emoji-ldm has 384"):
        emoji(replace(params, image_prompt=prompt(adapters["good"])))
    assert emoji(params).images[0].size == (64, 64)


def test_a_plus_ip_adapter_reads_the_encoders_hidden_states(tiny, adapters):
    """A Plus adapter (a resampler over the image encoder's penultimate hidden states, in the original file's names)
    loads, steers by its picture, and its "no picture" is a black picture's encoding, as diffusers makes it."""
    plain = pixels(tiny(PARAMS))
    red, blue = (pixels(tiny(replace(PARAMS, image_prompt=prompt(adapters["plus"], picture))))
                 for picture in (RED, BLUE))
    assert np.abs(red - plain).mean() > 1 and np.abs(red - blue).mean() > 1
    weights = tiny.model.ip_adapters[adapters["plus"]]
    assert weights.hidden and weights.embed(RED).shape == (1, 17, 32)  # 16 patches + the class token, 32 wide
    assert weights.negative().abs().sum() > 0  # a black picture's hidden states, not zeros
    assert np.array_equal(pixels(tiny(PARAMS)), plain)

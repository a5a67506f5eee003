"""Regional prompts (latent couple, pipelines/image_regions.py) on the tiny random-weight SD model: a region
changes its own box more than the rest, a region of weight 0 changes nothing, a region over the whole picture
draws what its prompt draws alone, and layouts and boxes say what is wrong."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
from pipelines.image_regions import Region, regions_from_layout
from pipelines.registry import Registry

PARAMS = ImageParams(prompt="red heart", steps=3, batch_size=1, width=64, height=64, seed=8, scheduler="Euler")


@pytest.fixture(scope="module")
def tiny(tiny_sd_dir):
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    return ImagePipeline(load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")),
                                          pick_placement("cpu"), offline=True), ImageLimits(max_steps=60))


def pixels(out) -> np.ndarray:
    return np.stack([np.asarray(image) for image in out.images]).astype(np.int16)


def test_a_region_changes_its_own_box_most(tiny):
    plain = pixels(tiny(PARAMS))
    left = (Region("blue word cat", (0.0, 0.0, 0.5, 1.0)),)
    changed = np.abs(pixels(tiny(replace(PARAMS, regions=left))) - plain).mean(axis=(0, 1, 3))  # per column
    assert changed[:28].mean() > 2 * changed[36:].mean() > 0
    off = pixels(tiny(replace(PARAMS, regions=(Region("blue word cat", (0.0, 0.0, 0.5, 1.0), 0.0),))))
    assert np.array_equal(off, plain)  # weight 0: the whole prompt's prediction, untouched


def test_a_region_over_the_whole_picture_draws_its_own_prompt(tiny):
    alone = pixels(tiny(replace(PARAMS, prompt="blue word cat")))
    everywhere = pixels(tiny(replace(PARAMS, regions=(Region("blue word cat"),))))
    assert np.abs(everywhere - alone).max() <= 3  # the same prediction, made in a half-size batch


def test_two_columns_from_break_and_their_whole_prompt(tiny):
    regions = regions_from_layout("red heart BREAK blue cat", "columns", "2,1")
    assert [r.prompt for r in regions] == ["red heart", "blue cat"]
    assert [r.box for r in regions] == [(0.0, 0.0, 2 / 3, 1.0), (2 / 3, 0.0, 1.0, 1.0)]
    params = replace(PARAMS, prompt="red heart BREAK blue cat", regions=regions)
    assert params.prompts()[0] == "red heart, blue cat"
    assert pixels(tiny(params)).shape == (1, 64, 64, 3)
    assert regions_from_layout("a BREAK b BREAK c", "rows", "")[2].box == (0.0, 2 / 3, 1.0, 1.0)


def test_regions_say_what_is_wrong():
    for call, message in ((lambda: regions_from_layout("one prompt", "columns", "1"), "separate the regions"),
                          (lambda: regions_from_layout("a BREAK b", "diagonal", "1,1"), "layout must be one of"),
                          (lambda: regions_from_layout("a BREAK b", "rows", "1,x"), "numbers such as 1,1"),
                          (lambda: regions_from_layout("a BREAK b", "rows", "1,1,1"), "one positive number per"),
                          (lambda: Region("a", (0.6, 0.0, 0.4, 1.0)), "left must be before its right"),
                          (lambda: Region("a", weight=1.5), "region weight must be"),
                          (lambda: Region(" "), "each region needs a prompt")):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.slow  # the real embedded emoji model
def test_the_emoji_model_draws_regions_too(emoji_pipeline):
    """Latent couple needs nothing of a model family: the embedded emoji model (MiniLM text, its own UNet) draws a
    left-half region in its left half."""
    params = replace(PARAMS, steps=8)
    plain = pixels(emoji_pipeline(params))
    left = (Region("blue circle", (0.0, 0.0, 0.5, 1.0)),)
    changed = np.abs(pixels(emoji_pipeline(replace(params, regions=left))) - plain).mean(axis=(0, 1, 3))
    assert changed[:28].mean() > 2 * changed[36:].mean()

"""Instruction editing as its own mode ("edit"): Flux.1 Kontext and Qwen-Image-Edit from saved tiny folders (the
latter laid out as the real one, read without torchvision through the picture-only Qwen2-VL processor), and
every other model refusing the mode in words."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from pipelines.device import pick_placement
from pipelines.image import MODE_LABELS, MODES, ImageLimits, ImageModel, ImageParams, ImagePipeline, load_image_model
from pipelines.image_flow import FAMILIES
from pipelines.registry import Registry
from tests.families import build_tiny_flux_kontext, build_tiny_qwen_image_edit, tiny_qwen_image_edit_pipeline

START = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def load(folder):
    registry = Registry(folder.parent / "cache", offline=True)
    return load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                            offline=True)


@pytest.fixture(scope="module")
def kontext(tmp_path_factory):
    return load(build_tiny_flux_kontext(tmp_path_factory.mktemp("kontext")))


@pytest.fixture(scope="module")
def qwen_edit(tmp_path_factory):
    return load(build_tiny_qwen_image_edit(tmp_path_factory.mktemp("qwen-edit")))


def edit(model, **kw):
    params = dict(prompt="make the fox red", mode="edit", init_image=START, steps=2, guidance=2.5, width=64,
                  height=64, scheduler="Flow Euler", seed=1)
    params.update(kw)
    return ImagePipeline(model, ImageLimits())(ImageParams(**params))


def pixels(out) -> np.ndarray:
    return np.stack([np.asarray(image) for image in out.images])


def test_edit_is_a_mode_with_a_label_and_the_model_says_whether_it_runs_it(kontext, qwen_edit, tiny_sd_dir):
    assert "edit" in MODES and MODE_LABELS["edit"] == "Edit by instruction"
    assert kontext.modes == ("inpaint", "edit") and qwen_edit.modes == ("inpaint", "edit")
    assert load(tiny_sd_dir).modes == ("txt2img", "img2img", "inpaint", "outpaint")
    assert "edit" not in FAMILIES["flux"].modes and "txt2img" in FAMILIES["flux"].modes


def test_kontext_edits_at_the_requested_size_reproducibly_by_seed(kontext):
    first = pixels(edit(kontext))
    assert first.shape == (1, 64, 64, 3) and first.std() > 1
    assert np.array_equal(first, pixels(edit(kontext)))
    assert not np.array_equal(first, pixels(edit(kontext, seed=2)))
    assert not np.array_equal(first, pixels(edit(kontext, prompt="make the fox blue")))


def test_image_to_image_on_an_editing_model_runs_as_an_edit_and_says_so(kontext):
    seen = []
    out = ImagePipeline(kontext, ImageLimits())(
        ImageParams(prompt="make the fox red", mode="img2img", init_image=START, steps=4, strength=0.5, guidance=2.5,
                    width=64, height=64, scheduler="Flow Euler", seed=1),
        callback=lambda done, total, preview: seen.append((done, total)), preview_every=0)
    assert np.array_equal(pixels(out), pixels(edit(kontext, steps=4)))
    assert any("image to image ran as an edit" in note for note in out.notes)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # every step of the edit counted (strength is not used)


def test_qwen_image_edit_edits_with_true_cfg_reproducibly(qwen_edit):
    first = pixels(edit(qwen_edit, guidance=1.0))
    assert first.shape == (1, 64, 64, 3) and first.std() > 1
    assert np.array_equal(first, pixels(edit(qwen_edit, guidance=1.0)))
    guided = pixels(edit(qwen_edit, guidance=4.0, negative_prompt="blurry"))  # true CFG against the negative
    assert not np.array_equal(first, guided)


def test_what_cannot_edit_refuses_in_words_naming_the_field(kontext, tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="mode: Flux.1 Kontext edits a picture by instruction; choose edit"):
        edit(kontext, mode="txt2img", init_image=None)
    with pytest.raises(ValueError, match="init_image: edit needs a starting image"):
        edit(kontext, init_image=None)
    with pytest.raises(ValueError, match="mode: Flux.1 does not edit pictures by instruction; load an instruction"):
        FAMILIES["flux"].pipeline_class("edit")
    with pytest.raises(ValueError, match="mode: Sana does not edit .* or use text to image$"):
        FAMILIES["sana"].pipeline_class("edit")
    with pytest.raises(ValueError, match="mode: .* is an SD/SDXL model and does not edit pictures by instruction"):
        edit(load(tiny_sd_dir), scheduler="Euler")


def test_qwen_image_edit_from_its_folder_edits_as_the_pipeline_made_in_memory_does(qwen_edit):
    """The folder names transformers' Qwen2VLProcessor; without torchvision it is read for pictures only, and the
    prompt's tokens (each picture's patches among them) are the ones the whole processor would make."""
    assert qwen_edit.family is FAMILIES["qwen-image-edit"]
    processor = qwen_edit.pipe.processor
    if importlib.util.find_spec("torchvision") is None:
        assert type(processor).__name__ == "PictureQwen2VLProcessor" and not hasattr(processor, "video_processor")
    tokens = processor(text=["<|vision_start|><|image_pad|><|vision_end|>make it red"], images=[START],
                       padding=True, return_tensors="pt")
    pads = int((tokens["input_ids"] == processor.image_token_id).sum())
    assert pads == int(tokens["image_grid_thw"][0].prod()) // processor.image_processor.merge_size ** 2 > 0
    pipe = tiny_qwen_image_edit_pipeline()  # the same weights; its tokenizer as read back from the folder
    pipe.processor, pipe.tokenizer = processor, qwen_edit.pipe.tokenizer
    in_memory = ImageModel(pipe, "in-memory", pick_placement("cpu"), family=FAMILIES["qwen-image-edit"])
    assert np.array_equal(pixels(edit(qwen_edit, guidance=1.0)), pixels(edit(in_memory, guidance=1.0)))

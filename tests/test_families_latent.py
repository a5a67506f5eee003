"""The latent workbench on flow-matching transformer models (tiny random Flux, Flux.2 Klein and dev, SD3, Qwen-Image,
Chroma, Sana and Z-Image): Explore this picture gives that very picture back byte for byte; seed travel, prompt
travel (pooled and sequence embeddings mixed), directions from prompt pairs, the keyframe timeline and breeding, and
refusals in words."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
from pipelines.image_flow_latent import TOKENS, FlowLatentModel
from pipelines.image_latent import DiffusionLatentModel, DiffusionLook
from pipelines.latent import WalkParams, between, breed, keyframe_frames, move, walk
from pipelines.registry import Registry
from tests.families import (
    build_tiny_chroma,
    build_tiny_flux,
    build_tiny_flux2_dev,
    build_tiny_flux2_klein,
    build_tiny_flux_kontext,
    build_tiny_qwen_image,
    build_tiny_qwen_image_edit,
    build_tiny_sana,
    build_tiny_sd3,
    build_tiny_z_image,
)

LOOK = DiffusionLook(steps=3, guidance=3.5, scheduler="Flow Euler", width=64, height=64, preview_steps=2)


BUILD = {"flux": build_tiny_flux, "qwen-image": build_tiny_qwen_image, "sd3": build_tiny_sd3,
         "chroma": build_tiny_chroma, "sana": build_tiny_sana, "z-image": build_tiny_z_image,
         "flux2-klein": build_tiny_flux2_klein, "flux2-dev": build_tiny_flux2_dev}


@pytest.fixture(scope="module", params=list(BUILD))
def model(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    folder = BUILD[request.param](root)
    registry = Registry(root / "cache", offline=True)
    return load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                            offline=True)


@pytest.fixture(scope="module")
def space(model):
    return DiffusionLatentModel(model, LOOK)


def alone(model, seed: int, prompt: str, guidance: float = LOOK.guidance) -> np.ndarray:
    """The Image tab's picture for this seed and prompt with the look's settings."""
    out = ImagePipeline(model, ImageLimits())(ImageParams(prompt=prompt, steps=LOOK.steps, guidance=guidance,
                                                          scheduler=LOOK.scheduler, width=64, height=64, seed=seed))
    return np.asarray(out.images[0])


def test_a_flow_model_gets_the_flow_adapter_behind_the_same_contract(space, model):
    assert isinstance(space, FlowLatentModel) and space.kind == "diffusion"
    assert model.for_mode("explore") is model.pipe  # Explore draws with the model's own pipeline (Klein's: Klein's)
    c, h, w = space.z_shape
    side = 64 // (model.vae_scale * model.family.stride)
    assert (c, h, w) == (model.pipe.transformer.config.in_channels // model.family.channel_div, side, side)
    assert space.with_look(DiffusionLook(scheduler="DPM++ 2M", width=64, height=64)).scheduler == "Flow Euler"


def test_explore_this_picture_gives_that_very_picture_back(space, model):
    point = space.point_for_seed(11, prompt="a red fox")
    assert np.array_equal(space.render([point])[0], alone(model, 11, "a red fox"))


def test_seed_travel_starts_and_ends_on_its_keyframes(space, model):
    a, b = space.point_for_seed(3, prompt="a red fox"), space.point_for_seed(9, prompt="a blue bird")
    frames = space.render(walk([a, b], WalkParams(frames=(4,), ease="linear")))
    assert frames.shape == (5, 64, 64, 3)
    assert np.abs(frames[0].astype(int) - alone(model, 3, "a red fox").astype(int)).max() <= 2
    assert np.abs(frames[-1].astype(int) - alone(model, 9, "a blue bird").astype(int)).max() <= 2
    assert not np.array_equal(frames[2], frames[0])
    assert keyframe_frames(2, WalkParams(frames=(4,))) == [0, 4]


def test_prompt_travel_mixes_sequence_and_pooled_embeddings(space):
    a, b = space.point_for_seed(5, prompt="red"), space.point_for_seed(5, prompt="a blue heart with a fox")
    middle = between(a, b, 0.5)
    assert torch.allclose(middle.text, (a.text + b.text) / 2, atol=1e-5)
    assert torch.allclose(middle.z, a.z, atol=1e-5)  # the same seed: the same noise all the way
    pictures = space.render([a, middle, b])
    assert not np.array_equal(pictures[1], pictures[0]) and not np.array_equal(pictures[1], pictures[2])


def test_qwen_masks_keep_every_token_either_prompt_has(space):
    if space.family.key != "qwen-image":
        pytest.skip("Flux reads fixed-length T5 tokens")
    short_, long_ = space.embed("red"), space.embed("a blue heart with a fox and a bird")
    assert short_[0].shape == (TOKENS, space.pipe.text_encoder.config.text_config.hidden_size)
    assert 0 < int(short_[1].sum()) < int(long_[1].sum())
    mixed = space._masked("", torch.stack([short_[0], long_[0]]), torch.stack([short_[1], (short_[1] + long_[1]) / 2]))
    assert mixed["prompt_embeds"].shape[1] == int(long_[1].sum())


def test_a_prompt_pair_direction_moves_the_picture_and_zero_keeps_it(space):
    point = space.point_for_seed(2, prompt="a fox")
    direction = space.directions("prompt-pair", positive="smiling", negative="neutral")[0]
    original = space.render([point])[0]
    assert np.array_equal(space.render([move(point, [direction], [0.0])])[0], original)
    assert not np.array_equal(space.render([move(point, [direction], [2.0])])[0], original)


def test_breeding_makes_children_between_the_parents(space):
    parents = [space.point_for_seed(1, prompt="red"), space.point_for_seed(2, prompt="blue")]
    kids = breed(parents, 2, crossover=0.5, mutation=0.05, seed=0)
    pictures = space.render(kids, preview=True)
    assert pictures.shape == (2, 64, 64, 3) and not np.array_equal(pictures[0], pictures[1])


def test_what_flow_models_cannot_do_here_is_said_in_words(space):
    with pytest.raises(ValueError, match="method must be one of prompt-pair, h-space"):
        space.directions("pixels", k=2)
    with pytest.raises(ValueError, match="inversion\\) is not available for flow models yet"):
        space.encode(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="prompt direction: the negative side is empty"):
        space.directions("prompt-pair", positive="smiling", negative="")


def test_h_space_directions_from_a_middle_block_move_the_picture(space):
    point = space.point_for_seed(4, prompt="a red fox")
    directions = space.directions("h-space", k=2, origin=point, samples=4)
    assert [d.space for d in directions] == ["h", "h"] and all(d.std > 0 for d in directions)
    assert abs(float(directions[0].vector.flatten() @ directions[1].vector.flatten())) < 1e-4  # orthonormal
    original = space.render([point], preview=True)[0]
    assert np.array_equal(space.render([move(point, directions, [0.0, 0.0])], preview=True)[0], original)
    moved = space.render([move(point, directions[:1], [3.0])], preview=True)[0]
    assert np.abs(moved.astype(int) - original.astype(int)).mean() > 0.5
    assert np.array_equal(space.render([point], preview=True)[0], original)  # nothing stays behind in the hook


def test_an_undistilled_flux2_klein_guides_against_a_blank_prompt_as_the_image_tab_does(tmp_path):
    folder = build_tiny_flux2_klein(tmp_path, is_distilled=False)
    registry = Registry(tmp_path / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                             offline=True)
    space = DiffusionLatentModel(model, LOOK)
    assert space._true_cfg(space.pipe, LOOK.guidance) and not space._true_cfg(space.pipe, 1.0)
    a, b = space.point_for_seed(11, prompt="a red fox"), space.point_for_seed(12, prompt="a blue bird")
    assert a.pooled is None and a.text.shape[0] == TOKENS
    assert np.array_equal(space.render([a])[0], alone(model, 11, "a red fox"))
    both = space.render([a, b])  # one guided batch: the blank prompt's tokens for each picture
    assert np.abs(both[1].astype(int) - alone(model, 12, "a blue bird").astype(int)).max() <= 2
    assert len(space.directions("h-space", k=2, origin=a, samples=3)) == 2


def test_editing_models_explore_what_they_draw_from_a_prompt_alone(tmp_path):
    """Qwen-Image-Edit needs a start picture for every edit; Explore draws with Qwen-Image's pipeline over the very
    same weights (seed and prompt only), so travel, prompt pairs and h-space work on it too."""
    from diffusers import QwenImagePipeline

    folder = build_tiny_qwen_image_edit(tmp_path)
    registry = Registry(tmp_path / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                             offline=True)
    space = DiffusionLatentModel(model, LOOK)
    a, b = space.point_for_seed(11, prompt="a red fox"), space.point_for_seed(12, prompt="a blue bird")
    drawn = space.render([a])[0]
    pipe = model.view("explore", "Flow Euler")
    assert type(pipe) is QwenImagePipeline and pipe.transformer is model.pipe.transformer
    alone_ = pipe(prompt="a red fox", negative_prompt=" ", true_cfg_scale=LOOK.guidance, num_inference_steps=LOOK.steps,
                  width=64, height=64, generator=torch.Generator().manual_seed(11), output_type="np").images[0]
    assert np.abs(drawn.astype(int) - (np.clip(alone_, 0, 1) * 255).round().astype(int)).max() <= 1
    frames = space.render(walk([a, b], WalkParams(frames=(3,))))  # in one batch: within 2 of each alone
    assert np.abs(frames[0].astype(int) - drawn.astype(int)).max() <= 2 and not np.array_equal(frames[1], frames[0])
    moved = move(a, space.directions("prompt-pair", positive="smiling", negative="neutral"), [2.0])
    assert not np.array_equal(space.render([moved])[0], drawn)
    assert len(space.directions("h-space", k=2, origin=a, samples=3)) == 2


def test_flux2_dev_reads_guidance_as_an_embedding_in_explore_as_the_image_tab_does(space, model):
    if type(model.pipe).__name__ != "Flux2Pipeline":
        pytest.skip("Flux.2 dev's guidance-distilled transformer; Klein's reads no guidance embedding")
    assert model.pipe.transformer.config.guidance_embeds and not space._true_cfg(space.pipe, 5.0)
    point = space.point_for_seed(6, prompt="a red fox")
    strong = space.with_look(replace(LOOK, guidance=5.0)).render([point])[0]
    assert np.array_equal(strong, alone(model, 6, "a red fox", guidance=5.0))
    assert np.abs(strong.astype(int) - alone(model, 6, "a red fox", guidance=1.0).astype(int)).mean() > 0.5


def test_kontext_explores_at_the_looks_size_what_it_draws_from_a_prompt_alone(tmp_path):
    """Flux.1 Kontext's pipeline would resize to about a megapixel: Explore keeps the look's size, as the Image
    tab's edits do."""
    folder = build_tiny_flux_kontext(tmp_path)
    registry = Registry(tmp_path / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                             offline=True)
    space = DiffusionLatentModel(model, LOOK)
    assert model.for_mode("explore") is model.pipe
    a, b = space.point_for_seed(11, prompt="a red fox"), space.point_for_seed(12, prompt="a blue bird")
    drawn = space.render([a])
    assert drawn.shape == (1, 64, 64, 3) and drawn.std() > 1
    assert np.array_equal(drawn, space.render([a]))
    frames = space.render(walk([a, b], WalkParams(frames=(3,))))  # in one batch: within 2 of each alone
    assert np.abs(frames[0].astype(int) - drawn[0].astype(int)).max() <= 2 and not np.array_equal(frames[1], frames[0])

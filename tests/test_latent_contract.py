"""One latent contract for GAN, VAE and diffusion: walks, scrubbing, directions, maps, breeding, saved
directions and latents — on tiny random-weight models, plus the bad inputs a person may give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.device import pick_placement
from pipelines.gan import GANLatentModel, GANPipeline, load_gan
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
from pipelines.image_latent import DiffusionLatentModel, DiffusionLook
from pipelines.latent import (
    Direction,
    LatentPoint,
    WalkParams,
    breed,
    keyframe_frames,
    load_directions,
    load_points,
    map_points,
    move,
    point_at,
    save_directions,
    save_points,
    sefa,
    walk,
    walk_quality,
)
from pipelines.registry import Registry
from tests.test_gan import save_tiny_gan

LOOK = DiffusionLook(steps=4, guidance=5.0, scheduler="DDIM", width=64, height=64, preview_steps=2)


@pytest.fixture(scope="module")
def image_model(tiny_sd_dir):
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    return load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")), pick_placement("cpu"),
                            offline=True)


@pytest.fixture(scope="module")
def space(image_model):
    return DiffusionLatentModel(image_model, LOOK)


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gan-contract")
    path = save_tiny_gan(folder)
    registry = Registry(folder / "cache", offline=True)
    return GANLatentModel(GANPipeline(load_gan(registry.resolve(registry.lookup(str(path), "gan")),
                                               pick_placement("cpu"))))


def alone(image_model, seed: int, prompt: str) -> np.ndarray:
    """What the Image tab makes from a seed and a prompt with the same settings."""
    out = ImagePipeline(image_model, ImageLimits())(ImageParams(prompt=prompt, steps=LOOK.steps, guidance=LOOK.guidance,
                                                                scheduler=LOOK.scheduler, width=64, height=64,
                                                                seed=seed))
    return np.asarray(out.images[0], dtype=np.int16)


def test_a_walk_starts_and_ends_on_the_images_its_keyframes_make_alone(space, image_model):
    a = space.point_for_seed(3, prompt="a red fox")
    b = space.point_for_seed(9, prompt="a blue bird")
    frames = space.render(walk([a, b], WalkParams(frames=(5,), ease="linear")))
    assert frames.shape == (6, 64, 64, 3)
    assert np.abs(frames[0].astype(np.int16) - alone(image_model, 3, "a red fox")).max() <= 2
    assert np.abs(frames[-1].astype(np.int16) - alone(image_model, 9, "a blue bird")).max() <= 2
    assert not np.array_equal(frames[2], frames[0])  # the middle is somewhere else


def test_slerped_noise_keeps_its_norm(space):
    a, b = space.point_for_seed(1), space.point_for_seed(2)
    path = walk([a, b], WalkParams(frames=(16,)))
    norms = torch.tensor([float(p.z.norm()) for p in path])
    expected = torch.linspace(float(a.z.norm()), float(b.z.norm()), len(path))
    assert ((norms - expected).abs() / expected).max() < 0.01
    lerped = walk([a, b], WalkParams(frames=(16,), method="lerp", ease="linear"))
    assert float(lerped[8].z.norm()) < 0.8 * float(a.z.norm())  # why slerp: lerp shrinks the noise midway


def test_scrubbing_to_a_keyframe_shows_that_keyframe(space):
    keys = [space.point_for_seed(s, prompt=p) for s, p in ((1, "red"), (2, "green"), (3, "blue"))]
    params = WalkParams(frames=(4, 7))
    for key, frame in zip(keys, keyframe_frames(3, params)):
        here = point_at(keys, params, frame)
        assert torch.equal(here.z, key.z) and torch.equal(here.text, key.text)
    assert len(walk(keys, params)) == 4 + 7 + 1
    looped = WalkParams(frames=(3,), loop=True)
    assert len(walk(keys, looped)) == 9 and torch.equal(point_at(keys, looped, 3).z, keys[1].z)


def test_a_direction_at_zero_returns_the_original_image(space, gan):
    point = space.point_for_seed(4, prompt="a red fox")
    text_dir = space.prompt_direction("smiling", "frowning")
    h_dirs = space.h_space_directions(2, point, samples=4)
    original = space.render([point])[0]
    assert np.array_equal(space.render([move(point, [text_dir, *h_dirs], [0.0, 0.0, 0.0])])[0], original)
    moved = space.render([move(point, [text_dir], [2.0])])[0]
    assert not np.array_equal(moved, original)
    pushed = space.render([move(point, h_dirs, [3.0])])[0]
    assert not np.array_equal(pushed, original)  # an h offset reaches the picture
    g = gan.point_for_seed(7)
    assert np.array_equal(gan.render([move(g, gan.directions("sefa", 3), [0, 0, 0])]), gan.render([g]))


def test_h_space_directions_are_orthonormal(space):
    dirs = space.h_space_directions(3, space.point_for_seed(1, prompt="x"), samples=6)
    v = torch.stack([d.vector for d in dirs]).double()
    assert torch.allclose(v @ v.T, torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert all(d.space == "h" and d.std > 0 for d in dirs)


def test_sefa_directions_are_the_top_eigenvectors_of_the_weight_gram_matrix(gan):
    weight = gan.pipe.model.generator.main[0].weight.detach()
    vectors, values = sefa(weight, 4)
    w = weight.double().reshape(weight.shape[0], -1)
    gram = w @ w.T
    for v, lam in zip(vectors.double(), values.double()):
        assert torch.allclose(gram @ v, lam * v, rtol=1e-4, atol=1e-6)
    assert torch.all(values[:-1] >= values[1:])
    assert values[0] >= torch.linalg.eigvalsh(gram).max() * (1 - 1e-6)
    assert [d.name for d in gan.directions("sefa", 4)] == ["SeFa 1", "SeFa 2", "SeFa 3", "SeFa 4"]


def test_saved_directions_and_latents_reload(tmp_path, space, gan):
    dirs = [space.prompt_direction("happy", "sad"), *gan.directions("ganspace", 2)]
    named = [Direction("smile", d.space, d.vector, d.std, d.method, d.hint) if i == 0 else d for i, d in enumerate(dirs)]
    save_directions(named, tmp_path / "dirs.safetensors")
    back = load_directions(tmp_path / "dirs.safetensors")
    assert [d.name for d in back] == ["smile", "PC1", "PC2"] and back[0].space == "text"
    assert all(torch.equal(a.vector.float(), b.vector) and a.std == pytest.approx(b.std) for a, b in zip(named, back))
    point = space.point_for_seed(5, prompt="a cat")
    save_points([point], tmp_path / "p.safetensors")
    (again,) = load_points(tmp_path / "p.safetensors")
    assert torch.equal(again.z, point.z) and torch.equal(again.text, point.text) and again.model == point.model


def test_maps_and_breeding_on_every_kind(space, gan):
    g = gan.point_for_seed(1)
    dirs = gan.directions("ganspace", 2)
    cells = map_points(g, dirs[0], dirs[1], 2.0, 3)
    assert len(cells) == 9 and torch.equal(cells[4].z, g.z)  # the centre cell is the origin
    assert gan.render(cells).shape == (9, 32, 32, 3)
    kids = breed([gan.point_for_seed(1), gan.point_for_seed(2)], 4, 0.5, 0.0, seed=0)
    parents = torch.stack([gan.point_for_seed(1).z, gan.point_for_seed(2).z])
    assert all(((k.z[None] == parents).any(0)).all() for k in kids)  # every number comes from a parent
    d_kids = breed([space.point_for_seed(1, prompt="a"), space.point_for_seed(2, prompt="b")], 2, 0.5, 0.1, seed=1)
    assert d_kids[0].text is not None and space.render(d_kids).shape == (2, 64, 64, 3)


def test_encoding_an_image_gives_a_point_that_renders_it_back_closely(space):
    point = space.point_for_seed(11, prompt="a red fox")
    image = space.render([point])
    (encoded,) = space.encode(image, prompt="a red fox")
    back = space.render([encoded])[0].astype(float)
    other = space.render([space.point_for_seed(12, prompt="a red fox")])[0].astype(float)
    assert np.abs(back - image[0]).mean() < np.abs(other - image[0]).mean()
    (partial,) = space.encode(image, prompt="a red fox", strength=0.5, seed=3)
    assert partial.z.shape == point.z.shape


def test_walk_quality_measures_even_steps():
    ramp = np.stack([np.full((16, 16, 3), v, np.uint8) for v in range(0, 200, 20)])
    ramp[:, ::2, ::2] = 255  # structure, so SSIM sees the change
    even = walk_quality(ramp)
    jumpy = walk_quality(np.concatenate([ramp[:1]] * 5 + [ramp[-1:]] * 5))
    assert even["smoothness"] > jumpy["smoothness"]


@pytest.mark.parametrize("make, message", [
    (lambda s: walk([s.point_for_seed(1)], WalkParams()), "at least two keyframes"),
    (lambda s: walk([s.point_for_seed(1), s.point_for_seed(1)], WalkParams()), "keyframes 1 and 2 are identical"),
    (lambda s: WalkParams(frames=(0,)), "frames per segment must be whole numbers from 1 to 240"),
    (lambda s: walk([s.point_for_seed(1), s.point_for_seed(2)], WalkParams(frames=(240,), max_total=100)),
     "limit is 100"),
    (lambda s: s.prompt_direction("smiling", "  "), "the negative side is empty"),
    (lambda s: s.render([LatentPoint(torch.zeros(4, 8, 8), torch.zeros(16, 32), model="another-model")]),
     "belongs to 'another-model'"),
    (lambda s: s.render([LatentPoint(torch.zeros(3, 5, 5), torch.zeros(16, 32), model=s.name)]),
     r"latent has shape \(3, 5, 5\)"),
])
def test_bad_inputs_name_the_field_and_the_fix(space, make, message):
    with pytest.raises(ValueError, match=message):
        make(space)


def test_a_walk_across_models_is_refused(space, gan):
    with pytest.raises(ValueError, match="a walk stays in one model|different latent shapes"):
        walk([space.point_for_seed(1), gan.point_for_seed(1)], WalkParams())
    with pytest.raises(ValueError, match="cannot encode images"):
        gan.encode(np.zeros((1, 32, 32, 3), np.uint8))

"""GAN pipeline on a random-weight DCGAN from a config, the embedded faces model, latent tools, media."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.device import pick_placement
from pipelines.gan import (
    DCGANGenerator,
    GANConfig,
    GANParams,
    GANPipeline,
    InterpolationParams,
    latent_from_file,
    latent_to_json,
    load_gan,
)
from pipelines.latent import interpolate, slerp
from pipelines.media import count_video_frames, gif_bytes, mp4_bytes
from pipelines.registry import ModelNotAvailable, ModelSpec, Registry


def save_tiny_gan(folder, resolution=32, z_dim=16, ngf=8, seed=0):
    config = GANConfig(resolution=resolution, z_dim=z_dim, ngf=ngf)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = DCGANGenerator(config)
    path = folder / "tiny-gan.safetensors"
    save_file(generator.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(config.__dict__))
    return path


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gan")
    path = save_tiny_gan(folder)
    registry = Registry(folder / "cache", offline=True)
    return GANPipeline(load_gan(registry.resolve(registry.lookup(str(path), "gan")), pick_placement("cpu")))


def test_seeded_grid_is_reproducible_and_in_range(tiny_gan):
    a = tiny_gan(GANParams(seed=5, grid=2))
    b = tiny_gan(GANParams(seed=5, grid=2))
    assert a.images.shape == (4, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and a.seeds == [5, 6, 7, 8]
    single = tiny_gan(GANParams(seed=7, grid=1))  # a cell's seed reproduces that cell alone
    assert np.array_equal(single.images[0], a.images[2])


def test_truncation_zero_is_the_mean_and_one_is_the_sample(tiny_gan):
    mean_image = tiny_gan.render(tiny_gan.mean_latent()[None])[0]
    zero = tiny_gan(GANParams(seed=3, grid=2, truncation=0.0))
    assert all(np.array_equal(img, mean_image) for img in zero.images)
    plain = tiny_gan(GANParams(seed=3, grid=2, truncation=1.0))
    assert np.array_equal(plain.images, tiny_gan.render(tiny_gan.latents_for_seeds([3, 4, 5, 6])))
    assert torch.equal(tiny_gan.mean_latent(), torch.zeros(tiny_gan.model.z_dim))  # the prior's mean, z = 0


def test_slerp_keeps_norms_and_hits_both_endpoints():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, generator=gen), torch.randn(100, generator=gen) * 2
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    for t in (0.25, 0.5, 0.75):
        expected = (1 - t) * a.norm() + t * b.norm()
        assert torch.isclose(slerp(a, b, t).norm(), expected, rtol=1e-5)
    path = interpolate(torch.stack([a, b, a * 0.5]), 9, "slerp", "ease-in-out")
    assert path.shape == (9, 100)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], a * 0.5, atol=1e-5)
    assert torch.allclose(path[4], b, atol=1e-5)  # the middle keyframe is hit exactly
    looped = interpolate(torch.stack([a, b]), 8, "lerp", "linear", loop=True)
    assert torch.allclose(looped[0], a) and torch.allclose(looped[4], b) and not torch.allclose(looped[-1], a)


def test_pca_directions_are_orthonormal_and_move_the_image(tiny_gan):
    found = tiny_gan.directions(k=4, samples=256)
    gram = found.vectors @ found.vectors.T
    assert torch.allclose(gram, torch.eye(4), atol=1e-5)
    z = tiny_gan.latent_for_seed(1)
    moved = tiny_gan.move(z, found.vectors, [2.0, 0, 0, 0])
    assert torch.allclose(moved - z, 2.0 * found.vectors[0], atol=1e-6)
    assert not np.array_equal(tiny_gan.render(moved[None]), tiny_gan.render(z[None]))
    latent_pcs = tiny_gan.directions(k=3, samples=256, space="latent").vectors
    assert torch.allclose(latent_pcs @ latent_pcs.T, torch.eye(3), atol=1e-5)


def test_variations_and_breeding(tiny_gan):
    z = tiny_gan.latent_for_seed(2)
    var = tiny_gan.variations(z, 0.0, 3, seed=1)
    assert torch.allclose(var.latents, z.expand(3, -1))
    parents = tiny_gan.latents_for_seeds([1, 2])
    kids = tiny_gan.breed(parents, 4, crossover=0.5, mutation=0.0, seed=0)
    from_parent = (kids.latents == parents[0]) | (kids.latents == parents[1])
    assert from_parent.all() and kids.images.shape == (4, 32, 32, 3)
    clones = tiny_gan.breed(parents, 2, crossover=0.0, mutation=0.0, seed=0)
    assert torch.equal(clones.latents, parents[0].expand(2, -1))


def test_walk_writes_gif_and_mp4_with_the_requested_frames(tiny_gan):
    out = tiny_gan.interpolate(InterpolationParams(keyframes=(1, 2, 3), frames=10, loop=True, fps=8))
    assert out.images.shape == (10, 32, 32, 3)
    assert count_video_frames(gif_bytes(out.images, 8, scale=2), ".gif") == 10
    assert count_video_frames(mp4_bytes(out.images, 8, scale=2), ".mp4") == 10


def test_latent_save_load_roundtrip(tmp_path, tiny_gan):
    z = tiny_gan.latent_for_seed(9)
    (tmp_path / "z.json").write_text(latent_to_json(z, "tiny", seed=9))
    np.save(tmp_path / "z.npy", z.numpy())
    assert torch.equal(latent_from_file(tmp_path / "z.json"), z)
    assert torch.equal(latent_from_file(tmp_path / "z.npy"), z)
    with pytest.raises(ValueError, match="latent has 5 numbers but .* needs 16"):
        tiny_gan.check_latent(torch.zeros(5))
    (tmp_path / "bad.json").write_text('{"nope": 1}')
    with pytest.raises(ValueError, match="is not a latent file"):
        latent_from_file(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GANParams(grid=0), "grid must be a whole number from 1"),
        (lambda: GANParams(grid=1000), "grid must be a whole number from 1 to 32"),
        (lambda: GANParams(truncation=-5), "truncation must be a number from 0.0 to 1.5"),
        (lambda: InterpolationParams(frames=10_001), "frames must be a whole number from 2 to 10,000"),
        (lambda: InterpolationParams(keyframes=(4,)), "keyframes: give 2 to 16 seeds"),
        (lambda: InterpolationParams(method="cubic"), "method must be 'lerp' or 'slerp'"),
    ],
)
def test_bad_params(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_server_limits_and_identical_keyframes(tiny_gan):
    with pytest.raises(ValueError, match="grid must be a whole number from 1 to 8"):
        tiny_gan(GANParams(grid=9))
    with pytest.raises(ValueError, match="frames must be a whole number from 2 to 240"):
        tiny_gan.interpolate(InterpolationParams(frames=241))
    with pytest.raises(ValueError, match="keyframes 1 and 2 are identical"):
        tiny_gan.interpolate(InterpolationParams(keyframes=(5, 5, 6)))


def test_config_that_does_not_match_the_weights(tmp_path):
    path = save_tiny_gan(tmp_path)
    path.with_suffix(".json").write_text(json.dumps({"resolution": 32, "z_dim": 20, "ngf": 8}))
    registry = Registry(tmp_path / "cache", offline=True)
    with pytest.raises(ModelNotAvailable, match=r"main.0.weight has shape \(16, 32, 4, 4\).*check z_dim"):
        load_gan(registry.resolve(registry.lookup(str(path), "gan")), pick_placement("cpu"))
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelNotAvailable, match="needs a config"):
        load_gan(registry.resolve(ModelSpec("x", "gan", "file", str(path))), pick_placement("cpu"))
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not really")
    with pytest.raises(ModelNotAvailable, match="pickle files can run code"):
        load_gan(registry.resolve(ModelSpec("p", "gan", "file", str(pickle))), pick_placement("cpu"),
                 config=GANConfig(resolution=32, z_dim=16, ngf=8))


@pytest.mark.slow  # the real embedded faces GAN
def test_embedded_faces_model(cache_dir):
    registry = Registry(cache_dir)
    pipe = GANPipeline(load_gan(registry.resolve(registry.lookup("dcgan-faces-64", "gan")), pick_placement("cpu")))
    out = pipe(GANParams(seed=0, grid=2))
    assert out.images.shape == (4, 64, 64, 3) and out.images.dtype == np.uint8
    assert 40 < out.images.mean() < 220 and out.images.std() > 20  # real pictures, not flat or blown out
    assert np.array_equal(out.images, pipe(GANParams(seed=0, grid=2)).images)

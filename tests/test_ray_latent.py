"""The GAN and VAE model tier on Ray Serve (studio/raytier/serve.py LatentTier, studio/raytier/client.py
RemoteLatentPipeline / RemoteLatentModel), for real: a local Ray with 2 CPUs, the tiny GAN and the
embedded digit VAE, a served studio in front. The same pictures as in-process, the latent workbench's
contract answered by a replica, concurrent requests' pictures rendered in one `@serve.batch` batch, a
replica's own errors in the same plain words."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the [ray] extra is part of the test install")

from pipelines.gan import GANParams, InterpolationParams
from pipelines.vae import MorphParams
from studio.config import RaySettings

pytestmark = pytest.mark.slow  # a local Ray cluster: the fast tier starts none

RAY = RaySettings(address="local", cpus=2, min_replicas=1, max_replicas=1, max_ongoing_requests=16,
                  target_ongoing_requests=16.0, tiers=("latent",))


@pytest.fixture(scope="module")
def tier(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    """A studio served in-process whose GAN and VAE models run on a local Ray Serve app, and the same
    studio's in-process pipelines to compare with."""
    from dataclasses import replace

    from tests.conftest import _free_port
    from tests.live import start

    root = tmp_path_factory.mktemp("ray-latent")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir, ray=RAY)
    from studio.services import Services

    here = Services.create(replace(services.settings, ray=RaySettings(), outputs=root / "here"))
    for spec in services.host.registry.all():
        here.host.registry.add(spec)
    yield f"http://127.0.0.1:{port}/", services, here
    app.close()
    services.host.ray_bridge.close()


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the replica (1 CPU): same sums, same pixels
    yield
    torch.set_num_threads(threads)


def test_gan_pictures_from_a_replica_match_in_process_and_keep_the_pipeline_interface(tier):
    _, services, here = tier
    pipe, local = services.host.gan_pipeline("tiny-gan"), here.host.gan_pipeline("tiny-gan")
    assert pipe.remote and pipe.model.name == "tiny-gan" and pipe.model.z_dim == local.model.z_dim
    assert pipe.limits == local.limits
    params = GANParams(seed=3, grid=2, truncation=0.7)
    out, expected = services.host.lanes.run("model", pipe, params), local(params)
    assert np.array_equal(out.images, expected.images) and out.seeds == expected.seeds
    walk = InterpolationParams(keyframes=(1, 2, 3), frames=6)
    assert np.array_equal(pipe.interpolate(walk).images, local.interpolate(walk).images)


def test_the_workbench_contract_is_answered_by_the_replica(tier):
    from studio.actions import latent as ex

    _, services, here = tier
    model, local = ex.latent_model(services, "tiny-gan", "gan"), ex.latent_model(here, "tiny-gan", "gan")
    assert model.remote and model.z_shape == local.z_shape and model.direction_methods == local.direction_methods
    points = model.prior(3, 10, truncation=0.8)
    assert all(a.z.equal(b.z) for a, b in zip(points, local.prior(3, 10, truncation=0.8)))
    assert np.array_equal(ex.render(services, model, points), local.render(points))
    remote_dirs, local_dirs = model.directions("sefa", 3), local.directions("sefa", 3)
    assert [d.name for d in remote_dirs] == [d.name for d in local_dirs]
    assert all(a.vector.equal(b.vector) for a, b in zip(remote_dirs, local_dirs))
    vae, local_vae = ex.latent_model(services, "digit-vae-2d", "vae"), ex.latent_model(here, "digit-vae-2d", "vae")
    assert vae.can_encode and vae.z_shape == local_vae.z_shape and vae.pipe.model.size == local_vae.pipe.model.size
    pictures = local_vae.render(local_vae.prior(2, 5))
    encoded = vae.encode(pictures)
    assert all(a.z.allclose(b.z) for a, b in zip(encoded, local_vae.encode(pictures)))
    with pytest.raises(ValueError, match="this latent belongs to 'tiny-gan', not 'digit-vae-2d'"):
        vae.render(points)  # checked in the UI tier, as in-process


def test_vae_pipeline_calls_match_in_process(tier):
    _, services, here = tier
    pipe, local = services.host.vae_pipeline("digit-vae-2d"), here.host.vae_pipeline("digit-vae-2d")
    assert pipe.model.size == local.model.size and pipe.model.latent_dim == local.model.latent_dim
    prior = pipe.model.prior(2, 4)
    assert prior.equal(local.model.prior(2, 4))
    frames, fade = pipe.morph_latents(prior, MorphParams(frames=5))
    expected, expected_fade = local.morph_latents(prior, MorphParams(frames=5))
    assert np.array_equal(frames, expected) and np.array_equal(fade, expected_fade)
    images, scores = pipe.reconstruct(expected[:2])
    assert np.array_equal(images, local.reconstruct(expected[:2])[0]) and len(scores) == 2


def test_concurrent_requests_are_rendered_in_one_batch_with_the_same_pictures(tier):
    _, services, here = tier
    pipe, local = services.host.gan_pipeline("tiny-gan"), here.host.gan_pipeline("tiny-gan")
    time.sleep(1.5)  # replicas publish their counts every second
    before = {p["pid"]: p.get("renders", 0) for p in services.host.ray_bridge.status()["latent"]["published"]}
    answers: dict = {}
    go = threading.Barrier(8)

    def user(seed: int) -> None:
        go.wait()
        answers[seed] = services.host.lanes.run("model", pipe, GANParams(seed=seed, grid=2))

    users = [threading.Thread(target=user, args=(100 + i,)) for i in range(8)]
    for u in users:
        u.start()
    for u in users:
        u.join(120)
    assert sorted(answers) == list(range(100, 108))
    for seed, out in answers.items():  # batched with others, still each request's own pictures
        expected = local(GANParams(seed=seed, grid=2)).images
        assert np.abs(out.images.astype(int) - expected.astype(int)).max() <= 1
    time.sleep(1.5)
    (report,) = services.host.ray_bridge.status()["latent"]["published"]
    assert report["pid"] != os.getpid() and report["renders"] - before.get(report["pid"], 0) < 8
    assert report["largest_batch"] >= 8  # at least two requests' 4 pictures rendered together
    from studio.tabs.models import tier_text

    shown = tier_text(services)
    assert "**GAN/VAE models**: autoscaling 1–1" in shown and "batched renders, the largest of" in shown


def test_a_replicas_error_is_the_same_plain_error_as_in_process(tier):
    _, services, here = tier
    too_big = GANParams(seed=0, grid=9)  # valid for the class; over this server's limit (8)
    with pytest.raises(ValueError) as remote_error:
        services.host.gan_pipeline("tiny-gan")(too_big)
    with pytest.raises(ValueError) as local_error:
        here.host.gan_pipeline("tiny-gan")(too_big)
    assert str(remote_error.value) == str(local_error.value) and "grid" in str(local_error.value)


def test_served_gan_and_vae_endpoints_answer_from_the_replica(tier):
    from gradio_client import Client

    url, services, _ = tier
    client = Client(url, verbose=False)
    info, files = client.predict(model="tiny-gan", seed=5, grid_size=2, truncation=1.0, api_name="/gan_sample")
    assert info["seeds"] == [5, 6, 7, 8] and len(files) == 2
    info, files = client.predict(model="digit-vae-2d", grid_size=4, api_name="/vae_map")
    assert info["cells"] == 16
    services.host.lanes.drain("history")
    assert {i.tab for i in services.history.list()} >= {"gan", "vae"}

"""The image model tier on Ray Serve (studio/raytier/serve.py, studio/raytier/client.py), for real: a local Ray with
2 CPUs, the tiny random-weight SD model, a served studio in front. Same pixels as in-process, Stop
reaching the replica, a killed replica costing no request, autoscaling 1 → 2 → 1, the cluster gone
said in plain words and recovered from."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the [ray] extra is part of the test install")

from pipelines.image import GenerationCancelled, ImageParams, lora_set
from studio.config import RaySettings
from tests.live import wait_for_replacement

pytestmark = pytest.mark.slow  # a local Ray cluster: the fast tier starts none

RAY = RaySettings(address="local", cpus=2, min_replicas=1, max_replicas=2, max_ongoing_requests=1,
                  target_ongoing_requests=1.0, upscale_delay_s=0.0, downscale_delay_s=3.0, tiers=("image",))
LONG = ImageParams(prompt="a red fox", steps=40, width=128, height=128, seed=11)  # ~5 s on one core


@pytest.fixture(scope="module")
def tier(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    """A studio served in-process whose image models run on a local Ray Serve app."""
    from tests.conftest import _free_port
    from tests.live import start

    root = tmp_path_factory.mktemp("ray")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir, ray=RAY)
    yield f"http://127.0.0.1:{port}/", services
    app.close()
    services.host.ray_bridge.close()


def pixels(out) -> list[np.ndarray]:
    return [np.asarray(image) for image in out.images]


def replica_pids(services) -> set[int]:
    return {p["pid"] for p in services.host.ray_bridge.status()["image"]["published"]}


def test_pictures_from_ray_replicas_match_in_process_pixel_for_pixel(tier):
    import torch

    _, services = tier
    pipe = services.host.image_pipeline("tiny-sd")
    assert pipe.remote and pipe.model.name == "tiny-sd" and pipe.model.default_size > 0
    params = ImageParams(prompt="a red fox", steps=3, width=64, height=64, seed=5, batch_size=2)
    steps = []
    out = pipe(params, callback=lambda step, total, _preview: steps.append((step, total)))
    assert out.seeds == [5, 6] and steps[-1] == (3, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a replica's torch threads = its CPU share (1): same reductions, same pixels
    try:
        local = services.host.local_image_pipeline("tiny-sd")(params)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(pixels(out), pixels(local)):
        assert np.array_equal(a, b)
    report = services.host.ray_bridge.status()["image"]
    assert report["replicas"].get("RUNNING", 0) >= 1
    assert any("tiny-sd" in p["models"] and p["pid"] != os.getpid() for p in report["published"])
    from studio.tabs.models import tier_text

    shown = tier_text(services)  # the Models tab: Serve's status and where each replica runs
    assert "**Image models**: autoscaling 1–2" in shown and "tiny-sd" in shown and "running" in shown


def test_bad_input_is_the_same_plain_error_as_in_process(tier):
    _, services = tier
    with pytest.raises(ValueError, match="LoRA x.bin: only .safetensors"):
        services.host.image_pipeline("tiny-sd")(ImageParams(prompt="a", steps=1, width=64, height=64, seed=1,
                                                       loras=lora_set({"x": ("x.bin", 1.0)})))


def test_stop_reaches_the_replica_doing_the_work(tier):
    _, services = tier
    pipe = services.host.image_pipeline("tiny-sd")
    cancel = threading.Event()
    started = time.perf_counter()
    with pytest.raises(GenerationCancelled):
        pipe(LONG, cancel=cancel, callback=lambda step, _total, _p: cancel.set() if step >= 1 else None)
    stopped_after = time.perf_counter() - started
    started = time.perf_counter()
    full = pipe(LONG)  # the replica is free again; a whole run takes this long
    assert len(full.images) == 1
    assert stopped_after < time.perf_counter() - started


def test_a_killed_replica_costs_no_request_and_is_replaced(tier):
    _, services = tier
    pipe = services.host.image_pipeline("tiny-sd")
    reference = pipe(LONG)
    victims = replica_pids(services)
    got: dict = {}
    working = threading.Event()

    def run():
        try:
            got["out"] = pipe(LONG, callback=lambda *_: working.set())
        except Exception as exc:  # noqa: BLE001 - the test reports it
            got["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    assert working.wait(60)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    worker.join(240)
    assert "error" not in got, got.get("error")
    for a, b in zip(pixels(got["out"]), pixels(reference)):  # retried on another replica: the same picture
        assert np.array_equal(a, b)
    live = wait_for_replacement(lambda: replica_pids(services), victims)
    assert live and not live & victims


def test_served_requests_all_finish_while_a_replica_dies_and_history_has_no_half_item(tier):
    from gradio_client import Client

    url, services = tier
    client = Client(url, verbose=False)
    before = len(services.history.list(tab="image"))
    answers, errors = [], []

    def user(seed: int) -> None:
        try:
            info, files = client.predict(prompt="a fox", model="tiny-sd", steps=40, width=128, height=128,
                                         seed=seed, api_name="/generate_image")
            answers.append((info, files))
        except Exception as exc:  # noqa: BLE001 - counted below
            errors.append(exc)

    users = [threading.Thread(target=user, args=(seed,)) for seed in range(4)]
    for u in users:
        u.start()
    time.sleep(2.0)
    victims = replica_pids(services)
    os.kill(min(victims), signal.SIGKILL)
    for u in users:
        u.join(300)
    assert not errors and len(answers) == 4
    services.host.lanes.drain("history")
    items = services.history.list(tab="image")[: len(services.history.list(tab="image")) - before]
    assert sorted(i.seed for i in items) == [0, 1, 2, 3]
    assert all(services.history.path(i.files[0]).stat().st_size > 0 for i in items)


def test_a_burst_scales_the_deployment_up_and_back_down(tier):
    _, services = tier
    pipe = services.host.image_pipeline("tiny-sd")
    burst = [threading.Thread(target=pipe, args=(LONG,)) for _ in range(4)]
    for t in burst:
        t.start()
    seen = set()
    while any(t.is_alive() for t in burst):
        seen.add(services.host.ray_bridge.status()["image"]["replicas"].get("RUNNING", 0))
        time.sleep(0.5)
    assert 2 in seen  # read from Serve's own status
    deadline = time.time() + 90
    while time.time() < deadline:
        replicas = services.host.ray_bridge.status()["image"]["replicas"]
        if replicas == {"RUNNING": 1}:
            break
        time.sleep(1)
    assert replicas == {"RUNNING": 1}


def test_the_cluster_gone_is_said_in_plain_words_and_the_studio_recovers(tier):
    from studio.raytier.client import TierUnreachable

    _, services = tier
    pipe = services.host.image_pipeline("tiny-sd")
    bridge = services.host.ray_bridge._process
    got: dict = {}
    working = threading.Event()

    def run():
        try:
            pipe(LONG, callback=lambda *_: working.set())
        except Exception as exc:  # noqa: BLE001 - the test reads it
            got["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    assert working.wait(60)
    os.kill(bridge.pid, signal.SIGKILL)  # the local Ray goes with it (Ray's processes share its fate)
    worker.join(60)
    assert isinstance(got.get("error"), TierUnreachable)
    assert "cannot be reached right now" in str(got["error"])
    again = pipe(ImageParams(prompt="a red fox", steps=2, width=64, height=64, seed=1))  # a new Ray, redeployed
    assert len(again.images) == 1 and services.host.ray_bridge._process.pid != bridge.pid


def test_ray_settings_are_checked_with_the_field_and_range(tmp_path):
    from studio.config import load_settings

    config = tmp_path / "studio.toml"
    config.write_text('[ray]\naddress = "local"\nmin_replicas = 3\nmax_replicas = 2\n')
    with pytest.raises(ValueError, match="min_replicas ≤ max_replicas"):
        load_settings(config)
    config.write_text('[ray]\nreplicas = 2\n')
    with pytest.raises(ValueError, match=r"unknown \[ray\] settings \['replicas'\]"):
        load_settings(config)
    config.write_text('[ray]\naddress = "head:6379"\nmax_replicas = 8\nreplica_gpus = 0.5\n')
    settings = load_settings(config)
    assert settings.ray.enabled and settings.ray.max_replicas == 8 and settings.ray.replica_gpus == 0.5


def test_users_at_once_on_the_ray_tier_each_get_what_they_would_get_alone(tier, tmp_path, tiny_sd_dir):
    """Under --ray: pictures with and without a LoRA on one model at once (a LoRA travels in its request, never
    on the shared stand-in) and Explore moves on the same model (in-process) — each byte-equal to alone."""
    from tests.conftest import build_tiny_lora
    from tests.test_many_users import answers_alone_and_at_once, requests

    url, _ = tier
    asks = {name: kwargs for name, kwargs in requests(build_tiny_lora(tmp_path, tiny_sd_dir)).items()
            if name in ("picture", "picture with a LoRA", "picture again", "slider move")}
    for kwargs in asks.values():
        if kwargs["api_name"] == "/generate_image":
            kwargs.update(batch_size=1, steps=6)
    alone, got = answers_alone_and_at_once(url, asks, users=6, each=2)
    assert alone["picture"] != alone["picture with a LoRA"]
    for name, answers in got.items():
        assert all(answer == alone[name] for answer in answers), name

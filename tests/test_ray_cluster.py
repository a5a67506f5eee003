"""`studio launch --ray ADDRESS`: joining a Ray cluster started on its own (`ray start --head`), the
cluster going away (said in plain words, the server keeps running) and coming back (recovered), and
the Serve config file that operators deploy. Its own module: `ray stop` ends every Ray on the machine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the [ray] extra is part of the test install")

from pipelines.image import ImageParams
from pipelines.registry import ModelSpec
from studio.config import RaySettings, Settings
from studio.services import Services

pytestmark = pytest.mark.slow  # starts Ray clusters (ray start --head): the fast tier starts none

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SMALL = ImageParams(prompt="a red fox", steps=2, width=64, height=64, seed=4)


def ray_cli(*args: str, env: dict) -> None:
    subprocess.run([str(BIN / "ray"), *args], check=True, capture_output=True, env=env, timeout=120)


def wait_for_serve_apps(address: str, names: list[str], env: dict, timeout: float = 240.0) -> None:
    """Wait until `serve status` says every app in `names` is RUNNING; past the deadline, fail naming what it saw
    (an app that failed to deploy fails at once)."""
    import yaml

    deadline, seen = time.time() + timeout, "nothing yet"
    while time.time() < deadline:
        result = subprocess.run([str(BIN / "serve"), "status", "--address", address], capture_output=True, text=True,
                                env=env, timeout=60)
        status = (yaml.safe_load(result.stdout) or {}) if result.returncode == 0 else {}
        apps = {name: (status.get("applications") or {}).get(name, {}).get("status", "absent") for name in names}
        seen = ", ".join(f"{name}: {state}" for name, state in apps.items()) if status else \
            (result.stderr.strip().splitlines() or ["no answer"])[-1]
        if all(state == "RUNNING" for state in apps.values()):
            return
        if any(state == "DEPLOY_FAILED" for state in apps.values()):
            break
        time.sleep(2)
    pytest.fail(f"Serve's apps did not all reach RUNNING within {timeout:.0f} s; serve status said: {seen}")


def test_the_serve_config_file_builds_the_image_and_text_apps(tmp_path):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from studio.raytier.serve import TIERS, build_app

    config = yaml.safe_load((ROOT / "studio" / "ray_serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    apps = {app["args"]["tier"]: app for app in config["applications"]}
    assert sorted(apps) == sorted(TIERS)
    assert all(app["name"] == TIERS[tier][0] and app["import_path"] == "studio.raytier.serve:build_app"
               for tier, app in apps.items())
    settings_file = tmp_path / "studio.toml"
    settings_file.write_text("[ray]\nmax_replicas = 3\nreplica_gpus = 0.5\n[ray.text]\nreplica_gpus = 1.0\n"
                             "max_replicas = 4\n")
    image = build_app({"config": str(settings_file), "tier": "image"})._bound_deployment
    assert image._deployment_config.autoscaling_config.max_replicas == 3
    assert image.ray_actor_options["num_gpus"] == 0.5 and image.name == "ImageTier"
    text = build_app({"config": str(settings_file), "tier": "text"})._bound_deployment
    assert text._deployment_config.autoscaling_config.max_replicas == 4
    assert text.ray_actor_options["num_gpus"] == 1.0 and text.name == "TextTier"
    with pytest.raises(ValueError, match="tier must be one of image, text, latent, got 'gan'"):
        build_app({"tier": "gan"})
    settings_file.write_text("[ray.text]\nport = 1\n")
    with pytest.raises(ValueError, match=r"\[ray.text\]: a table per family .* got port"):
        build_app({"config": str(settings_file), "tier": "text"})


def test_a_cluster_is_joined_and_its_loss_is_said_in_plain_words_then_recovered(tmp_path, monkeypatch, tiny_sd_dir):
    import studio.raytier.client
    from tests.conftest import _free_port

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway cluster on loopback
    monkeypatch.setattr(studio.raytier.client, "STALL_S", 8.0)
    env = dict(__import__("os").environ)
    port = _free_port()
    head = ["start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
            "--disable-usage-stats"]
    ray_cli(*head, env=env)
    settings = Settings(outputs=tmp_path / "out", device="cpu", offline=True, cache_dir=tmp_path / "cache",
                        ray=RaySettings(address=f"127.0.0.1:{port}", min_replicas=1, max_replicas=1,
                                        tiers=("image",)))
    services = Services.create(settings)
    services.host.registry.add(ModelSpec("tiny-sd", "image", "folder", str(tiny_sd_dir), license="test"))
    try:
        pipe = services.host.image_pipeline("tiny-sd")
        assert services.host.ray_bridge.info["deployed"]  # the app was not there: the studio deployed it
        first = pipe(SMALL)
        ray_cli("stop", "--force", env=env)
        started = time.perf_counter()
        with pytest.raises(studio.raytier.client.TierUnreachable, match="cannot be reached right now"):
            pipe(SMALL)
        assert time.perf_counter() - started < 60
        ray_cli(*head, env=env)
        again = pipe(SMALL)  # a new bridge joins the cluster that came back and deploys the app again
        assert [a.tobytes() for a in again.images] == [a.tobytes() for a in first.images]
    finally:
        services.host.ray_bridge.close()
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_serve_deploy_of_the_config_file_is_what_the_studio_joins(tmp_path, monkeypatch, tiny_sd_dir, tiny_lm_dir):
    """An operator's path: `serve deploy studio/ray_serve.yaml` (sized by a settings file) on a running cluster,
    then `studio launch --ray ADDRESS`: the studio deploys nothing and every family answers from the apps."""
    import numpy as np
    import yaml

    from pipelines.gan import GANParams
    from pipelines.text import TextParams
    from tests.conftest import _free_port
    from tests.test_gan import save_tiny_gan

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = dict(__import__("os").environ)
    port, dashboard = _free_port(), _free_port()
    ray_cli("start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
            f"--dashboard-port={dashboard}", "--disable-usage-stats", env=env)
    try:
        sizing = tmp_path / "studio.toml"
        sizing.write_text("[ray]\nreplica_cpus = 0.5\n")  # three families' replicas on this 2-CPU cluster
        config = yaml.safe_load((ROOT / "studio" / "ray_serve.yaml").read_text())
        for app in config["applications"]:
            app["args"]["config"] = str(sizing)
        deploy_file = tmp_path / "serve.yaml"
        deploy_file.write_text(yaml.safe_dump(config))
        subprocess.run([str(BIN / "serve"), "deploy", str(deploy_file), "--address", f"http://127.0.0.1:{dashboard}"],
                       check=True, capture_output=True, env=env, timeout=120, cwd=ROOT)
        # serve deploy returns before the apps run: wait on Serve's own status, then join
        wait_for_serve_apps(f"http://127.0.0.1:{dashboard}", [app["name"] for app in config["applications"]], env)
        settings = Settings(outputs=tmp_path / "out", device="cpu", offline=True, cache_dir=tmp_path / "cache",
                            ray=RaySettings(address=f"127.0.0.1:{port}"))
        services = Services.create(settings)
        services.host.registry.add(ModelSpec("tiny-sd", "image", "folder", str(tiny_sd_dir), license="test"))
        services.host.registry.add(ModelSpec("tiny-llama", "text", "folder", str(tiny_lm_dir), license="test"))
        services.host.registry.add(ModelSpec("tiny-gan", "gan", "file", str(save_tiny_gan(tmp_path)), license="test"))
        try:
            picture = services.host.image_pipeline("tiny-sd")(SMALL)
            assert services.host.ray_bridge.info["deployed"] == []  # found, not deployed by the studio
            assert len(picture.images) == 1 and np.asarray(picture.images[0]).shape == (64, 64, 3)
            answer = services.host.text_pipeline("tiny-llama")(TextParams(prompt="Hi", max_new_tokens=8, seed=1))
            assert answer.new_tokens == 8 and answer.backend == "transformers"
            grid = services.host.gan_pipeline("tiny-gan")(GANParams(seed=2, grid=2))
            assert grid.images.shape[0] == 4 and grid.seeds == [2, 3, 4, 5]
            report = services.host.ray_bridge.status()
            assert all(report[tier]["replicas"].get("RUNNING") == 1 for tier in ("image", "text", "latent"))
        finally:
            services.host.ray_bridge.close()
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)

"""A real studio served on loopback with tiny random-weight models, for app, security and browser tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipelines.registry import ModelSpec
from studio.app import build_app, launch
from studio.config import Settings
from studio.services import Services


def start(outputs: Path, tiny_lm_dir: Path, port: int, cache_dir: Path, tiny_sd_dir: Path, *,
          launch_options: dict | None = None, **overrides):
    """Serve the app (non-blocking) with tiny-llama, tiny-gan and tiny-sd registered; returns (app, services)."""
    from tests.test_gan import save_tiny_gan

    gan_dir = Path(outputs).parent / "gan"  # beside the outputs: never inside or beside the real model cache
    gan_dir.mkdir(parents=True, exist_ok=True)
    gan_path = save_tiny_gan(gan_dir)
    settings = replace(Settings(), port=port, outputs=outputs, device="cpu", cache_dir=cache_dir, offline=True,
                       **overrides)
    services = Services.create(settings)
    services.host.registry.add(ModelSpec("tiny-llama", "text", "folder", str(tiny_lm_dir), license="test"))
    services.host.registry.add(ModelSpec("tiny-gan", "gan", "file", str(gan_path), license="test"))
    services.host.registry.add(ModelSpec("tiny-sd", "image", "folder", str(tiny_sd_dir), license="test"))
    app = build_app(services)
    launch(app, services, block=False, quiet=True, **(launch_options or {}))
    return app, services


def wait_for_replacement(replica_pids, victims: set[int], timeout: float = 120.0) -> set[int]:
    """Wait until Serve has replaced the killed replicas `victims` (`replica_pids()` reads the live ones);
    returns the live ones."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and (replica_pids() & victims or not replica_pids()):
        time.sleep(1)
    return replica_pids()

"""The Gradio app end to end on loopback: /generate_text through gradio_client, History, restart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.registry import ModelSpec
from studio.app import build_app, launch
from studio.config import Settings
from studio.services import Services


def start(outputs: Path, tiny_lm_dir: Path, port: int, cache_dir: Path):
    settings = replace(Settings(), port=port, outputs=outputs, device="cpu", cache_dir=cache_dir, offline=True)
    services = Services.create(settings)
    services.registry.add(ModelSpec("tiny-llama", "text", "folder", str(tiny_lm_dir), license="test"))
    app = build_app(services)
    launch(app, services, block=False, quiet=True)
    return app, services


@pytest.fixture
def client_factory(tmp_path, tiny_lm_dir, free_port):
    from gradio_client import Client

    apps = []

    def make(outputs: Path):
        port = free_port()
        app, services = start(outputs, tiny_lm_dir, port, tmp_path / "cache")
        apps.append(app)
        return Client(f"http://127.0.0.1:{port}/", verbose=False), services

    yield make
    for app in apps:
        app.close()


def test_generate_text_api_saves_history_and_survives_restart(tmp_path, client_factory):
    outputs = tmp_path / "outputs"
    client, services = client_factory(outputs)
    text, status = client.predict("Once upon a time", "completion", "", "tiny-llama", 12, 0.8, 0.9, 40, 1.1, "", "42",
                                  api_name="/generate_text")
    info = json.loads(status)
    assert info["seed"] == 42 and info["new_tokens"] == 12 and text == info["text"]
    items = services.history.list(tab="text")
    assert len(items) == 1 and items[0].id == info["history_id"] and items[0].seed == 42
    saved = services.history.path(items[0].files[0])
    assert saved.read_text(encoding="utf-8") == text

    # The same request again reproduces the text (seeded, model cached).
    again, _ = client.predict("Once upon a time", "completion", "", "tiny-llama", 12, 0.8, 0.9, 40, 1.1, "", "42",
                              api_name="/generate_text")
    assert again == text

    # A fresh app on the same outputs folder still has the rows.
    client2, services2 = client_factory(outputs)
    assert {i.id for i in services2.history.list()} == {i.id for i in services.history.list()}
    assert len(services2.history.list()) == 2


def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(tmp_path, client_factory):
    from gradio_client.exceptions import AppError

    client, _ = client_factory(tmp_path / "outputs")
    cases = [
        (("", "completion", "", "tiny-llama", 8, 0.7, 0.9, 40, 1.1, "", ""), "prompt is empty"),
        (("hi", "completion", "", "tiny-llama", 0, 0.7, 0.9, 40, 1.1, "", ""), "max_new_tokens"),
        (("hi", "completion", "", "tiny-llama", 10**9, 0.7, 0.9, 40, 1.1, "", ""), "max_new_tokens"),
        (("hi", "completion", "", "tiny-llama", 8, -1, 0.9, 40, 1.1, "", ""), "temperature"),
        (("hi", "completion", "", "tiny-llama", 8, 0.7, 1.5, 40, 1.1, "", ""), "top_p"),
        (("x" * 200_000, "completion", "", "tiny-llama", 8, 0.7, 0.9, 40, 1.1, "", ""), "prompt is too long"),
        (("hi", "completion", "", "no-such-model", 8, 0.7, 0.9, 40, 1.1, "", ""), "offline"),
        (("hi", "completion", "", "tiny-llama", 8, 0.7, 0.9, 40, 1.1, "", "abc"), "seed must be blank"),
    ]
    for args, message in cases:
        with pytest.raises(AppError) as info:
            client.predict(*args, api_name="/generate_text")
        assert message in str(info.value), (args[:5], str(info.value))
    text, status = client.predict("The fox", "chat", "", "tiny-llama", 5, 0, 0.9, 40, 1.0, "", "",
                                  api_name="/generate_text")
    assert json.loads(status)["new_tokens"] >= 1

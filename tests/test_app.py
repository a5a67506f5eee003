"""The Gradio app end to end on loopback: /generate_text through gradio_client, History, restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.registry import ModelSpec
from tests.live import start


@pytest.fixture
def client_factory(tmp_path, tiny_lm_dir, tiny_sd_dir, free_port):
    from gradio_client import Client

    apps = []

    def make(outputs: Path):
        port = free_port()
        app, services = start(outputs, tiny_lm_dir, port, tmp_path / "cache", tiny_sd_dir)
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


def test_gan_sample_and_interpolate_endpoints(tmp_path, client_factory):
    from gradio_client.exceptions import AppError

    from pipelines.media import count_video_frames

    client, services = client_factory(tmp_path / "outputs")
    cells, status = client.predict("tiny-gan", 3, 2, 0.7, api_name="/gan_sample")
    assert len(cells) == 4 and [c["caption"] for c in cells] == ["seed 3", "seed 4", "seed 5", "seed 6"]
    assert "4 faces" in status
    strip, gif, files = client.predict("tiny-gan", "1, 2, 3", 12, "slerp", "ease-in-out", True, 10, 1.0,
                                       api_name="/gan_interpolate")
    assert len(strip) == 12
    mp4 = next(f for f in files if f.endswith(".mp4"))
    assert count_video_frames(Path(mp4).read_bytes(), ".mp4") == 12
    items = services.history.list(tab="gan")
    assert len(items) == 2 and sorted(Path(f).suffix for f in items[0].files) == [".gif", ".mp4", ".png"]
    # Slider bounds are checked by Gradio itself ("Value 0 is less than minimum value 1"), then by the params.
    for args, message in [(("tiny-gan", 0, 0, 1.0), "less than minimum value 1|grid must be"),
                          (("tiny-gan", 0, 1000, 1.0), "greater than maximum value 8|grid must be"),
                          (("tiny-gan", 0, 2, -5), "less than minimum value 0|truncation must be"),
                          (("tiny-gan", -1, 2, 1.0), "seed must be a whole number from 0")]:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/gan_sample")
    with pytest.raises(AppError, match="greater than maximum value 240|frames must be a whole number from 2 to 240"):
        client.predict("tiny-gan", "1, 2", 10_000, "slerp", "linear", False, 10, 1.0, api_name="/gan_interpolate")
    with pytest.raises(AppError, match="identical"):
        client.predict("tiny-gan", "4, 4", 8, "slerp", "linear", False, 10, 1.0, api_name="/gan_interpolate")
    cells, _ = client.predict("tiny-gan", 0, 1, 1.0, api_name="/gan_sample")  # still serving
    assert len(cells) == 1


def image_args(**changes):
    args = dict(mode="Text to image", prompt="a red fox", negative="", init=None, editor=None, strength=0.75,
                model="tiny-sd", sampler="DDIM", steps=3, cfg=5.0, w=64, h=64, seed="21", size=2, count=1,
                var_seed="", var_strength=0.0, loras=None, lora_weights="")
    args.update(changes)
    return list(args.values())


def test_generate_image_endpoint_saves_pngs_with_parameters(tmp_path, client_factory):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from pipelines.media import read_png_info

    client, services = client_factory(tmp_path / "outputs")
    preview, cells, status = client.predict(*image_args(), api_name="/generate_image")
    assert len(cells) == 2 and "seeds 21, 22" in status
    items = services.history.list(tab="image")
    assert sorted(i.seed for i in items) == [21, 22]
    info = read_png_info(services.history.path(items[0].files[0]))
    assert info["settings"]["Model"] == "tiny-sd" and info["prompt"] == "a red fox" and info["ai_generated"]

    init = services.history.path(items[0].files[0])
    _, cells, status = client.predict(*image_args(mode="Image to image", init=handle_file(str(init)), strength=0.5,
                                                  size=1), api_name="/generate_image")
    assert len(cells) == 1
    for changes, message in [({"steps": 0}, "less than minimum value 1|steps must be"),
                             ({"w": 100}, "multiple of 8"),
                             ({"seed": "x"}, "seed must be blank"),
                             ({"mode": "Image to image"}, "init_image")]:
        with pytest.raises(AppError, match=message):
            client.predict(*image_args(**changes), api_name="/generate_image")
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(AppError):  # Gradio's Image component refuses it before our own decoder would
        client.predict(*image_args(mode="Image to image", init=handle_file(str(bad))), api_name="/generate_image")
    _, cells, _ = client.predict(*image_args(size=1), api_name="/generate_image")  # still serving
    assert len(cells) == 1


def test_out_of_memory_is_explained_and_the_next_request_works(tmp_path, client_factory, monkeypatch):
    import torch
    from gradio_client.exceptions import AppError

    from pipelines.image import ImagePipeline

    client, services = client_factory(tmp_path / "outputs")
    real_call = ImagePipeline.__call__
    calls = {"n": 0}

    def failing_once(self, params, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_call(self, params, **kwargs)

    monkeypatch.setattr(ImagePipeline, "__call__", failing_once)
    with pytest.raises(AppError, match="ran out of memory. Try a smaller size, batch"):
        client.predict(*image_args(), api_name="/generate_image")
    assert services.history.list(tab="image") == []  # nothing half-saved
    _, cells, _ = client.predict(*image_args(size=1), api_name="/generate_image")
    assert len(cells) == 1


def test_vae_interpolate_and_map_endpoints(tmp_path, client_factory):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from tests.test_vae import conv_vae, shapes

    client, services = client_factory(tmp_path / "outputs")
    folder = conv_vae(tmp_path, latent_dim=2).model
    services.registry.add(ModelSpec("tiny-vae", "vae", "folder", str(tmp_path / "vae-2"), license="test"))
    files = []
    for i, image in enumerate(shapes(2)):
        path = tmp_path / f"shape-{i}.png"
        from PIL import Image

        Image.fromarray(image).save(path)
        files.append(handle_file(str(path)))
    strip, fade, gif, outputs, note = client.predict("tiny-vae", files, 0, "0", 9, "slerp", "linear", 8,
                                                     api_name="/vae_interpolate")
    assert len(strip) == 9 and len(fade) == 9 and gif.endswith(".gif") and len(outputs) == 2
    strip, _, _, _, _ = client.predict("tiny-vae", [], 3, "5", 4, "lerp", "linear", 8, api_name="/vae_interpolate")
    assert len(strip) == 4  # three random samples, four frames
    cells = client.predict("tiny-vae", 4, 2.0, 0, 1, [], api_name="/vae_map")
    assert len(cells) == 16
    assert [i.tab for i in services.history.list(tab="vae")] == ["vae"] * 3
    with pytest.raises(AppError, match="axis_x and axis_y must differ"):
        client.predict("tiny-vae", 4, 2.0, 1, 1, [], api_name="/vae_map")
    with pytest.raises(AppError, match="upload two or more images"):
        client.predict("tiny-vae", [], 0, "0", 9, "slerp", "linear", 8, api_name="/vae_interpolate")
    assert folder.latent_dim == 2

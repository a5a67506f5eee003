"""The Gradio app end to end on loopback, through its public API with gradio_client: text, images, GAN,
VAE and the workbench's explore_* endpoints, History, bad input, out of memory, restart."""

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
    text, status = client.predict("Once upon a time", "completion", "", "tiny-llama", 12, 0.8, 0.9, 40, 1.1, "", 42,
                                  api_name="/generate_text")
    info = json.loads(status)
    assert info["seed"] == 42 and info["new_tokens"] == 12 and text == info["text"]
    items = services.history.list(tab="text")
    assert len(items) == 1 and items[0].id == info["history_id"] and items[0].seed == 42
    saved = services.history.path(items[0].files[0])
    assert saved.read_text(encoding="utf-8") == text

    # The same request again reproduces the text (seeded, model cached).
    again, _ = client.predict(prompt="Once upon a time", model="tiny-llama", max_new_tokens=12, temperature=0.8,
                              top_p=0.9, top_k=40, seed=42, api_name="/generate_text")
    assert again == text
    greedy, _ = client.predict(prompt="Once upon a time", model="tiny-llama", max_new_tokens=12, temperature=0,
                               api_name="/generate_text")
    focused, _ = client.predict(prompt="Once upon a time", model="tiny-llama", max_new_tokens=12, temperature=1.5,
                                top_k=0, top_p=1.0, min_p=1.0, seed=3, api_name="/generate_text")
    assert focused == greedy  # min-p 1: only the likeliest token

    # Chat: a cut-off answer continues from its last word, in the same turn
    turn = client.predict(message="hello", model="tiny-llama", max_new_tokens=4, temperature=0, api_name="/chat")
    more = client.predict(message="", history=turn["history"], model="tiny-llama", max_new_tokens=4, temperature=0,
                          continue_last=True, api_name="/chat")
    assert len(more["history"]) == 2 and more["history"][-1] == ["assistant", turn["reply"] + more["reply"]]

    # A fresh app on the same outputs folder still has the rows.
    client2, services2 = client_factory(outputs)
    assert {i.id for i in services2.history.list()} == {i.id for i in services.history.list()}
    assert len(services2.history.list()) == 6


def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(tmp_path, client_factory):
    from gradio_client.exceptions import AppError

    client, _ = client_factory(tmp_path / "outputs")
    base = dict(prompt="hi", mode="completion", model="tiny-llama", max_new_tokens=8)
    cases = [
        ({"prompt": ""}, "prompt is empty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 10**9}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"prompt": "x" * 200_000}, "prompt is too long"),
        ({"model": "no-such-model"}, "offline"),
        ({"seed": -7}, "seed must be -1 (random) or a whole number"),
        ({"mode": "poem"}, "mode must be 'chat' or 'completion'"),
    ]
    for changes, message in cases:
        with pytest.raises(AppError) as info:
            client.predict(**{**base, **changes}, api_name="/generate_text")
        assert message in str(info.value), (changes, str(info.value))
        assert len(str(info.value)) < 400  # a 200,000-character value is never echoed back whole
    text, status = client.predict("The fox", "chat", "", "tiny-llama", 5, 0, 0.9, 40, 1.0, "", -1,
                                  api_name="/generate_text")
    assert json.loads(status)["new_tokens"] >= 1
    reply = client.predict("Hello", [["user", "Hi"], ["assistant", "Hello!"]], model="tiny-llama", max_new_tokens=4,
                           temperature=0, api_name="/chat")
    assert reply["history"][-1] == ["assistant", reply["reply"]] and len(reply["history"]) == 4


def test_gan_sample_and_interpolate_endpoints(tmp_path, client_factory):
    from gradio_client.exceptions import AppError

    from pipelines.media import count_video_frames

    client, services = client_factory(tmp_path / "outputs")
    info, files = client.predict("tiny-gan", 3, 2, 0.7, api_name="/gan_sample")
    assert info["seeds"] == [3, 4, 5, 6] and info["history_id"]
    grid_png = next(f for f in files if f.endswith(".png"))
    from PIL import Image

    assert Image.open(grid_png).size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # one picture: 2×2 cells of 32 px
    latents = next(f for f in files if f.endswith(".safetensors"))
    from pipelines.latent import load_points

    assert [p.label for p in load_points(latents)] == ["seed 3", "seed 4", "seed 5", "seed 6"]
    info, files = client.predict("tiny-gan", "1, 2, 3", 12, "slerp", "ease-in-out", True, 10, 1.0,
                                 api_name="/gan_interpolate")
    assert info["frames"] == 12
    mp4 = next(f for f in files if f.endswith(".mp4"))
    assert count_video_frames(Path(mp4).read_bytes(), ".mp4") == 12
    items = services.history.list(tab="gan")
    assert len(items) == 2 and sorted(Path(f).suffix for f in items[0].files) == [".gif", ".mp4", ".png"]
    for args, message in [(("tiny-gan", 0, 0, 1.0), "grid_size must be a whole number from 1 to 8, got 0"),
                          (("tiny-gan", 0, 1000, 1.0), "grid_size must be a whole number from 1 to 8, got 1000"),
                          (("tiny-gan", 0, 2, -5), "truncation must be a number from 0.0 to 1.5"),
                          (("tiny-gan", -1, 2, 1.0), "seed must be a whole number from 0")]:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/gan_sample")
    with pytest.raises(AppError, match="frames must be a whole number from 2 to 240, got 10000"):
        client.predict("tiny-gan", "1, 2", 10_000, "slerp", "linear", False, 10, 1.0, api_name="/gan_interpolate")
    with pytest.raises(AppError, match="identical"):
        client.predict("tiny-gan", "4, 4", 8, "slerp", "linear", False, 10, 1.0, api_name="/gan_interpolate")
    info, _ = client.predict("tiny-gan", 0, 1, 1.0, api_name="/gan_sample")  # still serving
    assert info["seeds"] == [0]


def image_args(**changes) -> dict:
    args = dict(prompt="a red fox", negative_prompt="", model="tiny-sd", sampler_name="DDIM", steps=3, cfg_scale=5.0,
                width=64, height=64, seed=21, batch_size=2, n_iter=1)
    args.update(changes)
    return args


def test_generate_image_endpoint_saves_pngs_with_parameters(tmp_path, client_factory):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from pipelines.media import read_png_info

    client, services = client_factory(tmp_path / "outputs")
    info, files = client.predict(**image_args(), api_name="/generate_image")
    assert len(files) == 2 and info["seeds"] == [21, 22] and info["parameters"]["mode"] == "txt2img"
    items = services.history.list(tab="image")
    assert sorted(i.seed for i in items) == [21, 22] and sorted(info["history_ids"]) == sorted(i.id for i in items)
    png = read_png_info(services.history.path(items[0].files[0]))
    assert png["settings"]["Model"] == "tiny-sd" and png["prompt"] == "a red fox" and png["ai_generated"]
    assert read_png_info(files[0])["settings"]["Seed"] in ("21", "22")  # the returned file carries it too

    init = services.history.path(items[0].files[0])
    info, files = client.predict(**image_args(init_images=[handle_file(str(init))], denoising_strength=0.5,
                                              batch_size=1), api_name="/generate_image")
    assert len(files) == 1 and info["parameters"]["mode"] == "img2img"
    for changes, message in [({"steps": 0}, "steps must be a whole number from 1 to 150, got 0"),
                             ({"width": 100}, "width must be a multiple of 8"),
                             ({"seed": -3}, "seed must be -1 .random."),
                             ({"lora_weights": "abc", "lora_files": []}, "lora_weights: 'abc' is not a number")]:
        with pytest.raises(AppError, match=message):
            client.predict(**image_args(**changes), api_name="/generate_image")
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(AppError, match="not an image PIL can read"):
        client.predict(**image_args(init_images=[handle_file(str(bad))]), api_name="/generate_image")
    info, files = client.predict(**image_args(batch_size=1), api_name="/generate_image")  # still serving
    assert len(files) == 1
    assert client.predict(handle_file(str(init)), api_name="/png_info")["prompt"] == "a red fox"

    # Content Credentials on what was made, as /verify_image reads them back
    report = client.predict(image=handle_file(str(init)), api_name="/verify_image")
    c = report["credentials"]
    assert c["state"] == "valid" and c["this_install"] and c["actions"] == ["c2pa.created"]
    assert c["model"] == "tiny-sd" and c["parameters"]["prompt"] == "a red fox" and c["parameters"]["seed"] in (21, 22)
    assert report["png"]["settings"]["Model"] == "tiny-sd"
    assert "Content Credentials: valid" in report["summary"] and "this studio" in report["summary"]
    img2img = [i for i in services.history.list(tab="image") if i.params.get("mode") == "img2img"][0]
    c = client.predict(image=handle_file(str(services.history.path(img2img.files[0]))),
                       api_name="/verify_image")["credentials"]
    assert c["actions"] == ["c2pa.opened", "c2pa.edited"] and c["ingredients"] == ["start picture.png"]
    assert report["watermark"]["reason"].startswith("the picture (64×64) is smaller than 256×256")
    with pytest.raises(AppError, match="not a PNG, JPEG, WebP, GIF or MP4"):
        client.predict(image=handle_file(str(bad)), api_name="/verify_image")


def test_daily_image_tools_through_the_api(tmp_path, client_factory):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    from pipelines.media import read_png_info

    client, services = client_factory(tmp_path / "outputs")
    info, files = client.predict(**image_args(prompt="a (red:1.4) fox", batch_size=1, enable_hr=True, hr_scale=2,
                                              hr_upscaler="Lanczos", hr_second_pass_steps=2,
                                              styles="Pixel art"), api_name="/generate_image")
    png = read_png_info(files[0])
    assert Image.open(files[0]).size == (128, 128) and png["settings"]["Hires upscale"] == "2"
    assert png["settings"]["Style"] == "Pixel art" and png["prompt"] == "a (red:1.4) fox"
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(start)
    info, files = client.predict(**image_args(init_images=[handle_file(str(start))], outpaint="0,32,0,0",
                                              batch_size=1, denoising_strength=1.0), api_name="/generate_image")
    assert Image.open(files[0]).size == (96, 64) and info["parameters"]["mode"] == "outpaint"
    assert Image.open(files[0]).getpixel((4, 30)) == (200, 30, 30)  # the original, kept
    info, big = client.predict(image=handle_file(str(start)), scale=3, api_name="/upscale_image")
    assert info["size"] == [192, 192] and Image.open(big).size == (192, 192) and info["history_id"]
    c = client.predict(image=handle_file(big), api_name="/verify_image")["credentials"]
    assert c["state"] == "valid" and c["actions"] == ["c2pa.opened", "c2pa.resized"] and not c["source_type"]

    # the X/Y/Z plot, styles and item links over the API
    base = {k: image_args()[k] for k in ("prompt", "model", "steps", "width", "height")}
    info, plot = client.predict(**base, seed=5, x_type="CFG scale", x_values="2, 7", y_type="Seed", y_values="5-6",
                                api_name="/plot_xyz")
    assert info["cells"] == info["total"] == 4 and info["axes"]["x"] == {"axis": "CFG scale", "values": ["2", "7"]}
    cells = [services.history.get(i) for i in info["cell_ids"]]
    assert sorted((c.params["guidance"], c.seed) for c in cells) == [(2.0, 5), (2.0, 6), (7.0, 5), (7.0, 6)]
    assert Image.open(plot).width > 2 * 64 and services.history.get(info["history_id"]).params["cells"]
    with pytest.raises(AppError, match="X values: the axis must be one of"):
        client.predict(x_type="Colour", x_values="1", api_name="/plot_xyz")
    style = client.predict(name="Ink wash", prompt="{prompt}, ink wash painting", negative_prompt="photo",
                           api_name="/save_style")
    assert style["name"] == "Ink wash" and "Ink wash" in style["styles"]
    info, files = client.predict(**image_args(batch_size=1, styles="Ink wash"), api_name="/generate_image")
    png = read_png_info(files[0])
    assert png["settings"]["Style"] == "Ink wash" and png["studio"]["style"]["prompt"] == "{prompt}, ink wash painting"
    with pytest.raises(AppError, match="style name: 1 to 60 characters"):
        client.predict(name="", api_name="/save_style")
    link = client.predict(id=info["history_ids"][0], api_name="/share_item")
    assert link["url"].endswith(link["route"]) and link["route"].startswith(f"/item/{info['history_ids'][0]}/")
    import urllib.request

    with urllib.request.urlopen(link["url"], timeout=30) as page:
        assert "a red fox" in page.read().decode()
    with pytest.raises(AppError, match="no such History item"):
        client.predict(id="20260101-000000-00000000", api_name="/share_item")
    for changes, message in [({"prompt": "(word:abc)"}, r"prompt: the weight in '\(word:abc\)' must be a number"),
                             ({"enable_hr": True, "hr_upscaler": "/etc/passwd"}, "hr_upscaler must be one of Latent"),
                             ({"enable_hr": True, "hr_scale": 9}, r"hires scale must be a number in \(1.0, 4.0\]"),
                             ({"styles": "Nope"}, "style: no style named 'Nope'"),
                             ({"init_images": [handle_file(str(start))], "outpaint": "0,100000,0,0"},
                              "outpaint right must be a whole number from 0 to 1,024")]:
        with pytest.raises(AppError, match=message):
            client.predict(**image_args(**changes), api_name="/generate_image")
    with pytest.raises(AppError, match=r"upscale scale must be a number in \(1.0, 8.0\]"):
        client.predict(image=handle_file(str(start)), scale=9, api_name="/upscale_image")
    large = tmp_path / "large.png"
    Image.new("RGB", (1100, 1100)).save(large)
    with pytest.raises(AppError, match="upscale scale: 1100×1100 × 4 would be 4400×4400 .* the limit is 16.8"):
        client.predict(image=handle_file(str(large)), scale=4, api_name="/upscale_image")
    _, files = client.predict(**image_args(batch_size=1), api_name="/generate_image")  # still serving
    assert len(files) == 1


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
        client.predict(**image_args(), api_name="/generate_image")
    assert services.history.list(tab="image") == []  # nothing half-saved
    _, files = client.predict(**image_args(batch_size=1), api_name="/generate_image")
    assert len(files) == 1


def test_vae_interpolate_and_map_endpoints(tmp_path, client_factory):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from tests.test_vae import conv_vae, shapes

    client, services = client_factory(tmp_path / "outputs")
    folder = conv_vae(tmp_path, latent_dim=2).model
    services.host.registry.add(ModelSpec("tiny-vae", "vae", "folder", str(tmp_path / "vae-2"), license="test"))
    files = []
    for i, image in enumerate(shapes(2)):
        path = tmp_path / f"shape-{i}.png"
        from PIL import Image

        Image.fromarray(image).save(path)
        files.append(handle_file(str(path)))
    info, outputs = client.predict("tiny-vae", files, 0, 0, 9, "slerp", "linear", 8, api_name="/vae_interpolate")
    assert info["frames"] == 9 and sorted(Path(f).suffix for f in outputs) == [".gif", ".mp4", ".png"]
    from pipelines.media import count_video_frames

    mp4 = next(f for f in outputs if f.endswith(".mp4"))
    assert count_video_frames(Path(mp4).read_bytes(), ".mp4") == 9
    info, _ = client.predict("tiny-vae", None, 3, 5, 4, "lerp", "linear", 8, api_name="/vae_interpolate")
    assert info["frames"] == 4  # three random samples, four frames
    info, cells = client.predict("tiny-vae", 4, 2.0, 0, 1, None, api_name="/vae_map")
    assert info["cells"] == 16 and Image.open(cells[0]).size == (4 * 28 + 5, 4 * 28 + 5)
    assert [i.tab for i in services.history.list(tab="vae")] == ["vae"] * 3
    with pytest.raises(AppError, match="axis_x and axis_y must differ"):
        client.predict("tiny-vae", 4, 2.0, 1, 1, None, api_name="/vae_map")
    with pytest.raises(AppError, match="give two or more images, or random_samples from 2 to 8"):
        client.predict("tiny-vae", None, 0, 0, 9, "slerp", "linear", 8, api_name="/vae_interpolate")
    info, _ = client.predict(files, "tiny-vae", api_name="/vae_reconstruct")
    assert len(info["psnr_db"]) == 2
    assert folder.latent_dim == 2


@pytest.mark.parametrize("model, kind, key", [("tiny-sd", "diffusion", "1: a red fox\n2: a blue bird"),
                                               ("tiny-gan", "gan", "1\n2"), ("tiny-vae", "vae", "3\n4")])
def test_explore_endpoints_on_every_model_kind(tmp_path, client_factory, model, kind, key):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    from pipelines.latent import load_directions, load_points
    from tests.test_vae import conv_vae

    client, services = client_factory(tmp_path / "outputs")
    conv_vae(tmp_path, latent_dim=4)
    services.host.registry.add(ModelSpec("tiny-vae", "vae", "folder", str(tmp_path / "vae-4"), license="test"))
    look = dict(steps=2, width=64, height=64, sampler_name="DDIM") if kind == "diffusion" else {}
    info, files = client.predict(model=model, keyframes=key, frames=3, **look, api_name="/explore_walk")
    assert info["frames"] == 4 and sorted(Path(f).suffix for f in files) == [".gif", ".mp4", ".png"]
    assert 0 <= info["smoothness"] <= 1
    method = {"diffusion": "h-space", "gan": "sefa", "vae": "dimensions"}[kind]
    info, files = client.predict(model=model, method=method, count=2, origin=key.split("\n")[0], **look,
                                 api_name="/explore_directions")
    saved = next(f for f in files if f.endswith(".safetensors"))
    assert len(load_directions(saved)) == len(info["directions"]) == 2
    info, files = client.predict(model=model, origin=key.split("\n")[0], amounts="1.5, -1",
                                 directions_file=handle_file(saved), **look, api_name="/explore_move")
    assert info["amounts"] == [1.5, -1.0] and load_points(files[1])[0].model
    info, files = client.predict(model=model, grid_size=3, directions_file=handle_file(saved), **look,
                                 api_name="/explore_map")
    assert info["cells"] == 9 and len(load_points(next(f for f in files if f.endswith(".safetensors")))) == 9
    info, files = client.predict(model=model, parents=key, children=3, seed=5, api_name="/explore_breed")
    assert info["children"] == 3 and Image.open(files[0]).size[0] > 0
    with pytest.raises(AppError, match="keyframes 1 and 2 are identical"):
        client.predict(model=model, keyframes="7\n7", **look, api_name="/explore_walk")
    with pytest.raises(AppError, match="frames per segment must be whole numbers from 1 to 240"):
        client.predict(model=model, keyframes=key, frames=10_000, **look, api_name="/explore_walk")
    with pytest.raises(AppError, match="belongs to"):  # a latent from another model
        other = "tiny-gan" if kind != "gan" else "tiny-sd"
        other_look = dict(steps=2, width=64, height=64) if other == "tiny-sd" else {}
        _, moved = client.predict(model=other, origin="1", amounts="0", method="h-space" if other == "tiny-sd" else "",
                                  count=1, **other_look, api_name="/explore_move")
        client.predict(model=model, latents=[handle_file(moved[1]), handle_file(moved[1])], **look,
                       api_name="/explore_walk")
    if kind == "diffusion":
        with pytest.raises(AppError, match="the positive side is empty"):
            client.predict(model=model, method="prompt-pair", positive="", negative="sad", **look,
                           api_name="/explore_directions")


def test_generate_image_takes_controlnet_units_and_regional_prompts(tmp_path, client_factory):
    """ControlNet over the API: AUTOMATIC1111's unit names as JSON, one picture each; the PNG records the unit.
    Regional prompts: the prompt's parts between BREAKs in columns. Bad values name their field."""
    import json as _json

    from diffusers import UNet2DConditionModel
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from PIL import Image

    from pipelines.media import read_png_info
    from tests.test_control import build_controlnet, square

    client, services = client_factory(tmp_path / "outputs")
    unet = UNet2DConditionModel.from_pretrained(services.host.registry.lookup("tiny-sd", "image").location, subfolder="unet")
    net = build_controlnet(tmp_path / "edges-net", unet, 1)
    square(64).save(tmp_path / "square.png")
    units = [{"model": net, "module": "canny", "weight": 0.8, "guidance_start": 0.0, "guidance_end": 0.9}]
    info, files = client.predict(**image_args(batch_size=1), controlnet=_json.dumps(units),
                                 controlnet_images=[handle_file(str(tmp_path / "square.png"))],
                                 api_name="/generate_image")
    settings = read_png_info(files[0])["settings"]
    assert settings["ControlNet 0"] == "Module: canny, Model: edges-net, Weight: 0.8, Guidance Start: 0, Guidance End: 0.9"
    for units, pictures, message in (
            ([{"model": net, "modul": "canny"}], 1, r"controlnet\[0\]: unknown modul"),
            ([{"model": net}], 0, "controlnet_images: give one picture per ControlNet unit"),
            ("[{", 1, "controlnet: not JSON"),
            ([{"model": "/etc"}], 1, "controlnet model: .* is outside the model folders")):
        with pytest.raises(AppError, match=message):
            client.predict(**image_args(batch_size=1), controlnet=units if isinstance(units, str) else
                           _json.dumps(units), controlnet_images=[handle_file(str(tmp_path / "square.png"))] * pictures,
                           api_name="/generate_image")
    info, files = client.predict(**image_args(prompt="red heart BREAK blue cat", batch_size=1), regions="columns",
                                 regions_ratios="1,1", api_name="/generate_image")
    item = services.history.get(info["history_ids"][0])
    assert [r["prompt"] for r in item.params["regions"]] == ["red heart", "blue cat"]
    assert item.params["regions"][1]["box"] == [0.5, 0.0, 1.0, 1.0]
    with pytest.raises(AppError, match="separate the regions' prompts with BREAK"):
        client.predict(**image_args(batch_size=1), regions="columns", api_name="/generate_image")
    # an image prompt (IP-Adapter): a file in the model folders with its image encoder beside it
    from tests.conftest import build_tiny_ip_adapter

    adapter = str(build_tiny_ip_adapter(tmp_path / "ip", unet, 1))
    plain, _ = client.predict(**image_args(batch_size=1), api_name="/generate_image")
    info, files = client.predict(**image_args(batch_size=1), ip_adapter=adapter, ip_adapter_weight=0.9,
                                 ip_adapter_image=handle_file(str(tmp_path / "square.png")), api_name="/generate_image")
    assert read_png_info(files[0])["settings"]["ControlNet 0"] == (
        "Module: ip-adapter_clip, Model: ip-adapter, Weight: 0.9, Guidance Start: 0, Guidance End: 1")
    assert services.history.get(info["history_ids"][0]).params["image_prompt"] == {"adapter": adapter, "weight": 0.9}
    for changes, message in (({"ip_adapter": adapter}, "ip_adapter_image: give the image prompt's picture"),
                             ({"ip_adapter": adapter, "ip_adapter_weight": 3, "ip_adapter_image": True},
                              "ip_adapter weight must be .*2"),
                             ({"ip_adapter": "/etc/x.safetensors", "ip_adapter_image": True},
                              "ip_adapter: .* is outside the model folders")):
        if changes.get("ip_adapter_image"):
            changes["ip_adapter_image"] = handle_file(str(tmp_path / "square.png"))
        with pytest.raises(AppError, match=message):
            client.predict(**image_args(batch_size=1), **changes, api_name="/generate_image")
    # Explore over the API: a walk between two keyframes' image prompts (the morph)
    Image.new("RGB", (64, 64), (20, 20, 230)).save(tmp_path / "blue.png")
    walk_args = dict(model="tiny-sd", keyframes="1: red heart\n1: red heart", frames=3, steps=2, width=64, height=64,
                     image_prompts=[handle_file(str(tmp_path / name)) for name in ("square.png", "blue.png")])
    info, _ = client.predict(**walk_args, ip_adapter=adapter, api_name="/explore_walk")
    assert info["frames"] == 4 and info["keyframes"] == ["seed 1 · red heart · image prompt"] * 2
    with pytest.raises(AppError, match="choose an IP-Adapter in the render settings"):
        client.predict(**walk_args, api_name="/explore_walk")

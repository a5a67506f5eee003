"""A launched studio serves tiny Flux- and Qwen-Image-shaped folders through the API: pictures by seed, the
family's sampler, refusals in words, and Explore (walk, prompt-pair and h-space directions, move, breed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.registry import ModelSpec
from tests.families import build_tiny_flux, build_tiny_qwen_image
from tests.live import start


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    import socket

    from gradio_client import Client

    root = tmp_path_factory.mktemp("families-app")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir)
    services.host.registry.add(ModelSpec("tiny-flux", "image", "folder", str(build_tiny_flux(root)), license="test"))
    services.host.registry.add(ModelSpec("tiny-qwen-image", "image", "folder", str(build_tiny_qwen_image(root)),
                                    license="test"))
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), services
    app.close()


def args(model: str, **changes) -> dict:
    values = dict(prompt="a red fox", negative_prompt="", model=model, sampler_name="Flow Euler", steps=2,
                  cfg_scale=3.5, width=64, height=64, seed=21, batch_size=1, n_iter=1)
    values.update(changes)
    return values


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-qwen-image"])
def test_generate_and_explore_a_flow_model_through_the_api(served, model):
    from gradio_client.exceptions import AppError
    from PIL import Image

    from pipelines.media import read_png_info

    client, services = served
    info, files = client.predict(**args(model), api_name="/generate_image")
    assert info["seeds"] == [21] and read_png_info(files[0])["settings"]["Sampler"] == "Flow Euler"
    _, again = client.predict(**args(model), api_name="/generate_image")
    assert Image.open(files[0]).tobytes() == Image.open(again[0]).tobytes()
    with pytest.raises(AppError, match="is a flow-matching model; choose one of Flow Euler"):
        client.predict(**args(model, sampler_name="DDIM"), api_name="/generate_image")

    look = dict(steps=2, width=64, height=64, sampler_name="Flow Euler")
    info, files = client.predict(model=model, keyframes="1: a red fox\n2: a blue bird", frames=3, **look,
                                 api_name="/explore_walk")
    assert info["frames"] == 4 and sorted(Path(f).suffix for f in files) == [".gif", ".mp4", ".png"]
    info, files = client.predict(model=model, method="prompt-pair", positive="smiling", negative="neutral",
                                 origin="1: a red fox", **look, api_name="/explore_directions")
    saved = next(f for f in files if f.endswith(".safetensors"))
    from gradio_client import handle_file

    info, files = client.predict(model=model, origin="1: a red fox", amounts="1.5", directions_file=handle_file(saved),
                                 **look, api_name="/explore_move")
    assert info["amounts"] == [1.5]
    info, files = client.predict(model=model, parents="1: a red fox\n2: a blue bird", children=2, seed=5,
                                 api_name="/explore_breed")
    assert info["children"] == 2
    info, _ = client.predict(model=model, method="h-space", count=2, origin="1: a red fox", **look,
                             api_name="/explore_directions")  # PCA of a middle transformer block: the family's h-space
    assert [d["method"] for d in info["directions"]] == ["h-space", "h-space"]
    with pytest.raises(AppError, match="method must be one of prompt-pair, h-space"):
        client.predict(model=model, method="sefa", count=2, origin="1", **look, api_name="/explore_directions")


def test_an_xyz_plot_and_the_hires_fix_on_a_flow_model_through_the_api(served):
    from PIL import Image

    from pipelines.media import read_png_info

    client, services = served
    info, plot = client.predict(prompt="a red fox", model="tiny-flux", steps=2, width=64, height=64,
                                sampler_name="Flow Euler", seed=5, x_type="Sampler",
                                x_values="Flow Euler, Flow Euler Karras", y_type="Seed", y_values="5-6",
                                api_name="/plot_xyz")
    cells = [services.history.get(i) for i in info["cell_ids"]]
    assert info["cells"] == 4 and sorted((c.params["scheduler"], c.seed) for c in cells) == [
        ("Flow Euler", 5), ("Flow Euler", 6), ("Flow Euler Karras", 5), ("Flow Euler Karras", 6)]
    assert Image.open(plot).width > 2 * 64
    info, files = client.predict(**args("tiny-flux", enable_hr=True, hr_scale=2.0, hr_upscaler="Latent",
                                        hr_denoising_strength=0.6), api_name="/generate_image")
    settings = read_png_info(files[0])["settings"]  # a flow model upscales pictures: the PNG says what ran
    assert Image.open(files[0]).size == (128, 128) and settings["Hires upscaler"] == "Lanczos"


def test_the_sampler_boxes_follow_the_model_and_keep_a_sampler_it_runs(served):
    """Explore's and the Image tab's Sampler offer the chosen model's samplers, sent as the page sends the Model box's
    change (Explore listed SD's alone: a flow picture opened there had a sampler its own box refused). A picture's
    sampler put back with its model stays when the model runs it; otherwise the family's first is chosen."""
    from tests.security.events import config, send

    client, _ = served
    url = client.src if client.src.endswith("/") else client.src + "/"
    page = config(url, "")
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in page["components"]}

    def follow(tab: str, model: str, sampler: str):
        model_id, sampler_id = ids[f"{tab}-model"], ids[f"{tab}-sampler"]
        event = next(d for d in page["dependencies"] if [model_id, "change"] in d["targets"]
                     and sampler_id in d["outputs"])
        values = {model_id: model, sampler_id: sampler}
        answer = send(url, "", event["id"], [values.get(i) for i in event["inputs"]],
                      queued=event.get("queue") is not False)
        assert answer["ok"], answer["error"]
        box = answer["data"][event["outputs"].index(sampler_id)]
        return [choice[0] for choice in box["choices"]], box["value"]

    for tab in ("explore", "image"):
        choices, value = follow(tab, "tiny-flux", "DPM++ 2M")
        assert choices[0] == "Flow Euler" and "DPM++ 2M" not in choices and value == "Flow Euler"
        assert follow(tab, "tiny-flux", "Flow Euler Karras")[1] == "Flow Euler Karras"  # put back, and kept
        choices, value = follow(tab, "tiny-sd", "Flow Euler Karras")  # an SD model: SD's samplers
        assert "DPM++ 2M" in choices and "Flow Euler" not in choices and value == "DPM++ 2M"

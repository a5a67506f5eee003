"""The model host's admission on a public studio, per path: a guest cannot load a model, exceed a limit or
skip the quota through Explore; model names that are paths are refused before anything is opened; each
test uses a guest of its own (no test leans on another's quota)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.image import ImageLimits
from tests.live import start

OWNER = ("owner", "owner-pw")
GUESTS = tuple((f"guest{i}", f"guest{i}-pw") for i in range(4))
QUOTA = 4
EXPLORE = dict(model="tiny-sd", steps=4, width=64, height=64, kind="diffusion")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("admission")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir, auth=(OWNER,),
                          guest_auth=GUESTS, guest_generations_per_hour=QUOTA,
                          image_limits=ImageLimits(max_steps=12, max_megapixels=0.1))
    owner = client(f"http://127.0.0.1:{port}/", OWNER)
    owner.predict(prompt="red", steps=1, width=64, height=64, model="tiny-sd", api_name="/generate_image")
    yield f"http://127.0.0.1:{port}/", services  # tiny-sd is loaded: guests may use it
    app.close()


def client(url: str, who: tuple[str, str]):
    from gradio_client import Client

    return Client(url, auth=who, verbose=False)


def test_a_guests_explore_moves_count_against_the_quota(server):
    from gradio_client.exceptions import AppError

    url, services = server
    guest = client(url, GUESTS[0])
    guest.predict(origin="1: red", method="prompt-pair", positive="red", negative="blue", amounts="1",
                  api_name="/explore_move", **EXPLORE)
    spent = QUOTA - services.access.remaining(GUESTS[0][0])
    assert spent >= 0.05 - 1e-9  # the move's render is work (a tiny one costs the least a request costs)
    services.access.admit(GUESTS[0][0], services.access.remaining(GUESTS[0][0]))  # the rest used up
    with pytest.raises(AppError, match="Quota reached"):
        guest.predict(origin="1: red", method="prompt-pair", positive="red", negative="blue", amounts="1",
                      api_name="/explore_move", **EXPLORE)


def test_a_guest_cannot_reach_another_model_through_explore_or_a_path(server):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    url, services = server
    guest = client(url, GUESTS[1])
    with pytest.raises(AppError, match="Guests can't switch models"):
        guest.predict(model="../../../../etc/passwd", grid_size=2, api_name="/vae_map")
    with pytest.raises(AppError, match="Guests can't switch models"):
        guest.predict(origin="1", model="sd-1.5", kind="diffusion", steps=2, api_name="/explore_move")
    with pytest.raises(AppError, match="Guests can't load ControlNet models"):  # no weights of their own either
        guest.predict(prompt="red", steps=1, width=64, height=64, model="tiny-sd",
                      controlnet='[{"model": "lllyasviel/control_v11p_sd15_canny"}]',
                      controlnet_images=[handle_file(str(Path(__file__).parent.parent.parent / "assets" / "models"
                                                         / "emoji-ldm" / "samples.png"))], api_name="/generate_image")
    with pytest.raises(AppError, match="Guests can't load IP-Adapter models"):
        guest.predict(prompt="red", steps=1, width=64, height=64, model="tiny-sd",
                      ip_adapter="h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
                      ip_adapter_image=handle_file(str(Path(__file__).parent.parent.parent / "assets" / "models"
                                                       / "emoji-ldm" / "samples.png")), api_name="/generate_image")
    assert services.access.remaining(GUESTS[1][0]) == QUOTA  # refused requests cost nothing
    assert [key for _, key in services.host.cache.loaded("image")] == ["tiny-sd"]  # nothing was loaded for them


def test_explore_obeys_the_servers_limits(server):
    from gradio_client.exceptions import AppError

    url, services = server
    guest = client(url, GUESTS[2])
    with pytest.raises(AppError, match="steps must be from 1 to 12 on this server, got 150"):
        guest.predict(origin="1: red", api_name="/explore_move", **{**EXPLORE, "steps": 150})
    with pytest.raises(AppError, match="size: 2048×2048 is 4.19 megapixels; the limit is 0.1"):
        guest.predict(origin="1: red", api_name="/explore_move", **{**EXPLORE, "width": 2048, "height": 2048})
    with pytest.raises(AppError, match="one diffusion request renders 1 to 480 pictures, got 576"):
        guest.predict(origin="1: red", method="h-space", grid_size=24, api_name="/explore_map", **EXPLORE)
    assert services.access.remaining(GUESTS[2][0]) == QUOTA


def test_model_paths_are_refused_before_anything_is_opened(server):
    from gradio_client.exceptions import AppError

    url, _ = server
    owner = client(url, OWNER)
    with pytest.raises(AppError, match=r"model: '../../../../etc/passwd' is outside the model folders"):
        owner.predict(model="../../../../etc/passwd", grid_size=2, api_name="/vae_map")
    with pytest.raises(AppError, match="model: a model name, hub id or path has at most 512 characters"):
        owner.predict(model="x" * 5000, grid_size=2, api_name="/vae_map")

"""Ten users at once on one served studio (tiny models; the API, as the page's events call the same
functions): pictures with and without LoRAs on one model, Explore slider moves, walks, maps and variations
on that same model, chats with follow-ups, text, GAN and VAE — each answer byte-equal (pixels, latents,
tokens) to the same request made alone."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.live import start

pytestmark = pytest.mark.slow  # ten users at once on one served studio: a load test in small

IMAGE = dict(model="tiny-sd", prompt="red heart", steps=10, batch_size=3, width=64, height=64,
             sampler_name="Euler a", api_name="/generate_image")
LOOK = dict(model="tiny-sd", steps=6, width=64, height=64, sampler_name="Euler a", kind="diffusion")
TEXT = dict(model="tiny-llama", max_new_tokens=10, temperature=0.9)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port
    from tests.conftest import build_tiny_lora

    root = tmp_path_factory.mktemp("many")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir)
    yield f"http://127.0.0.1:{port}/", build_tiny_lora(root, tiny_sd_dir)
    app.close()


def answer_of(result) -> list:
    """What a user gets: texts as they are, pictures as their pixels, latents as their tensors (file names,
    History ids and timings aside)."""
    from PIL import Image
    from safetensors.numpy import load_file

    out = []
    for value in result if isinstance(result, (list, tuple)) else [result]:
        if isinstance(value, str) and value.startswith("{"):
            value = json.loads(value)
        if isinstance(value, dict):
            out.append({k: value[k] for k in ("reply", "text", "seeds", "seed", "frames") if k in value})
        elif isinstance(value, list):
            out.extend(answer_of(value))
        elif isinstance(value, str) and value.endswith(".png"):
            out.append(np.asarray(Image.open(value).convert("RGB")).tobytes())
        elif isinstance(value, str) and value.endswith(".safetensors"):
            out.append(sorted((k, v.tobytes()) for k, v in load_file(value).items()))
        elif isinstance(value, str) and not value.endswith((".gif", ".mp4")):
            out.append(value)
    return out


def requests(lora: Path) -> dict:
    from gradio_client import handle_file

    history = [["user", "Once upon a time"], ["assistant", "there was a fox"]]
    return {
        "picture": dict(IMAGE, seed=1),
        "picture with a LoRA": dict(IMAGE, seed=2, lora_files=[handle_file(str(lora))], lora_weights="0.8"),
        "picture again": dict(IMAGE, seed=1, prompt="blue fox"),
        "slider move": dict(LOOK, origin="5: blue fox", method="prompt-pair", positive="red", negative="blue",
                            amounts="1.5", api_name="/explore_move"),
        "walk": dict(LOOK, keyframes="1: red heart\n2: blue fox", frames=4, api_name="/explore_walk"),
        "map": dict(LOOK, origin="3: red", method="h-space", grid_size=2, api_name="/explore_map"),
        "variations": dict(LOOK, origin="4: fox", count=4, seed=7, api_name="/explore_variations"),
        "chat follow-up": dict(TEXT, message="and then?", history=history, seed=5, api_name="/chat"),
        "text": dict(TEXT, prompt="The quick brown fox", seed=6, api_name="/generate_text"),
        "gan": dict(model="tiny-gan", seed=2, grid_size=2, api_name="/gan_sample"),
        "vae": dict(model="digit-vae-2d", count=4, seed=3, api_name="/vae_sample"),
    }


def answers_alone_and_at_once(url: str, asks: dict, users: int, each: int) -> tuple[dict, dict]:
    """Each request made alone, then `users` clients at once making `each` requests apiece (all overlapping):
    (answers alone by name, answers at once by name → list)."""
    from gradio_client import Client

    alone = {name: answer_of(Client(url, verbose=False).predict(**kwargs)) for name, kwargs in asks.items()}
    got: dict = {}
    errors: list = []
    names = list(asks)
    start_together = threading.Barrier(users)

    def user(i: int) -> None:
        client = Client(url, verbose=False)
        start_together.wait(60)
        for name in [names[(i + j) % len(names)] for j in range(each)]:
            try:
                got.setdefault(name, []).append(answer_of(client.predict(**asks[name])))
            except Exception as exc:  # noqa: BLE001 - reported below, with the request's name
                errors.append((name, repr(exc)))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors
    assert sorted(got) == sorted(names)
    return alone, got


def test_ten_users_at_once_each_get_what_they_would_get_alone(served):
    url, lora = served
    alone, got = answers_alone_and_at_once(url, requests(lora), users=10, each=3)
    assert alone["picture"] != alone["picture again"] and alone["picture"] != alone["picture with a LoRA"]
    for name, answers in got.items():
        assert all(answer == alone[name] for answer in answers), name

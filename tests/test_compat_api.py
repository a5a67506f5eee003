"""The OpenAI- and AUTOMATIC1111-compatible APIs against a launched studio with logins, through the official
clients (`openai`, `webuiapi`) and plain HTTP: same pictures and History as the page's, the caller's rights."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.keys import ApiKeys
from tests.live import start

OWNER, GUEST = ("owner", "owner-pw"), ("guest", "guest-pw")
QUOTA = 4
TINY = dict(steps=2, width=64, height=64)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("compat")
    port = _free_port()
    keys = ApiKeys(root / "outputs")
    made = {"owner": keys.add("owner"), "artist": keys.add("artist", guest=True),
            "other": keys.add("other", guest=True)}
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir, auth=(OWNER,),
                          guest_auth=(GUEST,), guest_generations_per_hour=QUOTA)
    yield f"http://127.0.0.1:{port}", services, made
    app.close()


def openai_client(url: str, key: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def webui(url: str, user: str, password: str):
    import webuiapi

    return webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", username=user, password=password)


def call(url: str, path: str, body=None, key: str = "", method: str = "") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


# -- keys ------------------------------------------------------------------------------------------------------
def test_keys_are_stored_hashed_named_and_revocable(tmp_path):
    keys = ApiKeys(tmp_path)
    key = keys.add("alice", guest=True)
    stored = (tmp_path / "settings" / "api-keys.json").read_text()
    assert key.startswith("sk-studio-") and key.split(".", 1)[1] not in stored and "alice" in stored
    assert keys.user_of(key) == ("alice", True)
    assert keys.user_of(key[:-2] + ("AA" if not key.endswith("AA") else "BB")) is None
    assert keys.user_of("sk-studio-nonsense") is None
    with pytest.raises(ValueError, match="name: 1 to 64"):
        keys.add("no spaces please")
    assert keys.revoke("alice") == 1 and keys.user_of(key) is None and keys.entries() == []


def test_keys_command_line(tmp_path, capsys):
    from studio.cli import main

    assert main(["keys", "add", "bob", "--guest", "--outputs", str(tmp_path)]) == 0
    key = capsys.readouterr().out.strip()
    assert ApiKeys(tmp_path).user_of(key) == ("bob", True)
    assert main(["keys", "list", "--outputs", str(tmp_path)]) == 0
    assert "bob" in (listed := capsys.readouterr().out) and "guest" in listed and key not in listed
    assert main(["keys", "revoke", "bob", "--outputs", str(tmp_path)]) == 0
    assert ApiKeys(tmp_path).user_of(key) is None


def test_a_studio_without_logins_runs_calls_as_its_local_owner(tmp_path):
    import asyncio
    from types import SimpleNamespace

    from starlette.requests import Request

    from studio.access import Access
    from studio.compat.auth import user_dependency
    from studio.compat.wire import CompatError

    services = SimpleNamespace(settings=SimpleNamespace(logins=False), access=Access())
    current = user_dependency(services, ApiKeys(tmp_path))
    bare = Request({"type": "http", "headers": []})
    user = asyncio.run(current(bare))
    assert (user.name, user.guest) == ("local", False)
    wrong = Request({"type": "http", "headers": [(b"authorization", b"Bearer sk-studio-wrong")]})
    with pytest.raises(CompatError) as refused:
        asyncio.run(current(wrong))
    assert refused.value.status == 401


# -- OpenAI ----------------------------------------------------------------------------------------------------
def test_streamed_chat_equals_the_unstreamed_one_and_is_kept_in_the_callers_history(server):
    url, services, keys = server
    client = openai_client(url, keys["owner"])
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": " a tale"}]}]
    whole = client.chat.completions.create(model="tiny-llama", messages=messages, temperature=0, max_tokens=12,
                                           seed=3)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("length", "stop") and whole.object == "chat.completion"
    assert whole.usage.completion_tokens > 0 and whole.usage.total_tokens == (whole.usage.prompt_tokens
                                                                              + whole.usage.completion_tokens)
    chunks = list(client.chat.completions.create(model="tiny-llama", messages=messages, temperature=0,
                                                 max_tokens=12, seed=3, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    newest = services.history.list(tab="text", owner="owner", limit=1)
    assert newest and newest[0].params["system_prompt"] == "Be brief." and newest[0].owner == "owner"


def test_completions_continue_the_prompt_streamed_and_not(server):
    url, _, keys = server
    client = openai_client(url, keys["owner"])
    whole = client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=8, temperature=0)
    streamed = client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=8,
                                         temperature=0, stream=True)
    assert whole.object == "text_completion" and whole.usage.completion_tokens > 0
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text


def test_models_and_errors_follow_openais_shapes(server):
    import openai

    url, _, keys = server
    owner = openai_client(url, keys["owner"])
    names = {m.id for m in owner.models.list()}
    assert {"tiny-llama", "tiny-sd"} <= names
    with pytest.raises(openai.AuthenticationError) as no_key:
        openai_client(url, "sk-studio-000000000000.not-a-real-key-at-all").models.list()
    assert no_key.value.status_code == 401 and no_key.value.body["code"] == "invalid_api_key"
    status, body = call(url, "/v1/models")  # no credentials at all, on a studio with logins
    assert status == 401 and body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.BadRequestError) as bad:
        owner.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                      temperature=7)
    assert bad.value.body["param"] == "temperature" and "0 to 2" in bad.value.body["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        owner.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="messages\\[0\\].role"):
        owner.chat.completions.create(model="tiny-llama", messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="n: 1"):
        owner.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x"}], n=2)
    assert owner.models.list().data  # still serving


def test_images_generations_and_edits_are_kept_with_their_parameters(server):
    url, services, keys = server
    client = openai_client(url, keys["owner"])
    made = client.images.generate(model="tiny-sd", prompt="a red fox", size="64x64", n=2,
                                  response_format="b64_json", extra_body={"seed": 11, "steps": 2})
    first = base64.b64decode(made.data[0].b64_json)
    assert len(made.data) == 2 and Image.open(io.BytesIO(first)).size == (64, 64)
    assert "a red fox" in Image.open(io.BytesIO(first)).info["parameters"]  # the page's PNG text
    linked = client.images.generate(model="tiny-sd", prompt="a red fox", size="64x64", extra_body={"seed": 11,
                                                                                                   "steps": 2})
    kept = services.history.list(tab="image", owner="owner", limit=1)[0]
    with urllib.request.urlopen(linked.data[0].url, timeout=30) as response:  # no login: the link is the right
        assert response.read() == services.history.path(kept.files[0]).read_bytes()
    start_picture = Image.new("RGB", (64, 64), (30, 120, 200))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent = repaint, as OpenAI's masks
    edited = client.images.edit(model="tiny-sd", image=("start.png", png(start_picture), "image/png"),
                                mask=("mask.png", png(mask), "image/png"), prompt="a hat",
                                response_format="b64_json", extra_body={"seed": 5, "steps": 2})
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))).size == (64, 64)
    newest = services.history.list(tab="image", owner="owner", limit=1)[0]
    assert newest.params["mode"] == "inpaint" and newest.params["prompt"] == "a hat"


def test_a_seed_gives_the_same_picture_through_both_layers(server):
    url, _, keys = server
    body = {"prompt": "a lighthouse", "seed": 1234, "cfg_scale": 7, "sampler_name": "DPM++ 2M",
            "override_settings": {"sd_model_checkpoint": "tiny-sd"}, **TINY}
    status, a1111 = call(url, "/sdapi/v1/txt2img", body, keys["owner"])
    assert status == 200, a1111
    status, openai_answer = call(url, "/v1/images/generations",
                                 {"model": "tiny-sd", "prompt": "a lighthouse", "size": "64x64", "seed": 1234,
                                  "steps": 2, "guidance": 7, "response_format": "b64_json"}, keys["owner"])
    assert status == 200, openai_answer
    assert (pixels(base64.b64decode(a1111["images"][0]))
            == pixels(base64.b64decode(openai_answer["data"][0]["b64_json"]))).all()
    assert json.loads(a1111["info"])["all_seeds"] == [1234]
    from gradio_client import Client  # and the studio's own API, as the page makes it

    _info, files = Client(url + "/", auth=OWNER, verbose=False).predict(
        prompt="a lighthouse", seed=1234, cfg_scale=7, sampler_name="DPM++ 2M", model="tiny-sd", steps=2, width=64,
        height=64, api_name="/generate_image")
    with open(files[0], "rb") as page_picture:
        assert (pixels(page_picture.read()) == pixels(base64.b64decode(a1111["images"][0]))).all()


# -- AUTOMATIC1111 ---------------------------------------------------------------------------------------------
def test_webuiapi_txt2img_img2img_inpaint_and_png_info(server):
    url, services, keys = server
    api = webui(url, "anything", keys["owner"])  # A1111's --api-auth style: the key as the password
    api.set_options({"sd_model_checkpoint": "tiny-sd"})
    assert api.get_options()["sd_model_checkpoint"] == "tiny-sd"
    assert "tiny-sd" in [m["model_name"] for m in api.get_sd_models()]
    assert {"Euler a", "DPM++ 2M"} <= {s["name"] for s in api.get_samplers()}
    made = api.txt2img(prompt="a cat", seed=42, batch_size=2, cfg_scale=5, sampler_name="Euler", **TINY)
    assert len(made.images) == 2 and made.images[0].size == (64, 64)
    assert made.info["seed"] == 42 and made.info["all_seeds"] == [42, 43]
    assert "Seed: 42" in made.info["infotexts"][0] and made.parameters["prompt"] == "a cat"
    again = api.img2img(images=[made.image], prompt="a cat, oil painting", denoising_strength=0.5, seed=1, **TINY)
    assert again.images[0].size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    painted = api.img2img(images=[made.image], mask_image=mask, prompt="a dog", seed=1, **TINY)
    kept = pixels(png(painted.image))
    assert kept.shape == (64, 64, 3)
    newest = services.history.list(tab="image", owner="owner", limit=1)[0]
    assert newest.params["mode"] == "inpaint"
    hires = api.txt2img(prompt="a cat", seed=42, enable_hr=True, hr_scale=2, hr_upscaler="Latent",
                        hr_second_pass_steps=2, denoising_strength=0.5, **TINY)
    assert hires.image.size == (128, 128) and "Hires upscale: 2" in hires.info["infotexts"][0]
    bigger = api.extra_single_image(made.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert bigger.image.size == (128, 128)
    assert services.history.list(tab="image", owner="owner", limit=1)[0].params["upscaler"] == "Lanczos"
    info = api.png_info(made.image)  # webuiapi sends the picture with its text chunks
    assert info.info.startswith("a cat\n") and "Seed: 42" in info.info
    status, read = call(url, "/sdapi/v1/png-info", {"image": base64.b64encode(
        services.history.path(newest.files[0]).read_bytes()).decode()}, keys["owner"])
    assert status == 200 and "a dog" in read["info"] and read["parameters"]["Seed"] == "1"


def test_progress_and_interrupt_touch_only_the_callers_own_job(server):
    url, _, keys = server
    result: dict = {}

    def long_job():
        result["answer"] = call(url, "/sdapi/v1/txt2img", {"prompt": "slow", "seed": 1, "width": 64, "height": 64,
                                                           "steps": 150, "batch_size": 8, "override_settings":
                                                               {"sd_model_checkpoint": "tiny-sd"}}, keys["owner"])
    assert call(url, "/sdapi/v1/progress", key=keys["owner"])[1]["state"]["job_count"] == 0  # a client that
    worker = threading.Thread(target=long_job)  # reads /progress (as Krita's does) gets steps and previews
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline and call(url, "/sdapi/v1/progress", key=keys["owner"])[1]["state"][
            "job_count"] == 0:
        time.sleep(0.05)
    _, seen = call(url, "/sdapi/v1/progress", key=keys["owner"])
    assert seen["state"]["sampling_steps"] == 150 and 0 <= seen["progress"] <= 1
    while time.time() < deadline and not seen["current_image"]:  # a preview comes with the first report
        time.sleep(0.1)
        _, seen = call(url, "/sdapi/v1/progress", key=keys["owner"])
    assert seen["state"]["sampling_step"] > 0 and Image.open(io.BytesIO(base64.b64decode(seen["current_image"])))
    assert call(url, "/sdapi/v1/progress", key=keys["other"])[1]["state"]["job_count"] == 0  # not theirs
    assert call(url, "/sdapi/v1/interrupt", b"", keys["other"])[0] == 200  # another user's interrupt …
    time.sleep(0.3)
    assert worker.is_alive()  # … stops nothing of the owner's
    assert call(url, "/sdapi/v1/interrupt", b"", keys["owner"])[0] == 200
    worker.join(60)
    status, body = result["answer"]
    assert status == 409 and "interrupted" in body["detail"]  # one run, stopped before its pictures: none to give


def test_an_interrupted_batch_answers_with_the_runs_finished_before_it(server, monkeypatch):
    """As AUTOMATIC1111: interrupt ends an n_iter batch with 200 and the pictures made so far (kept in History);
    skip drops only the run it stops; the seeds go on across runs as in one call."""
    from studio.compat import a1111

    url, services, keys = server
    real, made = a1111.make_pictures, []

    def then_interrupt(services_, user, params, model, progress=None):  # the caller's interrupt, between runs
        out = real(services_, user, params, model, progress)
        made.append(params.seed)
        if len(made) == 1:
            assert call(url, "/sdapi/v1/interrupt", b"", keys["owner"])[0] == 200
        return out
    monkeypatch.setattr(a1111, "make_pictures", then_interrupt)
    body = {"prompt": "a boat", "seed": 7, "batch_size": 2, "n_iter": 3,
            "override_settings": {"sd_model_checkpoint": "tiny-sd"}, **TINY}
    status, answer = call(url, "/sdapi/v1/txt2img", body, keys["owner"])
    assert status == 200, answer
    info = json.loads(answer["info"])
    assert len(answer["images"]) == 2 and info["all_seeds"] == [7, 8] and made == [7]
    kept = {i.id: i for i in services.history.list(tab="image", owner="owner", limit=10)}
    assert set(info["history_ids"]) <= set(kept) and {kept[i].params["seed"] for i in info["history_ids"]} == {7, 8}

    skipped: list = []

    def skip_the_first(services_, user, params, model, progress=None):  # /skip lands while run 1 is made
        if not skipped:
            skipped.append(params.seed)

            def skip():
                while (user.session, "image") not in services_.jobs._events:
                    time.sleep(0.005)
                assert call(url, "/sdapi/v1/skip", b"", keys["other"])[0] == 200  # another user's: stops nothing
                assert call(url, "/sdapi/v1/skip", b"", keys["owner"])[0] == 200
            threading.Thread(target=skip, daemon=True).start()
        return real(services_, user, params, model, progress)
    monkeypatch.setattr(a1111, "make_pictures", skip_the_first)
    status, answer = call(url, "/sdapi/v1/txt2img", {**body, "n_iter": 2, "batch_size": 1, "steps": 20},
                          keys["owner"])
    assert status == 200 and json.loads(answer["info"])["all_seeds"] == [8] and skipped == [7]


def test_loras_in_the_lora_folder_are_listed_and_owners_prompts_use_them(server):
    from tests.conftest import build_tiny_lora
    from studio.compat.a1111 import prompt_loras

    url, services, keys = server
    folder = services.settings.cache_dir / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    built = build_tiny_lora(folder / "build", Path(services.host.registry.lookup("tiny-sd", "image").location))
    built.rename(folder / "ink.safetensors")
    (folder / "old.ckpt").write_bytes(b"not listed: pickles are never loaded")
    status, listed = call(url, "/sdapi/v1/loras", key=keys["owner"])
    assert status == 200 and [(x["name"], x["alias"]) for x in listed] == [("ink", "ink")]
    assert listed[0]["path"] == str(folder / "ink.safetensors") and isinstance(listed[0]["metadata"], dict)
    status, seen = call(url, "/sdapi/v1/loras", key=keys["artist"])
    assert status == 200 and seen[0]["path"] == "ink.safetensors" and seen[0]["metadata"] == {}  # no server paths

    assert prompt_loras(services, "a cat, <lora:ink:0.5> ink", guest=False)[0] == "a cat, ink"
    body = {"prompt": "a cat <lora:ink:0.5>", "seed": 3, "override_settings": {"sd_model_checkpoint": "tiny-sd"},
            **TINY}
    status, answer = call(url, "/sdapi/v1/txt2img", body, keys["owner"])
    assert status == 200, answer
    newest = services.history.list(tab="image", owner="owner", limit=1)[0]
    assert newest.params["loras"] == {"ink": 0.5} and newest.params["prompt"] == "a cat"
    status, plain = call(url, "/sdapi/v1/txt2img", {**body, "prompt": "a cat"}, keys["owner"])
    assert plain["images"][0] != answer["images"][0]  # the LoRA changed the picture
    status, answer = call(url, "/sdapi/v1/txt2img", {**body, "prompt": "a cat <lora:nope>"}, keys["owner"])
    assert status == 422 and answer["detail"].startswith("prompt: no LoRA named 'nope'")
    for guest in (keys["artist"],):  # guests are refused LoRA files, whether the file exists or not
        for prompt in ("a cat <lora:ink:0.5>", "a cat <lora:nope>"):
            status, answer = call(url, "/sdapi/v1/txt2img", {**body, "prompt": prompt}, guest)
            assert status == 403 and "Guests can't load LoRA files" in answer["detail"]


def test_the_owners_default_model_outlives_a_restart(server):
    from studio.compat.a1111 import Options

    url, services, keys = server
    assert call(url, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd"}, keys["owner"])[0] == 200
    assert Options(services).checkpoint() == "tiny-sd"  # a new server reads what the owner chose
    saved = services.settings.outputs / "settings" / "sdapi-options.json"
    assert json.loads(saved.read_text()) == {"sd_model_checkpoint": "tiny-sd"}


def test_an_owners_controlnet_unit_steers_the_picture_and_is_recorded(server, tmp_path):
    """AUTOMATIC1111's `alwayson_scripts.controlnet.args`: the studio's ControlNet units (a folder in the model
    folders), one picture each; the unit is in the picture's parameters, and it changes the picture. The
    extension's fields the studio has no use for are ignored, as plug-ins send them; a bad value is named."""
    from diffusers import UNet2DConditionModel

    from tests.test_control import build_controlnet, square

    url, services, keys = server
    unet = UNet2DConditionModel.from_pretrained(services.host.registry.lookup("tiny-sd", "image").location,
                                                subfolder="unet")
    net = build_controlnet(tmp_path / "edges-net", unet, 1)
    body = {"prompt": "a lighthouse", "seed": 5, "override_settings": {"sd_model_checkpoint": "tiny-sd"}, **TINY}
    unit = {"model": net, "module": "canny", "weight": 0.8, "guidance_start": 0.0, "guidance_end": 0.9,
            "image": base64.b64encode(png(square(64))).decode()}
    status, plain = call(url, "/sdapi/v1/txt2img", body, keys["owner"])
    assert status == 200, plain
    status, steered = call(url, "/sdapi/v1/txt2img", {**body, "alwayson_scripts": {"controlnet": {"args": [unit]}}},
                           keys["owner"])
    assert status == 200, steered
    assert "ControlNet 0: \"Module: canny, Model: edges-net, Weight: 0.8" in json.loads(steered["info"])["infotexts"][0]
    assert (pixels(base64.b64decode(plain["images"][0])) != pixels(base64.b64decode(steered["images"][0]))).any()
    extension_fields = {"resize_mode": "Crop and Resize", "pixel_perfect": True, "control_mode": "Balanced"}
    status, same = call(url, "/sdapi/v1/txt2img", {**body, "alwayson_scripts": {"controlnet": {"args": [
        {**unit, **extension_fields}]}}}, keys["owner"])  # the extension's other fields, as plug-ins send them
    assert status == 200 and (pixels(base64.b64decode(same["images"][0]))
                              == pixels(base64.b64decode(steered["images"][0]))).all()
    status, refused = call(url, "/sdapi/v1/txt2img", {**body, "alwayson_scripts": {"controlnet": {"args": [
        {**unit, "module": "magic"}]}}}, keys["owner"])
    assert status == 422 and "preprocessor must be one of canny" in refused["detail"], refused


def test_a_studio_login_works_as_http_basic_and_a_wrong_one_is_refused(server):
    url, _, _ = server
    assert webui(url, *OWNER).get_options()["sd_model_checkpoint"]
    refused = webui(url, OWNER[0], "wrong-password").get_options()  # webuiapi returns the error body here
    assert refused == {"error": "invalid_api_key", "detail": "Incorrect API key or login.", "body": "",
                       "errors": "Incorrect API key or login."}


def test_guest_keys_keep_the_guest_rules(server):
    url, services, keys = server
    guest = keys["artist"]
    assert call(url, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd"}, keys["owner"])[0] == 200  # loads it
    status, body = call(url, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd"}, guest)
    assert status == 403 and "Guests can't" in body["detail"]
    services.host.registry.add(type(services.host.registry.lookup("tiny-sd", "image"))(
        "tiny-sd-2", "image", "folder", services.host.registry.lookup("tiny-sd", "image").location, license="test"))
    status, body = call(url, "/v1/images/generations", {"model": "tiny-sd-2", "prompt": "x", "size": "64x64",
                                                        "steps": 1, "response_format": "b64_json"}, guest)
    assert status == 404  # not a model a guest may use: not even listed to them
    status, body = call(url, "/sdapi/v1/txt2img", {"prompt": "x", "override_settings": {
        "sd_model_checkpoint": "tiny-sd-2"}, **TINY}, guest)
    assert status == 403 and "switch models" in body["detail"]
    assert services.access.is_guest("artist")
    unit = {"model": "lllyasviel/control_v11p_sd15_canny", "module": "canny", "weight": 1,
            "image": base64.b64encode(png(Image.new("RGB", (64, 64)))).decode()}
    status, body = call(url, "/sdapi/v1/txt2img", {"prompt": "x", "alwayson_scripts": {"controlnet": {"args": [unit]}},
                                                   "override_settings": {"sd_model_checkpoint": "tiny-sd"}, **TINY},
                        guest)
    assert status == 403 and "Guests can't load ControlNet models" in body["detail"]
    status, body = call(url, "/v1/chat/completions", {"model": "tiny-sd-2", "messages": [
        {"role": "user", "content": "hi"}]}, guest)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    small = {"prompt": "x", "steps": 1, "width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": "tiny-sd"}}
    before = services.access.remaining("artist")
    assert [call(url, "/sdapi/v1/txt2img", small, guest)[0] for _ in range(2)] == [200, 200]
    assert services.access.remaining("artist") == pytest.approx(before - 2 * 0.05)  # the work, counted
    services.access.admit("artist", services.access.remaining("artist") - 0.01)  # all but a sliver used
    assert call(url, "/sdapi/v1/txt2img", small, guest)[0] == 429
    status, body = call(url, "/v1/images/generations", {"model": "tiny-sd", "prompt": "x", "size": "64x64",
                                                        "steps": 1}, guest)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert {i.owner for i in services.history.list(owner="artist", limit=50)} == {"artist"}


def test_malformed_bodies_name_the_field_and_the_server_keeps_serving(server):
    url, _, keys = server
    owner = keys["owner"]
    for body, field in (({"prompt": "x", "steps": "many"}, "steps"), ({"prompt": "x", "width": 9999}, "width"),
                        ({"prompt": "x", "sampler_name": "Heun++"}, "sampler_name"),
                        ({"init_images": []}, "init_images")):
        path = "/sdapi/v1/img2img" if "init_images" in body else "/sdapi/v1/txt2img"
        status, answer = call(url, path, body, owner)
        assert status == 422 and answer["detail"].startswith(field), (field, answer)
    status, answer = call(url, "/sdapi/v1/txt2img", b"{not json", owner)
    assert status == 422 and answer["detail"].startswith("body")
    status, answer = call(url, "/v1/chat/completions", {"model": "tiny-llama", "messages": "hi"}, owner)
    assert status == 400 and answer["error"]["param"] == "messages"
    status, answer = call(url, "/v1/images/generations", {"prompt": "x", "size": "big"}, owner)
    assert status == 400 and answer["error"]["param"] == "size"
    assert call(url, "/sdapi/v1/samplers", key=owner)[0] == 200
    assert call(url, "/sdapi/v1/samplers")[0] == 401  # and no key is still refused


def test_progress_counts_the_steps_each_kind_of_model_runs():
    """/sdapi/v1/progress's total before the first step event: an SD img2img pass rounds steps × strength down,
    a flow family's runs the rest of int(steps × (1 − strength)), an editing model runs img2img as a whole edit."""
    from PIL import Image

    from pipelines.image import ImageParams
    from pipelines.image_flow import FAMILIES
    from pipelines.image_upscale import HiresParams
    from studio.compat.a1111 import Progress

    hires = ImageParams(prompt="a fox", steps=20, hires=HiresParams(scale=1.5, upscaler="Lanczos", strength=0.33))
    start = Image.new("RGB", (64, 64))
    img2img = ImageParams(prompt="a fox", steps=4, mode="img2img", init_image=start, strength=0.5)
    progress = Progress()
    totals = {}
    for name, params, family in (("sd hires", hires, None), ("flow hires", hires, FAMILIES["chroma"]),
                                 ("edit img2img", img2img, FAMILIES["flux-kontext"]),
                                 ("flow img2img", img2img, FAMILIES["flux"])):
        progress.start(name, params, family)
        totals[name] = progress._jobs[name]["total"]
    assert totals == {"sd hires": 26, "flow hires": 27, "edit img2img": 4, "flow img2img": 2}

"""Attacks on a public studio, each against a real server on loopback: guests overstepping, quota abuse,
password guessing, reading files outside the outputs folder, oversized and active-content uploads."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from studio.access import Access, AccessDenied
from tests.live import start

OWNER, GUEST, OTHER_GUEST = ("owner", "owner-pw"), ("guest", "guest-pw"), ("visitor", "visitor-pw")
QUOTA = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("public")
    port = _free_port()
    (root / "secret.txt").write_text("TOP-SECRET beside the outputs folder")
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir,
                          auth=(OWNER,), guest_auth=(GUEST, OTHER_GUEST), guest_generations_per_hour=QUOTA,
                          max_upload_mb=1.0)
    yield f"http://127.0.0.1:{port}/", services, root
    app.close()


def client(url: str, who: tuple[str, str]):
    from gradio_client import Client

    return Client(url, auth=who, verbose=False)


def text_args(model: str = "tiny-llama", backend: str = "", prompt: str = "Once upon a time") -> tuple:
    return (prompt, "completion", "", model, 6, 0.8, 0.9, 40, 1.1, "", 1, backend)


def test_guests_generate_within_their_quota_and_are_told_when_it_resets(server):
    from gradio_client.exceptions import AppError

    url, services, _ = server
    from pipelines.registry import ModelSpec

    # a model of this test's own, so no other test has loaded it first (the suite may run in any order)
    tiny = services.host.registry.lookup("tiny-llama", "text")
    services.host.registry.add(ModelSpec("quota-llama", "text", tiny.source, tiny.location, license="test"))
    owner, guest = client(url, OWNER), client(url, GUEST)
    with pytest.raises(AppError, match="Guests can't switch models: use smollm2-135m-instruct"):
        guest.predict(*text_args("quota-llama"), api_name="/generate_text")  # not loaded: that would switch models
    owner.predict(*text_args("quota-llama"), api_name="/generate_text")  # the owner loads it …
    with pytest.raises(AppError, match="prompt is empty"):  # … a guest's bad input costs no quota
        guest.predict(*text_args("quota-llama", prompt=""), api_name="/generate_text")
    assert services.access.remaining("guest") == QUOTA  # no other test generates as this guest
    from studio.boundary import text_units

    for n in range(1, 3):  # each answer costs its tokens' work (6 new tokens: the least a request costs)
        text, status = guest.predict(*text_args("quota-llama"), api_name="/generate_text")
        assert text and json.loads(status)["history_id"]
        assert services.access.remaining("guest") == pytest.approx(QUOTA - n * text_units(6))
    services.access.admit("guest", services.access.remaining("guest") - 0.01)  # all but a sliver used
    with pytest.raises(AppError, match=r"Quota reached: guests may use 3 units of work per hour \(one unit is one "
                                       r"512×512 picture at 20 steps.*This answer needs 0.05, and 0.01 are left; "
                                       r"more is available at \d\d:\d\d"):
        guest.predict(*text_args("quota-llama"), api_name="/generate_text")
    # the owner has no quota, and another guest has their own
    owner.predict(*text_args("quota-llama"), api_name="/generate_text")
    visitor_left = services.access.remaining("visitor")
    client(url, OTHER_GUEST).predict(*text_args("quota-llama"), api_name="/generate_text")
    assert services.access.remaining("guest") == pytest.approx(0.01)  # the refused answer cost nothing
    assert services.access.remaining("visitor") == pytest.approx(visitor_left - text_units(6))


def test_guests_cannot_fetch_train_or_change_engines_or_load_weights(server):
    from gradio_client.exceptions import AppError

    url, _, _ = server
    guest = client(url, OTHER_GUEST)
    with pytest.raises(AppError, match="Guests can't download models"):
        guest.predict("dcgan-faces-64", api_name="/models_fetch")
    with pytest.raises(AppError, match="Guests can't train models"):
        guest.predict("mine", None, "/tmp", 32, 1, 8, 2, api_name="/vae_train")
    with pytest.raises(AppError, match="Guests can't change the text engine"):
        guest.predict(*text_args(backend="transformers"), api_name="/generate_text")
    with pytest.raises(AppError, match="Guests can't switch models"):
        guest.predict("/etc", 0, 4, 1.0, api_name="/gan_sample")  # a server path as a model
    with pytest.raises(AppError, match="Guests can't save styles"):
        guest.predict(name="mine", prompt="{prompt}, ink", api_name="/save_style")
    with pytest.raises(AppError, match="Guests can't share items"):
        guest.predict(id="20260101-000000-00000000", api_name="/share_item")


def test_guests_cannot_load_lora_weights(server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from tests.test_app import image_args

    url, services, _ = server
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"\0" * 64)
    with pytest.raises(AppError, match="Guests can't load LoRA files"):
        client(url, GUEST).predict(**image_args(model="", lora_files=[handle_file(str(lora))]),
                                   api_name="/generate_image")
    assert services.history.list(tab="image") == []


def test_history_is_private_per_user(server):
    url, services, _ = server
    owner, guest = client(url, OWNER), client(url, OTHER_GUEST)
    owner.predict(*text_args(prompt="the owner's secret story"), api_name="/generate_text")
    owners_item = services.history.list(text="the owner's secret story")[0]
    listed = guest.predict("all", "", api_name="/history_list")
    assert all(row["id"] != owners_item.id for row in listed)
    from gradio_client.exceptions import AppError

    for endpoint in ("/history_get", "/history_delete", "/history_star"):  # as if it did not exist
        with pytest.raises(AppError, match="no such History item"):
            guest.predict(owners_item.id, api_name=endpoint)
    with pytest.raises(AppError, match="Nothing to export"):  # a guest's export holds only their own items
        guest.predict(search="the owner's secret story", api_name="/history_export")
    assert not services.history.get(owners_item.id).starred
    assert any(row["id"] == owners_item.id for row in owner.predict("all", "", api_name="/history_list"))
    info, files = owner.predict(owners_item.id, api_name="/history_get")
    assert info["prompt"] == "the owner's secret story" and files


def test_failed_logins_are_answered_ever_more_slowly():
    now = [1000.0]
    access = Access(owners=(OWNER,), clock=lambda: now[0])
    assert [access.failure_delay("owner") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    now[0] += 901  # failures are forgotten after 15 minutes
    assert access.failure_delay("owner") == 0.5
    started = time.perf_counter()
    assert asyncio.run(access.authenticate("owner", "owner-pw")) is True
    assert time.perf_counter() - started < 0.2  # the right password is never slowed down
    assert asyncio.run(access.authenticate("nobody", "x")) is False


def test_login_endpoint_slows_down_guessing(server):
    url, _, _ = server

    def attempt(password: str) -> tuple[int, float]:
        data = urllib.parse.urlencode({"username": "guest", "password": password}).encode()
        started = time.perf_counter()
        try:
            code = urllib.request.urlopen(url + "login", data=data, timeout=30).status
        except urllib.error.HTTPError as err:
            code = err.code
        return code, time.perf_counter() - started

    timings = [attempt(f"wrong-{i}") for i in range(3)]
    assert all(code >= 400 for code, _ in timings)
    assert timings[0][1] >= 0.45 and timings[2][1] >= 1.9, timings
    assert attempt("guest-pw")[0] == 200


def test_quota_counts_units_of_work_and_says_when_it_resets():
    now = [10_000.0]
    access = Access(guests=(GUEST,), guest_generations_per_hour=2, clock=lambda: now[0])
    first = access.admit("guest", 1.5, "this request")
    with pytest.raises(AccessDenied, match=r"This request needs 0.75, and 0.50 are left; more is available at "
                                           r"\d\d:\d\d"):
        access.admit("guest", 0.75, "this request")
    access.admit("guest", 0.5)
    first.refund()  # a failed generation gives its work back
    assert access.remaining("guest") == pytest.approx(1.5)
    access.admit("guest", 1.5)
    now[0] += 3601
    access.admit("guest", 2.0)  # an hour later the window has moved on
    assert access.admit("owner-less", 50).access is None  # not a guest: never counted


def test_work_is_priced_by_pictures_steps_and_size():
    from studio.boundary import MIN_UNITS, image_units, text_units

    assert image_units(1, 20, 512, 512) == pytest.approx(1.0)
    assert image_units(8 * 16, 150, 1024, 1024) == pytest.approx(128 * 7.5 * 4)  # what one request used to buy
    assert image_units(1, 1, 64, 64) == MIN_UNITS  # even a tiny picture is work
    assert text_units(1024) == pytest.approx(2.0)


def _get(url: str, path: str, cookie: str = "") -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url.rstrip("/") + path, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def _login_cookie(url: str, who: tuple[str, str]) -> str:
    data = urllib.parse.urlencode({"username": who[0], "password": who[1]}).encode()
    with urllib.request.urlopen(url + "login", data=data, timeout=30) as response:
        return "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie"))


def test_path_traversal_and_files_outside_the_outputs_are_refused(server):
    url, services, root = server
    cookie = _login_cookie(url, OWNER)
    item = services.history.add("text", {".txt": b"served"}, owner=OWNER[0])
    inside = services.history.path(item.files[0])
    code, body, _ = _get(url, f"/gradio_api/file={inside}", cookie)
    assert code == 200 and body == b"served"  # the control: the owner's own item is served
    secret = root / "secret.txt"
    repo = Path(__file__).resolve().parents[2]
    attacks = [
        f"/gradio_api/file={services.history.root}/../secret.txt",
        f"/gradio_api/file={services.history.root}/%2e%2e/secret.txt",
        f"/gradio_api/file={services.history.root}/%252e%252e/secret.txt",
        f"/gradio_api/file={services.history.root}/..%2fsecret.txt",
        f"/gradio_api/file={services.history.root}/..%5csecret.txt",
        f"/gradio_api/file={secret}",
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=../../../../../../etc/passwd",
        "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"/gradio_api/file={repo}/pyproject.toml",
        f"/gradio_api/file={services.settings.cache_dir}",
        "/file=/etc/passwd",
        "/gradio_api/file=~/.bashrc",
    ]
    for attack in attacks:
        code, body, _ = _get(url, attack, cookie)
        assert code in (403, 404), (attack, code)
        assert b"TOP-SECRET" not in body and b"root:" not in body and b"[project]" not in body
    code, _, _ = _get(url, f"/gradio_api/file={inside}")  # and nothing at all without a login
    assert code in (401, 403, 404)


def test_the_studios_own_files_in_the_outputs_are_never_served(server):
    """The outputs folder is served (pictures, videos, latent files), but not what the studio keeps beside them:
    the History database (every user's prompts), the share-link key, the Content Credentials private key,
    saved explorations and styles — to nobody, not even an owner, by any spelling of the path."""
    url, services, _ = server
    services.links.secret  # the share-link key exists once a link is made; make it now
    root = services.history.root
    private = [root / "history.sqlite3", root / "settings" / "share.key"]
    private += sorted((root / "settings" / "credentials").glob("*"))
    assert len(private) >= 3 and all(p.is_file() for p in private), private
    item = services.history.add("image", {".png": b"\x89PNG served"}, owner=GUEST[0])
    picture = services.history.path(item.files[0])
    stray = picture.with_name("stray.png")  # in the same folder, but no History item: nobody's
    stray.write_bytes(b"\x89PNG stray")
    assert _get(url, f"/gradio_api/file={picture}", _login_cookie(url, OTHER_GUEST))[0] == 404  # not theirs
    for who in (OWNER, GUEST):
        cookie = _login_cookie(url, who)
        assert _get(url, f"/gradio_api/file={picture}", cookie)[:2] == (200, b"\x89PNG served")  # the control
        assert _get(url, f"/gradio_api/file={stray}", cookie)[0] == 404
        for path in private:
            for spelling in (str(path), f"{root}/image/../{path.relative_to(root)}",
                             f"{root}/image/%2e%2e/{path.relative_to(root)}"):
                code, body, _ = _get(url, f"/gradio_api/file={spelling}", cookie)
                assert code in (403, 404), (who[0], spelling, code)
                assert body != path.read_bytes()


def _upload(url: str, cookie: str, name: str, data: bytes) -> tuple[int, list]:
    boundary = "studioboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": cookie})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, []


def test_uploads_are_size_limited_and_never_served_back_as_active_content(server):
    url, _, _ = server
    cookie = _login_cookie(url, OWNER)
    code, _ = _upload(url, cookie, "huge.png", b"\0" * (2 * 2**20))  # the test server allows 1 MB
    assert code == 413
    payloads = {"page.html": b"<html><script>alert(1)</script></html>",
                "pic.svg": b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
                "pic.png.html": b"<script>alert(1)</script>"}
    for name, data in payloads.items():
        code, paths = _upload(url, cookie, name, data)
        assert code == 200 and paths
        code, body, headers = _get(url, f"/gradio_api/file={paths[0]}", cookie)
        content_type = headers.get("content-type", headers.get("Content-Type", ""))
        disposition = headers.get("content-disposition", headers.get("Content-Disposition", ""))
        assert "html" not in content_type and "svg" not in content_type, (name, content_type)
        assert code != 200 or "attachment" in disposition, (name, disposition)


def test_decompression_bombs_are_refused_in_plain_words(server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    url, _, _ = server
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb, optimize=True)  # ~50 KB on disk, 400 megapixels decoded
    assert bomb.stat().st_size < 2**20
    with pytest.raises(AppError, match="too large|too many pixels|megapixels"):
        client(url, OWNER).predict([handle_file(str(bomb))], "digit-vae-2d", api_name="/vae_reconstruct")


def test_model_files_are_loaded_safely(server, tmp_path):
    from pipelines.device import pick_placement
    from pipelines.image import load_image_model
    from pipelines.registry import ModelNotAvailable, Registry
    from studio.catalog import model_rows

    _, services, _ = server
    assert services.settings.allow_pickle is False and services.settings.trust_remote_code is False
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not really a pickle")
    registry = Registry(tmp_path / "cache", offline=True)
    with pytest.raises(ModelNotAvailable, match="--allow-pickle"):
        load_image_model(registry.resolve(registry.lookup(str(pickle), "image")), pick_placement("cpu"))
    rows = model_rows(services)
    assert rows and all(row[3] and row[4] for row in rows)  # every model shows where it is from and its license


def test_an_item_link_shows_that_item_only_without_a_login(server):
    import urllib.error
    import urllib.request

    import numpy as np
    from PIL import Image

    from pipelines.media import png_bytes

    url, services, _ = server
    shared = services.history.add("image", {".png": png_bytes(Image.fromarray(np.zeros((8, 8, 3), np.uint8))),
                                            ".safetensors": b"latent"},
                                  prompt="a <b>shared</b> heart", params={"steps": 4}, owner="owner")
    private = services.history.add("text", {".txt": b"private diary"}, prompt="diary", owner="owner")
    path = services.links.path(shared.id)
    page = urllib.request.urlopen(url.rstrip("/") + path).read().decode()  # no login asked
    assert "a &lt;b&gt;shared&lt;/b&gt; heart" in page and f'src="{path}/0"' in page and "diary" not in page
    png = urllib.request.urlopen(url.rstrip("/") + path + "/0").read()
    assert png.startswith(b"\x89PNG")
    token = path.rsplit("/", 1)[1]
    for wrong in (f"/item/{private.id}/{token}", f"/item/{shared.id}/{'0' * 32}", path + "/1", path + "/9"):
        with pytest.raises(urllib.error.HTTPError) as error:  # another item, a forged token, a latent file
            urllib.request.urlopen(url.rstrip("/") + wrong)
        assert error.value.code == 404
    services.history.delete(shared.id)
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url.rstrip("/") + path)  # deleting the item ends the link
    assert (services.history.root / "settings" / "share.key").stat().st_mode & 0o077 == 0

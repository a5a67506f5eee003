"""The user boundary, tried as guests would: an owner and two guests on one launched studio, sending every event of
the page by its `fn_index` (the list read from `/config`, so an event added later is covered the day it lands)
with hostile values — server paths, other users' ids and files, names of shared things, huge sizes. Each answers
with a refusal in words or the caller's own result; nothing outside the caller's own items and the app's assets is
served; the server keeps running. Then one test per way the last round's guests crossed the line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.media import png_bytes
from tests.live import start
from tests.security.events import config, get, login_cookie, paths_in, send

OWNER, GUEST, OTHER = ("owner", "owner-pw"), ("guest", "guest-pw"), ("visitor", "visitor-pw")
SECRET = "OWNER-SECRET-PROMPT"
FILE_TYPES = {"image", "imageeditor", "file", "gallery", "video", "audio", "model3d", "uploadbutton"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("boundary")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir, auth=(OWNER,),
                          guest_auth=(GUEST, OTHER), guest_generations_per_hour=40,
                          launch_options={"mcp_server": True})
    url = f"http://127.0.0.1:{port}/"
    picture = png_bytes(Image.fromarray(np.full((64, 64, 3), 200, np.uint8)))
    owners = services.history.add("image", {".png": picture}, prompt=SECRET, owner=OWNER[0])
    cookies = {who[0]: login_cookie(url, who) for who in (OWNER, GUEST, OTHER)}
    yield url, services, owners, cookies
    app.close()


def hostile_value(component: dict, n: int, services, owners) -> object:
    """A hostile value for one input: the owner's picture by its server path for anything that takes files,
    server paths / another user's id / a shared style's name / a huge text for anything that takes words,
    a billion for numbers."""
    kind = component.get("type", "")
    owner_png = str(services.history.path(owners.files[0]))
    file = {"path": owner_png, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}
    if kind in FILE_TYPES:
        if kind == "imageeditor":
            return {"background": file, "layers": [file], "composite": file}
        if kind == "gallery":
            return [{"image": file, "caption": None}]
        if kind == "file" and component.get("props", {}).get("file_count") == "multiple":
            return [file]
        return file
    if kind in ("slider", "number"):
        return 10**9
    if kind == "checkbox":
        return True
    if kind in ("state", "browserstate"):
        return None
    if kind == "checkboxgroup":
        return ["Photograph"]
    strings = [str(services.history.db_path), owners.id, "Photograph", "../../../../etc/passwd",
               str(services.history.root / "settings" / "share.key"), "x" * 20_000]
    if kind in ("textbox", "dropdown", "radio", "code", "markdown", "html", "json"):
        return strings[n % len(strings)]
    return None


def allowed_path(path: str, services, user: str) -> bool:
    """A file an answer may name for `user`: Gradio's upload folder (their fresh uploads and what the server made
    for them there), their own History items, or anything outside the outputs folder but the studio's secrets."""
    from gradio.utils import get_upload_folder

    from studio.file_route import inside

    path = path.split("/gradio_api/file=", 1)[-1]
    if path.startswith(("http://", "https://", "data:")) or not path.startswith("/"):
        return True
    if str(Path(path).resolve()).startswith(str(Path(get_upload_folder()).resolve())):
        return True
    real = inside(path, services.history.root)
    if real is None:
        return not path.startswith(str(services.settings.cache_dir))
    return services.history.may_read(user, real, guest=True)


def test_every_event_of_the_page_refuses_or_answers_the_guest_alone(studio):
    url, services, owners, cookies = studio
    page = config(url, cookies[GUEST[0]])
    components = {c["id"]: c for c in page["components"]}
    events = page["dependencies"]
    assert len(events) > 100  # the whole page, private events too
    styles_before = (services.history.root / "settings" / "styles.json").read_bytes() if (
        services.history.root / "settings" / "styles.json").exists() else b""
    failures = []
    for n, event in enumerate(events):
        data = [hostile_value(components.get(i, {}), n + k, services, owners) for k, i in enumerate(event["inputs"])]
        try:
            answer = send(url, cookies[GUEST[0]], event["id"], data, queued=event.get("queue") is not False,
                          timeout=90)
        except Exception as exc:  # noqa: BLE001 — a dropped connection is a finding, not a crash of the test
            failures.append((event["id"], f"no answer: {exc}"))
            continue
        text = json.dumps(answer)
        if SECRET in text:
            failures.append((event["id"], "the owner's prompt reached the guest"))
        for path in paths_in(answer.get("data")):
            if not allowed_path(path, services, GUEST[0]):
                failures.append((event["id"], f"served {path}"))
        error = (answer["error"] or "").replace(str(services.history.root), "<the value sent>")
        if str(services.settings.cache_dir) in error or "/site-packages/" in error or "Traceback" in error:
            failures.append((event["id"], f"an error shows server internals: {error[:300]}"))
    assert not failures, failures
    # the server still serves, the shared things are as they were, the owner's work is there
    started = time.perf_counter()
    assert get(url, "/config", cookies[OWNER[0]])[0] == 200 and time.perf_counter() - started < 5
    styles_after = (services.history.root / "settings" / "styles.json").read_bytes() if (
        services.history.root / "settings" / "styles.json").exists() else b""
    assert styles_after == styles_before
    assert services.history.get(owners.id) is not None
    assert services.history.path(owners.files[0]).is_file()
    assert not any(item.owner == GUEST[0] and item.prompt == SECRET for item in services.history.list(limit=10**6))


def _event(page: dict, elem_id: str, trigger: str = "click") -> dict:
    """The event a component's trigger runs (by the component's elem_id)."""
    ids = [c["id"] for c in page["components"] if c.get("props", {}).get("elem_id") == elem_id]
    assert ids, elem_id
    return next(e for e in page["dependencies"] if [ids[0], trigger] in [list(t) for t in e["targets"]])


def _inputs(page: dict, event: dict, **by_label) -> list:
    components = {c["id"]: c for c in page["components"]}
    values = []
    for i in event["inputs"]:
        props = components[i].get("props", {})
        values.append(by_label.get(props.get("label"), props.get("value")))
    return values


def test_a_guest_cannot_rewrite_a_shared_style_by_the_pages_own_event(studio):
    url, services, _, cookies = studio
    page = config(url, cookies[GUEST[0]])
    save = next(e for e in page["dependencies"] if len(e["inputs"]) == 3 and any(
        str(c.get("props", {}).get("label")).startswith("Save the prompt boxes as a style") for c in page["components"]
        if c["id"] == e["inputs"][0]))
    answer = send(url, cookies[GUEST[0]], save["id"], ["Photograph", "{prompt}, GUEST WORDS", ""], queued=True)
    assert not answer["ok"] and "Guests can't save styles" in answer["error"]
    from pipelines.image_prompt import load_styles
    from studio.actions.library import styles_path

    photograph = {s.name: s for s in load_styles(styles_path(services))}["Photograph"]
    assert "GUEST WORDS" not in photograph.prompt
    answer = send(url, cookies[OWNER[0]], save["id"], ["Mine", "{prompt}, ink", ""], queued=True)
    assert answer["ok"], answer  # the control: the owner's own event saves it


def test_a_guests_lora_file_never_reaches_the_model_through_the_plot(studio, tmp_path):
    url, services, _, cookies = studio
    from tests.security.test_public_demo import _upload

    code, uploaded = _upload(url, cookies[GUEST[0]], "my_style.safetensors", b"\0" * 64)
    assert code == 200
    page = config(url, cookies[GUEST[0]])
    plot = _event(page, "plot-make")
    lora = {"path": uploaded[0], "orig_name": "my_style.safetensors", "meta": {"_type": "gradio.FileData"}}
    data = _inputs(page, plot, **{"LoRA .safetensors files": [lora], "Model": "tiny-sd", "Steps": 2})
    answer = send(url, cookies[GUEST[0]], plot["id"], data, queued=True)
    assert not answer["ok"] and "Guests can't load LoRA files" in answer["error"], answer


def test_a_guests_chat_export_is_theirs_alone(studio):
    url, services, _, cookies = studio
    page = config(url, cookies[GUEST[0]])
    export = _event(page, "text-chat-export")
    history = [{"role": "user", "content": [{"type": "text", "text": "the guest's private words"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]
    first = send(url, cookies[GUEST[0]], export["id"], [history, "", ""], queued=export.get("queue") is not False)
    second = send(url, cookies[GUEST[0]], export["id"], [history, "", ""], queued=export.get("queue") is not False)
    assert first["ok"] and second["ok"], (first, second)
    (path,) = paths_in(first["data"])[:1]
    assert path != paths_in(second["data"])[0]  # two exports in one second never overwrite each other
    assert get(url, f"/gradio_api/file={path}", cookies[GUEST[0]])[0] == 200
    assert b"private words" in get(url, f"/gradio_api/file={path}", cookies[GUEST[0]])[1]
    code, body = get(url, f"/gradio_api/file={path}", cookies[OTHER[0]])
    assert code == 404 and b"private" not in body


def test_a_guest_cannot_fetch_the_owners_picture_by_its_path(studio):
    url, services, owners, cookies = studio
    path = services.history.path(owners.files[0])
    assert get(url, f"/gradio_api/file={path}", cookies[OWNER[0]])[0] == 200  # the control
    for spelling in (str(path), str(path).replace("/image/", "/image/../image/"),
                     str(path).replace("/image/", "/image/%2e%2e/image/"), f"/proc/self/root{path}"):
        for route in ("/gradio_api/file=", "/gradio_api/file/", "/file="):  # every route Gradio serves files by
            code, body = get(url, f"{route}{spelling}", cookies[GUEST[0]])
            assert code in (403, 404) and not body.startswith(b"\x89PNG"), (route, spelling)
    assert get(url, f"/gradio_api/file/{path}", cookies[OWNER[0]])[0] == 200  # the old route, checked the same


def test_a_server_path_sent_as_a_file_input_is_refused(studio):
    url, services, owners, cookies = studio
    page = config(url, cookies[GUEST[0]])
    verify = _event(page, "verify-file", "upload")
    owner_png = str(services.history.path(owners.files[0]))
    answer = send(url, cookies[GUEST[0]], verify["id"],
                  [{"path": owner_png, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}],
                  queued=verify.get("queue") is not False)
    assert not answer["ok"] and SECRET not in json.dumps(answer), answer


def test_a_studio_without_logins_behind_a_proxy_refuses_everyone():
    from types import SimpleNamespace

    from studio.access import AccessDenied
    from studio.boundary import request_caller
    from studio.config import Settings

    from studio.access import Access

    services = SimpleNamespace(settings=Settings(), access=Access())
    local = SimpleNamespace(session_hash="s", username=None, headers={"host": "127.0.0.1:7860"})
    assert request_caller(services, local).user == "local"  # on this machine: the owner
    proxied = SimpleNamespace(session_hash="s", username=None, headers={"x-forwarded-for": "203.0.113.9"})
    with pytest.raises(AccessDenied, match="reached through a proxy"):
        request_caller(services, proxied)
    with pytest.raises(AccessDenied, match="carries no user"):
        request_caller(services, None)


def test_a_public_flag_requires_a_login():
    from studio.config import load_settings

    with pytest.raises(ValueError, match="refusing to start a public studio without a login"):
        load_settings(None, behind_proxy=True)


def test_a_guests_full_history_refuses_new_work_in_words_and_loses_nothing(studio):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, services, _, cookies = studio
    Client(url, auth=OWNER, verbose=False).predict(prompt="red", steps=1, width=64, height=64, model="tiny-sd",
                                                   api_name="/generate_image")  # loaded: guests may use it
    guest = Client(url, auth=OTHER, verbose=False)
    kept = services.history.add("text", {".txt": b"x" * 200_000}, owner=OTHER[0])
    services.settings.__dict__["max_user_storage_mb"] = 0.1  # a tiny share (the frozen settings, for this test)
    try:
        with pytest.raises(AppError, match=r"Your History is full \(0.2 MB of the 0.1 MB a guest may keep\): delete "
                                           r"some items"):
            guest.predict(prompt="red", steps=2, width=64, height=64, model="tiny-sd", seed=1,
                          api_name="/generate_image")
    finally:
        services.settings.__dict__["max_user_storage_mb"] = 2000.0
    assert services.history.get(kept.id) is not None and services.history.path(kept.files[0]).is_file()


def test_mcp_tools_are_behind_the_same_login(studio):
    """The MCP transport carries no studio login: on a studio with logins, its tool calls are refused (they once
    ran as the owner, all callers sharing one session)."""
    import asyncio

    pytest.importorskip("mcp")
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    url, services, _, _ = studio

    async def run():
        async with streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await session.call_tool("history_list", {"tab": "all", "search": ""})

    result = asyncio.run(run())
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert result.isError and SECRET not in text, text

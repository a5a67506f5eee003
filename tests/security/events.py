"""Send a studio's page events over HTTP the way a browser does — by `fn_index`, private ones too — for the
boundary tests. Queued events go through /gradio_api/queue/join and the event stream; `queue=False` ones through
/gradio_api/run/predict."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid


def login_cookie(url: str, who: tuple[str, str]) -> str:
    data = urllib.parse.urlencode({"username": who[0], "password": who[1]}).encode()
    with urllib.request.urlopen(url + "login", data=data, timeout=30) as response:
        return "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie"))


def get(url: str, path: str, cookie: str = "", timeout: float = 30) -> tuple[int, bytes]:
    request = urllib.request.Request(url.rstrip("/") + path, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def config(url: str, cookie: str) -> dict:
    code, body = get(url, "/config", cookie)
    assert code == 200, code
    return json.loads(body)


def _post(url: str, path: str, body: dict, cookie: str, timeout: float) -> tuple[int, dict]:
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Cookie": cookie})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}


def send(url: str, cookie: str, fn_index: int, data: list, *, queued: bool, session: str | None = None,
         event_data=None, timeout: float = 120) -> dict:
    """Run one event; returns {"ok": bool, "data": outputs or None, "error": message or None}."""
    session = session or uuid.uuid4().hex[:11]
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data,
            "trigger_id": None}
    if not queued:
        code, answer = _post(url, "/gradio_api/run/predict", body, cookie, timeout)
        if code == 200 and "data" in answer:
            return {"ok": True, "data": answer["data"], "error": None}
        return {"ok": False, "data": None, "error": str(answer.get("error") or answer.get("detail") or code)}
    code, answer = _post(url, "/gradio_api/queue/join", body, cookie, timeout)
    if code != 200:
        return {"ok": False, "data": None, "error": str(answer.get("detail") or code)}
    request = urllib.request.Request(url.rstrip("/") + f"/gradio_api/queue/data?session_hash={session}",
                                     headers={"Cookie": cookie})
    result = {"ok": False, "data": None, "error": "no answer"}
    with urllib.request.urlopen(request, timeout=timeout) as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_generating" and message.get("output", {}).get("data") is not None:
                result["data"] = message["output"]["data"]
            if message.get("msg") == "process_completed":
                output = message.get("output") or {}
                if message.get("success"):
                    return {"ok": True, "data": output.get("data"), "error": None}
                return {"ok": False, "data": None, "error": str(output.get("error") or output.get("title"))}
            if message.get("msg") in ("close_stream", "unexpected_error"):
                return {"ok": False, "data": None, "error": str(message.get("message") or "stream closed")}
    return result


def paths_in(value) -> list[str]:
    """Every file path or file URL in an event's answer."""
    found = []
    if isinstance(value, dict):
        for key in ("path", "url"):
            if isinstance(value.get(key), str):
                found.append(value[key])
        for part in value.values():
            if isinstance(part, (dict, list)):
                found += paths_in(part)
    elif isinstance(value, list):
        for part in value:
            found += paths_in(part)
    return found

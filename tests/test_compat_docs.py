"""Every curl example of docs/API.md's compatibility sections runs, as written, against a studio with logins
serving the embedded default models (the key in $STUDIO_KEY, as the examples say)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from studio.api.docs import DOC_PATH
from studio.compat.docs import EXAMPLES, HOST, curl
from studio.keys import ApiKeys
from tests.live import start


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_lm_dir, tiny_sd_dir, cache_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("compat-docs")
    port = _free_port()
    key = ApiKeys(root / "outputs").add("owner")
    app, services = start(root / "outputs", tiny_lm_dir, port, cache_dir, tiny_sd_dir, auth=(("owner", "pw"),))
    yield f"http://127.0.0.1:{port}", key
    app.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("example", EXAMPLES, ids=[e[3] + (" stream" if (e[4] or {}).get("stream") else "")
                                                   for e in EXAMPLES])
def test_every_curl_example_runs(served, example):
    url, key = served
    _layer, _title, method, path, body = example
    command = curl(method, path, body)
    assert command in DOC_PATH.read_text()  # the very command the document shows
    done = subprocess.run(["sh", "-c", command.replace(HOST, url)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "STUDIO_KEY": key})
    assert done.returncode == 0, done.stderr
    if (body or {}).get("stream"):
        events = [line.removeprefix("data: ") for line in done.stdout.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] > 0
        return
    answer = json.loads(done.stdout)
    assert not (isinstance(answer, dict) and ("error" in answer or "detail" in answer)), answer
    if path.endswith("txt2img"):
        assert len(answer["images"]) == 2 and json.loads(answer["info"])["all_seeds"] == [1, 2]
    if path.endswith("generations"):
        assert answer["data"][0]["b64_json"]


def test_the_examples_need_the_key(served):
    url, _ = served
    done = subprocess.run(["sh", "-c", curl("GET", "/v1/models", None).replace(HOST, url)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "STUDIO_KEY": "wrong"})
    assert json.loads(done.stdout)["error"]["code"] == "invalid_api_key"

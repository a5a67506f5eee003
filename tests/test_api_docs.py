"""docs/API.md cannot drift: it equals what the code generates, it lists exactly the endpoints the
served app exposes with the same parameter names and defaults, and every example in it runs."""

from __future__ import annotations

import pytest

from studio.api.docs import DOC_PATH, EXAMPLES, NOT_RUN, PLAIN_HTTP, current
from tests.live import start


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_lm_dir, tiny_sd_dir, cache_dir):
    from gradio_client import Client

    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("api-docs")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, cache_dir, tiny_sd_dir)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), services
    app.close()


def test_the_api_document_is_what_the_code_generates(served):
    _, services = served
    assert DOC_PATH.read_text() == current(services), \
        "docs/API.md is out of date: run `python -m studio.api.docs` and commit the result"


def test_every_public_endpoint_is_documented_with_its_real_parameters(served):
    client, _ = served
    api = client.view_api(return_format="dict", print_info=False)
    public = api["named_endpoints"]
    assert not api["unnamed_endpoints"]
    assert {name.lstrip("/") for name in public} == set(EXAMPLES), "the page's own events are not public API"
    text = DOC_PATH.read_text()
    for name, spec in public.items():
        assert f"## `{name}`" in text
        section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for parameter in spec["parameters"]:
            default = repr(parameter["parameter_default"]) if parameter["parameter_has_default"] else "required"
            assert f"| `{parameter['parameter_name']}` |" in section, (name, parameter["parameter_name"])
            row = next(line for line in section.splitlines() if line.startswith(f"| `{parameter['parameter_name']}` |"))
            assert f"`{default}`" in row, (name, parameter["parameter_name"], default, row)


@pytest.mark.slow  # the examples run on the real embedded models
def test_every_example_runs(served, tmp_path):
    from gradio_client import handle_file

    client, _ = served
    scope = {"client": client, "handle_file": handle_file}
    for name, line in EXAMPLES.items():
        if name in NOT_RUN:
            continue
        exec(line, scope)
    assert scope["info"] and scope["items"] and scope["models"]
    import zipfile

    with zipfile.ZipFile(scope["archive"]) as archive:  # the starred item, with its index
        names = archive.namelist()
    assert "index.json" in names and any(n.startswith(scope["items"][0]["id"] + "/") for n in names)


@pytest.mark.slow  # the examples run on the real embedded models
def test_the_plain_http_example_makes_a_signed_picture(served):
    from pipelines.provenance import read_credentials

    client, services = served
    scope: dict = {}
    exec(PLAIN_HTTP.replace("http://127.0.0.1:7860/", client.src), scope)
    assert scope["png"].startswith(b"\x89PNG") and scope["info"]["seeds"] == [1]
    assert read_credentials(scope["png"], services.history.provenance.credentials().serial).state == "valid"
    assert services.history.get(scope["info"]["history_ids"][0]).seed == 1

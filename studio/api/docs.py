"""docs/API.md, generated from the public API functions themselves (signatures and docstrings), so the
documentation cannot drift: `python -m studio.api.docs` rewrites it and tests/test_api_docs.py fails
when the file and the code differ, or when an example below stops working.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "API.md"

# A two-line example per endpoint (after `client = Client("http://127.0.0.1:7860/")`); the test suite runs
# every one against a studio serving the embedded default models.
EXAMPLES: dict[str, str] = {
    "generate_text": 'text, status = client.predict(prompt="Once upon a time", max_new_tokens=32, seed=1, '
                     'api_name="/generate_text")',
    "chat": 'answer = client.predict(message="Name three colours.", max_new_tokens=32, temperature=0, api_name="/chat")',
    "stop_text": 'stopped = client.predict(api_name="/stop_text")',
    "generate_image": 'info, pictures = client.predict(prompt="red heart", steps=8, seed=1, api_name="/generate_image")',
    "plot_xyz": 'info, plot = client.predict(prompt="red heart", steps=4, seed=1, x_type="CFG scale", x_values="3, 7", '
                'y_type="Steps", y_values="2, 4", api_name="/plot_xyz")',
    "cancel_image": 'cancelled = client.predict(api_name="/cancel_image")',
    "upscale_image": 'info, big = client.predict(image=handle_file(pictures[0]), scale=2, api_name="/upscale_image")',
    "png_info": 'info = client.predict(image=handle_file(pictures[0]), api_name="/png_info")',
    "verify_image": 'report = client.predict(image=handle_file(pictures[0]), api_name="/verify_image")\n'
                    'print(report["summary"])',
    "save_style": 'style = client.predict(name="Ink wash", prompt="{prompt}, ink wash painting", '
                  'negative_prompt="photo", api_name="/save_style")',
    "gan_sample": 'info, files = client.predict(seed=42, grid_size=4, truncation=0.7, api_name="/gan_sample")',
    "gan_interpolate": 'info, files = client.predict(keyframes="1, 42, 7", frames=24, api_name="/gan_interpolate")',
    "vae_interpolate": 'info, files = client.predict(model="digit-vae-2d", random_samples=3, frames=12, '
                       'api_name="/vae_interpolate")',
    "vae_map": 'info, files = client.predict(model="digit-vae-2d", grid_size=12, api_name="/vae_map")',
    "vae_reconstruct": 'info, files = client.predict(images=[handle_file(pictures[0])], model="emoji-vae", '
                       'api_name="/vae_reconstruct")',
    "vae_sample": 'info, files = client.predict(model="digit-vae-16d", count=8, seed=3, api_name="/vae_sample")',
    "vae_train": 'info = client.predict(name="my-vae", folder="/path/to/images", epochs=5, api_name="/vae_train")',
    "explore_walk": 'info, files = client.predict(keyframes="1: red heart\\n2: green apple", frames=6, steps=8, '
                    'api_name="/explore_walk")',
    "explore_directions": 'info, files = client.predict(model="dcgan-faces-64", method="sefa", count=4, '
                          'api_name="/explore_directions")',
    "explore_move": 'info, files = client.predict(model="dcgan-faces-64", origin="42", method="sefa", amounts="2, -1", '
                    'api_name="/explore_move")',
    "explore_map": 'info, files = client.predict(model="digit-vae-2d", method="dimensions", grid_size=8, '
                   'api_name="/explore_map")',
    "explore_breed": 'info, files = client.predict(model="dcgan-faces-64", parents="1\\n2\\n3", children=6, '
                     'api_name="/explore_breed")',
    "explore_variations": 'info, files = client.predict(origin="3: rocket", count=4, steps=8, '
                          'api_name="/explore_variations")',
    "history_list": 'items = client.predict(tab="image", limit=5, api_name="/history_list")',
    "history_get": 'item, files = client.predict(id=items[0]["id"], api_name="/history_get")',
    "history_star": 'result = client.predict(id=items[0]["id"], starred=True, api_name="/history_star")',
    "history_export": 'archive = client.predict(starred=True, api_name="/history_export")',
    "share_item": 'link = client.predict(id=items[0]["id"], api_name="/share_item")',
    "unshare_item": 'client.predict(id=items[0]["id"], api_name="/unshare_item")',
    "history_delete": 'result = client.predict(id=items[-1]["id"], api_name="/history_delete")',
    "models_list": 'models = client.predict(api_name="/models_list")',
    "models_fetch": 'result = client.predict(name="dcgan-faces-64", api_name="/models_fetch")',
}
# Examples that need something only a person's machine has (a folder of images), or that change the cache
NOT_RUN = {"vae_train", "models_fetch"}


def _type_name(annotation) -> str:
    text = inspect.formatannotation(annotation) if annotation is not inspect.Parameter.empty else "any"
    return text.replace("gradio.data_classes.FileData", "file").replace("FileData", "file").replace("NoneType", "None")


def _args(doc: str) -> dict[str, str]:
    """The `Args:` block of a docstring: name → meaning."""
    block = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    block = re.split(r"\n\s*\n", block, maxsplit=1)[0]
    out, name = {}, None
    for line in block.splitlines():
        match = re.match(r"\s{4,}(\w+):\s*(.*)", line)
        if match and len(line) - len(line.lstrip()) <= 12:
            name = match.group(1)
            out[name] = match.group(2).strip()
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out


def parameters(fn) -> list[dict]:
    """Public parameters (Gradio's request object excluded) with type, default and meaning."""
    meaning = _args(inspect.getdoc(fn) or "")
    hints = typing.get_type_hints(inspect.unwrap(fn))
    rows = []
    for name, p in inspect.signature(fn).parameters.items():
        if name == "request":
            continue
        default = "required" if p.default is inspect.Parameter.empty else repr(p.default)
        rows.append({"name": name, "type": _type_name(hints.get(name, p.annotation)), "default": default,
                     "meaning": meaning.get(name, "")})
    return rows


# Gradio's HTTP API without gradio_client (the test suite runs it against a studio serving the embedded models)
PLAIN_HTTP = """import httpx, json, uuid
http, session = httpx.Client(base_url="http://127.0.0.1:7860/"), uuid.uuid4().hex
parameters = http.get("gradio_api/info").json()["named_endpoints"]["/generate_image"]["parameters"]
given = {"prompt": "red heart", "steps": 8, "seed": 1}  # every other parameter at its default, in order:
data = [given.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]
event = http.post("gradio_api/call/generate_image", json={"data": data, "session_hash": session}).json()["event_id"]
lines = http.get(f"gradio_api/call/generate_image/{event}").text.splitlines()  # server-sent events
info, files = json.loads(lines[lines.index("event: complete") + 1].removeprefix("data:"))[0]
png = http.get("gradio_api/file=" + files[0]["path"]).content"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(endpoints: list[tuple[str, object]]) -> str:
    lines = ["# GenAI Studio API", "",
             "Generated from the code by `python -m studio.api.docs` — do not edit by hand; "
             "`tests/test_api_docs.py` fails when this file and the code differ.", "",
             "Every endpoint below is called with `gradio_client` (or any Gradio client, or as an MCP tool with "
             "`studio launch --mcp`). Files go in with `handle_file(path)` and come back as local paths. With "
             "logins on, pass `auth=(user, password)` to `Client`; guests are held to the same rules and quota as "
             "on the page. Bad values are refused with a message naming the parameter and its allowed range.", "",
             "```python", "from gradio_client import Client, handle_file", 'client = Client("http://127.0.0.1:7860/")',
             "```", "",
             "**Plain HTTP**, for scripts that make many pictures: `gradio_client` looks for each answer every 50 ms "
             "and opens a new connection for each file it fetches (a call that does nothing takes ~76 ms through "
             "it, ~6.5 ms over plain HTTP; docs/TESTING.md, \"Speed of the served studio\"). Any HTTP client can call "
             "`POST /gradio_api/call/<endpoint>` with `{\"data\": [every parameter in order], \"session_hash\": "
             "\"…\"}`, read the answer from `GET /gradio_api/call/<endpoint>/<event_id>` (server-sent events; the "
             "`complete` event's data), and fetch each file at `/gradio_api/file=<its path>`, all on one kept-alive "
             "connection. Send the same `session_hash` (any random text of your own) with every call: a call "
             "without one is a new session, which Gradio sets up for every component of the studio's page "
             "(~60–90 ms), and your chat's prompt cache and your Stop belong to your session.", "",
             "```python", *PLAIN_HTTP.splitlines(),
             "```", "", "| endpoint | what it does |", "| --- | --- |"]
    for name, fn in endpoints:
        summary = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        lines.append(f"| [`/{name}`](#{name}) | {_cell(summary)} |")
    for name, fn in endpoints:
        doc = inspect.getdoc(fn) or ""
        summary = doc.split("\n\n")[0].replace("\n", " ")
        returns = [part for part in doc.split("\n\n")[1:] if part.startswith("Returns")]
        lines += ["", f"## `/{name}`", "", summary, "", "| parameter | type | default | meaning |",
                  "| --- | --- | --- | --- |"]
        for row in parameters(fn):
            lines.append(f"| `{row['name']}` | `{_cell(row['type'])}` | `{row['default']}` | {_cell(row['meaning'])} |")
        if not parameters(fn):
            lines.append("| (none) | | | |")
        if returns:
            lines += ["", returns[0].replace("\n", " ")]
        lines += ["", "```python", EXAMPLES[name], "```"]
    from studio.compat.docs import markdown as compat_sections

    return "\n".join(lines) + "\n" + compat_sections()


def current(services=None) -> str:
    from studio.api import endpoint_functions
    from studio.config import load_settings
    from studio.services import Services

    if services is None:
        import tempfile

        services = Services.create(load_settings(None, outputs=Path(tempfile.mkdtemp(prefix="studio-docs-"))))
    return render(endpoint_functions(services))


if __name__ == "__main__":
    DOC_PATH.write_text(current())
    print(f"wrote {DOC_PATH}", file=sys.stderr)

"""The compatibility layers' part of docs/API.md (its static tail, added by studio/api/docs.py). Each `curl`
example is rendered from `EXAMPLES`, and tests/test_compat_docs.py runs every one against a launched studio."""

from __future__ import annotations

import json

HOST = "http://127.0.0.1:7860"

# (layer, what it shows, method, path, JSON body or None); the key is $STUDIO_KEY
EXAMPLES: list[tuple[str, str, str, str, dict | None]] = [
    ("openai", "The models you may use", "GET", "/v1/models", None),
    ("openai", "A chat answer (greedy, so always the same)", "POST", "/v1/chat/completions",
     {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Name three colours."}],
      "max_tokens": 32, "temperature": 0}),
    ("openai", "The same, streamed (server-sent events ending `data: [DONE]`)", "POST", "/v1/chat/completions",
     {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Name three colours."}],
      "max_tokens": 32, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}),
    ("openai", "A continuation, with the studio's own sampling extras", "POST", "/v1/completions",
     {"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 16, "top_k": 40,
      "min_p": 0.05, "repetition_penalty": 1.1, "seed": 1}),
    ("openai", "A picture as base64 PNG (extras: seed, steps, negative_prompt, guidance)", "POST",
     "/v1/images/generations", {"prompt": "red heart", "size": "64x64", "response_format": "b64_json", "seed": 1,
                                "steps": 8}),
    ("a1111", "Text to image", "POST", "/sdapi/v1/txt2img",
     {"prompt": "red heart", "steps": 8, "seed": 1, "sampler_name": "Euler a", "batch_size": 2}),
    ("a1111", "The models, and the default one", "GET", "/sdapi/v1/sd-models", None),
    ("a1111", "The LoRA files of the LoRA folder (owners use one in a prompt as `<lora:NAME:0.8>`)", "GET",
     "/sdapi/v1/loras", None),
    ("a1111", "Options (POST is for owners: it sets the default model)", "GET", "/sdapi/v1/options", None),
    ("a1111", "Your own job's progress", "GET", "/sdapi/v1/progress", None),
    ("a1111", "Stop your own running job (never another user's)", "POST", "/sdapi/v1/interrupt", None),
]


def curl(method: str, path: str, body: dict | None, host: str = HOST) -> str:
    parts = [f"curl -s {host}{path}", '-H "Authorization: Bearer $STUDIO_KEY"']
    if method == "POST":
        parts += ['-H "Content-Type: application/json"', f"-d '{json.dumps(body or {})}'"]
    return " \\\n  ".join(parts)


def _examples(layer: str) -> list[str]:
    lines = []
    for which, title, method, path, body in EXAMPLES:
        if which == layer:
            lines += [f"{title}:", "", "```sh", curl(method, path, body), "```", ""]
    return lines


def markdown() -> str:
    """The two sections: keys and callers, then one per layer with its curl examples."""
    lines = [
        "", "## Compatibility APIs: OpenAI (`/v1`) and AUTOMATIC1111 (`/sdapi/v1`)", "",
        "Tools that speak OpenAI's or AUTOMATIC1111's API work with the studio: point Open WebUI, SillyTavern, "
        "LibreChat or the `openai` Python package at `http://HOST:7860/v1`, and AUTOMATIC1111 clients (Krita, "
        "Photoshop and GIMP plug-ins, `webuiapi`, Open WebUI's and SillyTavern's image engines) at "
        "`http://HOST:7860` (they add `/sdapi/v1`). Both run the same actions, limits and History as the page.", "",
        "**Keys.** A studio with logins refuses these routes without a key or login (401). Make a key with "
        "`studio keys add NAME` (an owner's) or `studio keys add NAME --guest` (a guest's: the provided models "
        "only, the guest quota); it is printed once and kept only as a salted hash in "
        "`<outputs>/settings/api-keys.json`. `studio keys list`, `studio keys revoke NAME`. Send it as "
        "`Authorization: Bearer KEY`, or as HTTP Basic with any user name and the key as the password "
        "(AUTOMATIC1111's `--api-auth` style); a studio login's user:password works too. A studio without "
        "logins (this machine only) runs calls without credentials as its owner. Pictures and texts made "
        "here are the caller's, in their History, with parameters, Content Credentials and the watermark.", "",
        "### OpenAI-compatible (`/v1`)", "",
        "`GET /v1/models`; `POST /v1/chat/completions` (messages with text content, `model`, `max_tokens` / "
        "`max_completion_tokens`, `temperature`, `top_p`, `stop`, `seed`, `n` = 1, `stream`, "
        "`stream_options.include_usage`; extras `top_k`, `min_p`, `repetition_penalty`); `POST /v1/completions`; "
        "`POST /v1/images/generations` (`prompt`, `n`, `size` \"WxH\" or auto, `response_format` url | "
        "b64_json, `model`; extras `seed`, `steps`, `negative_prompt`, `guidance`); `POST /v1/images/edits` "
        "(multipart `image`, optional `mask` whose transparent pixels are repainted; extra `strength`). A `url` "
        "is a link to the kept picture that opens without a login, like an item link. Errors are "
        "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`: 400 bad input, 401 no or wrong key, 403 "
        "not for guests, 404 `model_not_found`, 429 quota, 500.", "",
        "```python", "from openai import OpenAI",
        'client = OpenAI(base_url="http://127.0.0.1:7860/v1", api_key="sk-studio-…")',
        'reply = client.chat.completions.create(model="smollm2-135m-instruct", '
        'messages=[{"role": "user", "content": "Hi"}])', "```", "", *_examples("openai"),
        "### AUTOMATIC1111-compatible (`/sdapi/v1`)", "",
        "`POST txt2img`, `img2img` (`init_images`, `denoising_strength`, `mask`, `inpainting_mask_invert`), "
        "`enable_hr` / `hr_scale` / `hr_upscaler` / `hr_second_pass_steps`, `alwayson_scripts.controlnet.args`, "
        "`override_settings.sd_model_checkpoint`; `GET sd-models`, `samplers`, `schedulers`, `loras`, `upscalers`, "
        "`options` (POST: owners only, sets the default model, kept across restarts in "
        "`<outputs>/settings/sdapi-options.json`), `progress` (a caller who reads it — as Krita's plug-in does during "
        "every job — gets step counts and a preview from then on; a script that never does pays for no preview "
        "decodes); `POST interrupt` (your own job: a batch of "
        "`n_iter` runs ends with 200 and the pictures of the runs finished before it, kept in History; 409 when "
        "none was), `skip` (drops the run being made, the batch goes on), `png-info`, `extra-single-image`. "
        "Answers carry base64 PNGs, `parameters` and `info` (a JSON string with `seed`, `all_seeds`, "
        "`infotexts`). Width and height default to the model's own size; unknown fields are ignored; a bad "
        "field is a 422 whose `detail` names it.", "",
        "**LoRA files.** Owners put `.safetensors` LoRAs in the LoRA folder, `<cache>/loras/` (beside "
        "`<cache>/upscalers/`; the cache is `~/.cache/genai-studio` or `--cache-dir`). `GET loras` lists them as "
        "`{name, alias, path, metadata}` (a guest sees the file name, not the server path, and no metadata); an "
        "owner's prompt uses one as `<lora:NAME>` or `<lora:NAME:WEIGHT>` (the tag is taken out of the prompt; "
        "the picture's parameters list the LoRA). Guests are refused LoRA files (403), as on the page.", "",
        "```python", "import webuiapi",
        'api = webuiapi.WebUIApi(host="127.0.0.1", port=7860, username="me", password="sk-studio-…")',
        'result = api.txt2img(prompt="red heart", steps=8, seed=1)', "```", "", *_examples("a1111"),
    ]
    return "\n".join(lines)

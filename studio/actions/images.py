"""Pictures: the rules a request meets (room, LoRA files, quotas), making pictures and keeping them in
History, ControlNet units and image prompts, real-time pictures and the X/Y/Z plot."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from pipelines.image import GenerationCancelled, ImageParams
from pipelines.media import a1111_parameters, png_bytes, png_with_metadata
from pipelines.provenance import Origin
from studio.actions.library import check_room
from studio.events import keep_output, list_outputs


def lora_weights(weights_text) -> list[float]:
    """The numbers of a LoRA weights text such as "0.8, 0.5" (empty: none given), or a clear error."""
    weights = []
    for part in str(weights_text or "").replace(";", ",").split(","):
        if part.strip():
            try:
                weights.append(float(part))
            except ValueError:
                raise ValueError(f"lora_weights: {part.strip()[:20]!r} is not a number; give one number per LoRA "
                                 "file, e.g. 0.8, 0.5") from None
    return weights


def loras_from(files, weights_text) -> dict:
    """{name: (path, weight)} from LoRA files and a weights text such as "0.8, 0.5" (default 1 each)."""
    files = files or []
    weights = lora_weights(weights_text)
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


def check_loras(services, loras):
    """LoRA files change the weights every user shares: owners only. Returns `loras`."""
    from studio.access import AccessDenied

    if loras and services.host.admission.caller().guest:
        raise AccessDenied("Guests can't load LoRA files; only the studio's owner can add weights.")
    return loras


def check_pictures(services, params: ImageParams, *, interactive: bool = False) -> None:
    """The caller's rules for these pictures, before anything is loaded: guests load no LoRA files and keep to
    their own limits (real-time pictures to their preview steps). `start_generation` checks again, always."""

    caller, settings = services.host.admission.caller(), services.settings
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

    caller, settings = services.host.admission.caller(), services.settings
    check_pictures(services, params, interactive=interactive)
    steps = params.steps + ((params.hires.steps or params.steps) if params.hires else 0)
    scale = params.hires.scale ** 2 if params.hires else 1.0
    caller.spend(image_units(params.batch_size * params.batch_count, steps, params.width,
                             round(params.height * scale)), "this request")
    return settings.guest_job_seconds if caller.guest else 0.0


class MadeImages(NamedTuple):
    """What `make_images` made: kept (keep_images' (path, seed, History id) per picture; empty when not kept),
    out (the ImageOutput: pictures, seeds, seconds, notes) and pipe (the pipeline that made them)."""

    kept: list
    out: object
    pipe: object


def make_images(services, params: ImageParams, model: str, owner: str, session: str, on_progress=None, *,
                cancel=None, interactive: bool = False, keep: bool = True) -> MadeImages:
    """Make pictures and keep them in History: every door's one way (the page's Generate, the plot's cells,
    real-time mode, the Gradio API, the compatibility APIs). `on_progress` hears the job's (step, total, preview)
    at most once a second (previews only when someone listens: each costs a decode). Raises GenerationCancelled.
    The page streams the same sequence step by step: `making_images`."""
    steps = making_images(services, params, model, owner, session, cancel=cancel, interactive=interactive,
                          keep=keep, watched=on_progress is not None)
    while True:
        try:
            event = next(steps)
        except StopIteration as finished:
            return finished.value
        if on_progress is not None and isinstance(event, tuple):
            on_progress(event)


def making_images(services, params: ImageParams, model: str, owner: str, session: str, *, cancel=None,
                  interactive: bool = False, keep: bool = True, watched: bool = True, log=None):
    """`make_images`, step by step: yields notes in words (loading the model, compiling it for a new size) and
    the job's (step, total, preview) events; returns MadeImages. The sequence: the caller's rules (a guest's
    LoRA files, limits, room) before anything loads → `session`'s cancellable image job (or the caller's own
    `cancel` flag: a plot's, a real-time picture's) → the model leased (never evicted while in use) →
    `start_generation` → the pictures kept in History as `owner`'s (parameters, Content Credentials, watermark)
    unless `keep=False`. `log` hears the model's loading messages."""
    check_pictures(services, params, interactive=interactive)
    loaded = services.host.cache.peek("image", str(model or services.host.registry.default("image")).strip())
    yield "Generating…" if loaded else "Loading the model… (the first request loads it)"
    own_job = cancel is None
    if own_job:
        cancel = services.jobs.start(session, "image")
    try:
        with services.host.image_lease(model, log=log) as pipe:  # in use (never evicted) until the pictures are made
            if note := getattr(pipe, "compile_note", lambda _: "")(params):  # a compiled model, a new size
                yield note
            job = start_generation(services, pipe, params, cancel, watched=watched, interactive=interactive)
            yield from job
            out = job.result()
    finally:
        if own_job:  # a closed page or dropped request stops the worker too (harmless once done)
            cancel.set()
            services.jobs.finish(session, "image", cancel)
    return MadeImages(keep_images(services, pipe, out, owner) if keep else [], out, pipe)


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
        units.append(ControlUnit(services.host.admission.admit_controlnet(value.get("model", "")), picture, module,
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
    return ImagePrompt(IPAdapterRef(services.host.admission.admit_ip_adapter(adapter), weight), picture)


LIVE_PAUSE = 0.12  # seconds a real-time request waits for the next keystroke or slider step before it starts


def live_picture(services, model: str, params: ImageParams, session: str):
    """Real-time mode: one picture for the newest of a session's requests. A new request stops the one before it
    (mid-denoise) and waits `LIVE_PAUSE` for a newer one, so typing and dragging draw only where the user pauses.
    Runs as interactive work (beside a long job, never inside it). Returns the ImageOutput, or None when a newer
    request took over. Nothing is kept: the page's Keep does that."""
    cancel = services.jobs.supersede(session, "live")
    try:
        if cancel.wait(LIVE_PAUSE):
            return None
        out = make_images(services, params, model, "", session, cancel=cancel, interactive=True, keep=False).out
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


def a1111_settings(params: ImageParams, seed: int, model: str) -> dict:
    """One picture's settings under AUTOMATIC1111's infotext names: the PNG's `parameters` text and the A1111
    API's `infotexts` both read them."""
    # the variation seed only blends txt2img noise; img2img/inpaint start from the picture
    varied = params.mode == "txt2img" and params.variation_seed is not None and params.variation_strength > 0
    return {"Steps": params.steps, "Sampler": params.scheduler, "CFG scale": params.guidance, "Seed": seed,
            "Size": f"{params.width}x{params.height}", "Model": model,
            "Denoising strength": params.strength if params.mode != "txt2img" else None,
            "Variation seed": params.variation_seed if varied else None,
            "Variation seed strength": params.variation_strength if varied else None,
            "Lora": ", ".join(f"{lora.name}:{lora.weight:g}" for lora in params.loras) or None,
            **{f"ControlNet {i}": unit.a1111(Path(unit.model).name) for i, unit in enumerate(params.controls)},
            **({f"ControlNet {len(params.controls)}": params.image_prompt.a1111()} if params.image_prompt else {}),
            "Regional prompts": f"{len(params.regions)} (latent couple)" if params.regions else None,
            **second_pass_settings(params)}


def keep_images(services, pipe, out, owner: str) -> list[tuple]:
    """Save each image as a PNG with its parameters as they ran (`out.params`: AUTOMATIC1111 text, JSON, XMP) into
    History; returns (file path or the image itself when the disk is full, seed, History id) per image.

    Each picture is marked in its pixels, then encoded once (never encoded, decoded, marked and encoded again),
    then signed; the pictures of a batch are kept side by side."""
    params = out.params
    # the variation seed only blends txt2img noise; img2img/inpaint start from the picture
    varied = params.mode == "txt2img" and params.variation_seed is not None and params.variation_strength > 0
    origin = Origin() if params.mode == "txt2img" else Origin("edited", params.mode, png_bytes(params.init_image))

    def keep(image, image_seed):
        settings = a1111_settings(params, image_seed, pipe.model.name)
        record = {**params.to_record(), "seed": image_seed, "model": pipe.model.name,
                  **({} if varied else {"variation_seed": None, "variation_strength": 0.0})}
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

    from pipelines.image import lora_set
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
        try:  # the caller's rules first: a guest's LoRA files never reach the loader, whichever input held them
            made = make_images(services, params, settings.get("Model", model_name), owner, session, cancel=cancel)
        except GenerationCancelled:
            return None
        (_path, _seed, item_id), = made.kept
        kept.append(item_id)
        return made.out.images[0]

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

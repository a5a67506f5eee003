"""AUTOMATIC1111-compatible routes under /sdapi/v1, with that API's field names and answers (its
modules/api/api.py and models.py): txt2img, img2img (inpainting with `mask`), the hires fix, ControlNet units,
`override_settings.sd_model_checkpoint`; sd-models, samplers, schedulers, loras, upscalers, options (POST: owners
only, the default image model), progress, interrupt and skip (the caller's own job only), png-info,
extra-single-image. Pictures are base64 PNGs, each kept in the caller's History with its parameters, Content
Credentials and watermark; `info` is a JSON string with seed, all_seeds and infotexts. A bad body gets a 422
whose message names the field. Unknown fields (restore_faces, tiling, eta, …) are accepted and ignored."""

from __future__ import annotations

import io
import json
import os
import random
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from pipelines.image import SCHEDULERS, ImageParams, lora_set
from pipelines.image_upscale import HiresParams, UpscaleParams, upscale
from pipelines.media import png_bytes, read_png_info
from studio.actions.images import CONTROL_FIELDS, a1111_settings, control_units
from studio.actions.library import (lora_files, lora_metadata, resolve_upscaler, style_named, upscaled_origin,
                                    upscaler_choices)
from studio.compat.auth import ApiUser
from studio.compat.calls import b64, kept_pngs, make_pictures, picture, run_as
from studio.compat.wire import CompatError, flag, json_body, number, route_class, text
from studio.events import keep_output

VERSION = "studio"  # what `info.version` says


def error_shape(error: CompatError) -> dict:
    """AUTOMATIC1111's error answer (its api_error_handler): error, detail, body, errors."""
    return {"error": error.code or error.kind, "detail": error.message, "body": "", "errors": error.message}


class Progress:
    """Each API user's running image job, for /progress: steps done, steps in all, when it started."""

    WATCHING_SECONDS = 600.0  # a caller who read /progress this recently is shown previews

    def __init__(self) -> None:
        self._jobs: dict[str, dict] = {}
        self._read: dict[str, float] = {}  # when each caller last read /progress
        self._lock = threading.Lock()

    def watched(self, session: str) -> bool:
        """Whether `session` reads /progress (AUTOMATIC1111 clients such as Krita's poll it during every job): only
        then do its jobs report steps and decode previews — a decode each, ~a fifth of a small job's time. A
        script that never asks pays for none (AUTOMATIC1111 likewise decodes a preview only when /progress is
        read)."""
        with self._lock:
            return time.time() - self._read.get(session, float("-inf")) < self.WATCHING_SECONDS

    def start(self, session: str, params: ImageParams, family=None) -> None:
        """A job begins: its steps in all as the model's pipeline runs them (`family`: a flow model's)."""
        from pipelines.image import pass_steps

        edits = family is not None and family.edits and params.mode == "img2img"
        first, second = pass_steps(params, family is not None, "edit" if edits else "")
        with self._lock:  # the steps in all, as the pipeline counts them (it reports at most once a second)
            self._jobs[session] = {"step": 0, "total": (first + second) * params.batch_count, "started": time.time(),
                                   "count": params.batch_count, "interrupted": False}

    def step(self, session: str, event) -> None:
        """A job's (step, total, preview) event; the preview, when there is one, is kept as /progress's image."""
        if isinstance(event, tuple) and len(event) >= 2:
            preview = event[2] if len(event) > 2 else None
            with self._lock:
                if session in self._jobs:
                    job = self._jobs[session]
                    job.update(step=int(event[0]), total=int(event[1]))
                    job["preview"] = preview if preview is not None else job.get("preview")

    def mark_interrupted(self, session: str) -> None:
        with self._lock:
            if session in self._jobs:
                self._jobs[session]["interrupted"] = True

    def interrupted(self, session: str) -> bool:
        with self._lock:
            return bool(self._jobs.get(session, {}).get("interrupted"))

    def running(self, session: str) -> bool:
        with self._lock:
            return session in self._jobs

    def finish(self, session: str) -> None:
        with self._lock:
            self._jobs.pop(session, None)

    def of(self, session: str) -> dict:
        with self._lock:
            self._read[session] = time.time()
            job = dict(self._jobs.get(session) or {})
        done = job["step"] / job["total"] if job.get("total") else 0.0
        job_state = {"job": "txt2img", "job_count": job["count"]} if job else {"job": "", "job_count": 0}
        elapsed = time.time() - job["started"] if job else 0.0
        eta = elapsed / done - elapsed if done > 0 else 0.0
        return {"progress": round(done, 4), "eta_relative": round(eta, 3),
                "state": {"skipped": False, "interrupted": job.get("interrupted", False),
                          **job_state,
                          "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.get("started", 0))),
                          "job_no": 0, "sampling_step": job.get("step", 0), "sampling_steps": job.get("total", 0)},
                "current_image": b64(png_bytes(job["preview"])) if job.get("preview") else None, "textinfo": None}


def sampler_of(body: dict) -> str:
    """The studio's sampler for A1111's sampler_name (or sampler_index) and scheduler ("karras")."""
    name = text(body, "sampler_name", "", limit=60) or text(body, "sampler_index", "", limit=60) or "DPM++ 2M"
    if text(body, "scheduler", "", limit=60).lower() == "karras" and f"{name} Karras" in SCHEDULERS:
        name = f"{name} Karras"
    if name not in SCHEDULERS:
        raise CompatError(400, f"sampler_name: one of {', '.join(SCHEDULERS)}, got {name[:40]!r}",
                          param="sampler_name")
    return name


def seed_field(body: dict, name: str) -> int | None:
    value = number(body, name, -1, -1, 2**32 - 1, whole=True)
    return None if value == -1 else value


def checkpoint_of(body: dict, default: str) -> str:
    """override_settings.sd_model_checkpoint (its title or name), else the studio's A1111 default model."""
    override = body.get("override_settings") or {}
    if not isinstance(override, dict):
        raise CompatError(400, "override_settings: an object such as {\"sd_model_checkpoint\": \"name\"}",
                          param="override_settings")
    name = override.get("sd_model_checkpoint")
    if name is None:
        return default
    if not isinstance(name, str):
        raise CompatError(400, "override_settings.sd_model_checkpoint: a model name", param="sd_model_checkpoint")
    return name.split(" [")[0].strip()  # a title "name [hash]" or the name itself


# AUTOMATIC1111's extra-network tag: <lora:NAME>, <lora:NAME:WEIGHT> (a third part, its text-encoder weight, is
# accepted and ignored)
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)


def prompt_loras(services, prompt: str, guest: bool) -> tuple[str, tuple]:
    """The prompt without its `<lora:NAME:WEIGHT>` tags, and those LoRAs from the LoRA folder (studio/actions/
    library.lora_folder). LoRA files change the weights every user shares: a guest's tag is refused (403)."""
    tags = LORA_TAG.findall(prompt)
    if not tags:
        return prompt, ()
    if guest:
        from studio.access import AccessDenied

        raise AccessDenied("Guests can't load LoRA files; only the studio's owner can add weights.")
    files = lora_files(services)
    chosen: dict = {}
    for name, weight in tags:
        name = name.strip()
        if name not in files:
            raise CompatError(400, f"prompt: no LoRA named {name[:60]!r} in the LoRA folder (see /sdapi/v1/loras)",
                              param="prompt")
        try:
            chosen[name] = (files[name], float(weight) if weight.strip() else 1.0)
        except ValueError:
            raise CompatError(400, f"prompt: <lora:{name[:60]}:{weight[:20]}>: the weight is a number such as 0.8",
                              param="prompt") from None
    return re.sub(r"[ \t]{2,}", " ", LORA_TAG.sub(" ", prompt)).strip(), lora_set(chosen)


def image_params(services, body: dict, *, start=None, mask=None, default_size: int = 512,
                 guest: bool = True) -> ImageParams:
    """ImageParams from a txt2img or img2img body (A1111's names); `<lora:…>` tags in the prompt for owners."""
    limits = services.settings.image_limits
    prompt, loras = prompt_loras(services, text(body, "prompt"), guest)
    mode = "inpaint" if mask is not None else "img2img" if start is not None else "txt2img"
    width = number(body, "width", 0, 0, 2048, whole=True) or (start.width // 8 * 8 if start else default_size)
    height = number(body, "height", 0, 0, 2048, whole=True) or (start.height // 8 * 8 if start else default_size)
    styles = body.get("styles") or []
    if not isinstance(styles, list) or len(styles) > 1 or not all(isinstance(s, str) for s in styles):
        raise CompatError(400, "styles: a list of at most one style name", param="styles")
    hires = None
    if mode == "txt2img" and flag(body, "enable_hr"):
        hires = HiresParams(number(body, "hr_scale", 2.0, 1.0, 4.0),
                            resolve_upscaler(services, text(body, "hr_upscaler", "Latent", limit=200), latent=True,
                                             field="hr_upscaler"),
                            number(body, "hr_second_pass_steps", 0, 0, limits.max_steps, whole=True),
                            number(body, "denoising_strength", 0.7, 0.01, 1.0))
    strength = number(body, "denoising_strength", 0.75, 0.0, 1.0) if mode != "txt2img" else 0.75
    if mode != "txt2img" and strength <= 0:
        raise CompatError(400, "denoising_strength: above 0 and up to 1 for img2img", param="denoising_strength")
    return ImageParams(
        prompt=prompt, negative_prompt=text(body, "negative_prompt"), mode=mode, loras=loras,
        steps=number(body, "steps", 20, 1, limits.max_steps, whole=True),
        guidance=number(body, "cfg_scale", 7.0, 0, 30), width=width, height=height, scheduler=sampler_of(body),
        seed=seed_field(body, "seed"), variation_seed=seed_field(body, "subseed") if mode == "txt2img" else None,
        variation_strength=number(body, "subseed_strength", 0.0, 0, 1) if mode == "txt2img" else 0.0,
        strength=strength, batch_size=number(body, "batch_size", 1, 1, limits.max_batch_size, whole=True),
        batch_count=number(body, "n_iter", 1, 1, limits.max_batch_count, whole=True),
        init_image=start, mask=mask, hires=hires, style=style_named(services, styles[0]) if styles else None,
        controls=controlnet_of(services, body))


def controlnet_of(services, body: dict) -> tuple:
    """alwayson_scripts.controlnet.args: the ControlNet units (A1111's names; each with its `image`)."""
    scripts = body.get("alwayson_scripts") or {}
    units = (scripts.get("controlnet") or {}).get("args") if isinstance(scripts, dict) else None
    if not units:
        return ()
    if not isinstance(units, list) or not all(isinstance(u, dict) for u in units):
        raise CompatError(400, "alwayson_scripts.controlnet.args: a list of units", param="controlnet")
    units = [u for u in units if u.get("enabled", True)]
    images = [picture(services, u.get("image") or u.get("input_image") or "", f"controlnet.args[{i}].image")
              for i, u in enumerate(units)]
    return control_units(services, [{k: v for k, v in u.items() if k in CONTROL_FIELDS} for u in units], images)


def infotext(params: ImageParams, seed: int, model: str) -> str:
    """The picture's `parameters` text, as its PNG holds it."""
    from pipelines.media import a1111_parameters

    return a1111_parameters(params.prompt, params.negative_prompt, a1111_settings(params, seed, model))


def answer(params: ImageParams, kept, seeds: list[int], pipe, body: dict) -> dict:
    """A1111's answer: images, the request's parameters, and info (a JSON string)."""
    info = {"prompt": params.prompt, "all_prompts": [params.prompt] * len(seeds),
            "negative_prompt": params.negative_prompt, "all_negative_prompts": [params.negative_prompt] * len(seeds),
            "seed": seeds[0] if seeds else None, "all_seeds": seeds,
            "subseed": params.variation_seed or -1, "all_subseeds": [params.variation_seed or -1] * len(seeds),
            "subseed_strength": params.variation_strength, "width": params.width, "height": params.height,
            "sampler_name": params.scheduler, "cfg_scale": params.guidance, "steps": params.steps,
            "batch_size": params.batch_size, "sd_model_name": pipe.model.name, "sd_model_hash": None,
            "denoising_strength": params.strength if params.mode != "txt2img" else None,
            "styles": [params.style.name] if params.style else [], "index_of_first_image": 0,
            "infotexts": [infotext(params, seed, pipe.model.name) for seed in seeds],
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "version": VERSION,
            "history_ids": [item_id for _path, _seed, item_id in kept]}
    parameters = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
    return {"images": [b64(png) for png in kept_pngs(kept)], "parameters": parameters, "info": json.dumps(info)}


class Options:
    """What /options says and sets: the default image model of these routes. Owners set it (it is then loaded, so
    guests may use it too); it is kept in `<outputs>/settings/sdapi-options.json`, beside the styles and keys, so
    it outlives a restart (the studio's settings file and flags are the owner's own, read-only to the server).
    After a restart the saved model loads on its first use by an owner; guests may use it once it is loaded."""

    def __init__(self, services) -> None:
        self.services = services
        self.path = Path(services.settings.outputs) / "settings" / "sdapi-options.json"
        self.model = self._read().get("sd_model_checkpoint") or ""

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def set_model(self, name: str) -> None:
        self.model = name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self._read(), "sd_model_checkpoint": name}, indent=1))
        os.replace(tmp, self.path)

    def checkpoint(self) -> str:
        return self.model or self.services.host.registry.default("image")


def made_until_interrupted(services, user: ApiUser, params: ImageParams, model: str, progress: Progress):
    """A1111's batch, `n_iter` runs of `batch_size` pictures, each run made and kept as the studio's one way
    (make_images), the seeds (and variation seeds) going on across runs as in one call. As AUTOMATIC1111 does:
    `interrupt` ends the batch and answers with the pictures of the runs finished before it, `skip` drops only the
    run it stops. Nothing finished: 409. A guest's time budget covers the whole batch. Returns (kept, seeds,
    pipe, the hires fix as it ran)."""
    from studio.compat.calls import Interrupted

    budget = services.settings.guest_job_seconds if user.guest else 0.0
    ran_out = threading.Event()
    timer = None
    if budget and params.batch_count > 1:
        timer = threading.Timer(budget, lambda: (ran_out.set(), services.jobs.cancel(user.session, "image")))
        timer.daemon = True
        timer.start()
    base = params.seed if params.seed is not None else random.SystemRandom().randrange(2**32 - 1024)
    size = params.batch_size
    kept: list = []
    seeds: list[int] = []
    pipe, hires = None, params.hires
    try:
        for run in range(params.batch_count):
            if progress.interrupted(user.session) or ran_out.is_set():
                break
            one = replace(params, batch_count=1, seed=(base + run * size) % 2**32,
                          variation_seed=None if params.variation_seed is None
                          else (params.variation_seed + run * size) % 2**32)

            def report(event, run=run):  # this run's steps as steps of the whole batch
                if isinstance(event, tuple) and len(event) >= 2:
                    event = (int(event[0]) + run * int(event[1]), int(event[1]) * params.batch_count, *event[2:])
                progress.step(user.session, event)
            try:
                made, out, pipe = make_pictures(services, user, one, model,
                                                report if progress.watched(user.session) else None)
            except Interrupted:
                continue  # interrupted (the loop ends above), skipped, or out of time
            kept += made
            seeds += list(out.seeds)
            hires = out.params.hires
    finally:
        if timer is not None:
            timer.cancel()
    if ran_out.is_set():
        raise ValueError(f"This request ran past the {budget:.0f} seconds a guest's request may take, and was "
                         "stopped. Ask for fewer or smaller pictures, or fewer steps.")
    if not kept:
        raise Interrupted()
    return kept, seeds, pipe, hires


def generate(services, user: ApiUser, body: dict, options: Options, progress: Progress, *, img2img: bool) -> dict:
    """txt2img / img2img: the studio's pictures for an A1111 body, kept in the caller's History."""
    start = mask = None
    if img2img:
        images = body.get("init_images")
        if not isinstance(images, list) or len(images) != 1:
            raise CompatError(400, "init_images: a list with one base64 picture", param="init_images")
        start = picture(services, images[0], "init_images[0]")
        if body.get("mask"):
            mask = picture(services, body["mask"], "mask", mode="L")
            if number(body, "inpainting_mask_invert", 0, 0, 1, whole=True):
                from PIL import ImageOps

                mask = ImageOps.invert(mask)
            if mask.size != start.size:
                mask = mask.resize(start.size)
    model = checkpoint_of(body, options.checkpoint())
    loaded = run_as(services, user, "image", lambda: services.host.image_pipeline(model).model)
    params = run_as(services, user, "image",  # as the caller: its ControlNet units are admitted for it
                    lambda: image_params(services, body, start=start, mask=mask, default_size=loaded.default_size,
                                         guest=user.guest))
    progress.start(user.session, params, loaded.family)
    try:
        kept, seeds, pipe, hires = made_until_interrupted(services, user, params, model, progress)
    finally:
        progress.finish(user.session)
    return answer(replace(params, hires=hires), kept, seeds, pipe, body)


def upscale_one(services, user: ApiUser, body: dict) -> dict:
    """extra-single-image: one picture upscaled (Lanczos or an upscaler model), kept in the caller's History."""
    source = picture(services, body.get("image") or "", "image")
    name = text(body, "upscaler_1", "Lanczos", limit=200)
    params = UpscaleParams(number(body, "upscaling_resize", 2.0, 1.0, 8.0),
                           resolve_upscaler(services, "Lanczos" if name in ("", "None") else name, latent=False,
                                            field="upscaler_1"))
    params.check_size(*source.size)

    def work():
        return services.host.lanes.run("model", upscale, source, params, device=services.host.placement.device,
                                  allow_pickle=services.settings.allow_pickle, models=services.upscalers)
    result = run_as(services, user, "image", work, generation=True)
    data = png_bytes(result)
    keep_output(services, "image", {".png": data}, prompt="upscale",
                params={"upscale": params.scale, "upscaler": Path(params.upscaler).name, "size": list(result.size)},
                device=services.host.placement.describe(), owner=user.name, origin=upscaled_origin(source, params.upscaler))
    return {"html_info": "", "image": b64(data)}


def png_info(services, body: dict) -> dict:
    data = body.get("image")
    if not isinstance(data, str) or not data:
        raise CompatError(400, "image: a base64 PNG", param="image")
    import base64

    raw = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data)
    try:
        info = read_png_info(io.BytesIO(raw))
    except ValueError as exc:
        raise CompatError(400, f"image: {exc}", param="image") from None
    settings = info.get("settings") or {}
    parsed = {"Prompt": info.get("prompt") or "", "Negative prompt": info.get("negative_prompt") or "", **settings}
    items = {k: v for k, v in info.items() if k not in ("parameters",) and v and isinstance(v, (str, int, float))}
    return {"info": info.get("parameters") or "", "items": items, "parameters": parsed}


def listings(services, user: ApiUser, options: Options) -> dict:
    """The GET answers that list what the studio has (A1111's shapes)."""
    from studio.compat.openai import allowed_models

    models = [{"title": name, "model_name": name, "hash": None, "sha256": None,
               "filename": name if user.guest else services.host.registry.all_by_name()[name].location, "config": None}
              for name in allowed_models(services, user, "image")]
    return {
        "sd-models": models,
        "samplers": [{"name": name, "aliases": [], "options": {}} for name in SCHEDULERS],
        "schedulers": [{"name": name, "label": name.title(), "aliases": None, "default_rho": -1,
                        "need_inner_model": False} for name in ("automatic", "karras")],
        "loras": [{"name": name, "alias": name, "path": path.name if user.guest else str(path),
                   "metadata": {} if user.guest else lora_metadata(path)}
                  for name, path in lora_files(services).items()],
        "upscalers": [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
                      *({"name": Path(c).name, "model_name": Path(c).stem, "model_path": None, "model_url": None,
                         "scale": 4} for c in upscaler_choices(services, latent=False))],
        "options": {"sd_model_checkpoint": options.checkpoint(), "samples_format": "png",
                    "sd_checkpoint_hash": None},
        "scripts": {"txt2img": [], "img2img": []},
    }


def set_options(services, user: ApiUser, body: dict, options: Options) -> bool:
    """POST /options (owners only): sd_model_checkpoint becomes these routes' default model, loaded now."""
    services.access.require_owner(user.name, "change the studio's options")
    name = body.get("sd_model_checkpoint")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise CompatError(400, "sd_model_checkpoint: a model name (see /sdapi/v1/sd-models)",
                              param="sd_model_checkpoint")
        name = name.split(" [")[0].strip()
        run_as(services, user, "image", lambda: services.host.image_pipeline(name))
        options.set_model(name)
    return True


def router(services, current_user) -> APIRouter:
    from starlette.concurrency import run_in_threadpool

    api = APIRouter(prefix="/sdapi/v1", route_class=route_class(error_shape, bad_input=422))
    options, progress = Options(services), Progress()

    @api.post("/txt2img")
    async def txt2img(request: Request, user: ApiUser = Depends(current_user)):
        body = await json_body(request)
        return await run_in_threadpool(generate, services, user, body, options, progress, img2img=False)

    @api.post("/img2img")
    async def img2img(request: Request, user: ApiUser = Depends(current_user)):
        body = await json_body(request)
        return await run_in_threadpool(generate, services, user, body, options, progress, img2img=True)

    @api.post("/extra-single-image")
    async def extra_single_image(request: Request, user: ApiUser = Depends(current_user)):
        return await run_in_threadpool(upscale_one, services, user, await json_body(request))

    @api.post("/png-info")
    async def png_info_route(request: Request, user: ApiUser = Depends(current_user)):
        return png_info(services, await json_body(request))

    def listing(name: str):
        def answer_listing(user: ApiUser = Depends(current_user)):
            return listings(services, user, options)[name]
        return answer_listing

    for name in ("sd-models", "samplers", "schedulers", "loras", "upscalers", "options", "scripts"):
        api.add_api_route(f"/{name}", listing(name), methods=["GET"], name=f"a1111_{name}")

    @api.post("/options")
    async def post_options(request: Request, user: ApiUser = Depends(current_user)):
        return await run_in_threadpool(set_options, services, user, await json_body(request), options)

    @api.get("/progress")
    def get_progress(user: ApiUser = Depends(current_user)):
        return progress.of(user.session)

    def interrupt(user: ApiUser = Depends(current_user)):
        """Stop the caller's own running image job, no one else's: the batch ends, with the pictures of its runs
        finished so far."""
        if services.jobs.cancel(user.session, "image") or progress.running(user.session):
            progress.mark_interrupted(user.session)
        return {}

    def skip(user: ApiUser = Depends(current_user)):
        """Stop the run of the caller's own batch that is being made; the batch goes on with its next run."""
        services.jobs.cancel(user.session, "image")
        return {}
    api.add_api_route("/interrupt", interrupt, methods=["POST"], name="a1111_interrupt")
    api.add_api_route("/skip", skip, methods=["POST"], name="a1111_skip")
    return api

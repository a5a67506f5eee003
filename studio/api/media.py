"""Public API: text and images (generate_text, chat, generate_image, plot_xyz, png_info, …)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import gradio as gr
from gradio import FileData

from pipelines.checks import check_int
from pipelines.image import GenerationCancelled, ImageParams, lora_set, open_user_image
from pipelines.image_plot import PlotParams
from pipelines.image_prompt import Style
from pipelines.image_regions import regions_from_layout
from pipelines.image_upscale import HiresParams, OutpaintParams, UpscaleParams, upscale
from pipelines.media import png_bytes, read_png_info
from studio.actions.images import check_loras, check_pictures, control_units, image_prompt, loras_from, make_images, make_plot
from studio.actions.library import resolve_upscaler, save_shared_style, style_named, upscaled_origin, verify_file, verify_summary
from studio.actions.text import build_params, run_text
from studio.api.common import file_path, files, seed_or_random, unsaved
from studio.api.registry import documented, endpoint
from studio.events import keep_output, session_of, user_of
from studio.services import Services


# -- text ---------------------------------------------------------------------------------------------------------


@endpoint("generate_text", concurrency="text", tab="text", counted=True)
def generate_text(
    services: Services,
    prompt: str,
    mode: str = "completion",
    system_prompt: str = "",
    model: str = "",
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    top_k: int = 50,
    repetition_penalty: float = 1.1,
    stop: str = "",
    seed: int = -1,
    backend: str = "",
    min_p: float = 0.0,
    request: gr.Request = None,
) -> Iterator[tuple[str, str]]:
    """Generate text, streamed: each update is (text so far, status); the last status is JSON.

    Args:
        prompt: the text to continue (completion) or the message to answer (chat).
        mode: "completion" or "chat" (the model's chat template).
        system_prompt: chat only: instructions placed before the conversation.
        model: a listed text model, a hub id, a local folder or .gguf file; empty = the default.
        max_new_tokens: 1 to the server's limit (1024 by default).
        temperature: 0 to 5; 0 = greedy (always the same text).
        top_p: nucleus sampling mass, above 0 and up to 1.
        top_k: keep the k most likely tokens; 0 = off.
        repetition_penalty: 0.5 to 3; 1 = off.
        stop: stop strings, comma-separated; \\n for a newline.
        seed: -1 = random; the seed used is in the status.
        backend: "auto", "llama.cpp" or "transformers"; empty = as configured.
        min_p: 0 to 1: drop tokens less likely than min_p × the likeliest one; 0 = off.
    """
    params = build_params(prompt, mode, system_prompt, (), max_new_tokens, temperature, top_p, top_k,
                          repetition_penalty, stop, seed_or_random("seed", seed), min_p=min_p)
    for text, stats in run_text(services, model, params, session_of(request), user_of(request), backend=backend):
        yield text, json.dumps(stats) if stats else ""


@endpoint("chat", concurrency="text", tab="text", counted=True)
def chat(
    services: Services,
    message: str,
    history: list[list[str]] | None = None,
    system_prompt: str = "",
    model: str = "",
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    top_k: int = 50,
    repetition_penalty: float = 1.1,
    stop: str = "",
    seed: int = -1,
    min_p: float = 0.0,
    continue_last: bool = False,
    request: gr.Request = None,
) -> dict:
    """One chat turn: the model's answer to `message` after the earlier turns in `history`.

    Args:
        message: the new user message.
        history: earlier turns as [role, text] pairs, role "user" or "assistant" (or "system").
        system_prompt: instructions placed before the conversation.
        model: a listed text model, a hub id, a local folder or .gguf file; empty = the default.
        max_new_tokens: 1 to the server's limit.
        temperature: 0 to 5; 0 = greedy.
        top_p: above 0 and up to 1.
        top_k: 0 = off.
        repetition_penalty: 0.5 to 3.
        stop: stop strings, comma-separated.
        seed: -1 = random.
        min_p: 0 to 1; 0 = off.
        continue_last: continue the last assistant turn in `history` (cut off earlier) instead of
            answering `message`, which may then be empty.

    Returns a JSON object: reply, history (with this turn added, or the last turn continued), seed,
    token counts, timings, history_id.
    """
    turns = []
    for i, turn in enumerate(history or []):
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise ValueError(f"history[{i}] must be a [role, text] pair")
        turns.append((str(turn[0]), str(turn[1])))
    params = build_params(message, "chat", system_prompt, tuple(turns), max_new_tokens, temperature, top_p,
                          top_k, repetition_penalty, stop, seed_or_random("seed", seed), min_p=min_p,
                          continue_last=continue_last)
    stats: dict = {}
    for _, stats in run_text(services, model, params, session_of(request), user_of(request)):
        pass
    if continue_last:
        updated = [list(t) for t in turns[:-1]] + [["assistant", turns[-1][1] + stats["text"]]]
    else:
        updated = [list(t) for t in turns] + [["user", message], ["assistant", stats["text"]]]
    return {"reply": stats["text"], "history": updated, **{k: v for k, v in stats.items() if k != "text"}}


@endpoint("stop_text", concurrency="unqueued")
def stop_text(services: Services, request: gr.Request = None) -> bool:
    """Stop your own running text generation, keeping what was written. Returns whether one ran."""
    return services.jobs.cancel(session_of(request), "text")


# -- images -------------------------------------------------------------------------------------------------------


GENERATE_IMAGE_DOC = """Text to image; image to image with `init_images`; inpainting with `init_images` and `mask`;
    outpainting with `init_images` and `outpaint`. Prompts take AUTOMATIC1111 weighting, e.g. (word:1.3).

    Args:
        prompt: what to draw (may be empty).
        negative_prompt: what to avoid.
        steps: 1 to the server's limit (150).
        cfg_scale: classifier-free guidance, 0 to 30.
        width: multiple of 8 from 64 to 2048; 0 = the model's own size.
        height: multiple of 8 from 64 to 2048; 0 = the model's own size.
        sampler_name: Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC or LCM.
        seed: -1 = random; images in a batch use seed, seed+1, …
        subseed: the variation seed (-1 = none), blended in by slerp (text to image only).
        subseed_strength: 0 to 1; 0 = the seed's image, 1 = the subseed's.
        batch_size: images per run, 1 to 8.
        n_iter: runs (batch count), 1 to 16.
        init_images: one start image (PNG/JPEG/WebP) for image to image or inpainting.
        mask: white = repaint (inpainting); same size as the start image.
        denoising_strength: image to image / inpainting strength, above 0 to 1.
        model: a listed image model, a diffusers folder, a .safetensors file or a hub id; empty = default.
        lora_files: LoRA .safetensors files.
        lora_weights: one weight per LoRA file, comma-separated (default 1).
        enable_hr: hires fix (text to image): make the picture, upscale it, refine it with a second pass.
        hr_scale: hires fix: upscale by, above 1 to 4.
        hr_upscaler: hires fix: Latent, Latent (nearest), Lanczos or an upscaler model's file name.
        hr_second_pass_steps: hires fix: the second pass's steps, 0 = as many as the first.
        hr_denoising_strength: hires fix: the second pass's denoising strength, above 0 to 1.
        styles: a style's name (see the Image tab's Style list); empty = none.
        outpaint: pixels to add as "left,right,up,down" (multiples of 8, up to 1024), with init_images.
        controlnet: ControlNet units as a JSON list, AUTOMATIC1111's names: [{"model": folder or hub id,
            "module": canny | lineart | scribble | sketch | depth | pose | none, "weight": 0-2,
            "guidance_start": 0-1,
            "guidance_end": 0-1, "threshold_a": canny low, "threshold_b": canny high}]; at most 3.
        controlnet_images: one picture per ControlNet unit (what its module reads; with "none", the control
            picture itself: a depth, normal or pose map).
        regions: regional prompts: "columns" or "rows" (empty = off); the prompt's parts between BREAKs are
            drawn side by side, e.g. prompt="a castle BREAK a dragon" (latent couple).
        regions_ratios: the parts' sizes, e.g. "2,1" (empty = equal).
        regions_weight: 0 to 1, how much each part keeps to its own prompt.
        ip_adapter: an image prompt's IP-Adapter: a hub file (e.g.
            h94/IP-Adapter/models/ip-adapter_sd15.safetensors) or a .safetensors file in the model folders with
            its image_encoder folder beside it.
        ip_adapter_image: the image prompt: a picture whose subject, look or style the picture follows.
        ip_adapter_weight: 0 to 2, how strongly the image prompt steers (0.5-0.8 keeps the words).

    Returns a JSON object (seeds, parameters, seconds, history_ids) and the PNG files, each carrying its
    parameters (AUTOMATIC1111 text, JSON, XMP).
    """


@endpoint("generate_image", concurrency="image", tab="image", counted=True)
@documented(GENERATE_IMAGE_DOC)
def generate_image(
    services: Services,
    prompt: str = "",
    negative_prompt: str = "",
    steps: int = 20,
    cfg_scale: float = 7.0,
    width: int = 0,
    height: int = 0,
    sampler_name: str = "DPM++ 2M",
    seed: int = -1,
    subseed: int = -1,
    subseed_strength: float = 0.0,
    batch_size: int = 1,
    n_iter: int = 1,
    init_images: list[FileData] | None = None,
    mask: FileData | None = None,
    denoising_strength: float = 0.75,
    model: str = "",
    lora_files: list[FileData] | None = None,
    lora_weights: str = "",
    enable_hr: bool = False,
    hr_scale: float = 2.0,
    hr_upscaler: str = "Latent",
    hr_second_pass_steps: int = 0,
    hr_denoising_strength: float = 0.5,
    styles: str = "",
    outpaint: str = "",
    controlnet: str = "",
    controlnet_images: list[FileData] | None = None,
    regions: str = "",
    regions_ratios: str = "",
    regions_weight: float = 1.0,
    ip_adapter: str = "",
    ip_adapter_image: FileData | None = None,
    ip_adapter_weight: float = 0.6,
    request: gr.Request = None,
) -> tuple[dict, list[FileData]]:
    limits = services.settings.image_limits
    check_int("steps", steps, 1, limits.max_steps)
    check_int("batch_size", batch_size, 1, limits.max_batch_size)
    check_int("n_iter", n_iter, 1, limits.max_batch_count)
    init, mask_image = _start_and_mask(init_images, mask, limits.max_image_pixels)
    loras = check_loras(services, lora_set(loras_from([file_path(f) for f in lora_files or []], lora_weights)))
    size = services.host.image_pipeline(model).model.default_size
    mode = "inpaint" if mask_image is not None else "img2img" if init is not None else "txt2img"
    extra = {"style": style_named(services, styles.strip()) if styles.strip() else None,
             **_hires(services, enable_hr, hr_scale, hr_upscaler, hr_second_pass_steps, hr_denoising_strength),
             **_outpaint(outpaint, init, mask_image), "loras": loras}
    if "outpaint" in extra:
        mode = "outpaint"
    extra |= _guides(services, prompt, regions, regions_ratios, regions_weight, controlnet, controlnet_images,
                     ip_adapter, ip_adapter_image, ip_adapter_weight)
    params = ImageParams(prompt=prompt or "", negative_prompt=negative_prompt or "", mode=mode, steps=steps,
                         guidance=float(cfg_scale), width=width or (init.width // 8 * 8 if init else size),
                         height=height or (init.height // 8 * 8 if init else size), scheduler=sampler_name,
                         seed=seed_or_random("seed", seed), variation_seed=seed_or_random("subseed", subseed),
                         variation_strength=float(subseed_strength), strength=float(denoising_strength),
                         batch_size=batch_size, batch_count=n_iter, init_image=init, mask=mask_image,
                         **extra)
    params.validate(limits)
    check_pictures(services, params)  # the caller's rules (a guest's LoRA files…) before anything loads
    try:
        kept, out, pipe = make_images(services, params, model, user_of(request), session_of(request))
    except GenerationCancelled:
        raise ValueError("cancelled: nothing was saved") from None
    return _generated(pipe, params, out, kept)


@endpoint("plot_xyz", concurrency="image", tab="image", counted=True)
def plot_xyz(
    services: Services,
    prompt: str = "",
    negative_prompt: str = "",
    steps: int = 20,
    cfg_scale: float = 7.0,
    width: int = 0,
    height: int = 0,
    sampler_name: str = "DPM++ 2M",
    seed: int = -1,
    model: str = "",
    styles: str = "",
    x_type: str = "CFG scale",
    x_values: str = "3, 5, 7.5",
    y_type: str = "Nothing",
    y_values: str = "",
    z_type: str = "Nothing",
    z_values: str = "",
    request: gr.Request = None,
) -> tuple[dict, FileData]:
    """An X/Y/Z plot (text to image): the same picture across the values of up to three settings, one
    picture per cell with one seed for all, drawn as one labelled grid. Each cell and the grid go to History.

    Args:
        prompt: what to draw; "Prompt S/R" replaces its first value by each value in turn.
        negative_prompt: what to avoid.
        steps: 1 to the server's limit (150).
        cfg_scale: classifier-free guidance, 0 to 30.
        width: multiple of 8 from 64 to 2048; 0 = the model's own size.
        height: multiple of 8 from 64 to 2048; 0 = the model's own size.
        sampler_name: Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC or LCM.
        seed: -1 = random (one seed for every cell).
        model: a listed image model, a diffusers folder, a .safetensors file or a hub id; empty = default.
        styles: a style's name; empty = none.
        x_type: Nothing, Prompt S/R, Seed, Steps, CFG scale, Sampler, Size, Denoising strength, Hires denoising strength, LoRA weight or Model.
        x_values: a list ("3, 5, 7") or a range ("1-5", "5-50 (+5)", "0.2-1 [5]"); at most 100 cells in all.
        y_type: as x_type (Nothing = no Y axis).
        y_values: as x_values.
        z_type: as x_type (Nothing = no Z axis).
        z_values: as x_values.

    Returns a JSON object (cells made, axes with their values, the seed, the plot's and each cell's History
    ids) and the plot PNG.
    """
    limits = services.settings.image_limits
    check_int("steps", steps, 1, limits.max_steps)
    plot = PlotParams.parse((x_type, x_values), (y_type, y_values), (z_type, z_values))
    size = services.host.image_pipeline(model).model.default_size
    base = ImageParams(prompt=prompt or "", negative_prompt=negative_prompt or "", steps=steps,
                       guidance=float(cfg_scale), width=width or size, height=height or size,
                       scheduler=sampler_name, seed=seed_or_random("seed", seed),
                       style=style_named(services, styles.strip()) if styles.strip() else None)
    base.validate(limits)
    made = make_plot(services, plot, base, model, {}, user_of(request), session_of(request))
    if not made["done"]:
        raise ValueError("cancelled before the first picture: nothing was saved")
    item = made["item"]
    path = str(services.history.path(item.files[0])) if item else unsaved({".png": png_bytes(made["picture"])})[0]
    return ({"cells": len(made["done"]), "total": made["total"], "stopped": made["stopped"], "axes": made["axes"],
             "seed": made["done"][0][1].seed, "history_id": item.id if item else None, "cell_ids": made["kept"]},
            FileData(path=str(path)))


@endpoint("cancel_image", concurrency="unqueued")
def cancel_image(services: Services, request: gr.Request = None) -> bool:
    """Cancel your own running image generation (another user's is never touched). Returns whether one ran."""
    return services.jobs.cancel(session_of(request), "image")


@endpoint("upscale_image", concurrency="image", tab="image", counted=True)
def upscale_image(services: Services, image: FileData, scale: float = 2.0, upscaler: str = "Lanczos",
                  request: gr.Request = None) -> tuple[dict, FileData]:
    """Upscale a picture by Lanczos or an upscaler model (Real-ESRGAN, SwinIR… in the upscalers folder).

    Args:
        image: the picture (PNG/JPEG/WebP).
        scale: upscale by, above 1 to 8 (the result stays within 16.8 megapixels).
        upscaler: Lanczos, or an upscaler model's file name.
    """
    picture, _ = open_user_image(file_path(image), services.settings.image_limits.max_image_pixels)
    params = UpscaleParams(float(scale), resolve_upscaler(services, upscaler, latent=False))
    params.check_size(*picture.size)
    out = services.host.lanes.run("model", upscale, picture, params, device=services.host.placement.device,
                                  allow_pickle=services.settings.allow_pickle, models=services.upscalers)
    item = keep_output(services, "image", {".png": png_bytes(out)}, prompt="upscale",
                       params={"upscale": float(scale), "upscaler": upscaler, "size": list(out.size)},
                       device=services.host.placement.describe(), owner=user_of(request),
                       origin=upscaled_origin(picture, upscaler))
    path = str(services.history.path(item.files[0])) if item else unsaved({".png": png_bytes(out)})[0]
    return {"size": list(out.size), "history_id": item.id if item else None}, FileData(path=str(path))


@endpoint("png_info")
def png_info(services: Services, image: FileData) -> dict:
    """The generation parameters stored in a PNG (ours or AUTOMATIC1111's).

    Args:
        image: a PNG file.
    """
    info = read_png_info(file_path(image))
    return {k: v for k, v in info.items() if v}


@endpoint("verify_image")
def verify_image(services: Services, image: FileData) -> dict:
    """Where a picture or video came from: its Content Credentials (C2PA: valid, tampered or none; who signed
    it; the model, parameters and start picture they record), the invisible watermark, and the
    AUTOMATIC1111 parameters; plus `summary`, the same verdict in plain words.

    Args:
        image: a PNG, JPEG, WebP, GIF or MP4 file.
    """
    report = verify_file(services, file_path(image))
    return {**report, "summary": verify_summary(report)}


@endpoint("save_style", tab="image", owners_only="save styles")
def save_style(services: Services, name: str, prompt: str = "{prompt}", negative_prompt: str = "",
               request: gr.Request = None) -> dict:
    """Save a style (owners only): a named prompt template that generate_image's `styles` applies. A style
    with the same name is replaced.

    Args:
        name: 1 to 60 characters.
        prompt: the template; `{prompt}` is replaced by the picture's prompt (appended when absent).
        negative_prompt: added to the picture's negative prompt.
    """
    created = Style(str(name).strip(), prompt or "{prompt}", negative_prompt or "")
    names = save_shared_style(services, created)
    return {"name": created.name, "prompt": created.prompt, "negative_prompt": created.negative, "styles": names}


def _hires(services, enable_hr: bool, scale, upscaler: str, steps: int, strength) -> dict:
    """The hires fix's settings ({} when it is off)."""
    if not enable_hr:
        return {}
    return {"hires": HiresParams(float(scale), resolve_upscaler(services, upscaler, latent=True, field="hr_upscaler"),
                                 steps, float(strength))}


def _outpaint(outpaint: str, init, mask_image) -> dict:
    """The pixels outpainting adds ({} when it is off); it grows the start image, with no mask."""
    if not outpaint.strip():
        return {}
    if init is None or mask_image is not None:
        raise ValueError("outpaint: give the picture to grow in init_images (and no mask)")
    return {"outpaint": OutpaintParams(*_ints("outpaint", outpaint, 4))}


def _guides(services, prompt: str, regions: str, regions_ratios: str, regions_weight, controlnet: str,
            controlnet_images, ip_adapter: str, ip_adapter_image, ip_adapter_weight) -> dict:
    """What steers a picture besides its prompt: regional prompts, ControlNet units and an image prompt."""
    max_pixels = services.settings.image_limits.max_image_pixels
    extra = {}
    if regions.strip():
        extra["regions"] = regions_from_layout(prompt or "", regions.strip().lower(), regions_ratios,
                                               float(regions_weight))
    extra["controls"] = control_units(services, controlnet, [
        open_user_image(file_path(f), max_pixels)[0] for f in controlnet_images or []])
    if ip_adapter_image is not None:
        extra["image_prompt"] = image_prompt(services, ip_adapter, ip_adapter_weight,
                                             open_user_image(file_path(ip_adapter_image), max_pixels)[0])
    elif ip_adapter.strip():
        raise ValueError("ip_adapter_image: give the image prompt's picture (or leave ip_adapter empty)")
    return extra


def _start_and_mask(init_images, mask, max_pixels: int):
    """The start image (image to image, inpainting, outpainting) and the inpainting mask, or None."""
    init = mask_image = None
    if init_images:
        if len(init_images) > 1:
            raise ValueError(f"init_images: give one start image, got {len(init_images)}")
        init, _ = open_user_image(file_path(init_images[0]), max_pixels)
    if mask is not None:
        if init is None:
            raise ValueError("mask: inpainting also needs the start image in init_images")
        mask_image, _ = open_user_image(file_path(mask), max_pixels, mode="L")
    return init, mask_image


def _generated(pipe, params, out, kept) -> tuple[dict, list[FileData]]:
    """Answer with the kept pictures' files and what made them."""
    paths = [k[0] if isinstance(k[0], str) else unsaved({".png": png_bytes(k[0])})[0] for k in kept]
    info = {"seeds": out.seeds, "seconds": round(out.seconds, 3), "history_ids": [k[2] for k in kept],
            "model": pipe.model.name, "notes": list(out.notes),
            "parameters": {"prompt": params.prompt, "negative_prompt": params.negative_prompt, "mode": params.mode,
                           "steps": params.steps, "cfg_scale": params.guidance, "width": params.width,
                           "height": params.height, "sampler_name": params.scheduler,
                           "denoising_strength": params.strength, "batch_size": params.batch_size,
                           "n_iter": params.batch_count}}
    return info, files(paths)


def _ints(field: str, text: str, count: int) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count or not all(p.isdigit() for p in parts):
        raise ValueError(f"{field}: {count} whole numbers separated by commas, e.g. 0,128,0,0; got {text[:60]!r}")
    return [int(p) for p in parts]

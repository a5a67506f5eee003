"""Public API: the workbench on any model kind (GAN, VAE or diffusion) — explore_walk, explore_directions,
explore_move, explore_map, explore_breed and explore_variations.

Every explore_* endpoint takes the same ten parameters for the model and, on a diffusion model, how its pictures
are drawn (the "look": steps, guidance, sampler, size, negative prompt, IP-Adapter). They are documented once
(`LOOK_DOC`, put into each docstring by `shared_doc`) and turned into a latent space once (`explore_space`); each
endpoint still lists them by name, because the API's parameter names and defaults are its contract.
"""

from __future__ import annotations

import math

import gradio as gr
from gradio import FileData

from pipelines.checks import short
from pipelines.image_latent import DiffusionLook
from pipelines.latent import (
    LatentPoint,
    WalkParams,
    breed,
    load_directions,
    map_points,
    move,
    points_bytes,
    save_directions,
    save_points,
    vary,
    walk,
    walk_quality,
)
from pipelines.media import gif_bytes, grid, mp4_bytes, png_bytes
from studio.actions import latent as ex
from studio.api.common import file_path, files, keep, seed_or_random
from studio.api.registry import endpoint, shared_doc
from studio.events import user_of
from studio.services import Services

KINDS = {"gan": "gan", "vae": "vae", "image": "diffusion", "diffusion": "diffusion"}

LOOK_MARKER = "{diffusion look}"
LOOK_DOC = """
    model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
    kind: gan, vae or diffusion, when `model` is not a listed one.
    steps: diffusion: denoising steps per picture, 1 to 150 (held fixed for every picture).
    cfg_scale: diffusion: guidance, 0 to 30.
    sampler_name: diffusion: Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC or LCM.
    width: diffusion: picture width, a multiple of 8; 0 = the model's own size.
    height: diffusion: picture height, a multiple of 8; 0 = the model's own size.
    negative_prompt: diffusion: what to avoid, for every picture.
    ip_adapter: diffusion: the IP-Adapter that reads points' image prompts (a hub file or a .safetensors
        file in the model folders); needed for latent files that carry one.
    ip_adapter_weight: diffusion: 0 to 2, how strongly image prompts steer.
"""


def kind_of(services: Services, model: str, kind: str) -> str:
    """The model kind: as given, else from the registry (listed models), else an error naming `kind`."""
    if kind:
        if kind not in KINDS:
            raise ValueError(f"kind must be gan, vae or diffusion, got {short(kind)}")
        return KINDS[kind]
    spec = services.host.registry.all_by_name().get(model or "")
    if spec is None:
        raise ValueError(f"kind: {model!r} is not a listed model, so say what it is: kind=gan, vae or diffusion")
    return KINDS[spec.modality]


def look_of(services: Services, model: str, kind: str, *, steps: int, cfg_scale: float, sampler_name: str,
            width: int, height: int, negative_prompt: str, ip_adapter: str = "",
            ip_adapter_weight: float = 0.6) -> DiffusionLook | None:
    """How a diffusion model's pictures are drawn, from the look parameters (None for a GAN or VAE)."""
    if kind_of(services, model, kind) != "diffusion":
        return None
    size = max(64, services.host.image_pipeline(model).model.default_size)
    return DiffusionLook(steps=steps, guidance=float(cfg_scale), scheduler=sampler_name, width=width or size,
                         height=height or size, negative_prompt=negative_prompt or "",
                         preview_steps=max(1, min(steps, 8)), ip_adapter=(ip_adapter or "").strip(),
                         ip_weight=float(ip_adapter_weight))


def explore_space(services: Services, model: str, kind: str, **look) -> ex.LatentModel:
    """The latent space an explore_* endpoint works in: `model` (empty = the default diffusion model) of `kind`,
    drawn with the look parameters (`look_of`'s keywords) when it is a diffusion model."""
    kind = kind or ("" if model else "diffusion")
    drawn = look_of(services, model or services.host.registry.default("image"), kind, **look)
    kind = kind_of(services, model, kind)
    default = services.host.registry.default("image" if kind == "diffusion" else kind)
    return ex.latent_model(services, model or default, kind, drawn if kind == "diffusion" else None)


def origin_of(model, origin: str, latent: FileData | None, prompt: str) -> LatentPoint:
    """The point to start from: a latent file, else "SEED" or "SEED: prompt"."""
    if latent is not None:
        return ex.points_from_files([file_path(latent)], model)[0]
    return ex.parse_keyframes(origin or "0", model, prompt)[0]


def directions_of(services: Services, model, method: str, count: int, origin, directions_file, positive="",
                  negative=""):
    """Directions from a file (explore_directions' result), else found now with `method`."""
    if directions_file is not None:
        found = load_directions(file_path(directions_file))
        if not found:
            raise ValueError("directions_file: no directions in this file (save some with explore_directions)")
        return found
    method = method or model.direction_methods[0]
    if method == "prompt-pair" and not (positive or negative):
        method = "h-space"
    # interactive: finding a slider's direction is part of moving it (beside a running job, not after it)
    return services.host.lanes.run("model", model.directions, method, count, origin, positive=positive,
                                   negative=negative, interactive=True)


def _numbers(name: str, text: str) -> list[float]:
    values = []
    for part in str(text or "").replace(";", ",").split(","):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{name}: {part.strip()[:20]!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{name}: values must be finite numbers")
        values.append(value)
    return values


@endpoint("explore_walk", concurrency="model", tab="explore", counted=True)
@shared_doc(LOOK_MARKER, LOOK_DOC)
def explore_walk(services: Services, model: str = "", keyframes: str = "1\n2", frames: int = 24,
                 ease: str = "ease-in-out", method: str = "slerp", text_method: str = "lerp", loop: bool = False,
                 fps: int = 12, latents: list[FileData] | None = None, prompt: str = "",
                 image_prompts: list[FileData] | None = None,
                 kind: str = "", steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M",
                 width: int = 0, height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                 ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """Seed and prompt travel: a walk through keyframes on any model (GAN, VAE or diffusion) as GIF + MP4.

    Args:
        keyframes: one per line: "SEED" or "SEED: prompt" (diffusion), e.g. "1: a red fox".
        frames: frames from each keyframe to the next, 1 to 240.
        ease: linear, ease-in-out, ease-in or ease-out.
        method: the noise/latent path, "slerp" (keeps noise noise-like) or "lerp".
        text_method: the prompt-embedding path, "lerp" or "slerp" (diffusion).
        loop: return to the first keyframe.
        fps: 1 to 60.
        latents: keyframes as .safetensors latent files (from other explore_* results), used instead of `keyframes`.
        prompt: the prompt for keyframes given without one (diffusion).
        image_prompts: diffusion, with `ip_adapter`: one picture per keyframe, its image prompt (a walk between
            two pictures morphs one into the other).
        {diffusion look}
    """
    m = explore_space(services, model, kind, steps=steps, cfg_scale=cfg_scale, sampler_name=sampler_name,
                      width=width, height=height, negative_prompt=negative_prompt, ip_adapter=ip_adapter,
                      ip_adapter_weight=ip_adapter_weight)
    keys = ex.points_from_files([file_path(f) for f in latents or []], m) or ex.parse_keyframes(keyframes, m, prompt)
    if image_prompts:
        keys = ex.with_image_prompts(services, m, keys, [file_path(f) for f in image_prompts])
    limit = services.settings.gan_limits.max_frames * (2 if m.kind == "diffusion" else 10)
    params = WalkParams(frames=(frames,), ease=ease, method=method, text_method=text_method, loop=bool(loop),
                        fps=fps, max_total=limit)
    points = walk(keys, params)
    images = ex.render(services, m, points, interactive=False)
    scale = max(1, 256 // images.shape[1])
    quality = walk_quality(images)
    item_id, paths = keep(services, "explore", {".gif": gif_bytes(images, params.fps, loop=params.loop, scale=scale),
                                      ".mp4": mp4_bytes(images, params.fps, scale=scale),
                                      ".png": png_bytes(grid(images, min(12, len(images))))},
                          f"walk through {len(keys)} keyframes",
                          {"keyframes": [k.label for k in keys], "frames": frames, "ease": ease, "method": method,
                           "text_method": text_method, "loop": bool(loop), "fps": fps}, m)
    return {"frames": len(images), "keyframes": [k.label for k in keys], "history_id": item_id,
            "smoothness": round(quality["smoothness"], 4),
            "consistency": round(quality["consistency"], 4)}, files(paths)


@endpoint("explore_directions", concurrency="model", tab="explore", counted=True)
@shared_doc(LOOK_MARKER, LOOK_DOC)
def explore_directions(services: Services, model: str = "", method: str = "", count: int = 6, origin: str = "0",
                       positive: str = "", negative: str = "", prompt: str = "",
                       kind: str = "", steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M",
                       width: int = 0, height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                       ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """Find latent directions: GAN — ganspace, sefa; VAE — dimensions, pca; diffusion — prompt-pair, h-space.

    Args:
        method: see above; empty = the model kind's first one.
        count: 1 to 8 (prompt-pair: always one).
        origin: "SEED" or "SEED: prompt": where the hint pictures (and h-space samples' prompt) start.
        positive: prompt-pair: the side to move toward, e.g. "smiling".
        negative: prompt-pair: the side to move away from, e.g. "frowning".
        prompt: the origin's prompt when `origin` has none (diffusion).
        {diffusion look}

    Returns the directions' names, methods and spreads, the directions as a .safetensors file (give it to
    explore_move or explore_map) and a picture of what each does at −2, 0 and +2.
    """
    m = explore_space(services, model, kind, steps=steps, cfg_scale=cfg_scale, sampler_name=sampler_name,
                      width=width, height=height, negative_prompt=negative_prompt, ip_adapter=ip_adapter,
                      ip_adapter_weight=ip_adapter_weight)
    start = origin_of(m, origin, None, prompt)
    found = directions_of(services, m, method, count, start, None, positive, negative)
    path = services.history.root / "directions" / f"api-{ex.random_seed()}.safetensors"
    save_directions(found, path)
    hints = ex.hint_strip(services, m, start, found)
    item_id, paths = keep(services, "explore", {".png": png_bytes(hints), ".safetensors": path.read_bytes()},
                          f"{found[0].method} directions", {"method": found[0].method, "count": len(found),
                                                           "origin": start.label}, m)
    path.unlink(missing_ok=True)
    return {"directions": [{"name": d.name, "method": d.method, "space": d.space, "std": round(d.std, 5)}
                           for d in found], "history_id": item_id}, files(paths)


@endpoint("explore_move", concurrency="model", tab="explore")
@shared_doc(LOOK_MARKER, LOOK_DOC)
def explore_move(services: Services, model: str = "", origin: str = "0", amounts: str = "1.5",
                 directions_file: FileData | None = None, method: str = "", count: int = 6, positive: str = "",
                 negative: str = "", latent: FileData | None = None, prompt: str = "",
                 kind: str = "", steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M",
                 width: int = 0, height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                 ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """Move a point along directions (slider values) and render it: the API of the workbench's sliders.

    Args:
        origin: "SEED" or "SEED: prompt".
        amounts: slider values, comma-separated, −5 to 5, one per direction (missing ones are 0).
        directions_file: directions from explore_directions (.safetensors); else found with `method`.
        method: used when no directions_file is given.
        count: how many directions to find then.
        positive: prompt-pair method: toward this.
        negative: prompt-pair method: away from this.
        latent: start from this latent file instead of `origin`.
        prompt: the origin's prompt when `origin` has none (diffusion).
        {diffusion look}

    Returns the picture and the moved latent (.safetensors).
    """
    m = explore_space(services, model, kind, steps=steps, cfg_scale=cfg_scale, sampler_name=sampler_name,
                      width=width, height=height, negative_prompt=negative_prompt, ip_adapter=ip_adapter,
                      ip_adapter_weight=ip_adapter_weight)
    start = origin_of(m, origin, latent, prompt)
    found = directions_of(services, m, method, count, start, directions_file, positive, negative)
    values = _numbers("amounts", amounts)
    if len(values) > len(found):
        raise ValueError(f"amounts: {len(values)} values for {len(found)} directions")
    moved = move(start, found, values)
    image = ex.render(services, m, [moved])[0]
    stem = services.history.scratch_file(user_of(), "move", "")  # the caller's own folder, with a lifetime
    stem.with_suffix(".png").write_bytes(png_bytes(ex.picture(image, image.shape[0])))
    save_points([moved], stem.with_suffix(".safetensors"))
    return {"directions": [d.name for d in found], "amounts": values}, files(
        [stem.with_suffix(".png"), stem.with_suffix(".safetensors")])


@endpoint("explore_map", concurrency="model", tab="explore", counted=True)
@shared_doc(LOOK_MARKER, LOOK_DOC)
def explore_map(services: Services, model: str = "", origin: str = "0", x_direction: int = 0, y_direction: int = 1,
                directions_file: FileData | None = None, method: str = "", extent: float = 2.5, grid_size: int = 8,
                latent: FileData | None = None, prompt: str = "",
                kind: str = "", steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M",
                width: int = 0, height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """A map around a point over two directions, as one picture (top row = +extent on y), with its cells' latents.

    Args:
        origin: "SEED" or "SEED: prompt": the centre cell.
        x_direction: index of the direction along x.
        y_direction: index of the direction along y.
        directions_file: directions from explore_directions; else found with `method` (4 of them).
        method: used when no directions_file is given.
        extent: ± slider units each way, 0.1 to 5.
        grid_size: 2 to 24 cells a side.
        latent: centre on this latent file instead of `origin`.
        prompt: the origin's prompt when `origin` has none (diffusion).
        {diffusion look}
    """
    m = explore_space(services, model, kind, steps=steps, cfg_scale=cfg_scale, sampler_name=sampler_name,
                      width=width, height=height, negative_prompt=negative_prompt, ip_adapter=ip_adapter,
                      ip_adapter_weight=ip_adapter_weight)
    start = origin_of(m, origin, latent, prompt)
    found = directions_of(services, m, method, max(4, y_direction + 1, x_direction + 1), start, directions_file)
    for name, index in (("x_direction", x_direction), ("y_direction", y_direction)):
        if not 0 <= index < len(found):
            raise ValueError(f"{name} must be from 0 to {len(found) - 1}, got {index}")
    cells = map_points(start, found[x_direction], found[y_direction], float(extent), grid_size)
    images = ex.render(services, m, cells, interactive=False)
    item_id, paths = keep(services, "explore", {".png": png_bytes(grid(images, grid_size, pad=1)),
                                      ".safetensors": points_bytes(cells)},
                          f"map over {found[x_direction].name} × {found[y_direction].name}",
                          {"origin": start.label, "x": found[x_direction].name, "y": found[y_direction].name,
                           "extent": float(extent), "grid": grid_size}, m)
    return {"cells": len(cells), "x": found[x_direction].name, "y": found[y_direction].name,
            "history_id": item_id}, files(paths)


@endpoint("explore_breed", concurrency="model", tab="explore", counted=True)
@shared_doc(LOOK_MARKER, LOOK_DOC)
def explore_breed(services: Services, model: str = "", parents: str = "1\n2", children: int = 8, crossover: float = 0.5,
                  mutation: float = 0.05, seed: int = -1, latents: list[FileData] | None = None, prompt: str = "",
                  kind: str = "", steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M",
                  width: int = 0, height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                  ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """Children of two or more parents (crossover and mutation of their latents), as one picture + latents.

    Args:
        parents: one per line: "SEED" or "SEED: prompt".
        children: 1 to 16.
        crossover: 0 to 1, the share taken from parents other than the first.
        mutation: 0 to 1, the chance each number is drawn afresh.
        seed: -1 = random.
        latents: parents as latent files instead of `parents`.
        prompt: the parents' prompt when they have none (diffusion).
        {diffusion look}
    """
    m = explore_space(services, model, kind, steps=steps, cfg_scale=cfg_scale, sampler_name=sampler_name,
                      width=width, height=height, negative_prompt=negative_prompt, ip_adapter=ip_adapter,
                      ip_adapter_weight=ip_adapter_weight)
    keys = ex.points_from_files([file_path(f) for f in latents or []], m) or ex.parse_keyframes(parents, m, prompt)
    seed = seed_or_random("seed", seed)
    seed = seed if seed is not None else ex.random_seed()
    kids = breed(keys, children, float(crossover), float(mutation), seed,
                 max_children=services.settings.gan_limits.max_children)
    images = ex.render(services, m, kids, interactive=False)
    item_id, paths = keep(services, "explore", {".png": png_bytes(grid(images, min(8, len(kids)))),
                                      ".safetensors": points_bytes(kids)},
                          f"brood of {len(keys)} parents", {"parents": [k.label for k in keys],
                                                            "crossover": float(crossover),
                                                            "mutation": float(mutation), "breed_seed": seed}, m)
    return {"children": len(kids), "breed_seed": seed, "history_id": item_id}, files(paths)


@endpoint("explore_variations", concurrency="model", tab="explore", counted=True)
@shared_doc(LOOK_MARKER, LOOK_DOC)
def explore_variations(services: Services, model: str = "", origin: str = "0", strength: float = 0.25, count: int = 8,
                       seed: int = -1, latent: FileData | None = None, prompt: str = "",
                       kind: str = "", steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M",
                       width: int = 0, height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                       ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """Variations of a point: its noise/latent turned toward fresh draws by `strength`.

    Args:
        origin: "SEED" or "SEED: prompt".
        strength: 0 to 1.
        count: 1 to 16.
        seed: -1 = random.
        latent: start from this latent file instead of `origin`.
        prompt: the origin's prompt when it has none (diffusion).
        {diffusion look}
    """
    m = explore_space(services, model, kind, steps=steps, cfg_scale=cfg_scale, sampler_name=sampler_name,
                      width=width, height=height, negative_prompt=negative_prompt, ip_adapter=ip_adapter,
                      ip_adapter_weight=ip_adapter_weight)
    if not 1 <= count <= services.settings.gan_limits.max_children:
        raise ValueError(f"count must be from 1 to {services.settings.gan_limits.max_children}, got {count}")
    start = origin_of(m, origin, latent, prompt)
    seed = seed_or_random("seed", seed)
    seed = seed if seed is not None else ex.random_seed()
    points = vary(start, float(strength), count, seed)
    images = ex.render(services, m, points, interactive=False)
    item_id, paths = keep(services, "explore", {".png": png_bytes(grid(images, min(8, count))),
                                      ".safetensors": points_bytes(points)},
                          f"variations of {start.label}", {"origin": start.label, "strength": float(strength),
                                                          "variation_seed": seed}, m)
    return {"count": count, "variation_seed": seed, "history_id": item_id}, files(paths)

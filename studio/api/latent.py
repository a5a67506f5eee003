"""Public API: latent spaces — GAN and VAE endpoints and the workbench's explore_* on any model kind."""

from __future__ import annotations

import math
from types import SimpleNamespace

import gradio as gr
import numpy as np
from gradio import FileData

from pipelines.checks import check_int, short
from pipelines.gan import GANParams, InterpolationParams
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
from pipelines.vae import MapParams, MorphParams
from studio import explore as ex
from studio.api.media import _path, files, seed_or_random, unsaved
from studio.actions.vae import train_vae_model, uploads
from studio.events import friendly_errors, guarded, keep_output, user_of

KINDS = {"gan": "gan", "vae": "vae", "image": "diffusion", "diffusion": "diffusion"}


def kind_of(services, model: str, kind: str) -> str:
    """The model kind: as given, else from the registry (listed models), else an error naming `kind`."""
    if kind:
        if kind not in KINDS:
            raise ValueError(f"kind must be gan, vae or diffusion, got {short(kind)}")
        return KINDS[kind]
    spec = services.host.registry.all_by_name().get(model or "")
    if spec is None:
        raise ValueError(f"kind: {model!r} is not a listed model, so say what it is: kind=gan, vae or diffusion")
    return KINDS[spec.modality]


def latent_options(services) -> dict:
    """GAN and VAE endpoints: one at a time on the model thread in-process; with the Ray model tier, as many
    as its replicas take (their own concurrency group)."""
    remote = services.settings.ray.runs("latent")
    return dict(concurrency_limit=services.host.latent_concurrency, concurrency_id="latent" if remote else "model")


def endpoints(services) -> list[tuple[str, object, dict]]:
    tools = _tools(services)
    return [endpoint for group in (_gan_endpoints, _vae_endpoints, _vae_model_endpoints, _explore_walk_endpoints,
                                  _explore_path_endpoints, _explore_space_endpoints, _explore_variation_endpoints)
            for endpoint in group(services, tools)]


def _tools(services) -> SimpleNamespace:
    """What the GAN, VAE and explore_* endpoints share: latent spaces, render settings, History."""
    history = services.history

    def space(model: str, kind: str, look: DiffusionLook | None = None):
        kind = kind_of(services, model, kind)
        default = services.host.registry.default("image" if kind == "diffusion" else kind)
        return ex.latent_model(services, model or default, kind, look if kind == "diffusion" else None)

    def look_of(model: str, kind: str, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                ip_adapter="", ip_adapter_weight=0.6):
        if kind_of(services, model, kind) != "diffusion":
            return None
        size = max(64, services.host.image_pipeline(model).model.default_size)
        return DiffusionLook(steps=steps, guidance=float(cfg_scale), scheduler=sampler_name, width=width or size,
                             height=height or size, negative_prompt=negative_prompt or "",
                             preview_steps=max(1, min(steps, 8)), ip_adapter=(ip_adapter or "").strip(),
                             ip_weight=float(ip_adapter_weight))

    def keep(tab: str, outputs: dict, prompt: str, params: dict, request, model) -> tuple[str | None, list]:
        item = keep_output(services, tab, outputs, prompt=prompt, params={**params, "model": model.name},
                           model=model.name, device=services.host.placement.describe(), owner=user_of(request))
        if item is None:  # not saved (a full disk): the caller still gets the files
            return None, unsaved(outputs)
        return item.id, [history.path(f) for f in item.files]

    def latents_bytes(points: list[LatentPoint]) -> bytes:
        return points_bytes(points)

    def origin_of(model, origin: str, latent: FileData | None, prompt: str) -> LatentPoint:
        if latent is not None:
            return ex.points_from_files([_path(latent)], model)[0]
        return ex.parse_keyframes(origin or "0", model, prompt)[0]

    def directions_of(model, method: str, count: int, origin, directions_file, positive="", negative=""):
        if directions_file is not None:
            found = load_directions(_path(directions_file))
            if not found:
                raise ValueError("directions_file: no directions in this file (save some with explore_directions)")
            return found
        method = method or model.direction_methods[0]
        if method == "prompt-pair" and not (positive or negative):
            method = "h-space"
        # interactive: finding a slider's direction is part of moving it (beside a running job, not after it)
        return services.host.lanes.run("model", model.directions, method, count, origin, positive=positive,
                                  negative=negative, interactive=True)

    def vae_pictures(p, images):
        """Uploaded pictures at the VAE's size, and notes on what was changed to fit."""
        return uploads(services, [_path(f) for f in images or []], p.model.size)

    def default_space(model: str, kind: str, *look_values):
        kind = kind or ("" if model else "diffusion")
        look = look_of(model or services.host.registry.default("image"), kind, *look_values)
        return space(model, kind, look)

    return SimpleNamespace(space=space, look_of=look_of, keep=keep, latents_bytes=latents_bytes,
                           origin_of=origin_of, directions_of=directions_of, default_space=default_space,
                           vae_pictures=vae_pictures)


def _gan_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """GAN sampling and walks."""
    gan_limits = services.settings.gan_limits
    keep, latents_bytes = t.keep, t.latents_bytes

    @friendly_errors
    @guarded(services, "gan", generation=True)
    def gan_sample(model: str = "", seed: int = 0, grid_size: int = 4, truncation: float = 1.0,
                   request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """A grid of GAN samples, one seed per cell (seed, seed+1, … row by row).

        Args:
            model: a listed GAN, or a .safetensors generator with a .json config; empty = the default.
            seed: the first seed, 0 to 4,294,967,295.
            grid_size: N for an N×N grid, 1 to the server's limit (8).
            truncation: ψ, 0 to 1.5: toward the prior's centre (0) or away from it (above 1).

        Returns a JSON object (seeds, history_id) and two files: the grid picture and its latents (.safetensors).
        """
        check_int("grid_size", grid_size, 1, gan_limits.max_grid)
        pipe = services.host.gan_pipeline(model)
        params = GANParams(seed=seed, grid=grid_size, truncation=float(truncation))
        params.validate(gan_limits)
        out = services.host.lanes.run("model", pipe, params)
        m = ex.latent_model(services, pipe.model.name, "gan")
        points = [LatentPoint(z, model=m.name, label=f"seed {s}") for z, s in zip(out.latents, out.seeds)]
        item_id, paths = keep("gan", {".png": png_bytes(grid(out.images, params.grid)), ".safetensors": latents_bytes(points)},
                              f"grid from seed {params.seed}", {"seed": params.seed, "grid": params.grid,
                                                                "truncation": params.truncation}, request, m)
        return {"seeds": out.seeds, "history_id": item_id, "model": m.name}, files(paths)

    @friendly_errors
    @guarded(services, "gan", generation=True)
    def gan_interpolate(model: str = "", keyframes: str = "1, 2, 3", frames: int = 32, method: str = "slerp",
                        ease: str = "ease-in-out", loop: bool = True, fps: int = 12, truncation: float = 1.0,
                        request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """A walk through seeds as GIF and MP4.

        Args:
            model: a listed GAN or a generator file; empty = the default.
            keyframes: 2 to 16 seeds, comma-separated, visited in order.
            frames: frames in the whole walk, 2 to the server's limit (240).
            method: "slerp" or "lerp".
            ease: linear, ease-in-out, ease-in or ease-out.
            loop: return to the first keyframe (a seamless loop).
            fps: 1 to 60.
            truncation: ψ applied to every keyframe, 0 to 1.5.
        """
        check_int("frames", frames, 2, gan_limits.max_frames)
        pipe = services.host.gan_pipeline(model)
        seeds = tuple(seed_or_random("keyframes", s.strip()) for s in str(keyframes).split(",") if s.strip())
        params = InterpolationParams(keyframes=seeds, frames=frames, method=method, ease=ease, loop=bool(loop),
                                     truncation=float(truncation), fps=fps)
        params.validate(gan_limits)
        out = services.host.lanes.run("model", pipe.interpolate, params)
        m = ex.latent_model(services, pipe.model.name, "gan")
        item_id, paths = keep("gan", {".gif": gif_bytes(out.images, params.fps, loop=params.loop, scale=4),
                                      ".mp4": mp4_bytes(out.images, params.fps, scale=4),
                                      ".png": png_bytes(grid(out.images, min(16, params.frames)))},
                              "walk through " + ", ".join(map(str, seeds)),
                              {"keyframes": list(seeds), "frames": params.frames, "method": params.method,
                               "ease": params.ease, "loop": params.loop, "fps": params.fps}, request, m)
        return {"frames": params.frames, "history_id": item_id, "model": m.name}, files(paths)

    options = latent_options(services)
    return [("gan_sample", gan_sample, options), ("gan_interpolate", gan_interpolate, options)]


def _vae_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """VAE morphs, maps, reconstructions, samples and training."""
    keep, vae_pictures = t.keep, t.vae_pictures

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def vae_interpolate(model: str = "", images: list[FileData] | None = None, random_samples: int = 0,
                        seed: int = 0, frames: int = 24, method: str = "slerp", ease: str = "ease-in-out",
                        fps: int = 12, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """A morph through a VAE's latent space (GIF, MP4, frame strip) beside a plain pixel crossfade.

        Args:
            model: a listed VAE, a diffusers AutoencoderKL folder or hub id; empty = the default.
            images: two or more pictures, in order.
            random_samples: with no images: this many random samples (2 to 8).
            seed: seed for the random samples.
            frames: 2 to 240.
            method: "slerp" or "lerp".
            ease: linear, ease-in-out, ease-in or ease-out.
            fps: 1 to 60.
        """
        p = services.host.vae_pipeline(model)
        params = MorphParams(frames=frames, method=method, ease=ease, fps=fps)
        pictures, notes = vae_pictures(p, images)
        if pictures is None:
            if not 2 <= random_samples <= 8:
                raise ValueError("images: give two or more images, or random_samples from 2 to 8")
            latent_frames, fade = services.host.lanes.run("model", p.morph_latents, p.model.prior(random_samples, seed), params)
        else:
            latent_frames, fade = services.host.lanes.run("model", p.morph, pictures, params)
        m = ex.latent_model(services, p.model.name, "vae")
        scale = max(1, 256 // p.model.size)
        item_id, paths = keep("vae", {".gif": gif_bytes(latent_frames, params.fps, scale=scale),
                                      ".mp4": mp4_bytes(latent_frames, params.fps, scale=scale),
                                      ".png": png_bytes(grid(np.concatenate([latent_frames, fade]), params.frames))},
                              "morph", {"frames": params.frames, "method": params.method, "ease": params.ease,
                                        "fps": params.fps}, request, m)
        return {"frames": params.frames, "history_id": item_id, "notes": notes,
                "strip": "top row: through latent space; bottom row: pixel crossfade"}, files(paths)

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def vae_map(model: str = "", grid_size: int = 12, extent: float = 2.5, axis_x: int = 0, axis_y: int = 1,
                reference_images: list[FileData] | None = None, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """A decoded grid over two latent axes, as one picture (top row = +extent on the y axis).

        Args:
            model: a listed VAE or a diffusers VAE; empty = the default.
            grid_size: 2 to 24 cells a side.
            extent: ± this many prior standard deviations (0.1 to 5).
            axis_x: a latent dimension (small vector latents) or a PCA direction index.
            axis_y: another one.
            reference_images: for PCA axes: 3 or more pictures (optional).
        """
        p = services.host.vae_pipeline(model)
        params = MapParams(grid=grid_size, extent=float(extent), axis_x=axis_x, axis_y=axis_y)
        reference, _ = vae_pictures(p, reference_images)
        axes = p.axes(reference)
        images = services.host.lanes.run("model", p.latent_map, params, axes=axes)
        m = ex.latent_model(services, p.model.name, "vae")
        item_id, paths = keep("vae", {".png": png_bytes(grid(images, params.grid, pad=1))},
                              f"latent map {params.grid}×{params.grid}",
                              {"grid": params.grid, "extent": params.extent, "axis_x": params.axis_x,
                               "axis_y": params.axis_y}, request, m)
        return {"cells": len(images), "history_id": item_id}, files(paths)

    options = latent_options(services)
    return [("vae_interpolate", vae_interpolate, options), ("vae_map", vae_map, options)]


def _vae_model_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """VAE reconstructions, prior samples and training your own."""
    keep, vae_pictures = t.keep, t.vae_pictures

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def vae_reconstruct(images: list[FileData], model: str = "", request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Encode → decode, with the PSNR of each picture; one picture of original | reconstruction pairs.

        Args:
            images: one or more pictures.
            model: a listed VAE or a diffusers VAE; empty = the default.
        """
        p = services.host.vae_pipeline(model)
        pictures, notes = vae_pictures(p, images)
        if pictures is None:
            raise ValueError("images: give one or more pictures to reconstruct")
        out, scores = services.host.lanes.run("model", p.reconstruct, pictures)
        pairs = np.stack([im for pair in zip(pictures, out) for im in pair])
        m = ex.latent_model(services, p.model.name, "vae")
        item_id, paths = keep("vae", {".png": png_bytes(grid(pairs, 8))}, "reconstruction", {"psnr": scores}, request, m)
        return {"psnr_db": [round(s, 2) for s in scores], "history_id": item_id, "notes": notes}, files(paths)

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def vae_sample(model: str = "", count: int = 16, seed: int = -1, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Pictures decoded from random latents (the prior).

        Args:
            model: a listed VAE or a diffusers VAE; empty = the default.
            count: 1 to 64.
            seed: -1 = random.
        """
        if not 1 <= count <= 64:
            raise ValueError(f"count must be from 1 to 64, got {count}")
        p = services.host.vae_pipeline(model)
        seed = seed_or_random("seed", seed)
        seed = seed if seed is not None else ex.random_seed()
        images = services.host.lanes.run("model", p.model.decode, p.model.prior(count, seed))
        m = ex.latent_model(services, p.model.name, "vae")
        item_id, paths = keep("vae", {".png": png_bytes(grid(images, 8))}, "prior samples", {"seed": seed}, request, m)
        return {"seed": seed, "history_id": item_id}, files(paths)

    @friendly_errors
    @guarded(services, "vae", owner_only="train models")
    def vae_train(name: str, images_zip: FileData | None = None, folder: str = "", size: int = 32,
                  channels: int = 3, latent_size: int = 16, epochs: int = 20, request: gr.Request = None) -> dict:
        """Train your own VAE on a folder of images on the server or an uploaded .zip (owners only); it then
        appears in the VAE list under `name`.

        Args:
            name: 1–40 letters, digits, - or _ (it names a folder).
            images_zip: a .zip of images (or use `folder`).
            folder: a folder of images on the server.
            size: image size, 28 to 64.
            channels: 3 (colour) or 1 (grey).
            latent_size: 2 to 64.
            epochs: 1 to 200.
        """

        source = _path(images_zip) if images_zip is not None else folder
        return train_vae_model(services, name, source, bool(images_zip), size, channels, latent_size, epochs,
                               user_of(request))

    options = latent_options(services)
    return [("vae_reconstruct", vae_reconstruct, options), ("vae_sample", vae_sample, options),
            ("vae_train", vae_train, dict(concurrency_limit=1, concurrency_id="vae-train"))]


def _explore_walk_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """The workbench on any model: walks through keyframes (seeds, prompts, image prompts or latent files)."""
    gan_limits = services.settings.gan_limits
    keep, default_space = t.keep, t.default_space

    @friendly_errors
    @guarded(services, "explore", generation=True)
    def explore_walk(model: str = "", keyframes: str = "1\n2", frames: int = 24, ease: str = "ease-in-out",
                     method: str = "slerp", text_method: str = "lerp", loop: bool = False, fps: int = 12,
                     latents: list[FileData] | None = None, prompt: str = "",
                     image_prompts: list[FileData] | None = None, kind: str = "", steps: int = 20,
                     cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M", width: int = 0, height: int = 0,
                     negative_prompt: str = "", ip_adapter: str = "",
            ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Seed and prompt travel: a walk through keyframes on any model (GAN, VAE or diffusion) as GIF + MP4.

        Args:
            model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
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
        m = default_space(model, kind, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                          ip_adapter, ip_adapter_weight)
        keys = ex.points_from_files([_path(f) for f in latents or []], m) or ex.parse_keyframes(keyframes, m, prompt)
        if image_prompts:
            keys = ex.with_image_prompts(services, m, keys, [_path(f) for f in image_prompts])
        limit = gan_limits.max_frames * (2 if m.kind == "diffusion" else 10)
        params = WalkParams(frames=(frames,), ease=ease, method=method, text_method=text_method, loop=bool(loop),
                            fps=fps, max_total=limit)
        points = walk(keys, params)
        images = ex.render(services, m, points, interactive=False)
        scale = max(1, 256 // images.shape[1])
        quality = walk_quality(images)
        item_id, paths = keep("explore", {".gif": gif_bytes(images, params.fps, loop=params.loop, scale=scale),
                                          ".mp4": mp4_bytes(images, params.fps, scale=scale),
                                          ".png": png_bytes(grid(images, min(12, len(images))))},
                              f"walk through {len(keys)} keyframes",
                              {"keyframes": [k.label for k in keys], "frames": frames, "ease": ease, "method": method,
                               "text_method": text_method, "loop": bool(loop), "fps": fps}, request, m)
        return {"frames": len(images), "keyframes": [k.label for k in keys], "history_id": item_id,
                "smoothness": round(quality["smoothness"], 4), "consistency": round(quality["consistency"], 4)}, files(paths)

    return [("explore_walk", explore_walk, dict(concurrency_limit=1, concurrency_id="model"))]


def _explore_path_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """The workbench on any model: directions and moves."""
    history = services.history
    keep, origin_of, directions_of, default_space = t.keep, t.origin_of, t.directions_of, t.default_space

    @friendly_errors
    @guarded(services, "explore", generation=True)
    def explore_directions(model: str = "", method: str = "", count: int = 6, origin: str = "0",
                           positive: str = "", negative: str = "", prompt: str = "", kind: str = "",
                           steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M", width: int = 0,
                           height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
            ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Find latent directions: GAN — ganspace, sefa; VAE — dimensions, pca; diffusion — prompt-pair, h-space.

        Args:
            model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
            method: see above; empty = the model kind's first one.
            count: 1 to 8 (prompt-pair: always one).
            origin: "SEED" or "SEED: prompt": where the hint pictures (and h-space samples' prompt) start.
            positive: prompt-pair: the side to move toward, e.g. "smiling".
            negative: prompt-pair: the side to move away from, e.g. "frowning".
            prompt: the origin's prompt when `origin` has none (diffusion).
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

        Returns the directions' names, methods and spreads, the directions as a .safetensors file (give it to
        explore_move or explore_map) and a picture of what each does at −2, 0 and +2.
        """
        m = default_space(model, kind, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                          ip_adapter, ip_adapter_weight)
        start = origin_of(m, origin, None, prompt)
        found = directions_of(m, method, count, start, None, positive, negative)
        path = history.root / "directions" / f"api-{ex.random_seed()}.safetensors"
        save_directions(found, path)
        hints = ex.hint_strip(services, m, start, found)
        item_id, paths = keep("explore", {".png": png_bytes(hints), ".safetensors": path.read_bytes()},
                              f"{found[0].method} directions", {"method": found[0].method, "count": len(found),
                                                               "origin": start.label}, request, m)
        path.unlink(missing_ok=True)
        return {"directions": [{"name": d.name, "method": d.method, "space": d.space, "std": round(d.std, 5)}
                               for d in found], "history_id": item_id}, files(paths)

    @friendly_errors
    @guarded(services, "explore")
    def explore_move(model: str = "", origin: str = "0", amounts: str = "1.5", directions_file: FileData | None = None,
                     method: str = "", count: int = 6, positive: str = "", negative: str = "",
                     latent: FileData | None = None, prompt: str = "", kind: str = "", steps: int = 20,
                     cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M", width: int = 0, height: int = 0,
                     negative_prompt: str = "", ip_adapter: str = "",
            ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Move a point along directions (slider values) and render it: the API of the workbench's sliders.

        Args:
            model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
            origin: "SEED" or "SEED: prompt".
            amounts: slider values, comma-separated, −5 to 5, one per direction (missing ones are 0).
            directions_file: directions from explore_directions (.safetensors); else found with `method`.
            method: used when no directions_file is given.
            count: how many directions to find then.
            positive: prompt-pair method: toward this.
            negative: prompt-pair method: away from this.
            latent: start from this latent file instead of `origin`.
            prompt: the origin's prompt when `origin` has none (diffusion).
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

        Returns the picture and the moved latent (.safetensors).
        """
        m = default_space(model, kind, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                          ip_adapter, ip_adapter_weight)
        start = origin_of(m, origin, latent, prompt)
        found = directions_of(m, method, count, start, directions_file, positive, negative)
        values = _numbers("amounts", amounts)
        if len(values) > len(found):
            raise ValueError(f"amounts: {len(values)} values for {len(found)} directions")
        moved = move(start, found, values)
        image = ex.render(services, m, [moved])[0]
        stem = history.scratch_file(user_of(), "move", "")  # the caller's own folder, with a lifetime
        stem.with_suffix(".png").write_bytes(png_bytes(ex.picture(image, image.shape[0])))
        save_points([moved], stem.with_suffix(".safetensors"))
        return {"directions": [d.name for d in found], "amounts": values}, files(
            [stem.with_suffix(".png"), stem.with_suffix(".safetensors")])

    options = dict(concurrency_limit=1, concurrency_id="model")
    return [("explore_directions", explore_directions, options), ("explore_move", explore_move, options)]


def _explore_space_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """The workbench on any model: maps and breeding."""
    gan_limits = services.settings.gan_limits
    keep, latents_bytes, default_space = t.keep, t.latents_bytes, t.default_space
    origin_of, directions_of = t.origin_of, t.directions_of

    @friendly_errors
    @guarded(services, "explore", generation=True)
    def explore_map(model: str = "", origin: str = "0", x_direction: int = 0, y_direction: int = 1,
                    directions_file: FileData | None = None, method: str = "", extent: float = 2.5, grid_size: int = 8,
                    latent: FileData | None = None, prompt: str = "", kind: str = "", steps: int = 20,
                    cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M", width: int = 0, height: int = 0,
                    negative_prompt: str = "", ip_adapter: str = "",
            ip_adapter_weight: float = 0.6, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """A map around a point over two directions, as one picture (top row = +extent on y), with its cells' latents.

        Args:
            model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
            origin: "SEED" or "SEED: prompt": the centre cell.
            x_direction: index of the direction along x.
            y_direction: index of the direction along y.
            directions_file: directions from explore_directions; else found with `method` (4 of them).
            method: used when no directions_file is given.
            extent: ± slider units each way, 0.1 to 5.
            grid_size: 2 to 24 cells a side.
            latent: centre on this latent file instead of `origin`.
            prompt: the origin's prompt when `origin` has none (diffusion).
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
        m = default_space(model, kind, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                          ip_adapter, ip_adapter_weight)
        start = origin_of(m, origin, latent, prompt)
        found = directions_of(m, method, max(4, y_direction + 1, x_direction + 1), start, directions_file)
        for name, index in (("x_direction", x_direction), ("y_direction", y_direction)):
            if not 0 <= index < len(found):
                raise ValueError(f"{name} must be from 0 to {len(found) - 1}, got {index}")
        cells = map_points(start, found[x_direction], found[y_direction], float(extent), grid_size)
        images = ex.render(services, m, cells, interactive=False)
        item_id, paths = keep("explore", {".png": png_bytes(grid(images, grid_size, pad=1)),
                                          ".safetensors": latents_bytes(cells)},
                              f"map over {found[x_direction].name} × {found[y_direction].name}",
                              {"origin": start.label, "x": found[x_direction].name, "y": found[y_direction].name,
                               "extent": float(extent), "grid": grid_size}, request, m)
        return {"cells": len(cells), "x": found[x_direction].name, "y": found[y_direction].name,
                "history_id": item_id}, files(paths)

    @friendly_errors
    @guarded(services, "explore", generation=True)
    def explore_breed(model: str = "", parents: str = "1\n2", children: int = 8, crossover: float = 0.5,
                      mutation: float = 0.05, seed: int = -1, latents: list[FileData] | None = None,
                      prompt: str = "", kind: str = "", steps: int = 20, cfg_scale: float = 7.0,
                      sampler_name: str = "DPM++ 2M", width: int = 0, height: int = 0, negative_prompt: str = "",
                      ip_adapter: str = "", ip_adapter_weight: float = 0.6,
                      request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Children of two or more parents (crossover and mutation of their latents), as one picture + latents.

        Args:
            model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
            parents: one per line: "SEED" or "SEED: prompt".
            children: 1 to 16.
            crossover: 0 to 1, the share taken from parents other than the first.
            mutation: 0 to 1, the chance each number is drawn afresh.
            seed: -1 = random.
            latents: parents as latent files instead of `parents`.
            prompt: the parents' prompt when they have none (diffusion).
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
        m = default_space(model, kind, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                          ip_adapter, ip_adapter_weight)
        keys = ex.points_from_files([_path(f) for f in latents or []], m) or ex.parse_keyframes(parents, m, prompt)
        seed = seed_or_random("seed", seed)
        seed = seed if seed is not None else ex.random_seed()
        kids = breed(keys, children, float(crossover), float(mutation), seed, max_children=gan_limits.max_children)
        images = ex.render(services, m, kids, interactive=False)
        item_id, paths = keep("explore", {".png": png_bytes(grid(images, min(8, len(kids)))),
                                          ".safetensors": latents_bytes(kids)},
                              f"brood of {len(keys)} parents", {"parents": [k.label for k in keys],
                                                                "crossover": float(crossover),
                                                                "mutation": float(mutation), "breed_seed": seed},
                              request, m)
        return {"children": len(kids), "breed_seed": seed, "history_id": item_id}, files(paths)

    options = dict(concurrency_limit=1, concurrency_id="model")
    return [("explore_map", explore_map, options), ("explore_breed", explore_breed, options)]


def _explore_variation_endpoints(services, t: SimpleNamespace) -> list[tuple[str, object, dict]]:
    """The workbench on any model: variations of a point."""
    gan_limits = services.settings.gan_limits
    keep, latents_bytes, default_space, origin_of = t.keep, t.latents_bytes, t.default_space, t.origin_of

    @friendly_errors
    @guarded(services, "explore", generation=True)
    def explore_variations(model: str = "", origin: str = "0", strength: float = 0.25, count: int = 8,
                           seed: int = -1, latent: FileData | None = None, prompt: str = "", kind: str = "",
                           steps: int = 20, cfg_scale: float = 7.0, sampler_name: str = "DPM++ 2M", width: int = 0,
                           height: int = 0, negative_prompt: str = "", ip_adapter: str = "",
                           ip_adapter_weight: float = 0.6,
                           request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """Variations of a point: its noise/latent turned toward fresh draws by `strength`.

        Args:
            model: any listed model (or a path/hub id with `kind`); empty = the default diffusion model.
            origin: "SEED" or "SEED: prompt".
            strength: 0 to 1.
            count: 1 to 16.
            seed: -1 = random.
            latent: start from this latent file instead of `origin`.
            prompt: the origin's prompt when it has none (diffusion).
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
        m = default_space(model, kind, steps, cfg_scale, sampler_name, width, height, negative_prompt,
                          ip_adapter, ip_adapter_weight)
        if not 1 <= count <= gan_limits.max_children:
            raise ValueError(f"count must be from 1 to {gan_limits.max_children}, got {count}")
        start = origin_of(m, origin, latent, prompt)
        seed = seed_or_random("seed", seed)
        seed = seed if seed is not None else ex.random_seed()
        points = vary(start, float(strength), count, seed)
        images = ex.render(services, m, points, interactive=False)
        item_id, paths = keep("explore", {".png": png_bytes(grid(images, min(8, count))),
                                          ".safetensors": latents_bytes(points)},
                              f"variations of {start.label}", {"origin": start.label, "strength": float(strength),
                                                              "variation_seed": seed}, request, m)
        return {"count": count, "variation_seed": seed, "history_id": item_id}, files(paths)

    options = dict(concurrency_limit=1, concurrency_id="model")
    return [("explore_variations", explore_variations, options)]


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


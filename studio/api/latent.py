"""Public API: GAN and VAE latent spaces — samples, walks, morphs, maps, reconstructions and training your own VAE.
The workbench's explore_* endpoints, on any model kind, are in `studio.api.explore`."""

from __future__ import annotations

import gradio as gr
import numpy as np
from gradio import FileData

from pipelines.checks import check_int
from pipelines.gan import GANParams, InterpolationParams
from pipelines.latent import LatentPoint, points_bytes
from pipelines.media import gif_bytes, grid, mp4_bytes, png_bytes
from pipelines.vae import MapParams, MorphParams
from studio.actions import latent as ex
from studio.actions.vae import train_vae_model, uploads
from studio.api.common import file_path, files, keep, seed_or_random
from studio.api.registry import endpoint
from studio.events import user_of
from studio.services import Services


def vae_pictures(services: Services, p, images):
    """Uploaded pictures at the VAE's size, and notes on what was changed to fit."""
    return uploads(services, [file_path(f) for f in images or []], p.model.size)


# -- GAN ------------------------------------------------------------------------------------------------------------


@endpoint("gan_sample", concurrency="latent", tab="gan", counted=True)
def gan_sample(services: Services, model: str = "", seed: int = 0, grid_size: int = 4, truncation: float = 1.0,
               request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """A grid of GAN samples, one seed per cell (seed, seed+1, … row by row).

    Args:
        model: a listed GAN, or a .safetensors generator with a .json config; empty = the default.
        seed: the first seed, 0 to 4,294,967,295.
        grid_size: N for an N×N grid, 1 to the server's limit (8).
        truncation: ψ, 0 to 1.5: toward the prior's centre (0) or away from it (above 1).

    Returns a JSON object (seeds, history_id) and two files: the grid picture and its latents (.safetensors).
    """
    check_int("grid_size", grid_size, 1, services.settings.gan_limits.max_grid)
    pipe = services.host.gan_pipeline(model)
    params = GANParams(seed=seed, grid=grid_size, truncation=float(truncation))
    params.validate(services.settings.gan_limits)
    out = services.host.lanes.run("model", pipe, params)
    m = ex.latent_model(services, pipe.model.name, "gan")
    points = [LatentPoint(z, model=m.name, label=f"seed {s}") for z, s in zip(out.latents, out.seeds)]
    item_id, paths = keep(services, "gan", {".png": png_bytes(grid(out.images, params.grid)),
                                            ".safetensors": points_bytes(points)},
                          f"grid from seed {params.seed}", {"seed": params.seed, "grid": params.grid,
                                                            "truncation": params.truncation}, m)
    return {"seeds": out.seeds, "history_id": item_id, "model": m.name}, files(paths)


@endpoint("gan_interpolate", concurrency="latent", tab="gan", counted=True)
def gan_interpolate(services: Services, model: str = "", keyframes: str = "1, 2, 3", frames: int = 32,
                    method: str = "slerp", ease: str = "ease-in-out", loop: bool = True, fps: int = 12,
                    truncation: float = 1.0, request: gr.Request = None) -> tuple[dict, list[FileData]]:
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
    check_int("frames", frames, 2, services.settings.gan_limits.max_frames)
    pipe = services.host.gan_pipeline(model)
    seeds = tuple(seed_or_random("keyframes", s.strip()) for s in str(keyframes).split(",") if s.strip())
    params = InterpolationParams(keyframes=seeds, frames=frames, method=method, ease=ease, loop=bool(loop),
                                 truncation=float(truncation), fps=fps)
    params.validate(services.settings.gan_limits)
    out = services.host.lanes.run("model", pipe.interpolate, params)
    m = ex.latent_model(services, pipe.model.name, "gan")
    item_id, paths = keep(services, "gan", {".gif": gif_bytes(out.images, params.fps, loop=params.loop, scale=4),
                                  ".mp4": mp4_bytes(out.images, params.fps, scale=4),
                                  ".png": png_bytes(grid(out.images, min(16, params.frames)))},
                          "walk through " + ", ".join(map(str, seeds)),
                          {"keyframes": list(seeds), "frames": params.frames, "method": params.method,
                           "ease": params.ease, "loop": params.loop, "fps": params.fps}, m)
    return {"frames": params.frames, "history_id": item_id, "model": m.name}, files(paths)


# -- VAE ------------------------------------------------------------------------------------------------------------


@endpoint("vae_interpolate", concurrency="latent", tab="vae", counted=True)
def vae_interpolate(services: Services, model: str = "", images: list[FileData] | None = None, random_samples: int = 0,
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
    pictures, notes = vae_pictures(services, p, images)
    if pictures is None:
        if not 2 <= random_samples <= 8:
            raise ValueError("images: give two or more images, or random_samples from 2 to 8")
        latent_frames, fade = services.host.lanes.run("model", p.morph_latents, p.model.prior(random_samples, seed),
                                                      params)
    else:
        latent_frames, fade = services.host.lanes.run("model", p.morph, pictures, params)
    m = ex.latent_model(services, p.model.name, "vae")
    scale = max(1, 256 // p.model.size)
    item_id, paths = keep(services, "vae", {".gif": gif_bytes(latent_frames, params.fps, scale=scale),
                                  ".mp4": mp4_bytes(latent_frames, params.fps, scale=scale),
                                  ".png": png_bytes(grid(np.concatenate([latent_frames, fade]), params.frames))},
                          "morph", {"frames": params.frames, "method": params.method, "ease": params.ease,
                                    "fps": params.fps}, m)
    return {"frames": params.frames, "history_id": item_id, "notes": notes,
            "strip": "top row: through latent space; bottom row: pixel crossfade"}, files(paths)


@endpoint("vae_map", concurrency="latent", tab="vae", counted=True)
def vae_map(services: Services, model: str = "", grid_size: int = 12, extent: float = 2.5, axis_x: int = 0,
            axis_y: int = 1, reference_images: list[FileData] | None = None,
            request: gr.Request = None) -> tuple[dict, list[FileData]]:
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
    reference, _ = vae_pictures(services, p, reference_images)
    axes = p.axes(reference)
    images = services.host.lanes.run("model", p.latent_map, params, axes=axes)
    m = ex.latent_model(services, p.model.name, "vae")
    item_id, paths = keep(services, "vae", {".png": png_bytes(grid(images, params.grid, pad=1))},
                          f"latent map {params.grid}×{params.grid}",
                          {"grid": params.grid, "extent": params.extent, "axis_x": params.axis_x,
                           "axis_y": params.axis_y}, m)
    return {"cells": len(images), "history_id": item_id}, files(paths)


@endpoint("vae_reconstruct", concurrency="latent", tab="vae", counted=True)
def vae_reconstruct(services: Services, images: list[FileData], model: str = "",
                    request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """Encode → decode, with the PSNR of each picture; one picture of original | reconstruction pairs.

    Args:
        images: one or more pictures.
        model: a listed VAE or a diffusers VAE; empty = the default.
    """
    p = services.host.vae_pipeline(model)
    pictures, notes = vae_pictures(services, p, images)
    if pictures is None:
        raise ValueError("images: give one or more pictures to reconstruct")
    out, scores = services.host.lanes.run("model", p.reconstruct, pictures)
    pairs = np.stack([im for pair in zip(pictures, out) for im in pair])
    m = ex.latent_model(services, p.model.name, "vae")
    item_id, paths = keep(services, "vae", {".png": png_bytes(grid(pairs, 8))}, "reconstruction", {"psnr": scores}, m)
    return {"psnr_db": [round(s, 2) for s in scores], "history_id": item_id, "notes": notes}, files(paths)


@endpoint("vae_sample", concurrency="latent", tab="vae", counted=True)
def vae_sample(services: Services, model: str = "", count: int = 16, seed: int = -1,
               request: gr.Request = None) -> tuple[dict, list[FileData]]:
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
    item_id, paths = keep(services, "vae", {".png": png_bytes(grid(images, 8))}, "prior samples", {"seed": seed}, m)
    return {"seed": seed, "history_id": item_id}, files(paths)


@endpoint("vae_train", concurrency="vae-train", tab="vae", owners_only="train models")
def vae_train(services: Services, name: str, images_zip: FileData | None = None, folder: str = "", size: int = 32,
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

    source = file_path(images_zip) if images_zip is not None else folder
    return train_vae_model(services, name, source, bool(images_zip), size, channels, latent_size, epochs,
                           user_of(request))

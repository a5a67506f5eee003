"""The VAE tab: morphs, a latent-space map, sliders, reconstructions, and training your own VAE."""

from __future__ import annotations

import json
import queue
import random
import re
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from pipelines.image import open_user_image
from pipelines.latent import EASES
from pipelines.media import gif_bytes, grid, mp4_bytes, png_bytes, upscale
from pipelines.registry import ModelSpec
from pipelines.vae import (
    MapParams,
    MorphParams,
    VAETrainParams,
    load_image_folder,
    prepare_images,
    train_conv_vae,
    trained_vae_folders,
)
from studio.services import Services
from studio.tabs.common import (
    TabHandle,
    as_int,
    friendly_errors,
    guarded,
    keep_output,
    parse_seed,
    session_of,
    user_of,
)

MAX_SLIDERS = 16


def _scale(size: int) -> int:
    return max(1, 256 // size)


def build(services: Services) -> TabHandle:
    registry = services.registry
    history = services.history
    models_dir = history.root / "vae-models"
    for folder in trained_vae_folders(models_dir):  # models trained earlier
        registry.add(ModelSpec(folder.name, "vae", "folder", str(folder), license="yours",
                               description="trained in the VAE tab"))

    current = gr.State(None)  # {"latent": [...], "shape": [...]} of the image under the sliders
    axes_state = gr.State(None)
    map_axes = gr.State(None)  # the axes the drawn map used, so a clicked cell opens exactly that latent

    model = gr.Dropdown(registry.names("vae"), value=registry.default("vae"), allow_custom_value=True, label="VAE", elem_id="vae-model",
                        info="Listed model, a diffusers AutoencoderKL folder or hub id (e.g. Stable Diffusion's VAE)")
    with gr.Tabs() as inner:
        with gr.Tab("Morph", id="morph"):
            with gr.Row():
                morph_files = gr.File(label="Two or more images (in order)", file_count="multiple",
                                      file_types=["image"], scale=2)
                with gr.Column(scale=1):
                    random_count = gr.Slider(0, 8, value=0, step=1, label="…or this many random samples", elem_id="vae-random",
                                             info="used when no images are given")
                    random_seed = gr.Textbox(value="0", label="Seed for random samples")
            with gr.Row():
                frames = gr.Slider(2, 240, value=24, step=1, label="Frames", elem_id="vae-frames")
                method = gr.Radio(["slerp", "lerp"], value="slerp", label="Path")
                ease = gr.Dropdown(list(EASES), value="ease-in-out", label="Easing")
                fps = gr.Slider(1, 60, value=12, step=1, label="FPS")
            morph = gr.Button("Morph", variant="primary", elem_id="vae-morph")
            morph_note = gr.Markdown()
            strip = gr.Gallery(label="Through latent space", columns=12, height=160, format="png")
            fade = gr.Gallery(label="Plain pixel crossfade, for comparison", columns=12, height=160, format="png")
            with gr.Row():
                animation = gr.Image(label="Animation", height=256, interactive=False)
                morph_out = gr.File(label="GIF / MP4", file_count="multiple", interactive=False, elem_id="vae-files")
        with gr.Tab("Map", id="map"):
            with gr.Row():
                map_grid = gr.Slider(2, 24, value=12, step=1, label="Cells per side", elem_id="vae-map-cells")
                extent = gr.Slider(0.5, 5, value=2.5, step=0.1, label="Range (± prior std)")
                axis_x = gr.Number(value=0, precision=0, label="X axis (dimension / PCA direction)")
                axis_y = gr.Number(value=1, precision=0, label="Y axis")
            map_refs = gr.File(label="Reference images for PCA axes (spatial VAEs; optional)", file_count="multiple",
                               file_types=["image"])
            draw_map = gr.Button("Draw map", variant="primary", elem_id="vae-map")
            map_gallery = gr.Gallery(label="Click a cell to open it in Sliders", columns=12, height=560, format="png",
                                     allow_preview=False, elem_id="vae-map-gallery")
        with gr.Tab("Sliders", id="sliders"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    slider_image = gr.Image(label="Current image", height=300, interactive=False)
                    with gr.Row():
                        slider_upload = gr.Image(label="Start from an image", type="filepath", height=160)
                        sample_btn = gr.Button("Start from a random sample")
                    to_morph = gr.Button("Add this image to the Morph images")
                with gr.Column(scale=2):
                    sliders = [gr.Slider(-4, 4, value=0, step=0.05, label=f"Direction {i + 1}", visible=False)
                               for i in range(MAX_SLIDERS)]
        with gr.Tab("Reconstruct", id="reconstruct"):
            with gr.Row():
                recon_in = gr.File(label="Images", file_count="multiple", file_types=["image"])
                with gr.Column():
                    recon_btn = gr.Button("Encode → decode", variant="primary")
                    prior_n = gr.Slider(1, 64, value=16, step=1, label="Samples from the prior")
                    prior_seed = gr.Textbox(value="", label="Seed (blank = random)")
                    prior_btn = gr.Button("Sample from the prior")
            recon_note = gr.Markdown()
            recon_gallery = gr.Gallery(label="Original | reconstruction", columns=8, height=320, format="png")
        with gr.Tab("Train your own", id="train"):
            with gr.Row():
                train_folder = gr.Textbox(label="Folder of images on this machine", scale=2)
                train_zip = gr.File(label="…or a .zip of images", file_types=[".zip"], scale=2)
                train_name = gr.Textbox(label="Model name", value="my-vae", scale=1)
            with gr.Row():
                train_size = gr.Slider(28, 64, value=32, step=4, label="Image size")
                train_colour = gr.Radio(["colour", "grey"], value="colour", label="Channels")
                train_latent = gr.Slider(2, 64, value=16, step=1, label="Latent size")
                train_epochs = gr.Slider(1, 200, value=20, step=1, label="Epochs")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary")
                train_cancel = gr.Button("Cancel (keeps the last finished epoch)", variant="stop")
            train_status = gr.Markdown()
            loss_plot = gr.LinePlot(x="epoch", y="loss", title="Loss per image (reconstruction + KL)", height=240)
            train_samples = gr.Gallery(label="Reconstructions of fixed images after each epoch", columns=8,
                                       height=160, format="png")

    def pipe(name):
        return services.vae_pipeline(name)

    def load_uploads(files, size):
        images = [open_user_image(f, services.settings.image_limits.max_image_pixels)[0] for f in files or []]
        return prepare_images(images, size) if images else (None, [])

    def save(files: dict, prompt: str, params: dict, request, model_name: str):
        return keep_output(services, "vae", files, prompt=prompt, params={**params, "model": model_name},
                           model=model_name, device=services.placement.describe(), owner=user_of(request))

    # -- morph -------------------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "vae", generation=True)
    def vae_interpolate(model_name: str, files, n_random: float, seed_text: str, n_frames: float, path_method: str,
                        ease_mode: str, rate: float, request: gr.Request):
        p = pipe(model_name)
        size = p.model.size
        params = MorphParams(frames=as_int("frames", n_frames), method=path_method, ease=ease_mode, fps=as_int("fps", rate))
        images, notes = load_uploads(files, size)
        if images is None:
            count = as_int("random samples", n_random)
            if count < 2:
                raise ValueError("images: upload two or more images, or ask for 2 or more random samples")
            images = p.model.decode(p.model.prior(count, parse_seed(seed_text) or 0))
        if len(images) < 2:
            raise ValueError("images: give at least two images to morph between")
        latent_frames, crossfade = p.morph(images, params)
        scale = _scale(size)
        item = save({".gif": gif_bytes(latent_frames, params.fps, scale=scale),
                     ".mp4": mp4_bytes(latent_frames, params.fps, scale=scale),
                     ".png": png_bytes(grid(latent_frames, min(12, params.frames)))},
                    f"morph of {len(images)} images", {"frames": params.frames, "method": params.method,
                                                       "ease": params.ease, "fps": params.fps}, request, p.model.name)
        files_out = [str(history.path(f)) for f in item.files] if item else []
        note = "; ".join(notes) if notes else ""
        return ([upscale(f, scale) for f in latent_frames], [upscale(f, scale) for f in crossfade],
                next((f for f in files_out if f.endswith(".gif")), None), [f for f in files_out if not f.endswith(".png")],
                note)

    # -- map ---------------------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "vae", generation=True)
    def vae_map(model_name: str, cells: float, spread: float, ax: float, ay: float, refs, request: gr.Request):
        p = pipe(model_name)
        params = MapParams(grid=as_int("grid", cells), extent=float(spread), axis_x=as_int("axis_x", ax),
                           axis_y=as_int("axis_y", ay))
        reference, _ = load_uploads(refs, p.model.size)
        axes = p.axes(reference)
        images = p.latent_map(params, axes=axes)
        save({".png": png_bytes(grid(images, params.grid, pad=1))}, f"latent map {params.grid}×{params.grid}",
             {"grid": params.grid, "extent": params.extent, "axis_x": params.axis_x, "axis_y": params.axis_y},
             request, p.model.name)
        drawn = {"model": p.model.name, "params": [params.grid, params.extent, params.axis_x, params.axis_y],
                 "axes": [t.tolist() for t in axes]}
        return [upscale(im, _scale(p.model.size) // 2 or 1) for im in images], drawn

    # -- sliders -----------------------------------------------------------------------------------
    def start_sliders(p, latent: torch.Tensor, reference=None, axes=None):
        origin, directions, std = axes or p.axes(reference)
        k = directions.shape[0]
        image = p.model.decode(latent[None])[0]
        state = {"latent": latent.flatten().tolist(), "shape": list(latent.shape)}
        axes = {"directions": directions.tolist(), "std": std.tolist()}
        label = "Dimension" if p.model.kind == "vector" and p.model.latent_dim <= 16 else "PCA direction"
        updates = [gr.Slider(value=0, visible=i < k, label=f"{label} {i + 1}") for i in range(MAX_SLIDERS)]
        return [upscale(image, _scale(p.model.size)), state, axes, *updates]

    @friendly_errors
    @guarded(services, "vae")
    def from_sample(model_name, request: gr.Request):
        p = pipe(model_name)
        return start_sliders(p, p.model.prior(1, random.SystemRandom().randrange(2**31))[0])

    @friendly_errors
    @guarded(services, "vae")
    def from_upload(model_name, path, request: gr.Request):
        if not path:
            return [gr.skip()] * (3 + MAX_SLIDERS)
        p = pipe(model_name)
        images, _ = load_uploads([path], p.model.size)
        return start_sliders(p, p.model.encode(images)[0])

    @friendly_errors
    @guarded(services, "vae")
    def from_map(evt: gr.SelectData, drawn, request: gr.Request):
        if not drawn:
            raise ValueError("Draw a map first, then click one of its cells.")
        p = pipe(drawn["model"])
        grid_, extent_, ax, ay = drawn["params"]
        axes = tuple(torch.tensor(t) for t in drawn["axes"])
        point = p.map_points(MapParams(grid=grid_, extent=extent_, axis_x=ax, axis_y=ay), axes)[evt.index]
        return [gr.Tabs(selected="sliders"), *start_sliders(p, point, axes=axes)]

    @friendly_errors
    @guarded(services, "vae")
    def slide(request: gr.Request, model_name, state, axes, *amounts):
        if not state or not axes:
            return gr.skip()
        p = pipe(model_name)
        directions, std = torch.tensor(axes["directions"]), torch.tensor(axes["std"])
        latent = torch.tensor(state["latent"]).view(state["shape"])
        image = p.slide(latent, directions, std, list(amounts[: directions.shape[0]]))
        return upscale(image, _scale(p.model.size))

    # -- reconstruct / prior -----------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "vae", generation=True)
    def reconstruct(model_name, files, request: gr.Request):
        p = pipe(model_name)
        images, notes = load_uploads(files, p.model.size)
        if images is None:
            raise ValueError("images: upload one or more images to reconstruct")
        recon, scores = p.reconstruct(images)
        pairs = [im for pair in zip(images, recon) for im in pair]
        save({".png": png_bytes(grid(np.stack(pairs), 8))}, "reconstruction", {"psnr": scores}, request,
             p.model.name)
        scale = _scale(p.model.size)
        note = f"PSNR per image: {', '.join(f'{s:.1f} dB' for s in scores)} (mean {np.mean(scores):.1f} dB)"
        return [(upscale(im, scale), ("original" if i % 2 == 0 else f"{scores[i // 2]:.1f} dB"))
                for i, im in enumerate(pairs)], note + ("; " + "; ".join(notes) if notes else "")

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def sample_prior(model_name, n, seed_text, request: gr.Request):
        p = pipe(model_name)
        seed = parse_seed(seed_text)
        seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        images = p.model.decode(p.model.prior(as_int("samples", n), seed))
        save({".png": png_bytes(grid(images, 8))}, "prior samples", {"seed": seed}, request, p.model.name)
        return [upscale(im, _scale(p.model.size)) for im in images], f"Seed {seed}"

    # -- training ----------------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "vae", owner_only="train models")
    def train(folder, zip_file, name, size, colour, latent, epochs, request: gr.Request):
        name = (name or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9][\w\-]{0,39}", name):
            raise ValueError("model name: 1–40 letters, digits, - or _ (it names a folder)")
        if name in {s.name for s in registry.all()} and registry.lookup(name, "vae").source != "folder":
            raise ValueError(f"model name {name!r} is taken by a built-in model; choose another")
        source = Path(zip_file) if zip_file else Path(folder or "").expanduser()
        if not zip_file and not (folder or "").strip():
            raise ValueError("images: give a folder of images or upload a .zip")
        params = VAETrainParams(size=as_int("size", size), channels=1 if colour == "grey" else 3,
                                latent_dim=as_int("latent size", latent), epochs=as_int("epochs", epochs))
        images, notes = load_image_folder(source, params.size)
        out = models_dir / name
        events: queue.Queue = queue.Queue()
        session = session_of(request)
        cancel = services.jobs.start(session, "vae-train")
        result: dict = {}

        def work():
            try:
                result["reports"] = train_conv_vae(params, images, out, device=services.placement.device,
                                                   on_epoch=events.put, cancel=cancel,
                                                   extra_config={"trained_on": str(source.name), "images": len(images)})
            except BaseException as exc:
                result["error"] = exc
            finally:
                events.put(None)

        thread = threading.Thread(target=work, name="vae-train", daemon=True)
        thread.start()
        curve = []
        note = f"Training on {len(images)} images" + (f" ({len(notes)} files skipped)" if notes else "")
        yield note + "…", None, None
        try:
            while (report := events.get()) is not None:
                curve.append({"epoch": report.epoch, "loss": report.loss})
                import pandas as pd

                yield (f"{note} · epoch {report.epoch}/{report.epochs} · loss {report.loss:.1f} "
                       f"(recon {report.recon:.1f} + KL {report.kl:.1f}) · {report.images_per_second:.0f} images/s",
                       pd.DataFrame(curve), [upscale(s, _scale(params.size)) for s in report.samples])
        finally:
            cancel.set()  # a closed page stops training too; harmless once it has finished
            thread.join()
            services.jobs.finish(session, "vae-train", cancel)
        if "error" in result:
            raise result["error"]
        done = len(result["reports"])
        if done == 0:
            yield "Cancelled before the first epoch finished: no model was saved.", gr.skip(), gr.skip()
            return
        registry.add(ModelSpec(name, "vae", "folder", str(out), license="yours", description="trained in the VAE tab"))
        services.cache.clear("vae")
        history.add("vae", {".json": json.dumps({"model": name, "epochs": done}).encode()},
                    prompt=f"trained VAE {name}", params={"size": params.size, "latent_dim": params.latent_dim,
                                                          "epochs": done, "images": len(images)},
                    model=name, device=services.placement.describe(), owner=user_of(request))
        yield (f"Saved **{name}** after {done} epoch(s) to `{out}`; it is now in the VAE list.", gr.skip(), gr.skip())

    def stop_training(request: gr.Request):
        services.jobs.cancel(session_of(request), "vae-train")

    def refresh_models():
        return gr.Dropdown(choices=registry.names("vae"))

    @friendly_errors
    @guarded(services, "vae")
    def add_to_morph(request: gr.Request, model_name, state, axes, current_files, *amounts):
        if not state:
            raise ValueError("Open an image in Sliders first (a map cell, an upload or a random sample).")
        p = pipe(model_name)
        latent = torch.tensor(state["latent"]).view(state["shape"])
        directions, std = torch.tensor(axes["directions"]), torch.tensor(axes["std"])
        image = p.slide(latent, directions, std, list(amounts[: directions.shape[0]]))
        path = history.root / "vae" / "sent" / f"slider-{abs(hash((tuple(state['latent']), amounts))) % 10**10}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(upscale(image, 1)))
        return gr.Tabs(selected="morph"), [*(current_files or []), str(path)]

    concurrency = dict(concurrency_limit=1, concurrency_id="vae")
    morph.click(vae_interpolate, [model, morph_files, random_count, random_seed, frames, method, ease, fps],
                [strip, fade, animation, morph_out, morph_note], api_name="vae_interpolate", **concurrency)
    draw_map.click(vae_map, [model, map_grid, extent, axis_x, axis_y, map_refs], [map_gallery, map_axes],
                   api_name="vae_map", **concurrency)
    slider_outputs = [slider_image, current, axes_state, *sliders]
    sample_btn.click(from_sample, model, slider_outputs, api_visibility="undocumented")
    slider_upload.upload(from_upload, [model, slider_upload], slider_outputs, api_visibility="undocumented")
    for s in sliders:
        s.change(slide, [model, current, axes_state, *sliders], slider_image, api_visibility="undocumented",
                 trigger_mode="always_last")
    to_morph.click(add_to_morph, [model, current, axes_state, morph_files, *sliders], [inner, morph_files],
                   api_visibility="undocumented")
    recon_btn.click(reconstruct, [model, recon_in], [recon_gallery, recon_note], api_name="vae_reconstruct",
                    **concurrency)
    prior_btn.click(sample_prior, [model, prior_n, prior_seed], [recon_gallery, recon_note], api_name="vae_sample",
                    **concurrency)
    train_btn.click(train, [train_folder, train_zip, train_name, train_size, train_colour, train_latent, train_epochs],
                    [train_status, loss_plot, train_samples], api_name="vae_train",
                    concurrency_limit=1, concurrency_id="vae-train").then(refresh_models, None, model,
                                                                           api_visibility="undocumented")
    train_cancel.click(stop_training, None, None, api_name="cancel_vae_training", queue=False)

    def restore(params: dict) -> list:
        return [params.get("model") or gr.skip()]

    map_gallery.select(from_map, [map_axes], [inner, *slider_outputs], api_visibility="undocumented")
    return TabHandle(restore_outputs=[model], restore=restore, receive_images=morph_files,
                     owner_controls=[model, train_btn])

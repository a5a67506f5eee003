"""The VAE tab: the latent workbench on VAEs (grids, dimension/PCA sliders, maps, walks, breeding,
pictures encoded), morphs beside their pixel crossfade, reconstructions, and training your own VAE."""

from __future__ import annotations

import queue
import threading

import gradio as gr
import numpy as np

from pipelines.latent import EASES
from pipelines.media import gif_bytes, grid, mp4_bytes, png_bytes, upscale
from pipelines.registry import ModelSpec
from pipelines.vae import (
    MorphParams,
    train_conv_vae,
    trained_vae_folders,
)
from studio.actions import latent as ex
from studio.actions.vae import finish_training, training_setup, uploads
from studio.services import Services
from studio.tabs.common import (TabHandle, as_int, friendly_errors, guarded, keep_output, page_file, parse_seed,
                                session_of, user_of)
from studio.workbench import WorkbenchSpec, build_workbench


def _scale(size: int) -> int:
    return max(1, 256 // size)


def build(services: Services) -> TabHandle:
    registry = services.host.registry
    for folder in trained_vae_folders(services.history.root / "vae-models"):  # models trained earlier
        registry.add(ModelSpec(folder.name, "vae", "folder", str(folder), license="yours",
                               description="trained in the VAE tab"))
    model = gr.Dropdown(registry.names("vae"), value=registry.default("vae"), allow_custom_value=True, label="VAE",
                        elem_id="vae-model",
                        info="Listed model, a diffusers AutoencoderKL folder or hub id (e.g. Stable Diffusion's VAE)")
    with gr.Tabs() as inner:
        with gr.Tab("Latent space", id="latent"):
            bench = build_workbench(services, WorkbenchSpec(
                tab="vae", prefix="vae", kind="vae", model=model, look=gr.State(None), methods=("dimensions", "pca"),
                can_encode=True, max_grid=12, max_frames=services.settings.gan_limits.max_frames * 10))
            to_morph = gr.Button("Add the current picture to the Morph images")
        with gr.Tab("Morph", id="morph"):
            morph_files = morph_section(services, model)
        with gr.Tab("Reconstruct", id="reconstruct"):
            reconstruct_section(services, model)
        with gr.Tab("Train your own", id="train"):
            train_button = train_section(services, model)

    @friendly_errors
    @guarded(services, "vae")
    def add_to_morph(state, model_name, current_files, request: gr.Request):
        if state.current is None:
            raise ValueError("Open a picture in Explore first (a seed, a grid cell or an upload).")
        space = ex.latent_model(services, model_name, "vae")
        image = ex.render(services, space, [state.current])[0]
        path = page_file(png_bytes(upscale(image, 1)), "current.png")
        return gr.Tabs(selected="morph"), [*(current_files or []), path]

    to_morph.click(add_to_morph, [bench.ctx.bench, model, morph_files], [inner, morph_files], api_visibility="private")

    def restore(params: dict) -> list:
        return [params.get("model") or gr.skip()]

    handle = TabHandle(restore_outputs=[model], restore=restore, receive_images=morph_files,
                       owner_controls=[model, train_button])
    handle.workbench = bench
    return handle


def save(services, files: dict, prompt: str, params: dict, request, model_name: str):
    return keep_output(services, "vae", files, prompt=prompt, params={**params, "model": model_name},
                       model=model_name, device=services.host.placement.describe(), owner=user_of(request))


def morph_section(services: Services, model: gr.Dropdown) -> gr.File:
    with gr.Row():
        files = gr.File(label="Two or more images (in order)", file_count="multiple", file_types=["image"], scale=2)
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
    note = gr.Markdown()
    strip = gr.Image(label="Through latent space (uploads: from the reconstruction of the first picture to that of "
                           "the last)", interactive=False, elem_id="vae-strip")
    fade = gr.Image(label="Plain pixel crossfade between the same pictures, for comparison", interactive=False)
    with gr.Row():
        animation = gr.Image(label="Animation", height=256, interactive=False)
        outputs = gr.File(label="GIF / MP4", file_count="multiple", interactive=False, elem_id="vae-files")

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def run(model_name, image_files, n_random, seed_text, n_frames, path, ease_mode, rate, request: gr.Request):
        p = services.host.vae_pipeline(model_name)
        params = MorphParams(frames=as_int("frames", n_frames), method=path, ease=ease_mode, fps=as_int("fps", rate))
        images, notes = uploads(services, image_files, p.model.size)
        if images is None:
            count = as_int("random samples", n_random)
            if count < 2:
                raise ValueError("images: upload two or more images, or ask for 2 or more random samples")
            # straight between the samples' latents: both rows start and end on the same decoded pictures
            latents = p.model.prior(count, parse_seed(seed_text) or 0)
            latent_frames, crossfade = services.host.lanes.run("model", p.morph_latents, latents, params)
            count_label = count
        else:
            latent_frames, crossfade = services.host.lanes.run("model", p.morph, images, params)
            count_label = len(images)
        scale = _scale(p.model.size)
        columns = min(12, params.frames)
        item = save(services, {".gif": gif_bytes(latent_frames, params.fps, scale=scale),
                               ".mp4": mp4_bytes(latent_frames, params.fps, scale=scale),
                               ".png": png_bytes(grid(latent_frames, columns))},
                    f"morph of {count_label} images", {"frames": params.frames, "method": params.method,
                                                       "ease": params.ease, "fps": params.fps}, request, p.model.name)
        paths = [str(services.history.path(f)) for f in item.files] if item else []
        return (ex.grid_picture(latent_frames, columns, 64), ex.grid_picture(crossfade, columns, 64),
                next((f for f in paths if f.endswith(".gif")), None), [f for f in paths if not f.endswith(".png")],
                "; ".join(notes))

    morph.click(run, [model, files, random_count, random_seed, frames, method, ease, fps],
                [strip, fade, animation, outputs, note], api_visibility="private", concurrency_id="vae")
    return files


def reconstruct_section(services: Services, model: gr.Dropdown) -> None:
    with gr.Row():
        files = gr.File(label="Images", file_count="multiple", file_types=["image"])
        with gr.Column():
            recon = gr.Button("Encode → decode", variant="primary")
            prior_n = gr.Slider(1, 64, value=16, step=1, label="Samples from the prior")
            prior_seed = gr.Textbox(value="", label="Seed (blank = random)")
            prior = gr.Button("Sample from the prior")
    note = gr.Markdown()
    gallery = gr.Gallery(label="Pictures", columns=8, height=320, format="png", elem_id="vae-recon")

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def reconstruct(model_name, image_files, request: gr.Request):
        p = services.host.vae_pipeline(model_name)
        images, notes = uploads(services, image_files, p.model.size)
        if images is None:
            raise ValueError("images: upload one or more images to reconstruct")
        out, scores = services.host.lanes.run("model", p.reconstruct, images)
        pairs = [im for pair in zip(images, out) for im in pair]
        save(services, {".png": png_bytes(grid(np.stack(pairs), 8))}, "reconstruction", {"psnr": scores}, request,
             p.model.name)
        scale = _scale(p.model.size)
        text = f"PSNR per image: {', '.join(f'{s:.1f} dB' for s in scores)} (mean {np.mean(scores):.1f} dB)"
        return [(upscale(im, scale), ("original" if i % 2 == 0 else f"reconstruction · {scores[i // 2]:.1f} dB"))
                for i, im in enumerate(pairs)], text + ("; " + "; ".join(notes) if notes else "")

    @friendly_errors
    @guarded(services, "vae", generation=True)
    def sample(model_name, n, seed_text, request: gr.Request):
        p = services.host.vae_pipeline(model_name)
        seed = parse_seed(seed_text)
        seed = seed if seed is not None else ex.random_seed()
        images = services.host.lanes.run("model", p.model.decode, p.model.prior(as_int("samples", n), seed))
        save(services, {".png": png_bytes(grid(images, 8))}, "prior samples", {"seed": seed}, request, p.model.name)
        return [(upscale(im, _scale(p.model.size)), f"prior sample {i + 1}") for i, im in enumerate(images)], \
            f"Samples from the prior, seed {seed} (decoded random latents — there are no originals)"

    recon.click(reconstruct, [model, files], [gallery, note], api_visibility="private", concurrency_id="vae")
    prior.click(sample, [model, prior_n, prior_seed], [gallery, note], api_visibility="private", concurrency_id="vae")


def train_section(services: Services, model: gr.Dropdown) -> gr.Button:
    registry = services.host.registry
    with gr.Row():
        folder = gr.Textbox(label="Folder of images on this machine", scale=2)
        zip_file = gr.File(label="…or a .zip of images", file_types=[".zip"], scale=2)
        name = gr.Textbox(label="Model name", value="my-vae", scale=1)
    with gr.Row():
        size = gr.Slider(28, 64, value=32, step=4, label="Image size")
        colour = gr.Radio(["colour", "grey"], value="colour", label="Channels")
        latent = gr.Slider(2, 64, value=16, step=1, label="Latent size")
        epochs = gr.Slider(1, 200, value=20, step=1, label="Epochs")
    with gr.Row():
        train = gr.Button("Train", variant="primary")
        cancel = gr.Button("Cancel (keeps the last finished epoch)", variant="stop")
    status = gr.Markdown()
    curve = gr.LinePlot(x="epoch", y="loss", title="Loss per image (reconstruction + KL)", height=240)
    samples = gr.Gallery(label="Reconstructions of fixed images after each epoch", columns=8, height=160, format="png")

    @friendly_errors
    @guarded(services, "vae", owner_only="train models")
    def run(folder_text, zip_path, model_name, px, channels, latent_dim, n_epochs, request: gr.Request):
        model_name, params, images, notes, source, out = training_setup(
            services, model_name, zip_path or folder_text, bool(zip_path), px, 1 if channels == "grey" else 3,
            latent_dim, n_epochs)
        events: queue.Queue = queue.Queue()
        session = session_of(request)
        stop = services.jobs.start(session, "vae-train")
        result: dict = {}

        def work():
            try:
                result["reports"] = train_conv_vae(params, images, out, device=services.host.placement.device,
                                                   on_epoch=events.put, cancel=stop,
                                                   extra_config={"trained_on": str(source.name), "images": len(images)})
            except BaseException as exc:  # handed to the request thread
                result["error"] = exc
            finally:
                events.put(None)

        thread = threading.Thread(target=work, name="vae-train", daemon=True)
        thread.start()
        points = []
        note = f"Training on {len(images)} images" + (f" ({len(notes)} files skipped)" if notes else "")
        yield note + "…", None, None
        try:
            while (report := events.get()) is not None:
                import pandas as pd

                points.append({"epoch": report.epoch, "loss": report.loss})
                yield (f"{note} · epoch {report.epoch}/{report.epochs} · loss {report.loss:.1f} "
                       f"(recon {report.recon:.1f} + KL {report.kl:.1f}) · {report.images_per_second:.0f} images/s",
                       pd.DataFrame(points), [upscale(s, _scale(params.size)) for s in report.samples])
        finally:
            stop.set()  # a closed page stops training too; harmless once it has finished
            thread.join()
            services.jobs.finish(session, "vae-train", stop)
        if "error" in result:
            raise result["error"]
        done = len(result["reports"])
        if done == 0:
            yield "Cancelled before the first epoch finished: no model was saved.", gr.skip(), gr.skip()
            return
        finish_training(services, model_name, out, params, done, images, user_of(request))
        yield f"Saved **{model_name}** after {done} epoch(s) to `{out}`; it is now in the VAE list.", gr.skip(), gr.skip()

    train.click(run, [folder, zip_file, name, size, colour, latent, epochs], [status, curve, samples],
                api_visibility="private", concurrency_limit=1, concurrency_id="vae-train").then(
        lambda: gr.Dropdown(choices=registry.names("vae")), None, model, api_visibility="private")
    def stop_training(request: gr.Request):
        services.jobs.cancel(session_of(request), "vae-train")

    cancel.click(stop_training, None, None, api_visibility="private", queue=False)
    return train

"""The Explore tab: the latent workbench on diffusion models — seed and prompt travel on a keyframe
timeline, prompt-pair and h-space directions as sliders, maps, breeding, and pictures encoded back
into the latent space."""

from __future__ import annotations

from dataclasses import asdict

import gradio as gr

from pipelines.image import SCHEDULERS
from pipelines.image_latent import DiffusionLook
from studio.tabs.image_control import KNOWN_IP_ADAPTERS
from studio.services import Services
from studio.tabs.common import TabHandle, as_int, friendly_errors, guarded, page_file
from studio.workbench import build_workbench

DEFAULT_LOOK = DiffusionLook(steps=20, guidance=5.0, scheduler="DPM++ 2M", width=64, height=64, preview_steps=6)


def build(services: Services) -> TabHandle:
    registry = services.host.registry
    with gr.Row():
        model = gr.Dropdown(registry.names("image"), value=registry.default("image"), allow_custom_value=True,
                            label="Model", scale=2, elem_id="explore-model",
                            info="Any Stable Diffusion-family model, like in the Image tab")
        prompt = gr.Textbox(value="red heart", label="Prompt for seeds and grids", scale=3, elem_id="explore-prompt",
                            info="Keyframes keep their own prompt: travel between prompts on the timeline")
    with gr.Accordion("Render settings — held fixed while exploring", open=False):
        with gr.Row():
            steps = gr.Slider(1, services.settings.image_limits.max_steps, value=DEFAULT_LOOK.steps, step=1, label="Steps")
            preview_steps = gr.Slider(1, 50, value=DEFAULT_LOOK.preview_steps, step=1, label="Preview steps",
                                      info="sliders and scrubbing")
            guidance = gr.Slider(0, 20, value=DEFAULT_LOOK.guidance, step=0.5, label="Guidance")
            sampler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_LOOK.scheduler, label="Sampler")
        with gr.Row():
            width = gr.Slider(64, 2048, value=DEFAULT_LOOK.width, step=8, label="Width",
                              info="the model's own size: 64 emoji, 512 SD 1.5, 1024 SDXL")
            height = gr.Slider(64, 2048, value=DEFAULT_LOOK.height, step=8, label="Height")
            negative = gr.Textbox(label="Negative prompt", scale=2)
        with gr.Row():
            ip_adapter = gr.Dropdown(["", *KNOWN_IP_ADAPTERS], value="", allow_custom_value=True, scale=2,
                                     label="IP-Adapter (reads the points' image prompts)", elem_id="explore-ip-adapter",
                                     info="a .safetensors file with its image_encoder folder beside it, or a hub file")
            ip_weight = gr.Slider(0, 2, value=DEFAULT_LOOK.ip_weight, step=0.05, label="Image prompt weight")
        look_note = gr.Markdown("")
    with gr.Row():
        to_img2img = gr.Button("Send the current picture to img2img", size="sm", elem_id="explore-to-img2img")
        to_inpaint = gr.Button("Send the current picture to inpaint", size="sm")
    look = gr.State(asdict(DEFAULT_LOOK))
    controls = [steps, preview_steps, guidance, sampler, width, height, negative, ip_adapter, ip_weight]

    @friendly_errors
    def set_look(n_steps, n_preview, cfg, scheduler, w, h, negative_prompt, adapter, adapter_weight):
        chosen = DiffusionLook(steps=as_int("steps", n_steps), preview_steps=as_int("preview steps", n_preview),
                               guidance=float(cfg), scheduler=scheduler, width=as_int("width", w),
                               height=as_int("height", h), negative_prompt=negative_prompt or "",
                               ip_adapter=(adapter or "").strip(), ip_weight=float(adapter_weight))
        return asdict(chosen), ""

    for control in controls:
        control.change(set_look, controls, [look, look_note], api_visibility="private", show_progress="hidden")
    bench = build_workbench(services, tab="explore", prefix="explore", kind="diffusion", model=model, look=look,
                            methods=("prompt-pair", "h-space"), prompt=prompt, can_encode=True, max_grid=4,
                            max_frames=services.settings.gan_limits.max_frames * 2,
                            settings={"model": model, "prompt": prompt, "steps": steps, "preview_steps": preview_steps,
                                      "guidance": guidance, "scheduler": sampler, "width": width, "height": height,
                                      "negative_prompt": negative, "ip_adapter": ip_adapter, "ip_weight": ip_weight})
    fields = {"model": model, "prompt": prompt, "steps": steps, "guidance": guidance, "scheduler": sampler,
              "width": width, "height": height, "negative_prompt": negative}

    def restore(params: dict) -> list:
        return [params[name] if params.get(name) not in (None, "") else gr.skip() for name in fields]

    @friendly_errors
    @guarded(services, "explore")  # renders on the named model: the host admits the name and the look
    def picture_file(state, model_name, look_values, request: gr.Request = None):
        """The current point rendered at full quality, as a PNG another tab can start from."""
        from pipelines.media import png_bytes
        from studio import explore as ex

        if state.current is None:
            raise gr.Error("Open a picture first (a seed, a grid cell or an upload).")
        space = ex.latent_model(services, model_name, "diffusion", DiffusionLook(**look_values))
        image = ex.render(services, space, [state.current])[0]
        path = page_file(png_bytes(ex.picture(image, image.shape[0])), "point.png")
        return path

    def from_image(params: dict) -> list:
        """Look settings, prompt (its style applied) and seed of an Image tab picture, so Explore opens that very
        picture; what a point cannot carry (LoRAs, hires, a start image) is said in a message."""
        from studio import explore as ex

        settings, notes = ex.from_picture(params)
        for note in notes:
            gr.Info(note)
        values = [settings[k] for k in ("model", "prompt", "steps", "guidance", "scheduler", "width", "height",
                                        "negative_prompt")]
        seed_value = settings["seed"]
        return [v if v not in (None, "") else gr.skip() for v in values] + [str(seed_value) if seed_value is not None
                                                                            else gr.skip()]

    handle = TabHandle(restore_outputs=list(fields.values()), restore=restore, owner_controls=[model])
    handle.workbench = bench
    handle.send_picture = (to_img2img, to_inpaint, [bench.ctx.bench, model, look], picture_file)
    handle.receive_point = ([model, prompt, steps, guidance, sampler, width, height, negative, bench.start.seed],
                            from_image, bench.start.open_args)
    return handle

"""The Explore tab: the latent workbench on diffusion models — seed and prompt travel on a keyframe
timeline, prompt-pair and h-space directions as sliders, maps, breeding, and pictures encoded back
into the latent space."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gradio as gr

from pipelines.image_latent import DiffusionLook
from studio.services import Services
from studio.tabs.common import TabHandle, as_int, friendly_errors, guarded, page_file
from studio.tabs.image import sampler_box, sampler_dropdown
from studio.tabs.image_control import KNOWN_IP_ADAPTERS
from studio.workbench import WorkbenchSpec, build_workbench

DEFAULT_LOOK = DiffusionLook(steps=20, guidance=5.0, scheduler="DPM++ 2M", width=64, height=64, preview_steps=6)
# the settings a History item (or an Image tab picture) gives back, by the names it keeps them under
RESTORED = ("model", "prompt", "steps", "guidance", "scheduler", "width", "height", "negative_prompt")


@dataclass
class RenderSettings:
    """The render settings held fixed while exploring, kept as one look (a dict of DiffusionLook fields) in
    `look`; exploration links keep them by name (`by_name`)."""

    steps: gr.Slider
    preview_steps: gr.Slider
    guidance: gr.Slider
    scheduler: gr.Dropdown
    width: gr.Slider
    height: gr.Slider
    negative_prompt: gr.Textbox
    ip_adapter: gr.Dropdown
    ip_weight: gr.Slider
    note: gr.Markdown
    look: gr.State

    @classmethod
    def build(cls, services: Services) -> RenderSettings:
        parts = {}
        with gr.Accordion("Render settings — held fixed while exploring", open=False):
            with gr.Row():
                parts["steps"] = gr.Slider(1, services.settings.image_limits.max_steps, value=DEFAULT_LOOK.steps,
                                           step=1, label="Steps")
                parts["preview_steps"] = gr.Slider(1, 50, value=DEFAULT_LOOK.preview_steps, step=1,
                                                   label="Preview steps", info="sliders and scrubbing")
                parts["guidance"] = gr.Slider(0, 20, value=DEFAULT_LOOK.guidance, step=0.5, label="Guidance")
                parts["scheduler"] = sampler_dropdown(value=DEFAULT_LOOK.scheduler, elem_id="explore-sampler")
            with gr.Row():
                parts["width"] = gr.Slider(64, 2048, value=DEFAULT_LOOK.width, step=8, label="Width",
                                           info="the model's own: 64 emoji, 512 SD 1.5, 1024 SDXL and flow models")
                parts["height"] = gr.Slider(64, 2048, value=DEFAULT_LOOK.height, step=8, label="Height")
                parts["negative_prompt"] = gr.Textbox(label="Negative prompt", scale=2)
            with gr.Row():
                parts["ip_adapter"] = gr.Dropdown(
                    ["", *KNOWN_IP_ADAPTERS], value="", allow_custom_value=True, scale=2,
                    label="IP-Adapter (reads the points' image prompts)", elem_id="explore-ip-adapter",
                    info="a .safetensors file with its image_encoder folder beside it, or a hub file")
                parts["ip_weight"] = gr.Slider(0, 2, value=DEFAULT_LOOK.ip_weight, step=0.05,
                                               label="Image prompt weight")
            parts["note"] = gr.Markdown("")
        return cls(**parts, look=gr.State(asdict(DEFAULT_LOOK)))

    @property
    def by_name(self) -> dict:
        """The settings by the names a look (and an exploration link) keeps them under."""
        return {name: getattr(self, name) for name in ("steps", "preview_steps", "guidance", "scheduler", "width",
                                                       "height", "negative_prompt", "ip_adapter", "ip_weight")}

    def to_look(self, values: dict) -> dict:
        """The look the settings in `values` (a handler's inputs by component) describe, checked."""
        chosen = DiffusionLook(
            steps=as_int("steps", values[self.steps]),
            preview_steps=as_int("preview steps", values[self.preview_steps]),
            guidance=float(values[self.guidance]), scheduler=values[self.scheduler],
            width=as_int("width", values[self.width]), height=as_int("height", values[self.height]),
            negative_prompt=values[self.negative_prompt] or "", ip_adapter=(values[self.ip_adapter] or "").strip(),
            ip_weight=float(values[self.ip_weight]))
        return asdict(chosen)

    def wire(self) -> None:
        """A change to any setting makes a new look (or says, beside them, what is wrong)."""
        @friendly_errors
        def set_look(values: dict):
            return self.to_look(values), ""

        controls = self.by_name.values()
        for control in controls:
            control.change(set_look, set(controls), [self.look, self.note], api_visibility="private",
                           show_progress="hidden")


def _model_row(services: Services) -> tuple[gr.Dropdown, gr.Textbox]:
    registry = services.host.registry
    with gr.Row():
        model = gr.Dropdown(registry.names("image"), value=registry.default("image"), allow_custom_value=True,
                            label="Model", scale=2, elem_id="explore-model",
                            info="Any model of the Image tab: SD, SDXL and flow models (Flux, Z-Image, Qwen-Image…)")
        prompt = gr.Textbox(value="red heart", label="Prompt for seeds and grids", scale=3, elem_id="explore-prompt",
                            info="Keyframes keep their own prompt: travel between prompts on the timeline")
    return model, prompt


def build(services: Services) -> TabHandle:
    model, prompt = _model_row(services)
    render = RenderSettings.build(services)
    with gr.Row():
        to_img2img = gr.Button("Send the current picture to img2img", size="sm", elem_id="explore-to-img2img")
        to_inpaint = gr.Button("Send the current picture to inpaint", size="sm")
    render.wire()
    model.change(lambda values: sampler_box(services, values[model], values[render.scheduler]),
                 {model, render.scheduler}, render.scheduler, api_visibility="private", show_progress="hidden")
    bench = build_workbench(services, WorkbenchSpec(
        tab="explore", prefix="explore", kind="diffusion", model=model, look=render.look,
        methods=("prompt-pair", "h-space"), prompt=prompt, can_encode=True, max_grid=4,
        max_frames=services.settings.gan_limits.max_frames * 2,
        settings={"model": model, "prompt": prompt, **render.by_name}))
    fields = {"model": model, "prompt": prompt, **render.by_name}
    fields = {name: fields[name] for name in RESTORED}

    def restore(params: dict) -> list:
        return [params[name] if params.get(name) not in (None, "") else gr.skip() for name in fields]

    handle = TabHandle(restore_outputs=list(fields.values()), restore=restore, owner_controls=[model])
    handle.workbench = bench
    handle.send_picture = (to_img2img, to_inpaint, [bench.ctx.bench, model, render.look],
                           _picture_file(services))
    handle.receive_point = ([*fields.values(), bench.start.seed], _from_image, bench.start.open_args)
    return handle


def _picture_file(services: Services):
    @friendly_errors
    @guarded(services, "explore")  # renders on the named model: the host admits the name and the look
    def picture_file(state, model_name, look_values, request: gr.Request = None):
        """The current point rendered at full quality, as a PNG another tab can start from."""
        from pipelines.media import png_bytes
        from studio.actions import latent as ex

        if state.current is None:
            raise gr.Error("Open a picture first (a seed, a grid cell or an upload).")
        space = ex.latent_model(services, model_name, "diffusion", DiffusionLook(**look_values))
        image = ex.render(services, space, [state.current])[0]
        return page_file(png_bytes(ex.picture(image, image.shape[0])), "point.png")

    return picture_file


def _from_image(params: dict) -> list:
    """Look settings, prompt (its style applied) and seed of an Image tab picture, so Explore opens that very
    picture; what a point cannot carry (LoRAs, hires, a start image) is said in a message."""
    from studio.actions import latent as ex

    settings, notes = ex.from_picture(params)
    for note in notes:
        gr.Info(note)
    values = [settings[k] for k in RESTORED]
    seed_value = settings["seed"]
    return [v if v not in (None, "") else gr.skip() for v in values] + [
        str(seed_value) if seed_value is not None else gr.skip()]

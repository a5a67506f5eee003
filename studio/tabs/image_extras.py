"""The Image tab's extra settings — styles, hires fix, outpainting — and the standalone Upscale panel.

Each piece builds its components and turns their values into the params objects the pipeline takes
(`HiresParams`, `OutpaintParams`, `Style`, `UpscaleParams`); the work itself is in pipelines/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines.image_prompt import Style, load_styles
from pipelines.image_upscale import (
    HiresParams,
    OutpaintParams,
    UpscaleParams,
    upscale,
)
from studio.actions.library import NO_STYLE, save_shared_style, style_named, styles_path, upscaled_origin, upscaler_choices, upscaler_folder
from studio.tabs.common import as_int, friendly_errors, guarded, keep_output, user_of



@dataclass
class Extras:
    """Style, hires fix and outpainting: their components, and how their values (a dict keyed by component, as
    Gradio passes a set of inputs) become ImageParams' style, hires and outpaint."""

    style: gr.Dropdown
    hires_box: gr.Accordion
    hires_on: gr.Checkbox
    hires_scale: gr.Slider
    hires_upscaler: gr.Dropdown
    hires_steps: gr.Slider
    hires_strength: gr.Slider
    outpaint_box: gr.Group
    left: gr.Slider
    right: gr.Slider
    up: gr.Slider
    down: gr.Slider
    seam: gr.Slider

    @property
    def restore_outputs(self) -> list:
        """What an item's parameters put back, in `restore`'s order (also the values `to_params` reads)."""
        return [self.style, self.hires_on, self.hires_scale, self.hires_upscaler, self.hires_steps,
                self.hires_strength, self.left, self.right, self.up, self.down, self.seam]

    @property
    def inputs(self) -> set:
        return set(self.restore_outputs)

    def to_params(self, services, mode: str, values: dict) -> dict:
        """hires/outpaint/style for ImageParams (hires for text to image only; outpaint for outpainting only)."""
        hires = None
        if values[self.hires_on] and mode == "txt2img":
            hires = HiresParams(float(values[self.hires_scale]), values[self.hires_upscaler],
                                as_int("hires steps", values[self.hires_steps]), float(values[self.hires_strength]))
        outpaint = None
        if mode == "outpaint":
            outpaint = OutpaintParams(**{side: as_int(f"outpaint {side}", values[getattr(self, side)])
                                         for side in ("left", "right", "up", "down", "seam")})
        return {"style": style_named(services, values[self.style]), "hires": hires, "outpaint": outpaint}

    def restore(self, params: dict) -> list:
        """Values for `restore_outputs` from an item's parameters (skip what it does not have)."""
        style = (params.get("style") or {}).get("name") if isinstance(params.get("style"), dict) else None
        hires = params.get("hires") if isinstance(params.get("hires"), dict) else None
        side = params.get("outpaint") if isinstance(params.get("outpaint"), dict) else None
        values = [style or NO_STYLE, bool(hires)]
        values += [hires[k] for k in ("scale", "upscaler", "steps", "strength")] if hires else [gr.skip()] * 4
        values += [side[k] for k in ("left", "right", "up", "down", "seam")] if side else [gr.skip()] * 5
        return values


def build_extras(services, prompt: gr.Textbox, negative: gr.Textbox) -> Extras:
    """Styles (apply from a list; save the current prompt as one), hires fix, outpainting sides."""
    names = [NO_STYLE, *(s.name for s in load_styles(styles_path(services)))]
    with gr.Accordion("Style", open=False):
        with gr.Row():
            style = gr.Dropdown(names, value=NO_STYLE, label="Style", scale=3, elem_id="image-style",
                                info="a prompt template; {prompt} is where yours goes")
            reload = gr.Button("↻", size="sm", scale=0, min_width=40)
        with gr.Row():
            style_name = gr.Textbox(label="Save the prompt boxes as a style named…", scale=3,
                                    placeholder="use {prompt} in the prompt box where a prompt goes")
            save = gr.Button("Save style", size="sm", scale=1)
    with gr.Accordion("Hires fix", open=False) as hires_box:
        hires_on = gr.Checkbox(label="Make it bigger in a second pass", elem_id="image-hires")
        with gr.Row():
            scale = gr.Slider(1.25, 4, value=2, step=0.25, label="Upscale by")
            upscaler = gr.Dropdown(upscaler_choices(services, latent=True), value="Latent", label="Upscaler",
                                   info=f"models: put .safetensors files in {upscaler_folder(services)}")
        with gr.Row():
            steps = gr.Slider(0, 150, value=0, step=1, label="Hires steps", info="0 = as many as the first pass")
            strength = gr.Slider(0.05, 1, value=0.5, step=0.01, label="Hires denoising strength")
    with gr.Group(visible=False) as outpaint_box:
        gr.Markdown("**Outpaint**: pixels to add on each side (multiples of 8)")
        with gr.Row():
            sides = [gr.Slider(0, 512, value=value, step=8, label=label, elem_id=f"image-outpaint-{label.lower()}")
                     for label, value in (("Left", 0), ("Right", 128), ("Up", 0), ("Down", 0))]
        seam = gr.Slider(0, 64, value=16, step=4, label="Seam (blended pixels)")

    def save_current(name, prompt_text, negative_text):
        text = prompt_text if "{prompt}" in (prompt_text or "") else f"{{prompt}}, {prompt_text}".rstrip(", ")
        created = Style(name.strip() if name else "", text, negative_text or "")
        choices = [NO_STYLE, *save_shared_style(services, created)]
        return gr.Dropdown(choices=choices, value=created.name), ""

    def refresh(current):
        choices = [NO_STYLE, *(s.name for s in load_styles(styles_path(services)))]
        return gr.Dropdown(choices=choices, value=current if current in choices else NO_STYLE)

    owner = friendly_errors(guarded(services, "image", owner_only="save styles")(save_current))
    save.click(owner, [style_name, prompt, negative], [style, style_name], api_visibility="private")
    reload.click(refresh, style, style, api_visibility="private")
    return Extras(style, hires_box, hires_on, scale, upscaler, steps, strength, outpaint_box, *sides, seam)


def build_upscale_panel(services) -> None:
    """Upscale any picture (Lanczos or an upscaler model); the result goes to History."""
    with gr.Accordion("Upscale any picture", open=False):
        with gr.Row(equal_height=False):
            source = gr.Image(label="Picture", type="pil", height=240, elem_id="upscale-source")
            result = gr.Image(label="Upscaled", type="pil", height=240, interactive=False, format="png",
                              elem_id="upscale-result")
        with gr.Row():
            scale = gr.Slider(1.25, 8, value=2, step=0.25, label="Upscale by")
            upscaler = gr.Dropdown(upscaler_choices(services, latent=False), value="Lanczos", label="Upscaler")
            go = gr.Button("Upscale", variant="primary", elem_id="upscale-go")
        note = gr.Markdown("")

    def run(picture, factor, name, request: gr.Request):
        if picture is None:
            raise ValueError("picture: upload a picture to upscale")
        params = UpscaleParams(float(factor), name)
        params.check_size(*picture.size)
        out = services.host.lanes.run("model", upscale, picture, params, device=services.host.placement.device,
                                 allow_pickle=services.settings.allow_pickle, models=services.upscalers,
                                 interactive=True)
        from pipelines.media import png_bytes

        item = keep_output(services, "image", {".png": png_bytes(out)}, prompt="upscale",
                           params={"upscale": float(factor), "upscaler": Path(name).name, "size": list(out.size)},
                           device=services.host.placement.describe(), owner=user_of(request),
                           origin=upscaled_origin(picture, name))
        saved = f" · saved as {item.id}" if item else " · not saved: the disk is full"
        return out, f"{picture.size[0]}×{picture.size[1]} → **{out.size[0]}×{out.size[1]}**{saved}"

    go.click(friendly_errors(guarded(services, "image", generation=True)(run)), [source, scale, upscaler],
             [result, note], api_visibility="private")

"""The Image tab's ControlNet, image-prompt and regional-prompt panels. ControlNet: up to three units, each a
picture to upload or a sketch to draw, what reads it (canny, line art, scribble, the sketch as it is drawn, depth
or pose estimation, or a depth / normal / pose map as it is), the ControlNet
model, its weight and the part of the denoising it acts in — and a preview of the control picture. The units
become `ControlUnit`s of the request (studio.actions.images.control_units); the work is in pipelines/image_control.py."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.image import open_user_image
from pipelines.image_control import ESTIMATORS, MAX_UNITS, PREPROCESSORS, ControlUnit, control_picture
from pipelines.image_regions import regions_from_layout
from pipelines.image_ipadapter import DEFAULT_WEIGHT
from studio.actions.images import control_units, image_prompt
from studio.tabs.common import friendly_errors, guarded

# ControlNets for Stable Diffusion 1.5 and SDXL on the model hub (downloaded on first use when online); any other
# diffusers ControlNet folder or hub id can be typed in
KNOWN_CONTROLNETS = ("lllyasviel/control_v11p_sd15_canny", "lllyasviel/control_v11p_sd15_lineart",
                     "lllyasviel/control_v11p_sd15_scribble", "lllyasviel/control_v11f1p_sd15_depth",
                     "lllyasviel/control_v11p_sd15_normalbae", "lllyasviel/control_v11p_sd15_openpose",
                     "diffusers/controlnet-canny-sdxl-1.0", "diffusers/controlnet-depth-sdxl-1.0")
# IP-Adapters for SD 1.5 and SDXL (h94's layout: each file's image encoder in an image_encoder folder beside it)
KNOWN_IP_ADAPTERS = ("h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
                     "h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors",
                     "h94/IP-Adapter/sdxl_models/ip-adapter_sdxl.safetensors",
                     "h94/IP-Adapter/sdxl_models/ip-adapter_sdxl_vit-h.safetensors")
MODULE_INFO = ("canny / lineart / scribble: lines from any picture · sketch: your drawing as drawn · depth, pose: "
               "estimated by a model of their own (a download on first use) · none: a depth, normal or pose map as "
               "it is")


@dataclass
class ControlUnitInputs:
    """One ControlNet unit's components (and its Preview button and the control picture it shows)."""

    on: gr.Checkbox
    picture: gr.ImageEditor
    module: gr.Dropdown
    model: gr.Dropdown
    weight: gr.Slider
    start: gr.Slider
    end: gr.Slider
    low: gr.Slider
    high: gr.Slider
    preview: gr.Button | None = None
    shown: gr.Image | None = None

    @property
    def inputs(self) -> set:
        return {self.on, self.picture, self.module, self.model, self.weight, self.start, self.end, self.low,
                self.high}

    def spec(self, values: dict) -> dict:
        """The unit's settings with AUTOMATIC1111's names (what studio.actions.images.control_units reads)."""
        return {"model": values[self.model] or "", "module": values[self.module], "weight": values[self.weight],
                "guidance_start": values[self.start], "guidance_end": values[self.end],
                "threshold_a": values[self.low], "threshold_b": values[self.high]}


@dataclass
class ControlPanel:
    units: list[ControlUnitInputs]

    @property
    def inputs(self) -> set:
        return set().union(*(unit.inputs for unit in self.units))

    @property
    def pictures(self) -> list:
        return [unit.picture for unit in self.units]

    @classmethod
    def build(cls) -> ControlPanel:
        units = []
        with gr.Accordion("ControlNet: steer the picture with edges, lines, a sketch or a depth map", open=False,
                          elem_id="image-control"):
            with gr.Tabs():
                for i in range(MAX_UNITS):
                    with gr.Tab(f"Unit {i + 1}"):
                        unit = _unit(i)
                        with gr.Row():
                            unit.preview = gr.Button("Preview the control picture", size="sm",
                                                     elem_id=f"image-control-{i}-preview")
                            unit.shown = gr.Image(label="Control picture", height=160, interactive=False,
                                                  elem_id=f"image-control-{i}-shown")
                        units.append(unit)
        return cls(units)

    def to_params(self, services, values: dict) -> tuple:
        """The request's ControlUnits from the panel's values (keyed by component): the units switched on."""
        on = [(i, unit) for i, unit in enumerate(self.units) if values[unit.on]]
        pictures = [_picture(services, values[unit.picture], i) for i, unit in on]
        return control_units(services, [unit.spec(values) for _, unit in on], pictures)

    def wire(self, services, size) -> None:
        """Each unit's Preview shows what its ControlNet will read, at the picture's size (`size`: width, height)."""
        for i, unit in enumerate(self.units):
            unit.preview.click(_previewer(services, i), [unit.picture, unit.module, unit.low, unit.high, *size],
                               unit.shown, api_visibility="private")


def _previewer(services, index: int):
    @friendly_errors
    @guarded(services, "image")
    def preview(request: gr.Request, picture, module, low, high, width, height):
        source = _picture(services, picture, index)
        estimator = services.host.estimator(module) if module in ESTIMATORS else None
        return control_picture(ControlUnit("preview", source, module, low=int(low), high=int(high),
                                           estimator=estimator), int(width), int(height))

    return preview


def _unit(i: int) -> ControlUnitInputs:
    on = gr.Checkbox(False, label=f"Use unit {i + 1}", elem_id=f"image-control-{i}-on")
    picture = gr.ImageEditor(label="Picture — upload one, or draw a sketch on the white canvas", type="filepath",
                             height=300, canvas_size=(512, 512), elem_id=f"image-control-{i}-picture",
                             brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=4))
    with gr.Row():
        module = gr.Dropdown(list(PREPROCESSORS), value="canny", label="Reads the picture as", info=MODULE_INFO,
                             elem_id=f"image-control-{i}-module")
        model = gr.Dropdown(list(KNOWN_CONTROLNETS), value=KNOWN_CONTROLNETS[0], allow_custom_value=True,
                            label="ControlNet", info="a hub id or a diffusers ControlNet folder (SD 1.x or SDXL, as "
                                                     "the image model)", elem_id=f"image-control-{i}-model")
    with gr.Row():
        weight = gr.Slider(0, 2, value=1.0, step=0.05, label="Weight", elem_id=f"image-control-{i}-weight")
        start = gr.Slider(0, 1, value=0.0, step=0.05, label="Starts at", info="of the denoising")
        end = gr.Slider(0, 1, value=1.0, step=0.05, label="Ends at")
    with gr.Row():
        low = gr.Slider(1, 254, value=100, step=1, label="Canny low threshold")
        high = gr.Slider(2, 255, value=200, step=1, label="Canny high threshold")
    return ControlUnitInputs(on, picture, module, model, weight, start, end, low, high)


def _picture(services, value, index: int):
    """The unit's picture from its editor: what was uploaded and drawn on it, flattened."""
    path = (value or {}).get("composite") if isinstance(value, dict) else value
    if not path:
        raise ValueError(f"controlnet unit {index + 1}: upload a picture or draw a sketch, or switch the unit off")
    picture, _ = open_user_image(path, services.settings.image_limits.max_image_pixels, mode="RGBA")
    from PIL import Image

    flat = Image.new("RGB", picture.size, "white")  # an empty canvas is transparent: draw on white paper
    flat.paste(picture, mask=picture.getchannel("A"))
    return flat


@dataclass
class ImagePromptPanel:
    """An image prompt (IP-Adapter): a picture whose look, subject or style the picture follows, with a weight."""

    picture: gr.Image
    adapter: gr.Dropdown
    weight: gr.Slider

    @property
    def inputs(self) -> set:
        return {self.picture, self.adapter, self.weight}

    @classmethod
    def build(cls) -> ImagePromptPanel:
        with gr.Accordion("Image prompt: a picture to follow, beside the words (IP-Adapter)", open=False,
                          elem_id="image-ip-box"):
            with gr.Row():
                picture = gr.Image(label="Image prompt", type="filepath", height=200, elem_id="image-ip-picture")
                with gr.Column():
                    adapter = gr.Dropdown(list(KNOWN_IP_ADAPTERS), value=KNOWN_IP_ADAPTERS[0], allow_custom_value=True,
                                          label="IP-Adapter", elem_id="image-ip-adapter",
                                          info="a hub file, or a .safetensors file with its image_encoder folder "
                                               "beside it (SD 1.x or SDXL, as the image model)")
                    weight = gr.Slider(0, 2, value=DEFAULT_WEIGHT, step=0.05, label="Weight", elem_id="image-ip-weight",
                                       info="0.5–0.8 keeps the words; 1 and above follows the picture")
        return cls(picture, adapter, weight)

    def to_params(self, services, values: dict):
        """The request's ImagePrompt, or None when no picture is given."""
        if not values[self.picture]:
            return None
        image, _ = open_user_image(values[self.picture], services.settings.image_limits.max_image_pixels)
        return image_prompt(services, values[self.adapter] or "", values[self.weight], image)


@dataclass
class RegionsPanel:
    """Regional prompts as AUTOMATIC1111's Regional Prompter lays them out: the prompt's parts between BREAKs, side
    by side in columns or rows (pipelines/image_regions.py draws them by latent couple)."""

    layout: gr.Radio
    ratios: gr.Textbox
    weight: gr.Slider

    @property
    def inputs(self) -> set:
        return {self.layout, self.ratios, self.weight}

    @classmethod
    def build(cls) -> RegionsPanel:
        with gr.Accordion("Regional prompts: a different prompt for each part of the picture", open=False,
                          elem_id="image-regions-box"):
            gr.Markdown("Write the parts' prompts in the prompt box with **BREAK** between them, e.g. "
                        "`a castle on a hill BREAK a red dragon`; the whole picture also reads all of them.")
            layout = gr.Radio(["Off", "Columns", "Rows"], value="Off", label="Parts side by side in",
                              elem_id="image-regions")
            with gr.Row():
                ratios = gr.Textbox(label="Sizes", placeholder="1,1 (blank: equal)", elem_id="image-regions-ratios")
                weight = gr.Slider(0, 1, value=1.0, step=0.05, label="How much each part keeps to its own prompt")
        return cls(layout, ratios, weight)

    def to_params(self, prompt: str, values: dict) -> tuple:
        """The request's regions: the prompt's parts between BREAKs, laid out side by side (none when Off)."""
        layout = values[self.layout]
        if layout in (None, "Off"):
            return ()
        return regions_from_layout(prompt or "", layout.lower(), values[self.ratios] or "", float(values[self.weight]))

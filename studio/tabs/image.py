"""The Image tab: text-to-image, image-to-image and inpainting, with previews, Cancel and PNG info."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from pipelines.image import MODE_LABELS as LABEL_OF
from pipelines.image import (
    MODES,
    SCHEDULERS,
    SD_MODES,
    GenerationCancelled,
    ImageParams,
    lora_set,
    open_user_image,
)
from pipelines.image_flow import FLOW_SCHEDULERS, sampler_choices, spec_family
from pipelines.image_prompt import parse_weights
from pipelines.media import png_bytes
from studio.actions.images import lora_weights, loras_from, making_images
from studio.actions.library import kept_picture, verify_file, verify_summary
from studio.services import Services
from studio.tabs.common import (
    TabHandle,
    as_int,
    check_named,
    friendly_errors,
    guarded,
    page_file,
    parse_seed,
    seed_field,
    session_of,
    user_of,
)
from studio.tabs.image_control import ControlPanel, ImagePromptPanel, RegionsPanel
from studio.tabs.image_extras import Extras, build_extras, build_upscale_panel
from studio.tabs.image_live import LivePanel
from studio.tabs.image_plot import build_plot_panel

MODE_LABELS = {label: mode for mode, label in LABEL_OF.items()}  # what the Mode radio shows → the mode it runs
PROMPT_HINTS = {"edit": "describe the change: make it night, add a hat…"}
PROMPT_HINT = "red heart, smiling cat face, rocket…"


def _mask_from_editor(editor: dict | None, max_pixels: int):
    """Background image and a white-on-black mask from Gradio's ImageEditor value."""
    from PIL import Image

    if not editor or not editor.get("background"):
        raise ValueError("init_image: upload an image in the inpaint editor, then paint over what to repaint")
    image, _ = open_user_image(editor["background"], max_pixels)
    mask = Image.new("L", image.size, 0)
    for layer in editor.get("layers") or []:
        painted, _ = open_user_image(layer, max_pixels, mode="RGBA")
        if painted.size != image.size:
            raise ValueError(f"mask is {painted.size[0]}×{painted.size[1]} but the image is "
                             f"{image.size[0]}×{image.size[1]}; they must match")
        mask.paste(255, mask=painted.getchannel("A").point(lambda a: 255 if a > 0 else 0))
    if mask.getbbox() is None:
        raise ValueError("mask: paint over the part of the image to repaint (the mask is empty)")
    return image, mask


@dataclass
class ComposePanel:
    """Mode, prompts, the starting image or mask, Generate and Cancel."""

    mode: gr.Radio
    prompt: gr.Textbox
    negative: gr.Textbox
    init_image: gr.Image
    editor: gr.ImageEditor
    brush_size: gr.Slider
    strength: gr.Slider
    generate: gr.Button
    cancel: gr.Button
    status: gr.Markdown

    @property
    def inputs(self) -> set:
        return {self.mode, self.prompt, self.negative, self.init_image, self.editor, self.strength}

    @classmethod
    def build(cls, modes: tuple[str, ...] = MODES) -> ComposePanel:
        """The panel, its Mode radio offering `modes` (what the starting model runs, where that is known)."""
        mode = gr.Radio(mode_labels(modes), value=LABEL_OF[chosen_mode(modes, "txt2img")], label="Mode",
                        elem_id="image-mode")
        prompt = gr.Textbox(label="Prompt", lines=3, placeholder=PROMPT_HINT, elem_id="image-prompt")
        negative = gr.Textbox(label="Negative prompt", lines=2, placeholder="what to avoid")
        init_image = gr.Image(label="Starting image", type="filepath", visible=False, height=320,
                              elem_id="image-init")
        editor = gr.ImageEditor(label="Paint over what to repaint", type="filepath", visible=False, height=420,
                                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=8),
                                elem_id="image-editor")
        brush_size = gr.Slider(1, 128, value=8, step=1, label="Brush size (pixels of the picture)", visible=False,
                               elem_id="image-brush")
        strength = gr.Slider(0.05, 1, value=0.75, step=0.01, label="Denoising strength", visible=False,
                             info="how much of the starting image may change")
        with gr.Row():
            generate = gr.Button("Generate", variant="primary", elem_id="image-generate", scale=3)
            cancel = gr.Button("Cancel", variant="stop", scale=1)
        status = gr.Markdown("", elem_id="image-status")
        return cls(mode, prompt, negative, init_image, editor, brush_size, strength, generate, cancel, status)

    def start_picture(self, services, values: dict, mode: str) -> tuple:
        """(start image, mask, notes on how the image was read, outpainting's size or None) for `mode`."""
        limits = services.settings.image_limits
        if mode in ("img2img", "outpaint", "edit"):
            init_path = values[self.init_image]
            if not init_path:
                raise ValueError(f"init_image: {str(values[self.mode]).lower()} needs a starting image; upload one "
                                 "or send one from the gallery")
            init, notes = open_user_image(init_path, limits.max_image_pixels)
            # outpainting grows the picture as it is (its size to a multiple of 8); an edit is made at width × height
            size = tuple(max(64, min(2048, side // 8 * 8)) for side in init.size) if mode == "outpaint" else None
            return init, None, notes, size
        if mode == "inpaint":
            return (*_mask_from_editor(values[self.editor], limits.max_image_pixels), [], None)
        return None, None, [], None


def _results_panel(services: Services) -> SimpleNamespace:
    """Live preview, results, send-to buttons, the plot and upscale panels, PNG info."""
    ui = SimpleNamespace()
    with gr.Row(equal_height=False):
        ui.preview = gr.Image(label="Live preview", height=256, interactive=False, scale=1, elem_id="image-preview")
        ui.gallery = gr.Gallery(label="Results", columns=4, height=380, format="png", scale=3, elem_id="image-gallery")
    with gr.Row():
        ui.to_img2img = gr.Button("Send selected to img2img", size="sm")
        ui.to_inpaint = gr.Button("Send selected to inpaint", size="sm")
        ui.to_vae = gr.Button("Send selected to the VAE tab", size="sm")
        ui.to_explore = gr.Button("Explore around the selected image", size="sm", elem_id="image-to-explore")
    ui.wire_plot = build_plot_panel(services)
    build_upscale_panel(services)
    with gr.Accordion("Verify & PNG info: drop any picture to see where it came from", open=False):
        ui.png_in = gr.File(label="Picture or video", file_types=[".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4"],
                            elem_id="verify-file")
        ui.verdict = gr.Markdown("", elem_id="verify-verdict")
        ui.png_text = gr.Textbox(label="Parameters", lines=4, interactive=False)
        ui.png_json = gr.JSON(label="Parsed")
        ui.png_send = gr.Button("Send these parameters to the Image tab")
    return ui


def mode_labels(modes: tuple[str, ...]) -> list[str]:
    return [LABEL_OF[mode] for mode in MODES if mode in modes]


def chosen_mode(modes: tuple[str, ...], current: str | None) -> str:
    """The mode to show among `modes`: the current one if the model runs it, else editing (for an editing
    model), else the first."""
    if current in modes:
        return current
    return "edit" if "edit" in modes else modes[0]


def _spec(services: Services, name):
    """The registry's spec for the Model box's text (None for text that names no model, and for a guest's text
    that names no listed model)."""
    if not isinstance(name, str) or not name.strip():
        return None
    if services.host.admission.caller().guest and name.strip() not in services.host.registry.names("image"):
        return None  # a guest learns nothing about server folders by naming them
    try:
        return services.host.registry.lookup(name, "image")
    except (ValueError, OSError):
        return None


def model_modes(spec) -> tuple[str, ...]:
    """The modes the Image tab offers for a model, known without loading it: its family's (from a folder's or a
    cached hub model's model_index.json), SD/SDXL's four for a UNet model, or every mode when it cannot be known
    yet (a hub model not downloaded): the pipeline then refuses what the model cannot do, in words."""
    if spec is None:
        return MODES
    if spec.source in ("asset", "package"):
        return SD_MODES
    try:
        family = spec_family(spec)
    except (ValueError, OSError):
        return MODES
    if family is not None:
        return family.modes
    return SD_MODES if spec.source in ("folder", "file") else MODES


def sampler_box(services: Services, model_name, current=None) -> dict:
    """The Sampler box for a model, read from its spec, never by loading it: its family's samplers (flow-matching
    for Flux, SD3, Z-Image…; SD's for a UNet model), keeping the current one when the model runs it (a picture's
    settings put back with its model), else starting on the family's first. The Image and Explore tabs' box."""
    samplers, first = sampler_choices(_spec(services, model_name), tuple(SCHEDULERS))
    return gr.update(choices=samplers, value=current if current in samplers else first)


def sampler_dropdown(**options) -> gr.Dropdown:
    """A Sampler box whose choices follow the model (`sampler_box`). It takes a value outside its choices for a
    moment — a flow picture's sampler put back while an SD model's list is shown — until the model's change
    brings the list (the pipelines refuse, in words, a sampler that is no sampler)."""
    return gr.Dropdown(list(SCHEDULERS), label="Sampler", allow_custom_value=True, **options)


def _wire_model(services: Services, compose: ComposePanel, side: SettingsPanel) -> None:
    """The Sampler and Mode follow the chosen model: its family's samplers (`sampler_box`) and the modes it runs
    (an editing model: Edit by instruction and Inpaint) — read from its spec, never by loading it."""
    def follow(values: dict):
        spec = _spec(services, values[side.model])
        modes = model_modes(spec)
        mode = chosen_mode(modes, MODE_LABELS.get(values[compose.mode]))
        return (sampler_box(services, values[side.model], values[side.scheduler]),
                gr.update(choices=mode_labels(modes), value=LABEL_OF[mode]))

    side.model.change(follow, {side.model, compose.mode, side.scheduler}, [side.scheduler, compose.mode],
                      api_visibility="private")


@dataclass
class SettingsPanel:
    """Model, sampler, steps, guidance, size, seeds, batch, LoRAs, and the extras' panels (style, hires, outpaint,
    ControlNet, image prompt, regions)."""

    model: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    guidance: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Textbox
    batch_size: gr.Slider
    batch_count: gr.Slider
    variation_seed: gr.Textbox
    variation_strength: gr.Slider
    lora_files: gr.File
    lora_weights: gr.Textbox
    extras: Extras
    control: ControlPanel
    image_prompt: ImagePromptPanel
    regions: RegionsPanel

    @property
    def inputs(self) -> set:
        own = {self.model, self.scheduler, self.steps, self.guidance, self.width, self.height, self.seed,
               self.batch_size, self.batch_count, self.variation_seed, self.variation_strength, self.lora_files,
               self.lora_weights}
        return own | self.extras.inputs | self.control.inputs | self.image_prompt.inputs | self.regions.inputs

    def loras(self, values: dict) -> dict:
        """{name: (file, weight)} of the LoRA files and their weights."""
        return loras_from(values[self.lora_files], values[self.lora_weights])

    @classmethod
    def build(cls, services: Services, prompt, negative) -> SettingsPanel:
        registry, limits = services.host.registry, services.settings.image_limits
        model = gr.Dropdown(registry.names("image"), value=registry.default("image"), allow_custom_value=True,
                            label="Model", info="Listed model, hub id, diffusers folder, or a .safetensors checkpoint",
                            elem_id="image-model")
        scheduler = sampler_dropdown(value="DPM++ 2M", elem_id="image-sampler")
        with gr.Row():
            steps = gr.Slider(1, limits.max_steps, value=20, step=1, label="Steps", elem_id="image-steps")
            guidance = gr.Slider(0, 20, value=5.0, step=0.5, label="Guidance (CFG)")
        with gr.Row():
            width = gr.Slider(64, 2048, value=64, step=8, label="Width")
            height = gr.Slider(64, 2048, value=64, step=8, label="Height")
        with gr.Row():
            seed = gr.Textbox(label="Seed", placeholder="blank = random", elem_id="image-seed")
            batch_size = gr.Slider(1, limits.max_batch_size, value=4, step=1, label="Batch size",
                                   elem_id="image-batch")
            batch_count = gr.Slider(1, limits.max_batch_count, value=1, step=1, label="Batch count")
        with gr.Accordion("Variation seed", open=False):
            variation_seed = gr.Textbox(label="Variation seed", placeholder="blank = off")
            variation_strength = gr.Slider(0, 1, value=0.0, step=0.01, label="Variation strength",
                                           info="0 = the seed's image; small values = slight variations")
        with gr.Accordion("LoRA", open=False):
            lora_files = gr.File(label="LoRA .safetensors files", file_count="multiple", file_types=[".safetensors"])
            lora_weights = gr.Textbox(label="Weights", placeholder="one per file, e.g. 0.8, 0.5 (default 1)")
        return cls(model, scheduler, steps, guidance, width, height, seed, batch_size, batch_count, variation_seed,
                   variation_strength, lora_files, lora_weights, build_extras(services, prompt, negative),
                   ControlPanel.build(), ImagePromptPanel.build(), RegionsPanel.build())


@dataclass
class ImageForm:
    """What Generate, the plot and real-time mode read: the compose and settings panels. Their events take
    `inputs` (a set: Gradio passes one dict of values keyed by component) and read it with `to_params`."""

    compose: ComposePanel
    side: SettingsPanel

    @property
    def inputs(self) -> set:
        return self.compose.inputs | self.side.inputs

    def model(self, values: dict) -> str:
        return values[self.side.model]

    def to_params(self, services, values: dict) -> tuple[ImageParams, list[str]]:
        """The ImageParams the page's settings ask for (LoRA files included), and notes on how the start image
        was read."""
        compose, side = self.compose, self.side
        mode_label = values[compose.mode]
        mode = MODE_LABELS.get(mode_label, mode_label)
        init, mask, notes, size = compose.start_picture(services, values, mode)
        width, height = size or (values[side.width], values[side.height])
        prompt = values[compose.prompt] or ""
        params = ImageParams(
            prompt=prompt, negative_prompt=values[compose.negative] or "", mode=mode,
            steps=as_int("steps", values[side.steps]), guidance=float(values[side.guidance]),
            width=as_int("width", width), height=as_int("height", height), scheduler=values[side.scheduler],
            seed=parse_seed(values[side.seed]), variation_seed=parse_seed(values[side.variation_seed]),
            variation_strength=float(values[side.variation_strength]), strength=float(values[compose.strength]),
            batch_size=as_int("batch_size", values[side.batch_size]),
            batch_count=as_int("batch_count", values[side.batch_count]), init_image=init, mask=mask,
            loras=lora_set(side.loras(values)), controls=side.control.to_params(services, values),
            image_prompt=side.image_prompt.to_params(services, values),
            regions=side.regions.to_params(prompt, values), **side.extras.to_params(services, mode, values),
        )
        params.validate(services.settings.image_limits)
        return params, notes

    def validator(self):
        """Seeds, prompt weights and LoRA weights checked beside their fields before the queue."""
        compose, side = self.compose, self.side
        return check_named({
            compose.prompt: lambda text: parse_weights(text or "", "prompt"),
            compose.negative: lambda text: parse_weights(text or "", "negative_prompt"),
            side.seed: seed_field, side.variation_seed: seed_field,
            side.lora_weights: lora_weights,  # numbers (one per file: checked with the files)
        })


def _brush(size):
    return gr.ImageEditor(brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=int(size)))


def _fit_brush(value):
    """A brush about 1/12 of the picture's shorter side: a 64-pixel emoji gets a 5-pixel brush."""
    from PIL import Image

    background = (value or {}).get("background")
    if not background:
        return gr.skip(), gr.skip()
    with Image.open(background) as picture:
        size = max(1, min(picture.size) // 12)
    return _brush(size), size


def _wire_mode(ui: ComposePanel, extras: Extras) -> None:
    """The mode shows its own inputs (an edit: the starting image and a hint to write the change, no strength); the
    inpainting brush follows the picture's size."""
    def show_mode(label):
        m = MODE_LABELS.get(label, "txt2img")
        return (gr.Image(visible=m in ("img2img", "outpaint", "edit")), gr.ImageEditor(visible=m == "inpaint"),
                gr.Slider(visible=m not in ("txt2img", "edit")), gr.Accordion(visible=m == "txt2img"),
                gr.Group(visible=m == "outpaint"), gr.Slider(visible=m == "inpaint"),
                gr.Textbox(placeholder=PROMPT_HINTS.get(m, PROMPT_HINT)))

    ui.mode.change(show_mode, ui.mode, [ui.init_image, ui.editor, ui.strength, extras.hires_box, extras.outpaint_box,
                                        ui.brush_size, ui.prompt], api_visibility="private")
    ui.editor.upload(_fit_brush, ui.editor, [ui.editor, ui.brush_size], api_visibility="private", queue=False)
    ui.brush_size.release(_brush, ui.brush_size, ui.editor, api_visibility="private", queue=False)


def _shown(event, started: float) -> tuple:
    """A job's note (in words) or (step, total, preview) as the page shows it: (preview, gallery, status, ids)."""
    if isinstance(event, str):
        return None, gr.skip(), event, gr.skip()
    done, total, image = event
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (total - done)
    return (image if image is not None else gr.skip(), gr.skip(),
            f"Step {done}/{total} · {elapsed:.1f}s · about {eta:.0f}s left", gr.skip())


def _on_page(steps, started: float):
    """`making_images`' notes and steps as page updates; returns what it made. Closing it (a closed page, a
    dropped request) closes the job, which stops the worker."""
    try:
        while True:
            try:
                event = next(steps)
            except StopIteration as finished:
                return finished.value
            yield _shown(event, started)
    finally:
        steps.close()


def _runner(services: Services, form: ImageForm):
    """The Generate handler: (preview, gallery, status, kept ids) as the picture is made, then the saved
    results."""
    @friendly_errors
    @guarded(services, "image", generation=True)
    def generate(values: dict, request: gr.Request, progress=gr.Progress()):
        params, notes = form.to_params(services, values)
        steps = making_images(services, params, form.model(values), user_of(request), session_of(request),
                              log=lambda msg: progress(0.0, desc=msg))
        try:
            kept, out, _pipe = yield from _on_page(steps, time.perf_counter())
        except GenerationCancelled:
            yield gr.skip(), gr.skip(), "Cancelled: nothing was saved.", gr.skip()
            return
        cells = [(path, f"seed {seed}") for path, seed, _ in kept]
        notes = [*notes, *out.notes]
        note = f" · {'; '.join(notes)}" if notes else ""
        yield (gr.skip(), cells, f"**{len(cells)} image(s)** · seeds {', '.join(str(s) for s in out.seeds)} · "
               f"{out.seconds:.1f}s{note}", [item_id for _, _, item_id in kept])

    return generate


def start_mode_label(services: Services, model_name: str) -> str:
    """The mode a picture sent to the Image tab starts in: image to image, or edit by instruction on an editing
    model (which has no image to image of its own)."""
    return LABEL_OF["img2img" if "img2img" in model_modes(_spec(services, model_name)) else "edit"]


def _wire_sending(services, compose: ComposePanel, side: SettingsPanel, results: SimpleNamespace, kept_ids,
                  selected) -> None:
    """The gallery's pictures are History items: a click remembers the item's id (server-side state, from the
    index clicked — never a path the browser sends), and "Send to" reads that item, if it is the caller's. An
    editing model (no image to image of its own) gets the picture to edit by instruction."""
    def remember(ids, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else None
        return ids[index] if ids and index is not None and 0 <= index < len(ids) else None

    def send(values: dict, target: str):
        picture = kept_picture(services, values[selected])
        if target == "img2img":
            return start_mode_label(services, values[side.model]), picture, gr.skip()
        return "Inpaint", gr.skip(), {"background": picture, "layers": [], "composite": picture}

    results.gallery.select(remember, kept_ids, selected, api_visibility="private")
    for button, target in ((results.to_img2img, "img2img"), (results.to_inpaint, "inpaint")):
        button.click(friendly_errors(lambda values, t=target: send(values, t)), {selected, side.model},
                     [compose.mode, compose.init_image, compose.editor], api_visibility="private")


def build(services: Services) -> TabHandle:
    with gr.Row(equal_height=False, elem_classes=["image-layout"]):
        with gr.Column(scale=3, elem_classes=["image-left"]):
            with gr.Column(elem_classes=["image-compose"]):
                compose = ComposePanel.build(model_modes(_spec(services, services.host.registry.default("image"))))
                live = LivePanel.build(services.settings.image_limits.max_steps)
            with gr.Column(elem_classes=["image-results"]):
                results = _results_panel(services)
        with gr.Column(scale=2, elem_classes=["image-settings"]):
            side = SettingsPanel.build(services, compose.prompt, compose.negative)
    form = ImageForm(compose, side)
    kept_ids, selected = gr.State([]), gr.State(None)  # the results' History ids; the one clicked
    _wire_mode(compose, side.extras)
    _wire_model(services, compose, side)
    side.control.wire(services, [side.width, side.height])
    results.wire_plot(form)
    live.wire(services, form, [compose.prompt, compose.negative, side.scheduler, side.guidance, side.width,
                               side.height, side.seed, side.variation_seed, side.variation_strength, compose.strength,
                               *side.control.pictures, side.image_prompt.picture],
              side.seed, results.preview, compose.status)
    compose.generate.click(_runner(services, form), form.inputs,
                           [results.preview, results.gallery, compose.status, kept_ids], api_visibility="private",
                           concurrency_limit=services.host.image_slots, concurrency_id="image",
                           validator=form.validator(), show_progress="minimal")

    def stop(request: gr.Request):
        services.jobs.cancel(session_of(request), "image")

    compose.cancel.click(stop, None, None, api_visibility="private", queue=False)
    _wire_sending(services, compose, side, results, kept_ids, selected)
    restore, restore_outputs = _restorer(services, compose, side)
    results.png_in.upload(lambda file: png_info(services, file), results.png_in,
                          [results.png_text, results.verdict, results.png_json], api_visibility="private")
    results.png_send.click(lambda info: from_png(info, restore), results.png_json, restore_outputs,
                           api_visibility="private")

    def selected_file(item_id, request: gr.Request = None):
        return page_file(png_bytes(kept_picture(services, item_id)), "picture.png")

    handle = TabHandle(restore_outputs=restore_outputs, restore=restore, owner_controls=[side.model, side.lora_files],
                       send_to_vae=(results.to_vae, [selected], selected_file))
    handle.to_explore = (results.to_explore, selected)
    handle.receive = (compose.mode, compose.init_image, compose.editor, side.model)
    return handle


def _restorer(services: Services, compose: ComposePanel, side: SettingsPanel):
    """restore(params) → values for the returned outputs: an item's settings put back (LoRA files are not kept
    with items: their names and weights are in the item's parameters; add the files again). The mode comes back
    with the choices of the item's model, so an edit is restored as an edit."""
    fields = {"prompt": compose.prompt, "negative_prompt": compose.negative, "model": side.model,
              "scheduler": side.scheduler, "steps": side.steps, "guidance": side.guidance, "width": side.width,
              "height": side.height, "seed": side.seed, "variation_seed": side.variation_seed,
              "variation_strength": side.variation_strength, "mode": compose.mode, "strength": compose.strength,
              "batch_size": side.batch_size, "batch_count": side.batch_count}

    def restore(params: dict) -> list:
        values = []
        for name in fields:
            value = params.get(name)
            if value is None:
                values.append(gr.skip())
            elif name in ("seed", "variation_seed"):
                values.append(str(value))
            elif name == "mode":
                modes = model_modes(_spec(services, params.get("model")))
                values.append(gr.update(choices=mode_labels(modes), value=LABEL_OF[chosen_mode(modes, value)])
                              if value in MODES else gr.skip())
            else:
                values.append(value)
        return values + side.extras.restore(params)

    return restore, [*fields.values(), *side.extras.restore_outputs]


@friendly_errors
def png_info(services: Services, file):
    """Parameters, the Verify verdict, and the parsed details (which `from_png` restores from)."""
    if not file:
        return "", "", None
    report = verify_file(services, file)
    info = {**report["png"], "content_credentials": report["credentials"], "watermark": report["watermark"]}
    return report["png"].get("parameters") or "No generation parameters.", verify_summary(report), info


def from_png(info, restore):
    """The Image tab's settings from a PNG's parameters (ours, or AUTOMATIC1111's text)."""
    if not info or not (info.get("studio") or info.get("settings")):
        raise gr.Error("Drop a PNG with generation parameters first.")
    if info.get("studio"):
        return restore(info["studio"])
    s = info.get("settings", {})
    size = s.get("Size", "x").split("x")
    values = {"prompt": info.get("prompt", ""), "negative_prompt": info.get("negative_prompt", ""),
              "steps": int(s["Steps"]) if s.get("Steps", "").isdigit() else None,
              "guidance": float(s["CFG scale"]) if s.get("CFG scale") else None,
              "scheduler": s.get("Sampler") if s.get("Sampler") in (*SCHEDULERS, *FLOW_SCHEDULERS) else None,
              "seed": s.get("Seed"), "width": int(size[0]) if size[0].isdigit() else None,
              "height": int(size[1]) if len(size) > 1 and size[1].isdigit() else None}
    return restore(values)

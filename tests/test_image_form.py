"""The Image tab reads its inputs by name: Gradio passes one dict keyed by component (the event's inputs are a set),
and each panel reads its own values into ImageParams (studio.tabs.image.ImageForm)."""

from __future__ import annotations

import gradio as gr
import pytest

from pipelines.image_upscale import HiresParams, OutpaintParams
from studio.config import Settings
from studio.services import Services
from studio.tabs.image import ComposePanel, ImageForm, SettingsPanel


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("form")
    services = Services.create(Settings(device="cpu", outputs=root / "outputs", cache_dir=root / "cache",
                                        offline=True))
    with gr.Blocks():
        compose = ComposePanel.build()
        side = SettingsPanel.build(services, compose.prompt, compose.negative)
    form = ImageForm(compose, side)
    return services, form, {component: component.value for component in form.inputs}


def test_the_pages_values_become_params_by_name(page):
    services, form, defaults = page
    side, compose = form.side, form.compose
    values = {**defaults, compose.prompt: "a castle BREAK a dragon", side.steps: 7.0, side.seed: "42",
              side.batch_size: 2, side.extras.hires_on: True, side.extras.hires_scale: 1.5,
              side.regions.layout: "Columns"}
    params, notes = form.to_params(services, values)
    assert (params.prompt, params.steps, params.seed, params.batch_size) == ("a castle BREAK a dragon", 7, 42, 2)
    assert params.hires == HiresParams(1.5, "Latent", 0, 0.5) and len(params.regions) == 2 and notes == []
    assert params.controls == () and params.image_prompt is None and params.loras == ()


def test_each_mode_reads_its_own_inputs(page):
    services, form, defaults = page
    compose, extras = form.compose, form.side.extras
    values = {**defaults, compose.mode: "Outpaint", extras.hires_on: True}
    with pytest.raises(ValueError, match="init_image: outpaint needs a starting image"):
        form.to_params(services, values)
    assert extras.to_params(services, "outpaint", values)["outpaint"] == OutpaintParams(0, 128, 0, 0, 16)
    assert extras.to_params(services, "outpaint", values)["hires"] is None  # hires is for text to image only


def test_the_validator_answers_beside_the_field_it_checks(page):
    _, form, defaults = page
    validator = form.validator()
    answers = validator({**defaults, form.side.seed: "12x", form.side.lora_weights: "0.8, x"})
    bad = {component for component, answer in answers.items() if not answer["is_valid"]}
    assert bad == {form.side.seed, form.side.lora_weights}
    assert "seed must be blank" in answers[form.side.seed]["message"]
    assert "'x' is not a number" in answers[form.side.lora_weights]["message"]
    answers = validator({**defaults, form.side.seed: "12", form.side.lora_weights: "0.8, 0.5"})
    assert all(answer["is_valid"] for answer in answers.values())  # good weights pass (their count: with the files)


def index_only(folder, class_name: str) -> str:
    """A folder that says which pipeline it is and holds nothing else: enough to know its modes, never to load."""
    import json

    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return str(folder)


def test_the_modes_offered_follow_the_model_without_loading_it(page, tmp_path, tiny_sd_dir):
    from studio.tabs.image import _spec, mode_labels, model_modes

    services = page[0]
    modes = {name: model_modes(_spec(services, location)) for name, location in (
        ("kontext", index_only(tmp_path / "kontext", "FluxKontextPipeline")),
        ("flux", index_only(tmp_path / "flux", "FluxPipeline")), ("sd", str(tiny_sd_dir)),
        ("hub", "someone/not-downloaded"), ("nothing", "../no/such/model"))}
    assert modes["kontext"] == ("inpaint", "edit") and mode_labels(modes["kontext"]) == ["Inpaint", "Edit by instruction"]
    assert modes["flux"] == ("txt2img", "img2img", "inpaint") and modes["sd"] == ("txt2img", "img2img", "inpaint",
                                                                                   "outpaint")
    assert modes["hub"] == modes["nothing"] == ("txt2img", "img2img", "inpaint", "outpaint", "edit")  # refused later


def test_a_guest_learns_nothing_of_server_folders_from_the_mode_choices(page, tmp_path, tiny_sd_dir):
    """The Model box's change answers a guest only for listed models: a folder's path tells them nothing."""
    from studio.caller import Caller, calling
    from studio.tabs.image import _spec, model_modes

    services = page[0]
    kontext = index_only(tmp_path / "kontext", "FluxKontextPipeline")
    assert model_modes(_spec(services, kontext)) == ("inpaint", "edit")  # the owner: the folder's own modes
    with calling(Caller("visitor", guest=True)):
        assert _spec(services, kontext) is None and _spec(services, str(tiny_sd_dir)) is None
        assert _spec(services, services.host.registry.default("image")) is not None


def test_a_picture_sent_to_an_editing_model_is_edited_not_made_over(page, tmp_path, tiny_sd_dir):
    """Send to img2img (from the gallery or from Explore) starts in the mode the Image tab's model has."""
    from studio.tabs.image import start_mode_label

    services = page[0]
    assert start_mode_label(services, index_only(tmp_path / "kontext", "FluxKontextPipeline")) == "Edit by instruction"
    assert start_mode_label(services, str(tiny_sd_dir)) == "Image to image"


def test_edit_reads_the_starting_image_and_writes_the_change_as_the_prompt(page, tmp_path):
    from PIL import Image

    services, form, defaults = page
    compose = form.compose
    assert "Edit by instruction" in compose.mode.choices[-1]
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64), "red").save(start)
    values = {**defaults, compose.mode: "Edit by instruction", compose.prompt: "make it night",
              form.side.scheduler: "Flow Euler", compose.strength: 0.3}
    with pytest.raises(ValueError, match="init_image: edit by instruction needs a starting image"):
        form.to_params(services, values)
    params, _ = form.to_params(services, {**values, compose.init_image: str(start)})
    assert (params.mode, params.prompt, params.init_image.size, params.mask) == ("edit", "make it night", (64, 64),
                                                                                  None)


def test_restore_keeps_an_edit_an_edit_with_its_models_choices(page, tmp_path):
    from studio.tabs.image import _restorer

    services, form, _ = page
    restore, outputs = _restorer(services, form.compose, form.side)
    kontext = index_only(tmp_path / "kontext", "FluxKontextPipeline")
    mode = dict(zip(outputs, restore({"mode": "edit", "model": kontext, "prompt": "add a hat"})))[form.compose.mode]
    assert mode["value"] == "Edit by instruction" and mode["choices"] == ["Inpaint", "Edit by instruction"]
    mode = dict(zip(outputs, restore({"mode": "img2img", "model": kontext})))[form.compose.mode]
    assert mode["value"] == "Edit by instruction"  # image to image on an editing model is an edit
    mode = dict(zip(outputs, restore({"mode": "edit"})))[form.compose.mode]
    assert mode["value"] == "Edit by instruction" and len(mode["choices"]) == 5

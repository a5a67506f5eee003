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

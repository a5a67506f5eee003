"""Daily image tools: prompt weighting (A1111 syntax through compel), styles, hires fix, upscaling and
outpainting — on the tiny random-weight Stable Diffusion (a real CLIP tokenizer and text encoder)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, load_image_model
from pipelines.image_prompt import Style, encode_prompts, load_styles, parse_weights, plain_text, save_style
from pipelines.image_upscale import (
    HiresParams,
    OutpaintParams,
    UpscaleParams,
    keep_original,
    outpaint_canvas,
    outpaint_mask,
    upscale,
)
from pipelines.registry import Registry

FAST = dict(prompt="a red fox", steps=3, width=64, height=64, scheduler="DDIM", seed=3)


@pytest.fixture(scope="module")
def tiny(tiny_sd_dir):
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")), pick_placement("cpu"),
                             offline=True)
    return ImagePipeline(model, ImageLimits(max_steps=50, max_megapixels=0.05, max_batch_size=4, max_batch_count=2))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# -- prompt weighting -----------------------------------------------------------------------------------------

def test_a1111_weighting_syntax_is_parsed_like_a1111():
    assert parse_weights("a (red:1.5) heart") == [("a ", 1.0), ("red", 1.5), (" heart", 1.0)]
    assert parse_weights("((red)) [blue]") == [("red", 1.21), (" ", 1.0), ("blue", round(1 / 1.1, 6))]
    assert parse_weights("(red:1.0) heart") == [("red heart", 1.0)]  # equal weights merge
    assert parse_weights(r"\(not weighted\) \[x\]") == [("(not weighted) [x]", 1.0)]
    assert parse_weights("(a (b:2) c)") == [("a ", 1.1), ("b", 2.2), (" c", 1.1)]  # nesting multiplies
    assert plain_text("a (red:1.5) [heart]") == "a red heart"
    with pytest.raises(ValueError, match=r"negative_prompt: the weight in '\(word:abc\)' must be a number"):
        parse_weights("(word:abc)", "negative_prompt")
    with pytest.raises(ValueError, match="prompt: weights go from 0 to 10, got 12"):
        parse_weights("(word:12)")
    with pytest.raises(ValueError, match=r"prompt: the weight in '\(word:abc\)'"):
        ImageParams(prompt="a (word:abc) here")


def test_weights_change_the_conditioning_and_weight_one_does_not(tiny):
    pipe = tiny.model.pipe
    plain, _ = pipe.encode_prompt("red heart", "cpu", 1, False)
    assert encode_prompts(pipe, "red heart", "") is None  # plain prompts go to diffusers untouched
    same = encode_prompts(pipe, "(red:1.0) heart", "").kwargs["prompt_embeds"]
    heavier = encode_prompts(pipe, "(red:1.5) heart", "").kwargs["prompt_embeds"]
    assert torch.equal(same, plain)
    assert (heavier - plain).abs().max() > 1e-3
    lighter = encode_prompts(pipe, "red heart", "[cat]").kwargs["negative_prompt_embeds"]
    assert lighter.shape == plain.shape


def test_a_200_token_prompt_is_chunked_not_cut(tiny):
    pipe = tiny.model.pipe
    words = ["red"] * 199
    long = encode_prompts(pipe, " ".join([*words, "fox"]), "")
    other = encode_prompts(pipe, " ".join([*words, "cat"]), "")
    embeds = long.kwargs["prompt_embeds"]
    assert embeds.shape[1] >= 200 and long.kwargs["negative_prompt_embeds"].shape == embeds.shape
    assert not torch.equal(embeds[:, -16:], other.kwargs["prompt_embeds"][:, -16:])  # the last word still counts
    assert any("chunks" in note for note in long.notes)


def test_models_that_cannot_weight_say_so():
    class BertModel:  # the emoji model's MiniLM encoder
        pass

    pipe = types.SimpleNamespace(text_encoder=BertModel(), tokenizer=object())
    assert encode_prompts(pipe, "red heart", "") is None
    read = encode_prompts(pipe, "(red:1.5) heart", "[blurry]")
    assert read.kwargs == {"prompt": "red heart", "negative_prompt": "blurry"}
    assert "cannot weight" in read.notes[0]


def test_weighted_prompts_generate(tiny):
    plain = tiny(ImageParams(**{**FAST, "prompt": "red heart"}))
    same = tiny(ImageParams(**{**FAST, "prompt": "(red:1.0) heart"}))
    heavier = tiny(ImageParams(**{**FAST, "prompt": "(red:1.8) heart"}))
    assert np.abs(pixels(same.images[0]) - pixels(plain.images[0])).max() <= 1
    assert np.abs(pixels(heavier.images[0]) - pixels(plain.images[0])).max() > 2


# -- styles ---------------------------------------------------------------------------------------------------

def test_styles_apply_and_user_styles_are_kept(tmp_path):
    style = Style("Ink", "ink drawing of {prompt}, cross-hatching", "colour")
    assert style.apply("a fox", "blurry") == ("ink drawing of a fox, cross-hatching", "blurry, colour")
    assert Style("Tail", "highly detailed").apply("a fox", "") == ("a fox, highly detailed", "")
    path = tmp_path / "styles.json"
    assert [s.name for s in load_styles(path)][:2] == ["Flat sticker", "Watercolour"]  # shipped ones
    save_style(path, style)
    save_style(path, Style("Ink", "ink of {prompt}"))  # same name: replaced
    styles = {s.name: s for s in load_styles(path)}
    assert styles["Ink"].prompt == "ink of {prompt}" and "Flat sticker" in styles
    path.write_text("not json")
    assert "Ink" not in {s.name for s in load_styles(path)}  # an unreadable file: only the shipped styles
    with pytest.raises(ValueError, match="style name: 1 to 60 characters"):
        Style(" ")
    params = ImageParams(prompt="a fox", style=style)
    assert params.prompts() == ("ink drawing of a fox, cross-hatching", "colour") and params.prompt == "a fox"


# -- hires fix ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_makes_the_target_size_in_two_passes(tiny, upscaler):
    reports = []
    hires = HiresParams(scale=2, upscaler=upscaler, steps=4, strength=0.5)
    out = tiny(ImageParams(**FAST, hires=hires), callback=lambda d, t, _p: reports.append((d, t)), preview_every=0)
    base = tiny(ImageParams(**FAST))
    assert out.images[0].size == (128, 128) and base.images[0].size == (64, 64)
    assert reports[-1] == (3 + 2, 3 + 2)  # first pass 3 steps + second pass 4 × 0.5
    again = tiny(ImageParams(**FAST, hires=hires))
    assert np.array_equal(pixels(again.images[0]), pixels(out.images[0]))  # seeded, both passes


def test_hires_fix_checks_its_fields(tiny):
    with pytest.raises(ValueError, match="hires scale must be a number in \\(1.0, 4.0\\]"):
        HiresParams(scale=1)
    with pytest.raises(ValueError, match="hires upscaler must be one of Latent"):
        HiresParams(upscaler="Bicubic++")
    with pytest.raises(ValueError, match="hires scale: 256×256 is 0.07 megapixels; the limit is 0.05"):
        tiny(ImageParams(**FAST, hires=HiresParams(scale=4)))
    with pytest.raises(ValueError, match="hires fix: only for text to image"):
        ImageParams(prompt="x", mode="img2img", init_image=Image.new("RGB", (64, 64)), hires=HiresParams())


def test_hires_fix_is_recorded_in_the_png(tmp_path, tiny):
    from pipelines.media import read_png_info
    from studio.actions.images import keep_images

    class Services:  # what keep_images needs
        from studio.history import History

        history = History(tmp_path)
        host = types.SimpleNamespace(placement=types.SimpleNamespace(describe=lambda: "cpu"))
        settings = types.SimpleNamespace(logins=False)

    params = ImageParams(**FAST, hires=HiresParams(scale=2, upscaler="Lanczos", steps=4, strength=0.4),
                         style=Style("Ink", "ink of {prompt}"))
    out = tiny(params)
    (path, seed, _), = keep_images(Services, tiny, out, "local")
    info = read_png_info(path)
    assert "Hires upscale: 2" in info["parameters"] and "Hires upscaler: Lanczos" in info["parameters"]
    assert "Hires steps: 4" in info["parameters"] and "Size: 64x64" in info["parameters"]
    assert "Style: Ink" in info["parameters"]
    assert info["studio"]["hires"] == {"scale": 2, "upscaler": "Lanczos", "steps": 4, "strength": 0.4}
    assert info["studio"]["style"] == {"name": "Ink", "prompt": "ink of {prompt}", "negative": ""}
    assert info["studio"]["prompt"] == "a red fox"  # as typed; the style is recorded beside it


# -- upscaling ------------------------------------------------------------------------------------------------

def test_lanczos_upscale_and_its_limits(tmp_path):
    picture = Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8))
    assert upscale(picture, UpscaleParams(scale=2.5)).size == (100, 75)
    with pytest.raises(ValueError, match="upscale scale: 4000×3000 × 2 would be 8000×6000 .* the limit is 16.8"):
        upscale(Image.new("RGB", (4000, 3000)), UpscaleParams(scale=2))
    with pytest.raises(ValueError, match="upscale scale must be a number in \\(1.0, 8.0\\]"):
        UpscaleParams(scale=9)
    pickle = tmp_path / "RealESRGAN_x4plus.pth"
    pickle.write_bytes(b"not really")
    with pytest.raises(ValueError, match="upscaler: RealESRGAN_x4plus.pth is a pickle file.*--allow-pickle"):
        upscale(picture, UpscaleParams(upscaler=str(pickle)))
    with pytest.raises(ValueError, match="upscaler: no model file"):
        upscale(picture, UpscaleParams(upscaler=str(tmp_path / "missing.safetensors")))


def test_an_upscaler_model_runs_in_tiles_through_spandrel(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    class Descriptor:  # what spandrel's ModelLoader gives: a callable model with its scale
        scale, purpose = 2, "SR"

        def __init__(self, state):
            self.model = torch.nn.Conv2d(3, 3, 1)
            self.state = state

        def to(self, device):
            return self

        def eval(self):
            return self

        def __call__(self, x):  # a 2× nearest upscale that marks each tile's pixels
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    loaded = []
    fake = types.SimpleNamespace(ModelLoader=lambda device: types.SimpleNamespace(
        load_from_state_dict=lambda state: loaded.append(state) or Descriptor(state)))
    monkeypatch.setitem(sys.modules, "spandrel", fake)
    weights = tmp_path / "2x-tiny.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3, 1, 1)}, str(weights))
    picture = Image.fromarray((np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8))
    out = upscale(picture, UpscaleParams(scale=2, upscaler=str(weights), tile=64))
    assert out.size == (180, 140) and list(loaded[0]) == ["conv.weight"]
    expected = np.asarray(picture.resize((180, 140), Image.NEAREST))
    assert np.abs(pixels(out) - expected.astype(np.int16)).max() <= 1  # tiles stitched without seams
    models = {}
    upscale(picture, UpscaleParams(scale=2, upscaler=str(weights)), models=models)
    upscale(picture, UpscaleParams(scale=2, upscaler=str(weights)), models=models)
    assert len(loaded) == 2  # the second call used the cached model


def test_without_spandrel_an_upscaler_model_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as when it is not installed
    weights = tmp_path / "4x.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"need the spandrel package .*genai-studio\[upscale\]"):
        upscale(Image.new("RGB", (8, 8)), UpscaleParams(upscaler=str(weights)))


# -- outpainting ----------------------------------------------------------------------------------------------

def test_outpainting_grows_the_canvas_and_keeps_the_original_outside_the_seam(tiny):
    start = Image.fromarray((np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8))
    sides = OutpaintParams(left=32, down=16, seam=8)
    out = tiny(ImageParams(prompt="a red fox", mode="outpaint", init_image=start, outpaint=sides, steps=3,
                           width=64, height=64, scheduler="DDIM", seed=1, strength=1.0))
    picture = pixels(out.images[0])
    assert out.images[0].size == (96, 80)
    kept = picture[0:64 - 8, 32 + 8:96]  # inside the seam (the left and bottom sides grew)
    assert np.array_equal(kept, pixels(start)[0:56, 8:64])
    assert np.abs(picture[70:, :30] - 128).mean() < 127  # the new area was painted (not left black)


def test_outpainting_checks_its_fields(tiny):
    with pytest.raises(ValueError, match="outpaint: add pixels on at least one side"):
        OutpaintParams()
    with pytest.raises(ValueError, match="outpaint left must be a whole number from 0 to 1,024, got 100000"):
        OutpaintParams(left=100_000)
    with pytest.raises(ValueError, match="outpaint up must be a multiple of 8"):
        OutpaintParams(up=10)
    with pytest.raises(ValueError, match="outpaint: 1088×64 is 0.07 megapixels; the limit is 0.05"):
        tiny(ImageParams(prompt="x", mode="outpaint", init_image=Image.new("RGB", (64, 64)), width=64, height=64,
                         outpaint=OutpaintParams(left=1024)))
    canvas, mask = outpaint_canvas(Image.new("RGB", (16, 16), (10, 20, 30)), OutpaintParams(right=8, seam=0))
    assert canvas.size == (24, 16) and np.asarray(mask)[:, 16:].min() == 255 and np.asarray(mask)[:, :16].max() == 0
    ramp = outpaint_mask(16, 16, OutpaintParams(up=8, seam=4))
    assert ramp[8, 0] > ramp[9, 0] > ramp[11, 0] > 0 and ramp[12:, :].max() == 0 and ramp[:8].min() == 1
    back = keep_original(Image.new("RGB", (24, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (1, 2, 3)),
                         OutpaintParams(right=8, seam=0))
    assert np.asarray(back)[0, 0].tolist() == [1, 2, 3] and np.asarray(back)[0, 20].tolist() == [255, 0, 0]


# -- X/Y/Z plots ----------------------------------------------------------------------------------------------

def test_plot_axis_values_lists_ranges_and_caps():
    from pipelines.image_plot import parse_values

    assert parse_values("Steps", "1-5") == [1, 2, 3, 4, 5]
    assert parse_values("Steps", "5-50 (+15)") == [5, 20, 35, 50]
    assert parse_values("CFG scale", "3, 5-7, 9.5") == [3.0, 5.0, 6.0, 7.0, 9.5]
    assert parse_values("Denoising strength", "0.2-1 [5]") == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert parse_values("Sampler", "Euler, DPM++ 2M") == ["Euler", "DPM++ 2M"]
    assert parse_values("Size", "64x64, 128×64") == [(64, 64), (128, 64)]
    assert parse_values("Prompt S/R", "red, (blue:1.2), green") == ["red", "(blue:1.2)", "green"]
    with pytest.raises(ValueError, match="X values: at most 32 values on an axis; '1-10000' gives 10,000"):
        parse_values("Seed", "1-10000")
    with pytest.raises(ValueError, match="Y values: 'many' is not a number or a range like 10-40"):
        parse_values("Steps", "many", "Y values")
    with pytest.raises(ValueError, match="X values: sizes are written WIDTHxHEIGHT"):
        parse_values("Size", "big")
    with pytest.raises(ValueError, match="X values: the axis must be one of"):
        parse_values("Weather", "sunny")


def test_plot_cells_caps_and_cancel():
    from pipelines.image_plot import PlotParams, run_plot

    plot = PlotParams.parse(("CFG scale", "3, 7"), ("Seed", "1-3"))
    assert len(plot.cells()) == 6 and plot.settings((1, 2, 0)) == {"CFG scale": 7.0, "Seed": 3}
    with pytest.raises(ValueError, match="axes: 1,024 pictures; the cap is 100"):
        PlotParams.parse(("Seed", "1-32"), ("Steps", "1-32"))
    with pytest.raises(ValueError, match="axes: each parameter on one axis only"):
        PlotParams.parse(("Seed", "1, 2"), ("Seed", "3"))
    with pytest.raises(ValueError, match="X axis: choose what changes"):
        PlotParams.parse(("Nothing", ""))
    made = []

    def make(params, settings):
        made.append((params.guidance, params.seed))
        return Image.new("RGB", (8, 8))

    done = run_plot(plot, ImageParams(prompt="x", steps=2), make, cancelled=lambda: len(made) >= 4)
    assert len(done) == 4 and made[:3] == [(3.0, 1), (7.0, 1), (3.0, 2)]  # rows of X, cancelled after four


def test_plot_on_the_tiny_model_labels_every_cell(tiny):
    from pipelines.image_plot import PlotParams, draw_grid, run_plot

    plot = PlotParams.parse(("Steps", "2, 4"), ("Prompt S/R", "red, blue"))
    base = ImageParams(**{**FAST, "prompt": "a red fox", "negative_prompt": "red"})
    done = run_plot(plot, base, lambda params, settings: tiny(params).images[0])
    cells = {cell: params for cell, params, _ in done}
    assert cells[(1, 0, 0)].steps == 4 and cells[(0, 1, 0)].prompt == "a blue fox"
    assert cells[(0, 1, 0)].negative_prompt == "blue" and cells[(1, 1, 0)].seed == FAST["seed"]
    picture = draw_grid(plot, done)
    assert picture.width > 2 * 64 and picture.height > 2 * 64
    labels = np.asarray(picture.convert("L"))[:, :picture.width - 2 * 64]  # the Y labels' column
    assert labels.min() < 100  # text was drawn


# -- bigger models, one click away ---------------------------------------------------------------------------

def test_curated_hub_models_fetch_only_what_loading_needs_and_say_what_they_need_offline(tmp_path, monkeypatch):
    import diffusers
    import huggingface_hub

    from pipelines.registry import CURATED_MODELS, HUB_FILES, ModelNotAvailable, hub_cached

    offline = Registry(tmp_path, offline=True)
    sd15 = offline.all_by_name()["sd-1.5"]
    assert sd15 in CURATED_MODELS and sd15.size and sd15.license == "CreativeML OpenRAIL-M"
    with pytest.raises(ModelNotAvailable, match=r"sd-1.5 comes from the model hub \(about 2.2 GB\) and the studio "
                                                r"is offline"):
        offline.fetch(sd15)
    calls = []
    monkeypatch.setattr(diffusers.DiffusionPipeline, "download",
                        classmethod(lambda cls, repo, **kw: calls.append(("image", repo, kw))))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append(("text", repo, kw)))
    online = Registry(tmp_path)
    online.fetch(sd15)
    online.fetch(online.all_by_name()["smollm2-360m-instruct"])
    assert calls[0] == ("image", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                        {"use_safetensors": True, "variant": "fp16"})
    assert calls[1] == ("text", "HuggingFaceTB/SmolLM2-360M-Instruct", {"allow_patterns": HUB_FILES})
    assert not any(p.endswith((".bin", ".ckpt", ".pt")) for p in HUB_FILES)  # never pickles
    # a snapshot in the hub's cache: ready only with every model's weights (a lone transformer file's base fetch
    # leaves out the transformer's own, and the curated entry of that repo is not fetched by it)
    from safetensors.torch import save_file

    snapshot = tmp_path / "snapshot"
    (snapshot / "scheduler").mkdir(parents=True)
    (snapshot / "scheduler" / "scheduler_config.json").write_text("{}")
    (snapshot / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None]}))
    for part in ("unet", "vae"):
        (snapshot / part).mkdir()
        (snapshot / part / "config.json").write_text("{}")
        save_file({"w": torch.zeros(2)}, snapshot / part / "diffusion_pytorch_model.fp16.safetensors")
    chat_gguf = online.all_by_name()["smollm3-3b-gguf"]
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: {
        "model_index.json": str(snapshot / "model_index.json"),
        chat_gguf.file: str(tmp_path / chat_gguf.file)}.get(name))
    assert hub_cached(sd15) and not hub_cached(online.all_by_name()["smollm2-360m-instruct"])
    assert hub_cached(chat_gguf)  # a GGUF repo has no config.json: its file is what is looked for
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()  # the configs alone
    assert not hub_cached(sd15) and not online.is_present(sd15)

"""Today's image families on tiny random models built offline (tests/families.py): loading by model_index.json's
class (never the name), text to image reproducible by seed, image to image and inpainting where the family has
them, refusals in words, a LoRA on and off, live previews, and a transformer from one .safetensors or GGUF file."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, Lora, load_image_model
from pipelines.image_flow import FAMILIES, check_size, family_of, pack, unpack
from pipelines.registry import ModelNotAvailable, Registry
from tests.families import BUILDERS, build_tiny_lora

FAMILY_OF_BUILDER = {"flux": "flux", "chroma": "chroma", "sd3": "sd3", "z-image": "z-image",
                     "qwen-image": "qwen-image", "sana": "sana", "flux2-klein": "flux2",
                     "flux2-dev": "flux2"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build(root) for name, build in BUILDERS.items()}


def load(folder, name=None):
    registry = Registry(folder.parent / "cache", offline=True)
    return load_image_model(registry.resolve(registry.lookup(str(folder), "image")), pick_placement("cpu"),
                            offline=True)


@pytest.fixture(scope="module")
def models(folders):
    return {name: load(folder) for name, folder in folders.items()}


def make(model, **kw) -> np.ndarray:
    params = dict(prompt="a red fox", steps=2, guidance=3.5, width=64, height=64, scheduler="Flow Euler", seed=1)
    params.update(kw)
    out = ImagePipeline(model, ImageLimits())(ImageParams(**params))
    return np.stack([np.asarray(image) for image in out.images])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_family_loads_by_its_class_and_reproduces_a_picture_by_seed(models, name):
    model = models[name]
    assert model.family.key == FAMILY_OF_BUILDER[name] and model.family.classes == FAMILIES[model.family.key].classes
    first, again, other = make(model, seed=7), make(model, seed=7), make(model, seed=8)
    assert first.shape == (1, 64, 64, 3)
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 0.5
    assert first.std() > 1  # a picture, not a flat field


def test_the_family_comes_from_model_index_not_the_name(folders, tmp_path):
    disguised = shutil.copytree(folders["flux"], tmp_path / "stable-diffusion-v1-5")
    assert load(disguised).family is FAMILIES["flux"]


def test_a_batch_image_equals_that_seed_alone(models):
    batch = make(models["flux"], seed=20, batch_size=2)
    alone = make(models["flux"], seed=21)[0]
    assert np.abs(batch[1].astype(int) - alone.astype(int)).max() <= 2  # batched matmuls round a little apart
    assert np.abs(batch[0].astype(int) - alone.astype(int)).mean() > 0.5


def test_sd_samplers_are_refused_in_words_and_the_flow_ones_differ(models):
    with pytest.raises(ValueError, match="scheduler: Flux.1 is a flow-matching model; choose one of Flow Euler"):
        make(models["flux"], scheduler="DPM++ 2M")
    karras = make(models["flux"], scheduler="Flow Euler Karras", steps=3)
    assert not np.array_equal(karras, make(models["flux"], steps=3))


def test_flow_samplers_are_refused_on_a_unet_model(tiny_sd_dir):
    with pytest.raises(ValueError, match="Flow Euler is for flow-matching models"):
        make(load(tiny_sd_dir), scheduler="Flow Euler")


def test_what_a_family_cannot_do_is_said_in_words(models):
    start = Image.new("RGB", (64, 64), (200, 30, 30))
    with pytest.raises(ValueError, match="mode: Sana has no image to image in diffusers"):
        make(models["sana"], mode="img2img", init_image=start)
    with pytest.raises(ValueError, match="mode: Chroma has no inpainting in diffusers that runs"):
        make(models["chroma"], mode="inpaint", init_image=start, mask=Image.new("L", (64, 64), 255))
    assert make(models["chroma"], mode="img2img", init_image=start, strength=0.6).shape == (1, 64, 64, 3)
    with pytest.raises(ValueError, match="mode: Flux.2 has no image to image in diffusers .Flux.2 takes reference"):
        make(models["flux2-klein"], mode="img2img", init_image=start)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    painted = make(models["flux2-klein"], mode="inpaint", init_image=start, mask=mask, strength=1.0)
    assert painted.shape == (1, 64, 64, 3)
    assert np.abs(painted[0, :, :32].astype(int) - np.asarray(start)[:, :32].astype(int)).mean() > 5  # repainted
    assert models["flux2-dev"].modes == ("txt2img",)  # Flux.2's inpainting pipeline is Klein's alone
    with pytest.raises(ValueError, match="mode: Flux.2 dev has no inpainting in diffusers .Flux.2 takes reference"):
        make(models["flux2-dev"], mode="inpaint", init_image=start, mask=mask)
    with pytest.raises(ValueError, match="hires: the hires fix is a second, image-to-image pass, which Flux.2 has not"):
        from pipelines.image_upscale import HiresParams

        make(models["flux2-klein"], hires=HiresParams(scale=1.5))
    real_flux = SimpleNamespace(vae_scale_factor=8)  # the tiny one's VAE scales by 2: any multiple of 8 fits it
    with pytest.raises(ValueError, match="width: Flux.1 makes pictures in steps of 16 pixels; choose a multiple of 16"):
        check_size(FAMILIES["flux"], real_flux, 72, 64)
    check_size(FAMILIES["flux"], real_flux, 1024, 768)


@pytest.mark.parametrize("name", ["flux", "z-image", "qwen-image", "sd3"])
def test_image_to_image_and_inpainting_keep_what_they_should(models, name):
    start = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    light = make(models[name], mode="img2img", init_image=start, strength=0.5)
    assert light.shape == (1, 64, 64, 3)
    assert np.array_equal(light, make(models[name], mode="img2img", init_image=start, strength=0.5))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    painted = make(models[name], mode="inpaint", init_image=start, mask=mask, strength=1.0)
    assert painted.shape == (1, 64, 64, 3)
    assert not np.array_equal(painted, light)


@pytest.mark.parametrize("name", ["flux", "flux2-klein", "flux2-dev"])
def test_a_lora_changes_the_picture_and_leaves_nothing_behind(models, folders, tmp_path, name):
    path = build_tiny_lora(tmp_path / "lora", folders[name])
    model = models[name]
    plain = make(model, seed=3)
    with_lora = make(model, seed=3, loras=(Lora("tiny", path, 1.0),))
    assert np.abs(with_lora.astype(int) - plain.astype(int)).mean() > 0.5
    assert np.array_equal(make(model, seed=3), plain)


def test_packing_is_the_pipelines_own(models):
    pipe = models["flux"].pipe
    noise = torch.randn(2, 4, 8, 12)
    packed = pack(FAMILIES["flux"], pipe, noise)
    assert torch.equal(packed, pipe._pack_latents(noise, 2, 4, 8, 12))
    assert torch.equal(unpack(FAMILIES["flux"], packed, (4, 8, 12)), noise)
    assert family_of("FluxImg2ImgPipeline") is FAMILIES["flux"]


def _transformer_file(folder, tmp_path, suffix, stem: str = "flux-tiny"):
    """A tiny family's transformer as one file (STEM.safetensors or .gguf), with the base folder beside it as
    STEM-config/."""
    from safetensors.torch import load_file, save_file

    weights = load_file(next((folder / "transformer").glob("*.safetensors")))
    base = shutil.copytree(folder, tmp_path / f"{stem}-config")
    if suffix == ".safetensors":
        save_file(weights, tmp_path / f"{stem}.safetensors")
        return tmp_path / f"{stem}.safetensors"
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / f"{stem}.gguf"), "flux")
    for key, tensor in weights.items():
        array = tensor.float().numpy()
        if key.endswith(".weight") and array.ndim == 2 and array.shape[-1] % 32 == 0:  # layers' Q8_0 blocks of 32
            # (as the files artists download keep other tensors — Z-Image's pad tokens — unquantized)
            writer.add_tensor(key, gguf.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                              raw_shape=gguf.quant_shape_to_byte_shape(array.shape, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert base.is_dir()
    return tmp_path / f"{stem}.gguf"


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_transformer_safetensors_file_loads_with_its_base_folder(folders, models, tmp_path, name):
    model = load(_transformer_file(folders[name], tmp_path, ".safetensors", f"{name}-tiny"))
    assert model.family == models[name].family and type(model.pipe) is type(models[name].pipe)
    assert np.array_equal(make(model, seed=5), make(models[name], seed=5))


@pytest.mark.parametrize("name", ["flux", "qwen-image", "z-image", "flux2-klein", "chroma"])
def test_a_gguf_transformer_loads_quantized_and_makes_nearly_the_same_picture(folders, models, tmp_path, name):
    model = load(_transformer_file(folders[name], tmp_path, ".gguf", f"{name}-tiny"))
    quantized = [p for p in model.pipe.transformer.parameters() if type(p).__name__ == "GGUFParameter"]
    assert quantized, "the GGUF weights stay quantized"
    picture, reference = make(model, seed=5).astype(int), make(models[name], seed=5).astype(int)
    assert np.abs(picture - reference).mean() < 8


def test_a_gguf_file_without_its_base_folder_is_refused_in_words(tmp_path):
    lonely = tmp_path / "flux1-dev-Q4_0.gguf"
    lonely.write_bytes(b"GGUF")
    with pytest.raises(ModelNotAvailable, match="put its base model's diffusers folder beside it"):
        load(lonely)


def test_curated_entries_for_each_family_say_license_size_and_vram(tmp_path):
    from pipelines.registry import CURATED_MODELS

    registry = Registry(tmp_path, offline=True)
    names = ("flux.1-schnell", "flux.1-dev", "flux.2-klein-4b", "z-image-turbo", "qwen-image", "qwen-image-edit",
             "sd3.5-medium", "chroma1-hd", "sana-600m-512")
    specs = {spec.name: spec for spec in CURATED_MODELS}
    for name in names:
        spec = registry.lookup(name, "image")
        assert spec is specs[name] and spec.source == "hub" and "/" in spec.location
        assert spec.license and spec.size.startswith("about") and "GB" in spec.vram and spec.description
    with pytest.raises(ModelNotAvailable, match="the studio is offline"):
        registry.resolve(registry.lookup("flux.1-schnell", "image"))


def test_the_image_tab_offers_the_familys_samplers(folders, tiny_sd_dir, tmp_path):
    from pipelines.image import SCHEDULERS
    from pipelines.image_flow import FLOW_SCHEDULERS, sampler_choices

    registry = Registry(tmp_path, offline=True)
    sd = tuple(SCHEDULERS)
    assert sampler_choices(registry.lookup(str(folders["flux"]), "image"), sd) == (list(FLOW_SCHEDULERS), "Flow Euler")
    assert sampler_choices(registry.lookup(str(tiny_sd_dir), "image"), sd) == (list(SCHEDULERS), "DPM++ 2M")
    choices, value = sampler_choices(registry.lookup("someone/not-downloaded", "image"), sd)
    assert choices == [*SCHEDULERS, *FLOW_SCHEDULERS] and value == "DPM++ 2M"


@pytest.mark.parametrize("name", ["flux", "qwen-image", "z-image", "sana", "flux2-klein", "flux2-dev"])
def test_live_previews_decode_the_familys_latents(models, name):
    seen = []
    params = ImageParams(prompt="a red fox", steps=3, width=64, height=64, scheduler="Flow Euler", seed=1)
    ImagePipeline(models[name], ImageLimits())(params, callback=lambda done, total, preview: seen.append(
        (done, total, preview)), preview_every=1)
    assert [(done, total) for done, total, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    previews = [preview for _, _, preview in seen]
    assert all(p is not None and p.size == (64, 64) for p in previews)
    assert np.asarray(previews[0]).std() > 1


def test_a_fetched_tiny_autoencoder_previews_flow_latents_whole_and_sharp(models, tmp_path, monkeypatch):
    """TAEF1 on disk (`studio fetch taef1`): the host hands it to a Flux model, whose previews then decode the
    whole latent grid with it (8 pixels per latent) as Flux's pipeline decodes with a tiny VAE in place of its own."""
    from diffusers import AutoencoderTiny

    import pipelines.image_flow as image_flow
    from pipelines.image_speed import SpeedParams, speed_up

    model = models["flux"]
    channels = model.pipe.transformer.config.in_channels // 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderTiny(latent_channels=channels, encoder_block_out_channels=(8, 8, 8, 8),
                        decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                        num_decoder_blocks=(1, 1, 1, 1), shift_factor=0.25).save_pretrained(tmp_path / "taef1")
    assert "TAEF1 live previews" in speed_up(model, SpeedParams(tiny_decoders=(("taef1", str(tmp_path / "taef1")),)))
    read = []
    original = image_flow.flow_preview
    monkeypatch.setattr(image_flow, "flow_preview", lambda family, pipe, latents, w, h, tiny=None: read.append(
        (latents.clone(), tiny)) or original(family, pipe, latents, w, h, tiny=tiny))
    seen = []
    try:
        ImagePipeline(model, ImageLimits())(ImageParams(prompt="a red fox", steps=2, width=64, height=64,
                                                        scheduler="Flow Euler", seed=1),
                                            callback=lambda d, t, p: seen.append(p), preview_every=1)
    finally:
        model.preview_vae = None  # the module's other tests preview with the model's own VAE
    latents, tiny = read[-1]
    grid = unpack(FAMILIES["flux"], latents[None].float(), (channels, 32, 32))[0]  # 64 px ÷ the tiny VAE's 2
    with torch.inference_mode():
        expected = tiny.decode(grid[None] + 0.25).sample[0].clamp(-1, 1).add(1).div(2).mul(255).round().byte()
    assert seen[-1].size == (256, 256) and np.asarray(seen[-1]).std() > 1
    assert np.array_equal(np.asarray(seen[-1]), expected.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("name", ["flux", "flux2-dev"])
def test_previews_of_big_pictures_decode_shrunk_latents(models, name):
    seen = []
    params = ImageParams(prompt="a red fox", steps=1, width=128, height=96, scheduler="Flow Euler", seed=1)
    ImagePipeline(models[name], ImageLimits())(params, callback=lambda d, t, p: seen.append(p), preview_every=1)
    assert seen[0].size == (64, 48)  # 64×48 latents area-averaged to 32×24, decoded by the VAE (×2)
    assert np.asarray(seen[0]).std() > 1


@pytest.mark.parametrize("name", ["flux2-klein", "flux2-dev"])
def test_a_flux2_preview_of_the_last_step_is_the_final_picture(models, name):
    """At 64×64 the VAE's latents are 32×32, decoded unshrunk: the last preview is the picture itself, which a
    token order, patch order or batch-norm statistic read wrongly would spoil (each makes another picture; rows
    read as columns also make the wrong size on a picture that is not square, as in the test above)."""
    seen = []
    params = ImageParams(prompt="a red fox", steps=3, width=64, height=64, scheduler="Flow Euler", seed=4)
    out = ImagePipeline(models[name], ImageLimits())(params, callback=lambda d, t, p: seen.append(p), preview_every=1)
    final, last = np.asarray(out.images[0]).astype(int), np.asarray(seen[-1]).astype(int)
    assert last.shape == final.shape and np.abs(last - final).max() <= 2
    assert np.abs(np.asarray(seen[0]).astype(int) - final).mean() > 2  # the first step's is still on its way


def test_weighting_syntax_and_a_distilled_models_negative_prompt_are_said_not_hidden(models):
    out = ImagePipeline(models["flux"], ImageLimits())(ImageParams(
        prompt="a (red:1.4) fox", negative_prompt="blurry", steps=1, width=64, height=64, scheduler="Flow Euler",
        seed=2))
    assert out.notes == ("Flux.1 does not weight words; the prompt was used without (…) and […]",
                         "Flux.1 is guidance-distilled and reads no negative prompt; it was not used")
    plain = ImagePipeline(models["flux"], ImageLimits())(ImageParams(
        prompt="a red fox", steps=1, width=64, height=64, scheduler="Flow Euler", seed=2))
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(plain.images[0]))


def test_flux2_dev_reads_its_processors_tokenizer_where_torchvision_is_missing(folders, models):
    """The real Flux.2 dev names a PixtralProcessor, which transformers makes only with torchvision; the pipeline
    asks of it only the chat template, so without torchvision the folder's tokenizer is read in its place."""
    import importlib.util

    from diffusers import DiffusionPipeline

    from pipelines.image_flow import family_parts

    assert json.loads((folders["flux2-dev"] / "model_index.json").read_text())["tokenizer"][1] == "PixtralProcessor"
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: transformers reads the PixtralProcessor itself")
    with pytest.raises(ValueError, match="Placeholder'> of .*Flux2Pipeline'> cannot be loaded"):  # diffusers alone
        DiffusionPipeline.from_pretrained(folders["flux2-dev"], local_files_only=True)
    given, after = family_parts(family_of("Flux2Pipeline"), folders["flux2-dev"])
    assert given == {"tokenizer": None} and after["tokenizer"].chat_template
    assert models["flux2-dev"].pipe.tokenizer.chat_template == after["tokenizer"].chat_template
    assert family_parts(family_of("Flux2KleinPipeline"), folders["flux2-klein"]) == ({}, {})
    assert make(models["flux2-dev"]).std() > 1


def _kohya_flux_lora(folder, rank: int = 4, alpha: float = 2.0, seed: int = 7):
    """A Flux.1 LoRA as artists download them (kohya's sd-scripts names, BFL's block layout: fused qkv, `alpha`
    keys) for the tiny Flux (width 32, MLP 128), and the same LoRA in diffusers' names, weights scaled by
    alpha/rank and qkv split as diffusers' converter does."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    shapes = {"double_blocks_0_img_attn_proj": (32, 32), "double_blocks_0_img_attn_qkv": (96, 32),
              "double_blocks_0_img_mlp_0": (128, 32), "double_blocks_0_txt_attn_proj": (32, 32),
              "single_blocks_0_linear2": (32, 160)}
    targets = {"double_blocks_0_img_attn_proj": ["transformer_blocks.0.attn.to_out.0"],
               "double_blocks_0_img_attn_qkv": [f"transformer_blocks.0.attn.to_{x}" for x in "qkv"],
               "double_blocks_0_img_mlp_0": ["transformer_blocks.0.ff.net.0.proj"],
               "double_blocks_0_txt_attn_proj": ["transformer_blocks.0.attn.to_add_out"],
               "single_blocks_0_linear2": ["single_transformer_blocks.0.proj_out"]}
    kohya, diffusers_named = {}, {}
    for name, (out, inp) in shapes.items():
        down = torch.randn(rank, inp, generator=generator)
        up = torch.randn(out, rank, generator=generator)
        kohya.update({f"lora_unet_{name}.lora_down.weight": down, f"lora_unet_{name}.lora_up.weight": up,
                      f"lora_unet_{name}.alpha": torch.tensor(alpha)})
        for target, part in zip(targets[name], up.chunk(len(targets[name]))):
            diffusers_named[f"transformer.{target}.lora_A.weight"] = down * (alpha / rank)
            diffusers_named[f"transformer.{target}.lora_B.weight"] = part.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(kohya, folder / "kohya.safetensors")
    save_file(diffusers_named, folder / "diffusers.safetensors")
    return folder / "kohya.safetensors", folder / "diffusers.safetensors"


def test_a_flux_lora_in_kohyas_names_draws_as_the_same_lora_in_diffusers_names(models, tmp_path):
    kohya, diffusers_named = _kohya_flux_lora(tmp_path / "loras")
    model = models["flux"]
    plain = make(model, seed=4)
    drawn = make(model, seed=4, loras=(Lora("kohya", str(kohya), 1.0),))
    assert np.abs(drawn.astype(int) - plain.astype(int)).mean() > 0.5  # read, not skipped
    assert np.array_equal(drawn, make(model, seed=4, loras=(Lora("same", str(diffusers_named), 1.0),)))
    assert np.array_equal(make(model, seed=4), plain)  # and gone after the request


@pytest.mark.parametrize("suffix", [".safetensors", ".gguf"])
def test_a_lone_transformer_file_reads_the_rest_of_its_model_from_its_base_repo(folders, models, tmp_path,
                                                                              monkeypatch, suffix):
    """A transformer file downloaded alone (no folder beside it): diffusers tells its model from the tensor names
    (here Z-Image-Turbo's), and its base repo's configs, text encoders and VAE come from the model cache — fetched
    there first when online; offline and not cached, it is refused in words naming the repo."""
    from tests.test_memory_quantize import _hub_cache

    file = _transformer_file(folders["z-image"], tmp_path, suffix, "z_image_turbo_q8")
    shutil.rmtree(tmp_path / "z_image_turbo_q8-config")  # downloaded alone
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(ModelNotAvailable, match="needs the rest of its model from Tongyi-MAI/Z-Image-Turbo, and it "
                                                "is not in the model cache and the studio is offline"):
        load(file)
    from pipelines.image_flow import spec_family
    from pipelines.registry import ModelSpec

    lone = ModelSpec("z-image-q8", "image", "file", str(file))
    assert spec_family(lone) is None  # the Image tab offers both samplers' lists until its base is known
    _hub_cache(monkeypatch, tmp_path, folders["z-image"], "Tongyi-MAI/Z-Image-Turbo")
    snapshot = next((tmp_path / "hub").glob("models--Tongyi-MAI--Z-Image-Turbo/snapshots/*"))
    for weights in (snapshot / "transformer").glob("*.safetensors*"):  # as the base fetch leaves it (BASE_PARTS)
        weights.unlink()
    assert spec_family(lone) is FAMILIES["z-image"]  # known without reading a weight, once the base is cached
    from pipelines.registry import Registry

    curated = Registry(tmp_path / "studio-cache", offline=True)
    assert not curated.is_present(curated.all_by_name()["z-image-turbo"])  # its transformer was never fetched
    model = load(file)
    assert model.family is FAMILIES["z-image"]
    picture, reference = make(model, seed=5).astype(int), make(models["z-image"], seed=5).astype(int)
    assert np.array_equal(picture, reference) if suffix == ".safetensors" else np.abs(picture - reference).mean() < 8


def _header_only(path, shapes: dict) -> Path:
    """A safetensors file with these tensor names and shapes (zeros): what `file_base_repo` reads is its header."""
    from safetensors.torch import save_file

    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, path)
    return path


FLUX1 = {"double_blocks.0.img_attn.norm.key_norm.scale": (2,), "img_in.weight": (2, 64)}


@pytest.mark.parametrize("name, shapes, repo", [
    ("flux1-dev-fp8.safetensors", {**FLUX1, "guidance_in.in_layer.bias": (2,)}, "black-forest-labs/FLUX.1-dev"),
    ("flux1-schnell.safetensors", FLUX1, "black-forest-labs/FLUX.1-schnell"),
    ("flux1-kontext-dev.safetensors", {**FLUX1, "guidance_in.in_layer.bias": (2,)},
     "black-forest-labs/FLUX.1-Kontext-dev"),
    ("flux2-dev.safetensors", {"single_stream_modulation.lin.weight": (2, 2), "txt_in.weight": (2, 15360)},
     "black-forest-labs/FLUX.2-dev"),
    ("flux-2-klein-4b.safetensors", {"single_stream_modulation.lin.weight": (2, 2), "txt_in.weight": (2, 7680)},
     "black-forest-labs/FLUX.2-klein-4B"),
    ("flux-2-klein-9b.safetensors", {"model.diffusion_model.single_stream_modulation.lin.weight": (2, 2),
                                     "model.diffusion_model.txt_in.weight": (2, 12288)},
     "black-forest-labs/FLUX.2-klein-9B"),
    ("sd15.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (2, 4, 3, 3)}, None),
])
def test_a_lone_files_base_repo_is_told_from_its_tensor_names_and_shapes(tmp_path, name, shapes, repo):
    from pipelines.image_flow import file_base_repo

    assert file_base_repo(_header_only(tmp_path / name, shapes)) == repo


def test_a_lone_file_that_cannot_be_told_is_refused_or_left_to_the_sd_loader(tmp_path):
    from pipelines.image_flow import file_base_repo
    from pipelines.memory import safetensors_header

    odd = _header_only(tmp_path / "flux2-odd.safetensors", {"single_stream_modulation.lin.weight": (2, 2),
                                                            "txt_in.weight": (2, 999)})
    with pytest.raises(ModelNotAvailable, match="a Flux.2 transformer of a size the studio does not know .text width "
                                                "999.: put its base model's diffusers folder beside it"):
        file_base_repo(odd)
    crafted = tmp_path / "crafted.safetensors"
    crafted.write_bytes((2**40).to_bytes(8, "little") + b"{}")  # a header "a terabyte long"
    with pytest.raises(ValueError, match="is not a safetensors file .its header would be 1099511627776 bytes"):
        safetensors_header(crafted)
    assert file_base_repo(crafted) is None

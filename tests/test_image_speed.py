"""The speed path (pipelines/image_speed.py) on tiny random-weight models: compiled pictures equal eager ones and
say when a new size compiles, fused projections come apart before a LoRA, TAESD decodes previews, and the
settings name a bad value. The GPU itself (inductor kernels, channels-last, SDPA kernels) is tests/gpu."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, Lora, load_image_model, preview_image
from pipelines.image_speed import SpeedParams, speed_up, takes_taesd
from pipelines.registry import Registry
from studio.config import Settings

PARAMS = ImageParams(prompt="red heart", steps=3, batch_size=2, width=64, height=64, seed=5, scheduler="Euler a")


def load(tiny_sd_dir) -> ImagePipeline:
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")), pick_placement("cpu"),
                             offline=True)
    return ImagePipeline(model, ImageLimits(max_steps=60, max_batch_size=4))


def pixels(out) -> np.ndarray:
    return np.stack([np.asarray(image).astype(np.int16) for image in out.images])


@pytest.fixture(scope="module")
def eager(tiny_sd_dir):
    return load(tiny_sd_dir)


def test_a_compiled_model_draws_the_eager_pictures_and_says_when_a_new_size_compiles(tiny_sd_dir, eager):
    pipe = load(tiny_sd_dir)
    # eager: dynamo captures the graphs (hooks and all) and runs them without generating kernels
    applied = speed_up(pipe.model, SpeedParams(compile=True, compile_backend="eager"))
    assert any(a.startswith("torch.compile (eager") for a in applied), applied
    assert "SDPA attention" in applied
    assert "64×64 pictures, batch 2" in pipe.compile_note(PARAMS)
    compiled, plain = pipe(PARAMS), eager(PARAMS)
    assert compiled.seeds == plain.seeds
    assert np.array_equal(pixels(compiled), pixels(plain))  # the captured graphs run the same ops
    assert pipe.compile_note(PARAMS) == ""  # this shape is compiled now
    assert pipe.compile_note(replace(PARAMS, width=96)) != ""  # another size compiles again
    assert pipe.compile_note(replace(PARAMS, guidance=1.0)) != ""  # no guidance: half the UNet batch
    # two requests of one new shape at once (one compiles, the other waits for it): both draw the eager picture
    params, results = replace(PARAMS, batch_size=1, width=72, height=72), [None, None]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, pipe(params))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plain = pixels(eager(params))
    assert all(np.array_equal(pixels(out), plain) for out in results)


def test_fused_projections_come_apart_before_a_lora_and_the_lora_picture_is_unchanged(tiny_sd_dir, eager,
                                                                                        tmp_path):
    from tests.conftest import build_tiny_lora

    lora = Lora("tiny", build_tiny_lora(tmp_path, tiny_sd_dir), 0.8)
    fused = load(tiny_sd_dir)
    assert "fused QKV projections" in speed_up(fused.model, SpeedParams(fuse_qkv=True))
    assert fused.model.fused
    near = np.abs(pixels(fused(PARAMS)) - pixels(eager(PARAMS))).max()
    assert near <= 2
    with_lora = replace(PARAMS, loras=(lora,))
    made = fused(with_lora)
    assert not fused.model.fused  # LoRAs target to_q / to_k / to_v: the fused matrix would bypass them
    assert np.array_equal(pixels(made), pixels(eager(with_lora)))  # the same weights as never fused: bit for bit
    eager(PARAMS)  # the shared eager model goes back to no LoRA for the next test


def test_taesd_decodes_live_previews_of_sd_latents():
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                               num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).eval()
        latents = torch.randn(4, 64, 48)  # a 384×512 SD picture's latents: too big for the model's own VAE preview
    picture = preview_image(object(), latents, tiny)
    assert picture.size == (384, 512)
    expected = tiny.decode(latents[None]).sample[0].clamp(-1, 1).add(1).div(2).mul(255).round().byte()
    assert np.array_equal(np.asarray(picture), expected.permute(1, 2, 0).numpy())
    fallback = preview_image(object(), latents)  # without TAESD: the linear approximation, at latent size
    assert fallback.size == (48, 64)


def test_taesd_is_for_sd_family_latents_only(eager):
    assert not takes_taesd(eager.model)  # the tiny model's VAE makes 2 pixels per latent, not 8


def test_speed_settings_name_the_bad_field_and_follow_the_device(tmp_path):
    with pytest.raises(ValueError, match="compile_mode must be one of default, reduce-overhead"):
        Settings(compile_mode="fastest").validate()
    with pytest.raises(ValueError, match="compile_backend must be one of inductor"):
        SpeedParams(compile_backend="tensorrt")
    with pytest.raises(ValueError, match="preview_decoder must be auto, off or a folder"):
        Settings(preview_decoder=str(tmp_path / "nowhere")).validate()
    cpu, cuda = SpeedParams.for_device(torch.device("cpu")), SpeedParams.for_device(torch.device("cuda"), compile=True)
    assert (cpu.channels_last, cpu.fuse_qkv, cpu.compile) == (False, False, False)  # CPU pictures stay bit for bit
    assert (cuda.channels_last, cuda.fuse_qkv, cuda.compile) == (True, True, True)


def test_the_host_uses_a_taesd_folder_from_the_settings_and_none_when_off(tmp_path):
    from studio.host import ModelHost

    folder = tmp_path / "taesd"
    folder.mkdir()
    on = ModelHost.create(Settings(device="cpu", cache_dir=tmp_path / "cache", preview_decoder=str(folder)))
    assert on.speed.preview_decoder == on.speed.preview_decoder_xl == str(folder)
    off = ModelHost.create(Settings(device="cpu", cache_dir=tmp_path / "cache", preview_decoder="off"))
    assert off.speed.preview_decoder == ""
    auto = ModelHost.create(Settings(device="cpu", cache_dir=tmp_path / "cache", offline=True))
    assert auto.speed.preview_decoder == ""  # not on disk: never downloaded by itself



def test_the_host_hands_on_the_flow_families_tiny_autoencoders_on_disk_unless_previews_are_off(tmp_path, monkeypatch):
    from studio.host import ModelHost

    on_disk = {"taef1": str(tmp_path / "taef1")}  # as if `studio fetch taef1` had put it in the hub cache
    monkeypatch.setattr(ModelHost, "_registry_location", lambda self, name: on_disk.get(name, ""))
    auto = ModelHost.create(Settings(device="cpu", cache_dir=tmp_path / "cache", offline=True))
    assert auto.speed.tiny_decoders == (("taef1", str(tmp_path / "taef1")),)
    off = ModelHost.create(Settings(device="cpu", cache_dir=tmp_path / "cache", preview_decoder="off"))
    assert off.speed.tiny_decoders == ()
    assert {spec.name for spec in auto.registry.all_by_name().values() if spec.modality == "helper"} >= {
        "taesd", "taesdxl", "taef1", "taesd3"}

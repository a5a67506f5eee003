"""Image pipeline on a tiny random-weight Stable Diffusion built from configs and loaded from disk."""

from __future__ import annotations

import json
import math
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines.device import pick_placement
from pipelines.image import (
    SCHEDULERS,
    GenerationCancelled,
    ImageLimits,
    ImageParams,
    ImagePipeline,
    Lora,
    load_image_model,
    open_user_image,
)
from pipelines.media import a1111_parameters, png_with_metadata, read_png_info
from pipelines.registry import ModelNotAvailable, ModelSpec, Registry

FAST = dict(prompt="a red fox", steps=3, width=64, height=64, scheduler="DDIM")


@pytest.fixture(scope="module")
def tiny_image(tiny_sd_dir):
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")), pick_placement("cpu"),
                             offline=True)
    return ImagePipeline(model, ImageLimits(max_steps=50, max_megapixels=0.3, max_batch_size=4, max_batch_count=2))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_seeded_txt2img_is_reproducible_per_image(tiny_image):
    a = tiny_image(ImageParams(**FAST, seed=10, batch_size=2))
    b = tiny_image(ImageParams(**FAST, seed=11))
    assert a.seeds == [10, 11] and a.images[0].size == (64, 64) and a.images[0].mode == "RGB"
    # seed 11 alone = seed 11 in a batch (batched float math may differ by a level or two)
    assert np.abs(pixels(a.images[1]) - pixels(b.images[0])).max() <= 2
    assert np.array_equal(pixels(b.images[0]), pixels(tiny_image(ImageParams(**FAST, seed=11)).images[0]))
    assert not np.array_equal(pixels(a.images[0]), pixels(a.images[1]))
    counted = tiny_image(ImageParams(**FAST, seed=10, batch_size=2, batch_count=2))
    assert counted.seeds == [10, 11, 12, 13] and len(counted.images) == 4


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_scheduler_runs(tiny_image, scheduler):
    out = tiny_image(ImageParams(**{**FAST, "scheduler": scheduler}, seed=1))
    array = pixels(out.images[0])
    assert array.shape == (64, 64, 3) and 0 <= array.min() and array.max() <= 255


def test_variation_seed_blends_between_two_seeds(tiny_image):
    base = tiny_image(ImageParams(**FAST, seed=3)).images[0]
    other = tiny_image(ImageParams(**FAST, seed=4)).images[0]
    zero = tiny_image(ImageParams(**FAST, seed=3, variation_seed=4, variation_strength=0.0)).images[0]
    full = tiny_image(ImageParams(**FAST, seed=3, variation_seed=4, variation_strength=1.0)).images[0]
    half = tiny_image(ImageParams(**FAST, seed=3, variation_seed=4, variation_strength=0.5)).images[0]
    assert np.array_equal(pixels(zero), pixels(base))
    assert np.abs(pixels(full) - pixels(other)).max() <= 1
    assert not np.array_equal(pixels(half), pixels(base))


def test_img2img_and_inpaint(tiny_image):
    start = tiny_image(ImageParams(**FAST, seed=5)).images[0]
    i2i = tiny_image(ImageParams(**FAST, mode="img2img", init_image=start, strength=0.6, seed=1))
    assert i2i.images[0].size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = tiny_image(ImageParams(**FAST, mode="inpaint", init_image=start, mask=mask, seed=1))
    assert inpainted.images[0].size == (64, 64)


def test_cancel_raises_and_returns_nothing(tiny_image):
    cancel = threading.Event()
    steps = []

    def on_step(done, total, preview):
        steps.append(done)
        cancel.set()

    with pytest.raises(GenerationCancelled):
        tiny_image(ImageParams(**{**FAST, "steps": 10}, seed=1), cancel=cancel, callback=on_step)
    assert steps == [1]


def test_previews_arrive_every_few_steps(tiny_image):
    previews = []
    tiny_image(ImageParams(**{**FAST, "steps": 6}, seed=1), preview_every=2,
               callback=lambda done, total, image: previews.append((done, total, image)))
    assert [d for d, _, _ in previews] == [1, 2, 3, 4, 5, 6]
    shown = [img for _, _, img in previews if img is not None]
    assert len(shown) == 3 and shown[0].size == (64, 64)


def test_png_metadata_roundtrip(tmp_path, tiny_image):
    image = tiny_image(ImageParams(**FAST, seed=2)).images[0]
    settings = {"Steps": 3, "Sampler": "DDIM", "CFG scale": 7.0, "Seed": 2, "Size": "64x64", "Model": "tiny"}
    data = png_with_metadata(image, a1111_parameters("a red fox, night", "blurry", settings), {"seed": 2})
    path = tmp_path / "out.png"
    path.write_bytes(data)
    info = read_png_info(path)
    assert info["prompt"] == "a red fox, night" and info["negative_prompt"] == "blurry"
    assert info["settings"]["Seed"] == "2" and info["settings"]["Size"] == "64x64"
    assert info["studio"] == {"seed": 2} and info["ai_generated"] is True
    assert np.array_equal(pixels(Image.open(path)), pixels(image))


def test_lora_load_and_unload_restore_the_original(tmp_path, tiny_image, tiny_sd_dir):
    from tests.conftest import build_tiny_lora

    lora = build_tiny_lora(tmp_path, tiny_sd_dir)
    before = pixels(tiny_image(ImageParams(**FAST, seed=8)).images[0])
    with_lora = pixels(tiny_image(ImageParams(**FAST, seed=8, loras=(Lora("style", lora, 1.0),))).images[0])
    assert tiny_image.model.loras == {"style": 1.0}  # the shared weights hold it until a request states another set
    after = pixels(tiny_image(ImageParams(**FAST, seed=8)).images[0])  # a request without LoRAs runs without
    assert not np.array_equal(before, with_lora)
    assert np.array_equal(before, after) and tiny_image.model.loras == {}


def fake_png(path, width: int, height: int) -> None:
    """A PNG whose header claims width×height (a decompression bomb needs no real pixels to be refused)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def test_uploads_are_checked(tmp_path):
    bomb = tmp_path / "bomb.png"
    fake_png(bomb, 20_000, 20_000)
    with pytest.raises(ValueError, match="far too large to open safely .*the limit is 16 megapixels"):
        open_user_image(bomb)
    big = tmp_path / "big.png"
    fake_png(big, 5000, 5000)
    with pytest.raises(ValueError, match="5000×5000 \\(25 megapixels\\); the limit is 16 megapixels"):
        open_user_image(big)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        open_user_image(text)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(rgba)
    image, notes = open_user_image(rgba)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255) and notes == ["converted from RGBA to RGB"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be a whole number from 1 to"),
        ({"steps": 10_000}, "steps must be a whole number from 1 to"),
        ({"steps": 51}, "steps must be a whole number from 1 to 50"),
        ({"width": 7}, "width must be a whole number from 64 to 2,048"),
        ({"width": 100_000}, "width must be a whole number from 64 to 2,048"),
        ({"width": 100}, "width must be a multiple of 8"),
        ({"width": 1024, "height": 1024}, "the limit is 0.3"),
        ({"guidance": math.nan}, "guidance must be a number from 0.0 to 30.0"),
        ({"batch_size": 1000}, "batch_size must be a whole number from 1 to"),
        ({"batch_size": 5}, "batch_size must be a whole number from 1 to 4"),
        ({"scheduler": "Heun++"}, "scheduler must be one of"),
        ({"mode": "img2img"}, "init_image: img2img needs a starting image"),
    ],
)
def test_bad_params_are_rejected_with_the_field(tiny_image, changes, message):
    with pytest.raises(ValueError) as info:
        params = ImageParams(**{**FAST, **changes})
        tiny_image(params)
    assert message in str(info.value)


def test_empty_prompt_is_unconditional_and_mask_size_is_checked(tiny_image):
    assert tiny_image(ImageParams(**{**FAST, "prompt": ""}, seed=1)).images[0].size == (64, 64)
    with pytest.raises(ValueError, match="mask is 32×32 but the image is 64×64"):
        ImageParams(**FAST, mode="inpaint", init_image=Image.new("RGB", (64, 64)), mask=Image.new("L", (32, 32)))


def test_missing_corrupt_and_pickle_checkpoints(tmp_path, tiny_sd_dir):
    import shutil

    registry = Registry(tmp_path / "cache", offline=True)
    with pytest.raises(ValueError, match="neither a known image model"):
        registry.lookup(str(tmp_path / "nowhere.safetensors"), "image")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_dir, broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelNotAvailable, match="could not load image model"):
        load_image_model(registry.resolve(registry.lookup(str(broken), "image")), pick_placement("cpu"), offline=True)
    no_index = tmp_path / "no-index"
    no_index.mkdir()
    with pytest.raises(ModelNotAvailable, match="no model_index.json"):
        load_image_model(registry.resolve(registry.lookup(str(no_index), "image")), pick_placement("cpu"))
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(ModelNotAvailable, match="pickle checkpoint: loading it can run arbitrary code"):
        load_image_model(registry.resolve(ModelSpec("p", "image", "file", str(pickle))), pick_placement("cpu"))
    assert json.loads((tiny_sd_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_single_file_checkpoint_loads_offline_with_a_local_config(tmp_path, tiny_sd_dir, tiny_image):
    from tests.ldm_export import export_ldm_checkpoint

    single = export_ldm_checkpoint(tiny_sd_dir, tmp_path / "tiny-sd.safetensors")
    registry = Registry(tmp_path / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(single), "image")), pick_placement("cpu"),
                             offline=True, single_file_config=tiny_sd_dir)
    from_file = ImagePipeline(model)(ImageParams(**FAST, seed=6)).images[0]
    from_folder = tiny_image(ImageParams(**FAST, seed=6)).images[0]
    assert np.abs(pixels(from_file) - pixels(from_folder)).max() <= 1  # same weights, same picture
    import shutil

    shutil.copytree(tiny_sd_dir, tmp_path / "tiny-sd-config")  # found next to the file, as the README says
    again = load_image_model(registry.resolve(registry.lookup(str(single), "image")), pick_placement("cpu"), offline=True)
    assert type(again.pipe).__name__ == "StableDiffusionPipeline"

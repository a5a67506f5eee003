"""The embedded emoji model: data preparation, the --tiny training path end to end, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.device import pick_placement
from pipelines.image import ImageParams, ImagePipeline, load_image_model
from pipelines.packages import PACKAGES, fetch_package
from pipelines.registry import DEFAULT_ASSETS, Registry
from pipelines.training.emoji_data import is_held_out, parse_annotations, rasterize_svg

pytestmark = pytest.mark.slow  # the real emoji sets and the shipped emoji weights


@pytest.fixture(scope="module")
def openmoji(cache_dir):
    return fetch_package(PACKAGES["openmoji"], cache_dir) / "package"


def test_annotations_parse_and_the_split_is_fixed(openmoji):
    records = parse_annotations(openmoji / "data" / "openmoji.json")
    assert len(records) > 4000
    heart = next(r for r in records if r.annotation == "red heart")
    assert heart.group == "smileys-emotion" and "love" in heart.tags
    assert heart.captions()[0] == "red heart" and all("red heart" in c for c in heart.captions())
    held = [r for r in records if r.held_out]
    assert 0.08 < len(held) / len(records) < 0.12
    assert [r.held_out for r in records[:50]] == [is_held_out(r.hexcode) for r in records[:50]]


def test_rasterize_a_known_emoji(openmoji):
    records = parse_annotations(openmoji / "data" / "openmoji.json")
    heart = next(r for r in records if r.annotation == "red heart")
    image = rasterize_svg(openmoji / "color" / "svg" / f"{heart.hexcode}.svg", 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == (255, 255, 255)  # transparent corners become white
    ink = image[(image.astype(int).sum(-1) < 700)]  # pixels that are not white
    red = ink[(ink[:, 0] > 150) & (ink[:, 1] < 100) & (ink[:, 2] < 100)]
    assert len(red) > 0.4 * len(ink), "a red heart is mostly red"


def test_tiny_training_writes_a_folder_the_image_loader_runs(tmp_path, cache_dir):
    from pipelines.training.emoji import EmojiTrainParams, train_emoji

    out = tmp_path / "emoji-tiny"
    report = train_emoji(EmojiTrainParams(out_dir=out, cache_dir=cache_dir, work_dir=tmp_path / "work", tiny=True,
                                          vae_steps=3, unet_steps=3, eval_images=4), log=lambda _m: None)
    assert (out / "model_index.json").is_file() and (out / "samples.png").is_file()
    assert set(report.metrics) >= {"vae_psnr_heldout_db", "classifier_balanced_acc_generated_heldout_captions"}
    seeds = report.metrics["classifier_balanced_acc_generated_heldout_captions_3_seeds"]
    assert len(seeds) == 3 and seeds[0] == report.metrics["classifier_balanced_acc_generated_heldout_captions"]
    assert abs(report.metrics["classifier_balanced_acc_generated_heldout_captions_mean"] - sum(seeds) / 3) < 1e-3
    registry = Registry(tmp_path / "cache", offline=True)
    pipe = ImagePipeline(load_image_model(registry.resolve(registry.lookup(str(out), "image")), pick_placement("cpu")))
    from PIL import Image

    start = pipe(ImageParams(prompt="x", steps=2, width=64, height=64, seed=0)).images[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    for mode in ("txt2img", "img2img", "inpaint"):
        result = pipe(ImageParams(prompt="red heart", mode=mode, init_image=None if mode == "txt2img" else start,
                                  mask=mask if mode == "inpaint" else None, steps=2, width=64, height=64, seed=1))
        assert result.images[0].size == (64, 64)
    # Resuming finds the finished phases and does not train again.
    again = train_emoji(EmojiTrainParams(out_dir=out, cache_dir=cache_dir, work_dir=tmp_path / "work", tiny=True,
                                         vae_steps=3, unet_steps=3, eval_images=4), log=lambda _m: None)
    assert again.metrics["vae_psnr_heldout_db"] == report.metrics["vae_psnr_heldout_db"]
    assert again.metrics["seconds"] >= report.metrics["seconds"]  # the time of every run, added up
    # Every set is credited on the card, and the style phrases get their own sample grids.
    card = (out / "README.md").read_text()
    assert "Twemoji © Twitter, Inc. and other contributors, CC BY 4.0" in card and "@iconify-json/noto@" in card
    assert Image.open(out / "samples-twemoji.png").size == Image.open(out / "samples.png").size


def test_tiny_finetune_continues_the_main_phase_and_resumes_bit_for_bit(tmp_path, cache_dir):
    import dataclasses
    import shutil

    import torch

    from pipelines.training.emoji import (
        EmojiTrainParams,
        finetune_unet,
        load_text_encoder,
        reproduce_command,
        train_unet,
        train_vae,
    )
    from pipelines.training.emoji_data import EmojiSet, load_emoji_sets

    def params(work: str, steps: int) -> EmojiTrainParams:
        return EmojiTrainParams(out_dir=tmp_path / "out", cache_dir=cache_dir, work_dir=tmp_path / work, tiny=True,
                                vae_steps=2, unet_steps=2, finetune_steps=steps, cond_noise=0.3)

    quiet = lambda _m: None  # noqa: E731
    data = load_emoji_sets(cache_dir, limit=48, log=quiet).split(held_out=False)
    train = EmojiSet(data.images[:40], data.records[:40])
    tokenizer, encoder = load_text_encoder(params("a", 4), quiet)
    (tmp_path / "a").mkdir()
    vae = train_vae(params("a", 4), train, quiet)
    main = train_unet(params("a", 4), train, vae, tokenizer, encoder, quiet)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same main phase, fine-tuned in two sittings below
    straight = finetune_unet(params("a", 4), train, vae, tokenizer, encoder, quiet).state_dict()
    finetune_unet(params("b", 2), train, vae, tokenizer, encoder, quiet)  # stopped after 2 steps (checkpoint kept)
    shutil.rmtree(tmp_path / "b" / "unet-finetuned")
    resumed = finetune_unet(params("b", 4), train, vae, tokenizer, encoder, quiet).state_dict()
    assert straight.keys() == resumed.keys() == main.state_dict().keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert any(not torch.equal(straight[k], v) for k, v in main.state_dict().items())  # the fine-tune changed them
    assert "--finetune-steps 4 --cond-noise 0.3" in reproduce_command(params("a", 4))
    gpu = dataclasses.replace(params("a", 4), unet_batch=1024, unet_lr=5e-4, device="cuda", checkpoint_every=5000)
    assert reproduce_command(gpu).endswith("--cond-noise 0.3 --unet-batch 1024 --unet-lr 0.0005 --device cuda --tiny")
    with pytest.raises(ValueError, match="checkpoint_every must be an integer from 1 to 1000000, got 0"):
        dataclasses.replace(gpu, checkpoint_every=0)
    with pytest.raises(ValueError, match="cond_noise must be from 0 to 2, got 5"):
        EmojiTrainParams(out_dir=tmp_path, cache_dir=cache_dir, cond_noise=5.0)


def test_shipped_model_generates_reproducibly(cache_dir):
    assert (DEFAULT_ASSETS / "models" / "emoji-ldm" / "model_index.json").is_file(), "assets/models/emoji-ldm is missing"
    registry = Registry(cache_dir)
    pipe = ImagePipeline(load_image_model(registry.resolve(registry.lookup("emoji-ldm", "image")), pick_placement("cpu")))
    params = ImageParams(prompt="red heart", steps=20, guidance=5.0, width=64, height=64, seed=0, batch_size=2)
    a, b = pipe(params), pipe(params)
    assert a.images[0].size == (64, 64)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    array = np.asarray(a.images[0]).astype(int)
    assert array.std() > 10 and array.mean() > 100  # a drawing on a light background, not noise or black


def test_the_first_generation_stays_loadable_beside_the_default(cache_dir):
    registry = Registry(cache_dir)
    assert registry.default("image") == "emoji-ldm"
    folder = registry.resolve(registry.lookup("emoji-ldm-v1", "image")).path
    # v1 ships without its tokenizer: the studio links the second generation's (the same files) in
    assert (folder / "tokenizer").resolve() == (DEFAULT_ASSETS / "models" / "emoji-ldm" / "tokenizer").resolve()
    params = ImageParams(prompt="red heart", steps=8, guidance=5.0, width=64, height=64, seed=0)
    old = ImagePipeline(load_image_model(registry.resolve(registry.lookup("emoji-ldm-v1", "image")),
                                         pick_placement("cpu")))(params).images[0]
    new = ImagePipeline(load_image_model(registry.resolve(registry.lookup("emoji-ldm", "image")),
                                         pick_placement("cpu")))(params).images[0]
    assert old.size == new.size == (64, 64)
    assert not np.array_equal(np.asarray(old), np.asarray(new))  # two different models, both working

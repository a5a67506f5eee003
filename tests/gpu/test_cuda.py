"""On a CUDA GPU (skipped without one): random-weight SD 1.5- and SDXL-architecture pipelines in float16
end to end under the studio's memory plans, small cards emulated with a per-process memory fraction,
out-of-memory recovery back to the baseline, and the text, GAN and VAE pipelines on the GPU.

    python3 studio/bootstrap.py test tests/gpu -m gpu -s       # prints peak memory per case
"""

from __future__ import annotations

import time

import pytest
import torch

from pipelines.memory import DeviceMemory, GiB, component_bytes, plan_image_memory

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _tokenizer(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import build_tiny_lm

    return PreTrainedTokenizerFast.from_pretrained(build_tiny_lm(tmp_path / "tok"), model_max_length=77)


def _clip(tokenizer, hidden: int, layers: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4,
                            num_hidden_layers=layers, num_attention_heads=hidden // 64, max_position_embeddings=77,
                            projection_dim=hidden, bos_token_id=0, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def sd15_architecture(tmp_path):
    """Stable Diffusion 1.5's UNet and VAE shapes (random weights), a 12-layer CLIP-L-shaped encoder."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = _tokenizer(tmp_path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return StableDiffusionPipeline(vae=vae, text_encoder=_clip(tokenizer, 768, 12), tokenizer=tokenizer, unet=unet,
                                   scheduler=DPMSolverMultistepScheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False).to(torch.float16)


def sdxl_architecture(tmp_path):
    """SDXL base's UNet (2.6 B parameters) and VAE shapes with random weights, two CLIP-shaped encoders."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = _tokenizer(tmp_path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        force_upcast=True, scaling_factor=0.13025)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=_clip(tokenizer, 768, 12), tokenizer=tokenizer,
                                     text_encoder_2=_clip(tokenizer, 1280, 32, projection=True),
                                     tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler()
                                     ).to(torch.float16)


def _run(pipe, size: int, steps: int = 4):
    from pipelines.device import Placement
    from pipelines.image import ImageModel, ImageParams, ImagePipeline

    model = ImageModel(pipe, "random", Placement(torch.device("cuda"), torch.float16))
    out = ImagePipeline(model)(ImageParams(prompt="a red fox", steps=steps, width=size, height=size, seed=1,
                                           scheduler="Euler"))
    import numpy as np

    array = np.asarray(out.images[0])
    assert out.images[0].size == (size, size) and np.isfinite(array).all()
    return out


@pytest.mark.parametrize("build, size", [(sd15_architecture, 512), (sdxl_architecture, 1024)])
def test_full_gpu_float16_end_to_end(tmp_path, build, size):
    from pipelines.memory import apply_image_plan, probe_memory

    pipe = build(tmp_path)
    plan = plan_image_memory(component_bytes(pipe), probe_memory(torch.device("cuda")))
    assert plan.placement == "device"
    apply_image_plan(pipe, plan, torch.device("cuda"))
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    _run(pipe, size)
    print(f"\n{build.__name__} {size}²: {plan.describe()}; peak {torch.cuda.max_memory_allocated() / GiB:.2f} GiB; "
          f"{time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("card_gb, expected", [(6, "sequential_offload"), (8, "model_offload")])
def test_sdxl_on_emulated_small_cards(tmp_path, card_gb, expected):
    """A 6 or 8 GB card, emulated with a per-process memory fraction: SDXL at 1024² loads under its plan
    (offload, slicing, tiling) and generates within the card."""
    from pipelines.memory import apply_image_plan

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(card_gb * GiB / total)
    try:
        pipe = sdxl_architecture(tmp_path)
        memory = DeviceMemory("cuda", card_gb * GiB, card_gb * GiB - torch.cuda.memory_allocated(), host_free=64 * GiB)
        plan = plan_image_memory(component_bytes(pipe), memory)
        assert plan.placement == expected and plan.vae_tiling
        apply_image_plan(pipe, plan, torch.device("cuda"))
        torch.cuda.reset_peak_memory_stats()
        _run(pipe, 1024, steps=2)
        peak = torch.cuda.max_memory_allocated()
        print(f"\nSDXL 1024² on an emulated {card_gb} GB card: {plan.describe()}; peak {peak / GiB:.2f} GiB")
        assert peak <= card_gb * GiB
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_out_of_memory_recovery_returns_memory_to_the_baseline(tmp_path):
    from studio.config import load_settings
    from studio.services import Services

    services = Services.create(load_settings(None, outputs=tmp_path / "out", cache_dir=tmp_path / "cache"))
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated()
    held = []
    with pytest.raises(torch.OutOfMemoryError) as info:
        while True:
            held.append(torch.empty(8 * GiB, dtype=torch.uint8, device="cuda"))
    held.clear()
    assert services.host.recover_from_out_of_memory(info.value)
    assert torch.cuda.memory_allocated() == baseline
    assert torch.cuda.memory_reserved() <= baseline + 64 * 2**20
    torch.ones(GiB, dtype=torch.uint8, device="cuda")  # the next request works


def test_text_gan_vae_on_cuda(tiny_lm_dir, tmp_path):
    from pipelines.device import pick_placement, text_placement
    from pipelines.gan import GANConfig, GANPipeline, load_gan
    from pipelines.registry import ModelSpec, Registry, ResolvedModel
    from pipelines.text import TextParams, TextPipeline, load_text_model

    cuda = pick_placement("cuda")
    registry = Registry(tmp_path / "cache", offline=True)
    text = TextPipeline(load_text_model(registry.resolve(registry.lookup(str(tiny_lm_dir), "text")),
                                        text_placement(cuda), offline=True))
    a = text(TextParams(prompt="Once upon", max_new_tokens=8, temperature=0.8, seed=3))
    assert a.text == text(TextParams(prompt="Once upon", max_new_tokens=8, temperature=0.8, seed=3)).text
    from safetensors.torch import save_file

    from pipelines.gan import DCGANGenerator

    torch.manual_seed(0)
    weights = tmp_path / "g.safetensors"
    save_file(DCGANGenerator(GANConfig(resolution=32, z_dim=16, ngf=8)).state_dict(), weights)
    weights.with_suffix(".json").write_text('{"arch": "dcgan", "resolution": 32, "z_dim": 16, "channels": 3, "ngf": 8}')
    gan = GANPipeline(load_gan(ResolvedModel(ModelSpec("g", "gan", "file", str(weights)), weights), cuda))
    images = gan.render(gan.latents_for_seeds([1, 2]))
    assert images.shape == (2, 32, 32, 3)
    from pipelines.vae import ConvVAE, ConvVAEConfig, VAEPipeline, load_vae, save_conv_vae

    folder = save_conv_vae(ConvVAE(ConvVAEConfig(size=28, channels=1, latent_dim=2, width=8)), tmp_path / "vae")
    vae = VAEPipeline(load_vae(ResolvedModel(ModelSpec("v", "vae", "folder", str(folder)), folder), cuda))
    assert next(vae.model.net.parameters()).device.type == "cuda"
    assert vae.model.decode(vae.model.prior(4, 0)).shape == (4, 28, 28, 3)


def synthetic_emoji(folder, device: str):
    """Eight random 64×64 pictures with emoji captions in two sets, a word-level tokenizer and a one-layer
    BERT of MiniLM's width (384): the emoji training code without the npm packages."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from pipelines.training import emoji as E
    from pipelines.training.emoji_data import EmojiRecord, EmojiSet

    words = ["red", "heart", "cat", "face", "pizza", "rocket", "emoji", "smileys", "emotion", "food", "drink"]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *words]) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), model_max_length=E.TOKEN_LENGTH)
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=1,
                                   num_attention_heads=6, intermediate_size=64), add_pooling_layer=False)
    names = [("red heart", "smileys-emotion"), ("cat face", "smileys-emotion"), ("pizza", "food-drink"),
             ("rocket", "travel-places")]
    records = [EmojiRecord(f"{i:04X}", name, group, "sub", ("emoji",), style=style)
               for i, ((name, group), style) in enumerate((n, s) for s in ("openmoji", "noto") for n in names)]
    images = torch.randint(0, 256, (len(records), 64, 64, 3), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8).numpy()
    return EmojiSet(images, records), tokenizer, encoder.eval().to(device)


def test_emoji_training_runs_its_steps_on_cuda(tmp_path):
    """`studio train emoji --device cuda`: the UNet phases draw their batches on the GPU (a CUDA generator),
    step under bfloat16 autocast with float32 weights and EMA, checkpoint the CUDA generator, and resume."""
    from pipelines.training import emoji as E

    train, tokenizer, encoder = synthetic_emoji(tmp_path, "cuda")

    def params(work: str, steps: int) -> E.EmojiTrainParams:
        return E.EmojiTrainParams(out_dir=tmp_path / "out", cache_dir=tmp_path, work_dir=tmp_path / work, tiny=True,
                                  vae_steps=3, unet_steps=3, unet_batch=16, finetune_steps=steps, device="cuda",
                                  sets=("openmoji", "noto"), checkpoint_every=2)

    quiet = lambda _m: None  # noqa: E731
    (tmp_path / "a").mkdir()
    vae = E.train_vae(params("a", 4), train, quiet)
    assert vae.device.type == "cuda"
    data = E._unet_data(params("a", 4), train, vae, tokenizer, encoder, quiet)
    assert {t.device.type for t in (data.means, data.table, data.caption_ids, data.weights)} == {"cuda"}
    main = E.train_unet(params("a", 4), train, vae, tokenizer, encoder, quiet)
    ckpt = torch.load(tmp_path / "a" / "unet.ckpt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["gen"].numel() == torch.cuda.default_generators[0].get_state().numel()
    tuned = E.finetune_unet(params("a", 4), train, vae, tokenizer, encoder, quiet)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in tuned.state_dict().values())
    assert any(not torch.equal(v, main.state_dict()[k]) for k, v in tuned.state_dict().items())
    # stopped after 2 fine-tune steps, then resumed from its checkpoint to 4
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("unet-finetune*"))
    E.finetune_unet(params("b", 2), train, vae, tokenizer, encoder, quiet)
    shutil.rmtree(tmp_path / "b" / "unet-finetuned")
    assert torch.load(tmp_path / "b" / "unet-finetune.ckpt", weights_only=True)["step"] == 2
    resumed = E.finetune_unet(params("b", 4), train, vae, tokenizer, encoder, quiet)
    assert torch.load(tmp_path / "b" / "unet-finetune.ckpt", weights_only=True)["step"] == 4
    assert resumed.state_dict().keys() == tuned.state_dict().keys()


def test_emoji_train_command_evaluates_and_exports_on_cuda(tmp_path, monkeypatch):
    """The whole `train_emoji` on CUDA: every part of the evaluation pipeline on the GPU, a folder the
    image loader runs, and a card whose command names the device."""
    from pipelines.device import pick_placement
    from pipelines.image import ImageParams, ImagePipeline, load_image_model
    from pipelines.registry import Registry
    from pipelines.training import emoji as E

    data, tokenizer, encoder = synthetic_emoji(tmp_path, "cuda")
    monkeypatch.setattr(E, "load_emoji_sets", lambda *args, **kwargs: data)
    monkeypatch.setattr(E, "load_text_encoder", lambda params, log: (tokenizer, encoder))
    params = E.EmojiTrainParams(out_dir=tmp_path / "model", cache_dir=tmp_path, tiny=True, vae_steps=3, unet_steps=3,
                                unet_batch=16, finetune_steps=2, device="cuda", sets=("openmoji", "noto"),
                                link_text_encoder=False, eval_images=4)
    report = E.train_emoji(params, log=lambda _m: None)
    assert 0.0 <= report.metrics["classifier_balanced_acc_generated_heldout_captions"] <= 1.0
    card = (tmp_path / "model" / "README.md").read_text()
    assert "--finetune-steps 2 --cond-noise 0.2 --unet-batch 16 --device cuda --tiny" in card
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"unet", "vae", "tokenizer", "scheduler", "samples.png",
                                                                 "samples-noto.png", "metrics.json"}
    encoder.cpu().save_pretrained(tmp_path / "model" / "text_encoder")  # what link_text_encoder adds for users
    registry = Registry(tmp_path / "cache", offline=True)
    pipe = ImagePipeline(load_image_model(registry.resolve(registry.lookup(str(tmp_path / "model"), "image")),
                                          pick_placement("cuda")))
    image = pipe(ImageParams(prompt="red heart", steps=2, width=64, height=64, seed=0)).images[0]
    assert image.size == (64, 64)

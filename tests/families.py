"""Tiny random-weight models of today's image families, built offline and saved as diffusers folders.

One function per family returns a saved folder (with model_index.json) the studio loads like any other; the
configs follow diffusers' own tests (`tests/pipelines/<family>/test_*.py`, `get_dummy_components`), and the
tokenizers (CLIP, T5, Qwen2, Mistral) are written here with the `tokenizers` package, since no model hub is reachable.

    folder = build_tiny_flux(tmp_path)          # FluxPipeline, 16×16 latents for a 64×64 picture
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import build_tiny_clip_tokenizer

WORDS = ("red", "heart", "blue", "fox", "cat", "bird", "smiling", "neutral")
QWEN_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_level_tokenizer(specials: list[str], *, end: str | None = None):
    """A byte-level BPE over every byte plus a few whole words, with `specials` first; `end` is appended to
    every encoding (as T5 appends </s>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = list(pre_tokenizers.ByteLevel.alphabet())
    vocab, merges = list(specials) + chars, []
    for word in WORDS:
        done = word[0]
        for ch in word[1:]:
            merges.append((done, ch))
            done += ch
            vocab.append(done)
    vocab = list(dict.fromkeys(vocab))
    raw = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, merges))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(list(specials))
    if end is not None:
        raw.post_processor = processors.TemplateProcessing(single=f"$A {end}", pair=f"$A $B {end}",
                                                           special_tokens=[(end, vocab.index(end))])
    return raw


def build_t5_tokenizer(max_length: int = 32):
    """A T5-style tokenizer: <pad> 0, </s> 1, <unk> 2, every encoding ending in </s>."""
    from transformers import PreTrainedTokenizerFast

    raw = _byte_level_tokenizer(["<pad>", "</s>", "<unk>"], end="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def build_qwen_tokenizer(max_length: int = 512):
    """A Qwen2-style tokenizer (byte-level BPE, <|im_start|>/<|im_end|> and a chat template)."""
    from transformers import PreTrainedTokenizerFast

    raw = _byte_level_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                        model_max_length=max_length)
    tokenizer.chat_template = QWEN_TEMPLATE
    return tokenizer


def _t5_encoder(vocab: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, dropout_rate=0.0)).eval()


def _clip_encoder(tokenizer, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=32)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _kl_vae(latent_channels: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 8), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=latent_channels, norm_num_groups=4, **extra)


def _qwen_vl_encoder(tokenizer, **ids):
    """A tiny Qwen2.5-VL (the text encoder of Qwen-Image and its Edit model); `ids`: the picture tokens' ids."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
            text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "vocab_size": len(tokenizer),
                         "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                         "rope_theta": 1000000.0},
            vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                           "out_hidden_size": 16},
            hidden_size=16, vocab_size=len(tokenizer), **ids)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _flux2_vae():
    """The Flux.2 VAE (4 latent channels, scale 2). Its batch norm's running statistics, which normalize the 2×2-
    patched latents, are made unlike 0 and 1 here, so that code undoing them wrongly shows."""
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 8),
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             layers_per_block=1, latent_channels=4, norm_num_groups=4, use_quant_conv=False,
                             use_post_quant_conv=False)
    vae.bn.running_mean.normal_(0, 0.5)
    vae.bn.running_var.uniform_(0.5, 2.0)
    return vae


def _save(pipe, folder: Path, name: str) -> Path:
    target = Path(folder) / name
    pipe.save_pretrained(target)
    return target


def build_tiny_flux(folder: Path, *, guidance_embeds: bool = True) -> Path:
    """FluxPipeline (CLIP + T5, a 1+1-block transformer over 4-channel latents, VAE scale 2)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer, tokenizer_2 = build_tiny_clip_tokenizer(Path(folder) / "_clip"), build_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                             guidance_embeds=guidance_embeds)
        text_encoder, text_encoder_2 = _clip_encoder(tokenizer), _t5_encoder(len(tokenizer_2))
        vae = _kl_vae(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    return _save(pipe, folder, "flux")


def build_tiny_chroma(folder: Path) -> Path:
    """ChromaPipeline (T5 only, Flux-like transformer with a modulation approximator)."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    tokenizer = build_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = ChromaTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                               attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                               axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32,
                                               approximator_layers=1, approximator_num_channels=16)
        text_encoder = _t5_encoder(len(tokenizer))
        vae = _kl_vae(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    pipe = ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                          tokenizer=tokenizer, transformer=transformer)
    return _save(pipe, folder, "chroma")


def build_tiny_sd3(folder: Path) -> Path:
    """StableDiffusion3Pipeline (two CLIPs with projection + T5, a 1-block MMDiT)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer = build_tiny_clip_tokenizer(Path(folder) / "_clip")
    tokenizer_3 = build_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=1,
                                            attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                            joint_attention_dim=32, pooled_projection_dim=64, out_channels=16)
        text_encoder, text_encoder_2 = _clip_encoder(tokenizer, True), _clip_encoder(tokenizer, True)
        text_encoder_3 = _t5_encoder(len(tokenizer_3))
        vae = _kl_vae(16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                                    text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                    tokenizer_2=tokenizer, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
                                    transformer=transformer)
    return _save(pipe, folder, "sd3")


def build_tiny_z_image(folder: Path) -> Path:
    """ZImagePipeline (a Qwen3 text encoder, a 2-layer single-stream transformer over 16-channel latents)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                               n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                               qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                               axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        with torch.no_grad():  # made with torch.empty: fixed, as diffusers' own test does
            transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
            transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
        text_encoder = Qwen3Model(Qwen3Config(hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                              vocab_size=len(tokenizer), max_position_embeddings=512)).eval()
        vae = _kl_vae(16, scaling_factor=0.3611, shift_factor=0.1159)
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                          tokenizer=tokenizer, transformer=transformer)
    return _save(pipe, folder, "z-image")


def build_tiny_qwen_image(folder: Path) -> Path:
    """QwenImagePipeline (a Qwen2.5-VL text encoder, a 2-layer MMDiT, the Qwen-Image causal-3D VAE)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    tokenizer = build_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                                  attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                                  guidance_embeds=False, axes_dims_rope=(8, 4, 4))
        vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                                     temperal_downsample=[False], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
        text_encoder = _qwen_vl_encoder(tokenizer)
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, transformer=transformer)
    return _save(pipe, folder, "qwen-image")


def build_tiny_sana(folder: Path) -> Path:
    """SanaPipeline (a Gemma2 text encoder, a linear-attention DiT, the DC-AE autoencoder)."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    raw = _byte_level_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>", model_max_length=300)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = SanaTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                             num_attention_heads=2, attention_head_dim=4, num_cross_attention_heads=2,
                                             cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
                                             sample_size=32)
        vae = AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2,
                            encoder_block_types=("ResBlock", "EfficientViTBlock"),
                            decoder_block_types=("ResBlock", "EfficientViTBlock"),
                            encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                            encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
                            encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1],
                            downsample_block_type="conv", upsample_block_type="interpolate",
                            decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)
        text_encoder = Gemma2Model(Gemma2Config(head_dim=16, hidden_size=8, intermediate_size=64,
                                                max_position_embeddings=8192, num_attention_heads=2,
                                                num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tokenizer),
                                                attn_implementation="eager")).eval()
    pipe = SanaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, transformer=transformer)
    return _save(pipe, folder, "sana")


def _flux2_transformer(*, guidance_embeds: bool):
    """A 1+1-block Flux.2 transformer over the VAE's 2×2-patched latents (16 channels), reading a 48-wide text
    (3 stacked layers of a 16-wide encoder); dev reads guidance as an embedding, Klein does not."""
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                   timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
                                   guidance_embeds=guidance_embeds)


def build_tiny_flux2_klein(folder: Path, *, is_distilled: bool = True) -> Path:
    """Flux2KleinPipeline (a 28-layer Qwen3 whose layers 9, 18 and 27 are read, the Flux.2 VAE, 2×2-patched
    latents; `is_distilled=False`: Klein's undistilled base, which runs CFG against a blank prompt)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = _flux2_transformer(guidance_embeds=False)
        text_encoder = Qwen3ForCausalLM(Qwen3Config(intermediate_size=16, hidden_size=16, num_hidden_layers=28,
                                                    num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                                    vocab_size=len(tokenizer), max_position_embeddings=512)).eval()
        vae = _flux2_vae()
    pipe = Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, transformer=transformer,
                              is_distilled=is_distilled)
    return _save(pipe, folder, "flux2-klein")


MISTRAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]"]
# Mistral Small 3.1's chat layout, over the typed content lists Flux2Pipeline hands it ({"type": "text", ...})
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for message in messages %}"
                    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{% elif message['role'] == 'user' %}[INST]"
                    "{% endif %}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
                    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
                    "{% else %}[IMG]{% endif %}{% endfor %}{% endif %}"
                    "{% if message['role'] == 'system' %}[/SYSTEM_PROMPT]{% elif message['role'] == 'user' %}[/INST]"
                    "{% else %}{{ eos_token }}{% endif %}{% endfor %}")


def build_mistral_tokenizer(max_length: int = 512):
    """A Mistral-style tokenizer with Mistral Small 3.1's chat layout. The real Flux.2 dev reads prompts through a
    PixtralProcessor, which transformers makes only with torchvision; the pipeline asks of it no more than this
    tokenizer does (`apply_chat_template`, padded to the maximum length)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_byte_level_tokenizer(MISTRAL_TOKENS), bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                        model_max_length=max_length)
    tokenizer.chat_template = MISTRAL_TEMPLATE
    return tokenizer


def _mistral3_encoder(tokenizer):
    """A tiny Mistral3ForConditionalGeneration (Mistral Small 3.1's class): 30 text layers, since Flux2Pipeline
    reads layers 10, 20 and 30, and a 1-layer Pixtral vision tower."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("bos_token_id", "<s>"), ("eos_token_id", "</s>"), ("pad_token_id", "<pad>"))}
    config = Mistral3Config(
            text_config={"model_type": "mistral", "vocab_size": len(tokenizer), "hidden_size": 16,
                         "intermediate_size": 16, "num_hidden_layers": 30, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 512,
                         "sliding_window": None, **ids},
            vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 16, "image_size": 30, "patch_size": 6,
                           "num_channels": 3},
            image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), vision_feature_layer=-1, **ids)
    return Mistral3ForConditionalGeneration(config).eval()


def build_tiny_flux2_dev(folder: Path) -> Path:
    """Flux2Pipeline, Flux.2 dev (a 30-layer Mistral3 whose layers 10, 20 and 30 are read, a transformer reading
    guidance as an embedding, the Flux.2 VAE, 2×2-patched latents)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    tokenizer = build_mistral_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = _flux2_transformer(guidance_embeds=True)
        text_encoder = _mistral3_encoder(tokenizer)
        vae = _flux2_vae()
    pipe = Flux2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                         tokenizer=tokenizer, transformer=transformer)
    target = _save(pipe, folder, "flux2-dev")
    # laid out as the real one: model_index.json names a PixtralProcessor, whose folder keeps its configs beside
    # the tokenizer's (transformers reads them only with torchvision; without it the studio reads the tokenizer)
    index = model_index(target)
    index["tokenizer"] = ["transformers", "PixtralProcessor"]
    (target / "model_index.json").write_text(json.dumps(index, indent=2))
    pictures = {"image_processor_type": "PixtralImageProcessor", "patch_size": {"height": 6, "width": 6},
                "size": {"longest_edge": 30}, "do_resize": True, "do_rescale": True, "do_normalize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    (target / "tokenizer" / "preprocessor_config.json").write_text(json.dumps(pictures, indent=2))
    (target / "tokenizer" / "processor_config.json").write_text(json.dumps(
        {"processor_class": "PixtralProcessor", "image_token": "[IMG]", "patch_size": 6, "spatial_merge_size": 1},
        indent=2))
    return target


def build_tiny_lora(folder: Path, model_dir: Path, seed: int = 1) -> Path:
    """A random LoRA for a tiny family's transformer (Flux.1, Flux.2), in diffusers/peft names (.safetensors),
    saved by the family's own pipeline class."""
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    index = model_index(model_dir)
    transformer = getattr(diffusers, index["transformer"][1]).from_pretrained(Path(model_dir) / "transformer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=[
            "to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj", "linear_in", "linear_out"]))  # the last 3: Flux.2
        for name, param in transformer.named_parameters():  # big enough to change a 2-step picture visibly
            if "lora_B" in name:
                param.data.normal_(0, 1.0)
    Path(folder).mkdir(parents=True, exist_ok=True)
    getattr(diffusers, index["_class_name"]).save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return next(Path(folder).glob("*.safetensors"))


def model_index(folder: Path) -> dict:
    return json.loads((Path(folder) / "model_index.json").read_text())


BUILDERS = {"flux": build_tiny_flux, "chroma": build_tiny_chroma, "sd3": build_tiny_sd3, "z-image": build_tiny_z_image,
            "qwen-image": build_tiny_qwen_image, "sana": build_tiny_sana, "flux2-klein": build_tiny_flux2_klein,
            "flux2-dev": build_tiny_flux2_dev}


def build_tiny_flux_kontext(folder: Path) -> Path:
    """FluxKontextPipeline: the tiny Flux's parts (Kontext is a Flux.1 transformer reading the start picture's
    tokens beside the noise's)."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    parts = FluxPipeline.from_pretrained(build_tiny_flux(Path(folder) / "_flux")).components
    return _save(FluxKontextPipeline(**{k: v for k, v in parts.items() if v is not None}), folder, "flux-kontext")


QWEN_VL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def tiny_qwen_image_edit_pipeline():
    """A QwenImageEditPipeline in memory: a Qwen-Image-shaped transformer over a VAE scaling by 8 (the pipeline
    encodes the start picture at about a megapixel) and a Qwen2.5-VL that sees the picture as 2×2 merged patches
    (through the studio's picture-only Qwen2-VL processor; its image tokens are the tokenizer's own)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil

    from pipelines.image_flow import picture_processor

    raw = _byte_level_tokenizer(QWEN_VL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                        model_max_length=1024)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_VL_TOKENS}
    pixels = 28 * 28 * 4
    processor = picture_processor(Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels), tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                                  attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                                  guidance_embeds=False, axes_dims_rope=(8, 4, 4))
        vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, False, False], latents_mean=[0.0] * 4,
                                     latents_std=[1.0] * 4)
        text_encoder = _qwen_vl_encoder(tokenizer, image_token_id=ids["<|image_pad|>"],
                                        video_token_id=ids["<|video_pad|>"],
                                        vision_start_token_id=ids["<|vision_start|>"],
                                        vision_end_token_id=ids["<|vision_end|>"])
    pipe = QwenImageEditPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                                 tokenizer=tokenizer, processor=processor, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_qwen_image_edit(folder: Path) -> Path:
    """`tiny_qwen_image_edit_pipeline` saved as a diffusers folder laid out as the real one is: model_index.json
    names transformers' Qwen2VLProcessor, `processor/` holds the tokenizer, the image processor's config under
    its real class name and a video processor config (which only a torchvision install reads)."""
    target = _save(tiny_qwen_image_edit_pipeline(), folder, "qwen-image-edit")
    index = json.loads((target / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (target / "model_index.json").write_text(json.dumps(index, indent=2))
    saved = target / "processor" / "processor_config.json"  # transformers 5 nests the image processor's config
    config = {**json.loads(saved.read_text())["image_processor"], "processor_class": "Qwen2VLProcessor"}
    saved.unlink()
    (target / "processor" / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
    video = {k: v for k, v in config.items() if k != "image_processor_type"}
    (target / "processor" / "video_preprocessor_config.json").write_text(
        json.dumps({**video, "video_processor_type": "Qwen2VLVideoProcessor"}, indent=2))
    return target

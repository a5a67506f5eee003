"""The VAE tab's uploads and training a VAE of one's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.image import open_user_image
from pipelines.registry import ModelSpec
from pipelines.vae import VAETrainParams, load_image_folder, prepare_images, train_conv_vae
from studio.events import as_int


def uploads(services, files, size):
    images = [open_user_image(f, services.settings.image_limits.max_image_pixels)[0] for f in files or []]
    return prepare_images(images, size) if images else (None, [])


def training_setup(services, name: str, source, is_zip: bool, size, channels, latent, epochs):
    """Check a training request and load its images: (name, params, images, notes, source folder/zip, out)."""
    registry = services.host.registry
    name = (name or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9][\w\-]{0,39}", name):
        raise ValueError("model name: 1–40 letters, digits, - or _ (it names a folder)")
    if name in {s.name for s in registry.all()} and registry.lookup(name, "vae").source != "folder":
        raise ValueError(f"model name {name!r} is taken by a built-in model; choose another")
    if not is_zip and not str(source or "").strip():
        raise ValueError("images: give a folder of images or upload a .zip")
    source = Path(str(source)).expanduser()
    params = VAETrainParams(size=as_int("size", size), channels=as_int("channels", channels),
                            latent_dim=as_int("latent size", latent), epochs=as_int("epochs", epochs))
    images, notes = load_image_folder(source, params.size)
    return name, params, images, notes, source, services.history.root / "vae-models" / name


def finish_training(services, name: str, out: Path, params, done: int, images, owner: str) -> None:
    """Register a trained VAE and note it in History."""
    services.host.registry.add(ModelSpec(name, "vae", "folder", str(out), license="yours",
                                    description="trained in the VAE tab"))
    services.host.cache.clear("vae")
    services.history.add("vae", {".json": json.dumps({"model": name, "epochs": done}).encode()},
                         prompt=f"trained VAE {name}", params={"size": params.size, "latent_dim": params.latent_dim,
                                                               "epochs": done, "images": len(images)},
                         model=name, device=services.host.placement.describe(), owner=owner)


def train_vae_model(services, name, source, is_zip, size, channels, latent, epochs, owner) -> dict:
    """Train in the calling thread (the API's form); returns the losses per epoch."""
    name, params, images, notes, source, out = training_setup(services, name, source, is_zip, size, channels,
                                                              latent, epochs)
    reports = train_conv_vae(params, images, out, device=services.host.placement.device,
                             extra_config={"trained_on": str(source.name), "images": len(images)})
    finish_training(services, name, out, params, len(reports), images, owner)
    return {"name": name, "epochs": len(reports), "images": len(images), "skipped": len(notes),
            "loss_per_epoch": [round(r.loss, 3) for r in reports]}

"""Tabs whose pipelines are not built yet: they say what they will do, and produce nothing fake."""

from __future__ import annotations

import gradio as gr

PLANNED = {
    "image": (
        "### Image — coming next\n"
        "Text-to-image, image-to-image and inpainting on any Stable Diffusion-family model (hub id, local "
        "diffusers folder or single `.safetensors` file), with schedulers, seeds and variation seeds, LoRA, "
        "live previews, PNG info and A1111-compatible metadata.\n\n"
        "The embedded default will be **emoji-ldm**, a 64×64 emoji model trained by GenAI Studio on OpenMoji "
        "(see the Models tab)."
    ),
    "vae": (
        "### VAE — coming next\n"
        "Encode and decode images, morph between them through latent space (lerp/slerp, GIF/MP4), "
        "explore a decoded latent-space map, move sliders per latent dimension, and train a small VAE on "
        "your own folder of images."
    ),
}


def build(name: str) -> None:
    gr.Markdown(PLANNED[name], elem_id=f"planned-{name}")

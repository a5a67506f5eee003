"""Tabs whose pipelines are not built yet: they say what they will do, and produce nothing fake."""

from __future__ import annotations

import gradio as gr

PLANNED = {
    "vae": (
        "### VAE — coming next\n"
        "Encode and decode images, morph between them through latent space (lerp/slerp, GIF/MP4), "
        "explore a decoded latent-space map, move sliders per latent dimension, and train a small VAE on "
        "your own folder of images."
    ),
}


def build(name: str) -> None:
    gr.Markdown(PLANNED[name], elem_id=f"planned-{name}")

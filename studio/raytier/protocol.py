"""What the UI tier and the Ray tier both need to know: the Serve apps and deployments per model family,
where replicas publish their reports and where a text's Stop word is written, and the families in words.
Standard library only: both sides import it without importing the other."""

from __future__ import annotations

NAMESPACE = "genai-studio"
TIERS = {"image": ("studio-image", "ImageTier"), "text": ("studio-text", "TextTier"),
         "latent": ("studio-latent", "LatentTier")}  # family: (Serve app, deployment)
KV_PREFIX = "studio-replica/"  # each replica publishes where it runs and what it holds (Models tab)
STOP_PREFIX = "studio-stop/"  # a text request's stop word, read by the replica writing it
FAMILY_NAMES = {"image": "image", "text": "text", "latent": "GAN/VAE"}


def family_words(tiers) -> str:
    """("image", "latent") → "image and GAN/VAE models"."""
    names = [FAMILY_NAMES[t] for t in tiers]
    return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + " models"

"""The studio's public API: one typed function per capability, registered with `gr.api`.

Each endpoint is a module-level function registered with `@endpoint(name, ...)` (`studio.api.registry`): its
public name, who may call it and its concurrency group. It takes the app's `Services` first, so a test calls it
directly; `register` binds `services` and gives Gradio the signature without it.

Parameter names follow AUTOMATIC1111's web API where it has one (`prompt`, `negative_prompt`,
`steps`, `cfg_scale`, `width`, `height`, `sampler_name`, `seed`, `subseed`, `subseed_strength`,
`batch_size`, `n_iter`, `denoising_strength`, `init_images`, `mask`) and README's names otherwise.
Each function returns plain data — a JSON object with the seeds, the parameters used, timings and
the History id — and, where it makes pictures or animations, the files themselves. The page's own
events are private; only these are the API. The same server-side checks (guests, quotas, limits)
apply as on the page (every event runs as its request's Caller: `studio.boundary`). `docs/API.md` is
generated from these functions' signatures and docstrings (`python -m studio.api.docs`), and a test keeps the two
equal.

Where to look: text and images in `media.py`, GAN and VAE in `latent.py`, the workbench's explore_* in
`explore.py`, History and models in `library.py`; what they share in `common.py`.
"""

from __future__ import annotations

import gradio as gr

from studio.api import explore, latent, library, media
from studio.api.registry import ENDPOINTS, Endpoint, bind, options
from studio.services import Services

MODULES = (media, latent, explore, library)  # the API lists them in this order, each in its own order


def endpoints() -> list[Endpoint]:
    """Every public endpoint, in the API's order."""
    return [spec for module in MODULES for spec in ENDPOINTS.values() if spec.fn.__module__ == module.__name__]


def register(services: Services) -> None:
    """Add every public endpoint to the Blocks being built (call inside `with gr.Blocks()`)."""
    for spec in endpoints():
        gr.api(bind(spec, services), api_name=spec.name, **options(spec, services))


def endpoint_functions(services: Services) -> list[tuple[str, object]]:
    """(name, the function as served) for every public endpoint, in the API's order."""
    return [(spec.name, bind(spec, services)) for spec in endpoints()]

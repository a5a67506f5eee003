"""The studio's public API: one typed function per capability, registered with `gr.api`.

Parameter names follow AUTOMATIC1111's web API where it has one (`prompt`, `negative_prompt`,
`steps`, `cfg_scale`, `width`, `height`, `sampler_name`, `seed`, `subseed`, `subseed_strength`,
`batch_size`, `n_iter`, `denoising_strength`, `init_images`, `mask`) and README's names otherwise.
Each function returns plain data — a JSON object with the seeds, the parameters used, timings and
the History id — and, where it makes pictures or animations, the files themselves. The page's own
events are private; only these are the API. The same server-side checks (guests, quotas, limits)
apply as on the page (every event runs as its request's Caller: `studio.boundary`). `docs/API.md` is
generated from these functions' signatures and docstrings (`python -m studio.api`), and a test keeps the two equal.
"""

from __future__ import annotations

import gradio as gr

from studio.api import latent, library, media
from studio.services import Services

MODULES = (media, latent, library)


def register(services: Services) -> None:
    """Add every public endpoint to the Blocks being built (call inside `with gr.Blocks()`)."""
    for module in MODULES:
        for name, fn, options in module.endpoints(services):
            gr.api(fn, api_name=name, **options)


def endpoint_functions(services: Services) -> list[tuple[str, object]]:
    return [(name, fn) for module in MODULES for name, fn, _ in module.endpoints(services)]

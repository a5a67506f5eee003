"""The model catalogue as people read it — which engine runs each model, where it comes from, whether it is
ready — shared by the Models tab and the `/models_list` API."""

from __future__ import annotations

from pipelines.packages import PACKAGES


ENGINES = {"image": "diffusers", "vae": "PyTorch (diffusers for AutoencoderKL folders)", "gan": "PyTorch",
           "helper": "diffusers (TAESD) or transformers (depth), inside the Image tab"}


TABS = {"text": "Text", "image": "Image", "vae": "VAE", "gan": "GAN", "helper": "Image (used by itself)"}


def runs_with(services, spec) -> str:
    """The engine that serves a model, and for text models why (llama.cpp vs transformers)."""
    if spec.modality == "image":  # a loaded model also says how it runs (SDPA, compiled, TAESD previews…) and
        model = getattr(services.host.cache.peek("image", spec.name), "model", None)  # the memory plan chosen, and why
        speedups = getattr(model, "speedups", ())
        plan = getattr(model, "plan", None)
        return (ENGINES["image"] + (f" — {', '.join(speedups)}" if speedups else "")
                + (f" — memory: {plan.describe()}" if plan is not None else ""))
    if spec.modality != "text":
        return ENGINES[spec.modality]
    try:
        choice = services.host.text_backend(spec)
    except ValueError as exc:
        return f"cannot run as configured: {exc}"
    return f"{choice.backend} — {choice.reason}"


def comes_from(spec) -> str:
    """Where a model comes from, in words."""
    if spec.source == "package":
        return f"the package {spec.location} (downloaded once, checked)"
    if spec.source == "asset":
        return "shipped with the studio" + (" (its text encoder is downloaded once)" if spec.needs else "")
    if spec.source == "hub":
        return (f"the model hub: {spec.location}" + (f", {spec.size}" if spec.size else "")
                + (f"; needs {spec.vram}" if getattr(spec, "vram", "") else ""))
    return f"your {spec.source}: {spec.location}"


def _loaded(services) -> set[str]:
    keys = {name for _, name in services.host.cache.loaded()}
    return keys | {name.split(" [")[0] for name in keys}


def ready(services, spec) -> str:
    if services.host.registry.is_present(spec):
        return "yes"
    if spec.source == "hub":
        return f"download ({spec.size})" if spec.size else "download on first use"
    return "no — fetched on first use"


def model_rows(services) -> list[list]:
    """Every field, for the API (models_list) and the details table."""
    loaded = _loaded(services)
    rows = []
    for spec in services.host.registry.all():
        source = spec.location if spec.source != "package" else PACKAGES[spec.location].fetch_command
        rows.append([spec.name, spec.modality, spec.source, source, spec.license, ready(services, spec),
                     "loaded" if spec.name in loaded else "", runs_with(services, spec), spec.description])
    return rows

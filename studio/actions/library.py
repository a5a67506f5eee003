"""Kept things: History items and pictures read back for their owner, Verify, styles, upscalers, History's
filters."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from pipelines.image import open_user_image
from pipelines.image_prompt import Style, load_styles
from pipelines.image_upscale import LATENT_UPSCALERS, PIXEL_UPSCALERS, UPSCALER_SUFFIXES
from pipelines.media import png_bytes
from pipelines.provenance import Origin, verify


def check_room(services) -> None:
    """Refuse new work, in words, before what it makes could not be kept (History.check_room)."""
    caller, settings = services.host.admission.caller(), services.settings
    services.history.check_room(caller.user, guest=caller.guest, user_mb=settings.max_user_storage_mb,
                                total_mb=settings.max_storage_mb, free_mb=settings.min_free_disk_mb)


NO_STYLE = "(none)"


def kept_item(services, item_id, *, field: str = "picture"):
    """A History item the request's Caller may use (their own; owners: any) — found by its id, the only handle a
    page or a client holds on what the studio keeps. Never a path from the client."""
    caller = services.host.admission.caller()
    item = services.history.get(str(item_id)) if isinstance(item_id, str) and len(item_id) <= 64 else None
    if item is None or (caller.guest and item.owner != caller.user):
        raise ValueError(f"{field}: click one of your pictures in the results first")
    return item


def kept_picture(services, item_id, *, field: str = "picture"):
    """The first picture of a History item the caller may use, opened (PIL, RGB)."""
    item = kept_item(services, item_id, field=field)
    pngs = [name for name in item.files if name.lower().endswith(".png")]
    if not pngs:
        raise ValueError(f"{field}: this History item holds no picture")
    picture, _ = open_user_image(services.history.path(pngs[0]), services.settings.image_limits.max_image_pixels)
    return picture


def upscaled_origin(picture, upscaler: str) -> Origin:
    """An upscale edits the user's picture: a model upscaler adds detail it made up, Lanczos only resizes."""
    by_model = Path(upscaler).name != "Lanczos"
    return Origin("edited", f"upscale ({Path(upscaler).name})", png_bytes(picture),
                  edit="c2pa.edited" if by_model else "c2pa.resized", by_model=by_model)


def verify_file(services, path) -> dict:
    """What a dropped file says about itself: Content Credentials (valid / tampered / none, and whether this
    studio signed it), the invisible watermark, and the AUTOMATIC1111 parameters (the Verify panel and
    `/verify_image`)."""
    sealer = services.history.provenance
    serial = sealer.credentials().serial if sealer is not None and sealer.credentials_on else None
    report = asdict(verify(Path(path).read_bytes(), serial, services.settings.image_limits.max_image_pixels))
    report["png"] = {k: v for k, v in report["png"].items() if k in ("parameters", "prompt", "negative_prompt",
                                                                     "settings", "studio", "ai_generated")}
    return report


def verify_summary(report: dict) -> str:
    """The Verify panel's verdict in plain words (Markdown)."""
    c, mark = report["credentials"], report["watermark"]
    made = f" with **{c['model']}**" if c["model"] else ""
    how = {"c2pa.created": "made from scratch by a model", "c2pa.edited": "an edit of a start picture",
           "c2pa.resized": "a resized start picture"}
    story = "; ".join(how.get(a, a) for a in c["actions"] if a != "c2pa.opened") or "no actions recorded"
    if c["state"] == "valid":
        who = ("signed by **this studio**" if c["this_install"] else f"signed by {c['signer'] or 'an unknown signer'}")
        trust = (" — a self-signed certificate: it proves the file is unchanged since, not who made it"
                 if "signingCredential.untrusted" in c["notes"] else "")
        lines = [f"**Content Credentials: valid**, {who}{trust}.",
                 f"{c['generator'] or 'An unnamed tool'}: {story}{made}."]
        if c["ingredients"]:
            lines.append(f"Made from: {', '.join(c['ingredients'])}.")
    elif c["state"] == "tampered":
        lines = ["**Content Credentials: tampered** — the file changed after it was signed, so what the "
                 f"credentials say no longer describes it ({'; '.join(c['problems'][:2])[:300]}).",
                 f"They claimed: {story}{made}."]
    else:
        lines = ["**Content Credentials: none.** Most re-saves, screenshots and social sites remove them."]
    if mark is None:
        lines.append("Watermark: not looked for (videos carry none).")
    elif mark["found"]:
        halved = " in a copy at half size" if mark["scale"] > 1 else ""
        lines.append(f"**Invisible watermark: found**{halved} ({mark['matching_bits']} of 48 bits match): "
                     "GenAI Studio made this picture.")
    else:
        lines.append(f"Invisible watermark: {mark['reason'] or 'not found'}"
                     + ("" if mark["reason"] else f" ({mark['matching_bits']} of 48 bits: chance level)") + ".")
    if not report["png"].get("parameters"):
        lines.append("No generation parameters in the file.")
    return "\n\n".join(lines)


def styles_path(services) -> Path:
    """User styles live in the settings folder inside the outputs folder (kept with the user's work)."""
    return Path(services.settings.outputs) / "settings" / "styles.json"


def upscaler_folder(services) -> Path:
    return Path(services.settings.cache_dir) / "upscalers"


def upscaler_choices(services, *, latent: bool) -> list[str]:
    """Built-in upscalers, then the model files in the upscalers folder (shown by name, passed by path)."""
    folder = upscaler_folder(services)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in UPSCALER_SUFFIXES) if folder.is_dir() else []
    return [*(LATENT_UPSCALERS if latent else ()), *PIXEL_UPSCALERS, *(str(p) for p in files)]


def resolve_upscaler(services, name: str, *, latent: bool, field: str = "upscaler") -> str:
    """A built-in upscaler name, or the path of a model file in the upscalers folder given by its file name
    (callers outside the page cannot point the server at arbitrary files)."""
    choices = upscaler_choices(services, latent=latent)
    by_name = {Path(c).name: c for c in choices}
    if name in by_name:
        return by_name[name]
    raise ValueError(f"{field} must be one of {', '.join(by_name)}, got {str(name)[:60]!r}")


def lora_folder(services) -> Path:
    """LoRA files owners put on the server (`<cache>/loras/*.safetensors`), beside the upscalers folder: what
    AUTOMATIC1111 clients list (`/sdapi/v1/loras`) and name in prompts (`<lora:NAME:WEIGHT>`)."""
    return Path(services.settings.cache_dir) / "loras"


def lora_files(services) -> dict[str, Path]:
    """{name: file} of the LoRA folder's .safetensors files (pickled LoRAs are never loaded), by file stem."""
    folder = lora_folder(services)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return {f.stem: f for f in files if f.is_file()}


def lora_metadata(path: Path, limit: int = 1 << 20) -> dict:
    """A .safetensors file's `__metadata__` (training notes such as ss_base_model_version), read from its
    header only; {} when there is none or the header is unreadable or larger than `limit`."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > limit:
                return {}
            meta = json.loads(f.read(size)).get("__metadata__") or {}
    except (OSError, ValueError, struct.error):
        return {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def save_shared_style(services, style: Style) -> list[str]:
    """Save (or replace) a style every user picks from — owners only, whatever door asked: a guest's words must
    never reach other users' pictures. Returns the style names now listed."""
    from pipelines.image_prompt import save_style

    services.access.require_owner(services.host.admission.caller().user, "save styles")
    save_style(styles_path(services), style)
    return [s.name for s in load_styles(styles_path(services))]


def style_named(services, name: str | None) -> Style | None:
    if not name or name == NO_STYLE:
        return None
    styles = {s.name: s for s in load_styles(styles_path(services))}
    if name not in styles:
        raise ValueError(f"style: no style named {name[:60]!r}; press ↻ to reload the list")
    return styles[name]




def day_bound(field: str, text: str, *, end: bool = False) -> float | None:
    """"YYYY-MM-DD" → epoch seconds at the start of that day (of the next day when `end`); blank → None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        start = time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ValueError(f"{field}: a date as YYYY-MM-DD (e.g. 2026-11-29), got {text[:40]!r}") from None
    return start + 86400 if end else start


def seed_filter(text: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) >= 2**32:
        raise ValueError(f"seed: a whole number from 0 to 4,294,967,295, got {text[:40]!r}")
    return int(text)

"""What the public API's endpoints share: seeds in AUTOMATIC1111's form, files in and out, keeping results."""

from __future__ import annotations

import tempfile
from pathlib import Path

from gradio import FileData

from studio.events import keep_output, parse_seed, user_of


def seed_or_random(name: str, value) -> int | None:
    """-1 (or None) means random, as in AUTOMATIC1111's API; anything else must be a valid seed."""
    if value is None or value == -1 or value == "":
        return None
    try:
        return parse_seed(value)
    except ValueError:
        raise ValueError(f"{name} must be -1 (random) or a whole number from 0 to 4,294,967,295, "
                         f"got {str(value)[:40]!r}") from None


def files(paths) -> list[FileData]:
    return [FileData(path=str(p)) for p in paths if p]


def file_path(file) -> str:
    """The local path of an uploaded file, however Gradio hands it over (FileData, its dict, or a path)."""
    if isinstance(file, dict):
        return file["path"]
    return getattr(file, "path", None) or str(file)


def unsaved(outputs: dict[str, bytes]) -> list[Path]:
    """Outputs that History could not take (a full disk): written to a temporary folder so the caller
    still receives them."""
    from gradio.utils import get_upload_folder  # Gradio serves files from its own upload folder

    root = Path(get_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="studio-unsaved-", dir=root))
    paths = []
    for suffix, data in outputs.items():
        path = folder / f"output{suffix}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def keep(services, tab: str, outputs: dict[str, bytes], prompt: str, params: dict, model) -> tuple[str | None, list]:
    """Keep a latent model's result in History as the caller's: (its id, its files); (None, temporary files) when
    History could not take it (a full disk: the caller still gets the files)."""
    item = keep_output(services, tab, outputs, prompt=prompt, params={**params, "model": model.name},
                       model=model.name, device=services.host.placement.describe(), owner=user_of())
    if item is None:
        return None, unsaved(outputs)
    return item.id, [services.history.path(f) for f in item.files]

"""The tabs' own shared pieces: what a tab hands the others (TabHandle), files made for the page, and field
validators. What every handler shares — errors in plain words, the Caller's rules, keeping outputs — is
`studio/events.py` (re-exported here for the tabs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from studio.events import (  # noqa: F401 (re-exported for the tabs)
    as_int,
    check_fields,
    check_named,
    friendly_errors,
    guarded,
    keep_output,
    list_outputs,
    origin,
    parse_seed,
    seed_field,
    session_of,
    user_of,
)


@dataclass
class TabHandle:
    """What other tabs need from a tab: restoring parameters from History, and sending images.

    restore_outputs / restore: the components History fills and how, from an item's params.
    send_to_vae: (button, inputs, fn) — fn(*inputs) returns the path of an image to send to the VAE tab.
    receive_images: a gr.File (multiple) that collects images sent from other tabs.
    owner_controls: components guests may not use (model choice, training…); the server refuses anyway.
    """

    restore_outputs: list
    restore: Callable[[dict], list]
    send_to_vae: tuple | None = None
    receive_images: object | None = None
    owner_controls: list = field(default_factory=list)  # made read-only on a guest's page


def page_file(data: bytes, name: str) -> str:
    """A file the server made for this page (a picture sent between tabs, an export), placed where Gradio keeps the
    files it serves, under a random folder: what the browser sends back later is then an ordinary upload."""
    import re
    import uuid
    from pathlib import Path

    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()) / f"studio-{uuid.uuid4().hex}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "file")
    path.write_bytes(data)
    return str(path)

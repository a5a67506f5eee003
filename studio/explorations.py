"""Exploration links: a link that reopens a workbench exactly — model, render settings, the current point,
directions (their vectors), slider values, map ranges, timeline keyframes with their frame counts, breeding
parents — in a fresh browser.

The state stays on the server, under `outputs/settings/explorations/<id>/` (the points and directions as
.safetensors, the rest as JSON); the link carries only the id and an HMAC of it under the item links' secret,
so it can be neither guessed nor bent to another id, and nothing in the URL is trusted beyond naming which
stored state to open. Opening one gives the visitor their own copy: they continue from it (a guest within
their quota) and never change what was shared. The owner who made it can revoke it; the files go.

Why not Gradio's `DeepLinkButton`: its links store component values in Gradio's temporary upload folder (gone
on restart, no revoking) and cannot carry the workbench's state of tensors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.latent import load_directions, load_points, points_bytes, save_directions
from studio.actions import latent as ex
from studio.history import write_atomic

QUERY = "exploration"  # ?exploration=<id>.<token>
_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")
MAX_PER_OWNER = 200


@dataclass(frozen=True)
class Shared:
    id: str
    owner: str
    tab: str
    created: float
    settings: dict  # the tab's render settings by name (model, prompt, steps, truncation…)
    controls: dict  # the workbench's control values by name (slider amounts, map ranges, timeline, breed)
    bench: ex.Bench


class Explorations:
    def __init__(self, folder: Path, secret) -> None:
        self.folder = Path(folder)
        self._secret = secret  # () -> bytes: the item links' secret, read when first needed
        self._lock = threading.Lock()

    def token(self, share_id: str) -> str:
        return hmac.new(self._secret(), b"exploration:" + share_id.encode(), hashlib.sha256).hexdigest()[:32]

    def query(self, share_id: str) -> str:
        return f"?{QUERY}={share_id}.{self.token(share_id)}"

    def save(self, owner: str, tab: str, bench: ex.Bench, settings: dict, controls: dict) -> str:
        """Store the state; returns its id. The points are the bench's own (current, keyframes, parents)."""
        if bench.current is None:
            raise ValueError("Open a picture first: a link shares the picture you are exploring and what is around it.")
        if len(self.mine(owner)) >= MAX_PER_OWNER:
            raise ValueError(f"You have {MAX_PER_OWNER} shared explorations; revoke some before sharing more.")
        points = [bench.current, *(k.point for k in bench.keyframes), *bench.parents]
        roles = {"keyframes": [[1 + i, k.frames] for i, k in enumerate(bench.keyframes)],
                 "parents": list(range(1 + len(bench.keyframes), len(points)))}
        share_id = secrets.token_urlsafe(12)
        folder = self.folder / share_id
        folder.mkdir(parents=True)
        write_atomic(folder / "points.safetensors", points_bytes(points))
        if bench.directions:
            save_directions(bench.directions, folder / "directions.safetensors")
        state = {"id": share_id, "owner": owner, "tab": tab, "created": time.time(), "model": bench.model,
                 "settings": settings, "controls": controls, "roles": roles}
        write_atomic(folder / "state.json", json.dumps(state, ensure_ascii=False, default=str).encode())
        return share_id

    def _folder(self, value: str) -> Path:
        """The stored state a link's `id.token` names; ValueError in plain words when it names none."""
        share_id, _, token = str(value or "").partition(".")
        gone = ValueError("This exploration link does not open anything: it was revoked, or it is not complete "
                          "(copy the whole link).")
        if not _ID.match(share_id) or not hmac.compare_digest(self.token(share_id), token):
            raise gone
        folder = self.folder / share_id
        if not (folder / "state.json").is_file():
            raise gone
        return folder

    def tab_of(self, value: str) -> str | None:
        """The tab a link opens, or None when it opens nothing (the page then starts as usual)."""
        try:
            return json.loads((self._folder(value) / "state.json").read_text())["tab"]
        except (ValueError, OSError, KeyError):
            return None

    def open(self, value: str) -> Shared:
        folder = self._folder(value)
        state = json.loads((folder / "state.json").read_text())
        points = load_points(folder / "points.safetensors")
        roles = state["roles"]
        bench = ex.Bench(model=state["model"], current=points[0],
                         directions=load_directions(folder / "directions.safetensors"),
                         keyframes=[ex.Keyframe(points[i], frames) for i, frames in roles["keyframes"]],
                         parents=[points[i] for i in roles["parents"]])
        return Shared(state["id"], state["owner"], state["tab"], state["created"], state["settings"],
                      state["controls"], bench)

    def mine(self, owner: str, tab: str | None = None) -> list[dict]:
        """The owner's shared explorations, newest first: id, tab, created, model, label of the picture."""
        found = []
        for path in self.folder.glob("*/state.json") if self.folder.is_dir() else []:
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if state.get("owner") == owner and (tab is None or state.get("tab") == tab):
                found.append({k: state.get(k) for k in ("id", "tab", "created", "model")})
        return sorted(found, key=lambda s: -s["created"])

    def revoke(self, share_id: str, owner: str) -> bool:
        """End a link: only the owner who made it can; its files go. False when there is no such link of theirs."""
        if not _ID.match(str(share_id or "")):
            return False
        folder = self.folder / share_id
        with self._lock:
            try:
                state = json.loads((folder / "state.json").read_text())
            except (OSError, ValueError):
                return False
            if state.get("owner") != owner:
                return False
            shutil.rmtree(folder, ignore_errors=True)
        return True

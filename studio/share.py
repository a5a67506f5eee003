"""Per-item links: an owner makes a link that shows one History item — its pictures or text and how it was
made — and nothing else, without a login. The link carries a random token kept (with the item's id) in the
settings folder, so it cannot be guessed or turned into a link to another item; revoking it (`revoke`) or deleting
the item ends the link, and sharing the item again makes a new one. (The secret beside it signs exploration
links.)"""

from __future__ import annotations

import hmac
import html
import json
import os
import secrets
import threading
from pathlib import Path

from studio.history import History

SHOWN = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4", ".txt": "text/plain; charset=utf-8",
         ".json": "application/json"}


class ItemLinks:
    def __init__(self, history: History, secret_file: Path) -> None:
        self.history = history
        self.secret_file = Path(secret_file)
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            if not self.secret_file.is_file():
                self.secret_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
            self._secret = bytes.fromhex(self.secret_file.read_text().strip())
        return self._secret

    @property
    def _tokens_file(self) -> Path:
        return self.secret_file.with_name("links.json")

    def _tokens(self) -> dict[str, str]:
        try:
            return json.loads(self._tokens_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, tokens: dict[str, str]) -> None:
        from studio.history import write_atomic

        write_atomic(self._tokens_file, json.dumps(tokens).encode())

    def token(self, item_id: str) -> str:
        """The item's link token: the one it has, or a new random one."""
        with self._lock:
            tokens = self._tokens()
            if item_id not in tokens:
                tokens[item_id] = secrets.token_hex(16)
                self._save(tokens)
            return tokens[item_id]

    def revoke(self, item_id: str) -> bool:
        """End the item's link (sharing it again makes a new one); False when it had none."""
        with self._lock:
            tokens = self._tokens()
            if tokens.pop(item_id, None) is None:
                return False
            self._save(tokens)
            return True

    def path(self, item_id: str) -> str:
        return f"/item/{item_id}/{self.token(item_id)}"

    def item(self, item_id: str, token: str):
        """The item when the token is its current one, else None."""
        expected = self._tokens().get(item_id)
        if expected is None or not hmac.compare_digest(expected, token or ""):
            return None
        return self.history.get(item_id)

    def page(self, item) -> str:
        """A small page: the item's pictures, video or text, its prompt and parameters."""
        base = self.path(item.id)
        parts = []
        for index, name in enumerate(item.files):
            suffix = Path(name).suffix.lower()
            if suffix in (".png", ".gif"):
                parts.append(f'<img src="{base}/{index}" alt="" style="max-width:100%;image-rendering:auto">')
            elif suffix == ".mp4":
                parts.append(f'<video src="{base}/{index}" controls loop style="max-width:100%"></video>')
            elif suffix == ".txt":
                text = self.history.path(name).read_text(encoding="utf-8", errors="replace")
                parts.append(f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>")
        params = html.escape(json.dumps(item.params, indent=1, ensure_ascii=False, default=str))
        return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
                f"content='width=device-width, initial-scale=1'><title>{html.escape(item.prompt[:80] or item.id)}"
                f"</title></head><body style='font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em'>"
                f"<h2>{html.escape(item.prompt[:300])}</h2>{''.join(parts)}"
                f"<p>{html.escape(item.model)} · {html.escape(item.when)}</p>"
                f"<details><summary>How it was made</summary><pre>{params}</pre></details>"
                "<p style='opacity:.6'>Shared from GenAI Studio.</p></body></html>")


def add_routes(fastapi_app, links: ItemLinks) -> None:
    """GET /item/{id}/{token} (the page) and /item/{id}/{token}/{n} (its files), ahead of Gradio's own
    routes and outside its login: the token is the permission."""
    from fastapi.responses import FileResponse, HTMLResponse, Response
    from starlette.routing import Route

    missing = Response("This link does not lead to anything (the item was deleted, or the link is wrong).",
                       status_code=404, media_type="text/plain")

    async def show(request):
        item = links.item(request.path_params["item_id"], request.path_params["token"])
        return HTMLResponse(links.page(item)) if item else missing

    async def file(request):
        item = links.item(request.path_params["item_id"], request.path_params["token"])
        index = request.path_params["index"]
        if item is None or not 0 <= index < len(item.files):
            return missing
        path = links.history.path(item.files[index])
        kind = SHOWN.get(path.suffix.lower())
        return FileResponse(path, media_type=kind) if kind and path.is_file() else missing

    fastapi_app.router.routes.insert(0, Route("/item/{item_id}/{token}/{index:int}", file, methods=["GET"]))
    fastapi_app.router.routes.insert(0, Route("/item/{item_id}/{token}", show, methods=["GET"]))

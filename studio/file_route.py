"""The one way History's files reach a browser: Gradio's file route, with the caller's right checked first.

Pictures and other outputs are answered by path (`/gradio_api/file=<path>`: Gradio serves them where they lie,
never copied). A route placed ahead of Gradio's takes every such path that lands inside the outputs folder —
however it is spelled: `..`, `%2e%2e`, another letter case on a case-insensitive disk, a symbolic link,
`/proc/self/root/...` — and serves it only when the caller may read it (`History.may_read`: their own items
and scratch files; owners: all). Anything else there, the database and `settings/` among it, is a plain 404 to
everyone. Paths outside the outputs folder go on to Gradio's own route and its own checks.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import FileResponse, Response
from starlette.routing import Match, Route

SERVED = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4", ".webp": "image/webp",
          ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".txt": "text/plain; charset=utf-8",
          ".json": "application/json", ".zip": "application/zip", ".pt": "application/octet-stream",
          ".safetensors": "application/octet-stream"}


def inside(path: str, root: Path) -> Path | None:
    """The real path of `path` when it lies inside `root` by any spelling (symlinks, `..`, case on a
    case-insensitive disk — compared by file identity, not by name), else None."""
    try:
        real = Path(os.path.realpath(os.path.abspath(path)))
        root_stat = os.stat(root)
    except (OSError, ValueError):
        return None
    for candidate in (real, *real.parents):
        try:
            if os.path.samestat(os.stat(candidate), root_stat):
                return Path(os.path.realpath(root)) / real.relative_to(candidate)
        except (OSError, ValueError):
            continue
    return None


class _OutputsFiles(Route):
    """A route that matches Gradio's file path only for files inside the outputs folder."""

    def __init__(self, path: str, endpoint, root: Path) -> None:
        super().__init__(path, endpoint, methods=["GET", "HEAD"])
        self.root = root

    def matches(self, scope):
        match, child = super().matches(scope)
        if match == Match.NONE:
            return match, child
        raw = child["path_params"].get("path", "")
        if "://" in raw or inside(raw, self.root) is None:
            return Match.NONE, {}
        return match, child


def http_user(fastapi_app, services, request) -> str | None:
    """The user of a plain HTTP request: the login's cookie (as Gradio reads it), or the local owner on a studio
    without logins; None when it has none."""
    if not services.settings.logins:
        return "local"
    cookie_id = getattr(fastapi_app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(f"access-token-unsecure-{cookie_id}")
    user = getattr(fastapi_app, "tokens", {}).get(token) if token else None
    return user if user and services.access.knows(user) else None


def add_file_route(fastapi_app, services) -> None:
    """Put the checked route for the outputs folder ahead of Gradio's file route."""
    history = services.history
    missing = Response("Not found.", status_code=404, media_type="text/plain")

    async def serve(request):
        user = http_user(fastapi_app, services, request)
        if user is None:
            return Response("Sign in first.", status_code=401, media_type="text/plain")
        path = inside(request.path_params["path"], history.root)
        kind = SERVED.get(path.suffix.lower()) if path is not None else None
        if kind is None or not path.is_file() or not history.may_read(user, path,
                                                                      guest=services.access.is_guest(user)):
            return missing
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})

    for path in ("/gradio_api/file={path:path}", "/gradio_api/file/{path:path}", "/file={path:path}"):
        fastapi_app.router.routes.insert(0, _OutputsFiles(path, serve, history.root))

"""Public API: History (list, get, star, delete, export) and models (list, fetch)."""

from __future__ import annotations

import gradio as gr
from gradio import FileData

from studio.api.media import files
from studio.events import friendly_errors, guarded, origin, user_of
from studio.actions.library import day_bound, seed_filter
from studio.catalog import model_rows


def endpoints(services) -> list[tuple[str, object, dict]]:
    history = services.history
    private = services.settings.logins

    def own(item, request):
        if item is None or (private and item.owner != user_of(request)):
            raise ValueError("id: no such History item (or it is not yours)")
        return item

    def summary(item) -> dict:
        return {"id": item.id, "when": item.when, "tab": item.tab, "prompt": item.prompt, "model": item.model,
                "seed": item.seed, "parent": item.parent, "starred": item.starred,
                "files": [f.rsplit("/", 1)[-1] for f in item.files]}

    def matching(tab, search, seed, since, until, starred, limit, request) -> list:
        if len(search) > 200:
            raise ValueError("search: at most 200 characters")
        owner = user_of(request) if private else None
        return history.list(tab=None if tab == "all" else tab, text=search, owner=owner, limit=limit,
                            seed=seed_filter(seed), since=day_bound("since", since),
                            until=day_bound("until", until, end=True), starred=bool(starred))

    @friendly_errors
    def history_list(tab: str = "all", search: str = "", limit: int = 50, seed: str = "", since: str = "",
                     until: str = "", starred: bool = False, request: gr.Request = None) -> list[dict]:
        """Your History, newest first.

        Args:
            tab: "all", or one of text, image, explore, vae, gan.
            search: keep items whose prompt or model contains this text.
            limit: 1 to 500 items.
            seed: keep items made with this seed (blank = any).
            since: keep items made on or after this day, YYYY-MM-DD (blank = any).
            until: keep items made on or before this day, YYYY-MM-DD (blank = any).
            starred: keep only starred items.
        """
        if not 1 <= limit <= 500:
            raise ValueError(f"limit must be from 1 to 500, got {limit}")
        return [summary(i) for i in matching(tab, search, seed, since, until, starred, limit, request)]

    @friendly_errors
    def history_star(id: str, starred: bool = True, request: gr.Request = None) -> dict:
        """Star (or unstar) one of your History items.

        Args:
            id: the item's id.
            starred: true to star, false to unstar.
        """
        item = own(history.get(str(id)[:64]), request)
        history.star(item.id, starred)
        return {"id": item.id, "starred": bool(starred)}

    @friendly_errors
    def history_export(tab: str = "all", search: str = "", seed: str = "", since: str = "", until: str = "",
                       starred: bool = False, request: gr.Request = None) -> FileData:
        """Your History items that match (the filters of history_list) as one .zip: each item's files under
        its id (PNGs keep their metadata) and index.json with every item's parameters. At most 500 items.

        Args:
            tab: "all", or one of text, image, explore, vae, gan.
            search: keep items whose prompt or model contains this text.
            seed: keep items made with this seed (blank = any).
            since: keep items made on or after this day, YYYY-MM-DD (blank = any).
            until: keep items made on or before this day, YYYY-MM-DD (blank = any).
            starred: keep only starred items.
        """
        items = matching(tab, search, seed, since, until, starred, 10**6, request)
        return files([history.export(items, user_of(request) if private else "local")])[0]

    @friendly_errors
    def history_get(id: str, request: gr.Request = None) -> tuple[dict, list[FileData]]:
        """One History item: its parameters, timings and files.

        Args:
            id: an item id from history_list or from a generation's result.
        """
        item = own(history.get(str(id)[:64]), request)
        return {**summary(item), "params": item.params, "timings": item.timings, "device": item.device}, \
            files(history.path(f) for f in item.files)

    @friendly_errors
    def history_delete(id: str, request: gr.Request = None) -> dict:
        """Delete one of your History items (its row and its files).

        Args:
            id: the item's id.
        """
        item = own(history.get(str(id)[:64]), request)
        return {"deleted": history.delete(item.id), "id": item.id}

    @friendly_errors
    @guarded(services, "history", owner_only="share items")
    def share_item(id: str, request: gr.Request = None) -> dict:
        """A link that shows one of your History items — its pictures, video or text and how it was made — to
        anyone who has it, without a login (owners only). Deleting the item ends the link.

        Args:
            id: the item's id.
        """
        item = own(history.get(str(id)[:64]), request)
        path = services.links.path(item.id)
        return {"id": item.id, "route": path, "url": origin(request) + path}  # not "path": clients fetch those

    @friendly_errors
    @guarded(services, "history", owner_only="share items")
    def unshare_item(id: str, request: gr.Request = None) -> dict:
        """End the link made by share_item for one of your items (sharing it again makes a new link).

        Args:
            id: the item's id.
        """
        item = own(history.get(str(id)[:64]), request)
        return {"id": item.id, "revoked": services.links.revoke(item.id)}

    def models_list() -> list[dict]:
        """Every known model: name, tab, source, license, whether it is in the cache or loaded, and its engine."""
        keys = ("name", "tab", "source", "where_from", "license", "in_cache", "loaded", "runs_with", "about")
        return [dict(zip(keys, row)) for row in model_rows(services)]

    @friendly_errors
    @guarded(services, "models", owner_only="download models")
    def models_fetch(name: str, request: gr.Request = None) -> dict:
        """Fetch a listed model into the cache now (owners only).

        Args:
            name: a name from models_list.
        """
        known = services.host.registry.all_by_name()
        if name not in known:
            raise ValueError(f"name: {name[:60]!r} is not a listed model; see models_list")
        services.host.registry.fetch(known[name])
        return {"name": name, "in_cache": True}

    return [("history_list", history_list, {}), ("history_get", history_get, {}),
            ("history_delete", history_delete, {}),
            ("history_star", history_star, {}), ("history_export", history_export, {}),
            ("share_item", share_item, {}), ("unshare_item", unshare_item, {}),
            ("models_list", models_list, {}),
            ("models_fetch", models_fetch, {})]

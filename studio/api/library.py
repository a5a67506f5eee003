"""Public API: History (list, get, star, delete, export, share) and models (list, fetch). History endpoints act on
the caller's own items only (with logins on; without, the single local user owns everything)."""

from __future__ import annotations

import gradio as gr
from gradio import FileData

from studio.actions.library import day_bound, seed_filter
from studio.api.common import files
from studio.api.registry import endpoint
from studio.catalog import model_rows
from studio.events import origin, user_of
from studio.services import Services


def own(services: Services, item, request=None):
    """`item` if it is the caller's (with logins on); else the same error as for an id that does not exist."""
    if item is None or (services.settings.logins and item.owner != user_of(request)):
        raise ValueError("id: no such History item (or it is not yours)")
    return item


def summary(item) -> dict:
    return {"id": item.id, "when": item.when, "tab": item.tab, "prompt": item.prompt, "model": item.model,
            "seed": item.seed, "parent": item.parent, "starred": item.starred,
            "files": [f.rsplit("/", 1)[-1] for f in item.files]}


def matching(services: Services, tab, search, seed, since, until, starred, limit, request) -> list:
    """The caller's History items that pass history_list's filters."""
    if len(search) > 200:
        raise ValueError("search: at most 200 characters")
    owner = user_of(request) if services.settings.logins else None
    return services.history.list(tab=None if tab == "all" else tab, text=search, owner=owner, limit=limit,
                                 seed=seed_filter(seed), since=day_bound("since", since),
                                 until=day_bound("until", until, end=True), starred=bool(starred))


@endpoint("history_list")
def history_list(services: Services, tab: str = "all", search: str = "", limit: int = 50, seed: str = "",
                 since: str = "", until: str = "", starred: bool = False, request: gr.Request = None) -> list[dict]:
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
    return [summary(i) for i in matching(services, tab, search, seed, since, until, starred, limit, request)]


@endpoint("history_get")
def history_get(services: Services, id: str, request: gr.Request = None) -> tuple[dict, list[FileData]]:
    """One History item: its parameters, timings and files.

    Args:
        id: an item id from history_list or from a generation's result.
    """
    item = own(services, services.history.get(str(id)[:64]), request)
    return {**summary(item), "params": item.params, "timings": item.timings, "device": item.device}, \
        files(services.history.path(f) for f in item.files)


@endpoint("history_delete")
def history_delete(services: Services, id: str, request: gr.Request = None) -> dict:
    """Delete one of your History items (its row and its files).

    Args:
        id: the item's id.
    """
    item = own(services, services.history.get(str(id)[:64]), request)
    return {"deleted": services.history.delete(item.id), "id": item.id}


@endpoint("history_star")
def history_star(services: Services, id: str, starred: bool = True, request: gr.Request = None) -> dict:
    """Star (or unstar) one of your History items.

    Args:
        id: the item's id.
        starred: true to star, false to unstar.
    """
    item = own(services, services.history.get(str(id)[:64]), request)
    services.history.star(item.id, starred)
    return {"id": item.id, "starred": bool(starred)}


@endpoint("history_export")
def history_export(services: Services, tab: str = "all", search: str = "", seed: str = "", since: str = "",
                   until: str = "", starred: bool = False, request: gr.Request = None) -> FileData:
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
    items = matching(services, tab, search, seed, since, until, starred, 10**6, request)
    return files([services.history.export(items, user_of(request) if services.settings.logins else "local")])[0]


@endpoint("share_item", tab="history", owners_only="share items")
def share_item(services: Services, id: str, request: gr.Request = None) -> dict:
    """A link that shows one of your History items — its pictures, video or text and how it was made — to
    anyone who has it, without a login (owners only). Deleting the item ends the link.

    Args:
        id: the item's id.
    """
    item = own(services, services.history.get(str(id)[:64]), request)
    path = services.links.path(item.id)
    return {"id": item.id, "route": path, "url": origin(request) + path}  # not "path": clients fetch those


@endpoint("unshare_item", tab="history", owners_only="share items")
def unshare_item(services: Services, id: str, request: gr.Request = None) -> dict:
    """End the link made by share_item for one of your items (sharing it again makes a new link).

    Args:
        id: the item's id.
    """
    item = own(services, services.history.get(str(id)[:64]), request)
    return {"id": item.id, "revoked": services.links.revoke(item.id)}


@endpoint("models_list")
def models_list(services: Services) -> list[dict]:
    """Every known model: name, tab, source, license, whether it is in the cache or loaded, and its engine."""
    keys = ("name", "tab", "source", "where_from", "license", "in_cache", "loaded", "runs_with", "about")
    return [dict(zip(keys, row)) for row in model_rows(services)]


@endpoint("models_fetch", tab="models", owners_only="download models")
def models_fetch(services: Services, name: str, request: gr.Request = None) -> dict:
    """Fetch a listed model into the cache now (owners only).

    Args:
        name: a name from models_list.
    """
    known = services.host.registry.all_by_name()
    if name not in known:
        raise ValueError(f"name: {name[:60]!r} is not a listed model; see models_list")
    services.host.registry.fetch(known[name])
    return {"name": name, "in_cache": True}

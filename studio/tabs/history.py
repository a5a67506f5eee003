"""The History tab: outputs newest first; search by prompt, model, seed and dates; stars; preview; restore
into the tab; delete (with a confirm step); export what is listed as a .zip."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.actions.library import day_bound, seed_filter
from studio.services import Services
from studio.tabs.common import TabHandle, friendly_errors, guarded, origin, user_of

COLUMNS = ["★", "When", "Tab", "Prompt", "Model", "Seed", "Id"]


class Shelf:
    """History as the request's user sees it: only their own items when logins are on (the user is the
    request's Caller, never an argument)."""

    def __init__(self, services: Services):
        self.history = services.history
        self.public = services.settings.logins

    def own(self, item):
        """The item if this user may see it, else None."""
        if item is None or (self.public and item.owner != user_of()):
            return None
        return item

    def chosen(self, item_id: str):
        item = self.own(self.history.get(item_id)) if item_id else None
        if item is None:
            raise gr.Error("Select an item in the table first.")
        return item

    def matching(self, query: dict, limit: int = 200) -> list:
        return self.history.list(owner=user_of() if self.public else None, limit=limit, **query)

    def rows(self, query: dict) -> list[list]:
        return [["★" if i.starred else "", i.when, i.tab, i.prompt[:120], i.model, i.seed, i.id]
                for i in self.matching(query)]


@dataclass
class Filters:
    """The search row. `query(values)` reads its boxes, by name, into `History.list`'s filters."""

    tab: gr.Dropdown
    text: gr.Textbox
    seed: gr.Textbox
    since: gr.Textbox
    until: gr.Textbox
    starred: gr.Checkbox
    search: gr.Button

    @classmethod
    def build(cls, tab_names) -> Filters:
        with gr.Row():
            return cls(
                tab=gr.Dropdown(["all", *tab_names], value="all", label="Tab", scale=1, min_width=100),
                text=gr.Textbox(label="Search prompt or model", scale=3, elem_id="history-search"),
                seed=gr.Textbox(label="Seed", scale=1, min_width=90),
                since=gr.Textbox(label="From day", placeholder="YYYY-MM-DD", scale=1, min_width=110),
                until=gr.Textbox(label="To day", placeholder="YYYY-MM-DD", scale=1, min_width=110),
                starred=gr.Checkbox(label="★ only", scale=1, min_width=80),
                search=gr.Button("Search", scale=1, min_width=80, elem_id="history-refresh"),
            )

    @property
    def inputs(self) -> set:
        return {self.tab, self.text, self.seed, self.since, self.until, self.starred}

    def query(self, values: dict) -> dict:
        tab = values[self.tab]
        return {"tab": None if tab == "all" else tab, "text": values[self.text] or "",
                "seed": seed_filter(values[self.seed]), "since": day_bound("from", values[self.since]),
                "until": day_bound("to", values[self.until], end=True), "starred": bool(values[self.starred])}

    def wire(self, rows, table) -> None:
        """Search on the button, on Enter in a box, and when the tab or ★ choice changes."""
        self.search.click(rows, self.inputs, table, api_visibility="private")
        for box in (self.text, self.seed, self.since, self.until):
            box.submit(rows, self.inputs, table, api_visibility="private")
        for box in (self.tab, self.starred):
            box.change(rows, self.inputs, table, api_visibility="private")


@dataclass
class ItemPanel:
    """The selected item: its output, pictures, files and parameters, and what can be done with it."""

    selected: gr.Textbox
    preview: gr.Textbox
    pictures: gr.Gallery
    files: gr.File
    details: gr.JSON
    restore: gr.Button
    star: gr.Button
    delete: gr.Button
    confirm_row: gr.Row
    confirm: gr.Button
    keep: gr.Button
    share: gr.Button
    unshare: gr.Button
    export: gr.Button
    exported: gr.File
    note: gr.Markdown

    @classmethod
    def build(cls) -> ItemPanel:
        parts = {}
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                parts["selected"] = gr.Textbox(label="Selected item id", interactive=False, elem_id="history-selected")
                parts["preview"] = gr.Textbox(label="Output", lines=8, interactive=False)
                parts["pictures"] = gr.Gallery(label="Pictures", columns=4, height=260, format="png")
                parts["files"] = gr.File(label="Files", file_count="multiple", interactive=False)
            with gr.Column(scale=2):
                parts["details"] = gr.JSON(label="Parameters")
                parts["restore"] = gr.Button("Restore parameters into its tab", variant="primary")
                with gr.Row():
                    parts["star"] = gr.Button("★ Star / unstar", size="sm", elem_id="history-star")
                    parts["delete"] = gr.Button("Delete…", size="sm", variant="stop", elem_id="history-delete")
                with gr.Row(visible=False) as parts["confirm_row"]:
                    parts["confirm"] = gr.Button("Yes, delete it and its files", size="sm", variant="stop",
                                                 elem_id="history-delete-yes")
                    parts["keep"] = gr.Button("Keep it", size="sm")
                parts["share"] = gr.Button("Make a link that shows only this item", size="sm", elem_id="history-share")
                parts["unshare"] = gr.Button("End its link", size="sm", elem_id="history-unshare")
                parts["export"] = gr.Button("Export the listed items (.zip)", size="sm", elem_id="history-export")
                parts["exported"] = gr.File(label="Export (PNGs with their metadata, GIF/MP4, latents, index.json)",
                                            interactive=False, elem_id="history-export-file")
                parts["note"] = gr.Markdown("")
        return cls(**parts)

    @property
    def shown(self) -> list:
        """What shows the selected item (cleared when it is deleted)."""
        return [self.selected, self.preview, self.pictures, self.files, self.details]


def _wire_select(shelf: Shelf, item: ItemPanel, table) -> None:
    history = shelf.history

    def select(evt: gr.SelectData, data, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        item_id = data.iloc[row]["Id"] if hasattr(data, "iloc") else data[row][-1]
        chosen = shelf.own(history.get(item_id))
        if chosen is None:
            raise gr.Error("That item is gone (the outputs folder changed). Press Search.")
        paths = [str(history.path(f)) for f in chosen.files]
        text = ""
        for p in paths:
            if p.endswith(".txt"):
                text = history.path(p).read_text(encoding="utf-8", errors="replace")
        images = [p for p in paths if p.endswith((".png", ".gif"))]
        details = {**chosen.params, "model": chosen.model, "device": chosen.device, "timings": chosen.timings,
                   "created": chosen.when}
        return chosen.id, text, images, paths, details, gr.Row(visible=False)

    table.select(select, [table], [*item.shown, item.confirm_row], api_visibility="private")


def _wire_restore(shelf: Shelf, item: ItemPanel, handles: dict[str, TabHandle], tabs: gr.Tabs) -> None:
    targets = [o for handle in handles.values() for o in handle.restore_outputs]

    @friendly_errors
    def restore(item_id: str, request: gr.Request):
        chosen = shelf.chosen(item_id)
        values = []
        for name, handle in handles.items():
            if name == chosen.tab:
                values += handle.restore({**chosen.params, "model": chosen.model})
            else:
                values += [gr.skip()] * len(handle.restore_outputs)
        return [gr.Tabs(selected=chosen.tab), *values]

    item.restore.click(restore, [item.selected], [tabs, *targets], api_visibility="private")


def _wire_changes(shelf: Shelf, item: ItemPanel, filters: Filters, table) -> None:
    """Star, delete (after a confirm step) and export what is listed; the table is listed again after."""
    @friendly_errors
    def star(values: dict, request: gr.Request):
        chosen = shelf.chosen(values[item.selected])
        shelf.history.star(chosen.id, not chosen.starred)
        done = "Unstarred" if chosen.starred else "Starred"
        return shelf.rows(filters.query(values)), f"{done} {chosen.id}."

    def ask(item_id: str, request: gr.Request):
        shelf.chosen(item_id)
        return gr.Row(visible=True)

    @friendly_errors
    def delete(values: dict, request: gr.Request):
        chosen = shelf.chosen(values[item.selected])  # guests reach only their own items
        shelf.history.delete(chosen.id)
        return (shelf.rows(filters.query(values)), "", "", [], None, None, gr.Row(visible=False),
                f"Deleted {chosen.id} and its {len(chosen.files)} file(s).")

    @friendly_errors
    def export(values: dict, request: gr.Request):
        items = shelf.matching(filters.query(values), limit=10**6)
        path = shelf.history.export(items, user_of() if shelf.public else "local")
        return str(path), f"Exported {len(items)} item(s)."

    private = {"api_visibility": "private"}
    item.star.click(star, {item.selected, *filters.inputs}, [table, item.note], **private)
    item.delete.click(friendly_errors(ask), [item.selected], item.confirm_row, **private)
    item.keep.click(lambda: gr.Row(visible=False), None, item.confirm_row, **private)
    item.confirm.click(delete, {item.selected, *filters.inputs}, [table, *item.shown, item.confirm_row, item.note],
                       **private)
    item.export.click(export, filters.inputs, [item.exported, item.note], **private)


def _wire_links(services: Services, shelf: Shelf, item: ItemPanel) -> None:
    """A link that shows one item to anyone who has it (the owner's right alone), and ending it."""
    def make_link(item_id: str, request: gr.Request):
        chosen = shelf.chosen(item_id)
        link = origin(request) + services.links.path(chosen.id)
        return (f"Anyone with this link sees this item only (no login): [{link}]({link}) — deleting the item "
                "ends the link.")

    def end_link(item_id: str):
        chosen = shelf.chosen(item_id)
        return "Its link is ended." if services.links.revoke(chosen.id) else "This item had no link."

    owner_only = guarded(services, "history", owner_only="share items")
    item.share.click(friendly_errors(owner_only(make_link)), [item.selected], item.note, api_visibility="private")
    item.unshare.click(friendly_errors(owner_only(end_link)), [item.selected], item.note, api_visibility="private")


def build(services: Services, handles: dict[str, TabHandle], tabs: gr.Tabs):
    """Build the tab; returns (list function, its filter inputs, the table) so the app can refresh on open."""
    shelf = Shelf(services)
    filters = Filters.build(handles)
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="history-table")
    item = ItemPanel.build()

    @friendly_errors
    def rows(values: dict, request: gr.Request):
        return shelf.rows(filters.query(values))

    filters.wire(rows, table)
    _wire_select(shelf, item, table)
    _wire_restore(shelf, item, handles, tabs)
    _wire_changes(shelf, item, filters, table)
    _wire_links(services, shelf, item)
    return rows, filters.inputs, table

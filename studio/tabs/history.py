"""The History tab: outputs newest first; search by prompt, model, seed and dates; stars; preview; restore
into the tab; delete (with a confirm step); export what is listed as a .zip."""

from __future__ import annotations


import gradio as gr

from studio.actions.library import day_bound, seed_filter
from studio.services import Services
from studio.tabs.common import TabHandle, friendly_errors, guarded, origin, user_of

COLUMNS = ["★", "When", "Tab", "Prompt", "Model", "Seed", "Id"]


def build(services: Services, handles: dict[str, TabHandle], tabs: gr.Tabs):
    """Build the tab; returns (list function, its filter inputs, the table) so the app can refresh on open."""
    history = services.history
    public = services.settings.logins

    def own(item, request):
        """The item if this user may see it (their own, when logins are on), else None."""
        if item is None or (public and item.owner != user_of(request)):
            return None
        return item

    def matching(tab, text, seed, since, until, starred, request, limit=200):
        owner = user_of(request) if public else None
        return history.list(tab=None if tab == "all" else tab, text=text or "", owner=owner, limit=limit,
                            seed=seed_filter(seed), since=day_bound("from", since),
                            until=day_bound("to", until, end=True), starred=bool(starred))

    @friendly_errors
    def rows(tab, text, seed, since, until, starred, request: gr.Request):
        items = matching(tab, text, seed, since, until, starred, request)
        return [["★" if i.starred else "", i.when, i.tab, i.prompt[:120], i.model, i.seed, i.id] for i in items]

    with gr.Row():
        tab_filter = gr.Dropdown(["all", *handles], value="all", label="Tab", scale=1, min_width=100)
        text_filter = gr.Textbox(label="Search prompt or model", scale=3, elem_id="history-search")
        seed_box = gr.Textbox(label="Seed", scale=1, min_width=90)
        since_box = gr.Textbox(label="From day", placeholder="YYYY-MM-DD", scale=1, min_width=110)
        until_box = gr.Textbox(label="To day", placeholder="YYYY-MM-DD", scale=1, min_width=110)
        starred_only = gr.Checkbox(label="★ only", scale=1, min_width=80)
        refresh = gr.Button("Search", scale=1, min_width=80, elem_id="history-refresh")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="history-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            selected = gr.Textbox(label="Selected item id", interactive=False, elem_id="history-selected")
            preview = gr.Textbox(label="Output", lines=8, interactive=False)
            pictures = gr.Gallery(label="Pictures", columns=4, height=260, format="png")
            files = gr.File(label="Files", file_count="multiple", interactive=False)
        with gr.Column(scale=2):
            details = gr.JSON(label="Parameters")
            restore = gr.Button("Restore parameters into its tab", variant="primary")
            with gr.Row():
                star = gr.Button("★ Star / unstar", size="sm", elem_id="history-star")
                delete = gr.Button("Delete…", size="sm", variant="stop", elem_id="history-delete")
            with gr.Row(visible=False) as confirm_row:
                confirm = gr.Button("Yes, delete it and its files", size="sm", variant="stop",
                                    elem_id="history-delete-yes")
                keep = gr.Button("Keep it", size="sm")
            share = gr.Button("Make a link that shows only this item", size="sm", elem_id="history-share")
            unshare = gr.Button("End its link", size="sm", elem_id="history-unshare")
            export = gr.Button("Export the listed items (.zip)", size="sm", elem_id="history-export")
            exported = gr.File(label="Export (PNGs with their metadata, GIF/MP4, latents, index.json)",
                               interactive=False, elem_id="history-export-file")
            note = gr.Markdown("")

    def select(evt: gr.SelectData, data, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        item_id = data.iloc[row]["Id"] if hasattr(data, "iloc") else data[row][-1]
        item = own(history.get(item_id), request)
        if item is None:
            raise gr.Error("That item is gone (the outputs folder changed). Press Search.")
        paths = [str(history.path(f)) for f in item.files]
        text = ""
        for p in paths:
            if p.endswith(".txt"):
                text = history.path(p).read_text(encoding="utf-8", errors="replace")
        images = [p for p in paths if p.endswith((".png", ".gif"))]
        return item.id, text, images, paths, {**item.params, "model": item.model, "device": item.device,
                                      "timings": item.timings, "created": item.when}, gr.Row(visible=False)

    def chosen(item_id: str, request):
        item = own(history.get(item_id), request) if item_id else None
        if item is None:
            raise gr.Error("Select an item in the table first.")
        return item

    targets = [o for handle in handles.values() for o in handle.restore_outputs]

    @friendly_errors
    def do_restore(item_id: str, request: gr.Request):
        item = chosen(item_id, request)
        values = []
        for name, handle in handles.items():
            if name == item.tab:
                values += handle.restore({**item.params, "model": item.model})
            else:
                values += [gr.skip()] * len(handle.restore_outputs)
        return [gr.Tabs(selected=item.tab), *values]

    @friendly_errors
    def do_star(item_id: str, tab, text, seed, since, until, starred, request: gr.Request):
        item = chosen(item_id, request)
        history.star(item.id, not item.starred)
        done = "Unstarred" if item.starred else "Starred"
        return rows(tab, text, seed, since, until, starred, request), f"{done} {item.id}."

    def ask(item_id: str, request: gr.Request):
        chosen(item_id, request)
        return gr.Row(visible=True)

    @friendly_errors
    def do_delete(item_id: str, tab, text, seed, since, until, starred, request: gr.Request):
        item = chosen(item_id, request)  # guests reach only their own items
        history.delete(item.id)
        return (rows(tab, text, seed, since, until, starred, request), "", "", [], None, None, gr.Row(visible=False),
                f"Deleted {item.id} and its {len(item.files)} file(s).")

    @friendly_errors
    def do_export(tab, text, seed, since, until, starred, request: gr.Request):
        items = matching(tab, text, seed, since, until, starred, request, limit=10**6)
        path = history.export(items, user_of(request) if public else "local")
        return str(path), f"Exported {len(items)} item(s)."

    def make_link(item_id: str, request: gr.Request):
        item = chosen(item_id, request)
        link = origin(request) + services.links.path(item.id)
        return (f"Anyone with this link sees this item only (no login): [{link}]({link}) — deleting the item "
                "ends the link.")

    filters = [tab_filter, text_filter, seed_box, since_box, until_box, starred_only]
    share.click(friendly_errors(guarded(services, "history", owner_only="share items")(make_link)), [selected], note,
                api_visibility="private")

    def end_link(item_id: str):
        item = chosen(item_id, None)
        return "Its link is ended." if services.links.revoke(item.id) else "This item had no link."

    unshare.click(friendly_errors(guarded(services, "history", owner_only="share items")(end_link)), [selected], note,
                  api_visibility="private")
    refresh.click(rows, filters, table, api_visibility="private")
    for box in (text_filter, seed_box, since_box, until_box):
        box.submit(rows, filters, table, api_visibility="private")
    for box in (tab_filter, starred_only):
        box.change(rows, filters, table, api_visibility="private")
    table.select(select, [table], [selected, preview, pictures, files, details, confirm_row],
                 api_visibility="private")
    restore.click(do_restore, [selected], [tabs, *targets], api_visibility="private")
    star.click(do_star, [selected, *filters], [table, note], api_visibility="private")
    delete.click(friendly_errors(ask), [selected], confirm_row, api_visibility="private")
    keep.click(lambda: gr.Row(visible=False), None, confirm_row, api_visibility="private")
    confirm.click(do_delete, [selected, *filters],
                  [table, selected, preview, pictures, files, details, confirm_row, note], api_visibility="private")
    export.click(do_export, filters, [exported, note], api_visibility="private")
    return rows, filters, table

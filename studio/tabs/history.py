"""The History tab: recent outputs newest first, filters, preview, and restore into the tab."""

from __future__ import annotations

import gradio as gr

from studio.services import Services
from studio.tabs.common import TabHandle, friendly_errors, user_of

COLUMNS = ["When", "Tab", "Prompt", "Model", "Seed", "Id"]


def build(services: Services, handles: dict[str, TabHandle], tabs: gr.Tabs):
    """Build the tab; returns (list function, its filter inputs, the table) so the app can refresh on open."""
    history = services.history
    public = services.settings.logins

    def own(item, request):
        """The item if this user may see it (their own, when logins are on), else None."""
        if item is None or (public and item.owner != user_of(request)):
            return None
        return item

    def rows(tab: str, text: str, request: gr.Request):
        owner = user_of(request) if public else None
        items = history.list(tab=None if tab == "all" else tab, text=text or "", owner=owner)
        return [[i.when, i.tab, i.prompt[:120], i.model, i.seed, i.id] for i in items]

    with gr.Row():
        tab_filter = gr.Dropdown(["all", *handles], value="all", label="Tab", scale=1)
        text_filter = gr.Textbox(label="Search prompt or model", scale=3)
        refresh = gr.Button("Refresh", scale=1)
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="history-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            selected = gr.Textbox(label="Selected item id", interactive=False)
            preview = gr.Textbox(label="Output", lines=8, interactive=False)
            pictures = gr.Gallery(label="Pictures", columns=4, height=260, format="png")
            files = gr.File(label="Files", file_count="multiple", interactive=False)
        with gr.Column(scale=2):
            details = gr.JSON(label="Parameters")
            restore = gr.Button("Restore parameters into its tab", variant="primary")

    def select(evt: gr.SelectData, data, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        item_id = data.iloc[row]["Id"] if hasattr(data, "iloc") else data[row][-1]
        item = own(history.get(item_id), request)
        if item is None:
            raise gr.Error("That item is gone (the outputs folder changed). Press Refresh.")
        paths = [str(history.path(f)) for f in item.files]
        text = ""
        for p in paths:
            if p.endswith(".txt"):
                text = history.path(p).read_text(encoding="utf-8", errors="replace")
        images = [p for p in paths if p.endswith((".png", ".gif"))]
        return item.id, text, images, paths, {**item.params, "model": item.model, "device": item.device,
                                      "timings": item.timings, "created": item.when}

    targets = [o for handle in handles.values() for o in handle.restore_outputs]

    @friendly_errors
    def do_restore(item_id: str, request: gr.Request):
        item = own(history.get(item_id), request) if item_id else None
        if item is None:
            raise gr.Error("Select an item in the table first.")
        values = []
        for name, handle in handles.items():
            if name == item.tab:
                values += handle.restore({**item.params, "model": item.model})
            else:
                values += [gr.skip()] * len(handle.restore_outputs)
        return [gr.Tabs(selected=item.tab), *values]

    filters = [tab_filter, text_filter]
    refresh.click(rows, filters, table, api_visibility="private")
    text_filter.submit(rows, filters, table, api_visibility="private")
    tab_filter.change(rows, filters, table, api_visibility="private")
    table.select(select, [table], [selected, preview, pictures, files, details], api_visibility="private")
    restore.click(do_restore, [selected], [tabs, *targets], api_visibility="private")
    return rows, filters, table

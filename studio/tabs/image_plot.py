"""The Image tab's X/Y/Z plot panel: the page's settings, changed along up to three axes, one picture per
cell (each kept in History with its own parameters) and one labelled grid (kept too). Cancel keeps the
cells made so far and draws them."""

from __future__ import annotations

import time

import gradio as gr

from pipelines.image_plot import AXES, PlotParams, example
from studio.actions.images import loras_from, make_plot
from studio.tabs.common import friendly_errors, guarded, session_of, user_of


def build_plot_panel(services):
    """Build the panel; returns `wire(inputs, model, lora_files, lora_weights, page_params)`, called once the tab's
    settings exist (`page_params(services, values)`: the tab's reading of its own inputs)."""
    with gr.Accordion("X/Y/Z plot: the same picture across values of up to three settings", open=False):
        rows = []
        for which, axis, values in (("X", "CFG scale", "3, 5, 7.5"), ("Y", "Nothing", ""), ("Z", "Nothing", "")):
            with gr.Row():
                name = gr.Dropdown(list(AXES), value=axis, label=f"{which} axis", scale=1,
                                   elem_id=f"plot-{which.lower()}-axis")
                text = gr.Textbox(value=values, label=f"{which} values", scale=3, elem_id=f"plot-{which.lower()}-values",
                                  placeholder="a list (3, 5, 7) or a range: 1-5, 5-50 (+5), 0.2-1 [5]")
            name.change(lambda n: gr.Textbox(placeholder=example(n) or None), name, text, api_visibility="private")
            rows += [name, text]
        make = gr.Button("Make plot", variant="primary", elem_id="plot-make")
        status = gr.Markdown("", elem_id="plot-status")
        grid = gr.Image(label="Plot", type="pil", interactive=False, format="png", elem_id="plot-grid")
        grid_file = gr.File(label="Plot PNG", interactive=False, elem_id="plot-file")

    return lambda inputs, model, lora_files, lora_weights, page_params: _wire(
        services, rows, make, status, grid, grid_file, inputs, model, lora_files, lora_weights, page_params)


def _wire(services, rows, make, status, grid, grid_file, inputs, model, lora_files, lora_weights,
          page_params) -> None:
    def show(request: gr.Request, x, x_values, y, y_values, z, z_values, *page):
        plot = PlotParams.parse((x, x_values), (y, y_values), (z, z_values))
        base, _ = page_params(services, list(page))
        started = time.perf_counter()
        loras = loras_from(page[inputs.index(lora_files)], page[inputs.index(lora_weights)])
        made = make_plot(services, plot, base, page[inputs.index(model)], loras, user_of(request),
                         session_of(request))
        if not made["done"]:
            return None, None, "Cancelled before the first picture: nothing was saved."
        item = made["item"]
        path = str(services.history.path(item.files[0])) if item else None
        took = time.perf_counter() - started
        head = f"**{len(made['done'])} of {made['total']} picture(s)**" + (
            " · cancelled: the cells made so far are kept" if made["stopped"] else "")
        return made["picture"], path, f"{head} · {took:.1f}s · each cell and the plot are in History"

    handler = friendly_errors(guarded(services, "image", generation=True)(show))
    make.click(handler, [*rows, *inputs], [grid, grid_file, status], api_visibility="private",
               concurrency_limit=services.host.image_slots, concurrency_id="image")

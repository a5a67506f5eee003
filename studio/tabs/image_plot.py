"""The Image tab's X/Y/Z plot panel: the page's settings, changed along up to three axes, one picture per
cell (each kept in History with its own parameters) and one labelled grid (kept too). Cancel keeps the
cells made so far and draws them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from pipelines.image_plot import AXES, PlotParams, example
from studio.actions.images import make_plot
from studio.tabs.common import friendly_errors, guarded, session_of, user_of


@dataclass
class PlotAxis:
    name: gr.Dropdown  # which setting changes along the axis
    values: gr.Textbox  # its values: a list or a range


@dataclass
class PlotPanel:
    axes: list[PlotAxis]  # X, Y, Z
    make: gr.Button
    status: gr.Markdown
    grid: gr.Image
    grid_file: gr.File

    @property
    def inputs(self) -> set:
        return {component for axis in self.axes for component in (axis.name, axis.values)}

    def to_params(self, values: dict) -> PlotParams:
        return PlotParams.parse(*((values[axis.name], values[axis.values]) for axis in self.axes))


def build_plot_panel(services):
    """Build the panel; returns `wire(form)`, called once the tab's settings exist (`form`: the tab's ImageForm,
    which reads the page's settings into ImageParams)."""
    with gr.Accordion("X/Y/Z plot: the same picture across values of up to three settings", open=False):
        axes = []
        for which, axis, values in (("X", "CFG scale", "3, 5, 7.5"), ("Y", "Nothing", ""), ("Z", "Nothing", "")):
            with gr.Row():
                name = gr.Dropdown(list(AXES), value=axis, label=f"{which} axis", scale=1,
                                   elem_id=f"plot-{which.lower()}-axis")
                text = gr.Textbox(value=values, label=f"{which} values", scale=3, elem_id=f"plot-{which.lower()}-values",
                                  placeholder="a list (3, 5, 7) or a range: 1-5, 5-50 (+5), 0.2-1 [5]")
            name.change(lambda n: gr.Textbox(placeholder=example(n) or None), name, text, api_visibility="private")
            axes.append(PlotAxis(name, text))
        make = gr.Button("Make plot", variant="primary", elem_id="plot-make")
        status = gr.Markdown("", elem_id="plot-status")
        grid = gr.Image(label="Plot", type="pil", interactive=False, format="png", elem_id="plot-grid")
        grid_file = gr.File(label="Plot PNG", interactive=False, elem_id="plot-file")
    panel = PlotPanel(axes, make, status, grid, grid_file)
    return lambda form: _wire(services, panel, form)


def _wire(services, panel: PlotPanel, form) -> None:
    def show(values: dict, request: gr.Request):
        plot = panel.to_params(values)
        base, _ = form.to_params(services, values)
        started = time.perf_counter()
        loras = {lora.name: (lora.path, lora.weight) for lora in base.loras}  # the plot may change their weight
        made = make_plot(services, plot, base, form.model(values), loras, user_of(request), session_of(request))
        if not made["done"]:
            return None, None, "Cancelled before the first picture: nothing was saved."
        item = made["item"]
        path = str(services.history.path(item.files[0])) if item else None
        took = time.perf_counter() - started
        head = f"**{len(made['done'])} of {made['total']} picture(s)**" + (
            " · cancelled: the cells made so far are kept" if made["stopped"] else "")
        return made["picture"], path, f"{head} · {took:.1f}s · each cell and the plot are in History"

    handler = friendly_errors(guarded(services, "image", generation=True)(show))
    panel.make.click(handler, panel.inputs | form.inputs, [panel.grid, panel.grid_file, panel.status],
                     api_visibility="private", concurrency_limit=services.host.image_slots, concurrency_id="image")

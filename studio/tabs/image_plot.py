"""The Image tab's X/Y/Z plot panel: the page's settings, changed along up to three axes, one picture per
cell (each kept in History with its own parameters) and one labelled grid (kept too). Cancel keeps the
cells made so far and draws them."""

from __future__ import annotations

import dataclasses
import random
import time

import gradio as gr

from pipelines.image import GenerationCancelled, lora_set
from pipelines.image_plot import AXES, PlotParams, draw_grid, example, run_plot
from pipelines.media import png_bytes
from studio.actions import keep_images, loras_from, start_generation
from studio.tabs.common import friendly_errors, guarded, keep_output, session_of, user_of


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
    def run(request: gr.Request, x, x_values, y, y_values, z, z_values, *page):
        plot = PlotParams.parse((x, x_values), (y, y_values), (z, z_values))
        base, _ = page_params(services, list(page))
        if base.seed is None:  # one seed for every cell, so only the axes change the picture
            base = dataclasses.replace(base, seed=random.SystemRandom().randrange(2**32 - 1))
        model_name, files, weights = page[inputs.index(model)], page[inputs.index(lora_files)], \
            page[inputs.index(lora_weights)]
        owner, session = user_of(request), session_of(request)
        cancel = services.jobs.start(session, "image")
        kept: list[str] = []
        total = len(plot.cells())
        started = time.perf_counter()

        def make_cell(params, settings):
            loras = loras_from(files, weights)
            if "LoRA weight" in settings:
                if not loras:
                    raise ValueError("LoRA weight: add a LoRA file to plot its weight")
                loras = {name: (path, settings["LoRA weight"]) for name, (path, _) in loras.items()}
            params = dataclasses.replace(params, loras=lora_set(loras))
            try:
                with services.image_lease(settings.get("Model", model_name)) as pipe:
                    out = start_generation(services, pipe, params, cancel, watched=False).result()
            except GenerationCancelled:
                return None
            (_path, _seed, item_id), = keep_images(services, pipe, params, out, owner)
            kept.append(item_id)
            return out.images[0]

        try:
            done = run_plot(plot, base, make_cell, cancelled=cancel.is_set)
            stopped = cancel.is_set()
        finally:
            services.jobs.finish(session, "image", cancel)
        return done, plot, kept, total, started, stopped, owner

    def show(request: gr.Request, x, x_values, y, y_values, z, z_values, *page):
        done, plot, kept, total, started, stopped, owner = run(request, x, x_values, y, y_values, z, z_values, *page)
        if not done:
            return None, None, "Cancelled before the first picture: nothing was saved."
        picture = draw_grid(plot, done)
        axes = {which: {"axis": a.name, "values": [a.label(v) for v in a.values]}
                for which, a in zip("xyz", (plot.x, plot.y, plot.z)) if a.name != "Nothing"}
        item = keep_output(services, "image", {".png": png_bytes(picture)}, prompt=done[0][1].prompt,
                           params={"plot": axes, "cells": [i for i in kept if i]}, device=services.placement.describe(),
                           owner=owner)
        path = str(services.history.path(item.files[0])) if item else None
        took = time.perf_counter() - started
        head = f"**{len(done)} of {total} picture(s)**" + (" · cancelled: the cells made so far are kept" if stopped
                                                          else "")
        return picture, path, f"{head} · {took:.1f}s · each cell and the plot are in History"

    handler = friendly_errors(guarded(services, "image", generation=True)(show))
    make.click(handler, [*rows, *inputs], [grid, grid_file, status], api_visibility="private",
               concurrency_limit=services.image_concurrency, concurrency_id="image")

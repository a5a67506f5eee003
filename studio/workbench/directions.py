"""Directions as live sliders: find, slide, name, save and load."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.latent import move
from studio.actions import latent as ex
from studio.events import as_int, friendly_errors, guarded
from studio.workbench.common import MAX_SLIDERS, Context, CurrentPanel, MapAxes, show


# -- directions as sliders ---------------------------------------------------------------------------------

@dataclass
class DirectionPanel:
    method: gr.Dropdown
    count: gr.Slider
    positive: gr.Textbox | None
    negative: gr.Textbox | None
    find: gr.Button
    sliders: list
    hints: gr.Image
    which: gr.Dropdown
    name: gr.Textbox
    save: gr.Button
    load: gr.Button
    commit: gr.Button

    @classmethod
    def build(cls, prefix: str, methods: tuple[str, ...], prompt_pairs: bool) -> DirectionPanel:
        with gr.Row():
            method = gr.Dropdown(list(methods), value=methods[0], label="Method", scale=2)
            count = gr.Slider(1, MAX_SLIDERS, value=6, step=1, label="How many", scale=2)
            find = gr.Button("Find directions", variant="primary", scale=1, elem_id=f"{prefix}-find")
        positive = negative = None
        if prompt_pairs:
            with gr.Row():
                negative = gr.Textbox(label="Prompt pair: from…", placeholder="frowning", scale=1)
                positive = gr.Textbox(label="…to", placeholder="smiling", scale=1)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                sliders = [gr.Slider(-5, 5, value=0, step=0.1, label=f"Direction {i + 1}", visible=False,
                                     elem_id=f"{prefix}-direction-{i}") for i in range(MAX_SLIDERS)]
            hints = gr.Image(label="What each does (−2 · 0 · +2)", interactive=False, height=240, scale=1,
                             elem_id=f"{prefix}-hints")
        with gr.Row():
            commit = gr.Button("Make the moved picture current", size="sm")
            which = gr.Dropdown([], label="Direction", scale=1)
            name = gr.Textbox(label="Name it", placeholder="e.g. smile", scale=1)
            save = gr.Button("Save", size="sm")
            load = gr.Button("Load saved", size="sm")
        return cls(method, count, positive, negative, find, sliders, hints, which, name, save, load, commit)

    def amounts(self, values: dict, bench: ex.Bench) -> list[float]:
        """How far each of the bench's directions is slid, from a handler's inputs by component."""
        return [values[slider] for slider in self.sliders[:len(bench.directions)]]

    def slider_updates(self, bench: ex.Bench) -> list:
        names = [d.name for d in bench.directions]
        return [gr.Slider(value=0, label=names[i], visible=True) if i < len(names) else gr.Slider(value=0, visible=False)
                for i in range(MAX_SLIDERS)]

    def wire(self, ctx: Context, current: CurrentPanel, map_panel: MapAxes) -> None:
        pairs = {"positive": self.positive, "negative": self.negative} if self.positive is not None else {}

        def find(values: dict, request: gr.Request):
            bench, method = values[ctx.bench], values[self.method]
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            if method not in model.direction_methods:  # e.g. "dimensions" on a VAE with a spatial latent
                method = model.direction_methods[0]
            origin = bench.current or model.point_for_seed(0, prompt="")
            options = {name: values[box] for name, box in pairs.items()}
            k = as_int("directions", values[self.count])
            found = ctx.services.host.lanes.run("model", model.directions, method, k, origin, interactive=True,
                                                **options)  # the sliders' own: beside a running job
            bench.directions = (bench.directions + found)[-MAX_SLIDERS:] if method == "prompt-pair" else found
            hints = ex.hint_strip(ctx.services, model, origin, bench.directions)
            names = [d.name for d in bench.directions]
            return (bench, *self.slider_updates(bench), hints, gr.Dropdown(choices=names, value=names[0]),
                    *map_panel.axis_updates(names))

        def slide(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            if bench.current is None or not bench.directions:
                return gr.skip()
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            moved = move(bench.current, bench.directions, self.amounts(values, bench))
            preview = model.kind == "diffusion"
            return ex.picture(ex.render(ctx.services, model, [moved], preview=preview)[0])

        def commit(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            if bench.current is None:
                raise ValueError("Open a picture first (a seed, a grid cell or an upload).")
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            moved = move(bench.current, bench.directions, self.amounts(values, bench))
            moved.label = f"{bench.current.label} (moved)"
            return (*show(ctx, bench, model, moved), *[gr.Slider(value=0) for _ in range(MAX_SLIDERS)])

        def save(bench, model_name, look, which, name, request: gr.Request):
            model = ctx.space(model_name, look, bench)
            chosen = next((d for d in bench.directions if d.name == which), None)
            if chosen is None:
                raise ValueError("Direction: choose which one to name (find directions first).")
            ex.save_direction(ctx.services, model, chosen, name)
            bench.directions = [d if d is not chosen else type(d)(name.strip(), d.space, d.vector, d.std, d.method, d.hint)
                                for d in bench.directions]
            names = [d.name for d in bench.directions]
            return bench, *self.slider_updates(bench), gr.Dropdown(choices=names, value=name.strip())

        def load(bench, model_name, look, request: gr.Request):
            model = ctx.space(model_name, look, bench)
            saved = ex.saved_directions(ctx.services, model)
            if not saved:
                raise ValueError(f"No saved directions for {model.name} yet: find some, name one and press Save.")
            bench.directions = saved[-MAX_SLIDERS:]
            names = [d.name for d in bench.directions]
            return (bench, *self.slider_updates(bench), gr.Dropdown(choices=names, value=names[0]),
                    *map_panel.axis_updates(names))

        base = [ctx.bench, ctx.model, ctx.look]
        named = [ctx.bench, *self.sliders, self.which]
        self.find.click(ctx.event(find, generation=True), {*base, self.method, self.count, *pairs.values()},
                        [ctx.bench, *self.sliders, self.hints, self.which, map_panel.axis_x, map_panel.axis_y],
                        api_visibility="private")
        for slider in self.sliders:  # live: only the last position counts, no progress overlay
            slider.change(ctx.event(slide), {*base, *self.sliders}, current.image, api_visibility="private",
                          trigger_mode="always_last", show_progress="hidden", queue=False)
        self.commit.click(ctx.event(commit), {*base, *self.sliders}, [*current.outputs(ctx), *self.sliders],
                          api_visibility="private")
        owner = friendly_errors(guarded(ctx.services, ctx.tab, owner_only="name shared directions")(save))
        self.save.click(owner, [*base, self.which, self.name], named, api_visibility="private")
        self.load.click(ctx.event(load), base, [*named, map_panel.axis_x, map_panel.axis_y], api_visibility="private")

"""The latent workbench's UI pieces, composed by the Explore (diffusion), GAN and VAE tabs.

Each piece builds its components inside the current Blocks and returns a dataclass of handles; its
`wire` method connects events to `studio/actions/latent.py` actions. All pieces share one per-tab `Bench`
state (gr.State) and the picture being changed (`CurrentPanel`), which stays in view — sticky beside
the tools at desktop width, a smaller sticky picture at phone width — while sliders and the timeline
move it. Grids, maps and broods are sent as one picture; a click is mapped back to its cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.actions import latent as ex
from studio.workbench.common import Context, CurrentPanel, wire_current_files
from studio.workbench.directions import DirectionPanel
from studio.workbench.panels import BreedPanel, GridPanel, MapPanel, StartRow
from studio.workbench.share import SharePanel, shown_picture, slider_values
from studio.workbench.timeline import TimelinePanel

# -- the whole workbench ---------------------------------------------------------------------------------

@dataclass
class Workbench:
    ctx: Context
    current: CurrentPanel
    start: StartRow
    grid: GridPanel
    directions: DirectionPanel
    map: MapPanel
    timeline: TimelinePanel
    breed: BreedPanel
    share: SharePanel

    def controls(self) -> dict:
        """The controls an exploration link keeps, by name (the direction sliders are kept apart)."""
        g, d, m, t, b = self.grid, self.directions, self.map, self.timeline, self.breed
        return {"seed": self.start.seed, "grid_first_seed": g.first_seed, "grid_size": g.size,
                "variation_strength": g.strength, "direction_method": d.method, "direction_count": d.count,
                "axis_x": m.axis_x, "axis_y": m.axis_y, "map_extent": m.extent, "map_cells": m.cells,
                "frames": t.frames, "ease": t.ease, "path": t.method, "text_path": t.text_method, "loop": t.loop,
                "fps": t.fps, "children": b.children, "crossover": b.crossover, "mutation": b.mutation}

    def wire_share(self, settings: dict) -> None:
        """Sharing and opening links; `settings` are the tab's render settings by name (model, prompt, …)."""
        ctx, controls = self.ctx, self.controls()
        pictures = [ctx.bench, ctx.look, self.current.image, self.current.label, self.timeline.keys, self.breed.parents]

        def restore(shared, model) -> list:
            bench = shared.bench
            names = [d.name for d in bench.directions]
            values = {**shared.controls, "axis_x": gr.Dropdown(choices=names, value=shared.controls.get("axis_x")),
                      "axis_y": gr.Dropdown(choices=names, value=shared.controls.get("axis_y"))}
            parents = self.breed.parents_picture(ctx, bench, model) if bench.parents else None
            label = f"**{bench.current.label or 'point'}** · opened from a shared link"
            return [bench, shared.settings.get("look"), shown_picture(ctx, shared, model), label,
                    self.timeline.summary(bench), parents,
                    *[shared.settings.get(k, gr.skip()) for k in settings],
                    *[values.get(k, gr.skip()) for k in controls], *slider_values(shared),
                    gr.Dropdown(choices=names, value=names[0] if names else None)]

        outputs = [*pictures, *settings.values(), *controls.values(), *self.directions.sliders, self.directions.which]
        self.share.wire(ctx, settings, controls, self.directions.sliders, outputs, restore)

    def wire_open(self, app: gr.Blocks) -> None:
        """On page load, open the exploration link in the address, when it is this tab's."""
        fn, outputs = self.share.opener
        app.load(fn, None, outputs, api_visibility="private")


@dataclass(frozen=True)
class WorkbenchSpec:
    """What a tab gives the workbench.

    tab, prefix: the tab's name (History, permissions) and the prefix of the pieces' elem_ids.
    kind: the model kind explored ("diffusion", "gan", "vae"); model, look: the tab's model box and its look
        state (a dict of DiffusionLook fields, or None); prompt: the tab's prompt box (diffusion).
    methods: the direction methods offered; truncation: the GAN's ψ slider, read by grids.
    can_encode: a picture can be uploaded and encoded into a point; max_grid, max_frames: the tab's limits.
    settings: the tab's render settings by name, which exploration links keep (default: the model alone).
    """

    tab: str
    prefix: str
    kind: str
    model: gr.Dropdown
    look: gr.State
    methods: tuple[str, ...]
    prompt: gr.Textbox | None = None
    truncation: gr.Slider | None = None
    can_encode: bool = False
    max_grid: int = 8
    max_frames: int = 2400
    settings: dict | None = None


def build_workbench(services, spec: WorkbenchSpec) -> Workbench:
    """The picture being changed (left, sticky) beside the tools (right): start, grid, directions, map,
    timeline, breed — the same pieces for every model kind."""
    prefix, kind = spec.prefix, spec.kind
    bench = gr.State(ex.Bench())
    ctx = Context(services, spec.tab, (kind,), bench, spec.model, spec.look, spec.prompt)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=260, elem_classes=["bench-current"]):
            current = CurrentPanel.build(prefix)
            share = SharePanel.build(prefix)
        with gr.Column(scale=3):
            start = StartRow.build(prefix, spec.can_encode, image_prompts=kind == "diffusion")
            with gr.Tabs():
                with gr.Tab("Grid", id=f"{prefix}-tab-grid", elem_id=f"{prefix}-tab-grid"):
                    grid_panel = GridPanel.build(prefix, spec.max_grid)
                with gr.Tab("Directions", id=f"{prefix}-tab-directions", elem_id=f"{prefix}-tab-directions"):
                    directions = DirectionPanel.build(prefix, spec.methods,
                                                      prompt_pairs="prompt-pair" in spec.methods)
                with gr.Tab("Map", id=f"{prefix}-tab-map", elem_id=f"{prefix}-tab-map"):
                    map_panel = MapPanel.build(prefix)
                with gr.Tab("Timeline", id=f"{prefix}-tab-timeline", elem_id=f"{prefix}-tab-timeline"):
                    timeline = TimelinePanel.build(prefix, text_methods=kind == "diffusion", limit=spec.max_frames)
                with gr.Tab("Breed", id=f"{prefix}-tab-breed", elem_id=f"{prefix}-tab-breed"):
                    brood = BreedPanel.build(prefix)
    start.wire(ctx, current)
    grid_panel.wire(ctx, current, timeline, brood, spec.truncation)
    directions.wire(ctx, current, map_panel)
    map_panel.wire(ctx, current, timeline, brood)
    timeline.wire(ctx, current)
    brood.wire(ctx, current, timeline)
    wire_current_files(ctx, current)
    grid_panel.wire_variations(ctx)
    bench_ui = Workbench(ctx, current, start, grid_panel, directions, map_panel, timeline, brood, share)
    bench_ui.wire_share(spec.settings or {"model": spec.model})
    return bench_ui

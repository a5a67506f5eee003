"""Start (seed, upload), grid, map and breeding: the panels that make one clickable picture of cells."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.checks import check_int
from pipelines.image_latent import DiffusionLook
from pipelines.latent import breed, map_points, vary
from studio.actions import latent as ex
from studio.events import as_int, check_named, parse_seed, seed_field
from studio.workbench.common import (
    ACTIONS,
    Context,
    CurrentPanel,
    Keyframes,
    Parents,
    keep_cells,
    show,
    wire_cell_clicks,
)

# -- start: a seed, a prompt, an upload -----------------------------------------------------------------------

@dataclass
class StartRow:
    seed: gr.Textbox
    open_seed: gr.Button
    dice: gr.Button
    upload: gr.Image | None
    image_prompt: gr.Image | None = None

    @classmethod
    def build(cls, prefix: str, can_encode: bool, image_prompts: bool = False) -> StartRow:
        with gr.Row():
            seed = gr.Textbox(value="0", label="Seed", scale=2, elem_id=f"{prefix}-seed")
            open_seed = gr.Button("Open seed", variant="primary", scale=1, elem_id=f"{prefix}-open")
            dice = gr.Button("🎲 Random", scale=1)
        upload = None
        if can_encode:
            with gr.Accordion("…or start from a picture (encoded into the latent space)", open=False):
                upload = gr.Image(label="Picture", type="numpy", height=160, elem_id=f"{prefix}-upload")
        image_prompt = None
        if image_prompts:
            with gr.Accordion("…with an image prompt: the seeds you open also follow this picture (IP-Adapter)",
                              open=False):
                image_prompt = gr.Image(label="Image prompt (choose the IP-Adapter in the render settings)",
                                        type="filepath", height=160, elem_id=f"{prefix}-image-prompt")
        return cls(seed, open_seed, dice, upload, image_prompt)

    def wire(self, ctx: Context, current: CurrentPanel) -> None:
        prompt = {ctx.prompt} if ctx.prompt is not None else set()

        def open_seed(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            seed = parse_seed(values[self.seed])
            seed = seed if seed is not None else ex.random_seed()
            image = ex.image_prompt(ctx.services, values[self.image_prompt]) if self.image_prompt is not None else None
            point = model.point_for_seed(seed, prompt=values[ctx.prompt] if prompt else "",
                                         **({"image": image} if image is not None else {}))
            return show(ctx, bench, model, point)

        def encode(values: dict, request: gr.Request):
            bench, image, look = values[ctx.bench], values[self.upload], values[ctx.look]
            if image is None:
                return gr.skip(), gr.skip(), gr.skip()
            model = ctx.space(values[ctx.model], look, bench)
            from PIL import Image as PILImage

            from pipelines.vae import prepare_images

            size = DiffusionLook(**look).width if look else model.pipe.model.size  # diffusion / VAE
            images, _ = prepare_images([PILImage.fromarray(image)], size)
            (point,) = ctx.services.host.lanes.run("model", model.encode, images,
                                                   prompt=values[ctx.prompt] if prompt else "", interactive=True)
            return show(ctx, bench, model, point, "encoded from your picture")

        inputs = {ctx.bench, ctx.model, ctx.look, self.seed, *prompt,
                  *([self.image_prompt] if self.image_prompt is not None else [])}
        self.open_args = (ctx.event(open_seed), inputs, current.outputs(ctx))  # other tabs open points too
        self.open_seed.click(ctx.event(open_seed), inputs, current.outputs(ctx), api_visibility="private",
                             validator=check_named({self.seed: seed_field}))
        self.dice.click(lambda: str(ex.random_seed()), None, self.seed, api_visibility="private")
        if self.upload is not None:
            self.upload.upload(ctx.event(encode), {ctx.bench, ctx.model, ctx.look, self.upload, *prompt},
                               current.outputs(ctx), api_visibility="private")


# -- grid, map and brood: one picture, clickable --------------------------------------------------------------

@dataclass
class GridPanel:
    first_seed: gr.Textbox
    size: gr.Slider
    make: gr.Button
    action: gr.Radio
    picture: gr.Image
    strength: gr.Slider
    vary: gr.Button

    @classmethod
    def build(cls, prefix: str, max_grid: int = 8) -> GridPanel:
        with gr.Row():
            first_seed = gr.Textbox(value="0", label="First seed", scale=1)
            size = gr.Slider(1, max_grid, value=4, step=1, label="Grid (N×N)", scale=2, elem_id=f"{prefix}-grid-size")
            make = gr.Button("Make grid", variant="primary", scale=1, elem_id=f"{prefix}-make-grid")
        with gr.Row():
            strength = gr.Slider(0, 1, value=0.25, step=0.01, label="Variation strength", scale=2)
            vary = gr.Button("Variations of the current picture", scale=1, elem_id=f"{prefix}-vary")
        action = gr.Radio(list(ACTIONS), value=ACTIONS[0], label="Clicking a cell will…", elem_id=f"{prefix}-action")
        picture = gr.Image(label="Grid — click a cell", interactive=False, elem_id=f"{prefix}-grid")
        return cls(first_seed, size, make, action, picture, strength, vary)

    def wire_variations(self, ctx: Context) -> None:
        def variations(bench, model_name, look, strength, n, request: gr.Request):
            if bench.current is None:
                raise ValueError("Open a picture first; variations are made around it.")
            model = ctx.space(model_name, look, bench)
            n = as_int("grid", n)
            check_int("grid", n, 1, ctx.services.settings.gan_limits.max_grid)
            seed = ex.random_seed()
            points = vary(bench.current, float(strength), n * n, seed)
            images = ex.render(ctx.services, model, points, interactive=False)
            picture = ex.show_cells(bench, images, points, n)
            keep_cells(ctx, request, model, picture, points, f"variations of {bench.current.label}",
                       {"strength": float(strength), "variation_seed": seed})
            return bench, picture

        self.vary.click(ctx.event(variations, generation=True),
                        [ctx.bench, ctx.model, ctx.look, self.strength, self.size], [ctx.bench, self.picture],
                        api_visibility="private")

    def wire(self, ctx: Context, current: CurrentPanel, timeline: Keyframes, brood: Parents,
             truncation: gr.Slider | None = None) -> None:
        optional = {c for c in (truncation, ctx.prompt) if c is not None}

        def make(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            first = parse_seed(values[self.first_seed]) or 0
            n = as_int("grid", values[self.size])
            check_int("grid", n, 1, ctx.services.settings.gan_limits.max_grid)  # the server's cap, not the slider's
            options = {"truncation": float(values[truncation])} if truncation is not None else {}
            if ctx.prompt is not None:
                options["prompt"] = values[ctx.prompt]
            points = [model.point_for_seed((first + i) % 2**32, **options) for i in range(n * n)]
            images = ex.render(ctx.services, model, points, interactive=False)
            picture = ex.show_cells(bench, images, points, n)
            keep_cells(ctx, request, model, picture, points, f"grid from seed {first}",
                       {"seed": first, "grid": n, **{k: v for k, v in options.items()}})
            return bench, picture

        self.make.click(ctx.event(make, generation=True),
                        {ctx.bench, ctx.model, ctx.look, self.first_seed, self.size, *optional},
                        [ctx.bench, self.picture], api_visibility="private", queue=ctx.slow,
                        validator=check_named({self.first_seed: seed_field}))
        wire_cell_clicks(ctx, self.picture, self.action, current, timeline, brood)


# -- map over two directions --------------------------------------------------------------------------------

@dataclass
class MapPanel:
    axis_x: gr.Dropdown
    axis_y: gr.Dropdown
    extent: gr.Slider
    cells: gr.Slider
    draw: gr.Button
    action: gr.Radio
    picture: gr.Image

    @classmethod
    def build(cls, prefix: str) -> MapPanel:
        with gr.Row():
            axis_x = gr.Dropdown([], label="X axis", scale=1, elem_id=f"{prefix}-axis-x")
            axis_y = gr.Dropdown([], label="Y axis", scale=1, elem_id=f"{prefix}-axis-y")
            extent = gr.Slider(0.5, 5, value=2.5, step=0.1, label="Range (± slider units)", scale=1)
            cells = gr.Slider(2, 24, value=8, step=1, label="Cells per side", scale=1, elem_id=f"{prefix}-map-cells")
        with gr.Row():
            draw = gr.Button("Draw map", variant="primary", elem_id=f"{prefix}-draw-map")
            action = gr.Radio(list(ACTIONS), value=ACTIONS[0], label="Clicking a cell will…")
        picture = gr.Image(label="Map — centred on the current picture; click a cell", interactive=False,
                           elem_id=f"{prefix}-map")
        return cls(axis_x, axis_y, extent, cells, draw, action, picture)

    def axis_updates(self, names: list[str]) -> list:
        second = names[1] if len(names) > 1 else None
        return [gr.Dropdown(choices=names, value=names[0] if names else None), gr.Dropdown(choices=names, value=second)]

    def wire(self, ctx: Context, current: CurrentPanel, timeline: Keyframes, brood: Parents) -> None:
        def draw(bench, model_name, look, ax, ay, extent, n, request: gr.Request):
            model = ctx.space(model_name, look, bench)
            if len(bench.directions) < 2:
                method = model.direction_methods[0]
                if method == "prompt-pair":
                    method = "h-space"
                origin = bench.current or model.point_for_seed(0)
                bench.directions = ctx.services.host.lanes.run("model", model.directions, method, 4, origin,
                                                          interactive=True)
            names = [d.name for d in bench.directions]
            ax = ax if ax in names else names[0]
            ay = ay if ay in names and ay != ax else next(n_ for n_ in names if n_ != ax)
            origin = bench.current or model.point_for_seed(0)
            bench.current = origin
            dx, dy = (next(d for d in bench.directions if d.name == a) for a in (ax, ay))
            n = as_int("cells", n)
            points = map_points(origin, dx, dy, float(extent), n)
            images = ex.render(ctx.services, model, points, interactive=False)
            picture = ex.show_cells(bench, images, points, n, cell=72)
            keep_cells(ctx, request, model, picture, points, f"map over {ax} × {ay}",
                       {"origin": origin.label, "x": ax, "y": ay, "extent": float(extent), "grid": n})
            return bench, picture, gr.Dropdown(choices=names, value=ax), gr.Dropdown(choices=names, value=ay)

        self.draw.click(ctx.event(draw, generation=True),
                        [ctx.bench, ctx.model, ctx.look, self.axis_x, self.axis_y, self.extent, self.cells],
                        [ctx.bench, self.picture, self.axis_x, self.axis_y], api_visibility="private",
                        queue=ctx.slow)
        wire_cell_clicks(ctx, self.picture, self.action, current, timeline, brood)


# -- breeding ----------------------------------------------------------------------------------------------

@dataclass
class BreedPanel:
    parents: gr.Image
    clear: gr.Button
    children: gr.Slider
    crossover: gr.Slider
    mutation: gr.Slider
    breed: gr.Button
    brood: gr.Image
    action: gr.Radio

    @classmethod
    def build(cls, prefix: str, max_children: int = 16) -> BreedPanel:
        with gr.Row():
            parents = gr.Image(label="Parents (add with + Parent, or from grid cells)", interactive=False, height=120,
                               scale=3, elem_id=f"{prefix}-parents")
            clear = gr.Button("Clear parents", size="sm", scale=1)
        with gr.Row():
            children = gr.Slider(1, max_children, value=8, step=1, label="Children")
            crossover = gr.Slider(0, 1, value=0.5, step=0.05, label="Crossover", info="share from the other parents")
            mutation = gr.Slider(0, 1, value=0.05, step=0.01, label="Mutation rate")
        with gr.Row():
            breed_button = gr.Button("Breed", variant="primary", elem_id=f"{prefix}-breed")
            action = gr.Radio(list(ACTIONS), value=ACTIONS[0], label="Clicking a child will…")
        brood = gr.Image(label="Children — click one", interactive=False, elem_id=f"{prefix}-brood")
        return cls(parents, clear, children, crossover, mutation, breed_button, brood, action)

    def add(self, bench: ex.Bench, point) -> None:
        if len(bench.parents) >= 8:
            raise ValueError("parents: at most 8; clear some first")
        bench.parents.append(point)

    def parents_picture(self, ctx: Context, bench: ex.Bench, model):
        images = ex.render(ctx.services, model, bench.parents)
        return ex.grid_picture(images, len(images), 64)

    def wire(self, ctx: Context, current: CurrentPanel, timeline: Keyframes) -> None:
        def add_current(bench, model_name, look, request: gr.Request):
            if bench.current is None:
                raise ValueError("Open a picture first, then add it as a parent.")
            model = ctx.space(model_name, look, bench)
            self.add(bench, bench.current)
            return bench, self.parents_picture(ctx, bench, model)

        def clear(bench):
            bench.parents = []
            return bench, None

        def make(bench, model_name, look, n, cross, mutate, request: gr.Request):
            model = ctx.space(model_name, look, bench)
            seed = ex.random_seed()
            kids = breed(bench.parents, as_int("children", n), float(cross), float(mutate), seed)
            images = ex.render(ctx.services, model, kids, interactive=False)
            columns = min(8, len(kids))
            picture = ex.show_cells(bench, images, kids, columns)
            keep_cells(ctx, request, model, picture, kids, f"brood of {len(bench.parents)} parents",
                       {"crossover": float(cross), "mutation": float(mutate), "breed_seed": seed,
                        "parents": [p.label for p in bench.parents]}, parent=bench.history_id)
            return bench, picture

        base = [ctx.bench, ctx.model, ctx.look]
        current.as_parent.click(ctx.event(add_current), base, [ctx.bench, self.parents], api_visibility="private")
        self.clear.click(clear, ctx.bench, [ctx.bench, self.parents], api_visibility="private")
        self.breed.click(ctx.event(make, generation=True), [*base, self.children, self.crossover, self.mutation],
                         [ctx.bench, self.brood], api_visibility="private")
        wire_cell_clicks(ctx, self.brood, self.action, current, timeline, self)

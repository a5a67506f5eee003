"""The latent workbench's UI pieces, composed by the Explore (diffusion), GAN and VAE tabs.

Each piece builds its components inside the current Blocks and returns a dataclass of handles; its
`wire` method connects events to `studio/explore.py` actions. All pieces share one per-tab `Bench`
state (gr.State) and the picture being changed (`CurrentPanel`), which stays in view — sticky beside
the tools at desktop width, a smaller sticky picture at phone width — while sliders and the timeline
move it. Grids, maps and broods are sent as one picture; a click is mapped back to its cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from pipelines.image_latent import DiffusionLook
from pipelines.latent import (
    EASES,
    WalkParams,
    breed,
    map_points,
    move,
    point_at,
    save_points,
    vary,
    walk,
)
from pipelines.media import gif_bytes, mp4_bytes, png_bytes
from studio import explore as ex
from studio.tabs.common import (
    as_int,
    check_fields,
    friendly_errors,
    guarded,
    keep_output,
    parse_seed,
    seed_field,
    user_of,
)

MAX_SLIDERS = 16
ACTIONS = ("open it", "add as keyframe", "add as parent")


@dataclass
class Context:
    """What every piece needs: the services, the tab name, the model kinds it explores, and the shared
    components (bench state, model box, look state, prompt box)."""

    services: object
    tab: str
    kinds: tuple[str, ...]
    bench: gr.State
    model: gr.Dropdown
    look: gr.State  # a dict of DiffusionLook fields (diffusion) or None
    prompt: gr.Textbox | None = None
    pieces: list = field(default_factory=list)

    def space(self, model_name: str, look: dict | None, bench: ex.Bench):
        kind = self.kinds[0]
        model = ex.latent_model(self.services, model_name or self.services.registry.default(
            "image" if kind == "diffusion" else kind), kind, DiffusionLook(**look) if look else None)
        bench.use(model)
        return model

    @property
    def slow(self) -> bool:
        """Whether grids and maps take long enough to need the queue (progress, fairness): diffusion does;
        a GAN or VAE answers in a fraction of a second, so those skip the queue's extra round trips."""
        return "diffusion" in self.kinds

    def event(self, fn, *, generation: bool = False):
        """A handler with the studio's error wording and server-side permission checks."""
        return friendly_errors(guarded(self.services, self.tab, generation=generation)(fn))


# -- the picture being changed ------------------------------------------------------------------------------

@dataclass
class CurrentPanel:
    image: gr.Image
    label: gr.Markdown
    keep: gr.Button
    as_key: gr.Button
    as_parent: gr.Button
    download: gr.Button
    latent_file: gr.File

    @classmethod
    def build(cls, prefix: str) -> CurrentPanel:
        image = gr.Image(label="Current", height=300, interactive=False, elem_id=f"{prefix}-current",
                         show_label=True, elem_classes=["bench-picture"])
        label = gr.Markdown("Open a seed, click a grid cell or upload a picture.", elem_id=f"{prefix}-current-label")
        with gr.Row(elem_classes=["bench-buttons"]):
            keep = gr.Button("Keep", size="sm", min_width=60, elem_id=f"{prefix}-keep")
            as_key = gr.Button("+ Keyframe", size="sm", min_width=60, elem_id=f"{prefix}-add-key")
            as_parent = gr.Button("+ Parent", size="sm", min_width=60, elem_id=f"{prefix}-add-parent")
            download = gr.Button("Latent ↓", size="sm", min_width=60)
        with gr.Accordion("Latent file", open=False, elem_classes=["bench-latent-file"]):
            latent_file = gr.File(label="Latent (.safetensors) — download the current one, or drop one to reopen it",
                                  file_types=[".safetensors"], height=90)
        return cls(image, label, keep, as_key, as_parent, download, latent_file)

    def outputs(self, ctx: Context) -> list:
        return [ctx.bench, self.image, self.label]


def keep_cells(ctx: Context, request, model, picture, points, prompt: str, params: dict,
               parent: str | None = None) -> None:
    """A grid, map or brood goes to History as one item — the picture and its cells' latents — written on
    the history lane after the answer has gone back (off the hot path)."""
    owner = user_of(request)

    def write(_report):
        path = ctx.services.history.root / f".tmp-cells-{ex.random_seed()}.safetensors"
        save_points(points, path)
        ctx.services.history.add(ctx.tab, {".png": png_bytes(picture), ".safetensors": path.read_bytes()},
                                 prompt=prompt, params={"model": model.name, **params}, model=model.name,
                                 device=ctx.services.placement.describe(), owner=owner, parent=parent)
        path.unlink(missing_ok=True)

    ctx.services.lanes.submit_background("history", write)


def show(ctx: Context, bench: ex.Bench, model, point, note: str = ""):
    """Make `point` the current one and return (bench, picture, label)."""
    bench.current = model.check(point)
    image = ex.render(ctx.services, model, [point])[0]
    return bench, ex.picture(image), f"**{point.label or 'point'}**" + (f" · {note}" if note else "")


# -- start: a seed, a prompt, an upload -----------------------------------------------------------------------

@dataclass
class StartRow:
    seed: gr.Textbox
    open_seed: gr.Button
    dice: gr.Button
    upload: gr.Image | None

    @classmethod
    def build(cls, prefix: str, can_encode: bool) -> StartRow:
        with gr.Row():
            seed = gr.Textbox(value="0", label="Seed", scale=2, elem_id=f"{prefix}-seed")
            open_seed = gr.Button("Open seed", variant="primary", scale=1, elem_id=f"{prefix}-open")
            dice = gr.Button("🎲 Random", scale=1)
        upload = None
        if can_encode:
            with gr.Accordion("…or start from a picture (encoded into the latent space)", open=False):
                upload = gr.Image(label="Picture", type="numpy", height=160, elem_id=f"{prefix}-upload")
        return cls(seed, open_seed, dice, upload)

    def wire(self, ctx: Context, current: CurrentPanel) -> None:
        prompt = [ctx.prompt] if ctx.prompt is not None else []

        def open_seed(request: gr.Request, bench, model_name, look, seed_text, *rest):
            model = ctx.space(model_name, look, bench)
            seed = parse_seed(seed_text)
            seed = seed if seed is not None else ex.random_seed()
            point = model.point_for_seed(seed, prompt=rest[0] if rest else "")
            return show(ctx, bench, model, point)

        def encode(request: gr.Request, bench, model_name, look, image, *rest):
            if image is None:
                return gr.skip(), gr.skip(), gr.skip()
            model = ctx.space(model_name, look, bench)
            from PIL import Image as PILImage

            from pipelines.vae import prepare_images

            size = DiffusionLook(**look).width if look else model.pipe.model.size  # diffusion / VAE
            images, _ = prepare_images([PILImage.fromarray(image)], size)
            (point,) = ctx.services.lanes.run("model", model.encode, images, prompt=rest[0] if rest else "",
                                              interactive=True)
            return show(ctx, bench, model, point, "encoded from your picture")

        inputs = [ctx.bench, ctx.model, ctx.look, self.seed, *prompt]
        self.open_args = (ctx.event(open_seed), inputs, current.outputs(ctx))  # other tabs open points too
        self.open_seed.click(ctx.event(open_seed), inputs, current.outputs(ctx), api_visibility="private",
                             validator=check_fields(None, None, None, seed_field))
        self.dice.click(lambda: str(ex.random_seed()), None, self.seed, api_visibility="private")
        if self.upload is not None:
            self.upload.upload(ctx.event(encode), [ctx.bench, ctx.model, ctx.look, self.upload, *prompt],
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

    def wire(self, ctx: Context, current: CurrentPanel, timeline: TimelinePanel, brood: BreedPanel,
             truncation: gr.Slider | None = None) -> None:
        extra = [truncation] if truncation is not None else []
        prompt = [ctx.prompt] if ctx.prompt is not None else []

        def make(request: gr.Request, bench, model_name, look, first, n, *rest):
            model = ctx.space(model_name, look, bench)
            first = parse_seed(first) or 0
            n = as_int("grid", n)
            options = {"truncation": float(rest[0])} if truncation is not None else {}
            if ctx.prompt is not None:
                options["prompt"] = rest[-1]
            points = [model.point_for_seed((first + i) % 2**32, **options) for i in range(n * n)]
            images = ex.render(ctx.services, model, points, interactive=False)
            picture = ex.show_cells(bench, images, points, n)
            keep_cells(ctx, request, model, picture, points, f"grid from seed {first}",
                       {"seed": first, "grid": n, **{k: v for k, v in options.items()}})
            return bench, picture

        self.make.click(ctx.event(make, generation=True),
                        [ctx.bench, ctx.model, ctx.look, self.first_seed, self.size, *extra, *prompt],
                        [ctx.bench, self.picture], api_visibility="private", queue=ctx.slow,
                        validator=check_fields(None, None, None, seed_field))
        wire_cell_clicks(ctx, self.picture, self.action, current, timeline, brood)


def wire_cell_clicks(ctx: Context, picture: gr.Image, action: gr.Radio, current: CurrentPanel,
                     timeline: TimelinePanel, brood: BreedPanel) -> None:
    def click(evt: gr.SelectData, bench, model_name, look, what, request: gr.Request):
        model = ctx.space(model_name, look, bench)
        index = ex.cell_at(bench, *evt.index[:2])
        point = bench.cells[index]
        if what == "add as keyframe":
            timeline.add(bench, point)
            return bench, gr.skip(), f"Added {point.label} to the timeline", gr.skip(), timeline.summary(bench)
        if what == "add as parent":
            brood.add(bench, point)
            return (bench, gr.skip(), f"Added {point.label} as a parent", brood.parents_picture(ctx, bench, model),
                    gr.skip())
        return (*show(ctx, bench, model, point), gr.skip(), gr.skip())

    picture.select(ctx.event(click), [ctx.bench, ctx.model, ctx.look, action],
                   [ctx.bench, current.image, current.label, brood.parents, timeline.keys],
                   api_visibility="private", show_progress="hidden")


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

    def slider_updates(self, bench: ex.Bench) -> list:
        names = [d.name for d in bench.directions]
        return [gr.Slider(value=0, label=names[i], visible=True) if i < len(names) else gr.Slider(value=0, visible=False)
                for i in range(MAX_SLIDERS)]

    def wire(self, ctx: Context, current: CurrentPanel, map_panel: MapPanel) -> None:
        pairs = [self.positive, self.negative] if self.positive is not None else []

        def find(request: gr.Request, bench, model_name, look, method, k, *pair):
            model = ctx.space(model_name, look, bench)
            if method not in model.direction_methods:  # e.g. "dimensions" on a VAE with a spatial latent
                method = model.direction_methods[0]
            origin = bench.current or model.point_for_seed(0, prompt="")
            options = dict(positive=pair[0], negative=pair[1]) if pair else {}
            found = ctx.services.lanes.run("model", model.directions, method, as_int("directions", k), origin,
                                           **options)
            bench.directions = (bench.directions + found)[-MAX_SLIDERS:] if method == "prompt-pair" else found
            hints = ex.hint_strip(ctx.services, model, origin, bench.directions)
            names = [d.name for d in bench.directions]
            return (bench, *self.slider_updates(bench), hints, gr.Dropdown(choices=names, value=names[0]),
                    *map_panel.axis_updates(names))

        def slide(request: gr.Request, bench, model_name, look, *amounts):
            if bench.current is None or not bench.directions:
                return gr.skip()
            model = ctx.space(model_name, look, bench)
            moved = move(bench.current, bench.directions, list(amounts[: len(bench.directions)]))
            preview = model.kind == "diffusion"
            return ex.picture(ex.render(ctx.services, model, [moved], preview=preview)[0])

        def commit(request: gr.Request, bench, model_name, look, *amounts):
            if bench.current is None:
                raise ValueError("Open a picture first (a seed, a grid cell or an upload).")
            model = ctx.space(model_name, look, bench)
            moved = move(bench.current, bench.directions, list(amounts[: len(bench.directions)]))
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
        self.find.click(ctx.event(find, generation=True), [*base, self.method, self.count, *pairs],
                        [*named[:-1], self.hints, self.which, map_panel.axis_x, map_panel.axis_y],
                        api_visibility="private")
        for slider in self.sliders:  # live: only the last position counts, no progress overlay
            slider.change(ctx.event(slide), [*base, *self.sliders], current.image, api_visibility="private",
                          trigger_mode="always_last", show_progress="hidden", queue=False)
        self.commit.click(ctx.event(commit), [*base, *self.sliders], [*current.outputs(ctx), *self.sliders],
                          api_visibility="private")
        owner = friendly_errors(guarded(ctx.services, ctx.tab, owner_only="name shared directions")(save))
        self.save.click(owner, [*base, self.which, self.name], named, api_visibility="private")
        self.load.click(ctx.event(load), base, [*named, map_panel.axis_x, map_panel.axis_y], api_visibility="private")


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

    def wire(self, ctx: Context, current: CurrentPanel, timeline: TimelinePanel, brood: BreedPanel) -> None:
        def draw(bench, model_name, look, ax, ay, extent, n, request: gr.Request):
            model = ctx.space(model_name, look, bench)
            if len(bench.directions) < 2:
                method = model.direction_methods[0]
                if method == "prompt-pair":
                    method = "h-space"
                origin = bench.current or model.point_for_seed(0)
                bench.directions = ctx.services.lanes.run("model", model.directions, method, 4, origin)
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


# -- the keyframe timeline ---------------------------------------------------------------------------------

@dataclass
class TimelinePanel:
    keys: gr.State  # a summary [(label, frames)] that drives the list below
    scrub: gr.Slider
    scrub_picture: gr.Image
    frames: gr.Slider
    ease: gr.Dropdown
    method: gr.Radio
    text_method: gr.Radio
    loop: gr.Checkbox
    fps: gr.Slider
    render: gr.Button
    strip: gr.Image
    animation: gr.Image
    files: gr.File
    limit: int = 2400

    @classmethod
    def build(cls, prefix: str, text_methods: bool, limit: int = 2400) -> TimelinePanel:
        keys = gr.State([])
        gr.Markdown("Keyframes: add them from the current picture (**+ Keyframe**) or from grid and map cells; "
                    "set each one's frames to the next, reorder or remove them.")
        holder: dict = {}  # the panel, once built: the list below wires its rows to it

        @gr.render(inputs=[keys])
        def draw_keys(summary):
            panel = holder["panel"]
            if not summary:
                gr.Markdown("*No keyframes yet.*")
            for i, (label, frames) in enumerate(summary):
                with gr.Row(equal_height=True):
                    gr.Markdown(f"**{i + 1}.** {label}")
                    count = gr.Number(value=frames, precision=0, label="frames to next", minimum=1, maximum=240,
                                      min_width=90, elem_id=f"{prefix}-key-{i}-frames", interactive=True)
                    up = gr.Button("↑", size="sm", min_width=40)
                    down = gr.Button("↓", size="sm", min_width=40)
                    drop = gr.Button("✕", size="sm", min_width=40, elem_id=f"{prefix}-key-{i}-remove")
                panel.wire_row(i, count, up, down, drop)

        with gr.Row():
            scrub = gr.Slider(0, 1, value=0, step=1, label="Scrub the timeline", scale=3, elem_id=f"{prefix}-scrub")
            scrub_picture = gr.Image(label="Frame", interactive=False, height=200, scale=1,
                                     elem_id=f"{prefix}-scrub-picture")
        with gr.Row():
            frames = gr.Slider(1, 240, value=24, step=1, label="Frames for new keyframes", elem_id=f"{prefix}-frames")
            ease = gr.Dropdown(list(EASES), value="ease-in-out", label="Easing")
            method = gr.Radio(["slerp", "lerp"], value="slerp", label="Latent path")
            text_method = gr.Radio(["lerp", "slerp"], value="lerp", label="Prompt path", visible=text_methods)
            loop = gr.Checkbox(value=False, label="Loop")
            fps = gr.Slider(1, 60, value=12, step=1, label="FPS")
        render = gr.Button("Render the timeline (GIF + MP4)", variant="primary", elem_id=f"{prefix}-render")
        strip = gr.Image(label="Frames", interactive=False)
        with gr.Row():
            animation = gr.Image(label="Animation", interactive=False, height=256, elem_id=f"{prefix}-animation")
            files = gr.File(label="GIF / MP4", file_count="multiple", interactive=False, elem_id=f"{prefix}-walk-files")
        panel = cls(keys, scrub, scrub_picture, frames, ease, method, text_method, loop, fps, render, strip,
                    animation, files, limit)
        holder["panel"] = panel
        return panel

    def wire_row(self, i: int, count, up, down, drop) -> None:
        """Events of keyframe row `i` (built by the list's render function)."""
        bench = self.ctx.bench

        def retime(b, value):
            b.keyframes[i].frames = as_int("frames", value)
            return b, self.summary(b)

        def shift(b, step):
            j = i + step
            if 0 <= j < len(b.keyframes):
                b.keyframes[i], b.keyframes[j] = b.keyframes[j], b.keyframes[i]
            return b, self.summary(b)

        def remove(b):
            if 0 <= i < len(b.keyframes):
                del b.keyframes[i]
            return b, self.summary(b)

        outputs = [bench, self.keys]
        count.blur(friendly_errors(retime), [bench, count], outputs, api_visibility="private")
        up.click(lambda b: shift(b, -1), bench, outputs, api_visibility="private")
        down.click(lambda b: shift(b, 1), bench, outputs, api_visibility="private")
        drop.click(remove, bench, outputs, api_visibility="private")

    @staticmethod
    def summary(bench: ex.Bench) -> list:
        return [(k.point.label, k.frames) for k in bench.keyframes]

    def add(self, bench: ex.Bench, point, frames: int | None = None) -> None:
        if len(bench.keyframes) >= ex.MAX_KEYFRAMES:
            raise ValueError(f"the timeline holds at most {ex.MAX_KEYFRAMES} keyframes")
        bench.keyframes.append(ex.Keyframe(point, frames or 24))

    def params(self, bench, ease, method, text_method, loop, fps) -> WalkParams:
        counts = [k.frames for k in bench.keyframes] if loop else [k.frames for k in bench.keyframes[:-1]]
        return ex.walk_params(counts or [24], ease, method, text_method, loop, fps, self.limit)

    def wire(self, ctx: Context, current: CurrentPanel) -> None:
        self.ctx = ctx
        settings = [self.ease, self.method, self.text_method, self.loop, self.fps]

        def scrub_range(bench, *values):
            if len(bench.keyframes) < 2:
                return gr.Slider(minimum=0, maximum=1, value=0)
            total = len(walk_positions_of(self, bench, *values))
            return gr.Slider(minimum=0, maximum=total - 1, value=0, step=1)

        def add_current(bench, frames, request: gr.Request):
            if bench.current is None:
                raise ValueError("Open a picture first, then add it as a keyframe.")
            self.add(bench, bench.current, as_int("frames", frames))
            return bench, self.summary(bench)

        def scrub(request: gr.Request, bench, model_name, look, frame, *values):
            if len(bench.keyframes) < 2:
                return gr.skip()
            model = ctx.space(model_name, look, bench)
            point = point_at([k.point for k in bench.keyframes], self.params(bench, *values), as_int("frame", frame))
            return ex.picture(ex.render(ctx.services, model, [point], preview=True)[0], 200)

        def render_walk(request: gr.Request, bench, model_name, look, *values):
            model = ctx.space(model_name, look, bench)
            if len(bench.keyframes) < 2:
                raise ValueError("keyframes: add at least two keyframes to the timeline")
            params = self.params(bench, *values)
            points = walk([k.point for k in bench.keyframes], params)
            frames = ex.render(ctx.services, model, points, interactive=False)
            scale = max(1, 256 // frames.shape[1])
            files = {".gif": gif_bytes(frames, params.fps, loop=params.loop, scale=scale),
                     ".mp4": mp4_bytes(frames, params.fps, scale=scale),
                     ".png": png_bytes(ex.grid_picture(frames, min(12, len(frames)), 64))}
            item = keep_output(ctx.services, ctx.tab, files, prompt=f"walk through {len(bench.keyframes)} keyframes",
                               params={"model": model.name, "keyframes": [k.point.label for k in bench.keyframes],
                                       "frames": list(params.frames), "ease": params.ease, "method": params.method,
                                       "text_method": params.text_method, "loop": params.loop, "fps": params.fps},
                               model=model.name, device=ctx.services.placement.describe(), owner=user_of(request))
            paths = [str(ctx.services.history.path(f)) for f in item.files] if item else []
            return (ex.grid_picture(frames, min(12, len(frames)), 64),
                    next((p for p in paths if p.endswith(".gif")), None), [p for p in paths if not p.endswith(".png")])

        base = [ctx.bench, ctx.model, ctx.look]
        current.as_key.click(ctx.event(add_current), [ctx.bench, self.frames], [ctx.bench, self.keys],
                             api_visibility="private")
        self.keys.change(scrub_range, [ctx.bench, *settings], self.scrub, api_visibility="private")
        for control in settings:
            control.change(scrub_range, [ctx.bench, *settings], self.scrub, api_visibility="private")
        self.scrub.change(ctx.event(scrub), [*base, self.scrub, *settings], self.scrub_picture,
                          api_visibility="private", trigger_mode="always_last", show_progress="hidden", queue=False)
        self.render.click(ctx.event(render_walk, generation=True), [*base, *settings],
                          [self.strip, self.animation, self.files], api_visibility="private")


def walk_positions_of(panel: TimelinePanel, bench: ex.Bench, *values):
    from pipelines.latent import walk_positions

    return walk_positions(len(bench.keyframes), panel.params(bench, *values))


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

    def wire(self, ctx: Context, current: CurrentPanel, timeline: TimelinePanel) -> None:
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


# -- keeping and moving latents ------------------------------------------------------------------------------

def wire_current_files(ctx: Context, current: CurrentPanel) -> None:
    def keep(bench, model_name, look, request: gr.Request):
        if bench.current is None:
            raise ValueError("Nothing to keep yet: open a picture first.")
        model = ctx.space(model_name, look, bench)
        image = ex.render(ctx.services, model, [bench.current])[0]
        path = ctx.services.history.root / ".tmp-latent.safetensors"
        save_points([bench.current], path)
        item = keep_output(ctx.services, ctx.tab, {".png": png_bytes(ex.picture(image, image.shape[0])),
                                                   ".safetensors": path.read_bytes()},
                           prompt=bench.current.label, params={"model": model.name, "label": bench.current.label},
                           model=model.name, device=ctx.services.placement.describe(), owner=user_of(request))
        path.unlink(missing_ok=True)
        bench.history_id = item.id if item else None
        return bench, f"**{bench.current.label}** · kept as {item.id}" if item else "Not saved: the disk is full"

    def download(bench):
        if bench.current is None:
            raise gr.Error("Nothing to download yet: open a picture first.")
        folder = ctx.services.history.root / ctx.tab / "latents"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"latent-{ex.random_seed()}.safetensors"
        save_points([bench.current], path)
        return str(path)

    def upload(bench, model_name, look, file, request: gr.Request):
        if not file:
            return gr.skip(), gr.skip(), gr.skip()
        model = ctx.space(model_name, look, bench)
        (point,) = ex.points_from_files([file], model)[:1]
        return show(ctx, bench, model, point, "from a latent file")

    base = [ctx.bench, ctx.model, ctx.look]
    current.keep.click(ctx.event(keep), base, [ctx.bench, current.label], api_visibility="private")
    current.download.click(download, ctx.bench, current.latent_file, api_visibility="private")
    current.latent_file.upload(ctx.event(upload), [*base, current.latent_file], current.outputs(ctx),
                               api_visibility="private")



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


def build_workbench(services, *, tab: str, prefix: str, kind: str, model: gr.Dropdown, look: gr.State,
                    methods: tuple[str, ...], prompt: gr.Textbox | None = None, truncation: gr.Slider | None = None,
                    can_encode: bool = False, max_grid: int = 8, max_frames: int = 2400) -> Workbench:
    """The picture being changed (left, sticky) beside the tools (right): start, grid, directions, map,
    timeline, breed — the same pieces for every model kind."""
    bench = gr.State(ex.Bench())
    ctx = Context(services, tab, (kind,), bench, model, look, prompt)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=260, elem_classes=["bench-current"]):
            current = CurrentPanel.build(prefix)
        with gr.Column(scale=3):
            start = StartRow.build(prefix, can_encode)
            with gr.Tabs():
                with gr.Tab("Grid", id=f"{prefix}-tab-grid", elem_id=f"{prefix}-tab-grid"):
                    grid_panel = GridPanel.build(prefix, max_grid)
                with gr.Tab("Directions", id=f"{prefix}-tab-directions", elem_id=f"{prefix}-tab-directions"):
                    directions = DirectionPanel.build(prefix, methods, prompt_pairs="prompt-pair" in methods)
                with gr.Tab("Map", id=f"{prefix}-tab-map", elem_id=f"{prefix}-tab-map"):
                    map_panel = MapPanel.build(prefix)
                with gr.Tab("Timeline", id=f"{prefix}-tab-timeline", elem_id=f"{prefix}-tab-timeline"):
                    timeline = TimelinePanel.build(prefix, text_methods=kind == "diffusion", limit=max_frames)
                with gr.Tab("Breed", id=f"{prefix}-tab-breed", elem_id=f"{prefix}-tab-breed"):
                    brood = BreedPanel.build(prefix)
    start.wire(ctx, current)
    grid_panel.wire(ctx, current, timeline, brood, truncation)
    directions.wire(ctx, current, map_panel)
    map_panel.wire(ctx, current, timeline, brood)
    timeline.wire(ctx, current)
    brood.wire(ctx, current, timeline)
    wire_current_files(ctx, current)
    grid_panel.wire_variations(ctx)
    return Workbench(ctx, current, start, grid_panel, directions, map_panel, timeline, brood)

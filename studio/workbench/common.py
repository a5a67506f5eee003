"""The workbench's shared pieces: the context every panel gets, the picture being changed (it stays in view
while sliders and the timeline move it), and clicks on one-picture grids, maps and broods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import gradio as gr

from pipelines.image_latent import DiffusionLook
from pipelines.latent import points_bytes, save_points
from pipelines.media import png_bytes
from studio.actions import latent as ex
from studio.events import friendly_errors, guarded, keep_output, user_of

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
        model = ex.latent_model(self.services, model_name or self.services.host.registry.default(
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


class Keyframes(Protocol):
    """What the other pieces use of the timeline panel (studio/workbench/timeline.py), so none imports it."""

    keys: object

    def add(self, bench, point) -> None: ...

    def summary(self, bench) -> str: ...


class Parents(Protocol):
    """What the other pieces use of the breeding panel (studio/workbench/panels.py)."""

    parents: object

    def add(self, bench, point) -> None: ...

    def parents_picture(self, ctx, bench, model): ...


class MapAxes(Protocol):
    """What the directions panel uses of the map panel: its axis boxes."""

    axis_x: object
    axis_y: object

    def axis_updates(self, names: list[str]) -> list: ...


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
        ctx.services.history.add(ctx.tab, {".png": png_bytes(picture), ".safetensors": points_bytes(points)},
                                 prompt=prompt, params={"model": model.name, **params}, model=model.name,
                                 device=ctx.services.host.placement.describe(), owner=owner, parent=parent)

    ctx.services.host.lanes.submit_background("history", write)


def show(ctx: Context, bench: ex.Bench, model, point, note: str = ""):
    """Make `point` the current one and return (bench, picture, label)."""
    bench.current = model.check(point)
    image = ex.render(ctx.services, model, [point])[0]
    return bench, ex.picture(image), f"**{point.label or 'point'}**" + (f" · {note}" if note else "")


def wire_cell_clicks(ctx: Context, picture: gr.Image, action: gr.Radio, current: CurrentPanel,
                     timeline: Keyframes, brood: Parents) -> None:
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


# -- keeping and moving latents ------------------------------------------------------------------------------

def wire_current_files(ctx: Context, current: CurrentPanel) -> None:
    def keep(bench, model_name, look, request: gr.Request):
        if bench.current is None:
            raise ValueError("Nothing to keep yet: open a picture first.")
        model = ctx.space(model_name, look, bench)
        image = ex.render(ctx.services, model, [bench.current])[0]
        item = keep_output(ctx.services, ctx.tab, {".png": png_bytes(ex.picture(image, image.shape[0])),
                                                   ".safetensors": points_bytes([bench.current])},
                           prompt=bench.current.label, params={"model": model.name, "label": bench.current.label},
                           model=model.name, device=ctx.services.host.placement.describe(), owner=user_of(request))
        bench.history_id = item.id if item else None
        return bench, f"**{bench.current.label}** · kept as {item.id}" if item else "Not saved: the disk is full"

    def download(bench):
        if bench.current is None:
            raise gr.Error("Nothing to download yet: open a picture first.")
        path = ctx.services.history.scratch_file(user_of(), "latent", ".safetensors")  # theirs, with a lifetime
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

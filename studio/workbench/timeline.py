"""The keyframe timeline: keys, easing, scrubbing and rendering a walk to a strip, GIF or MP4."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.latent import EASES, WalkParams, point_at, walk
from pipelines.media import gif_bytes, mp4_bytes, png_bytes
from studio.actions import latent as ex
from studio.events import as_int, friendly_errors, keep_output, user_of
from studio.workbench.common import Context, CurrentPanel

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

    @property
    def walk_settings(self) -> tuple:
        """How the walk goes between keyframes (read back by `params`)."""
        return (self.ease, self.method, self.text_method, self.loop, self.fps)

    def params(self, bench, values: dict) -> WalkParams:
        """The walk's parameters from `values` (a handler's inputs by component) and the keyframes' frames."""
        loop = values[self.loop]
        counts = [k.frames for k in bench.keyframes] if loop else [k.frames for k in bench.keyframes[:-1]]
        return ex.walk_params(counts or [24], values[self.ease], values[self.method], values[self.text_method], loop,
                              values[self.fps], self.limit)

    def wire(self, ctx: Context, current: CurrentPanel) -> None:
        self.ctx = ctx
        settings = self.walk_settings

        def scrub_range(values: dict):
            bench = values[ctx.bench]
            if len(bench.keyframes) < 2:
                return gr.Slider(minimum=0, maximum=1, value=0)
            total = len(walk_positions_of(self, bench, values))
            return gr.Slider(minimum=0, maximum=total - 1, value=0, step=1)

        def add_current(bench, frames, request: gr.Request):
            if bench.current is None:
                raise ValueError("Open a picture first, then add it as a keyframe.")
            self.add(bench, bench.current, as_int("frames", frames))
            return bench, self.summary(bench)

        def scrub(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            if len(bench.keyframes) < 2:
                return gr.skip()
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            point = point_at([k.point for k in bench.keyframes], self.params(bench, values),
                             as_int("frame", values[self.scrub]))
            return ex.picture(ex.render(ctx.services, model, [point], preview=True)[0], 200)

        def render_walk(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            model = ctx.space(values[ctx.model], values[ctx.look], bench)
            if len(bench.keyframes) < 2:
                raise ValueError("keyframes: add at least two keyframes to the timeline")
            params = self.params(bench, values)
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
                               model=model.name, device=ctx.services.host.placement.describe(), owner=user_of(request))
            paths = [str(ctx.services.history.path(f)) for f in item.files] if item else []
            return (ex.grid_picture(frames, min(12, len(frames)), 64),
                    next((p for p in paths if p.endswith(".gif")), None), [p for p in paths if not p.endswith(".png")])

        base = {ctx.bench, ctx.model, ctx.look}
        current.as_key.click(ctx.event(add_current), [ctx.bench, self.frames], [ctx.bench, self.keys],
                             api_visibility="private")
        for trigger in (self.keys, *settings):
            trigger.change(scrub_range, {ctx.bench, *settings}, self.scrub, api_visibility="private")
        self.scrub.change(ctx.event(scrub), {*base, self.scrub, *settings}, self.scrub_picture,
                          api_visibility="private", trigger_mode="always_last", show_progress="hidden", queue=False)
        self.render.click(ctx.event(render_walk, generation=True), {*base, *settings},
                          [self.strip, self.animation, self.files], api_visibility="private")


def walk_positions_of(panel: TimelinePanel, bench: ex.Bench, values: dict):
    from pipelines.latent import walk_positions

    return walk_positions(len(bench.keyframes), panel.params(bench, values))

"""Real-time mode in the Image tab: the picture follows the prompt as you type and the sliders as you move them
(SD-Turbo / LCM-class models in 1–4 steps; the emoji model in 4). The newest request wins: each one stops the one
before it and waits a moment for the next keystroke (studio.actions.images.live_picture). Keep saves the picture shown,
with its parameters, to History."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import gradio as gr

from studio.actions.images import keep_images, live_picture
from studio.actions.library import check_room
from studio.tabs.common import friendly_errors, guarded, session_of, user_of

LIVE_STEPS = 4


@dataclass
class LivePanel:
    on: gr.Checkbox
    steps: gr.Slider
    keep: gr.Button
    last: gr.State  # (model, params, output) of the picture shown, for Keep

    @classmethod
    def build(cls, max_steps: int) -> LivePanel:
        with gr.Row(equal_height=True, elem_id="image-live-row"):
            on = gr.Checkbox(False, label="Real-time", scale=1, elem_id="image-live",
                             info="the picture follows the prompt and sliders")
            steps = gr.Slider(1, min(8, max_steps), value=LIVE_STEPS, step=1, label="Real-time steps", scale=2,
                              elem_id="image-live-steps")
            keep = gr.Button("Keep this picture", size="sm", scale=1, elem_id="image-live-keep")
        return cls(on, steps, keep, gr.State(None))

    def wire(self, services, form, triggers: list, seed: gr.Textbox, picture: gr.Image,
             status: gr.Markdown) -> None:
        """form: the tab's ImageForm (what Generate reads); triggers: the inputs whose change draws."""

        def turned(on, seed_text):
            """A blank seed becomes a fixed one while real-time is on, so only what you change changes the picture."""
            if on and not str(seed_text or "").strip():
                return str(random.SystemRandom().randrange(2**32 - 1))
            return gr.skip()

        @friendly_errors
        @guarded(services, "image")
        def draw(values: dict, request: gr.Request):
            if not values[self.on]:
                return gr.skip(), gr.skip(), gr.skip()
            params, _ = form.to_params(services, values)
            params = replace(params, steps=int(values[self.steps]), batch_size=1, batch_count=1, hires=None)
            model = form.model(values)
            out = live_picture(services, model, params, session_of(request))
            if out is None:  # a newer request took over
                return gr.skip(), gr.skip(), gr.skip()
            return (out.images[0], (model, params, out),
                    f"Real-time · seed {out.seeds[0]} · {params.steps} steps · {out.seconds * 1000:.0f} ms")

        # what the user changes (typing, dragging), not values put back from History; off, each is one quick skip.
        # Every change is sent, even while a picture is being drawn ("multiple"; Gradio's default drops changes
        # made while one is pending, and would leave the picture behind the last keystroke): the server stops
        # the older one and draws the newest.
        drawing = dict(inputs={self.on, self.steps} | form.inputs, outputs=[picture, self.last, status],
                       api_visibility="private", queue=False, show_progress="hidden", trigger_mode="multiple")
        gr.on([trigger.input for trigger in (*triggers, self.steps)], draw, **drawing)
        self.on.input(turned, [self.on, seed], seed, api_visibility="private", queue=False).then(draw, **drawing)

        @friendly_errors
        @guarded(services, "image")  # the picture was counted when it was drawn; keeping it needs room
        def keep(last, request: gr.Request):
            if not last:
                raise ValueError("Real-time: turn it on and draw a picture first, then keep it.")
            check_room(services)
            model, params, out = last
            with services.host.image_lease(model) as pipe:
                (path, seed_used, _), = keep_images(services, pipe, out, user_of(request))
            return f"Kept in History: seed {seed_used}, {params.steps} steps."

        self.keep.click(keep, self.last, status, api_visibility="private")

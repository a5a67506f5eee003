"""Share this exploration: a link that reopens the workbench exactly as it is (studio/explorations.py stores
it), a list of your links to revoke, and the page-load step that opens a link in a fresh browser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import gradio as gr

from pipelines.latent import move
from pipelines.registry import ModelNotAvailable
from studio.actions import latent as ex
from studio.explorations import QUERY
from studio.events import friendly_errors, guarded, user_of
from studio.workbench.common import MAX_SLIDERS, Context

# the browser turns the answer (a query string) into the whole address it shows, share links included
FULL_LINK = "(q) => q && q.startsWith('?') ? window.location.origin + window.location.pathname + q : q"


@dataclass
class SharePanel:
    share: gr.Button
    link: gr.Textbox
    mine: gr.Dropdown
    revoke: gr.Button
    note: gr.Markdown

    @classmethod
    def build(cls, prefix: str) -> SharePanel:
        with gr.Accordion("Share this exploration", open=False, elem_id=f"{prefix}-share-box"):
            share = gr.Button("Make a link to this exact state", size="sm", elem_id=f"{prefix}-share")
            link = gr.Textbox(label="Link — opens the same picture, directions, sliders, map, timeline and parents",
                              interactive=False, buttons=["copy"], elem_id=f"{prefix}-share-link")
            with gr.Row():
                mine = gr.Dropdown([], label="Your links", scale=3, elem_id=f"{prefix}-share-mine")
                revoke = gr.Button("Revoke", size="sm", scale=1, elem_id=f"{prefix}-share-revoke")
            note = gr.Markdown("", elem_id=f"{prefix}-share-note")
        return cls(share, link, mine, revoke, note)

    def wire(self, ctx: Context, settings: dict, controls: dict, sliders: list, restore_outputs: list,
             restore) -> None:
        """settings / controls: the tab's render settings and the workbench's controls by name, saved as they
        are; restore(shared, model) → values for restore_outputs, which the page-load step fills."""
        services = ctx.services

        def choices(user: str) -> gr.Dropdown:
            rows = services.explorations.mine(user, ctx.tab)
            labels = [(f"{datetime.fromtimestamp(r['created']):%Y-%m-%d %H:%M} · {r['model']}", r["id"]) for r in rows]
            return gr.Dropdown(choices=labels, value=labels[0][1] if labels else None)

        def share(values: dict, request: gr.Request):
            bench = values[ctx.bench]
            amounts = [float(values[slider]) for slider in sliders]
            user = user_of(request)
            share_id = services.explorations.save(
                user, ctx.tab, bench, {"look": values[ctx.look], **{k: values[c] for k, c in settings.items()}},
                {**{k: values[c] for k, c in controls.items()}, "amounts": amounts[:len(bench.directions)]})
            return services.explorations.query(share_id), choices(user), "Link made: anyone who can open the studio " \
                "can open it (with logins on, after logging in). Revoke it here to end it."

        def revoke(share_id, request: gr.Request):
            user = user_of(request)
            if not share_id:
                raise ValueError("Your links: choose the link to revoke.")
            done = services.explorations.revoke(share_id, user)
            return choices(user), ("Revoked: the link opens nothing now." if done else "That link was already gone.")

        owner_only = guarded(services, ctx.tab, owner_only="share explorations")
        made = self.share.click(friendly_errors(owner_only(share)),
                                {ctx.bench, ctx.look, *settings.values(), *controls.values(), *sliders},
                                [self.link, self.mine, self.note], api_visibility="private")
        made.then(None, self.link, self.link, js=FULL_LINK, api_visibility="private")
        self.revoke.click(friendly_errors(owner_only(revoke)), self.mine, [self.mine, self.note],
                          api_visibility="private")

        def opened(request: gr.Request):
            """On page load: the state a `?exploration=` link names, when it is this tab's."""
            value = request.query_params.get(QUERY) if request else None
            if not value or services.explorations.tab_of(value) != ctx.tab:
                return [gr.skip()] * (len(restore_outputs) + 1)
            shared = services.explorations.open(value)
            try:
                model = ctx.space(shared.bench.model, shared.settings.get("look"), shared.bench)
            except (ModelNotAvailable, ValueError) as exc:
                name = shared.bench.model
                raise ValueError(f"This exploration was made with the model {name}, which this studio cannot open: "
                                 f"{exc}. If it is a listed model, `studio fetch {name}` gets it; if it was a folder "
                                 "on the sharer's machine, copy it here and open the link again.") from None
            return [*restore(shared, model), choices(user_of(request))]

        self.opener = (ctx.event(opened), [*restore_outputs, self.mine])


def shown_picture(ctx: Context, shared, model):
    """The picture the sharer saw: the current point, or — with sliders off zero — the moved point as the live
    sliders show it (a preview render on diffusion models, the full picture elsewhere)."""
    bench = shared.bench
    amounts = shared.controls.get("amounts", [])
    if not (any(amounts) and bench.directions):
        return ex.picture(ex.render(ctx.services, model, [model.check(bench.current)])[0])
    moved = move(bench.current, bench.directions, list(amounts))
    return ex.picture(ex.render(ctx.services, model, [moved], preview=model.kind == "diffusion")[0])


def slider_values(shared) -> list:
    names = [d.name for d in shared.bench.directions]
    amounts = list(shared.controls.get("amounts", [])) + [0.0] * MAX_SLIDERS
    return [gr.Slider(value=amounts[i], label=names[i], visible=True) if i < len(names)
            else gr.Slider(value=0, visible=False) for i in range(MAX_SLIDERS)]

"""The GAN tab: the latent workbench on GANs — seed grids with truncation, variations, GANSpace and
SeFa directions as sliders, maps, keyframe walks and breeding — and sending a face to the VAE tab."""

from __future__ import annotations

import gradio as gr

from pipelines.media import png_bytes
from studio.actions import latent as ex
from studio.services import Services
from studio.tabs.common import TabHandle, friendly_errors, guarded, page_file
from studio.workbench import WorkbenchSpec, build_workbench


def build(services: Services) -> TabHandle:
    registry = services.host.registry
    limits = services.settings.gan_limits
    with gr.Row():
        model = gr.Dropdown(registry.names("gan"), value=registry.default("gan"), allow_custom_value=True,
                            label="Generator", info="Listed model, or a .safetensors file with a .json config",
                            scale=3, elem_id="gan-model")
        psi = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ (grids)", scale=2, elem_id="gan-psi",
                        info="toward the prior's centre (z = 0): 0 = the centre face, 1 = plain samples, >1 = wilder")
        to_vae = gr.Button("Send the current face to the VAE tab", scale=1)
    look = gr.State(None)
    bench = build_workbench(services, WorkbenchSpec(
        tab="gan", prefix="gan", kind="gan", model=model, look=look, methods=("ganspace", "sefa"), truncation=psi,
        max_grid=limits.max_grid, max_frames=limits.max_frames * 10, settings={"model": model, "truncation": psi}))

    @friendly_errors
    @guarded(services, "gan")  # renders on the named model: the host admits the name for this user
    def face_file(state, model_name, request: gr.Request = None):
        if state.current is None:
            raise gr.Error("Open a face first (a seed, or a grid cell).")
        space = ex.latent_model(services, model_name, "gan")
        image = ex.render(services, space, [state.current])[0]
        path = page_file(png_bytes(ex.picture(image, image.shape[0])), "face.png")
        return path

    fields = {"model": model, "truncation": psi}

    def restore(params: dict) -> list:
        return [params[name] if params.get(name) is not None else gr.skip() for name in fields]

    handle = TabHandle(restore_outputs=list(fields.values()), restore=restore,
                       send_to_vae=(to_vae, [bench.ctx.bench, model], face_file),
                       owner_controls=[model, bench.directions.save])
    handle.workbench = bench
    return handle

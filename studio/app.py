"""build_app(services) → the Gradio Blocks app: one tab per modality, History and Models."""

from __future__ import annotations

import gradio as gr

from studio import api
from studio.boundary import seal
from studio.explorations import QUERY
from studio.queue_wake import wake_on_arrival
from studio.services import Services
from studio.tabs import explore as explore_tab
from studio.tabs import gan as gan_tab
from studio.tabs import history as history_tab
from studio.tabs import image as image_tab
from studio.tabs import models as models_tab
from studio.tabs import text as text_tab
from studio.tabs import vae as vae_tab

CSS = """
.gradio-container { max-width: 1400px !important; }
#studio-title h1 { margin-bottom: 0; }
#studio-title p { margin-top: 0.2em; opacity: 0.75; }
/* the picture being changed stays in view beside its sliders and timeline (Gradio's container hides
   overflow, which would make it the sticky element's scroll box; clip keeps the clipping, not the box) */
.gradio-container { overflow: clip !important; }
.bench-current { position: sticky; top: 8px; align-self: flex-start; z-index: 50;
                 background: var(--body-background-fill); }
/* the live preview and real-time picture fill their box: a 64-pixel emoji is drawn big, its pixels crisp */
#image-preview img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
/* phones: every tab's name fits (no "more tabs" menu), and the Image tab reads prompt → settings → results */
@media (max-width: 640px) {
  .tab-wrapper button { padding: 4px 7px !important; font-size: 13px !important; min-width: 0 !important; }
  .image-layout { flex-direction: column !important; }
  .image-left { display: contents !important; }
  .image-compose { order: 1; } .image-settings { order: 2; } .image-results { order: 3; }
  .bench-current { top: 0; padding-bottom: 4px; box-shadow: 0 4px 8px rgba(0, 0, 0, 0.12); }
  .bench-current .bench-picture { height: 170px !important; }
  .bench-current .bench-picture * { max-height: 160px !important; }
  .bench-current .bench-picture img { object-fit: contain; }
  .bench-current .bench-buttons { flex-wrap: nowrap !important; gap: 4px !important; }
  .bench-current .bench-buttons button { padding: 2px 4px !important; font-size: 12px !important; }
  .bench-current .bench-latent-file { display: none !important; }
}
"""


def build_app(services: Services) -> gr.Blocks:
    with gr.Blocks(title="GenAI Studio") as app:
        gr.Markdown("# GenAI Studio\nText, images and latent spaces — running on "
                    f"{services.host.placement.describe()}.", elem_id="studio-title")
        if services.settings.public and not services.settings.logins:
            gr.HTML('<div id="insecure-banner" style="background:#b91c1c;color:white;padding:10px 14px;'
                    'border-radius:8px;font-weight:600">This studio is public and has no login '
                    '(--insecure-public): anyone with the address can use it and see its History.</div>')
        who = gr.Markdown("", elem_id="studio-who")
        api.register(services)  # first, so the public names are never taken by the page's own events
        last_tab = gr.BrowserState("", storage_key="genai-studio-last-tab")  # this browser's last tab
        with gr.Tabs(selected="image", elem_id="studio-tabs") as tabs:  # artists start with pictures
            with gr.Tab("Image", id="image") as image_page:
                image_handle = image_tab.build(services)
            with gr.Tab("Explore", id="explore") as explore_page:
                explore_handle = explore_tab.build(services)
            with gr.Tab("Text", id="text") as text_page:
                text_handle = text_tab.build(services)
            with gr.Tab("VAE", id="vae") as vae_page:
                vae_handle = vae_tab.build(services)
            with gr.Tab("GAN", id="gan") as gan_page:
                gan_handle = gan_tab.build(services)
            with gr.Tab("History", id="history") as history_page:
                rows, filters, table = history_tab.build(services, {"text": text_handle, "image": image_handle,
                                                                    "explore": explore_handle, "vae": vae_handle,
                                                                    "gan": gan_handle}, tabs)
            with gr.Tab("Models", id="models") as models_page:
                fetch_controls, models_table, model_rows = models_tab.build(services)
        pages = {"image": image_page, "explore": explore_page, "text": text_page, "vae": vae_page, "gan": gan_page,
                 "history": history_page, "models": models_page}
        for tab_id, page in pages.items():
            page.select(lambda t=tab_id: t, None, last_tab, api_visibility="private", queue=False)
        def first_tab(last, request: gr.Request):
            """The tab an exploration link opens, else the one this browser used last."""
            link = request.query_params.get(QUERY) if request else None
            if link:
                tab = services.explorations.tab_of(link)
                if tab is None:
                    gr.Warning("This exploration link does not open anything: it was revoked, or it is not complete.")
                else:
                    return gr.Tabs(selected=tab)
            return gr.Tabs(selected=last) if last in pages else gr.skip()

        app.load(first_tab, last_tab, tabs, api_visibility="private")  # queued: a warning shows only so
        models_page.select(model_rows, None, models_table, api_visibility="private")
        history_page.select(rows, filters, table, api_visibility="private")

        handles = (text_handle, image_handle, explore_handle, vae_handle, gan_handle)
        owner_controls = [c for handle in handles for c in handle.owner_controls] + fetch_controls

        def on_open(request: gr.Request) -> list:
            """A guest's page: say what they may do, and make the owner's controls read-only."""
            line = _who(services, request)
            lock = gr.update(interactive=False) if line else gr.skip()
            return [line, *[lock] * len(owner_controls)]

        app.load(on_open, None, [who, *owner_controls], api_visibility="private")
        for handle in (image_handle, gan_handle):
            _wire_send_to_vae(handle, vae_handle, tabs)
        _wire_image_and_explore(services, image_handle, explore_handle, tabs)
        for handle in (explore_handle, vae_handle, gan_handle):
            handle.workbench.wire_open(app)
    seal(app, services)  # every event above — page, API, MCP — runs as its request's Caller, or not at all
    app.queue(max_size=services.settings.queue_size, default_concurrency_limit=1)
    # a request starts as soon as it arrives (or a slot frees); the idle queue looks for work every ~50 ms
    if hasattr(app, "_queue") and hasattr(app._queue, "sleep_when_free"):
        wake_on_arrival(app._queue)
    return app


def _who(services: Services, request: gr.Request) -> str:
    """A line under the title for guests: what they may do, and how many generations are left."""
    user = getattr(request, "username", None) or ""
    left = services.access.remaining(user)
    if left is None:
        return ""
    return (f"Signed in as guest **{user}**: you can generate with the models provided — {left} of "
            f"{services.access.per_hour} generations left this hour. Switching models, training and settings are "
            "for the studio's owner.")


def _wire_send_to_vae(source, vae, tabs) -> None:
    """A tab's "send to VAE" button appends its image to the VAE tab's morph images and opens that tab."""
    button, inputs, make_path = source.send_to_vae

    def send(request: gr.Request, *values):
        *args, current = values
        path = make_path(*args, request=request)  # guarded there: the user's own admission
        return gr.Tabs(selected="vae"), [*(current or []), path]

    button.click(send, [*inputs, vae.receive_images], [tabs, vae.receive_images], api_visibility="private")


def _wire_image_and_explore(services: Services, image, explore, tabs) -> None:
    """Image → Explore: a picture's seed, prompt and settings open it as the workbench's current point.
    Explore → Image: the current point's picture becomes the img2img or inpaint start image."""
    from pipelines.media import read_png_info
    from studio.actions.library import kept_item
    from studio.tabs.common import friendly_errors
    from studio.tabs.image import start_mode_label

    button, selected = image.to_explore
    outputs, from_params, (open_fn, open_inputs, open_outputs) = explore.receive_point

    @friendly_errors
    def to_explore(item_id):
        item = kept_item(services, item_id)  # the caller's own item, by the id the results hold (never a path)
        pngs = [name for name in item.files if name.lower().endswith(".png")]
        params = (read_png_info(services.history.path(pngs[0])).get("studio") or {}) if pngs else {}
        if not params:
            raise gr.Error("This picture carries no generation parameters to explore from.")
        return [gr.Tabs(selected="explore"), *from_params(params)]

    button.click(to_explore, selected, [tabs, *outputs], api_visibility="private").then(
        open_fn, open_inputs, open_outputs, api_visibility="private")
    to_img2img, to_inpaint, inputs, make_file = explore.send_picture
    mode, init_image, editor, image_model = image.receive

    def send(target):
        def fn(request: gr.Request, *values):
            *values, model_name = values  # the Explore picture's inputs, then the Image tab's model
            path = make_file(*values, request=request)  # guarded there: the user's own admission
            if target == "img2img":  # an editing model has no image to image: the picture is edited instead
                return gr.Tabs(selected="image"), start_mode_label(services, model_name), path, gr.skip()
            editor = {"background": path, "layers": [], "composite": path}
            return gr.Tabs(selected="image"), "Inpaint", gr.skip(), editor
        return fn

    for button, target in ((to_img2img, "img2img"), (to_inpaint, "inpaint")):
        button.click(send(target), [*inputs, image_model], [tabs, mode, init_image, editor], api_visibility="private")


def _hold_guests_at_the_door(fastapi_app, services) -> None:
    """Events that skip the queue reach the server by /gradio_api/run/<name> and start at once. A guest may have at
    most a few running: more are refused at the door (HTTP 429, said in words) before Gradio reads a byte of them,
    so a flood of real-time pictures from made-up sessions costs the server next to nothing and the page keeps
    answering everyone else. Everything else goes on to Gradio's own route."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from studio.boundary import GUEST_UNQUEUED
    from studio.file_route import http_user

    paths = ("/gradio_api/run/{api_name}", "/gradio_api/run/{api_name}/")
    originals = [route for included in fastapi_app.router.routes
                 for route in getattr(getattr(included, "original_router", None), "routes", [])
                 if getattr(route, "path", "") in paths and "POST" in getattr(route, "methods", ())]
    if not originals:
        return
    running: dict[str, int] = {}

    class Door:
        async def __call__(self, scope, receive, send):
            user = http_user(fastapi_app, services, Request(scope))
            guest = bool(user) and services.access.is_guest(user)
            if guest and running.get(user, 0) >= GUEST_UNQUEUED:
                await JSONResponse({"error": "Too many previews at once: wait for the ones being drawn."},
                                   status_code=429)(scope, receive, send)
                return
            if guest:
                running[user] = running.get(user, 0) + 1  # one event loop: no lock needed
            try:
                await originals[0].handle(scope, receive, send)
            finally:
                if guest:
                    running[user] -= 1
                    if not running[user]:
                        del running[user]

    for path in paths:
        fastapi_app.router.routes.insert(0, Route(path, Door(), methods=["POST"]))


def _slow_logins_per_address(fastapi_app, behind_proxy: bool) -> None:
    """Failed logins are slowed per address too (Access.failure_delay): the login route learns the caller's
    address — behind --public's proxy, the one the proxy saw (the last X-Forwarded-For hop, which it adds)."""
    from studio.access import LOGIN_ADDRESS

    def with_address(inner):
        async def app(scope, receive, send):
            address = (scope.get("client") or ("", 0))[0]
            if behind_proxy:
                forwarded = dict(scope.get("headers") or []).get(b"x-forwarded-for", b"").decode("latin-1")
                address = forwarded.rsplit(",", 1)[-1].strip() or address
            token = LOGIN_ADDRESS.set(address)
            try:
                await inner(scope, receive, send)
            finally:
                LOGIN_ADDRESS.reset(token)
        return app

    for route in fastapi_app.router.routes:
        if getattr(route, "path", "") in ("/login", "/login/") and hasattr(route, "app"):
            route.app = with_address(route.app)


def _patient_start() -> dict:
    """Gradio gives a new server one 3-second look at its page and gives up ("When localhost is not accessible…")
    when this studio's big page takes longer to draw on a busy 2-core machine; the studio looks for itself,
    patiently (`_wait_until_served`)."""
    import inspect

    return {"_frontend": False} if "_frontend" in inspect.signature(gr.Blocks.launch).parameters else {}


def _wait_until_served(url: str | None, timeout: float = 120.0) -> None:
    """Wait until the studio's own page answers (any answer: a login page counts), or say plainly why not."""
    import time
    import urllib.error
    import urllib.request

    if not url:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30).close()
            return
        except urllib.error.HTTPError:
            return  # it answered (a login page, a redirect)
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"The studio started but its page at {url} does not answer ({exc}). Check that "
                                   "no firewall or proxy setting blocks this machine's own address.") from exc
            time.sleep(0.5)


def launch(app: gr.Blocks, services: Services, *, block: bool = True, **extra):
    from studio.compat import add_compat_routes
    from studio.file_route import add_file_route
    from studio.share import add_routes

    s = services.settings
    from PIL import Image

    # any picture decoded anywhere (Gradio's own `pil` uploads and `data:` images too) refuses a decompression bomb:
    # PIL raises above twice this number (the studio's own check, with its size in words, refuses above it)
    Image.MAX_IMAGE_PIXELS = s.image_limits.max_image_pixels
    # History's files are served where they are (not copied into Gradio's cache on every answer); what the
    # studio keeps beside them (its database, keys, explorations) is never served, to anyone
    gr.set_static_paths([str(services.history.root)])
    result = app.launch(
        server_name=s.host, server_port=s.port or None, share=s.share,
        auth=services.access.authenticate if s.logins else None, max_file_size=int(s.max_upload_mb * 2**20),
        prevent_thread_lock=True, css=CSS, theme=gr.themes.Soft(primary_hue="violet"),
        allowed_paths=[str(services.history.root)], blocked_paths=[str(p) for p in services.history.private_paths()],
        footer_links=["api", "settings"], **{**_patient_start(), **extra},
    )
    _wait_until_served(app.local_url)
    add_routes(result[0], services.links)  # per-item share links, before anyone can ask for one
    add_compat_routes(result[0], services)  # the OpenAI- and AUTOMATIC1111-compatible APIs (/v1, /sdapi/v1)
    add_file_route(result[0], services)  # History's files: only to whom they belong
    _slow_logins_per_address(result[0], services.settings.behind_proxy)
    _hold_guests_at_the_door(result[0], services)
    if block:
        app.block_thread()
    return result

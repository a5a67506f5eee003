"""The GAN tab: seed grid, truncation, variations, latent directions, walks (GIF/MP4) and breeding.

The selected face is a latent kept in per-session `gr.State` (a list of floats), so every user
explores on their own. Model math lives in `pipelines/gan.py`; this file only wires the UI.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import gradio as gr
import torch

from pipelines.gan import GANParams, InterpolationParams, latent_from_file, latent_to_json
from pipelines.latent import EASES
from pipelines.media import gif_bytes, grid, mp4_bytes, png_bytes, upscale
from studio.services import Services
from studio.tabs.common import TabHandle, as_int, friendly_errors, guarded, keep_output, parse_seed, user_of

MAX_SLIDERS = 8
PREVIEW_SCALE = 4


def parse_seeds(text: str) -> tuple[int, ...]:
    """'1, 42, 7' → (1, 42, 7); each a valid seed."""
    parts = [p for p in str(text or "").replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    seeds = tuple(parse_seed(p) for p in parts)
    if not seeds:
        raise ValueError("keyframes: type two or more seeds, e.g. 1, 42, 7")
    return seeds


def _cells(images, captions):
    return [(upscale(img, PREVIEW_SCALE), cap) for img, cap in zip(images, captions)]


def build(services: Services) -> TabHandle:
    registry = services.registry
    limits = services.settings.gan_limits
    history = services.history

    grid_latents = gr.State([])
    selected = gr.State(None)  # {"latent": [...], "seed": int|None, "history_id": str|None}
    directions = gr.State(None)  # {"vectors": [[...]], "std": [...], "names": [...]}
    keyframes = gr.State([])
    parents = gr.State([])
    children_latents = gr.State([])

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                model = gr.Dropdown(registry.names("gan"), value=registry.default("gan"), allow_custom_value=True,
                                    label="Generator", info="Listed model, or a .safetensors file with a .json config",
                                    scale=3, elem_id="gan-model")
                seed = gr.Number(value=0, precision=0, label="First seed", scale=1, elem_id="gan-seed")
                dice = gr.Button("Random seed", scale=0, min_width=110)
            with gr.Row():
                grid_size = gr.Slider(1, limits.max_grid, value=4, step=1, label="Grid (N×N)", elem_id="gan-grid")
                psi = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ",
                                info="0 = the average face, 1 = plain samples, >1 = wilder")
            sample = gr.Button("Generate grid", variant="primary", elem_id="gan-generate")
            gallery = gr.Gallery(format="png", label="Click a face to select it", columns=4, height=520, object_fit="contain",
                                 allow_preview=False,
                                 elem_id="gan-gallery")
            status = gr.Markdown("")
        with gr.Column(scale=2):
            chosen = gr.Image(label="Selected face", height=300, interactive=False, elem_id="gan-selected")
            chosen_info = gr.Markdown("Nothing selected yet: generate a grid and click a face.")
            with gr.Row():
                keep = gr.Button("Keep (save to History)", size="sm")
                save_latent = gr.Button("Download latent", size="sm")
                to_vae = gr.Button("Send to the VAE tab", size="sm")
            latent_file = gr.File(label="Latent file (.json / .npy) — drop one to reopen a face", file_types=[".json", ".npy"])
            with gr.Accordion("Variations", open=False):
                strength = gr.Slider(0, 2, value=0.3, step=0.05, label="Strength")
                n_var = gr.Slider(1, limits.max_children, value=8, step=1, label="How many")
                vary = gr.Button("Make variations")
            with gr.Accordion("Latent directions (GANSpace)", open=False):
                with gr.Row():
                    k = gr.Slider(1, MAX_SLIDERS, value=6, step=1, label="Directions")
                    find = gr.Button("Find directions", elem_id="gan-find-directions")
                sliders = [gr.Slider(-5, 5, value=0, step=0.1, label=f"PC{i + 1}", visible=False,
                                     elem_id=f"gan-direction-{i}") for i in range(MAX_SLIDERS)]
                with gr.Row():
                    which = gr.Dropdown([f"PC{i + 1}" for i in range(MAX_SLIDERS)], label="Direction", scale=1)
                    direction_name = gr.Textbox(label="Name it", placeholder="e.g. smile", scale=2)
                    name_it = gr.Button("Save name", scale=1)
                apply_moves = gr.Button("Make the moved face the selected one")
    with gr.Tabs():
        with gr.Tab("Variations"):
            variations = gr.Gallery(format="png", label="Click one to select it", columns=8, height=200)
        with gr.Tab("Walk (interpolation)"):
            with gr.Row():
                key_seeds = gr.Textbox(value="1, 2, 3", label="Keyframe seeds", scale=2,
                                       info="Used when no faces were added below")
                frames = gr.Slider(2, limits.max_frames, value=32, step=1, label="Frames", scale=2, elem_id="gan-frames")
                method = gr.Radio(["slerp", "lerp"], value="slerp", label="Path", scale=1)
                easing = gr.Dropdown(list(EASES), value="ease-in-out", label="Easing", scale=1)
                loop = gr.Checkbox(value=True, label="Loop", scale=1)
                fps = gr.Slider(1, 60, value=12, step=1, label="FPS", scale=1)
            with gr.Row():
                add_key = gr.Button("Add the selected face as a keyframe")
                clear_keys = gr.Button("Clear keyframe faces")
                walk = gr.Button("Render walk", variant="primary", elem_id="gan-walk")
            key_gallery = gr.Gallery(format="png", label="Keyframe faces", columns=8, height=120)
            strip = gr.Gallery(format="png", label="Frames", columns=12, height=200)
            with gr.Row():
                animation = gr.Image(label="Animation", height=256, interactive=False)
                walk_files = gr.File(label="Download GIF / MP4", file_count="multiple", interactive=False,
                                     elem_id="gan-walk-files")
        with gr.Tab("Breed"):
            with gr.Row():
                add_parent = gr.Button("Add the selected face as a parent")
                clear_parents = gr.Button("Clear parents")
            parent_gallery = gr.Gallery(format="png", label="Parents", columns=8, height=120)
            with gr.Row():
                n_children = gr.Slider(1, limits.max_children, value=8, step=1, label="Children")
                crossover = gr.Slider(0, 1, value=0.5, step=0.05, label="Crossover", info="share of genes from the other parents")
                mutation = gr.Slider(0, 1, value=0.05, step=0.01, label="Mutation rate")
                breed = gr.Button("Breed", variant="primary")
            children = gr.Gallery(format="png", label="Children — click one to select it and keep breeding", columns=8, height=200)

    def pipe(model_name):
        return services.gan_pipeline(model_name)

    def save(tab_files: dict, prompt: str, params: dict, request, seed_=None, parent=None):
        return keep_output(services, "gan", tab_files, prompt=prompt, params=params, seed=seed_,
                           model=params.get("model", ""), device=services.placement.describe(), owner=user_of(request),
                           parent=parent)

    # -- grid ---------------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "gan", generation=True)
    def gan_sample(model_name: str, first_seed: float, n: float, truncation: float, request: gr.Request):
        params = GANParams(seed=as_int("seed", first_seed), grid=as_int("grid", n), truncation=float(truncation))
        p = pipe(model_name)
        out = p(params)
        item = save({".png": png_bytes(grid(out.images, params.grid)),
                     ".json": json.dumps({"latents": out.latents.tolist(), "seeds": out.seeds}).encode()},
                    f"grid from seed {params.seed}", {"model": p.model.name, "seed": params.seed, "grid": params.grid,
                                                      "truncation": params.truncation}, request, params.seed)
        cells = _cells(out.images, [f"seed {s}" for s in out.seeds])
        return (cells, out.latents.tolist(),
                f"{len(cells)} faces · ψ {params.truncation} · " + (f"saved as {item.id}" if item else "not saved"))

    def select_latent(latent, model_name, note="", seed_=None, history_id=None):
        p = pipe(model_name)
        image = p.render(p.check_latent(torch.tensor(latent))[None])[0]
        info = f"**Selected:** {note}" + (f" · seed {seed_}" if seed_ is not None else "")
        return upscale(image, PREVIEW_SCALE), {"latent": list(latent), "seed": seed_, "history_id": history_id}, info

    @friendly_errors
    @guarded(services, "gan")
    def pick_grid(evt: gr.SelectData, latents, model_name, first_seed, request: gr.Request):
        if not latents:
            raise gr.Error("Generate a grid first.")
        seed_ = as_int("seed", first_seed) + evt.index
        return select_latent(latents[evt.index], model_name, note=f"grid cell {evt.index + 1}", seed_=seed_)

    @friendly_errors
    @guarded(services, "gan")
    def pick_from(evt: gr.SelectData, latents, model_name, request: gr.Request):
        if not latents:
            raise gr.Error("Nothing to select here yet.")
        return select_latent(latents[evt.index], model_name, note=f"#{evt.index + 1}")

    def need_selected(sel):
        if not sel:
            raise gr.Error("Select a face first (click one in a grid).")
        return torch.tensor(sel["latent"])

    # -- selected face ------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "gan")
    def keep_selected(sel, model_name, request: gr.Request):
        latent = need_selected(sel)
        p = pipe(model_name)
        image = p.render(p.check_latent(latent)[None])[0]
        item = save({".png": png_bytes(upscale(image, 1)), ".json": latent_to_json(latent, p.model.name).encode()},
                    "selected face", {"model": p.model.name, "seed": sel.get("seed")}, request, sel.get("seed"),
                    parent=sel.get("history_id"))
        return f"Saved as {item.id}" if item else "Not saved: the disk is full"

    @friendly_errors
    @guarded(services, "gan")
    def download_latent(sel, model_name, request: gr.Request):
        latent = need_selected(sel)
        path = services.history.root / "gan" / "latents"
        path.mkdir(parents=True, exist_ok=True)
        name = f"latent-{sel.get('seed') if sel.get('seed') is not None else random.randrange(10**8)}.json"
        (path / name).write_text(latent_to_json(latent, pipe(model_name).model.name, seed=sel.get("seed")))
        return str(path / name)

    @friendly_errors
    @guarded(services, "gan")
    def upload_latent(file, model_name, request: gr.Request):
        if not file:
            return gr.skip(), gr.skip(), gr.skip()
        latent = latent_from_file(Path(file))
        pipe(model_name).check_latent(latent)
        return select_latent(latent.tolist(), model_name, note=f"loaded from {Path(file).name}")

    @friendly_errors
    @guarded(services, "gan", generation=True)
    def make_variations(sel, model_name, amount, count, request: gr.Request):
        latent = need_selected(sel)
        p = pipe(model_name)
        var_seed = random.randrange(2**31)
        out = p.variations(latent, float(amount), as_int("count", count), var_seed)
        save({".png": png_bytes(grid(out.images, min(8, len(out.images)))),
              ".json": json.dumps({"latents": out.latents.tolist()}).encode()},
             "variations", {"model": p.model.name, "strength": amount, "variation_seed": var_seed}, request,
             parent=sel.get("history_id"))
        return _cells(out.images, [f"#{i + 1}" for i in range(len(out.images))]), out.latents.tolist()

    # -- directions ---------------------------------------------------------------------------
    def saved_names(model_name) -> dict:
        path = history.root / "gan" / "directions" / f"{Path(str(model_name)).name}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @friendly_errors
    @guarded(services, "gan")
    def find_directions(model_name, count, request: gr.Request):
        p = pipe(model_name)
        found = p.directions(k=as_int("directions", count))
        names = saved_names(p.model.name)
        labels = [names.get(str(i), n) for i, n in enumerate(found.names)]
        state = {"vectors": found.vectors.tolist(), "names": labels}
        updates = [gr.Slider(value=0, label=labels[i], visible=True) if i < len(labels)
                   else gr.Slider(value=0, visible=False) for i in range(MAX_SLIDERS)]
        return [state, gr.Dropdown(choices=labels, value=labels[0]), *updates]

    def moved_latent(sel, dirs, amounts):
        latent = need_selected(sel)
        if not dirs:
            return latent
        vectors = torch.tensor(dirs["vectors"])
        return latent + torch.tensor(list(amounts[: len(vectors)]), dtype=torch.float32) @ vectors

    @friendly_errors
    @guarded(services, "gan")
    def preview_move(request: gr.Request, sel, dirs, model_name, *amounts):
        if not sel:
            return gr.skip()
        p = pipe(model_name)
        vectors = torch.tensor(dirs["vectors"]) if dirs else torch.zeros(0, p.model.z_dim)
        moved = p.move(need_selected(sel), vectors, list(amounts[: vectors.shape[0]]))
        return upscale(p.render(moved[None])[0], PREVIEW_SCALE)

    @friendly_errors
    @guarded(services, "gan")
    def commit_move(request: gr.Request, sel, dirs, model_name, *amounts):
        latent = moved_latent(sel, dirs, amounts)
        return [*select_latent(latent.tolist(), model_name, note="moved along directions"),
                *[gr.Slider(value=0) for _ in range(MAX_SLIDERS)]]

    @friendly_errors
    @guarded(services, "gan", owner_only="rename the shared GAN directions")
    def name_direction(dirs, label, new_name, model_name, request: gr.Request):
        if not dirs:
            raise gr.Error("Find directions first.")
        new_name = (new_name or "").strip()
        if not new_name or len(new_name) > 40:
            raise gr.Error("Give the direction a name of 1 to 40 characters.")
        if label not in dirs["names"]:
            raise gr.Error("Choose which direction to name.")
        index = dirs["names"].index(label)
        model_key = Path(str(pipe(model_name).model.name)).name
        path = history.root / "gan" / "directions" / f"{model_key}.json"
        names = saved_names(model_key)
        names[str(index)] = new_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(names, indent=2))
        (path.parent / f"{model_key}-{new_name.replace('/', '_')}.json").write_text(
            json.dumps({"name": new_name, "vector": dirs["vectors"][index]}))
        dirs = {**dirs, "names": [new_name if i == index else n for i, n in enumerate(dirs["names"])]}
        return [dirs, gr.Dropdown(choices=dirs["names"], value=new_name),
                *[gr.Slider(label=dirs["names"][i]) if i < len(dirs["names"]) else gr.skip()
                  for i in range(MAX_SLIDERS)]]

    # -- walks --------------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "gan", generation=True)
    def gan_interpolate(model_name: str, seeds_text: str, n_frames: float, path_method: str, ease_mode: str,
                        looping: bool, rate: float, truncation: float, key_latents, request: gr.Request):
        p = pipe(model_name)
        use_faces = bool(key_latents) and len(key_latents) >= 2
        seeds = (0, 1) if use_faces else parse_seeds(seeds_text)
        params = InterpolationParams(keyframes=seeds, frames=as_int("frames", n_frames), method=path_method,
                                     ease=ease_mode, loop=bool(looping), truncation=float(truncation),
                                     fps=as_int("fps", rate))
        extra = torch.tensor(key_latents) if use_faces else None
        if extra is not None:
            extra = torch.stack([p.check_latent(k) for k in extra])
        out = p.interpolate(params, extra_keys=extra)
        gif = gif_bytes(out.images, params.fps, loop=params.loop, scale=PREVIEW_SCALE)
        mp4 = mp4_bytes(out.images, params.fps, scale=PREVIEW_SCALE)
        item = save({".gif": gif, ".mp4": mp4, ".png": png_bytes(grid(out.images, min(16, params.frames)))},
                    "walk through " + ("selected faces" if use_faces else ", ".join(map(str, seeds))),
                    {"model": p.model.name, "keyframes": list(seeds) if not use_faces else "faces",
                     "frames": params.frames, "method": params.method, "ease": params.ease, "loop": params.loop,
                     "fps": params.fps, "truncation": params.truncation}, request)
        files = [str(history.path(f)) for f in item.files] if item else []
        gif_path = next((f for f in files if f.endswith(".gif")), None)
        return (_cells(out.images, [str(i + 1) for i in range(params.frames)]), gif_path,
                [f for f in files if not f.endswith(".png")])

    @friendly_errors
    @guarded(services, "gan")
    def add_keyframe(sel, keys, model_name, request: gr.Request):
        latent = need_selected(sel)
        keys = list(keys or []) + [latent.tolist()]
        p = pipe(model_name)
        return keys, _cells(p.render(torch.tensor(keys)), [f"key {i + 1}" for i in range(len(keys))])

    # -- breeding -----------------------------------------------------------------------------
    @friendly_errors
    @guarded(services, "gan")
    def add_parent_fn(sel, current, model_name, request: gr.Request):
        latent = need_selected(sel)
        current = list(current or []) + [{"latent": latent.tolist(), "history_id": sel.get("history_id")}]
        p = pipe(model_name)
        images = p.render(torch.tensor([c["latent"] for c in current]))
        return current, _cells(images, [f"parent {i + 1}" for i in range(len(current))])

    @friendly_errors
    @guarded(services, "gan", generation=True)
    def breed_fn(current, model_name, count, cross, mutate, request: gr.Request):
        if len(current or []) < 2:
            raise gr.Error("Add at least two parents (select a face, then 'Add the selected face as a parent').")
        p = pipe(model_name)
        breed_seed = random.randrange(2**31)
        out = p.breed(torch.tensor([c["latent"] for c in current]), as_int("children", count), float(cross),
                      float(mutate), breed_seed)
        parent_ids = [c.get("history_id") for c in current]
        item = save({".png": png_bytes(grid(out.images, min(8, len(out.images)))),
                     ".json": json.dumps({"latents": out.latents.tolist(), "parents": parent_ids}).encode()},
                    "children", {"model": p.model.name, "crossover": cross, "mutation": mutate,
                                 "breed_seed": breed_seed, "parents": parent_ids}, request,
                    parent=next((i for i in parent_ids if i), None))
        return _cells(out.images, [f"child {i + 1}" for i in range(len(out.images))]), out.latents.tolist(), item.id if item else None

    @friendly_errors
    @guarded(services, "gan")
    def pick_child(evt: gr.SelectData, latents, model_name, breed_id, request: gr.Request):
        if not latents:
            raise gr.Error("Breed first.")
        return select_latent(latents[evt.index], model_name, note=f"child {evt.index + 1}", history_id=breed_id)

    breed_item = gr.State(None)
    concurrency = dict(concurrency_limit=1, concurrency_id="gan")
    selection = [chosen, selected, chosen_info]
    dice.click(lambda: random.randrange(2**31), None, seed, api_visibility="undocumented")
    sample.click(gan_sample, [model, seed, grid_size, psi], [gallery, grid_latents, status], api_name="gan_sample",
                 **concurrency)
    gallery.select(pick_grid, [grid_latents, model, seed], selection, api_visibility="undocumented")
    keep.click(keep_selected, [selected, model], [chosen_info], api_name="gan_keep", **concurrency)
    save_latent.click(download_latent, [selected, model], [latent_file], api_visibility="undocumented")
    latent_file.upload(upload_latent, [latent_file, model], selection, api_visibility="undocumented")
    var_state = gr.State([])
    vary.click(make_variations, [selected, model, strength, n_var], [variations, var_state],
               api_name="gan_variations", **concurrency)
    variations.select(pick_from, [var_state, model], selection, api_visibility="undocumented")
    find.click(find_directions, [model, k], [directions, which, *sliders], api_name="gan_directions", **concurrency)
    for slider in sliders:
        slider.change(preview_move, [selected, directions, model, *sliders], [chosen], api_visibility="undocumented",
                      trigger_mode="always_last", **concurrency)
    apply_moves.click(commit_move, [selected, directions, model, *sliders], [*selection, *sliders],
                      api_visibility="undocumented")
    name_it.click(name_direction, [directions, which, direction_name, model], [directions, which, *sliders],
                  api_visibility="undocumented")
    add_key.click(add_keyframe, [selected, keyframes, model], [keyframes, key_gallery], api_visibility="undocumented")
    clear_keys.click(lambda: ([], []), None, [keyframes, key_gallery], api_visibility="undocumented")
    walk.click(gan_interpolate, [model, key_seeds, frames, method, easing, loop, fps, psi, keyframes],
               [strip, animation, walk_files], api_name="gan_interpolate", **concurrency)
    add_parent.click(add_parent_fn, [selected, parents, model], [parents, parent_gallery], api_visibility="undocumented")
    clear_parents.click(lambda: ([], []), None, [parents, parent_gallery], api_visibility="undocumented")
    breed.click(breed_fn, [parents, model, n_children, crossover, mutation], [children, children_latents, breed_item],
                api_name="gan_breed", **concurrency)
    children.select(pick_child, [children_latents, model, breed_item], selection, api_visibility="undocumented")

    def face_file(sel, model_name):
        latent = need_selected(sel)
        p = pipe(model_name)
        path = history.root / "gan" / "sent" / f"face-{abs(hash(tuple(sel['latent']))) % 10**10}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(upscale(p.render(p.check_latent(latent)[None])[0], 1)))
        return str(path)

    fields = {"model": model, "seed": seed, "grid": grid_size, "truncation": psi}

    def restore(params: dict) -> list:
        return [params.get(name, gr.skip()) if params.get(name) is not None else gr.skip() for name in fields]

    return TabHandle(restore_outputs=list(fields.values()), restore=restore,
                     send_to_vae=(to_vae, [selected, model], face_file), owner_controls=[model, name_it])

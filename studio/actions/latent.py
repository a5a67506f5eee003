"""The latent workbench's actions, shared by the Explore, GAN and VAE tabs and the `/explore_*` API.

Each action takes plain values, builds what `pipelines.latent` needs, runs the model on its lane
(studio/lanes.py) and returns pictures and points; the math is all in `pipelines/`. A workbench
session (`Bench`, kept in `gr.State`) remembers the current point, the directions found, the last
grid or map, the timeline's keyframes and the breeding parents of one browser tab.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.checks import short
from pipelines.image_latent import DiffusionLatentModel, DiffusionLook
from pipelines.latent import (
    Direction,
    LatentModel,
    LatentPoint,
    WalkParams,
    load_directions,
    load_points,
    move,
    save_directions,
)
from pipelines.media import grid, upscale
from pipelines.registry import ModelNotAvailable

GRID_PAD = 2
MAX_KEYFRAMES = 32


@dataclass
class Keyframe:
    point: LatentPoint
    frames: int = 24  # frames from this keyframe to the next


@dataclass
class Bench:
    """One browser tab's workbench state."""

    model: str = ""
    current: LatentPoint | None = None
    directions: list[Direction] = field(default_factory=list)
    cells: list[LatentPoint] = field(default_factory=list)  # the last grid, map or brood, for clicks
    columns: int = 1
    stride: int = 66  # pixels from one cell of the shown grid to the next
    keyframes: list[Keyframe] = field(default_factory=list)
    parents: list[LatentPoint] = field(default_factory=list)
    history_id: str | None = None

    def use(self, model: LatentModel) -> None:
        """Switching models forgets points of the old one (they cannot render in the new one)."""
        if self.model != model.name:
            self.model = model.name
            self.current, self.directions, self.cells, self.keyframes, self.parents = None, [], [], [], []


def latent_model(services, name: str, kind: str, look: DiffusionLook | None = None) -> LatentModel:
    """The loaded model `name` behind the latent contract (kind: gan, vae or diffusion)."""
    if kind == "gan":
        from pipelines.gan import GANLatentModel

        pipe = services.host.gan_pipeline(name)
        return _held(_cached(services, "gan", name, lambda p: GANLatentModel(p), pipe), pipe)
    if kind == "vae":
        from pipelines.vae import VAELatentModel

        pipe = services.host.vae_pipeline(name)
        return _held(_cached(services, "vae", name, lambda p: VAELatentModel(p), pipe), pipe)
    if kind == "diffusion":
        if look is not None:  # the server's step and size limits hold in Explore too; its IP-Adapter is admitted
            look = services.host.admission.admit_look(look)
        pipe = services.host.local_image_pipeline(name)
        base = _cached(services, "image", name, lambda p: DiffusionLatentModel(p.model, look or DiffusionLook()), pipe)
        return _held(base.with_look(look) if look is not None else base, pipe)
    raise ValueError(f"kind must be gan, vae or diffusion, got {short(kind)}")


def _held(model: LatentModel, pipe) -> LatentModel:
    """`model`, remembering the cached pipeline it renders with: `render` holds that one in use (another
    request's load never evicts it mid-render)."""
    try:
        model.held = pipe
    except AttributeError:  # a stand-in that takes no attributes: nothing to hold in this process
        pass
    return model


def _cached(services, modality: str, name: str, make, pipe):
    if getattr(pipe, "remote", False):
        return pipe.latent_model  # the model tier's: answered by a replica
    # the adapter lives on the pipeline object, so it goes when the model cache drops the model
    adapter = getattr(pipe, "_latent_model", None)
    if adapter is None:
        adapter = make(pipe)
        pipe._latent_model = adapter
    return adapter


def render(services, model: LatentModel, points: list[LatentPoint], *, preview: bool = False,
           interactive: bool = True) -> np.ndarray:
    """Pictures of `points`, rendered on the model lane (interactive work first: beside a running job, never
    inside it). The host admits it first: at most its cap of pictures, and a full render (not a slider
    preview) counts against a guest's quota."""
    services.host.admission.admit_render(len(points), preview=preview, kind=model.kind,
                                         units=render_units(model, len(points), preview))
    with services.host.cache.holding(getattr(model, "held", None)):
        return services.host.lanes.run("model", model.render, points, preview=preview, interactive=interactive)


def render_units(model: LatentModel, count: int, preview: bool) -> float:
    """What a render costs a guest: a diffusion model's pictures by steps and size; a GAN's or VAE's 64 pictures
    (one decoder pass each) are one unit."""
    from studio.boundary import MIN_UNITS, image_units

    look = getattr(model, "look", None)
    if model.kind == "diffusion" and look is not None:
        return image_units(count, look.preview_steps if preview else look.steps, look.width, look.height)
    return max(MIN_UNITS, count / 64)


def picture(image: np.ndarray, size: int = 256):
    """One image scaled up (nearest-friendly Lanczos) to about `size` pixels for the page."""
    return upscale(image, max(1, size // image.shape[0]))


def grid_picture(images: np.ndarray, columns: int, cell: int = 96):
    """Many images as one picture (one file to send instead of dozens), laid out at their own size and
    scaled once, as a whole, so each cell is about `cell` pixels."""
    from PIL import Image

    factor = max(1, cell // images.shape[1])
    canvas = grid(images, columns, pad=GRID_PAD)
    if factor > 1:
        canvas = canvas.resize((canvas.width * factor, canvas.height * factor), Image.Resampling.NEAREST)
    return canvas


def cell_at(bench: Bench, x: float, y: float) -> int:
    """The index of the grid cell under a click at pixel (x, y) of `grid_picture`'s image."""
    col, row = int(x) // bench.stride, int(y) // bench.stride
    index = row * bench.columns + min(col, bench.columns - 1)
    if not bench.cells or not 0 <= index < len(bench.cells):
        raise ValueError("that spot is outside the grid: click one of its pictures")
    return index


def show_cells(bench: Bench, images: np.ndarray, cells: list[LatentPoint], columns: int, cell: int = 96):
    bench.cells, bench.columns = cells, columns
    bench.stride = (images.shape[1] + GRID_PAD) * max(1, cell // images.shape[1])
    return grid_picture(images, columns, cell)


# -- keyframes from text, files and clicks ------------------------------------------------------------------

_KEY = re.compile(r"^\s*(\d+)\s*(?::\s*(.*))?$")


def parse_keyframes(text: str, model: LatentModel, default_prompt: str = "") -> list[LatentPoint]:
    """One keyframe per line: 'SEED' or 'SEED: prompt' (or one line of comma-separated seeds) → points."""
    lines = [line for line in re.split(r"[\n;]", str(text or "")) if line.strip()]
    if len(lines) == 1 and ":" not in lines[0]:
        lines = [part for part in lines[0].split(",") if part.strip()]
    if len(lines) > MAX_KEYFRAMES:
        raise ValueError(f"keyframes: at most {MAX_KEYFRAMES}, got {len(lines)}")
    points = []
    for line in lines:
        match = _KEY.match(line)
        if not match:
            raise ValueError(f"keyframes: {line.strip()[:40]!r} is not 'SEED' or 'SEED: prompt'")
        seed = int(match.group(1))
        if seed >= 2**32:
            raise ValueError(f"keyframes: seed {seed} is too large; seeds go from 0 to 4,294,967,295")
        prompt = (match.group(2) if match.group(2) is not None else default_prompt).strip()
        points.append(model.point_for_seed(seed, prompt=prompt))
    return points


def points_from_files(files, model: LatentModel) -> list[LatentPoint]:
    points = []
    for f in files or []:
        points += [model.check(p) for p in load_points(Path(f))]
    return points


def from_picture(params: dict) -> tuple[dict, list[str]]:
    """An Image-tab picture's parameters as Explore's settings (the prompt and negative as the model read them:
    its style applied), and what Explore cannot carry, in words: a point is start noise and a prompt, so
    LoRAs, a hires pass, a start image or a variation blend are left out (said, never silently dropped)."""
    prompt, negative = params.get("prompt") or "", params.get("negative_prompt") or ""
    style = params.get("style") if isinstance(params.get("style"), dict) else None
    if style:
        from pipelines.image_prompt import Style

        prompt, negative = Style(style.get("name") or "style", style.get("prompt", "{prompt}"),
                                 style.get("negative", "")).apply(prompt, negative)
    settings = {"model": params.get("model"), "prompt": prompt, "steps": params.get("steps"),
                "guidance": params.get("guidance"), "scheduler": params.get("scheduler"), "width": params.get("width"),
                "height": params.get("height"), "negative_prompt": negative, "seed": params.get("seed")}
    left_out = []
    if params.get("loras"):
        left_out.append("its LoRAs (" + ", ".join(map(str, params["loras"])) + ")")
    if params.get("hires"):
        left_out.append("the hires pass")
    if params.get("mode") not in (None, "txt2img"):
        left_out.append(f"its start picture ({params['mode']})")
    if params.get("variation_seed") is not None and params.get("variation_strength"):
        left_out.append("the variation seed")
    if params.get("controlnet") or params.get("regions"):
        left_out.append("its ControlNets and regions")
    if params.get("image_prompt"):
        left_out.append("its image prompt (give Explore the picture and IP-Adapter to add one)")
    notes = [f"Explore shows this picture's seed and prompt without {', '.join(left_out)}: a point holds start "
             "noise and a prompt."] if left_out else []
    return settings, notes


def image_prompt(services, path):
    """An uploaded image prompt (PIL), or None when there is none; oversized or broken files are refused."""
    if not path:
        return None
    from pipelines.image import open_user_image

    return open_user_image(path, services.settings.image_limits.max_image_pixels)[0]


def with_image_prompts(services, model: LatentModel, keys: list[LatentPoint], paths: list) -> list[LatentPoint]:
    """Keyframes each given the image prompt of its picture (one per keyframe; diffusion models only)."""
    if not hasattr(model, "image_adapter"):
        raise ValueError("image_prompts: only diffusion models take image prompts")
    if len(paths) != len(keys):
        raise ValueError(f"image_prompts: give one picture per keyframe ({len(keys)}), got {len(paths)}")
    return [model.with_image_prompt(key, image_prompt(services, path)) for key, path in zip(keys, paths)]


def random_seed() -> int:
    return random.SystemRandom().randrange(2**31)


# -- saved directions ------------------------------------------------------------------------------------

def directions_file(services, model: LatentModel) -> Path:
    return services.history.root / "directions" / f"{Path(model.name).name}.safetensors"


def saved_directions(services, model: LatentModel) -> list[Direction]:
    return load_directions(directions_file(services, model))


def save_direction(services, model: LatentModel, direction: Direction, name: str) -> list[Direction]:
    """Keep `direction` under `name` for this model (replacing one of the same name)."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 40:
        raise ValueError("direction name: give 1 to 40 characters, e.g. smile")
    kept = [d for d in saved_directions(services, model) if d.name != name]
    kept.append(Direction(name, direction.space, direction.vector, direction.std, direction.method, direction.hint))
    save_directions(kept, directions_file(services, model))
    return kept


def hint_strip(services, model: LatentModel, origin: LatentPoint, directions: list[Direction],
               amounts=(-2.0, 0.0, 2.0), cell: int = 64):
    """What each direction does, before anyone names it: one row per direction at −2, 0 and +2."""
    points = [move(origin, [d], [a]) for d in directions for a in amounts]
    images = render(services, model, points, preview=True)
    return grid_picture(images, len(amounts), cell)


def check_model_kind(model: LatentModel, kinds: tuple[str, ...]) -> None:
    if model.kind not in kinds:
        raise ModelNotAvailable(f"{model.name} is a {model.kind} model; this tab explores {' / '.join(kinds)} models")


def walk_params(frames, ease: str, method: str, text_method: str, loop: bool, fps, limit: int) -> WalkParams:
    from studio.events import as_int

    counts = tuple(as_int("frames", f) for f in (frames if isinstance(frames, (list, tuple)) else [frames]))
    return WalkParams(frames=counts, ease=ease, method=method, text_method=text_method, loop=bool(loop),
                      fps=as_int("fps", fps), max_total=limit)

"""X/Y/Z plots: one picture per combination of up to three parameters, drawn as one labelled grid.

Axis values are lists ("3, 7, 12", "Euler, DDIM") or ranges as AUTOMATIC1111 writes them: "1-5" (every
whole number), "5-50 (+5)" (a step), "0.5-1 [4]" (that many evenly spaced). "Prompt S/R" replaces its
first value, wherever it is in the prompt and negative prompt, by each value in turn. A plot is capped
(values per axis and cells in all), with the cap named in the error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.checks import short

MAX_VALUES = 32
MAX_CELLS = 100
AXES = ("Nothing", "Prompt S/R", "Seed", "Steps", "CFG scale", "Sampler", "Size", "Denoising strength",
        "Hires denoising strength", "LoRA weight", "Model")
_NUMERIC = {"Seed": int, "Steps": int, "CFG scale": float, "Denoising strength": float,
            "Hires denoising strength": float, "LoRA weight": float}
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*-\s*([+-]?\d+(?:\.\d+)?)\s*(?:\(\s*([+-]?\d+(?:\.\d+)?)\s*\)|"
                    r"\[\s*(\d+)\s*\])?\s*$")


def parse_values(axis: str, text: str, field: str = "X values", cap: int = MAX_VALUES) -> list:
    """The values of one axis from the user's text; ValueError naming `field` and the cap."""
    if axis not in AXES:
        raise ValueError(f"{field}: the axis must be one of {', '.join(AXES)}, got {short(axis)}")
    if axis == "Nothing":
        return [None]
    text = (text or "").strip()
    if not text:
        raise ValueError(f"{field}: give the values for {axis}, e.g. {example(axis)}")
    kind = _NUMERIC.get(axis)
    values: list = []
    for part in _split(text):
        match = _RANGE.match(part) if kind else None
        if match:
            values += _expand(match, kind, field, cap)
        elif kind:
            try:
                number = kind(float(part)) if kind is int and float(part).is_integer() else kind(part)
            except ValueError:
                raise ValueError(f"{field}: {part[:30]!r} is not a number or a range like {example(axis)}") from None
            values.append(number)
        else:
            values.append(part)
        if len(values) > cap:
            raise ValueError(f"{field}: at most {cap} values on an axis; {text[:40]!r} gives more")
    if axis == "Size":
        values = [_size(field, v) for v in values]
    return values


def example(axis: str) -> str:
    return {"Prompt S/R": "red, blue, green", "Seed": "1-4", "Steps": "10-40 (+10)", "CFG scale": "3, 5, 7.5",
            "Sampler": "Euler, DPM++ 2M", "Size": "512x512, 768x512", "Denoising strength": "0.3-0.9 [4]",
            "Hires denoising strength": "0.3, 0.5", "LoRA weight": "0-1 [5]", "Model": "emoji-ldm"}.get(axis, "")


def _split(text: str) -> list[str]:
    return [p.strip() for p in re.split(r",(?![^()\[\]]*[)\]])", text) if p.strip()]


def _expand(match, kind, field: str, cap: int) -> list:
    start, end = float(match.group(1)), float(match.group(2))
    if match.group(4):
        count = int(match.group(4))
        if not 1 <= count <= cap:
            raise ValueError(f"{field}: at most {cap} values on an axis, got [{count}]")
        values = list(np.linspace(start, end, count))
    else:
        step = float(match.group(3)) if match.group(3) else (1.0 if end >= start else -1.0)
        if step == 0 or (end - start) / step < 0:
            raise ValueError(f"{field}: the step {step:g} never gets from {start:g} to {end:g}")
        count = int(np.floor((end - start) / step + 1e-9)) + 1
        if count > cap:
            raise ValueError(f"{field}: at most {cap} values on an axis; {match.group(0).strip()!r} gives {count:,}")
        values = [start + i * step for i in range(count)]
    return [int(round(v)) if kind is int else round(float(v), 6) for v in values]


def _size(field: str, value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", str(value))
    if not match:
        raise ValueError(f"{field}: sizes are written WIDTHxHEIGHT, e.g. 512x768; got {short(value)}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Axis:
    name: str = "Nothing"
    values: tuple = (None,)

    def label(self, value) -> str:
        if value is None:
            return ""
        if self.name == "Size":
            return f"{value[0]}×{value[1]}"
        return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class PlotParams:
    """The base request and up to three axes (an axis of "Nothing" has one empty value)."""

    x: Axis
    y: Axis = Axis()
    z: Axis = Axis()

    def __post_init__(self) -> None:
        named = [a.name for a in (self.x, self.y, self.z) if a.name != "Nothing"]
        if not named:
            raise ValueError("X axis: choose what changes along X (seed, steps, CFG scale…)")
        if len(set(named)) != len(named):
            raise ValueError(f"axes: each parameter on one axis only, got {', '.join(named)}")
        cells = len(self.x.values) * len(self.y.values) * len(self.z.values)
        if cells > MAX_CELLS:
            raise ValueError(f"axes: {cells:,} pictures; the cap is {MAX_CELLS} (fewer values on an axis)")

    @classmethod
    def parse(cls, x: tuple[str, str], y: tuple[str, str] = ("Nothing", ""), z: tuple[str, str] = ("Nothing", "")):
        axes = [Axis(name, tuple(parse_values(name, text, f"{which} values")))
                for (name, text), which in zip((x, y, z), "XYZ")]
        return cls(*axes)

    def cells(self) -> list[tuple[int, int, int]]:
        """(x, y, z) indices, z outermost, then rows (y), then columns (x)."""
        return [(i, j, k) for k in range(len(self.z.values)) for j in range(len(self.y.values))
                for i in range(len(self.x.values))]

    def settings(self, cell: tuple[int, int, int]) -> dict:
        """{axis name: value} for one cell (no "Nothing" axes)."""
        return {a.name: a.values[i] for a, i in zip((self.x, self.y, self.z), cell) if a.name != "Nothing"}


def apply(params, settings: dict, search: str | None = None):
    """ImageParams with one cell's settings (Model and LoRA weight are the caller's: they change the
    pipeline, not the request). The seed is fixed so every cell starts from the same noise."""
    changes: dict = {"batch_size": 1, "batch_count": 1}
    for name, value in settings.items():
        if name == "Prompt S/R":
            changes["prompt"] = params.prompt.replace(search, value) if search else params.prompt
            changes["negative_prompt"] = params.negative_prompt.replace(search, value) if search else \
                params.negative_prompt
        elif name == "Seed":
            changes["seed"] = int(value)
        elif name == "Steps":
            changes["steps"] = int(value)
        elif name == "CFG scale":
            changes["guidance"] = float(value)
        elif name == "Sampler":
            changes["scheduler"] = value
        elif name == "Size":
            changes["width"], changes["height"] = value
        elif name == "Denoising strength":
            changes["strength"] = float(value)
        elif name == "Hires denoising strength":
            if params.hires is None:
                raise ValueError("Hires denoising strength: turn the hires fix on to plot it")
            changes["hires"] = dataclasses.replace(params.hires, strength=float(value))
    return dataclasses.replace(params, **changes)


def run_plot(plot: PlotParams, base, make: Callable[[object, dict], object], *,
             cancelled: Callable[[], bool] = lambda: False) -> list[tuple[tuple[int, int, int], object, object]]:
    """Make every cell in order: `make(params, settings)` returns a picture, or None when it was cancelled.
    Stops once `cancelled()`; returns [(cell, params, picture)] for the cells made."""
    axes = (plot.x, plot.y, plot.z)
    search = next((a.values[0] for a in axes if a.name == "Prompt S/R"), None)
    cells = plot.cells()
    for slow in ("LoRA weight", "Model"):  # group the cells that share a model (and LoRA weight): fewer loads
        where = next((n for n, a in enumerate(axes) if a.name == slow), None)
        if where is not None:
            cells = sorted(cells, key=lambda cell, n=where: cell[n])
    done = []
    for cell in cells:
        if cancelled():
            break
        settings = plot.settings(cell)
        params = apply(base, settings, search)
        params.validate()
        picture = make(params, settings)
        if picture is not None:
            done.append((cell, params, picture))
    return done


def draw_grid(plot: PlotParams, done: list, cell_size: tuple[int, int] | None = None):
    """One labelled picture: for each Z value a grid (columns = X, rows = Y) with the axis names and values
    written along the top and left; Z grids side by side under their own titles. Missing cells (cancelled)
    stay blank."""
    from PIL import Image, ImageDraw, ImageFont

    pictures = {cell: picture for cell, _, picture in done}
    if not pictures:
        raise ValueError("nothing to draw: no cell was made")
    w, h = cell_size or max((p.size for p in pictures.values()), key=lambda s: s[0] * s[1])
    font_size = max(12, min(28, w // 10))
    font = ImageFont.load_default(size=font_size)
    line = font_size + 8
    nx, ny, nz = len(plot.x.values), len(plot.y.values), len(plot.z.values)
    left = 0 if plot.y.name == "Nothing" else max(
        8 + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(plot.y.label(v), font=font))
        for v in plot.y.values)
    left = min(left, 3 * w)
    top = (line if nz > 1 else 0) + (line if plot.x.name != "Nothing" else 0) + line
    gap = 16
    grid_w = left + nx * w
    canvas = Image.new("RGB", (nz * grid_w + (nz - 1) * gap, top + ny * h), "white")
    draw = ImageDraw.Draw(canvas)
    title = " · ".join(f"{which}: {a.name}" for which, a in zip("XYZ", (plot.x, plot.y, plot.z)) if a.name != "Nothing")
    draw.text((4, 2), title, fill="black", font=font)
    for k in range(nz):
        x0 = k * (grid_w + gap)
        y = line
        if nz > 1:
            draw.text((x0 + left, y), plot.z.label(plot.z.values[k]), fill="black", font=font)
            y += line
        for i in range(nx):
            draw.text((x0 + left + i * w + 4, y), plot.x.label(plot.x.values[i]), fill="black", font=font)
        for j in range(ny):
            label = plot.y.label(plot.y.values[j])
            draw.text((x0 + 4, top + j * h + h // 2 - font_size // 2), label, fill="black", font=font)
            for i in range(nx):
                picture = pictures.get((i, j, k))
                if picture is not None:
                    canvas.paste(picture.convert("RGB").resize((w, h)), (x0 + left + i * w, top + j * h))
    return canvas

"""OpenMoji as a captioned 64×64 image set: parse, caption, split, rasterize, cache.

Data: the npm package `openmoji@17.0.0` (CC BY-SA 4.0): `color/svg/<HEXCODE>.svg` and the
annotations in `data/openmoji.json`. Each emoji is rasterized with CairoSVG onto white, and
captioned from its annotation, tags, subgroup and group. A fixed 10% of emoji, chosen by a seeded
hash of the hexcode (so the split never depends on file order), is held out for evaluation.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.packages import PACKAGES, fetch_package

SPLIT_SEED = "openmoji-holdout-v1"
HOLDOUT_FRACTION = 0.10


@dataclass(frozen=True)
class EmojiRecord:
    hexcode: str
    annotation: str
    group: str
    subgroup: str
    tags: tuple[str, ...]

    @property
    def held_out(self) -> bool:
        return is_held_out(self.hexcode)

    def captions(self) -> list[str]:
        """Caption variants used in training; the first is the plain one used for evaluation."""
        name = self.annotation.strip()
        group = self.group.replace("-", " ")
        subgroup = self.subgroup.replace("-", " ")
        tags = [t for t in self.tags if t and t not in name][:4]
        variants = [name, f"{name}, {subgroup}", f"{name} emoji, {group}"]
        if tags:
            variants.append(f"{name}, {', '.join(tags)}")
        else:
            variants.append(f"an emoji of {name}")
        return variants


@dataclass
class EmojiSet:
    """Rasterized emoji: images [N, size, size, 3] uint8 and one record per image."""

    images: np.ndarray
    records: list[EmojiRecord]

    def split(self, held_out: bool) -> EmojiSet:
        keep = [i for i, r in enumerate(self.records) if r.held_out == held_out]
        return EmojiSet(self.images[keep], [self.records[i] for i in keep])

    @property
    def groups(self) -> list[str]:
        return sorted({r.group for r in self.records})


def is_held_out(hexcode: str) -> bool:
    """The fixed evaluation split: 10% of emoji by a seeded hash of their hexcode."""
    digest = hashlib.sha256(f"{SPLIT_SEED}:{hexcode}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HOLDOUT_FRACTION


def parse_annotations(json_path: Path) -> list[EmojiRecord]:
    """Read `data/openmoji.json` into records (entries without an annotation are skipped)."""
    entries = json.loads(Path(json_path).read_text(encoding="utf-8"))
    records = []
    for e in entries:
        annotation = (e.get("annotation") or "").strip()
        if not annotation or not e.get("hexcode"):
            continue
        tags = tuple(
            t.strip()
            for field in ("tags", "openmoji_tags")
            for t in (e.get(field) or "").split(",")
            if t.strip()
        )
        records.append(
            EmojiRecord(
                hexcode=e["hexcode"],
                annotation=annotation,
                group=e.get("group") or "unknown",
                subgroup=e.get("subgroups") or "",
                tags=tuple(dict.fromkeys(tags)),
            )
        )
    return records


def rasterize_svg(svg_path: Path, size: int = 64) -> np.ndarray:
    """Render an SVG to an RGB uint8 array of shape [size, size, 3], composited on white."""
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(url=str(svg_path), output_width=size, output_height=size)
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)


def load_emoji_set(
    cache_dir: Path,
    *,
    size: int = 64,
    limit: int | None = None,
    offline: bool = False,
    log: Callable[[str], None] | None = None,
) -> EmojiSet:
    """Fetch OpenMoji (once), rasterize every emoji at `size` px (once, cached as .npz)."""
    root = fetch_package(PACKAGES["openmoji"], cache_dir, offline=offline, log=log) / "package"
    records = [r for r in parse_annotations(root / "data" / "openmoji.json")
               if (root / "color" / "svg" / f"{r.hexcode}.svg").is_file()]
    if limit is not None:
        records = records[:limit]
    cache = Path(cache_dir) / "datasets" / f"openmoji-17.0.0-{size}px-{len(records)}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            by_hex = {r.hexcode: r for r in records}
            return EmojiSet(data["images"], [by_hex[h] for h in data["hexcodes"]])
    if log:
        log(f"Rasterizing {len(records)} OpenMoji SVGs at {size}×{size}…")
    images, kept = [], []
    for r in records:
        try:
            images.append(rasterize_svg(root / "color" / "svg" / f"{r.hexcode}.svg", size))
            kept.append(r)
        except Exception as exc:  # a few upstream SVGs use features CairoSVG cannot draw
            if log:
                log(f"Skipping {r.hexcode} ({r.annotation}): {type(exc).__name__}: {exc}")
    records, images = kept, np.stack(images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=images, hexcodes=np.array([r.hexcode for r in records]))
    tmp.replace(cache)
    return EmojiSet(images, records)

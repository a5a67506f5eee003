"""Open emoji sets as one captioned 64×64 image set: parse, caption, split, rasterize, cache.

Data (all from npm, sha256-pinned in `packages.py`):
- `openmoji@17.0.0` (CC BY-SA 4.0): `color/svg/<HEXCODE>.svg` and the annotations in
  `data/openmoji.json` (annotation, tags, group, subgroup, skin tone).
- Iconify JSON sets (`@iconify-json/noto`, `twemoji`, `fluent-emoji-flat`, `emojione`): SVG bodies in
  `icons.json`, Unicode code points in `chars.json` (noto, twemoji, fluent) or names (emojione).
  An Iconify emoji whose code points (or name) match an OpenMoji entry takes OpenMoji's annotation,
  tags and group, so "red heart" means the same picture in every set; the rest are captioned from
  their names and the set's own category.

Each emoji is rasterized with CairoSVG onto white. Captions are the plain name plus variants with
subgroup, group, tags and, in some, the set's style phrase ("noto style"), so "red heart" and
"red heart, noto style" both work. A fixed 10% of emoji, chosen by a seeded hash of the hexcode (so
the split never depends on file order, and the same emoji is held out in every set), is held out for
evaluation. Skin-tone variants are kept but drawn less often (`sample_weights`).
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
OPENMOJI = "openmoji"
# set name → (npm package, style phrase used in captions)
ICONIFY_SETS = {
    "noto": ("@iconify-json/noto", "noto style"),
    "twemoji": ("@iconify-json/twemoji", "twemoji style"),
    "fluent-emoji-flat": ("@iconify-json/fluent-emoji-flat", "fluent style"),
    "emojione": ("@iconify-json/emojione", "emojione style"),
}
STYLE_PHRASES = {OPENMOJI: "openmoji style", **{name: phrase for name, (_, phrase) in ICONIFY_SETS.items()}}
ALL_SETS = (OPENMOJI, *ICONIFY_SETS)
# Iconify categories (Unicode group names) → OpenMoji group ids
CATEGORY_GROUPS = {
    "smileys & emotion": "smileys-emotion", "people & body": "people-body", "people": "people-body",
    "animals & nature": "animals-nature", "nature": "animals-nature", "food & drink": "food-drink",
    "food": "food-drink", "travel & places": "travel-places", "travel": "travel-places",
    "places": "travel-places", "activities": "activities", "objects": "objects", "symbols": "symbols",
    "flags": "flags", "modifiers": "component",
}


@dataclass(frozen=True)
class EmojiRecord:
    hexcode: str
    annotation: str
    group: str
    subgroup: str
    tags: tuple[str, ...]
    style: str = OPENMOJI
    """Which set drew it (a key of STYLE_PHRASES)."""
    skin_tone: bool = False
    """A skin-tone variant of another emoji (drawn less often in training)."""

    @property
    def held_out(self) -> bool:
        return is_held_out(self.hexcode)

    def captions(self) -> list[str]:
        """Caption variants used in training; the first is the plain one used for evaluation.
        OpenMoji-only data (v1) keeps its four variants; other sets add two with a style phrase."""
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

    def styled_captions(self) -> list[str]:
        """The v2 caption set: `captions()` plus two variants naming the set's style."""
        style = STYLE_PHRASES.get(self.style, f"{self.style} style")
        plain = self.captions()
        return plain + [f"{plain[0]}, {style}", f"{plain[-1]}, {style}"]


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


def normalize_hexcode(code: str) -> str:
    """`1f600`, `1F600-FE0F` and `1F600` name the same emoji: upper case, variation selectors dropped."""
    return "-".join(part for part in code.upper().replace("_", "-").split("-") if part and part != "FE0F")


def kebab(text: str) -> str:
    """OpenMoji's "face with tears of joy" as Iconify writes it: face-with-tears-of-joy."""
    keep = "".join(ch if ch.isalnum() or ch in " -" else " " if ch in ":,._&" else "" for ch in text.lower())
    return "-".join(keep.split())


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
                skin_tone=bool(e.get("skintone")),
            )
        )
    return records


def parse_iconify(root: Path, style: str, openmoji: list[EmojiRecord]) -> list[tuple[EmojiRecord, str]]:
    """(record, SVG document) for every icon of an Iconify JSON set, matched to OpenMoji where possible."""
    icons = json.loads((root / "icons.json").read_text(encoding="utf-8"))
    chars = json.loads((root / "chars.json").read_text(encoding="utf-8")) if (root / "chars.json").is_file() else {}
    metadata = json.loads((root / "metadata.json").read_text(encoding="utf-8")) \
        if (root / "metadata.json").is_file() else {}
    by_code = {normalize_hexcode(r.hexcode): r for r in openmoji}
    by_name = {kebab(r.annotation): r for r in openmoji}
    code_of = {name: code for code, name in chars.items()}
    category_of = {icon: category for category, names in metadata.get("categories", {}).items() for icon in names}
    width, height = icons.get("width", 16), icons.get("height", 16)
    out = []
    for name, icon in icons["icons"].items():
        match = by_code.get(normalize_hexcode(code_of[name])) if name in code_of else by_name.get(name)
        if match is not None:
            record = EmojiRecord(match.hexcode, match.annotation, match.group, match.subgroup, match.tags,
                                 style=style, skin_tone=match.skin_tone)
        else:
            category = category_of.get(name, "").lower()
            annotation = name.replace("-", " ")
            record = EmojiRecord(f"name:{name}", annotation, CATEGORY_GROUPS.get(category, "extras-unicode"),
                                 "", (), style=style, skin_tone="skin-tone" in name)
        w, h = icon.get("width", width), icon.get("height", height)
        left, top = icon.get("left", 0), icon.get("top", 0)
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
               f'viewBox="{left} {top} {w} {h}">{icon["body"]}</svg>')
        out.append((record, svg))
    return out


def rasterize_svg(svg: Path | str, size: int = 64) -> np.ndarray:
    """Render an SVG (a file, or a document as text) to RGB uint8 [size, size, 3], composited on white."""
    import cairosvg
    from PIL import Image

    source = dict(url=str(svg)) if isinstance(svg, Path) else dict(bytestring=svg.encode("utf-8"))
    png = cairosvg.svg2png(**source, output_width=size, output_height=size)
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


def sample_weights(records: list[EmojiRecord]) -> np.ndarray:
    """How often each image is drawn in training: skin-tone variants share one emoji's weight, so the
    ~2,000 people-with-skin-tone pictures per set do not crowd out pizza and rockets."""
    tone_count: dict[tuple[str, str], int] = {}
    for r in records:
        if r.skin_tone:
            key = (r.style, r.annotation.split(":")[0])
            tone_count[key] = tone_count.get(key, 0) + 1
    weights = [1.0 / tone_count[(r.style, r.annotation.split(":")[0])] if r.skin_tone else 1.0 for r in records]
    return np.asarray(weights, dtype=np.float64)


def _rasterize_all(items: list[tuple[EmojiRecord, Path | str]], size: int, cache: Path,
                   log: Callable[[str], None] | None) -> EmojiSet:
    """Rasterize (record, svg) pairs once; later calls read the cached .npz."""
    if cache.is_file():
        with np.load(cache) as data:
            keep = set(data["keys"].tolist())
            records = [r for r, _ in items if f"{r.style}|{r.hexcode}|{r.annotation}" in keep]
            return EmojiSet(data["images"], records)
    if log:
        log(f"Rasterizing {len(items)} SVGs at {size}×{size} into {cache.name}…")
    images, kept = [], []
    for record, svg in items:
        try:
            images.append(rasterize_svg(svg, size))
            kept.append(record)
        except Exception as exc:  # a few upstream SVGs use features CairoSVG cannot draw
            if log:
                log(f"Skipping {record.hexcode} ({record.annotation}): {type(exc).__name__}: {exc}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=np.stack(images),
                        keys=np.array([f"{r.style}|{r.hexcode}|{r.annotation}" for r in kept]))
    tmp.replace(cache)
    return EmojiSet(np.stack(images), kept)


def load_emoji_sets(
    cache_dir: Path,
    sets: tuple[str, ...] = ALL_SETS,
    *,
    size: int = 64,
    limit: int | None = None,
    offline: bool = False,
    log: Callable[[str], None] | None = None,
) -> EmojiSet:
    """OpenMoji plus the named Iconify sets as one EmojiSet (each set fetched and rasterized once).
    `limit` keeps the first N emoji of each set (tests)."""
    unknown = [s for s in sets if s not in ALL_SETS]
    if unknown:
        raise ValueError(f"sets: unknown emoji set(s) {', '.join(unknown)}; choose from {', '.join(ALL_SETS)}")
    om_root = fetch_package(PACKAGES["openmoji"], cache_dir, offline=offline, log=log) / "package"
    openmoji = parse_annotations(om_root / "data" / "openmoji.json")
    parts = []
    for name in sets:
        if name == OPENMOJI:
            parts.append(load_emoji_set(cache_dir, size=size, limit=limit, offline=offline, log=log))
            continue
        package = PACKAGES[ICONIFY_SETS[name][0]]
        root = fetch_package(package, cache_dir, offline=offline, log=log) / "package"
        items = parse_iconify(root, name, openmoji)[:limit]
        cache = Path(cache_dir) / "datasets" / f"{package.key}-{size}px-{len(items)}.npz"
        parts.append(_rasterize_all(items, size, cache, log))
    return EmojiSet(np.concatenate([p.images for p in parts]), [r for p in parts for r in p.records])

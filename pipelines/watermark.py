"""An invisible watermark on generated pictures: invisible-watermark's `dwtDctSvd` method in numpy.

The algorithm is the one the `invisible-watermark` package implements (the family diffusers' SDXL pipeline
uses): the picture's U (blue-difference) channel goes through one level of a Haar wavelet; its low band is cut
into 4×4 blocks; the largest singular value of each block's DCT is moved onto a grid of step 36, to a quarter
step for a 0 bit and three quarters for a 1 bit, the 48 bits repeating over the blocks. Detection reads every
block back and takes the majority of each bit's repeats.

Why not call the package: its encoder loops over the blocks in Python (0.66 s for one 512² picture on a CPU
core, 2.7 s at 1024², more than the picture itself on a GPU), and it imports OpenCV's GUI build, which needs
`libGL` that a fresh machine may lack. This module is vectorised (a few milliseconds at 512²) and uses only
numpy. The tests check both ways against the package: its decoder reads our mark and ours reads its mark.

It survives a JPEG re-save at quality 85 and a resize back to the original size; `detect` also tries the
picture at twice its size, which finds the mark in a copy halved. It does not survive crops that shift the
4-pixel grid, rotations or heavy edits: a watermark is a hint next to Content Credentials, not proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MESSAGE = b"GenAIS"  # 6 bytes = 48 bits, the length diffusers' SDXL mark uses
BITS = np.unpackbits(np.frombuffer(MESSAGE, dtype=np.uint8)).astype(np.int64)
SCALE = 36.0  # the package's default step for the U channel
BLOCK = 4
MIN_PIXELS = 256 * 256  # the package's own floor: smaller pictures have too few blocks to carry 48 bits
FOUND_AT = 44  # bits of 48 that must match; a random picture reaches it with odds below 1 in 10⁹
MAX_READ_PIXELS = 16_800_000  # detection reads at most this many pixels (a 2× read of a big picture is skipped)

_N = np.arange(BLOCK)
_DCT = np.sqrt(np.where(_N[:, None] == 0, 1.0, 2.0) / BLOCK) * np.cos(np.pi * (2 * _N[None, :] + 1) * _N[:, None]
                                                                        / (2 * BLOCK))


@dataclass(frozen=True)
class Detection:
    found: bool
    matching_bits: int  # of 48
    scale: float  # the size the picture was read at, relative to the file: 1.0, or 2.0 for a halved copy
    reason: str = ""  # why nothing could be read (too small), else ""


def can_mark(width: int, height: int) -> bool:
    return width * height >= MIN_PIXELS


def _yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, 0.492 * (b - y) + 128.0, 0.877 * (r - y) + 128.0


def _rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = y + 1.140 * (v - 128.0)
    g = y - 0.395 * (u - 128.0) - 0.581 * (v - 128.0)
    b = y + 2.032 * (u - 128.0)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def _blocks(band: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    cut = band[:rows * BLOCK, :cols * BLOCK]
    return cut.reshape(rows, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK, BLOCK), (rows, cols)


def _haar(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a, b = channel[0::2, 0::2], channel[0::2, 1::2]
    c, d = channel[1::2, 0::2], channel[1::2, 1::2]
    return (a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2


def _unhaar(low, h, v, diag) -> np.ndarray:
    out = np.empty((low.shape[0] * 2, low.shape[1] * 2))
    out[0::2, 0::2] = (low + h + v + diag) / 2
    out[0::2, 1::2] = (low - h + v - diag) / 2
    out[1::2, 0::2] = (low + h - v - diag) / 2
    out[1::2, 1::2] = (low - h - v + diag) / 2
    return out


def mark(rgb: np.ndarray) -> np.ndarray:
    """The picture (uint8 [H, W, 3]) with the 48-bit mark; unchanged when smaller than 256×256 pixels."""
    height, width = rgb.shape[:2]
    if not can_mark(width, height):
        return rgb
    y, u, v = _yuv(rgb)
    h4, w4 = height // 4 * 4, width // 4 * 4
    low, h, vv, diag = _haar(u[:h4, :w4])
    blocks, (rows, cols) = _blocks(low)
    bits = BITS[np.arange(len(blocks)) % len(BITS)]
    left, singular, right = np.linalg.svd(_DCT @ blocks @ _DCT.T)
    singular[:, 0] = (singular[:, 0] // SCALE + 0.25 + 0.5 * bits) * SCALE
    blocks = _DCT.T @ (left * singular[:, None, :]) @ right @ _DCT
    low[:rows * BLOCK, :cols * BLOCK] = blocks.reshape(rows, cols, BLOCK, BLOCK).transpose(0, 2, 1, 3).reshape(
        rows * BLOCK, cols * BLOCK)
    u = u.copy()
    u[:h4, :w4] = _unhaar(low, h, vv, diag)
    return _rgb(y, u, v)


def _read(rgb: np.ndarray) -> int:
    height, width = rgb.shape[:2]
    _, u, _ = _yuv(rgb)
    low = _haar(u[:height // 4 * 4, :width // 4 * 4])[0]
    blocks, _ = _blocks(low)
    singular = np.linalg.svd(_DCT @ blocks @ _DCT.T, compute_uv=False)[:, 0]
    votes = (singular % SCALE > SCALE * 0.5).astype(np.float64)
    which = np.arange(len(blocks)) % len(BITS)
    ones = np.bincount(which, weights=votes, minlength=len(BITS))
    counts = np.bincount(which, minlength=len(BITS))
    bits = (ones / np.maximum(counts, 1)) * 255 > 127
    return int((bits == BITS.astype(bool)).sum())


def detect(image) -> Detection:
    """Look for the mark in a PIL image or uint8 array, as it is and at twice its size (a halved copy)."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGB")
    best = Detection(False, 0, 1.0, "")
    for scale in (1.0, 2.0):
        size = (round(picture.width * scale), round(picture.height * scale))
        if not can_mark(*size) or size[0] * size[1] > MAX_READ_PIXELS:
            continue
        seen = picture if scale == 1.0 else picture.resize(size, Image.Resampling.BICUBIC)
        matching = _read(np.asarray(seen))
        if matching > best.matching_bits:
            best = Detection(matching >= FOUND_AT, matching, scale)
        if best.found:
            return best
    if best.matching_bits == 0:
        return Detection(False, 0, 1.0, f"the picture ({picture.width}×{picture.height}) is smaller than "
                                        "256×256 pixels, too small to carry the watermark")
    return best

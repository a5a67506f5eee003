"""What Content Credentials and the watermark cost per kept picture, and how often the watermark survives.

    python benchmarks/provenance.py [--pictures 16]

Per picture size: the PNG the studio writes first (parameters in it), the watermark alone, the watermarked
re-encode, signing alone, and the whole seal History does (watermark + sign), with the bytes each adds. Then the
detection rate over N pictures at 512² for each way a picture is passed on, beside unmarked pictures.
Results: benchmarks/results/provenance-*.md.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report  # noqa: E402


def ms(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pictures", type=int, default=16)
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from pipelines import watermark
    from pipelines.media import png_with_metadata
    from pipelines.provenance import CREATED_ORIGIN, Provenance, watermarked_png
    from tests.test_provenance import jpeg, picture, png_bytes

    report = Report("provenance")
    sealer = Provenance(Path(tempfile.mkdtemp()) / "credentials", version="bench")
    sealer.credentials()
    report.line("size    first PNG  mark  mark+re-encode  sign  seal (both)  bytes added by seal")
    for size in (64, 256, 512, 1024):
        image = picture(1, size)
        data = png_with_metadata(image, "red heart\nSteps: 20, Seed: 1", {"seed": 1})
        pixels = np.asarray(image)
        first = ms(lambda: png_with_metadata(image, "red heart\nSteps: 20, Seed: 1", {"seed": 1}))
        mark, remark = ms(lambda: watermark.mark(pixels)), ms(lambda: watermarked_png(data))
        sign = ms(lambda: sealer.sign(data, "image/png", title="a.png", origin=CREATED_ORIGIN, model="m",
                                      parameters={"seed": 1}))
        seal = ms(lambda: sealer.seal(".png", data, title="a.png", model="m", parameters={"seed": 1}))
        added = len(sealer.seal(".png", data, title="a.png", model="m", parameters={"seed": 1})) - len(data)
        report.line(f"{size:>4}²  {first:8.0f} ms {mark:4.0f} ms {remark:10.0f} ms {sign:6.0f} ms {seal:8.0f} ms"
                    f"  {added:+,}")

    ways = {
        "as kept (PNG)": lambda png: png,
        "metadata stripped (pixels re-saved)": lambda png: png_bytes(Image.open(io.BytesIO(png)).convert("RGB")),
        "JPEG quality 85": lambda png: jpeg(png, 85),
        "JPEG quality 70": lambda png: jpeg(png, 70),
        "50% resize": lambda png: png_bytes(Image.open(io.BytesIO(png)).convert("RGB").resize(
            (256, 256), Image.Resampling.LANCZOS)),
        "50% resize, then JPEG 85": lambda png: jpeg(png_bytes(Image.open(io.BytesIO(png)).convert("RGB").resize(
            (256, 256), Image.Resampling.LANCZOS)), 85),
        "75% resize": lambda png: png_bytes(Image.open(io.BytesIO(png)).convert("RGB").resize(
            (384, 384), Image.Resampling.LANCZOS)),
    }
    found = {name: [] for name in ways}
    unmarked = []
    for seed in range(args.pictures):
        kept = sealer.seal(".png", png_bytes(picture(100 + seed)), title="a.png")
        for name, way in ways.items():
            found[name].append(watermark.detect(Image.open(io.BytesIO(way(kept)))).matching_bits)
        unmarked.append(watermark.detect(picture(100 + seed)).matching_bits)
    report.line()
    report.line(f"watermark found in {args.pictures} pictures at 512² (found = at least {watermark.FOUND_AT} of 48 bits)")
    for name, bits in [*found.items(), ("unmarked pictures", unmarked)]:
        hits = sum(b >= watermark.FOUND_AT for b in bits)
        report.line(f"  {name:<38} {hits:>3}/{len(bits)}   bits median {statistics.median(bits):.0f}, "
                    f"min {min(bits)}")
    report.save()


if __name__ == "__main__":
    main()

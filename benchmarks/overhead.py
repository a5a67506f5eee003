"""Where a served picture's time goes beyond the pipeline call, through a launched studio (`python -m studio
launch`), for three clients: the page in Chromium, Gradio's HTTP API called as a browser calls it (one kept-alive
connection, the answer pushed as server-sent events; benchmarks.e2e.HttpClient) and gradio_client.

    python benchmarks/overhead.py [--reps 8] [--size 64] [--batch 4] [--no-browser]

For `/generate_image` (emoji-ldm, 20 steps) it prints the medians of: the pipeline's own time (the `seconds` the
server reports); each client's whole call with every PNG fetched, and what it adds beyond the pipeline (the served
overhead); a call that does nothing on each client (the floor of any call); and, in this process, keeping the
pictures (mark, PNG with parameters, Content Credentials, History files and rows).
Results: benchmarks/results/overhead-*.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report  # noqa: E402
from benchmarks.e2e import HttpClient, launch_studio  # noqa: E402


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def served(url: str, reps: int, job: dict) -> dict[str, list[float]]:
    from gradio_client import Client

    client, http, browser_like = Client(url, verbose=False), HttpClient(url), HttpClient(url, fetchers=4)
    rows: dict[str, list[float]] = {}
    for rep in range(reps + 2):  # two warm-ups: the model loads, caches fill
        started = time.perf_counter()
        info, _ = http.predict("generate_image", {**job, "seed": rep})
        lean = time.perf_counter() - started
        lean_pipeline, answer, fetch = info["seconds"], http.answer_s, http.files_s
        started = time.perf_counter()
        browser_like.fetch(http.file_urls)  # the same files again, side by side
        side_by_side = time.perf_counter() - started
        started = time.perf_counter()
        info, _ = client.predict(**job, seed=rep, api_name="/generate_image")
        whole = time.perf_counter() - started
        started = time.perf_counter()
        http.predict("history_list", {"limit": 1})
        lean_noop = time.perf_counter() - started
        started = time.perf_counter()
        client.predict(limit=1, api_name="/history_list")
        noop = time.perf_counter() - started
        if rep >= 2:
            for name, value in (("http", lean), ("http pipeline", lean_pipeline), ("http answer", answer),
                                ("http files", fetch), ("http files side by side", side_by_side),
                                ("client", whole),
                                ("client pipeline", info["seconds"]), ("http no-op", lean_noop),
                                ("client no-op", noop)):
                rows.setdefault(name, []).append(value)
    http.close()
    browser_like.close()
    return rows


POLL_MS = 20  # how often the page is asked whether the pictures are there (every frame would take a core)


def in_the_page(url: str, reps: int, job: dict, outputs: Path) -> tuple[list[float], list[float]]:
    """Seconds from the Generate click to every new picture of the batch shown in the gallery, and the pipeline
    seconds of the same requests (what History recorded for their pictures)."""
    import sqlite3

    from playwright.sync_api import sync_playwright

    from benchmarks.e2e_browser import CHROMIUM_ARGS

    whole, pipeline = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Image").click()
        page.locator("#image-steps input[type=number]").fill(str(job["steps"]))
        page.locator("#image-batch input[type=number]").fill(str(job["batch_size"]))
        page.locator("#image-prompt textarea").fill(job["prompt"])
        for rep in range(reps + 2):
            page.locator("#image-seed textarea, #image-seed input").first.fill(str(1000 + rep))
            page.locator("#image-batch input[type=number]").press("Enter")
            seen = page.evaluate("() => [...document.querySelectorAll('#image-gallery img')].map(i => i.src)")
            started = time.perf_counter()
            page.locator("#image-generate").click()
            page.wait_for_function(
                "(a) => { const s = [...document.querySelectorAll('#image-gallery .thumbnail-item img, "
                "#image-gallery .grid-container img')]; return s.length >= a[1] && s.every(i => i.complete && "
                "i.naturalWidth > 0 && !a[0].includes(i.src)); }", arg=[seen, job["batch_size"]], timeout=120_000,
                polling=POLL_MS)
            seconds = time.perf_counter() - started
            with sqlite3.connect(outputs / "history.sqlite3") as db:
                rows = db.execute("SELECT timings FROM items WHERE tab = 'image' ORDER BY created_at DESC LIMIT ?",
                                  (job["batch_size"],)).fetchall()
            import json

            if rep >= 2:
                whole.append(seconds)
                pipeline.append(sum(json.loads(r[0])["seconds"] for r in rows))
        browser.close()
    return whole, pipeline


def keeping(reps: int, job: dict) -> list[float]:
    """Keeping the batch in this process: mark, PNG encoding with parameters, Content Credentials, History."""
    from pipelines.image import ImageParams
    from studio.actions.images import keep_images
    from studio.config import Settings
    from studio.services import Services

    with tempfile.TemporaryDirectory() as tmp:
        services = Services.create(Settings(device="cpu", outputs=Path(tmp) / "outputs"))
        pipe = services.host.image_pipeline("emoji-ldm")
        params = ImageParams(prompt=job["prompt"], steps=job["steps"], batch_size=job["batch_size"], seed=1,
                             width=job["width"], height=job["height"])
        out = pipe(params)
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            keep_images(services, pipe, params, out, "local")
            times.append(time.perf_counter() - started)
        return times


def png_levels(reps: int, size: int = 512) -> dict[int, tuple[float, int]]:
    """Encoding one size² picture with its parameters at zlib levels 4 (the studio's) and 6 (PIL's default):
    median seconds and bytes. The picture: the emoji model's shipped sample sheet, resized."""
    from PIL import Image

    from pipelines.media import png_with_metadata

    sheet = Path(__file__).resolve().parent.parent / "assets" / "models" / "emoji-ldm" / "samples.png"
    with Image.open(sheet) as image:
        picture = image.convert("RGB").resize((size, size), Image.LANCZOS)
    found = {}
    for level in (4, 6):
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            data = png_with_metadata(picture, "red heart\nSteps: 20", {"prompt": "red heart"}, level=level)
            times.append(time.perf_counter() - started)
        found[level] = (statistics.median(times), len(data))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    job = dict(prompt="red heart", steps=20, batch_size=args.batch, width=args.size, height=args.size,
               model="emoji-ldm")
    report = Report("overhead")
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp) / "outputs"
        process, url = launch_studio(outputs)
        try:
            rows = served(url, args.reps, job)
            page = None if args.no_browser else in_the_page(url, args.reps, job, outputs)
        finally:
            process.kill()
    kept = keeping(args.reps, job)
    levels = png_levels(args.reps)

    def beyond(whole: list[float], pipeline: list[float]) -> float:
        return statistics.median([w - p for w, p in zip(whole, pipeline)]) * 1000

    n = args.batch
    report.line(f"/generate_image, emoji-ldm, {n} pictures {args.size}², 20 steps; median of {args.reps}")
    report.line(f"{'client':34} {'whole call':>11} {'pipeline':>9} {'served overhead':>16}")
    sides = [("HTTP API (kept-alive, no polling)", rows["http"], rows["http pipeline"]),
             ("gradio_client", rows["client"], rows["client pipeline"])]
    if page:
        sides.insert(0, ("the page in Chromium", *page))
    for label, whole, pipeline in sides:
        report.line(f"{label:34} {median_ms(whole):8.1f} ms {median_ms(pipeline):6.1f} ms "
                    f"{beyond(whole, pipeline):10.1f} ms")
    answer = beyond(rows["http answer"], rows["http pipeline"])
    report.line(f"HTTP API, the parts of its served overhead:")
    report.line(f"  request → answer, beyond the pipeline {answer:8.1f} ms (the studio's share and Gradio's)")
    report.line(f"    of which a call that does nothing   {median_ms(rows['http no-op']):8.1f} ms (Gradio's HTTP "
                "API and queue, /history_list: the floor of any call)")
    report.line(f"    of which keeping the {n} pictures     {median_ms(kept):8.1f} ms (mark, PNG, credentials, History; "
                "measured in-process)")
    report.line(f"  fetching the {n} PNGs, one by one     {median_ms(rows['http files']):8.1f} ms (one kept-alive "
                "connection)")
    report.line(f"    or side by side, as a browser does  {median_ms(rows['http files side by side']):8.1f} ms (4 "
                "connections)")
    (fast, fast_size), (slow, slow_size) = levels[4], levels[6]
    report.line(f"PNG encoding of one 512² picture with its parameters: {fast * 1000:.1f} ms at zlib level 4 (the "
                f"studio's, {fast_size // 1024} KB) against {slow * 1000:.1f} ms at level 6 (PIL's default, "
                f"{slow_size // 1024} KB)")
    report.line(f"a call that does nothing, gradio_client {median_ms(rows['client no-op']):6.1f} ms "
                "(its answer loop sleeps 50 ms when nothing has arrived; each file is a new connection)")
    report.save()


if __name__ == "__main__":
    main()

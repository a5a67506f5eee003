"""A slider move while a long picture runs, through a launched studio (`python -m studio launch`, model work
on its main thread, exactly as users get it), with `gradio_client` as two users would call it.

    python benchmarks/concurrency.py [--reps 3] [--steps 60] [--move-steps 6] [--no-browser]

User A: `/generate_image`, the embedded emoji model, 4 pictures 64², `--steps` steps. User B: `/explore_move`, a
GAN slider (dcgan-faces-64, SeFa) and then a slider on A's own model (a prompt-pair direction, `--move-steps`
steps, as the page's preview renders). Printed: B's latency alone and during A's job (median and 90th
percentile), A's job time alone and with B's moves beside it, and whether A's pictures were byte-equal; then,
in Chromium, the page's own GAN and Explore direction sliders alone and while A's jobs run back to back.
Results: benchmarks/results/concurrency-*.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report  # noqa: E402
from benchmarks.e2e import launch_studio  # noqa: E402


def pixels(files) -> list[bytes]:
    from PIL import Image

    return [np.asarray(Image.open(f).convert("RGB")).tobytes() for f in files]


def page_rows(url: str, a, job: dict, report: Report, stats) -> None:
    """In Chromium (the page's own live sliders): slider move → new picture, alone and while user A's 4-picture
    jobs run back to back."""
    from playwright.sync_api import sync_playwright

    from benchmarks.e2e_browser import CHROMIUM_ARGS, open_sliders, slider_times

    report.line("In the page (Chromium): direction slider moved → new picture shown")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        for tab, prefix, model in (("GAN", "gan", "dcgan-faces-64"), ("Explore", "explore", "emoji-ldm")):
            open_sliders(page, tab, prefix, model)
            alone = slider_times(page, prefix, 10)
            stop = threading.Event()

            def jobs():
                while not stop.is_set():
                    a.predict(**job)

            worker = threading.Thread(target=jobs)
            worker.start()
            time.sleep(1.0)  # a job is denoising
            during = slider_times(page, prefix, 10)
            stop.set()
            worker.join()
            report.line(f"{model} slider, alone            {stats(alone)}")
            report.line(f"{model} slider, during A's jobs  {stats(during)}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--move-steps", type=int, default=6)
    parser.add_argument("--no-browser", action="store_true", help="skip the rows measured in Chromium")
    args = parser.parse_args()
    from gradio_client import Client

    report = Report("concurrency")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = launch_studio(Path(tmp) / "outputs")
        try:
            a, b = Client(url, verbose=False), Client(url, verbose=False)
            job = dict(prompt="red heart", steps=args.steps, batch_size=4, seed=1, api_name="/generate_image")
            moves = {
                "GAN slider (dcgan-faces-64)": dict(model="dcgan-faces-64", origin="42", method="sefa", count=4,
                                                    api_name="/explore_move"),
                f"diffusion slider (emoji-ldm, {args.move_steps} steps)": dict(
                    origin="5: a smiling cat face", method="prompt-pair", positive="happy", negative="sad",
                    steps=args.move_steps, api_name="/explore_move"),
            }

            def slide(kind: str, amount: float) -> float:
                started = time.perf_counter()
                b.predict(amounts=f"{amount:.2f}", **moves[kind])
                return time.perf_counter() - started

            def picture() -> tuple[float, list[bytes]]:
                started = time.perf_counter()
                _, files = a.predict(**job)
                return time.perf_counter() - started, pixels(files)

            _, reference = picture()  # warm-up: loads the model
            same = True
            rows = []
            alone_jobs = []
            for kind in moves:
                slide(kind, 0.5)  # warm-up: loads the model, finds the directions
                alone_moves = [slide(kind, 0.1 * i) for i in range(10)]
                beside_jobs, during_moves = [], []
                for rep in range(args.reps):
                    seconds, made = picture()
                    alone_jobs.append(seconds)
                    same &= made == reference
                    done = threading.Event()
                    result: dict = {}

                    def run_job():
                        result["seconds"], result["pixels"] = picture()
                        done.set()

                    worker = threading.Thread(target=run_job)
                    worker.start()
                    time.sleep(0.3)  # the job is denoising
                    i = 0
                    while not done.is_set():
                        during_moves.append(slide(kind, 0.1 * (i % 20)))
                        i += 1
                        time.sleep(0.05)
                    worker.join()
                    beside_jobs.append(result["seconds"])
                    same &= result["pixels"] == reference
                rows.append((kind, alone_moves, during_moves, beside_jobs))

            def stats(values: list[float]) -> str:
                ordered = sorted(values)
                p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
                return f"median {statistics.median(values) * 1000:6.0f} ms · p90 {p90 * 1000:6.0f} ms · n={len(values)}"

            report.line(f"A: /generate_image, emoji-ldm, 4 pictures 64² × {args.steps} steps; "
                        "B: /explore_move (render, PNG and latent file, round trip)")
            report.line(f"A's job alone                       {stats(alone_jobs)}")
            for kind, alone_moves, during_moves, beside_jobs in rows:
                report.line(f"{kind}")
                report.line(f"  B's move alone                    {stats(alone_moves)}")
                report.line(f"  B's move during A's job           {stats(during_moves)}")
                report.line(f"  A's job with B's moves beside it  {stats(beside_jobs)} "
                            f"({statistics.median(beside_jobs) / statistics.median(alone_jobs):.2f}× alone)")
            report.line(f"A's pictures byte-equal in every run, with and without B's moves: {'yes' if same else 'NO'}")
            if not args.no_browser:
                page_rows(url, a, job, report, stats)
        finally:
            process.kill()
    report.save()


if __name__ == "__main__":
    main()

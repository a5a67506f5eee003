"""A slider move while a long picture runs, through a launched studio (`python -m studio launch`, model work
on its main thread, exactly as users get it), with `gradio_client` as two users would call it.

    python benchmarks/concurrency.py [--reps 3] [--steps 60] [--move-steps 8]

User A: `/generate_image`, the embedded emoji model, 4 pictures 64², `--steps` steps. User B: `/explore_move` on
the same model (a prompt-pair direction, `--move-steps` steps, as the page's live slider renders). Printed:
B's latency alone and during A's job (median and 90th percentile), A's job time alone and with B's moves
beside it, and whether A's pictures were byte-equal in both cases. Results: benchmarks/results/concurrency-*.md.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--move-steps", type=int, default=8)
    args = parser.parse_args()
    from gradio_client import Client

    report = Report("concurrency")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = launch_studio(Path(tmp) / "outputs")
        try:
            a, b = Client(url, verbose=False), Client(url, verbose=False)
            job = dict(prompt="red heart", steps=args.steps, batch_size=4, seed=1, api_name="/generate_image")
            move = dict(origin="5: a smiling cat face", method="prompt-pair", positive="happy", negative="sad",
                        steps=args.move_steps, api_name="/explore_move")

            def slide(amount: float) -> float:
                started = time.perf_counter()
                b.predict(amounts=f"{amount:.2f}", **move)
                return time.perf_counter() - started

            def picture() -> tuple[float, list[bytes]]:
                started = time.perf_counter()
                _, files = a.predict(**job)
                return time.perf_counter() - started, pixels(files)

            slide(0.5), picture()  # warm-up: loads the model, finds the direction
            alone_moves = [slide(0.1 * i) for i in range(10)]
            alone_jobs, beside_jobs, during_moves = [], [], []
            reference = None
            same = True
            for rep in range(args.reps):
                seconds, made = picture()
                alone_jobs.append(seconds)
                reference = reference or made
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
                    during_moves.append(slide(0.1 * (i % 20)))
                    i += 1
                    time.sleep(0.05)
                worker.join()
                beside_jobs.append(result["seconds"])
                same &= result["pixels"] == reference

            def stats(values: list[float]) -> str:
                ordered = sorted(values)
                p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
                return f"median {statistics.median(values) * 1000:6.0f} ms · p90 {p90 * 1000:6.0f} ms · n={len(values)}"

            report.line(f"emoji model, 64²; A: 4 pictures × {args.steps} steps (/generate_image); "
                        f"B: /explore_move, {args.move_steps} steps")
            report.line(f"slider move alone          {stats(alone_moves)}")
            report.line(f"slider move during A's job {stats(during_moves)}")
            report.line(f"A's job alone              {stats(alone_jobs)}")
            report.line(f"A's job with B's moves     {stats(beside_jobs)}")
            report.line(f"A's job slowdown           {statistics.median(beside_jobs) / statistics.median(alone_jobs):.2f}×")
            report.line(f"A's pictures byte-equal with and without B's moves: {'yes' if same else 'NO'}")
        finally:
            process.kill()
    report.save()


if __name__ == "__main__":
    main()

"""Where a served picture's time goes beyond the pipeline call: a breakdown, through a launched studio
(`python -m studio launch`) and `gradio_client`, as a user's script calls it.

    python benchmarks/overhead.py [--reps 8]

For `/generate_image` (emoji-ldm, 4 pictures 64², 20 steps) it prints the median of: the whole call; the
pipeline's own time (the `seconds` the server reports); the same call with the client fetching no files;
a queued request that does nothing (`/history_list`, limit 1) and an unqueued one (`/stop_text`), the floor of
any call, and the queued one over plain HTTP without gradio_client; and, in this process, keeping the four
pictures (PNG with parameters, History files and rows).
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
from benchmarks.e2e import launch_studio  # noqa: E402

JOB = dict(prompt="red heart", steps=20, batch_size=4, api_name="/generate_image")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def served(url: str, reps: int) -> dict[str, list[float]]:
    from gradio_client import Client

    fetching, bare = Client(url, verbose=False), Client(url, verbose=False, download_files=False)
    rows: dict[str, list[float]] = {"whole": [], "pipeline": [], "no file fetch": [], "queued no-op": [],
                                    "unqueued no-op": []}
    for rep in range(reps + 2):  # two warm-ups: the model loads, caches fill
        started = time.perf_counter()
        info, _ = fetching.predict(seed=rep, **JOB)
        whole = time.perf_counter() - started
        started = time.perf_counter()
        bare.predict(seed=rep, **JOB)
        no_fetch = time.perf_counter() - started
        started = time.perf_counter()
        fetching.predict(limit=1, api_name="/history_list")
        queued = time.perf_counter() - started
        started = time.perf_counter()
        fetching.predict(api_name="/stop_text")
        unqueued = time.perf_counter() - started
        raw = raw_call(url)
        if rep >= 2:
            for name, value in (("whole", whole), ("pipeline", info["seconds"]), ("no file fetch", no_fetch),
                                ("queued no-op", queued), ("unqueued no-op", unqueued), ("raw no-op", raw)):
                rows.setdefault(name, []).append(value)
    return rows


def raw_call(url: str) -> float:
    """The queued no-op through Gradio's HTTP API (POST, then its event stream) with plain httpx: the server's
    share of a call's floor, without gradio_client."""
    import httpx

    started = time.perf_counter()
    with httpx.Client(base_url=url) as http:
        event = http.post("gradio_api/call/history_list", json={"data": ["", "", 1]}).json()["event_id"]
        with http.stream("GET", f"gradio_api/call/history_list/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: complete"):
                    break
    return time.perf_counter() - started


def keeping(reps: int) -> list[float]:
    """Keeping four pictures in this process: PNG encoding with parameters, History files and rows."""
    from pipelines.image import ImageParams
    from studio.actions import keep_images
    from studio.config import Settings
    from studio.services import Services

    with tempfile.TemporaryDirectory() as tmp:
        services = Services.create(Settings(device="cpu", outputs=Path(tmp) / "outputs"))
        pipe = services.image_pipeline("emoji-ldm")
        params = ImageParams(prompt="red heart", steps=20, batch_size=4, seed=1, width=64, height=64)
        out = pipe(params)
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            keep_images(services, pipe, params, out, "local")
            times.append(time.perf_counter() - started)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    report = Report("overhead")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = launch_studio(Path(tmp) / "outputs")
        try:
            rows = served(url, args.reps)
        finally:
            process.kill()
    kept = keeping(args.reps)
    whole, pipeline = median_ms(rows["whole"]), median_ms(rows["pipeline"])
    overhead = statistics.median([w - p for w, p in zip(rows["whole"], rows["pipeline"])]) * 1000
    fetch = statistics.median([w - n for w, n in zip(rows["whole"], rows["no file fetch"])]) * 1000
    report.line(f"/generate_image, emoji-ldm, 4 pictures 64², 20 steps; median of {args.reps}, 2 CPU cores")
    report.line(f"whole call (client fetches the 4 PNGs)          {whole:8.1f} ms")
    report.line(f"  the pipeline call (server-reported)           {pipeline:8.1f} ms")
    report.line(f"  served overhead beyond it                     {overhead:8.1f} ms, made of about:")
    report.line(f"    client fetching the 4 files                 {fetch:8.1f} ms (whole call − the same without)")
    report.line(f"    keeping the 4 pictures (PNG + History)      {median_ms(kept):8.1f} ms (in-process)")
    report.line(f"    a queued call that does nothing             {median_ms(rows['queued no-op']):8.1f} ms")
    report.line(f"    an unqueued call that does nothing          {median_ms(rows['unqueued no-op']):8.1f} ms")
    report.line(f"    the queued no-op over plain HTTP (httpx)    {median_ms(rows['raw no-op']):8.1f} ms "
                "(a new connection each call)")
    report.line("(each row is measured on its own; medians of noisy parts do not add up exactly)")
    report.save()


if __name__ == "__main__":
    main()

"""Taking turns on one machine, through a launched studio (`python -m studio launch`, model work on its main
thread, exactly as users get it) with two owners and a guest logged in.

    python benchmarks/fairness.py [--reps 3] [--flood 60]

1. User A queues three big jobs (the embedded emoji model, 8 × 2 pictures 64² at 30 steps); user B then asks for
   one small picture (2 steps). Printed: B's wait beside "one of A's jobs + B's own time alone" (the target: at
   most 1.0) and beside A's whole queue (what first-in-first-out cost B).
2. A guest sends `--flood` real-time picture events at once, each from a made-up session. Printed: how many were
   drawn and refused, what they cost the guest's quota, another user's plain picture and the page's `/config`
   during the flood beside alone.
Results: benchmarks/results/fairness-*.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report  # noqa: E402
from benchmarks.e2e import launch_studio  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
A, B, GUEST = ("ann", "ann-pw"), ("bob", "bob-pw"), ("guest", "guest-pw")
BIG = dict(prompt="red heart", steps=30, width=64, height=64, batch_size=8, n_iter=2, seed=1)
SMALL = dict(prompt="blue star", steps=2, width=64, height=64, batch_size=1, n_iter=1, seed=2)


def launch(outputs: Path) -> tuple[subprocess.Popen, str]:
    return launch_studio(outputs, "--auth", ":".join(A), "--auth", ":".join(B), "--guest-auth", ":".join(GUEST),
                         "--guest-quota", "1000")


def timed(client, args: dict) -> float:
    started = time.perf_counter()
    client.predict(**args, api_name="/generate_image")
    return time.perf_counter() - started


def cookie(url: str, who) -> str:
    data = urllib.parse.urlencode({"username": who[0], "password": who[1]}).encode()
    with urllib.request.urlopen(url + "login", data=data, timeout=30) as response:
        return "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie"))


def config_seconds(url: str, owner_cookie: str) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(url + "config", headers={"Cookie": owner_cookie})
    urllib.request.urlopen(request, timeout=120).read()
    return time.perf_counter() - started


def turns(url: str, reps: int, report: Report) -> None:
    from gradio_client import Client

    a, b = Client(url, auth=A, verbose=False), Client(url, auth=B, verbose=False)
    timed(a, SMALL)  # the model loaded
    big = statistics.median(timed(a, BIG) for _ in range(reps))
    small = statistics.median(timed(b, SMALL) for _ in range(reps))
    waits = []
    for _ in range(reps):
        jobs = [a.submit(**BIG, api_name="/generate_image") for _ in range(3)]
        time.sleep(min(0.5, big / 4))
        waits.append(timed(b, SMALL))
        for job in jobs:
            job.result(timeout=1200)
    wait = statistics.median(waits)
    report.line("1. User A queues 3 big jobs, then user B asks for one small picture (medians)")
    report.line(f"   A's job alone {big:.2f} s · B's picture alone {small:.2f} s · B's wait behind A's queue "
                f"{wait:.2f} s")
    report.line(f"   B's wait / (one of A's jobs + B alone) = {wait / (big + small):.2f}  (target ≤ 1.0; "
                f"first-in-first-out: {(3 * big + small) / (big + small):.2f})")


def flood(url: str, size: int, report: Report) -> None:
    from gradio_client import Client

    guest_cookie, owner_cookie = cookie(url, GUEST), cookie(url, A)
    page = json.loads(urllib.request.urlopen(urllib.request.Request(url + "config",
                                                                    headers={"Cookie": guest_cookie})).read())
    live = next(e for e in page["dependencies"] if e.get("queue") is False and len(e["inputs"]) > 20)
    components = {c["id"]: c for c in page["components"]}
    given = {"Real-time": True, "Prompt": "a cat", "Seed": "7", "Batch size": 1}
    data = [given.get(components[i].get("props", {}).get("label"), components[i].get("props", {}).get("value"))
            for i in live["inputs"]]
    owner = Client(url, auth=B, verbose=False)
    picture = {**SMALL, "steps": 20, "batch_size": 4}
    alone = statistics.median(timed(owner, picture) for _ in range(3))
    config_alone = statistics.median(config_seconds(url, owner_cookie) for _ in range(3))

    def draw(_):
        body = {"data": data, "fn_index": live["id"], "session_hash": uuid.uuid4().hex[:11], "event_data": None,
                "trigger_id": None}
        request = urllib.request.Request(url + "gradio_api/run/predict", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", "Cookie": guest_cookie})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            return {"error": err.code}

    during = {}
    with ThreadPoolExecutor(size + 2) as pool:
        answers = [pool.submit(draw, n) for n in range(size)]
        time.sleep(0.05)
        side = [threading.Thread(target=lambda: during.__setitem__("owner", timed(owner, picture))),
                threading.Thread(target=lambda: during.__setitem__("config", config_seconds(url, owner_cookie)))]
        for thread in side:
            thread.start()
        answers = [a.result() for a in answers]
        for thread in side:
            thread.join()
    drawn = sum(1 for a in answers if a.get("data") and a["data"][0] is not None)
    refused = sum(1 for a in answers if a.get("error"))
    report.line(f"2. A guest sends {size} real-time pictures at once, each from a made-up session")
    report.line(f"   drawn {drawn} · refused {refused} (held at the door, or one at a time per session)")
    report.line(f"   another user's picture: alone {alone:.2f} s, during the flood {during['owner']:.2f} s "
                f"(ratio {during['owner'] / alone:.2f}; target ≤ 2)")
    report.line(f"   the page's /config: alone {config_alone * 1000:.0f} ms, during the flood "
                f"{during['config'] * 1000:.0f} ms (target < 1000 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--flood", type=int, default=60)
    args = parser.parse_args()
    report = Report("fairness", " ".join(sys.argv))
    with tempfile.TemporaryDirectory() as folder:
        process, url = launch(Path(folder) / "outputs")
        try:
            turns(url, args.reps, report)
            flood(url, args.flood, report)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(report.save())


if __name__ == "__main__":
    main()

"""Load: 20 concurrent gradio_client users mixing every tab against a real `studio launch` process on
loopback, bounded in count and time. Every request must complete or get the busy answer, none may fail
otherwise, and memory must not grow: RSS after all requests within 5% of RSS after the first 20. A
warm-up round first (each user once on each tab: 80 requests) loads the models and fills the caches.

STUDIO_LOAD_REQUESTS sets the total (default 200; `.ci/run` uses the default). A report with p50/p95
latency and throughput goes to test-artifacts/load-report.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
USERS = 20
REQUESTS = int(os.environ.get("STUDIO_LOAD_REQUESTS", "200"))
DEADLINE_S = 600


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def studio_process(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port
    from tests.test_gan import save_tiny_gan

    root = tmp_path_factory.mktemp("load")
    gan = save_tiny_gan(root)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio", "launch", "--port", str(port), "--outputs", str(root / "outputs"),
         "--cache-dir", str(root / "cache"), "--offline", "--device", "cpu"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    started = time.time()
    while time.time() - started < 120:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-3000:])
            time.sleep(0.3)
    yield url, proc, {"text": str(tiny_lm_dir), "image": str(tiny_sd_dir), "gan": str(gan)}
    proc.terminate()
    proc.wait(timeout=30)


def one_request(client, kind: str, n: int, models: dict):
    """One request of a kind; returns what came back (checked by the caller)."""
    if kind == "text":
        return client.submit(f"Story {n}:", "completion", "", models["text"], 8, 0.8, 0.9, 40, 1.1, "", n,
                             api_name="/generate_text")
    if kind == "image":
        return client.submit(prompt=f"a red circle {n}", model=models["image"], sampler_name="DDIM", steps=2,
                             cfg_scale=5.0, width=64, height=64, seed=n, api_name="/generate_image")
    if kind == "gan":
        return client.submit(models["gan"], n, 2, 1.0, api_name="/gan_sample")
    return client.submit("digit-vae-2d", None, 2, n, 6, "slerp", "linear", 8, api_name="/vae_interpolate")


def test_twenty_users_mixing_all_tabs(studio_process, artifacts_dir):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, proc, models = studio_process
    kinds = ("text", "image", "gan", "vae")
    lock = threading.Lock()
    done, latencies, busy, failures, rss = [0], {k: [] for k in kinds}, [0], [], {}
    started = time.perf_counter()

    clients = [Client(url, verbose=False) for _ in range(USERS)]

    def warm_up(u: int) -> None:
        """Each user once on every tab first: models load, caches and allocator pools fill; not measured."""
        for k, kind in enumerate(kinds):
            one_request(clients[u], kind, 10_000 + u * len(kinds) + k, models).result(timeout=DEADLINE_S)

    def user(u: int) -> None:
        client = clients[u]
        for i in range(u, REQUESTS, USERS):
            kind = kinds[i % len(kinds)]
            t0 = time.perf_counter()
            try:
                result = one_request(client, kind, i, models).result(timeout=DEADLINE_S)
                assert result is not None
                outcome = "ok"
            except AppError as exc:
                outcome = "busy" if "busy" in str(exc).lower() or "queue is full" in str(exc).lower() else exc
            except Exception as exc:
                outcome = "busy" if "queue is full" in str(exc).lower() else exc
            with lock:
                if outcome == "ok":
                    latencies[kind].append(time.perf_counter() - t0)
                elif outcome == "busy":
                    busy[0] += 1
                else:
                    failures.append(f"{kind} #{i}: {type(outcome).__name__}: {outcome}")
                done[0] += 1
                if done[0] % USERS == 0:
                    rss[done[0]] = rss_bytes(proc.pid)

    with ThreadPoolExecutor(USERS) as pool:
        list(pool.map(warm_up, range(USERS)))
        rss["after_warm_up"] = rss_bytes(proc.pid)
        started = time.perf_counter()
        list(pool.map(user, range(USERS)))
    wall = time.perf_counter() - started
    rss["after_all"] = rss_bytes(proc.pid)
    rss["after_20"] = rss[USERS]
    every = sorted(x for values in latencies.values() for x in values)
    report = {
        "users": USERS, "requests": REQUESTS, "completed": len(every), "busy": busy[0], "failures": failures,
        "wall_seconds": round(wall, 1), "throughput_per_s": round(len(every) / wall, 2),
        "p50_s": round(statistics.median(every), 3), "p95_s": round(every[int(0.95 * (len(every) - 1))], 3),
        "per_tab_p50_s": {k: round(statistics.median(v), 3) for k, v in latencies.items() if v},
        "rss_after_warm_up_mb": round(rss["after_warm_up"] / 2**20, 1),
        "rss_after_20_mb": round(rss["after_20"] / 2**20, 1), "rss_after_all_mb": round(rss["after_all"] / 2**20, 1),
        "rss_every_20_mb": [round(v / 2**20) for k, v in sorted((k, v) for k, v in rss.items() if isinstance(k, int))],
    }
    (artifacts_dir / "load-report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert not failures, failures[:5]
    assert len(every) + busy[0] == REQUESTS and len(every) >= REQUESTS * 0.9
    assert rss["after_all"] <= rss["after_20"] * 1.05, report
    assert proc.poll() is None  # still serving


def test_a_full_queue_answers_busy_at_once(tmp_path, tiny_lm_dir, tiny_sd_dir, free_port, artifacts_dir):
    """With room for 2 waiting jobs, 10 simultaneous long requests: the extra ones are told the studio is
    busy straight away (no hang), the rest complete."""
    from gradio_client import Client

    from tests.live import start

    port = free_port()
    app, _ = start(tmp_path / "outputs", tiny_lm_dir, port, tmp_path / "cache", tiny_sd_dir, queue_size=2)
    try:
        clients = [Client(f"http://127.0.0.1:{port}/", verbose=False) for _ in range(10)]
        outcomes = []

        def ask(client) -> None:
            t0 = time.perf_counter()
            try:
                client.predict("Once", "completion", "", "tiny-llama", 200, 0.8, 0.9, 40, 1.1, "", 1,
                               api_name="/generate_text")
                outcomes.append(("ok", time.perf_counter() - t0))
            except Exception as exc:
                outcomes.append((str(exc), time.perf_counter() - t0))

        with ThreadPoolExecutor(10) as pool:
            list(pool.map(ask, clients))
        busy = [seconds for outcome, seconds in outcomes if "queue is full" in outcome.lower()]
        ok = [seconds for outcome, seconds in outcomes if outcome == "ok"]
        (artifacts_dir / "busy-report.json").write_text(json.dumps({
            "simultaneous": 10, "queue_size": 2, "busy": len(busy), "completed": len(ok),
            "slowest_busy_answer_s": round(max(busy, default=0), 3), "slowest_completion_s": round(max(ok, default=0), 3)}))
        assert len(busy) + len(ok) == 10, outcomes
        assert busy and ok and max(busy) < 10, outcomes
    finally:
        app.close()

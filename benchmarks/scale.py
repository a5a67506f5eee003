"""The Ray Serve model tier, measured: the hop's cost per request, 1 vs 2 replicas, and many users at once.

    python benchmarks/scale.py [--reps 7] [--users 20] [--rounds 3] [--parts hop,text,gan,replicas,load]

- hop: the embedded emoji model (4 × 64², 20 steps and 1 × 64², 4 steps) through `RemoteImagePipeline`
  (UI tier → bridge process → Serve handle → replica) vs the same call in-process, alternating, in one
  run; the replica and the in-process call both use one torch thread, so the difference is the hop.
- text: the embedded chat model (llama.cpp, one thread both sides) streamed through `RemoteTextPipeline`
  vs in-process, alternating: time to the first piece, tokens per second, whole-answer time.
- gan: the embedded GAN (a 4×4 grid, 16 faces) through `RemoteLatentPipeline` vs in-process, one torch
  thread each, alternating; then 16 concurrent grid requests to one replica, with Serve's batching
  (`@serve.batch` joins their renders) vs the same 16 one after another in-process.
- replicas: images per second for 8 concurrent requests with 1 replica vs 2 (min = max).
- load: `--users` gradio_client users at once against a launched `studio launch --ray` (2 replicas) and
  against a plain `studio launch`, each user making `--rounds` requests that cycle through the tabs
  (emoji image, chat, GAN grid, VAE map); failures, History items written vs answers, p50/p95 latency
  and requests per second for both.
Results: benchmarks/results/scale-*.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def tier_services(replicas: int, outputs: Path, tier: str = "image"):
    from studio.config import RaySettings, Settings
    from studio.services import Services

    ray = RaySettings(address="local", min_replicas=replicas, max_replicas=replicas, max_ongoing_requests=1,
                      tiers=(tier,))
    return Services.create(replace(Settings(), outputs=outputs, device="cpu", ray=ray, text_threads=1))


def part_text(report, reps: int) -> None:
    from pipelines.text import TextParams
    from studio.config import Settings
    from studio.services import Services

    outputs = Path(tempfile.mkdtemp(prefix="scale-"))
    services = tier_services(1, outputs, "text")
    here = Services.create(replace(Settings(), outputs=outputs / "here", device="cpu", text_threads=1))
    try:
        remote, local = services.host.text_pipeline(""), here.text_pipeline("")
        report.line("")
        report.line(f"Text through Ray vs in-process, {remote.model.name} on {local.backend}, one thread each, "
                    f"128 new tokens, chat; median of {reps}")
        report.line(f"{'':14} {'first piece (ms)':>16} {'tok/s':>7} {'answer (s)':>10}")
        rows: dict = {"ray": [], "in-process": []}
        for rep in range(reps + 1):  # round 0 warms both and is dropped
            params = TextParams(prompt=f"Tell me a story about a fox, number {rep}.", mode="chat",
                                max_new_tokens=128, temperature=0.7, seed=rep)
            for label, pipe in (("ray", remote), ("in-process", local)):
                stats: dict = {}
                start = time.perf_counter()
                first = None
                for _ in pipe.stream(params, stats=stats):
                    first = first if first is not None else time.perf_counter() - start
                took = time.perf_counter() - start
                if rep:
                    rows[label].append((first, stats["new_tokens"] / took, took))
        medians = {label: [statistics.median(x[i] for x in values) for i in range(3)] for label, values in rows.items()}
        for label, (first, rate, took) in medians.items():
            report.line(f"{label:14} {1000 * first:16.1f} {rate:7.1f} {took:10.3f}")
        (rf, rr, rt), (lf, lr, lt) = medians["ray"], medians["in-process"]
        report.line(f"ray / in-process: tokens per second {rr / lr:.3f}; first piece {1000 * (rf - lf):+.1f} ms; "
                    f"answer {1000 * (rt - lt):+.1f} ms")
    finally:
        services.host.ray_bridge.close()


def alternate(remote, local, params_for, reps: int) -> tuple[float, float]:
    """Median seconds of `remote(params)` and `local(params)`, called in turn; round 0 warms both and is dropped."""
    ray_s, local_s = [], []
    for rep in range(reps + 1):
        params = params_for(rep)
        start = time.perf_counter()
        remote(params)
        r = time.perf_counter() - start
        start = time.perf_counter()
        local(params)
        if rep:
            local_s.append(time.perf_counter() - start)
            ray_s.append(r)
    return statistics.median(ray_s), statistics.median(local_s)


def part_hop(report, reps: int) -> None:
    import torch

    from pipelines.image import ImageParams

    torch.set_num_threads(1)  # as a replica with replica_cpus = 1
    services = tier_services(1, Path(tempfile.mkdtemp(prefix="scale-")))
    try:
        remote, local = services.host.image_pipeline("emoji-ldm"), services.host.local_image_pipeline("emoji-ldm")
        report.line(f"Ray hop vs in-process, emoji-ldm, one torch thread each; median of {reps}")
        report.line(f"{'request':34} {'ray (s)':>9} {'in-proc (s)':>11} {'overhead':>10} {'ratio':>7}")
        for label, params in (("4 × 64², 20 steps", ImageParams(prompt="red heart", steps=20, batch_size=4)),
                              ("1 × 64², 4 steps", ImageParams(prompt="red heart", steps=4))):
            r, t = alternate(remote, local, lambda rep, p=params: replace(p, seed=rep, width=64, height=64), reps)
            report.line(f"{label:34} {r:9.3f} {t:11.3f} {1000 * (r - t):8.1f}ms {t / r:7.3f}")
    finally:
        services.host.ray_bridge.close()


def part_gan(report, reps: int) -> None:
    import torch

    from pipelines.gan import GANParams
    from studio.config import RaySettings, Settings
    from studio.services import Services

    torch.set_num_threads(1)  # as a replica with 1 CPU
    outputs = Path(tempfile.mkdtemp(prefix="scale-"))
    ray = RaySettings(address="local", min_replicas=1, max_replicas=1, max_ongoing_requests=16, tiers=("latent",))
    services = Services.create(replace(Settings(), outputs=outputs, device="cpu", ray=ray))
    here = Services.create(replace(Settings(), outputs=outputs / "here", device="cpu"))
    try:
        remote, local = services.host.gan_pipeline(""), here.gan_pipeline("")
        report.line("")
        report.line(f"GAN through Ray vs in-process, {local.model.name}, 4×4 grid, one torch thread each; median of "
                    f"{max(reps, 15)}")
        r, t = alternate(remote, local, lambda rep: GANParams(seed=rep, grid=4), max(reps, 15))
        report.line(f"  ray {1000 * r:.1f} ms, in-process {1000 * t:.1f} ms: overhead {1000 * (r - t):+.1f} ms "
                    f"(in-process / ray {t / r:.3f})")
        for label, run in (("16 concurrent requests, ray (batched)", lambda ps: _concurrently(remote, ps)),
                           ("16 requests one by one, in-process", lambda ps: [local(p) for p in ps])):
            rates = []
            for rep in range(3):
                batch = [GANParams(seed=1000 * rep + 16 * i, grid=4) for i in range(16)]
                start = time.perf_counter()
                run(batch)
                rates.append(16 * 16 / (time.perf_counter() - start))
            report.line(f"  {label}: {statistics.median(rates):.0f} faces/s")
        (published,) = services.host.ray_bridge.status()["latent"]["published"]
        report.line(f"  the replica rendered {published['renders']} batches, the largest of "
                    f"{published['largest_batch']} faces")
    finally:
        services.host.ray_bridge.close()


def _concurrently(fn, inputs: list) -> None:
    threads = [threading.Thread(target=fn, args=(x,)) for x in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def part_replicas(report, reps: int) -> None:
    from pipelines.image import ImageParams

    report.line("")
    report.line("Throughput, 8 concurrent requests of 4 × 64² emoji, 20 steps (1 CPU per replica)")
    for replicas in (1, 2):
        services = tier_services(replicas, Path(tempfile.mkdtemp(prefix="scale-")))
        try:
            pipe = services.host.image_pipeline("emoji-ldm")
            params = ImageParams(prompt="red heart", steps=20, batch_size=4, width=64, height=64)
            for n in range(replicas * 2):  # warm every replica (each loads the model once)
                pipe(replace(params, seed=n))
            rates = []
            for rep in range(max(1, reps // 3)):
                threads = [threading.Thread(target=pipe, args=(replace(params, seed=100 * rep + i),))
                           for i in range(8)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                rates.append(8 * 4 / (time.perf_counter() - start))
            report.line(f"  {replicas} replica(s): {statistics.median(rates):6.2f} images/s")
        finally:
            services.host.ray_bridge.close()


def part_load(report, users: int, rounds: int) -> None:
    from gradio_client import Client

    from benchmarks.e2e import free_port

    report.line("")
    report.line(f"{users} gradio_client users at once, {rounds} requests each, cycling image / chat / GAN grid / "
                "VAE map")
    report.line(f"{'studio':28} {'failed':>6} {'answers':>7} {'History':>7} {'p50 (s)':>8} {'p95 (s)':>8} "
                f"{'req/s':>6}")
    calls = [
        ("image", lambda c, seed: c.predict(prompt="red heart", model="emoji-ldm", steps=20, width=64, height=64,
                                            batch_size=4, seed=seed, api_name="/generate_image")),
        ("text", lambda c, seed: c.predict("Say hello in five words.", "chat", "", "", 32, 0.0, 0.9, 50, 1.0, "",
                                           seed, "", api_name="/generate_text")),
        ("gan", lambda c, seed: c.predict("dcgan-faces-64", seed, 4, 1.0, api_name="/gan_sample")),
        ("vae", lambda c, seed: c.predict("digit-vae-2d", 12, 2.5, 0, 1, None, api_name="/vae_map")),
    ]
    for label, extra in (("studio launch", []), ("studio launch --ray", ["--ray"])):
        import subprocess
        import urllib.request

        outputs = Path(tempfile.mkdtemp(prefix="scale-load-"))
        config = outputs / "studio.toml"
        # 2 replicas per family — image 0.5 CPU each, text and GAN/VAE 0.25 — on this machine's 2 CPUs
        config.write_text("[ray]\nmin_replicas = 2\nmax_replicas = 2\nmax_ongoing_requests = 1\n"
                          "[ray.image]\nreplica_cpus = 0.5\n"
                          "[ray.text]\nreplica_cpus = 0.25\nmax_ongoing_requests = 2\n"
                          "[ray.latent]\nreplica_cpus = 0.25\nmax_ongoing_requests = 4\n")
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "studio", "launch", "--port", str(port), "--outputs",
                                    str(outputs), "--config", str(config), *extra],
                                   cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.time() + 300
            while True:
                try:
                    urllib.request.urlopen(url, timeout=1)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("the studio did not start") from None
                    time.sleep(0.5)
            warm = Client(url, verbose=False)
            for _, call in calls:
                call(warm, 0)  # models loaded before the clock starts
            if extra:
                for seed in range(4):  # and on both replicas
                    calls[0][1](warm, seed)
            before = len(warm.predict("image", "", 500, api_name="/history_list"))
            latencies, failures, answers = [], [], 0
            lock = threading.Lock()

            def user(index: int) -> None:
                nonlocal answers
                client = Client(url, verbose=False)
                for r in range(rounds):
                    kind, call = calls[(index + r) % len(calls)]
                    start = time.perf_counter()
                    try:
                        call(client, 1000 * index + r)
                        with lock:
                            latencies.append(time.perf_counter() - start)
                            answers += kind == "image"
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        with lock:
                            failures.append(f"{kind}: {exc}")

            threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.perf_counter() - start
            time.sleep(1.0)  # History writes are promised off the hot path
            kept = len(warm.predict("image", "", 500, api_name="/history_list")) - before
            q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [0] * 19
            report.line(f"{label:28} {len(failures):6d} {answers * 4:7d} {kept:7d} {statistics.median(latencies):8.2f} "
                        f"{q[18]:8.2f} {len(latencies) / took:6.2f}")
            for failure in failures[:5]:
                report.line(f"    failed: {failure[:200]}")
        finally:
            process.terminate()
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="hop,text,gan,replicas,load")
    args = parser.parse_args()
    from benchmarks.common import Report

    report = Report("scale")
    parts = set(args.parts.split(","))
    if "hop" in parts:
        part_hop(report, args.reps)
    if "text" in parts:
        part_text(report, args.reps)
    if "gan" in parts:
        part_gan(report, args.reps)
    if "replicas" in parts:
        part_replicas(report, args.reps)
    if "load" in parts:
        part_load(report, args.users, args.rounds)
    report.save()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

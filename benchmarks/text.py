"""Text speed: studio pipeline vs bare `model.generate`, cold start, first-token latency.

    python benchmarks/text.py [--model smollm2-135m-instruct] [--tokens 128] [--reps 3]

Both sides use the same loaded model, prompt, settings and seed, measured alternately in one run
(A, B, A, B, …) so machine load affects both alike; the table prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.device import pick_placement  # noqa: E402
from pipelines.registry import Registry  # noqa: E402
from pipelines.text import TextParams, TextPipeline, load_text_model  # noqa: E402
from studio.config import default_cache_dir  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def bare_generate(model, tokenizer, prompt: str, tokens: int, sample: bool, seed: int) -> tuple[int, float]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=sample,
                             temperature=0.7 if sample else None, top_p=0.9 if sample else None,
                             top_k=50 if sample else None, pad_token_id=tokenizer.pad_token_id)
    return out.shape[1] - ids.shape[1], time.perf_counter() - start


def cold_start(cache_dir: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "studio", "launch", "--port", str(port), "--cache-dir",
                             str(cache_dir), "--outputs", str(Path("/tmp") / f"bench-outputs-{os.getpid()}")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 300:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                return time.perf_counter() - start
            except OSError:
                time.sleep(0.2)
        return float("nan")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    cache_dir = default_cache_dir()
    registry = Registry(cache_dir)
    t0 = time.perf_counter()
    loaded = load_text_model(registry.resolve(registry.lookup(args.model, "text")), pick_placement("auto"))
    load_seconds = time.perf_counter() - t0
    pipe = TextPipeline(loaded)
    tok = loaded.tokenizer

    rows = []
    for label, sample in (("greedy", False), ("sampled (T=0.7, top-p 0.9, top-k 50)", True)):
        studio_rates, bare_rates, firsts = [], [], []
        for rep in range(args.reps + 1):  # the first round warms up and is dropped
            params = TextParams(prompt=PROMPT, max_new_tokens=args.tokens, temperature=0.7 if sample else 0,
                                top_p=0.9, top_k=50, repetition_penalty=1.0, seed=rep)
            out = pipe(params)
            n, seconds = bare_generate(loaded.model, tok, PROMPT, args.tokens, sample, rep)
            if rep:
                studio_rates.append(out.new_tokens / out.seconds)
                bare_rates.append(n / seconds)
                firsts.append(out.first_token_seconds)
        s, b = statistics.median(studio_rates), statistics.median(bare_rates)
        rows.append((label, s, b, s / b, statistics.median(firsts)))

    print(f"\nModel {args.model} on {loaded.placement.describe()}, {torch.get_num_threads()} threads, "
          f"{args.tokens} new tokens, median of {args.reps}")
    print(f"{'decoding':40} {'studio tok/s':>12} {'bare tok/s':>11} {'ratio':>6} {'first token s':>14}")
    for label, s, b, ratio, first in rows:
        print(f"{label:40} {s:12.1f} {b:11.1f} {ratio:6.3f} {first:14.3f}")
    print(f"\nModel load (fetched package → ready): {load_seconds:.1f} s")
    print(f"Cold start (`studio launch` → page served): {cold_start(cache_dir):.1f} s")


if __name__ == "__main__":
    main()

"""Text speed, measured side by side in one run on the same GGUF file and prompt:

    python benchmarks/text.py [--model smollm2-135m-instruct] [--tokens 128] [--reps 3] [--no-cold-start]

1. llama.cpp engine: studio `LlamaTextPipeline` vs bare `llama_cpp.Llama.create_chat_completion` (target
   ratio ≥ 0.95); both timers include the chat template and tokenizing. Then the engine as the studio runs
   it — out of process (`LlamaWorkerPipeline`) — against the same engine in-process: tokens/s (target
   ≥ 0.95) and first-token latency seen by the caller (target: within 10 ms).
2. transformers engine: studio `TextPipeline` vs bare `model.generate` on the same loaded model (≥ 0.95).
3. The transformers engine as a share of the memory-bandwidth bound: weight bytes read per token vs a
   measured copy bandwidth (target ≥ 50%), for the embedded model and for a random-weight model of
   SmolLM2-1.7B's shape (a 135M model is bound by per-operation overhead, not by memory).
4. First-token latency at chat turn 1 vs turn 5, with the prompt cache and without it.
5. CPU weight formats for the transformers engine: float32 / bfloat16 / int8 dynamic quantization —
   speed, perplexity on a fixed paragraph, and greedy agreement with float32.
6. Model load and cold start.

Runs alternate (A, B, A, B, …) so machine load affects both sides alike; tables print medians. Prompt
caches are cleared before each timed run so both sides evaluate the whole prompt. Each run's tables and
the machine's facts are written to benchmarks/results/text-*.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Report
from pipelines.device import physical_cores, pick_placement, text_placement
from pipelines.registry import Registry
from pipelines.text import TextParams, TextPipeline, load_text_model
from pipelines.text_llama import LlamaTextPipeline, gguf_path, llama_cpp_available, load_llama_model
from pipelines.text_worker import LlamaWorkerConfig, LlamaWorkerPipeline
from studio.config import default_cache_dir

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
REFERENCE = ("The lighthouse keeper climbed the winding stairs every evening to light the lamp. Ships passed "
             "safely through the narrow strait, and sailors told stories of the kind old man who never missed a "
             "night, even in the worst storms of winter.")
CHAT = ("Hi! Who are you?", "Name three colours.", "Which one is the warmest?", "Write two lines about it.",
        "Thanks! Summarise our chat in one sentence.")


def params(tokens: int, sample: bool, seed: int, **extra) -> TextParams:
    return TextParams(prompt=PROMPT, mode="chat", max_new_tokens=tokens, temperature=0.7 if sample else 0, top_p=0.9,
                      top_k=50, repetition_penalty=1.0, seed=seed, **extra)


def decode_rate(out) -> float:
    """Tokens per second after the first token (prompt evaluation excluded)."""
    return (out.new_tokens - 1) / (out.seconds - out.first_token_seconds)



# 1. llama.cpp
def bare_llama(llm, tokens: int, sample: bool, seed: int) -> tuple[int, float]:
    """The bare library's own chat call: its template, tokenizer and sampler, all inside the timer."""
    llm.reset()
    start = time.perf_counter()
    out = llm.create_chat_completion([{"role": "user", "content": PROMPT}], max_tokens=tokens,
                                     temperature=0.7 if sample else 0.0, top_p=0.9, top_k=50, min_p=0.0,
                                     repeat_penalty=1.0, seed=seed)
    return out["usage"]["completion_tokens"], time.perf_counter() - start


def timed(pipe, p: TextParams) -> tuple[int, float, float]:
    """(new tokens, wall seconds, seconds to the first piece) as the caller sees them: templating,
    tokenizing and — for the worker — the trip to the other process are inside the timer."""
    stats: dict = {}
    start = time.perf_counter()
    first = None
    for _ in pipe.stream(p, stats=stats):
        first = first if first is not None else time.perf_counter() - start
    return stats["new_tokens"], time.perf_counter() - start, first or 0.0


def bench_worker(resolved, args) -> list[tuple]:
    """The engine as the studio runs it (a worker process) vs the same engine in this process."""
    threads = physical_cores()
    local = LlamaTextPipeline(load_llama_model(resolved, pick_placement("cpu"), threads=threads, n_ctx=2048))
    worker = LlamaWorkerPipeline(LlamaWorkerConfig(str(gguf_path(resolved)), resolved.spec.name, threads=threads,
                                                   n_ctx=2048, prompt_cache_entries=0), pick_placement("cpu"))
    rows = []
    try:
        for label, sample in (("greedy", False), ("sampled", True)):
            rates = {"in": [], "out": []}
            firsts = {"in": [], "out": []}
            for rep in range(args.reps + 1):
                local.prompt_cache.clear()
                local.model.llm.n_tokens = 0
                worker.clear_prompt_cache()  # both sides evaluate the whole prompt
                for side, pipe in (("in", local), ("out", worker)):
                    n, seconds, first = timed(pipe, params(args.tokens, sample, rep))
                    if rep:
                        rates[side].append(n / seconds)
                        firsts[side].append(first)
            rows.append((label, statistics.median(rates["out"]), statistics.median(rates["in"]),
                         statistics.median(firsts["out"]), statistics.median(firsts["in"])))
    finally:
        worker.close()
    return rows


def bench_llama(resolved, args) -> tuple[list[tuple], float]:
    from llama_cpp import Llama

    threads = physical_cores()
    pipe = LlamaTextPipeline(load_llama_model(resolved, pick_placement("cpu"), threads=threads, n_ctx=2048))
    bare = Llama(model_path=str(gguf_path(resolved)), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                 verbose=False)
    rows, decode_rates = [], []
    for label, sample in (("greedy", False), ("sampled (T=0.7, top-p 0.9, top-k 50)", True)):
        ours, theirs, counts = [], [], []
        for rep in range(args.reps + 1):  # the first round warms up and is dropped
            pipe.prompt_cache.clear()
            pipe.model.llm.n_tokens = 0
            stats: dict = {}
            start = time.perf_counter()
            for _ in pipe.stream(params(args.tokens, sample, rep), stats=stats):
                pass
            wall = time.perf_counter() - start
            n, seconds = bare_llama(bare, args.tokens, sample, rep)
            if rep:
                ours.append(stats["new_tokens"] / wall)
                theirs.append(n / seconds)
                counts.append((stats["new_tokens"], n))
                decode_rates.append((stats["new_tokens"] - 1) / (stats["seconds"] - stats["first_token_seconds"]))
        rows.append((f"llama.cpp {label}", statistics.median(ours), statistics.median(theirs), counts[-1]))
    return rows, statistics.median(decode_rates)


# 2. transformers
def bare_generate(model, tokenizer, tokens: int, sample: bool, seed: int) -> tuple[int, float]:
    """The bare library: chat template, tokenizer and generate(), all inside the timer."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=sample,
                             temperature=0.7 if sample else None, top_p=0.9 if sample else None,
                             top_k=50 if sample else None, pad_token_id=tokenizer.pad_token_id)
    return out.shape[1] - ids.shape[1], time.perf_counter() - start


def bench_transformers(pipe: TextPipeline, args) -> tuple[list[tuple], float]:
    loaded = pipe.model
    rows, decode_rates = [], []
    for label, sample in (("greedy", False), ("sampled (T=0.7, top-p 0.9, top-k 50)", True)):
        ours, theirs, counts = [], [], []
        for rep in range(args.reps + 1):
            pipe.prompt_cache.clear()
            start = time.perf_counter()
            out = pipe(params(args.tokens, sample, rep))
            wall = time.perf_counter() - start
            n, seconds = bare_generate(loaded.model, loaded.tokenizer, args.tokens, sample, rep)
            if rep:
                ours.append(out.new_tokens / wall)
                theirs.append(n / seconds)
                counts.append((out.new_tokens, n))
                decode_rates.append(decode_rate(out))
        rows.append((f"transformers {label}", statistics.median(ours), statistics.median(theirs), counts[-1]))
    return rows, statistics.median(decode_rates)


# 3. memory bandwidth
def copy_bandwidth(device: torch.device, megabytes: int = 512, reps: int = 5) -> float:
    """Bytes moved per second (read + write) by a large tensor copy on `device` (the memory the model's
    weights are read from), best of `reps`."""
    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def synthetic_llama(size: str):
    """A random-weight Llama of a real model's shape (weights' values do not change the speed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = {"1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                           num_key_value_heads=32)}
    config = LlamaConfig(vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True, **shapes[size])
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.02, generator=generator)
    return model.eval()


def synthetic_decode_rate(model, tokens: int = 16) -> float:
    ids = torch.randint(0, 49152, (1, 32), generator=torch.Generator().manual_seed(0))
    rates = []
    for _ in range(2):
        with torch.inference_mode():
            start = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
            prefill = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens + 1,
                           min_new_tokens=tokens + 1, do_sample=False, pad_token_id=0)
            rates.append(tokens / (time.perf_counter() - start - prefill))
    return max(rates)


# 4. chat turns
def chat_latency(pipe, cold_pipe) -> list[tuple[int, int, float, float]]:
    """Per turn: prompt tokens, evaluated tokens, first-token s with the cache, first-token s without."""
    history, rows = [], []
    for message in CHAT:
        p = TextParams(prompt=message, mode="chat", history=tuple(history), max_new_tokens=32, temperature=0)
        if hasattr(cold_pipe.model, "llm"):
            cold_pipe.model.llm.n_tokens = 0
        cold = cold_pipe(p)
        warm = pipe(p)
        rows.append((warm.prompt_tokens, warm.prompt_tokens_evaluated, warm.first_token_seconds,
                     cold.first_token_seconds))
        history += [("user", message), ("assistant", warm.text)]
    return rows


# 5. CPU weight formats
def weight_formats(model, tokenizer, tokens: int = 64) -> list[tuple[str, float, float, float]]:
    from torch.ao.quantization import quantize_dynamic

    ids = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                                  add_generation_prompt=True),
                    return_tensors="pt", add_special_tokens=False).input_ids
    reference = tokenizer(REFERENCE, return_tensors="pt").input_ids

    def run(candidate) -> tuple[float, float, list[int]]:
        with torch.inference_mode():
            perplexity = candidate(reference, labels=reference).loss.float().exp().item()
            candidate.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            start = time.perf_counter()
            out = candidate.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                     min_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            rate = tokens / (time.perf_counter() - start)
        return rate, perplexity, out[0, ids.shape[1]:].tolist()

    fp32 = copy.deepcopy(model).to(torch.float32)
    base_rate, base_ppl, base = run(fp32)
    rows = [("float32", base_rate, base_ppl, 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = (("bfloat16", copy.deepcopy(fp32).to(torch.bfloat16)),
                      ("int8 dynamic (Linear layers)", quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear},
                                                                         dtype=torch.qint8)))
        for label, candidate in candidates:
            rate, ppl, text = run(candidate)
            rows.append((label, rate, ppl, sum(a == b for a, b in zip(text, base)) / tokens))
    return rows


# 6. cold start
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
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-cold-start", action="store_true")
    parser.add_argument("--no-large", action="store_true", help="skip the synthetic 1.7B-shape bandwidth row")
    args = parser.parse_args()
    cache_dir = default_cache_dir()
    registry = Registry(cache_dir)
    resolved = registry.resolve(registry.lookup(args.model, "text"))
    placement = text_placement(pick_placement("auto"))
    t0 = time.perf_counter()
    loaded = load_text_model(resolved, placement)
    load_seconds = time.perf_counter() - t0
    pipe = TextPipeline(loaded)

    report = Report("text")
    print = report.line
    rows, llama_decode = bench_llama(resolved, args) if llama_cpp_available() else ([], 0.0)
    transformers_rows, decode = bench_transformers(pipe, args)
    rows += transformers_rows
    print(f"\nModel {args.model}; transformers on {placement.describe()}; {physical_cores()} threads; "
          f"{args.tokens} new tokens; median of {args.reps}; both timers include chat template + tokenizing")
    print(f"{'engine / decoding':48} {'studio tok/s':>12} {'bare tok/s':>11} {'ratio':>6} {'tokens (ours, bare)':>20}")
    for label, ours, theirs, counts in rows:
        print(f"{label:48} {ours:12.1f} {theirs:11.1f} {ours / theirs:6.3f} {str(counts):>20}")

    if llama_cpp_available():
        print("\nllama.cpp out of process (the studio's worker) vs in this process, as the caller sees it")
        print(f"{'decoding':10} {'worker tok/s':>12} {'in-proc tok/s':>13} {'ratio':>6} {'first (worker)':>15} "
              f"{'first (in-proc)':>15} {'Δ first':>8}")
        for label, out_rate, in_rate, out_first, in_first in bench_worker(resolved, args):
            print(f"{label:10} {out_rate:12.1f} {in_rate:13.1f} {out_rate / in_rate:6.3f} {out_first * 1000:13.1f}ms "
                  f"{in_first * 1000:13.1f}ms {(out_first - in_first) * 1000:6.1f}ms")

    bandwidth = copy_bandwidth(placement.device)
    print(f"\nMemory-bandwidth bound: copy bandwidth of {placement.device.type} memory {bandwidth / 1e9:.1f} GB/s "
          "(read + write, STREAM-style); a token must read every weight once")
    print(f"{'model (transformers engine, decode only)':48} {'MB/token':>9} {'bound tok/s':>11} {'tok/s':>7} {'share':>6}")
    weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    rows = [(f"{args.model} ({placement.describe()})", weight_bytes, decode)]
    if not args.no_large and placement.device.type == "cpu":
        large = synthetic_llama("1.7b")
        rows.append(("SmolLM2-1.7B shape, random weights (cpu, bf16)",
                     sum(p.numel() * p.element_size() for p in large.parameters()), synthetic_decode_rate(large)))
        del large
    cpu_bandwidth = bandwidth if placement.device.type == "cpu" else copy_bandwidth(torch.device("cpu"))
    for label, size, rate in rows:
        print(f"{label:48} {size / 1e6:9.0f} {bandwidth / size:11.1f} {rate:7.1f} {rate * size / bandwidth:6.0%}")
    if llama_cpp_available():  # llama.cpp here reads its weights from CPU memory
        size = gguf_path(resolved).stat().st_size
        print(f"{'  llama.cpp engine (CPU memory), ' + gguf_path(resolved).name:48} {size / 1e6:9.0f} "
              f"{cpu_bandwidth / size:11.1f} {llama_decode:7.1f} {llama_decode * size / cpu_bandwidth:6.0%}")

    print("\nChat first-token latency (greedy, 32 new tokens per turn): with prompt cache vs without")
    print(f"{'engine':14} {'turn':>4} {'prompt tok':>10} {'evaluated':>9} {'first s (cache)':>15} {'first s (none)':>14}")
    engines = [("transformers", pipe, TextPipeline(loaded, prompt_cache_entries=0))]
    if llama_cpp_available():
        cpu = pick_placement("cpu")
        engines.insert(0, ("llama.cpp",
                           LlamaTextPipeline(load_llama_model(resolved, cpu, threads=physical_cores(), n_ctx=2048)),
                           LlamaTextPipeline(load_llama_model(resolved, cpu, threads=physical_cores(), n_ctx=2048),
                                             prompt_cache_entries=0)))
    for name, warm, cold in engines:
        warm.prompt_cache.clear()
        for turn, (prompt_tokens, evaluated, first, first_cold) in enumerate(chat_latency(warm, cold), 1):
            print(f"{name:14} {turn:4} {prompt_tokens:10} {evaluated:9} {first:15.3f} {first_cold:14.3f}")

    if placement.device.type == "cpu":
        print("\nCPU weight formats (transformers engine; greedy 64 tokens; perplexity on a fixed paragraph)")
        print(f"{'format':30} {'tok/s':>7} {'perplexity':>10} {'greedy tokens = float32':>24}")
        for label, rate, ppl, agree in weight_formats(loaded.model, loaded.tokenizer):
            print(f"{label:30} {rate:7.1f} {ppl:10.2f} {agree:24.0%}")

    print(f"\nModel load (fetched package → ready, transformers): {load_seconds:.1f} s")
    if not args.no_cold_start:
        print(f"Cold start (`studio launch` → page served): {cold_start(cache_dir):.1f} s")
    report.save()


if __name__ == "__main__":
    main()

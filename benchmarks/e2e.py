"""End to end: what a user of the served studio gets, beside the bare libraries, in one run.

    python benchmarks/e2e.py [--reps 5] [--rows text,image,gan,vae,trivial,compat,browser]

A studio is launched as its own process (`python -m studio launch`) and called through
`gradio_client`, exactly as a user's script would; the bare libraries run in a second process of
their own (`python benchmarks/e2e.py --bare`), warm, answering one request at a time over a pipe.
Requests alternate (studio, bare, studio, bare, …) so machine load hits both alike; medians print.

Rows:
- text: chat, greedy, 256 new tokens — `/v1/chat/completions` (whole, and streamed as server-sent events) and
  `/generate_text` (Gradio's HTTP API, as a browser calls it) vs `llama_cpp.Llama.create_chat_completion` (same
  GGUF file, threads, context and prompt; all include templating), tokens per second by each engine's own count;
  every side once per round, in turn.
- image: 4 emoji images 64², 20 steps, DPM++ 2M — `/generate_image` through gradio_client and through Gradio's
  HTTP API as a browser calls it (HttpClient: one connection, one session, no polling), each fetching the
  PNGs, vs a diffusers pipeline call.
- gan: 1×1, 4×4, 8×8 grids — `/gan_sample` vs one generator batch (the same weights).
- vae: a 12×12 map of the 2-D digit VAE — `/vae_map` vs one batch of 144 decodes.
- trivial: `/history_list`, the floor of a round trip.
- compat: `/sdapi/v1/txt2img` (the image row's pictures, base64 PNGs) over plain HTTP vs the same bare pipeline
  call (the compat text routes are in the text row).
- browser (needs Chromium): event → new picture in the page, for real-time mode (a word typed), a GAN direction
  slider, a VAE slider, a VAE map cell click, and the diffusion preview scrub — measured in Chromium with
  Playwright.
Results: benchmarks/results/e2e-*.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
CHAT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


# -- the bare side, in its own process ------------------------------------------------------------

def bare_server(threads: int = 0) -> None:
    """Loads the bare libraries once, then answers JSON lines: {"row": …, "args": …} → {"seconds": …, …}.
    `threads`: llama.cpp's threads (0 = the physical cores, as the studio's default)."""
    import torch

    from pipelines.device import physical_cores
    from pipelines.registry import Registry
    from pipelines.text_llama import gguf_path, llama_lib_dir, load_cpu_backend
    from studio.config import default_cache_dir

    registry = Registry(default_cache_dir())
    if threads:  # as the studio does with --threads: torch's threads too (studio/host.py)
        torch.set_num_threads(threads)
    threads = threads or physical_cores()
    cache: dict = {}

    def llama():
        if "llama" not in cache:
            load_cpu_backend(llama_lib_dir())  # a dynamic-backend build needs its CPU variant loaded
            from llama_cpp import Llama

            path = gguf_path(registry.resolve(registry.lookup("smollm2-135m-instruct", "text")))
            cache["llama"] = Llama(model_path=str(path), n_ctx=5120, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)
        return cache["llama"]

    def diffusion(name: str):
        if name not in cache:
            from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

            location = registry.resolve(registry.lookup(name, "image")).path
            pipe = DiffusionPipeline.from_pretrained(location, safety_checker=None, requires_safety_checker=False)
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            cache[name] = pipe
        return cache[name]

    def gan():
        if "gan" not in cache:
            from pipelines.device import pick_placement
            from pipelines.gan import load_gan

            cache["gan"] = load_gan(registry.resolve(registry.lookup("dcgan-faces-64", "gan")), pick_placement("cpu")).generator
        return cache["gan"]

    def vae():
        if "vae" not in cache:
            from pipelines.device import pick_placement
            from pipelines.vae import load_vae

            cache["vae"] = load_vae(registry.resolve(registry.lookup("digit-vae-2d", "vae")), pick_placement("cpu")).net
        return cache["vae"]

    for line in sys.stdin:
        request = json.loads(line)
        row, args = request["row"], request.get("args", {})
        start = time.perf_counter()
        result: dict = {}
        with torch.inference_mode():
            if row == "text":
                llm = llama()
                llm.reset()
                out = llm.create_chat_completion([{"role": "user", "content": CHAT}], max_tokens=args["tokens"],
                                                 temperature=0.0, top_p=0.9, top_k=50, min_p=0.0,
                                                 repeat_penalty=1.0, seed=args["seed"])
                result["tokens"] = out["usage"]["completion_tokens"]
            elif row == "image":
                pipe = diffusion(args["model"])
                images = pipe([args["prompt"]] * args["batch"], num_inference_steps=args["steps"],
                              width=args["size"], height=args["size"], guidance_scale=args["guidance"],
                              generator=torch.Generator().manual_seed(args["seed"]), output_type="pil").images
                result["images"] = len(images)
            elif row == "gan":
                z = torch.randn(args["n"], 100, generator=torch.Generator().manual_seed(args["seed"]))
                images = gan()(z).clamp(-1, 1).add(1).mul(127.5).byte().permute(0, 2, 3, 1).numpy()
                result["images"] = len(images)
            elif row == "vae":
                ticks = torch.linspace(-2.5, 2.5, args["grid"])
                points = torch.stack([torch.stack([x, y]) for y in ticks.flip(0) for x in ticks])
                images = vae().decode(points)
                result["images"] = int(images.shape[0])
        result["seconds"] = time.perf_counter() - start
        print(json.dumps(result), flush=True)


class Bare:
    def __init__(self, threads: int = 0) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--bare", "--threads", str(threads)],
                                        stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def __call__(self, row: str, **args) -> dict:
        self.process.stdin.write(json.dumps({"row": row, "args": args}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


# -- the studio side --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_studio(outputs: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`python -m studio launch` with `flags` (logins…), once its page answers (a login page counts)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "studio", "launch", "--port", str(port), "--outputs",
                                str(outputs), *flags], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    import urllib.error
    import urllib.request

    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return process, url
        except urllib.error.HTTPError:
            return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the studio did not start within 5 minutes")


class HttpClient:
    """Gradio's HTTP API the way a browser uses it: one kept-alive connection, one session (`session_hash`: a
    call without one is a new session, which Gradio sets up afresh for every component of the app — ~60–90 ms
    for the studio's page), the answer pushed as server-sent events as soon as it is ready (no polling), then the
    files fetched on the same connection, one by one (`fetchers` > 1: side by side on that many connections, as
    a browser does; on 2 cores that is no faster). gradio_client keeps a session too, but checks for the answer
    every 50 ms and fetches each file on a new connection."""

    def __init__(self, url: str, fetchers: int = 1) -> None:
        import uuid
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        self.http = httpx.Client(base_url=url, timeout=600)
        self.session = uuid.uuid4().hex
        self.fetchers = ThreadPoolExecutor(fetchers) if fetchers > 1 else None

    def inputs(self, api_name: str, **given) -> list:
        """An endpoint's inputs in order (Gradio's HTTP API takes them by position), from the server's own API
        description: the given values by name, every other one its default."""
        if not hasattr(self, "_info"):
            self._info = self.http.get("gradio_api/info").json()["named_endpoints"]
        parameters = self._info[f"/{api_name}"]["parameters"]
        unknown = set(given) - {p["parameter_name"] for p in parameters}
        if unknown:
            raise ValueError(f"/{api_name} has no input named {', '.join(sorted(unknown))}")
        return [given.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]

    def predict(self, api_name: str, data: list | dict):
        """The answer (one value, as gradio_client gives it, or a list of several), with every file's bytes
        fetched in place of its FileData. `data`: the inputs in order, or by name."""
        if isinstance(data, dict):
            data = self.inputs(api_name, **data)
        started = time.perf_counter()
        event = self.http.post(f"gradio_api/call/{api_name}",
                               json={"data": data, "session_hash": self.session}).json()["event_id"]
        kind, payload = "", None
        with self.http.stream("GET", f"gradio_api/call/{api_name}/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = json.loads(line[5:])
                    break
        if kind != "complete":
            raise RuntimeError(f"{api_name} failed: {payload}")
        answered = time.perf_counter()
        self.file_urls = []  # the last answer's files, in order
        values = [self._fetched(value, self.file_urls) for value in payload]
        fetched = self.fetch(self.file_urls)
        values = [self._filled(value, iter(fetched)) for value in values] if fetched else values
        self.answer_s, self.files_s = answered - started, time.perf_counter() - answered  # the last call's parts
        return values[0] if len(values) == 1 else values

    def fetch(self, urls: list[str]) -> list[bytes]:
        """Files' bytes, side by side (or one by one with one fetcher)."""
        def get(url: str) -> bytes:
            return self.http.get(url).content
        return list(self.fetchers.map(get, urls)) if self.fetchers else [get(url) for url in urls]

    def _fetched(self, value, urls: list[str]):
        """`value` with each FileData replaced by a placeholder, its URL (or, for an API function's answer, its
        path, as gradio_client does) added to `urls`."""
        if isinstance(value, list):
            return [self._fetched(v, urls) for v in value]
        if isinstance(value, dict) and value.get("meta", {}).get("_type") == "gradio.FileData":
            from urllib.parse import quote

            urls.append(value.get("url") or f"gradio_api/file={quote(value['path'])}")
            return _FILE
        return value

    def _filled(self, value, fetched):
        if isinstance(value, list):
            return [self._filled(v, fetched) for v in value]
        return next(fetched) if value is _FILE else value

    def close(self) -> None:
        self.http.close()
        if self.fetchers:
            self.fetchers.shutdown()


_FILE = object()  # where a fetched file's bytes go


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def side_by_side(reps: int, studio_fn, bare_fn) -> tuple[list, list]:
    studio, bare = [], []
    for rep in range(reps + 1):  # round 0 warms both up (loads models) and is dropped
        s = studio_fn(rep)
        b = bare_fn(rep)
        if rep:
            studio.append(s)
            bare.append(b)
    return studio, bare


TEXT_TOKENS = 256  # greedy; the embedded chat model writes past 256 on CHAT, so every side counts the same


def text_sides(url: str, bare, tokens: int) -> dict:
    """Each way of asking for the same greedy chat, as (tokens by the engine's own count, wall seconds)."""
    import httpx

    http = httpx.Client(base_url=url.rstrip("/"), timeout=600)
    gradio = HttpClient(url)
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": CHAT}],
            "max_tokens": tokens, "temperature": 0, "top_p": 0.9, "top_k": 50}

    def bare_side(rep):
        out = bare("text", tokens=tokens, seed=rep)
        return out["tokens"], out["seconds"]

    def chat(rep):
        seconds, answer = timed(lambda: http.post("/v1/chat/completions", json={**body, "seed": rep}).json())
        return answer["usage"]["completion_tokens"], seconds

    def chat_streamed(rep):
        def read():
            usage = None
            with http.stream("POST", "/v1/chat/completions", json={
                    **body, "seed": rep, "stream": True, "stream_options": {"include_usage": True}}) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: {"):
                        usage = json.loads(line[6:]).get("usage") or usage
            return usage
        seconds, usage = timed(read)
        return usage["completion_tokens"], seconds

    def generate_text(rep):
        seconds, (_, status) = timed(lambda: gradio.predict("generate_text", {
            "prompt": CHAT, "mode": "chat", "model": "smollm2-135m-instruct", "max_new_tokens": tokens,
            "temperature": 0.0, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.0, "seed": rep}))
        return json.loads(status)["new_tokens"], seconds

    return {"bare llama_cpp.Llama": bare_side, "/v1/chat/completions": chat,
            "/v1/chat/completions, streamed": chat_streamed, "/generate_text (Gradio HTTP API, SSE)": generate_text}


def interleaved(reps: int, sides: dict) -> tuple[dict, dict]:
    """Every side once per round, the order turning each round (so no side always follows another), round 0
    (loads, first calls) kept apart; returns ({side: [warm results]}, {side: round-0 result})."""
    names = list(sides)
    warm: dict[str, list] = {name: [] for name in names}
    first: dict = {}
    for rep in range(reps + 1):
        turn = names[rep % len(names):] + names[:rep % len(names)]
        for name in turn:
            result = sides[name](rep)
            (warm[name].append(result) if rep else first.__setitem__(name, result))
    return warm, first


def rows_text(url: str, bare, reps: int, report, tokens: int = TEXT_TOKENS) -> None:
    """tokens/s of the same greedy chat through `/v1/chat/completions` (whole and streamed) and `/generate_text`
    vs the bare engine, interleaved; per-token rates from each engine's own count."""
    warm, first = interleaved(reps, text_sides(url, bare, tokens))
    bare_name = "bare llama_cpp.Llama"
    rates = {name: [n / s for n, s in results] for name, results in warm.items()}
    b = statistics.median(rates[bare_name])
    report.line(f"chat, greedy, {tokens} new tokens: tokens/s, median of {reps} warm rounds; each round calls every "
                f"side once, in turn, the order turning round by round (the machine is shared and noisy: a busy "
                f"moment hits the bare engine and the studio alike); ratio = studio / bare of the medians, and "
                f"the median of each round's own ratio")
    report.line(f"{'':58} {'studio':>10} {'bare':>10} {'ratio':>7} {'rounds':>7}")
    for name, side in rates.items():
        if name == bare_name:
            continue
        made = ",".join(map(str, sorted({n for n, _ in warm[name]})))
        s = statistics.median(side)
        per_round = statistics.median(x / y for x, y in zip(side, rates[bare_name]))
        report.line(f"{f'  {name} ({made} tok)':58} {s:10.1f} {b:10.1f} {s / b:7.3f} {per_round:7.3f}")
    report.line("  round 0, not in the medians — each side's first call, seconds (the first studio call loads the "
                "model): " + ", ".join(f"{name} {s:.2f}" for name, (_, s) in first.items()))


def rows_image(client, bare, reps: int, report, url: str, model: str = "emoji-ldm", size: int = 64,
               steps: int = 20, batch: int = 4) -> None:
    """The same pictures through gradio_client, through the HTTP API as a browser calls it (HttpClient), and
    bare, alternating; each studio side fetches every PNG."""
    args = dict(prompt="red heart", model=model, sampler_name="DPM++ 2M", steps=steps, cfg_scale=7.0, width=size,
                height=size, batch_size=batch)
    http = HttpClient(url)
    pipeline: list[float] = []  # the studio's own pipeline call in each HTTP request (what the server reports)

    def over_http(rep):
        seconds, (info, _) = timed(lambda: http.predict("generate_image", {**args, "seed": rep}))
        pipeline.append(info["seconds"])
        return seconds

    sides = {
        "gradio_client": lambda rep: timed(lambda: client.predict(**args, seed=rep, api_name="/generate_image"))[0],
        "HTTP API": over_http,
        "bare": lambda rep: bare("image", model=model, prompt="red heart", batch=batch, steps=steps, size=size,
                                 guidance=7.0, seed=rep)["seconds"],
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(reps + 1):  # round 0 warms every side up (loads models) and is dropped
        for name, side in sides.items():
            seconds = side(rep)
            if rep:
                times[name].append(seconds)
    http.close()
    b = statistics.median(times["bare"])
    for name in ("gradio_client", "HTTP API"):
        s = statistics.median(times[name])
        report.line(f"{f'{model}, {batch} × {size}², {steps} steps, {name} (s)':44} {s:10.2f} {b:10.2f} {b / s:7.3f}")
    p = statistics.median(pipeline[1:])
    served = statistics.median([w - q for w, q in zip(times["HTTP API"], pipeline[1:])])
    report.line(f"{'  of which the studio’s pipeline call (s)':44} {p:10.2f} {b:10.2f} {b / p:7.3f}")
    report.line(f"{'  of which served overhead, HTTP (ms)':44} {served * 1000:10.1f}")


def rows_compat(url: str, bare, reps: int, report, model: str = "emoji-ldm") -> None:
    """`/sdapi/v1/txt2img` (the image row's pictures, base64 PNGs over plain HTTP, one kept-alive connection)
    beside the same bare pipeline call, alternating. (The compat text routes are in the text row.)"""
    import httpx

    http = httpx.Client(base_url=url.rstrip("/"), timeout=600)
    body = {"prompt": "red heart", "sampler_name": "DPM++ 2M", "steps": 20, "cfg_scale": 7.0, "width": 64,
            "height": 64, "batch_size": 4, "override_settings": {"sd_model_checkpoint": model}}
    s, b = (statistics.median(side) for side in side_by_side(
        reps, lambda rep: timed(lambda: http.post("/sdapi/v1/txt2img", json={**body, "seed": rep}).json())[0],
        lambda rep: bare("image", model=model, prompt="red heart", batch=4, steps=20, size=64, guidance=7.0,
                         seed=rep)["seconds"]))
    report.line(f"{'/sdapi/v1/txt2img, emoji-ldm 4 × 64², 20 steps (s)':58} {s:10.2f} {b:10.2f} {b / s:7.3f}")
    http.close()


def rows_gan(client, bare, reps: int, report) -> None:
    for n in (1, 4, 8):
        s, b = side_by_side(reps, lambda rep: timed(lambda: client.predict("dcgan-faces-64", rep, n, 1.0,
                                                                           api_name="/gan_sample"))[0],
                            lambda rep: bare("gan", n=n * n, seed=rep)["seconds"])
        s, b = statistics.median(s), statistics.median(b)
        report.line(f"{f'GAN grid {n}×{n} (s)':44} {s:10.3f} {b:10.3f} {b / s:7.3f}")


def rows_vae(client, bare, reps: int, report) -> None:
    s, b = side_by_side(reps, lambda rep: timed(lambda: client.predict("digit-vae-2d", 12, 2.5, 0, 1, None,
                                                                       api_name="/vae_map"))[0],
                        lambda rep: bare("vae", grid=12)["seconds"])
    s, b = statistics.median(s), statistics.median(b)
    report.line(f"{'VAE map 12×12, digit-vae-2d (s)':44} {s:10.3f} {b:10.3f} {b / s:7.3f}")


def rows_trivial(client, reps: int, report) -> None:
    times = [timed(lambda: client.predict("all", "", api_name="/history_list"))[0] for _ in range(reps + 1)][1:]
    report.line(f"{'/history_list, the round-trip floor (s)':44} {statistics.median(times):10.3f} {'':>10} {'':>7}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rows", default="text,image,gan,vae,trivial,compat,browser")
    parser.add_argument("--threads", type=int, default=0,
                        help="llama.cpp threads on both sides (0 = the physical cores, the studio's default); on a "
                             "busy shared machine 1 keeps the engine from waiting on a descheduled thread")
    args = parser.parse_args()
    if args.bare:
        bare_server(args.threads)
        return
    from gradio_client import Client

    from benchmarks.common import Report

    rows = set(args.rows.split(","))
    outputs = Path(tempfile.mkdtemp(prefix="e2e-outputs-"))
    studio, url = launch_studio(outputs, *(["--threads", str(args.threads)] if args.threads else []))
    bare = Bare(args.threads)
    report = Report("e2e")
    try:
        client = Client(url, verbose=False)
        report.line(f"Studio at {url} (its own process) vs bare libraries (their own process); median of {args.reps}; "
                    f"llama.cpp threads: {args.threads or 'physical cores'} on both sides")
        report.line(f"{'request':44} {'studio':>10} {'bare':>10} {'ratio':>7}")
        if "text" in rows:
            rows_text(url, bare, args.reps, report)
        if "image" in rows:
            rows_image(client, bare, args.reps, report, url)
        if "gan" in rows:
            rows_gan(client, bare, args.reps, report)
        if "vae" in rows:
            rows_vae(client, bare, args.reps, report)
        if "trivial" in rows:
            rows_trivial(client, args.reps, report)
        if "compat" in rows:
            rows_compat(url, bare, args.reps, report)
        if "browser" in rows:
            from benchmarks.e2e_browser import browser_rows

            browser_rows(url, args.reps, report)
    finally:
        bare.close()
        studio.terminate()
        studio.wait(timeout=30)
    report.save()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

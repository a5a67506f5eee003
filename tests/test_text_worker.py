"""llama.cpp out of process: same answers as in-process, Stop, a killed worker costs one request, a build
that dies on a multi-token prompt falls back to transformers, and the CPU-variant choice respects what
the OS grants."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipelines.device import pick_placement
from pipelines.registry import ModelSpec, Registry
from pipelines.text import TextParams
from pipelines.text_llama import (
    AMX_OPT_IN,
    LlamaTextPipeline,
    amx_allowed,
    amx_granted,
    choose_backend,
    choose_cpu_variant,
    cpu_variants,
    gguf_path,
    llama_lib_dir,
    load_llama_model,
)
from pipelines.text_worker import BuildHealth, EngineCrashed, LlamaWorkerConfig, LlamaWorkerPipeline, describe_exit
from tests.test_smollm2 import _need_llama

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture(scope="module")
def gguf(cache_dir) -> str:
    _need_llama()
    registry = Registry(cache_dir)
    return str(gguf_path(registry.resolve(registry.lookup("smollm2-135m-instruct", "text"))))


@pytest.fixture(scope="module")
def worker(gguf):
    pipe = LlamaWorkerPipeline(LlamaWorkerConfig(gguf, "smollm2-135m-instruct", threads=2, n_ctx=2048),
                               pick_placement("cpu"))
    yield pipe
    pipe.close()


@pytest.mark.slow  # the real embedded text model
def test_worker_answers_exactly_as_in_process(worker, gguf):
    local = LlamaTextPipeline(load_llama_model(Registry(Path("/nonexistent")).resolve(
        ModelSpec("smollm2", "text", "file", gguf)), pick_placement("cpu"), threads=2, n_ctx=2048))
    for params in (TextParams(prompt="Name three colours.", mode="chat", max_new_tokens=24, temperature=0, seed=3),
                   TextParams(prompt="Once upon a time", max_new_tokens=24, temperature=0.9, seed=7)):
        here, there = local(params), worker(params)
        assert there.text == here.text and there.seed == here.seed and there.new_tokens == here.new_tokens
        assert there.backend == "llama.cpp"
        streamed = "".join(worker.stream(params))
        assert streamed == here.text
    # the prompt cache lives in the worker: a follow-up evaluates only the new tokens
    first = TextParams(prompt="Hi! Who are you?", mode="chat", max_new_tokens=8, temperature=0)
    answer = worker(first).text
    follow = TextParams(prompt="Name a colour.", mode="chat", history=(("user", first.prompt), ("assistant", answer)),
                        max_new_tokens=8, temperature=0)
    out = worker(follow)
    assert out.prompt_tokens_evaluated < out.prompt_tokens / 2


@pytest.mark.slow  # the real embedded text model
def test_stop_reaches_the_worker_within_a_token(worker):
    cancel = threading.Event()
    pieces = []
    stats: dict = {}
    for piece in worker.stream(TextParams(prompt="Tell me a long story about a dragon.", mode="chat",
                                          max_new_tokens=300, temperature=0.8, seed=1), cancel=cancel, stats=stats):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert stats["finish_reason"] == "cancelled" and stats["new_tokens"] < 12
    # the worker still answers afterwards
    assert worker(TextParams(prompt="Say hi.", mode="chat", max_new_tokens=4, temperature=0)).new_tokens > 0


@pytest.mark.slow  # the real embedded text model
def test_a_killed_worker_costs_one_request_and_restarts(gguf):
    messages = []
    pipe = LlamaWorkerPipeline(LlamaWorkerConfig(gguf, "smollm2", threads=2, n_ctx=2048), pick_placement("cpu"),
                               log=messages.append)
    try:
        first_pid = pipe.pid
        stream = pipe.stream(TextParams(prompt="Write a long poem about the sea.", mode="chat", max_new_tokens=300,
                                        temperature=0.8, seed=2))
        next(stream)
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(EngineCrashed, match="SIGKILL.*restarting — try again"):
            for _ in stream:
                pass
        out = pipe(TextParams(prompt="Say hi.", mode="chat", max_new_tokens=4, temperature=0))
        assert out.new_tokens > 0 and pipe.pid != first_pid
        assert any("crashed" in m for m in messages)
        # killed while idle: the next request starts a fresh worker instead of failing
        idle_pid = pipe.pid
        os.kill(idle_pid, signal.SIGKILL)
        time.sleep(0.2)
        assert pipe(TextParams(prompt="Say hi.", mode="chat", max_new_tokens=4, temperature=0)).new_tokens > 0
        assert pipe.pid != idle_pid
    finally:
        pipe.close()
    assert pipe.pid is None


def _fake_build_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(FAKES), str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])
    return env


def test_a_build_that_dies_on_a_multi_token_prompt_fails_at_load(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(EngineCrashed, match="SIGILL, illegal instruction") as info:
        LlamaWorkerPipeline(LlamaWorkerConfig(str(model), "m", threads=1), pick_placement("cpu"), env=_fake_build_env())
    assert info.value.at_load


@pytest.mark.slow  # the real embedded text model
def test_services_fall_back_to_transformers_and_remember_why(tmp_path, cache_dir, monkeypatch):
    _need_llama()
    from studio.config import load_settings
    from studio.services import Services

    monkeypatch.setenv("PYTHONPATH", _fake_build_env()["PYTHONPATH"])
    services = Services.create(load_settings(None, outputs=tmp_path / "out", cache_dir=cache_dir, device="cpu"))
    services.host.llama_health = BuildHealth(tmp_path / "health.json", fingerprint="test-build")
    spec = services.host.registry.lookup("smollm2-135m-instruct", "text")
    assert services.host.text_backend(spec).backend == "llama.cpp"
    pipe = services.host.text_pipeline("smollm2-135m-instruct")
    assert pipe.backend == "transformers"
    assert pipe(TextParams(prompt="Hi", max_new_tokens=3, temperature=0)).new_tokens > 0
    choice = services.host.text_backend(spec)
    assert choice.backend == "transformers" and "SIGILL" in choice.reason and "rebuild-llama" in choice.reason
    with pytest.raises(ValueError, match="cannot run on this machine"):
        services.host.text_backend(spec, "llama.cpp")
    # the verdict is per build: another build (a rebuild) is tried again
    assert BuildHealth(tmp_path / "health.json", fingerprint="rebuilt").broken_reason() is None


def test_choose_backend_reports_a_broken_build():
    spec = ModelSpec("m", "text", "file", "/models/m.gguf")
    import torch

    cpu = torch.device("cpu")
    assert choose_backend(spec, cpu, installed=True).backend == "llama.cpp"
    fallback = choose_backend(spec, cpu, installed=True, broken="SIGILL, illegal instruction")
    assert fallback.backend == "transformers" and "SIGILL" in fallback.reason


def test_cpu_variant_choice_follows_what_the_os_grants():
    scores = {"libggml-cpu-haswell.so": 40, "libggml-cpu-zen4.so": 0, "libggml-cpu-icelake.so": 90,
              "libggml-cpu-sapphirerapids.so": 120, "libggml-cpu-x64.so": 1}
    assert choose_cpu_variant(scores, amx_ok=True) == "libggml-cpu-sapphirerapids.so"
    assert choose_cpu_variant(scores, amx_ok=False) == "libggml-cpu-icelake.so"
    assert choose_cpu_variant({"libggml-cpu-x64.so": 0}, amx_ok=True) is None
    assert isinstance(amx_granted(), bool)  # a real syscall on Linux x86-64; False elsewhere
    assert amx_allowed() is (os.environ.get(AMX_OPT_IN) == "1" and amx_granted())  # AMX only when asked for


@pytest.mark.slow  # the real embedded text model
def test_the_installed_build_runs_the_best_variant_this_machine_allows(worker):
    """On x86-64 the set-up builds every CPU variant; the worker loaded one that scores here (and never
    the AMX one unless asked for and granted by the OS)."""
    variants = cpu_variants(llama_lib_dir())
    if not variants:
        pytest.skip("a native (single-variant) llama.cpp build is installed")
    chosen = worker._worker.info["variant"]
    assert chosen in {v.name for v in variants}
    assert amx_allowed() or "sapphirerapids" not in chosen


def test_exit_descriptions_name_the_cause():
    assert "illegal instruction" in describe_exit(-signal.SIGILL)
    assert "out of memory" in describe_exit(-signal.SIGKILL)
    assert describe_exit(3, "GGML_ASSERT(x) failed\n") == "exit code 3 (it said: GGML_ASSERT(x) failed)"


@pytest.mark.slow  # the real embedded text model
def test_in_process_loading_works_whatever_was_imported_first(gguf):
    """A dynamic-backend build has no CPU backend until one is loaded; loading it into the very ggml copy
    that libllama uses must work even when llama_cpp was imported before (benchmarks, notebooks)."""
    import subprocess
    import sys

    code = ("import llama_cpp\nfrom pathlib import Path\nfrom pipelines.device import pick_placement\n"
            "from pipelines.registry import ModelSpec, ResolvedModel\nfrom pipelines.text_llama import load_llama_model\n"
            f"spec = ModelSpec('m', 'text', 'file', {gguf!r})\n"
            f"model = load_llama_model(ResolvedModel(spec, Path({gguf!r})), pick_placement('cpu'), threads=1, n_ctx=256)\n"
            "print('tokens', len(model.llm.tokenize(b'hello world')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and "tokens" in done.stdout, done.stderr[-500:]


@pytest.mark.slow  # the real embedded text model
def test_the_worker_counts_tokens_continues_answers_and_samples_with_min_p(worker, gguf):
    params = TextParams(prompt="Name three colours.", mode="chat")
    counted = worker.count_tokens(params)
    assert counted["context"] == 2048 and 10 < counted["tokens"] < 60
    greedy = worker(TextParams(prompt="Once upon a time", max_new_tokens=12, temperature=0)).text
    hot = worker(TextParams(prompt="Once upon a time", max_new_tokens=12, temperature=1.5, top_k=0, top_p=1.0,
                            min_p=1.0, seed=5)).text
    assert hot == greedy  # min-p 1 keeps only the likeliest token, whatever the temperature
    cut = worker(TextParams(prompt="Name three colours.", mode="chat", max_new_tokens=4, temperature=0))
    more = worker(TextParams(prompt="", mode="chat", history=(("user", "Name three colours."),
                                                                ("assistant", cut.text)),
                             continue_last=True, max_new_tokens=8, temperature=0))
    whole = worker(TextParams(prompt="Name three colours.", mode="chat", max_new_tokens=12, temperature=0))
    assert (cut.text + more.text).strip().startswith(whole.text[:len(cut.text)].strip())
    assert more.new_tokens > 0

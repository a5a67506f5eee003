"""GGUF text models through llama.cpp (`llama-cpp-python`, the optional `[llama]` extra).

    choice = choose_backend(spec, placement.device)          # "llama.cpp" for GGUF on CPU/MPS when installed
    pipe = LlamaTextPipeline(load_llama_model(resolved, placement, threads=physical_cores()))
    out = pipe(TextParams(prompt="Once upon a time", max_new_tokens=64, seed=1))

Same `TextParams`, prompt building, streaming, stop strings and `TextOutput` as the transformers path
(`text.py`): the quantized weights run as they are instead of being dequantized to float32, which is
several times faster on a CPU. Sampling follows the transformers semantics (repetition penalty over the
whole context, then temperature, top-k, top-p) in a llama.cpp sampler chain seeded per request.

One llama.cpp context holds one KV cache, so requests to one model run one at a time (a lock). A chat
follow-up reuses the evaluated prefix in that context; when another conversation takes the context
over, the displaced state is saved to a `PromptCache` and restored when its owner comes back.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.checks import short
from pipelines.device import Placement
from pipelines.registry import ModelNotAvailable, ModelSpec, ResolvedModel
from pipelines.text import (
    PromptCache,
    TextLimits,
    TextOutput,
    TextParams,
    _Decoder,
    chat_prompt,
    check_prompt_tokens,
    common_prefix,
)

BACKENDS = ("auto", "llama.cpp", "transformers")
REBUILD_HINT = ("Rebuild it for this machine with `python3 studio/bootstrap.py rebuild-llama`; "
                "until then GGUF models run on transformers.")
LLAMA_HINT = ("GGUF models run several times faster on CPU with the llama.cpp extra: "
              "pip install 'genai-studio[llama]' (needs a C/C++ compiler and CMake).")
_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp reads this seed as "pick a random one"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def is_gguf(spec: ModelSpec) -> bool:
    """Whether the model is a GGUF file (as a file, a package's file, or the only weights in a folder)."""
    if spec.file.endswith(".gguf") or spec.location.endswith(".gguf"):
        return True
    if spec.source == "folder":
        folder = Path(spec.location)
        return folder.is_dir() and not (folder / "config.json").is_file() and any(folder.glob("*.gguf"))
    return False


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "llama.cpp" or "transformers"
    reason: str  # one line for the Models tab


def choose_backend(spec: ModelSpec, device: torch.device, preference: str = "auto",
                   installed: bool | None = None, broken: str | None = None) -> BackendChoice:
    """llama.cpp for GGUF files on CPU/MPS when the extra is installed and its build runs here;
    transformers otherwise.

    `preference` ("auto", "llama.cpp" or "transformers") overrides the automatic choice; asking for
    llama.cpp on a model it cannot run is a clear error rather than a silent fallback. `broken` is why
    the installed llama.cpp build cannot run on this machine (it crashed its probe), if it did.
    """
    if preference not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {short(preference)}")
    installed = llama_cpp_available() if installed is None else installed
    gguf = is_gguf(spec)
    if preference == "transformers":
        return BackendChoice("transformers", "chosen in the settings")
    if preference == "llama.cpp":
        if not gguf:
            raise ValueError(f"backend: llama.cpp runs GGUF files only, and {spec.name!r} is not one; "
                             "choose auto or transformers")
        if not installed:
            raise ValueError(f"backend: llama.cpp is not installed here. {LLAMA_HINT}")
        if broken:
            raise ValueError(f"backend: the installed llama.cpp cannot run on this machine ({broken}). "
                             f"{REBUILD_HINT}")
        return BackendChoice("llama.cpp", "chosen in the settings")
    if not gguf:
        return BackendChoice("transformers", "not a GGUF file")
    if device.type == "cuda":
        return BackendChoice("transformers", "GGUF on a CUDA GPU: dequantized to half precision on the GPU")
    if not installed:
        return BackendChoice("transformers", f"llama.cpp extra missing. {LLAMA_HINT}")
    if broken:
        return BackendChoice("transformers", f"llama.cpp crashed on this machine ({broken}). {REBUILD_HINT}")
    return BackendChoice("llama.cpp", f"GGUF on {device.type.upper()}: quantized weights run as they are")


def llama_lib_dir() -> Path | None:
    """The folder holding llama-cpp-python's native libraries, found without importing it (importing
    a build that cannot run here may already crash)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


# -- CPU variant selection (builds made with GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) ------------------
# Both the studio's worker processes and in-process users (tests, benchmarks) call `load_cpu_backend()`
# before opening a model: a dynamic-backend build has no CPU backend until one is loaded.

ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL_X86_64 = 158


def amx_granted() -> bool:
    """Whether the operating system lets this process use AMX tiles (Linux x86-64: the kernel lists
    the tile state as supported and grants the permission). CPU flags alone are not enough: a VM can
    advertise AMX while its kernel or hypervisor does not enable it, and the first tile instruction
    then kills the process."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mask = ctypes.c_uint64(0)
        if libc.syscall(SYS_ARCH_PRCTL_X86_64, ARCH_GET_XCOMP_SUPP, ctypes.byref(mask)) != 0:
            return False
        if not mask.value & (1 << XFEATURE_XTILEDATA):
            return False
        return libc.syscall(SYS_ARCH_PRCTL_X86_64, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


AMX_OPT_IN = "GENAI_STUDIO_LLAMA_AMX"


def amx_allowed() -> bool:
    """Whether to run llama.cpp's AMX variant: only when asked (GENAI_STUDIO_LLAMA_AMX=1) and the OS grants AMX.
    Even a granted AMX is not enough: on a Xeon VM whose kernel grants the tiles, that variant's first
    `tilezero` in a worker thread raised an illegal instruction (ggml's AMX matmul, 2026-12, llama-cpp-python
    0.3.36), killing the process; the AVX-512 VNNI variants ran the same model there."""
    return os.environ.get(AMX_OPT_IN, "") == "1" and amx_granted()


def cpu_variants(lib_dir: Path) -> list[Path]:
    """The CPU backend variants of a dynamic-backend build (empty for a single native build). The
    llama-cpp-python wheel puts them in the wheel's `bin/` (site-packages/bin), beside or above `lib/`."""
    patterns = ("libggml-cpu-*.so", "libggml-cpu-*.dylib", "ggml-cpu-*.dll")
    folders = (lib_dir, lib_dir.parent.parent / "bin")
    return sorted({p for folder in folders for pattern in patterns for p in folder.glob(pattern)})


def choose_cpu_variant(scores: dict[str, int], amx_ok: bool) -> str | None:
    """The best-scoring variant this CPU *and* OS can run: ggml scores variants from CPU flags only,
    so the AMX variant (sapphirerapids) is set aside when the OS does not grant AMX."""
    usable = {name: score for name, score in scores.items()
              if score > 0 and (amx_ok or "sapphirerapids" not in name)}
    return max(usable, key=usable.get) if usable else None


def _library(lib_dir: Path, name: str) -> Path:
    """The copy of a native library that the others link against. Wheels hold `libggml.so`,
    `libggml.so.0` and `libggml.so.0.25.3` as three separate files; libllama links `libggml.so.0` (its
    soname), so opening any other copy would give a second, separate ggml with its own (empty)
    backend registry."""
    for candidate in (f"lib{name}.so.0", f"lib{name}.0.dylib", f"{name}.dll", f"lib{name}.so", f"lib{name}.dylib"):
        if (lib_dir / candidate).is_file():
            return lib_dir / candidate
    raise ModelNotAvailable(f"the llama.cpp build in {lib_dir} has no {name} library. " + REBUILD_HINT)


@functools.cache
def load_cpu_backend(lib_dir: Path) -> str | None:
    """For dynamic-backend builds: load the best CPU variant that may run here (once per process);
    None for native builds, which have their CPU backend built in."""
    variants = cpu_variants(lib_dir)
    if not variants:
        return None
    # the variants need libggml-base, which sits in lib/ (not on the loader's path when they are in bin/)
    ctypes.CDLL(str(_library(lib_dir, "ggml-base")), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
    scores = {}
    for path in variants:
        try:
            lib = ctypes.CDLL(str(path))
            lib.ggml_backend_score.restype = ctypes.c_int
            scores[str(path)] = int(lib.ggml_backend_score())
        except (OSError, AttributeError):
            scores[str(path)] = 0
    best = choose_cpu_variant(scores, amx_allowed())
    if best is None:
        raise ModelNotAvailable("no llama.cpp CPU variant in this build can run on this CPU. " + REBUILD_HINT)
    ggml = ctypes.CDLL(str(_library(lib_dir, "ggml")))
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    if not ggml.ggml_backend_load(best.encode()):
        raise ModelNotAvailable(f"llama.cpp could not load its CPU backend {Path(best).name}. " + REBUILD_HINT)
    return Path(best).name


class _GGUFTemplate:
    """The GGUF file's own chat template, rendered the way transformers renders it (same text as the
    transformers path, without loading a tokenizer — that takes seconds for a GGUF file)."""

    def __init__(self, template: str | None, bos: str, eos: str) -> None:
        self.chat_template, self.bos, self.eos = template, bos, eos

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = True, continue_final_message: bool = False) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt,
                                            continue_final_message=continue_final_message,
                                            bos_token=self.bos, eos_token=self.eos)
        return rendered[0]


class _Detokenizer:
    """`decode()` as `_Decoder` expects it, over llama.cpp's own vocabulary. `_Decoder` decodes the whole answer
    after every token; llama-cpp-python's detokenize makes one native call per token id and grows its bytes one
    piece at a time (quadratic: ~33,000 calls over a 256-token answer, in the loop between two tokens), so each
    token's bytes are looked up once and kept."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._bos = llm.token_bos()

    def _piece(self, token: int, special: bool) -> bytes:
        piece = self._pieces.get((token, special))
        if piece is None:
            piece = self._pieces[(token, special)] = self.llm.detokenize([token], special=special)
        return piece

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        if ids and ids[0] == self._bos:  # llama.cpp's leading-space rule after a BOS: its own decode
            return self.llm.detokenize(ids, special=not skip_special_tokens).decode("utf-8", errors="replace")
        special = not skip_special_tokens
        return b"".join([self._piece(t, special) for t in ids]).decode("utf-8", errors="replace")


@dataclass
class LlamaTextModel:
    """A GGUF model opened by llama.cpp, with the chat template from its metadata."""

    llm: object  # llama_cpp.Llama
    template: _GGUFTemplate
    name: str
    placement: Placement
    backend: str = "llama.cpp"

    @property
    def has_chat_template(self) -> bool:
        return bool(self.template.chat_template)


def gguf_path(resolved: ResolvedModel) -> Path:
    location = Path(resolved.path)
    if resolved.file:
        location = location / resolved.file
    if location.is_dir():
        files = sorted(location.glob("*.gguf"))
        if not files:
            raise ModelNotAvailable(f"{location} has no .gguf file for llama.cpp")
        location = files[0]
    if not location.is_file():
        raise ModelNotAvailable(f"the model file {location} is missing; fetch the model again (Models tab)")
    return location


def load_llama_model(resolved: ResolvedModel, placement: Placement, *, threads: int,
                     n_ctx: int = 5120) -> LlamaTextModel:
    """Open a GGUF file with llama.cpp: all layers on the GPU for MPS/CUDA, `threads` CPU threads."""
    lib_dir = llama_lib_dir()
    if lib_dir is None:
        raise ModelNotAvailable(f"llama.cpp is not installed. {LLAMA_HINT}")
    load_cpu_backend(lib_dir)
    from llama_cpp import Llama

    path = gguf_path(resolved)
    gpu_layers = -1 if placement.device.type in ("mps", "cuda") else 0
    try:
        llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                    n_gpu_layers=gpu_layers, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise ModelNotAvailable(f"llama.cpp could not open {path.name}: {exc}. The file may be damaged or "
                                "from a newer GGUF version; fetch it again or use the transformers backend.") from exc
    vocab_text = lambda token: llm.detokenize([token], special=True).decode("utf-8", errors="replace")
    bos = vocab_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
    eos = vocab_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
    template = _GGUFTemplate(llm.metadata.get("tokenizer.chat_template"), bos, eos)
    return LlamaTextModel(llm, template, resolved.spec.name, placement)


class LlamaTextPipeline:
    """Chat/completion over one `LlamaTextModel`: the same interface as `TextPipeline`."""

    def __init__(self, model: LlamaTextModel, limits: TextLimits | None = None, prompt_cache_entries: int = 4) -> None:
        self.model = model
        self.limits = limits or TextLimits()
        self.prompt_cache = PromptCache(prompt_cache_entries)
        self._lock = threading.Lock()  # one KV cache per context: one request at a time

    @property
    def backend(self) -> str:
        return self.model.backend

    # 1. Build the prompt
    def build_prompt(self, params: TextParams) -> str:
        return chat_prompt(self.model.template, params, self.model.has_chat_template)

    def count_tokens(self, params: TextParams) -> dict:
        """How many tokens the model would read for `params`, and the context it was loaded with."""
        llm = self.model.llm
        tokens = llm.tokenize(self.build_prompt(params).encode("utf-8"), add_bos=params.mode == "completion",
                              special=True)
        return {"tokens": len(tokens), "context": int(llm.n_ctx())}

    def _sampler(self, params: TextParams, seed: int, prompt: list[int]):
        """A llama.cpp sampler chain with the transformers semantics, seeded for this request."""
        import llama_cpp as L

        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        llm = self.model.llm
        if params.repetition_penalty != 1.0:  # over the whole context, as transformers does
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(
                llm.n_vocab(), llm.n_ctx(), params.repetition_penalty, 0.0, 0.0))
        if params.greedy:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            # top-k first: it keeps the same tokens whatever the temperature, and leaves the
            # temperature only k logits to scale instead of the whole vocabulary
            if params.top_k:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(params.top_k))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
            if params.top_p < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(params.min_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed if seed != _DEFAULT_SEED else seed - 1))
        for token in prompt:  # the penalty sees the prompt too
            L.llama_sampler_accept(chain, token)
        return chain

    def _reuse_prefix(self, tokens: list[int], scope: str = "") -> int:
        """Point the context at the longest evaluated prefix of `tokens` (its own KV cache or a saved
        state of the same scope) and return how many tokens are already evaluated. At least one token is left
        to run. The live context is reused only by the scope that filled it."""
        llm = self.model.llm
        current = llm.input_ids[: llm.n_tokens].tolist()
        owner = getattr(self, "_context_scope", "")
        here = common_prefix(current, tokens) if owner == scope else 0
        saved, _ = self.prompt_cache.best(tokens, scope)
        state = self.prompt_cache.take(tokens, scope)[1] if saved > here else None
        worth_keeping = self.prompt_cache.capacity > 0 and len(current) >= self.prompt_cache.min_prefix
        if worth_keeping and (state is not None or here < len(current) // 2):
            # another conversation takes the context over: keep this one for when its owner comes back
            self.prompt_cache.put(current, _save_state(llm), owner)
        if state is not None:
            _load_state(llm, state)
            here = saved
        self._context_scope = scope
        llm.n_tokens = min(here, len(tokens) - 1)  # eval() drops the KV cache past n_tokens
        return llm.n_tokens

    def stream(
        self,
        params: TextParams,
        *,
        generator: torch.Generator | None = None,
        cancel: threading.Event | None = None,
        stats: dict | None = None,
    ) -> Iterator[str]:
        """Yield the new text piece by piece; `stats` (if given) is filled with the TextOutput fields."""
        import llama_cpp as L

        cancel = cancel or threading.Event()
        stats = stats if stats is not None else {}
        params.validate(self.limits)
        llm = self.model.llm
        # 2. Tokenize with llama.cpp's vocabulary and check the limits
        prompt = self.build_prompt(params)
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=params.mode == "completion", special=True)
        check_prompt_tokens(len(tokens), self.limits)
        room = llm.n_ctx() - len(tokens)
        if room < 1:
            raise ValueError(f"prompt is too long for this model's context: {len(tokens):,} tokens of "
                             f"{llm.n_ctx():,}. Shorten it or clear the chat.")
        # 3. Seed: a generator given by the caller decides it, as on the transformers path
        if params.seed is not None:
            seed = params.seed
        elif generator is not None:
            seed = generator.initial_seed() % 2**32
        else:
            seed = random.SystemRandom().randrange(2**32)
        eos = {t for t in (llm.token_eos(),) if t >= 0}
        decoder = _Decoder(_Detokenizer(llm), params.stop, eos, cancel)
        vocab = llm._model.vocab
        with self._lock:
            started = time.perf_counter()
            # 4. Evaluate only what the cache does not already hold
            evaluated = len(tokens) - self._reuse_prefix(tokens, params.cache_scope)
            sampler = self._sampler(params, seed, tokens)
            try:
                rest = tokens[llm.n_tokens:]
                if len(rest) > 1:  # the last prompt token alone, as after a cached prefix: a regenerated
                    llm.eval(rest[:-1])  # prompt runs the same kernels as its first run (GPU builds may use
                    # other kernels for a 1-row product than for an n-row one)
                llm.eval(rest[-1:])
                # 5. Sample, show, feed back — one token at a time
                for _ in range(min(params.max_new_tokens, room)):
                    if cancel.is_set():
                        break
                    token = L.llama_sampler_sample(sampler, llm.ctx, -1)
                    decoder.first = decoder.first if decoder.first is not None else time.perf_counter() - started
                    end = L.llama_vocab_is_eog(vocab, token)
                    if end:
                        eos.add(token)
                    if piece := decoder.feed([token]):
                        yield piece
                    if end or decoder.cut:
                        break
                    llm.eval([token])
                if not decoder.cut and (piece := decoder.flush()):
                    yield piece
            finally:
                L.llama_sampler_free(sampler)
        decoder.settle()
        stats.update(decoder.stats(), seed=seed, prompt_tokens=len(tokens), prompt_tokens_evaluated=evaluated,
                     backend=self.backend, seconds=time.perf_counter() - started)

    def __call__(
        self,
        params: TextParams,
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TextOutput:
        """The whole answer (generated in the calling thread); `callback` receives each piece."""
        stats: dict = {}
        for piece in self.stream(params, generator=generator, cancel=cancel, stats=stats):
            if callback:
                callback(piece)
        return TextOutput(**stats)


def _save_state(llm) -> tuple:
    """The context's KV cache as bytes plus the tokens it covers (llama-cpp-python's own save_state
    also copies a logits buffer of n_batch × vocabulary floats, ~100 MB for a 49k vocabulary)."""
    import ctypes

    import llama_cpp as L

    size = L.llama_state_get_size(llm.ctx)
    buffer = (ctypes.c_uint8 * size)()
    written = L.llama_state_get_data(llm.ctx, buffer, size)
    return buffer, written, llm.input_ids[: llm.n_tokens].copy()


def _load_state(llm, state: tuple) -> None:
    import llama_cpp as L

    buffer, written, tokens = state
    if L.llama_state_set_data(llm.ctx, buffer, written) != written:
        raise RuntimeError("llama.cpp could not restore a saved prompt state")
    llm.input_ids[: len(tokens)] = tokens
    llm.n_tokens = len(tokens)

"""Text generation with causal language models (transformers): chat and raw completion, streamed.

    params = TextParams(prompt="Once upon a time", mode="completion", max_new_tokens=64, seed=1)
    out = TextPipeline(load_text_model(resolved, placement))(params)

Sampling draws from an explicit `torch.Generator` seeded per request (never the global RNG), so a
seed reproduces a text exactly and concurrent users never disturb each other. Streaming and
non-streaming decode alike, so `__call__` returns the concatenation of `stream()`.

Chat follow-ups reuse the evaluated prefix: each finished generation leaves its KV cache in a small
`PromptCache` keyed by token ids, and the next turn (same conversation + one more message) only
evaluates the new tokens. GGUF files on CPU/MPS run faster through llama.cpp (`text_llama.py`),
which shares `TextParams`, the prompt building, `_Decoder` and `PromptCache` with this module.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipelines.checks import check_float, check_int, short
from pipelines.device import Placement
from pipelines.memory import DoesNotFit, MemoryPlan, apply_text_plan, module_bytes, plan_text_memory, probe_memory
from pipelines.registry import ModelNotAvailable, ResolvedModel

MODES = ("chat", "completion")
ROLES = ("system", "user", "assistant")
HARD_MAX_NEW_TOKENS = 32_768
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class TextLimits:
    """Server-side caps (configurable), enforced whatever the sliders allow."""

    max_new_tokens: int = 1024
    max_prompt_chars: int = 16_000
    max_prompt_tokens: int = 4096


@dataclass(frozen=True)
class TextParams:
    """One text request. Every front end (UI, CLI, API, tests) builds this same object.

    prompt: the text to continue (completion) or the user's newest message (chat).
    mode: "chat" applies the model's chat template to `history` + `prompt`; "completion" continues
        `prompt` as raw text.
    system_prompt: chat only; prepended as a system message when the template allows one.
    history: chat only; earlier turns as (role, content) pairs, role in ROLES.
    max_new_tokens: 1 … the server's limit (default 1024).
    temperature: 0 … 5; 0 means greedy decoding (top_p/top_k are then ignored).
    top_p: nucleus sampling mass, in (0, 1].
    top_k: keep the k most likely tokens; 0 disables.
    min_p: drop tokens less likely than min_p × the likeliest one's probability, 0 … 1; 0 disables.
    continue_last: chat only; continue the last assistant message in `history` (cut off by the token
        limit or Stop) instead of answering `prompt`, which may then be empty.
    repetition_penalty: 1 disables; allowed 0.5 … 3.
    stop: strings that end generation; the output is cut before the first one found.
    seed: 0 … 2**32-1, or None for a fresh random seed (the one used is reported back).
    cache_scope: whose evaluated prompts this request may reuse and keep (a browser session, an API caller):
        one scope's conversations are never reused by — nor their reuse shown to — another.
    """

    prompt: str
    mode: str = "completion"
    system_prompt: str = ""
    history: tuple[tuple[str, str], ...] = ()
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    min_p: float = 0.0
    continue_last: bool = False
    cache_scope: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, limits: TextLimits | None = None) -> None:
        limits = limits or TextLimits(max_new_tokens=HARD_MAX_NEW_TOKENS, max_prompt_chars=10**9)
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'chat' or 'completion', got {short(self.mode)}")
        if self.continue_last:
            if self.mode != "chat" or not self.history or self.history[-1][0] != "assistant":
                raise ValueError("continue: there is no answer to continue (the chat must end with the model's turn)")
        elif not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt is empty: type something for the model to answer or continue")
        chars = len(self.prompt) + len(self.system_prompt) + sum(len(c) for _, c in self.history)
        if chars > limits.max_prompt_chars:
            raise ValueError(
                f"prompt is too long: {chars:,} characters (with history); the limit is "
                f"{limits.max_prompt_chars:,}. Shorten it or clear the chat."
            )
        for role, content in self.history:
            if role not in ROLES or not isinstance(content, str):
                raise ValueError(f"history entries must be (role, text) with role in {ROLES}, got {short(role)}")
        check_int("max_new_tokens", self.max_new_tokens, 1, limits.max_new_tokens)
        check_float("temperature", self.temperature, 0.0, 5.0)
        check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_int("top_k", self.top_k, 0, 100_000)
        check_float("min_p", self.min_p, 0.0, 1.0)
        check_float("repetition_penalty", self.repetition_penalty, 0.5, 3.0)
        if not all(isinstance(s, str) and s for s in self.stop) or len(self.stop) > 16:
            raise ValueError("stop must be up to 16 non-empty strings")
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**32 - 1)
        if not isinstance(self.cache_scope, str) or len(self.cache_scope) > 200:
            raise ValueError("cache_scope must be text of at most 200 characters")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def parse_stop(text: str) -> tuple[str, ...]:
    """Stop strings from a UI field: one per line or comma-separated; `\\n` means a newline."""
    parts = text.splitlines() if "\n" in text else text.split(",")
    return tuple(p.strip().replace("\\n", "\n") for p in parts if p.strip())


@dataclass
class TextOutput:
    text: str
    seed: int
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "length", "stop" (stop string or end-of-text), or "cancelled"
    seconds: float
    first_token_seconds: float | None = None
    prompt_tokens_evaluated: int | None = None  # prompt tokens actually run (the rest came from the cache)
    backend: str = "transformers"
    stats: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TextModel:
    """A loaded causal LM, its tokenizer and where it runs."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    placement: Placement
    backend: str = "transformers"

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def _check_folder(path: Path) -> None:
    if not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
        raise ModelNotAvailable(
            f"{path} is not a text model folder: it has no config.json. Point to a folder saved with "
            "save_pretrained() (config.json + weights) or to a .gguf file."
        )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise ModelNotAvailable(
            f"the model folder {path} has no weights (expected model.safetensors, pytorch_model.bin "
            "or a .gguf file). Copy the weights into it or choose another model."
        )


def load_text_model(
    resolved: ResolvedModel,
    placement: Placement,
    *,
    offline: bool = False,
    trust_remote_code: bool = False,
    plan_memory: Callable[[int], MemoryPlan] | None = None,
) -> TextModel:
    """Load a causal LM from a hub id, a local folder, or a GGUF file (dequantized by transformers).
    The weights load on the CPU; on an accelerator `plan_memory(weight bytes)` (default: from the
    device's free memory now) decides how they reach it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf = resolved.path, resolved.file or None
    if isinstance(location, Path) and location.is_file():
        if location.suffix != ".gguf":
            raise ModelNotAvailable(f"{location}: a single text-model file must be a .gguf file")
        location, gguf = location.parent, location.name
    elif isinstance(location, Path) and gguf is None:
        _check_folder(location)
    kwargs = dict(gguf_file=gguf, local_files_only=offline or isinstance(location, Path),
                  trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        # GGUF weights are dequantized; float16 on CPU would be slow, so the placement decides.
        model = AutoModelForCausalLM.from_pretrained(location, dtype=placement.dtype, **kwargs)
    except (OSError, ValueError) as exc:
        hint = "" if isinstance(location, Path) else (
            " If this is a model-hub id, check the spelling and your network connection, or download "
            "the model and give its local folder."
        )
        raise ModelNotAvailable(f"could not load text model {resolved.spec.name!r}: {exc}{hint}") from exc
    if placement.device.type == "cpu":
        model.eval()
    else:
        memory = probe_memory(placement.device)
        planner = plan_memory or (lambda weights: plan_text_memory(weights, memory))
        try:
            plan = planner(module_bytes(model))
        except DoesNotFit as exc:
            raise ModelNotAvailable(f"{resolved.spec.name} does not fit on this machine: {exc}") from exc
        model = apply_text_plan(model, plan, placement.device, memory).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TextModel(model, tokenizer, resolved.spec.name, placement)


class _SeededSampler:
    """Temperature → top-k → top-p → min-p → sample with our own generator, as a logits processor.

    generate() then runs greedily over logits where only the sampled token survives, so sampling
    never touches torch's global RNG.
    """

    def __init__(self, params: TextParams, generator: torch.Generator) -> None:
        self.params = params
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        p = self.params
        logits = scores.float() / p.temperature
        if p.top_k and p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k, dim=-1).values[..., -1, None]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) >= p.top_p  # keep at least the top token
            logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
        if p.min_p > 0:  # relative to the likeliest token, after temperature (as transformers' MinP)
            probs = logits.softmax(-1)
            logits = logits.masked_fill(probs < p.min_p * probs.max(-1, keepdim=True).values, -math.inf)
        probs = logits.softmax(-1)
        choice = torch.multinomial(probs.cpu(), 1, generator=self.generator).to(scores.device)
        out = torch.full_like(scores, -math.inf)
        return out.scatter(-1, choice, 0.0)


class _Stop:
    """Stopping criterion: the user's Stop, or a stop string in the decoded new text."""

    def __init__(self, cancel: threading.Event, tokenizer, prompt_len: int, stop: tuple[str, ...]) -> None:
        self.cancel, self.tokenizer, self.prompt_len, self.stop = cancel, tokenizer, prompt_len, stop
        self.window = max((len(s) for s in stop), default=0) + 8
        self.hit_stop = False

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = self.cancel.is_set()
        if self.stop and not done:
            tail = self.tokenizer.decode(input_ids[0, self.prompt_len:][-self.window:], skip_special_tokens=True)
            self.hit_stop = any(s in tail for s in self.stop)
            done = self.hit_stop
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _cache_kwarg() -> str:
    """generate()'s name for a KV cache passed in: `cache` in newer transformers, `past_key_values` before."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


class _TokenQueue:
    """A generate() streamer that hands raw token ids to the consuming thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._skip_prompt = True

    def put(self, value: torch.Tensor) -> None:
        if self._skip_prompt:  # generate() first sends the prompt
            self._skip_prompt = False
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might be the start of a stop string (not shown yet)."""
    keep = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    return keep


def chat_prompt(tokenizer, params: TextParams, has_template: bool) -> str:
    """The text the model reads: the raw prompt (completion) or the chat template applied to the
    system prompt, the history and the new message (chat). Both backends use this one function."""
    if params.mode == "completion":
        return params.prompt
    messages = [{"role": "system", "content": params.system_prompt}] if params.system_prompt.strip() else []
    messages += [{"role": r, "content": c} for r, c in params.history]
    if not params.continue_last:
        messages.append({"role": "user", "content": params.prompt})
    if not has_template:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines) if params.continue_last else "\n".join(lines) + "\nAssistant:"
    if params.continue_last:  # the answer stays open: the model writes on from its last word
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                             continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_prompt_tokens(count: int, limits: TextLimits) -> None:
    if count > limits.max_prompt_tokens:
        raise ValueError(
            f"prompt is too long: {count:,} tokens; the limit is {limits.max_prompt_tokens:,}. "
            "Shorten it or clear the chat."
        )


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """Evaluated prompt states (KV caches) keyed by their scope (whose they are) and the token ids they
    cover, oldest dropped first.

    `take()` removes the entry of the same scope sharing the longest prefix with a new prompt, so a
    generation owns the state it extends and two requests never write into one; `put()` stores it back
    afterwards. Another scope's entries are never offered. Entries sharing fewer than `min_prefix` tokens
    are left alone (another conversation's cache is worth more than a shared system prompt).
    """

    def __init__(self, capacity: int = 4, min_prefix: int = 8) -> None:
        self.capacity, self.min_prefix = capacity, min_prefix
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], object] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, ids: Sequence[int], scope: str = "") -> tuple[int, tuple | None]:
        """(shared prefix length, key) of the most useful entry of `scope`, without removing it."""
        with self._lock:
            scored = [(common_prefix(key[1], ids), key) for key in self._entries if key[0] == scope]
        prefix, key = max(scored, default=(0, None), key=lambda item: item[0])
        return (prefix, key) if prefix >= self.min_prefix else (0, None)

    def take(self, ids: Sequence[int], scope: str = "") -> tuple[int, object | None]:
        prefix, key = self.best(ids, scope)
        with self._lock:
            value = self._entries.pop(key, None) if key is not None else None
        return (prefix, value) if value is not None else (0, None)

    def put(self, ids: Sequence[int], value: object, scope: str = "") -> None:
        if self.capacity < 1 or not ids:
            return
        key = (scope, tuple(ids))
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class TextPipeline:
    """Chat/completion over one loaded `TextModel`. Thread-safe per call (one generator each)."""

    def __init__(self, model: TextModel, limits: TextLimits | None = None, prompt_cache_entries: int = 4) -> None:
        self.model = model
        self.limits = limits or TextLimits()
        self.prompt_cache = PromptCache(prompt_cache_entries)

    @property
    def backend(self) -> str:
        return self.model.backend

    @property
    def runs_on(self) -> str:
        """Where and in which precision this model actually runs, for History and the status line."""
        return f"{self.model.placement.describe()} · transformers"

    # 1. Build the prompt
    def build_prompt(self, params: TextParams) -> str:
        return chat_prompt(self.model.tokenizer, params, self.model.has_chat_template)

    def count_tokens(self, params: TextParams) -> dict:
        """How many tokens the model would read for `params`, and its context length (0 = unknown)."""
        ids = self.model.tokenizer(self.build_prompt(params), add_special_tokens=params.mode == "completion").input_ids
        return {"tokens": len(ids), "context": int(getattr(self.model.model.config, "max_position_embeddings", 0) or 0)}

    def _prepare(self, params: TextParams, generator: torch.Generator | None, cancel: threading.Event):
        """Validate, tokenize, seed, reuse a cached prefix, and build generate() arguments."""
        params.validate(self.limits)
        model, tok = self.model.model, self.model.tokenizer
        # 2. Tokenize and check the server's prompt limit
        prompt = self.build_prompt(params)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=params.mode == "completion").input_ids
        check_prompt_tokens(ids.shape[1], self.limits)
        # 3. Seed: one generator per request
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**32)
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        # 4. Reuse the KV cache of an earlier turn that shares a prefix (at least one token is evaluated)
        prefix, past = self.prompt_cache.take(ids[0].tolist(), params.cache_scope)
        if past is not None:
            prefix = min(prefix, ids.shape[1] - 1, past.get_seq_length())
            if getattr(past, "is_croppable", True) and prefix > 0:
                if past.get_seq_length() > prefix:
                    past.crop(prefix - past.get_seq_length())  # a negative count removes that many from the end
            else:
                past, prefix = None, 0
        stop = _Stop(cancel, tok, ids.shape[1], params.stop)
        eos = {i for i in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None))
               if isinstance(i, int)}
        ids = ids.to(self.model.placement.device)
        kwargs = dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=params.max_new_tokens,
            do_sample=False, stopping_criteria=[stop], pad_token_id=tok.pad_token_id,
            eos_token_id=sorted(eos) or None, repetition_penalty=params.repetition_penalty,
            logits_processor=[] if params.greedy else [_SeededSampler(params, generator)],
            temperature=None, top_p=None, top_k=None, use_cache=True,
        )
        if past is None:
            from transformers import DynamicCache

            past = DynamicCache(config=model.config)
            if ids.shape[1] > 1 and getattr(past, "is_croppable", True):
                # all but the last prompt token now, so generate() then reads the last one alone, as after
                # a cached prefix: a regenerated prompt (or its retry on another replica) rounds bit for bit
                # as the first run did (a 1-row and an n-row product differ in the last bit, and a greedy
                # near-tie can turn on that)
                with torch.inference_mode():
                    model(input_ids=ids[:, :-1], attention_mask=torch.ones_like(ids[:, :-1]), past_key_values=past,
                          use_cache=True)
        kwargs[_cache_kwarg()] = past
        info = dict(seed=seed, prompt_tokens=int(ids.shape[1]), prompt_tokens_evaluated=int(ids.shape[1]) - prefix,
                    backend=self.backend)
        return info, stop, _Decoder(tok, params.stop, eos, cancel), kwargs

    def _keep_cache(self, kwargs: dict, decoder: _Decoder, scope: str) -> None:
        """Store the extended KV cache under the tokens it now covers, for this scope's next chat turn."""
        past = kwargs[_cache_kwarg()]
        covered = past.get_seq_length()
        tokens = kwargs["input_ids"][0].tolist() + decoder.ids
        self.prompt_cache.put(tokens[:covered], past, scope)

    def stream(
        self,
        params: TextParams,
        *,
        generator: torch.Generator | None = None,
        cancel: threading.Event | None = None,
        stats: dict | None = None,
    ) -> Iterator[str]:
        """Yield the new text piece by piece (generate runs in a worker thread). `stats` (if given) is
        filled with the TextOutput fields."""
        cancel = cancel or threading.Event()
        stats = stats if stats is not None else {}
        info, stop, decoder, kwargs = self._prepare(params, generator, cancel)
        # 5. Generate in a worker thread; token ids come back through a queue
        streamer = _TokenQueue()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # reported in the consuming thread
                failure.append(exc)
                streamer.end()

        started = time.perf_counter()
        worker = threading.Thread(target=work, name="text-generate", daemon=True)
        worker.start()
        # 6. Decode incrementally
        try:
            while (chunk := streamer.queue.get()) is not None:
                decoder.first = decoder.first if decoder.first is not None else time.perf_counter() - started
                if piece := decoder.feed(chunk):
                    yield piece
                if decoder.cut:
                    break
            else:
                if piece := decoder.flush():
                    yield piece
            decoder.settle(stop.hit_stop)
        finally:
            cancel.set()  # a consumer that stops early (UI Stop, closed tab) ends generation too
            worker.join()
        if failure:
            raise failure[0]
        self._keep_cache(kwargs, decoder, params.cache_scope)
        stats.update(decoder.stats(), **info, seconds=time.perf_counter() - started)

    def __call__(
        self,
        params: TextParams,
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TextOutput:
        """Generate the whole answer in the calling thread; `callback` receives each new piece as it is
        produced. Same decoding as `stream()`, so the texts are identical."""
        cancel = cancel or threading.Event()
        info, stop, decoder, kwargs = self._prepare(params, generator, cancel)
        started = time.perf_counter()
        emit = callback or (lambda _piece: None)

        class _Direct:
            skip_prompt = True

            def put(self, value: torch.Tensor) -> None:
                if self.skip_prompt:
                    self.skip_prompt = False
                    return
                decoder.first = decoder.first if decoder.first is not None else time.perf_counter() - started
                if not decoder.cut and (piece := decoder.feed(value.reshape(-1).tolist())):
                    emit(piece)

            def end(self) -> None:
                if not decoder.cut and (piece := decoder.flush()):
                    emit(piece)

        with torch.inference_mode():
            self.model.model.generate(**kwargs, streamer=_Direct())
        decoder.settle(stop.hit_stop)
        self._keep_cache(kwargs, decoder, params.cache_scope)
        return TextOutput(**decoder.stats(), **info, seconds=time.perf_counter() - started)


class _Decoder:
    """Turns token ids into visible text pieces: decodes incrementally, holds back what could be the
    start of a stop string or half of a multi-byte character, and cuts at the first stop string."""

    def __init__(self, tokenizer, stops: tuple[str, ...], eos: set[int], cancel: threading.Event) -> None:
        self.tok, self.stops, self.eos, self.cancel = tokenizer, stops, eos, cancel
        self.ids: list[int] = []
        self.shown = ""
        self.cut = False
        self.finish = "length"
        self.first: float | None = None

    def feed(self, chunk: list[int]) -> str:
        self.ids.extend(chunk)
        if self.eos.intersection(chunk):
            self.finish = "stop"
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        at = min((text.find(s) for s in self.stops if s in text), default=-1)
        if at >= 0:
            text, self.finish, self.cut = text[:at], "stop", True
            self.cancel.set()
        visible = text if self.cut else text[: len(text) - _held_back(text, self.stops)]
        if visible.endswith("\ufffd"):  # half of a multi-byte character
            visible = visible[:-1]
        return self._advance(visible)

    def flush(self) -> str:
        return self._advance(self.tok.decode(self.ids, skip_special_tokens=True))

    def _advance(self, visible: str) -> str:
        if len(visible) > len(self.shown) and visible.startswith(self.shown):
            piece, self.shown = visible[len(self.shown):], visible
            return piece
        return ""

    def settle(self, hit_stop: bool = False) -> None:
        if hit_stop:
            self.finish = "stop"
        elif self.cancel.is_set() and self.finish == "length" and not self.cut:
            self.finish = "cancelled"

    def stats(self) -> dict:
        return dict(text=self.shown, new_tokens=len(self.ids), finish_reason=self.finish,
                    first_token_seconds=self.first)

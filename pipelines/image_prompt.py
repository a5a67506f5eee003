"""Prompts for image models: AUTOMATIC1111 weighting syntax through compel, and styles.

Weighting — `(word:1.3)`, `(word)` ×1.1, `[word]` ÷1.1, nesting multiplies, `\\(` `\\)` `\\[` `\\]` for literal
brackets — is parsed here (A1111's rules) into weighted fragments that compel turns into embeddings for
CLIP text encoders (SD 1.x/2.x, SDXL). Long prompts are encoded in 77-token chunks instead of being cut.
A prompt with no brackets that fits one chunk goes to diffusers untouched, so plain prompts give exactly
what they gave before. Models whose text encoder is not CLIP (the embedded emoji model's MiniLM) cannot
weight words: their prompt is used without the syntax, and the caller is told so.

Styles are named prompt/negative templates; `{prompt}` marks where the user's prompt goes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

_TOKENS = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:|\\", re.X)
_BAD_WEIGHT = re.compile(r"(?<!\\)\(([^()\[\]\\]*?):\s*([^\s()\[\]\\]+)\s*\)")
ROUND, SQUARE = 1.1, 1 / 1.1
MAX_WEIGHT = 10.0


def parse_weights(text: str, field: str = "prompt") -> list[tuple[str, float]]:
    """A1111 attention syntax → [(text, weight)], runs of equal weight merged. Raises ValueError (naming
    `field`) for a weight that is not a number, e.g. `(word:abc)`, or one outside 0…10."""
    for match in _BAD_WEIGHT.finditer(text):
        try:
            float(match.group(2))
        except ValueError:
            raise ValueError(f"{field}: the weight in {match.group(0)[:60]!r} must be a number, e.g. "
                             f"({match.group(1)[:30] or 'word'}:1.3); write \\( and \\) for literal brackets") from None
    parts: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            parts.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(parts))
        elif token == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            value = float(weight)
            if not 0.0 <= value <= MAX_WEIGHT:
                raise ValueError(f"{field}: weights go from 0 to {MAX_WEIGHT:g}, got {value:g} in {token!r}")
            multiply(round_open.pop(), value)
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            parts.append([token, 1.0])
    for start in round_open:  # unclosed brackets still count, as in A1111
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    merged: list[list] = []
    for part in parts:
        if merged and abs(merged[-1][1] - part[1]) < 1e-9:
            merged[-1][0] += part[0]
        else:
            merged.append(list(part))
    return [(t, round(w, 6)) for t, w in merged if t] or [("", 1.0)]


def has_syntax(text: str) -> bool:
    return bool(re.search(r"[()\[\]]", text))


def plain_text(text: str) -> str:
    """The prompt as the words a model without weighting reads: the syntax removed."""
    return "".join(part for part, _ in parse_weights(text))


def can_weight(pipe) -> bool:
    """Whether the pipeline's text encoder(s) are CLIP (what compel weights)."""
    encoder = getattr(pipe, "text_encoder", None)
    return encoder is not None and type(encoder).__name__.startswith("CLIPText") and \
        getattr(pipe, "tokenizer", None) is not None


def _token_count(pipe, text: str) -> int:
    return len(pipe.tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])


@dataclass
class Conditioning:
    """What goes to the pipeline instead of prompt strings: embeddings for one prompt/negative pair
    (batch 1; the caller repeats them), plus notes for the user."""

    kwargs: dict
    notes: tuple[str, ...] = ()


def encode_prompts(pipe, prompt: str, negative: str, cache: dict | None = None) -> Conditioning | None:
    """None when diffusers should take the strings as they are (no weighting syntax, one chunk);
    otherwise compel's embeddings, or the prompts without syntax and a note for models that cannot weight.
    `cache` (a dict kept with the model) holds the Compel object."""
    weighted = has_syntax(prompt) or has_syntax(negative)
    for text, field in ((prompt, "prompt"), (negative, "negative_prompt")):
        parse_weights(text, field)  # bad syntax is an error even where it would be dropped
    if not can_weight(pipe):
        if not weighted:
            return None
        return Conditioning({"prompt": plain_text(prompt), "negative_prompt": plain_text(negative)},
                            ("this model's text encoder cannot weight words; the prompt was used without "
                             "(…) and […]",))
    limit = getattr(pipe.tokenizer, "model_max_length", 77)
    long = max(_token_count(pipe, prompt), _token_count(pipe, negative)) > limit
    if not weighted and not long:
        return None
    compel = _compel(pipe, cache if cache is not None else {})
    conditionings, pooled = [], []
    with torch.inference_mode():
        for text in (prompt, negative):
            conditionings.append(_embed(compel, text))
            if compel.requires_pooled:
                pooled.append(compel.conditioning_provider.get_pooled_embeddings([plain_text(text)],
                                                                                 device=compel.device))
        positive, negative_embeds = compel.pad_conditioning_tensors_to_same_length(conditionings)
    kwargs = {"prompt_embeds": positive, "negative_prompt_embeds": negative_embeds}
    if pooled:
        kwargs.update(pooled_prompt_embeds=pooled[0], negative_pooled_prompt_embeds=pooled[1])
    notes = (f"long prompt encoded in {limit}-token chunks",) if long else ()
    return Conditioning(kwargs, notes)


def _embed(compel, text: str):
    from compel.prompt_parser import FlattenedPrompt, Fragment

    fragments = FlattenedPrompt([Fragment(t, w) for t, w in parse_weights(text)])
    (embeds, _tokens), _ = compel.build_conditioning_tensor_for_prompt_object(fragments)
    return embeds


def _compel(pipe, cache: dict):
    key = id(pipe.text_encoder)
    if cache.get("key") != key:
        from compel import Compel, ReturnedEmbeddingsType

        if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: two encoders, the second pooled
            compel = Compel(tokenizer=[pipe.tokenizer, pipe.tokenizer_2],
                            text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
                            returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                            requires_pooled=[False, True], truncate_long_prompts=False)
        else:
            compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)
        cache.update(key=key, compel=compel)
    return cache["compel"]


# -- styles ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Style:
    """A named prompt/negative template; `{prompt}` is replaced by the user's prompt (appended when absent)."""

    name: str
    prompt: str = "{prompt}"
    negative: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 60:
            raise ValueError("style name: 1 to 60 characters")
        if len(self.prompt) > 2000 or len(self.negative) > 2000:
            raise ValueError("style: prompt and negative templates up to 2,000 characters each")

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        text = self.prompt.replace("{prompt}", prompt) if "{prompt}" in self.prompt else \
            ", ".join(p for p in (prompt, self.prompt) if p)
        return text, ", ".join(p for p in (negative, self.negative) if p)


SHIPPED_STYLES = (
    Style("Flat sticker", "{prompt}, flat vector sticker, bold outline, simple shapes",
          "photo, realistic, blurry, noisy"),
    Style("Watercolour", "watercolour painting of {prompt}, soft washes, paper texture", "photo, 3d render, harsh"),
    Style("Photograph", "photo of {prompt}, natural light, 35mm, detailed", "drawing, cartoon, blurry, lowres"),
    Style("Pixel art", "pixel art of {prompt}, 16-bit, limited palette", "blurry, smooth gradients, photo"),
)


def load_styles(path: Path) -> list[Style]:
    """The shipped styles, then the user's (from `path`, JSON [{name, prompt, negative}]); a user style of
    the same name replaces the shipped one. A missing or unreadable file means no user styles."""
    styles = {s.name: s for s in SHIPPED_STYLES}
    try:
        for entry in json.loads(Path(path).read_text(encoding="utf-8")):
            style = Style(str(entry["name"]), str(entry.get("prompt", "{prompt}")), str(entry.get("negative", "")))
            styles[style.name] = style
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return list(styles.values())


def save_style(path: Path, style: Style) -> None:
    """Add or replace a user style (written to a temporary file, then renamed)."""
    path = Path(path)
    try:
        entries = [e for e in json.loads(path.read_text(encoding="utf-8")) if e.get("name") != style.name]
    except (OSError, ValueError, AttributeError):
        entries = []
    entries.append({"name": style.name, "prompt": style.prompt, "negative": style.negative})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)

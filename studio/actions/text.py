"""Text: a chat or completion's frozen params, streamed and kept."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import fields, replace

from pipelines.text import TextParams, parse_stop
from studio.actions.library import check_room
from studio.events import as_int, keep_output, parse_seed

STREAM_INTERVAL = 0.04  # seconds between streamed page updates


# the sampling settings older callers pass by position after (prompt, mode, system_prompt, history)
POSITIONAL_SETTINGS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed")
_NAMES = frozenset(("prompt", "mode", "system_prompt", "history", *POSITIONAL_SETTINGS, "min_p", "continue_last"))
_DEFAULTS = {**{f.name: f.default for f in fields(TextParams) if f.name in _NAMES}, "prompt": ""}


def text_params(values: Mapping[str, object]) -> TextParams:
    """TextParams from form values by name (the Text tab's settings panel, the APIs): UI numbers (sliders send
    floats, seeds come as text) are parsed with errors naming the field; a name left out takes TextParams'
    default; an unknown name is a mistake in the caller, refused."""
    unknown = set(values) - _NAMES
    if unknown:
        raise TypeError(f"text_params: unknown setting(s) {', '.join(sorted(unknown))}")
    v = {**_DEFAULTS, **values}
    return TextParams(
        prompt=v["prompt"] or "", mode=v["mode"], system_prompt=v["system_prompt"] or "",
        history=tuple(v["history"] or ()), max_new_tokens=as_int("max_new_tokens", v["max_new_tokens"]),
        temperature=float(v["temperature"]), top_p=float(v["top_p"]), top_k=as_int("top_k", v["top_k"]),
        repetition_penalty=float(v["repetition_penalty"]), stop=parse_stop(v["stop"] or ""),
        seed=parse_seed(v["seed"]), min_p=float(v["min_p"]), continue_last=bool(v["continue_last"]),
    )


def build_params(prompt, mode, system_prompt="", history=(), *settings, **named) -> TextParams:
    """`text_params` with the request's text first and the settings by name (`max_new_tokens=…, seed=…`).
    Kept for the APIs' older calls, which give the seven POSITIONAL_SETTINGS by position, in that order."""
    if len(settings) > len(POSITIONAL_SETTINGS):
        raise TypeError(f"build_params: at most {len(POSITIONAL_SETTINGS)} settings by position")
    given = dict(zip(POSITIONAL_SETTINGS, settings))
    twice = set(given) & set(named)
    if twice:
        raise TypeError(f"build_params: {', '.join(sorted(twice))} given by position and by name")
    return text_params({"prompt": prompt, "mode": mode, "system_prompt": system_prompt, "history": history,
                        **given, **named})


def run_text(services, model: str, params: TextParams, session: str, owner: str,
             progress=None, backend: str = "") -> Iterator[tuple[str, dict]]:
    """Stream (text so far, stats) and save the finished text to History. Stats are empty until done.
    Fetching and loading the model (first use) are reported on `progress`. The model is held in use until the
    answer ends (never evicted, its engine never closed, mid-answer); the session's own prompt cache only. The
    tokens it may write count against a guest's quota, and there must be room to keep the answer."""
    from studio.boundary import text_units

    check_room(services)
    services.host.admission.caller().spend(text_units(params.max_new_tokens), "this answer")
    params = replace(params, cache_scope=session)
    cancel = services.jobs.start(session, "text")
    stats: dict = {}
    text = ""
    shown = time.perf_counter()
    try:
        with services.host.text_lease(model, (lambda msg: progress(0.0, desc=msg)) if progress else None,
                                 backend) as pipe:
            for piece in pipe.stream(params, cancel=cancel, stats=stats):
                text += piece
                # at most ~25 page updates a second: each one costs the server a round of work, and a
                # person reads no faster (measured: one update per token slowed serving by a third)
                if time.perf_counter() - shown >= STREAM_INTERVAL:
                    shown = time.perf_counter()
                    yield text, {}
    finally:
        services.jobs.finish(session, "text", cancel)
    item = keep_output(
        services, "text", {".txt": stats["text"].encode("utf-8")}, prompt=params.prompt,
        params={**params.__dict__, "history": [list(h) for h in params.history], "stop": list(params.stop),
                "seed": stats["seed"], "model": pipe.model.name, "backend": pipe.backend},
        seed=stats["seed"], model=pipe.model.name, device=pipe.runs_on,
        timings={k: stats[k] for k in ("seconds", "first_token_seconds", "new_tokens", "prompt_tokens",
                                      "prompt_tokens_evaluated")},
        owner=owner,
    )
    yield stats["text"], {**stats, "history_id": item.id if item else None}

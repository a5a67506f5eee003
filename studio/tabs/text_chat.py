"""The Text tab's conversation tools: export and import a chat as JSON, edit an earlier message and answer
again from there, continue a cut-off answer, and a live token count of the prompt against the context."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr

from pipelines.text import ROLES, TextParams

FORMAT = "genai-studio.chat/1"
MAX_IMPORT_BYTES = 2_000_000


def content_text(content) -> str:
    """A chat message's text (Gradio may hand content back as parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Gradio 6 may hand back [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return content.get("text", "")
    return str(content)


def turns_of(chat_history) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], content_text(m["content"])) for m in chat_history or [])


def export_chat(history, chat_history, system_prompt: str, model: str) -> str:
    """Write the conversation as JSON ({format, model, system_prompt, messages}) into the caller's own scratch
    folder (an unguessable name, served to them alone, removed after a day) and return its path."""
    from studio.tabs.common import user_of

    if not chat_history:
        raise gr.Error("Nothing to export yet: the conversation is empty.")
    path = history.scratch_file(user_of(), f"chat-{time.strftime('%Y%m%d-%H%M%S')}", ".json")
    data = {"format": FORMAT, "model": model or "", "system_prompt": system_prompt or "",
            "messages": [{"role": r, "content": c} for r, c in turns_of(chat_history)]}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return str(path)


def import_chat(path) -> tuple[list[dict], str]:
    """(messages for the Chatbot, system prompt) from an exported file — or any JSON list of
    {role, content} messages (OpenAI style). Clear errors for anything else."""
    if not path:
        raise ValueError("conversation file: choose a .json file exported from the studio")
    raw = Path(path).read_bytes()
    if len(raw) > MAX_IMPORT_BYTES:
        raise ValueError(f"conversation file: at most {MAX_IMPORT_BYTES // 1_000_000} MB, got {len(raw):,} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"conversation file: not JSON ({exc.__class__.__name__})") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list):
        raise ValueError("conversation file: expected {\"messages\": [{\"role\", \"content\"}, …]}")
    system = data.get("system_prompt", "") if isinstance(data, dict) else ""
    chat = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"conversation file: messages[{i}] must be {{role: user|assistant|system, content: text}}")
        if m["role"] == "system":
            system = m["content"]
        else:
            chat.append({"role": m["role"], "content": m["content"]})
    return chat, str(system or "")


def edit_from(chat_history, evt: gr.EditData):
    """After an edit of one of the user's messages: the conversation before it, and the edited text as the
    message to send (the answer is then made again from there)."""
    chat_history = list(chat_history or [])
    index = evt.index if isinstance(evt.index, int) else evt.index[0]
    return chat_history[:index], content_text(evt.value)


def token_count(services, model: str, engine: str, params: TextParams | None, max_new: int) -> str:
    """"123 of 8,192 tokens" for the prompt the model would read — only when the model is loaded already
    (a keystroke never loads a model)."""
    if params is None:
        return ""
    try:
        pipe = services.host.loaded_text_pipeline(model, engine)
    except Exception:  # an unknown model name while typing it: no count
        return ""
    if pipe is None:
        return "Token count: after the first answer (the model is not loaded yet)"
    counted = pipe.count_tokens(params)
    if counted is None:
        return gr.skip()
    limit = services.settings.text_limits.max_prompt_tokens
    context = counted["context"] or limit + int(max_new)
    room = min(limit, context - int(max_new))
    warn = " — **too long**: shorten it or clear the chat" if counted["tokens"] > room else ""
    return f"Prompt: **{counted['tokens']:,}** of {room:,} tokens (context {context:,}, {int(max_new)} for the answer){warn}"

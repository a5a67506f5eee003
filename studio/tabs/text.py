"""The Text tab: Chat and Completion over any causal LM, streamed, with presets and a Stop button."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gradio as gr

from pipelines.text import TextParams, parse_stop
from studio.services import Services
from studio.tabs.common import (
    TabHandle,
    as_int,
    friendly_errors,
    guarded,
    keep_output,
    parse_seed,
    session_of,
    user_of,
)
from studio.tabs.text_chat import content_text, edit_from, export_chat, import_chat, token_count, turns_of

STREAM_INTERVAL = 0.04  # seconds between streamed page updates
LANGUAGES = ("English", "French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Japanese",
             "Chinese", "Korean", "Russian", "Arabic", "Hindi")
PRESETS = {
    "Story continuation": "Continue this story with vivid, concrete detail. Keep the same voice.\n\n{text}",
    "Poem": "Write a short poem about {text}.",
    "Product description": "Write an enticing, honest product description (about 80 words) for: {text}",
    "Dialogue": "Write a short dialogue between two characters about {text}. Put each line on its own line.",
    "Translation": "Translate the following text into {language}. Reply with the translation only.\n\n{text}",
    "Image prompt expansion": (
        "Rewrite this image prompt as one richer line for an image generator: subject, style, lighting, "
        "colours and composition. Reply with the prompt only.\n\n{text}"
    ),
}


def apply_preset(preset: str, language: str, text: str) -> str:
    """Wrap the user's text in a preset template (their text is kept, never lost)."""
    if not preset or preset not in PRESETS:
        return text
    body = text.strip() or "…"
    return PRESETS[preset].format(text=body, language=language or "English")


def _status(out: dict) -> str:
    if not out:
        return ""
    rate = out["new_tokens"] / out["seconds"] if out["seconds"] else 0
    first = f" · first token {out['first_token_seconds']:.2f}s" if out.get("first_token_seconds") else ""
    reused = out["prompt_tokens"] - out.get("prompt_tokens_evaluated", out["prompt_tokens"])
    cached = f" · {reused} of {out['prompt_tokens']} prompt tokens reused" if reused > 0 else ""
    return (f"**Seed {out['seed']}** · {out['new_tokens']} tokens in {out['seconds']:.1f}s "
            f"({rate:.1f} tok/s){first}{cached} · ended by {out['finish_reason']} · {out.get('backend', '')}")


def build_params(prompt, mode, system_prompt, history, max_new_tokens, temperature, top_p, top_k,
                 repetition_penalty, stop, seed, *, min_p=0.0, continue_last=False) -> TextParams:
    return TextParams(
        prompt=prompt or "", mode=mode, system_prompt=system_prompt or "", history=tuple(history),
        max_new_tokens=as_int("max_new_tokens", max_new_tokens), temperature=float(temperature),
        top_p=float(top_p), top_k=as_int("top_k", top_k), repetition_penalty=float(repetition_penalty),
        stop=parse_stop(stop or ""), seed=parse_seed(seed), min_p=float(min_p), continue_last=bool(continue_last),
    )


def run_text(services: Services, model: str, params: TextParams, session: str, owner: str,
             progress: gr.Progress | None = None, backend: str = "") -> Iterator[tuple[str, dict]]:
    """Stream (text so far, stats) and save the finished text to History. Stats are empty until done.
    Fetching and loading the model (first use) are reported on `progress`."""
    pipe = services.text_pipeline(model, (lambda msg: progress(0.0, desc=msg)) if progress else None, backend)
    cancel = services.jobs.start(session, "text")
    stats: dict = {}
    text = ""
    shown = time.perf_counter()
    try:
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


def build(services: Services) -> TabHandle:
    registry = services.registry
    limits = services.settings.text_limits
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Tabs() as modes:
                with gr.Tab("Chat", id="chat"):
                    chatbot = gr.Chatbot(label="Conversation (edit one of your messages to answer again from it)",
                                         height=420, elem_id="text-chat", editable="user",
                                         placeholder="Say hello, or pick a preset below.")
                    with gr.Row():
                        message = gr.Textbox(label="Message", placeholder="Type a message and press Enter",
                                             lines=2, scale=5, elem_id="text-chat-input")
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="text-chat-send")
                    chat_tokens = gr.Markdown("", elem_id="text-chat-tokens")
                    with gr.Row():
                        stop_chat = gr.Button("Stop", variant="stop", size="sm")
                        regenerate = gr.Button("Regenerate", size="sm")
                        go_on = gr.Button("Continue", size="sm", elem_id="text-chat-continue")
                        undo = gr.Button("Undo", size="sm")
                        clear = gr.Button("Clear", size="sm")
                        export = gr.Button("Export", size="sm", elem_id="text-chat-export")
                        import_button = gr.UploadButton("Import", size="sm", file_types=[".json"],
                                                        elem_id="text-chat-import")
                    chat_file = gr.File(label="Conversation (.json)", visible=False, interactive=False,
                                        elem_id="text-chat-file")
                    system_prompt = gr.Textbox(label="System prompt (optional)", lines=2,
                                               placeholder="You are a helpful creative writing partner.")
                with gr.Tab("Completion", id="completion"):
                    prompt = gr.Textbox(label="Prompt", lines=8, elem_id="text-prompt",
                                        placeholder="Start a story, a poem, a list… the model continues it.")
                    completion_tokens = gr.Markdown("", elem_id="text-completion-tokens")
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", elem_id="text-generate")
                        more = gr.Button("Continue", elem_id="text-continue")
                        stop_completion = gr.Button("Stop", variant="stop")
                    output = gr.Textbox(label="Continuation", lines=10, elem_id="text-output",
                                        buttons=["copy"], interactive=False)
            with gr.Row():
                preset = gr.Dropdown(list(PRESETS), label="Preset", value=None, scale=3)
                language = gr.Dropdown(list(LANGUAGES), label="Translate into", value="French", scale=2)
                use_preset = gr.Button("Apply preset to the text box", scale=2)
            status = gr.Markdown("", elem_id="text-status")
        with gr.Column(scale=2):
            model = gr.Dropdown(registry.names("text"), value=registry.default("text"), allow_custom_value=True,
                                label="Model", info="A listed model, a hub id (e.g. gpt2) or a local folder / .gguf",
                                elem_id="text-model")
            engine = gr.Dropdown(["auto", "llama.cpp", "transformers"], value=services.settings.text_backend,
                                 label="Engine", elem_id="text-engine",
                                 info="auto: llama.cpp for GGUF files on CPU/Apple (faster), transformers otherwise")
            max_new_tokens = gr.Slider(1, limits.max_new_tokens, value=min(256, limits.max_new_tokens), step=1,
                                       label="Max new tokens")
            temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature", info="0 = greedy, always the same")
            top_p = gr.Slider(0.05, 1, value=0.9, step=0.01, label="Top-p")
            top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k", info="0 = off")
            min_p = gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p", info="0 = off; e.g. 0.05")
            repetition_penalty = gr.Slider(1, 2, value=1.1, step=0.01, label="Repetition penalty")
            stop = gr.Textbox(label="Stop strings", placeholder="comma-separated; \\n for a newline")
            seed = gr.Textbox(label="Seed", placeholder="blank = random", elem_id="text-seed")

    settings = [max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, stop, seed, engine]

    @friendly_errors
    @guarded(services, "text", generation=True)
    def complete(prompt_text, model_name, max_new, temp, top_p_, top_k_, min_p_, penalty, stops, seed_, engine_,
                 request: gr.Request, progress=gr.Progress()):
        params = build_params(prompt_text, "completion", "", (), max_new, temp, top_p_, top_k_, penalty, stops, seed_,
                              min_p=min_p_)
        yield "", "Working… (the first request loads the model)"
        for text, stats in run_text(services, model_name, params, session_of(request), user_of(request), progress,
                                    engine_):
            yield text, _status(stats)

    @friendly_errors
    @guarded(services, "text", generation=True)
    def complete_more(prompt_text, so_far, model_name, max_new, temp, top_p_, top_k_, min_p_, penalty, stops, seed_,
                      engine_, request: gr.Request, progress=gr.Progress()):
        """Continue: the prompt and the text so far are read as one, and the new text is added on."""
        if not so_far:
            raise ValueError("continue: generate something first; Continue writes on from its end")
        params = build_params((prompt_text or "") + so_far, "completion", "", (), max_new, temp, top_p_, top_k_,
                              penalty, stops, seed_, min_p=min_p_)
        for text, stats in run_text(services, model_name, params, session_of(request), user_of(request), progress,
                                    engine_):
            yield so_far + text, _status(stats)

    @friendly_errors
    @guarded(services, "text", generation=True)
    def chat(user_message, chat_history, system, model_name, max_new, temp, top_p_, top_k_, min_p_, penalty, stops,
             seed_, engine_, request: gr.Request, progress=gr.Progress()):
        chat_history = list(chat_history or [])
        params = build_params(user_message, "chat", system, turns_of(chat_history), max_new, temp, top_p_, top_k_,
                              penalty, stops, seed_, min_p=min_p_)
        chat_history.append({"role": "user", "content": user_message})
        yield chat_history, "", "Working… (the first request loads the model)"
        for text, stats in run_text(services, model_name, params, session_of(request), user_of(request), progress,
                                    engine_):
            yield chat_history + [{"role": "assistant", "content": text}], "", _status(stats)

    @friendly_errors
    @guarded(services, "text", generation=True)
    def chat_more(chat_history, system, model_name, max_new, temp, top_p_, top_k_, min_p_, penalty, stops, seed_,
                  engine_, request: gr.Request, progress=gr.Progress()):
        """Continue the last answer (cut off by the token limit or Stop) from its last word."""
        chat_history = list(chat_history or [])
        params = build_params("", "chat", system, turns_of(chat_history), max_new, temp, top_p_, top_k_, penalty,
                              stops, seed_, min_p=min_p_, continue_last=True)
        start = turns_of(chat_history)[-1][1]
        for text, stats in run_text(services, model_name, params, session_of(request), user_of(request), progress,
                                    engine_):
            yield chat_history[:-1] + [{"role": "assistant", "content": start + text}], _status(stats)

    def count(kind, text, chat_history, system, model_name, max_new, engine_):
        try:
            if kind == "chat":
                params = build_params(text or " ", "chat", system, turns_of(chat_history), max_new, 0.7, 0.9, 0,
                                      1.0, "", "")
            else:
                params = build_params(text, "completion", "", (), max_new, 0.7, 0.9, 0, 1.0, "", "") \
                    if (text or "").strip() else None
        except ValueError:
            return ""
        return token_count(services, model_name, engine_, params, max_new)

    def regenerate_last(chat_history):
        chat_history = list(chat_history or [])
        while chat_history and chat_history[-1]["role"] == "assistant":
            chat_history.pop()
        if not chat_history:
            raise gr.Error("Nothing to regenerate yet: send a message first.")
        last = chat_history.pop()
        return chat_history, content_text(last["content"])

    def undo_last(chat_history):
        chat_history = list(chat_history or [])
        while chat_history and chat_history[-1]["role"] == "assistant":
            chat_history.pop()
        last = chat_history.pop() if chat_history else None
        return chat_history, content_text(last["content"]) if last else ""

    def stop_job(request: gr.Request):
        services.jobs.cancel(session_of(request), "text")

    limit = services.settings.text_concurrency
    generate.click(complete, [prompt, model, *settings], [output, status], api_visibility="private",
                   concurrency_limit=limit, concurrency_id="text", show_progress="minimal")
    more.click(complete_more, [prompt, output, model, *settings], [output, status], api_visibility="private",
               concurrency_id="text", show_progress="minimal")
    chat_inputs = [message, chatbot, system_prompt, model, *settings]
    chat_outputs = [chatbot, message, status]
    send.click(chat, chat_inputs, chat_outputs, api_visibility="private", concurrency_limit=limit, concurrency_id="text",
               show_progress="minimal")
    message.submit(chat, chat_inputs, chat_outputs, api_visibility="private", concurrency_id="text",
                   show_progress="minimal")
    regenerate.click(regenerate_last, [chatbot], [chatbot, message], api_visibility="private").then(
        chat, chat_inputs, chat_outputs, api_visibility="private", concurrency_id="text")
    go_on.click(chat_more, [chatbot, system_prompt, model, *settings], [chatbot, status], api_visibility="private",
                concurrency_id="text", show_progress="minimal")
    chatbot.edit(edit_from, [chatbot], [chatbot, message], api_visibility="private").then(
        chat, chat_inputs, chat_outputs, api_visibility="private", concurrency_id="text")
    export.click(lambda h, s_, m: gr.File(export_chat(services.history.root / "exports" / "chats", h, s_, m),
                                          visible=True),
                 [chatbot, system_prompt, model], chat_file, api_visibility="private")
    import_button.upload(friendly_errors(import_chat), import_button, [chatbot, system_prompt],
                         api_visibility="private")
    for kind, box, tokens in (("chat", message, chat_tokens), ("completion", prompt, completion_tokens)):
        box.change(lambda t, h, s_, m, n, e, k=kind: count(k, t, h, s_, m, n, e),
                   [box, chatbot, system_prompt, model, max_new_tokens, engine], tokens, api_visibility="private",
                   queue=False, trigger_mode="always_last", show_progress="hidden")
    undo.click(undo_last, [chatbot], [chatbot, message], api_visibility="private")
    clear.click(lambda: ([], ""), None, [chatbot, status], api_visibility="private")
    for button in (stop_chat, stop_completion):
        button.click(stop_job, None, None, api_visibility="private", queue=False)
    use_preset.click(apply_preset, [preset, language, prompt], [prompt], api_visibility="private")
    use_preset.click(apply_preset, [preset, language, message], [message], api_visibility="private")


    fields = {"prompt": prompt, "system_prompt": system_prompt, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
              "repetition_penalty": repetition_penalty, "stop": stop, "seed": seed, "model": model, "backend": engine}

    def restore(params: dict) -> list:
        """Fill the settings from a History item and open Chat or Completion as it was made: a chat item
        brings back its conversation and puts its message in the Message box (Send remakes the answer;
        same seed, same text); empty values (an item without a model name, say) leave the setting alone."""
        values = {k: v for k, v in params.items() if v not in (None, "")}
        values["stop"] = ", ".join(s.replace("\n", "\\n") for s in values.get("stop", []))
        values["seed"] = str(values.get("seed", ""))
        if values.get("mode") == "chat":
            turns = [{"role": role, "content": text} for role, text in values.get("history", [])]
            values.pop("prompt", None)
            chat_values = [turns, params.get("prompt", "")]
            mode = "chat"
        else:
            chat_values = [gr.skip(), gr.skip()]
            mode = "completion"
        return [*(values.get(k, gr.skip()) for k in fields), *chat_values, gr.Tabs(selected=mode)]

    return TabHandle(restore_outputs=[*fields.values(), chatbot, message, modes], restore=restore,
                     owner_controls=[model, engine])

"""The Text tab: Chat and Completion over any causal LM, streamed, with presets and a Stop button."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from pipelines.text import TextParams
from studio.actions.text import run_text, text_params
from studio.services import Services
from studio.tabs.common import (
    TabHandle,
    friendly_errors,
    guarded,
    session_of,
    user_of,
)
from studio.tabs.text_chat import content_text, edit_from, export_chat, import_chat, token_count, turns_of

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


def _chat_panel() -> SimpleNamespace:
    ui = SimpleNamespace()
    ui.chatbot = gr.Chatbot(label="Conversation (edit one of your messages to answer again from it)", height=420,
                            elem_id="text-chat", editable="user", placeholder="Say hello, or pick a preset below.")
    with gr.Row():
        ui.message = gr.Textbox(label="Message", placeholder="Type a message and press Enter", lines=2, scale=5,
                                elem_id="text-chat-input")
        ui.send = gr.Button("Send", variant="primary", scale=1, elem_id="text-chat-send")
    ui.tokens = gr.Markdown("", elem_id="text-chat-tokens")
    with gr.Row():
        ui.stop = gr.Button("Stop", variant="stop", size="sm")
        ui.regenerate = gr.Button("Regenerate", size="sm")
        ui.go_on = gr.Button("Continue", size="sm", elem_id="text-chat-continue")
        ui.undo = gr.Button("Undo", size="sm")
        ui.clear = gr.Button("Clear", size="sm")
        ui.export = gr.Button("Export", size="sm", elem_id="text-chat-export")
        ui.import_button = gr.UploadButton("Import", size="sm", file_types=[".json"], elem_id="text-chat-import")
    ui.file = gr.File(label="Conversation (.json)", visible=False, interactive=False, elem_id="text-chat-file")
    ui.system_prompt = gr.Textbox(label="System prompt (optional)", lines=2,
                                  placeholder="You are a helpful creative writing partner.")
    return ui


def _completion_panel() -> SimpleNamespace:
    ui = SimpleNamespace()
    ui.prompt = gr.Textbox(label="Prompt", lines=8, elem_id="text-prompt",
                           placeholder="Start a story, a poem, a list… the model continues it.")
    ui.tokens = gr.Markdown("", elem_id="text-completion-tokens")
    with gr.Row():
        ui.generate = gr.Button("Generate", variant="primary", elem_id="text-generate")
        ui.more = gr.Button("Continue", elem_id="text-continue")
        ui.stop = gr.Button("Stop", variant="stop")
    ui.output = gr.Textbox(label="Continuation", lines=10, elem_id="text-output", buttons=["copy"],
                           interactive=False)
    return ui


# the sampling settings, named as TextParams (and History's items) name them
SAMPLING = ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "stop", "seed")


@dataclass
class SettingsPanel:
    """The settings beside both modes: which model and engine, and how to sample. A handler that generates
    takes `inputs` (with its own boxes added) and reads them back by name with `to_params`."""

    model: gr.Dropdown
    engine: gr.Dropdown
    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    min_p: gr.Slider
    repetition_penalty: gr.Slider
    stop: gr.Textbox
    seed: gr.Textbox

    @classmethod
    def build(cls, services: Services) -> SettingsPanel:
        registry, limits = services.host.registry, services.settings.text_limits
        return cls(
            model=gr.Dropdown(registry.names("text"), value=registry.default("text"), allow_custom_value=True,
                              label="Model", info="A listed model, a hub id (e.g. gpt2) or a local folder / .gguf",
                              elem_id="text-model"),
            engine=gr.Dropdown(["auto", "llama.cpp", "transformers"], value=services.settings.text_backend,
                               label="Engine", elem_id="text-engine",
                               info="auto: llama.cpp for GGUF files on CPU/Apple (faster), transformers otherwise"),
            max_new_tokens=gr.Slider(1, limits.max_new_tokens, value=min(256, limits.max_new_tokens), step=1,
                                     label="Max new tokens"),
            temperature=gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature", info="0 = greedy, always the same"),
            top_p=gr.Slider(0.05, 1, value=0.9, step=0.01, label="Top-p"),
            top_k=gr.Slider(0, 200, value=50, step=1, label="Top-k", info="0 = off"),
            min_p=gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p", info="0 = off; e.g. 0.05"),
            repetition_penalty=gr.Slider(1, 2, value=1.1, step=0.01, label="Repetition penalty"),
            stop=gr.Textbox(label="Stop strings", placeholder="comma-separated; \\n for a newline"),
            seed=gr.Textbox(label="Seed", placeholder="blank = random", elem_id="text-seed"),
        )

    @property
    def sampling(self) -> dict:
        """The sampling settings by name."""
        return {name: getattr(self, name) for name in SAMPLING}

    @property
    def inputs(self) -> set:
        """What a generating handler reads of this panel: the model, the engine and every sampling setting."""
        return {self.model, self.engine, *self.sampling.values()}

    def to_params(self, values: dict, **request) -> TextParams:
        """The request's TextParams: the sampling settings read from `values` (a handler's inputs by component),
        the rest (prompt, mode, system prompt, history, continue_last) given by the handler."""
        return text_params({**{name: values[box] for name, box in self.sampling.items()}, **request})

    def answer(self, services: Services, values: dict, params: TextParams, request, progress):
        """run_text on the chosen model and engine, for the page: (text so far, status line) as the model writes."""
        for text, stats in run_text(services, values[self.model], params, session_of(request), user_of(request),
                                    progress, values[self.engine]):
            yield text, _status(stats)


def _wire_completion(services: Services, ui: SimpleNamespace, side: SettingsPanel, status) -> None:
    @friendly_errors
    @guarded(services, "text", generation=True)
    def complete(values: dict, request: gr.Request, progress=gr.Progress()):
        params = side.to_params(values, prompt=values[ui.prompt], mode="completion")
        yield "", "Working… (the first request loads the model)"
        yield from side.answer(services, values, params, request, progress)

    @friendly_errors
    @guarded(services, "text", generation=True)
    def complete_more(values: dict, request: gr.Request, progress=gr.Progress()):
        """Continue: the prompt and the text so far are read as one, and the new text is added on."""
        so_far = values[ui.output]
        if not so_far:
            raise ValueError("continue: generate something first; Continue writes on from its end")
        params = side.to_params(values, prompt=(values[ui.prompt] or "") + so_far, mode="completion")
        for text, line in side.answer(services, values, params, request, progress):
            yield so_far + text, line

    options = dict(api_visibility="private", concurrency_id="text", show_progress="minimal")
    ui.generate.click(complete, {ui.prompt, *side.inputs}, [ui.output, status],
                      concurrency_limit=services.host.text_concurrency, **options)
    ui.more.click(complete_more, {ui.prompt, ui.output, *side.inputs}, [ui.output, status], **options)


def _wire_chat(services: Services, ui: SimpleNamespace, side: SettingsPanel, status) -> None:
    @friendly_errors
    @guarded(services, "text", generation=True)
    def chat(values: dict, request: gr.Request, progress=gr.Progress()):
        user_message, chat_history = values[ui.message], list(values[ui.chatbot] or [])
        params = side.to_params(values, prompt=user_message, mode="chat", system_prompt=values[ui.system_prompt],
                                history=turns_of(chat_history))
        chat_history.append({"role": "user", "content": user_message})
        yield chat_history, "", "Working… (the first request loads the model)"
        for text, line in side.answer(services, values, params, request, progress):
            yield chat_history + [{"role": "assistant", "content": text}], "", line

    @friendly_errors
    @guarded(services, "text", generation=True)
    def chat_more(values: dict, request: gr.Request, progress=gr.Progress()):
        """Continue the last answer (cut off by the token limit or Stop) from its last word."""
        chat_history = list(values[ui.chatbot] or [])
        params = side.to_params(values, mode="chat", system_prompt=values[ui.system_prompt],
                                history=turns_of(chat_history), continue_last=True)
        start = turns_of(chat_history)[-1][1]
        for text, line in side.answer(services, values, params, request, progress):
            yield chat_history[:-1] + [{"role": "assistant", "content": start + text}], line

    private = dict(api_visibility="private")
    options = dict(private, concurrency_id="text", show_progress="minimal")
    inputs = {ui.message, ui.chatbot, ui.system_prompt, *side.inputs}
    outputs = [ui.chatbot, ui.message, status]
    ui.send.click(chat, inputs, outputs, concurrency_limit=services.host.text_concurrency, **options)
    ui.message.submit(chat, inputs, outputs, **options)
    ui.regenerate.click(regenerate_last, [ui.chatbot], [ui.chatbot, ui.message], **private).then(
        chat, inputs, outputs, concurrency_id="text", **private)
    ui.go_on.click(chat_more, {ui.chatbot, ui.system_prompt, *side.inputs}, [ui.chatbot, status], **options)
    ui.chatbot.edit(edit_from, [ui.chatbot], [ui.chatbot, ui.message], **private).then(
        chat, inputs, outputs, concurrency_id="text", **private)

    def export(chat_history, system_prompt, model_name):
        return gr.File(export_chat(services.history, chat_history, system_prompt, model_name), visible=True)

    ui.export.click(export, [ui.chatbot, ui.system_prompt, side.model], ui.file, **private)
    ui.import_button.upload(friendly_errors(import_chat), ui.import_button, [ui.chatbot, ui.system_prompt], **private)
    ui.undo.click(undo_last, [ui.chatbot], [ui.chatbot, ui.message], **private)
    ui.clear.click(lambda: ([], ""), None, [ui.chatbot, status], **private)


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


def _wire_counts(services: Services, chat: SimpleNamespace, completion: SimpleNamespace, side: SettingsPanel):
    """The live token count under each text box."""
    def counter(kind: str, box):
        def count(values: dict) -> str:
            text, max_new = values[box], values[side.max_new_tokens]
            if kind == "completion" and not (text or "").strip():
                return token_count(services, values[side.model], values[side.engine], None, max_new)
            request = {"prompt": text, "mode": "completion"} if kind == "completion" else {
                "prompt": text or " ", "mode": "chat", "system_prompt": values[chat.system_prompt],
                "history": turns_of(values[chat.chatbot])}
            try:
                params = text_params({**request, "max_new_tokens": max_new})
            except ValueError:
                return ""
            return token_count(services, values[side.model], values[side.engine], params, max_new)
        return count

    read = {chat.chatbot, chat.system_prompt, side.model, side.max_new_tokens, side.engine}
    boxes = (("chat", chat.message, chat.tokens), ("completion", completion.prompt, completion.tokens))
    for kind, box, tokens in boxes:
        box.change(counter(kind, box), {box, *read}, tokens, api_visibility="private", queue=False,
                   trigger_mode="always_last", show_progress="hidden")


def build(services: Services) -> TabHandle:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Tabs() as modes:
                with gr.Tab("Chat", id="chat"):
                    chat = _chat_panel()
                with gr.Tab("Completion", id="completion"):
                    completion = _completion_panel()
            with gr.Row():
                preset = gr.Dropdown(list(PRESETS), label="Preset", value=None, scale=3)
                language = gr.Dropdown(list(LANGUAGES), label="Translate into", value="French", scale=2)
                use_preset = gr.Button("Apply preset to the text box", scale=2)
            status = gr.Markdown("", elem_id="text-status")
        with gr.Column(scale=2):
            side = SettingsPanel.build(services)
    _wire_completion(services, completion, side, status)
    _wire_chat(services, chat, side, status)
    _wire_counts(services, chat, completion, side)
    def stop_job(request: gr.Request):
        services.jobs.cancel(session_of(request), "text")

    for button in (chat.stop, completion.stop):
        button.click(stop_job, None, None, api_visibility="private", queue=False)
    for box in (completion.prompt, chat.message):
        use_preset.click(apply_preset, [preset, language, box], [box], api_visibility="private")
    return _restorer(chat, completion, side, modes)


def _restorer(chat: SimpleNamespace, completion: SimpleNamespace, side: SettingsPanel, modes) -> TabHandle:
    fields = {"prompt": completion.prompt, "system_prompt": chat.system_prompt, **side.sampling,
              "model": side.model, "backend": side.engine}

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

    return TabHandle(restore_outputs=[*fields.values(), chat.chatbot, chat.message, modes], restore=restore,
                     owner_controls=[side.model, side.engine])

"""The Text tab's conversation tools: export/import as JSON, editing an earlier message, token counts."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from studio.tabs.text_chat import edit_from, export_chat, import_chat, token_count


def test_a_conversation_exports_and_imports_round_trip(tmp_path):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}]
    from studio.caller import Caller, calling
    from studio.history import History

    history = History(tmp_path / "outputs")
    with calling(Caller("ann")):
        path = export_chat(history, chat, "Be brief.", "smollm2")
        again = export_chat(history, chat, "Be brief.", "smollm2")
    assert path != again  # two exports in one second never overwrite each other
    assert history.may_read("ann", Path(path), guest=True) and not history.may_read("bob", Path(path), guest=True)
    data = json.loads(open(path, encoding="utf-8").read())
    assert data["format"] == "genai-studio.chat/1" and data["model"] == "smollm2"
    assert data["messages"][1] == {"role": "assistant", "content": "Hello!"}
    messages, system = import_chat(path)
    assert system == "Be brief." and messages == [{"role": "user", "content": "Hi"},
                                                  {"role": "assistant", "content": "Hello!"}]
    openai = tmp_path / "openai.json"  # a bare list of messages, a system message among them
    openai.write_text(json.dumps([{"role": "system", "content": "Pirate."}, {"role": "user", "content": "Yo"}]))
    assert import_chat(openai) == ([{"role": "user", "content": "Yo"}], "Pirate.")


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not JSON"),
    (json.dumps({"messages": "hi"}).encode(), "expected"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(), r"messages\[0\] must be"),
    (b"[" + b'{"role": "user", "content": "x"},' * 200_000 + b"]", "at most 2 MB"),
])
def test_a_bad_conversation_file_is_explained(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        import_chat(path)


def test_editing_a_message_answers_again_from_there():
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    event = types.SimpleNamespace(index=2, value="c, but better")
    assert edit_from(chat, event) == (chat[:2], "c, but better")


def test_the_token_count_never_loads_a_model():
    services = types.SimpleNamespace(host=types.SimpleNamespace(loaded_text_pipeline=lambda model, engine: None),
                                     settings=types.SimpleNamespace(text_limits=types.SimpleNamespace(
                                         max_prompt_tokens=2048)))
    assert "not loaded yet" in token_count(services, "m", "auto", object(), 256)
    loaded = types.SimpleNamespace(count_tokens=lambda params: {"tokens": 2000, "context": 2048})
    services.host.loaded_text_pipeline = lambda model, engine: loaded
    shown = token_count(services, "m", "auto", object(), 256)
    assert "**2,000** of 1,792 tokens" in shown and "too long" in shown

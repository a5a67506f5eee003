"""OpenAI-compatible routes under /v1, field by field after OpenAI's API reference: models, chat completions and
completions (streamed as server-sent events ending `data: [DONE]`), image generations and edits. Each builds the
studio's own frozen params (TextParams, ImageParams) and calls the same actions as the page and the Gradio API;
the studio's extras (top_k, min_p, repetition_penalty; seed, steps, negative_prompt, guidance) are extra body
fields. Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from pipelines.image import ImageParams
from pipelines.text import ROLES
from studio.actions.text import build_params, run_text
from studio.compat.auth import ApiUser
from studio.compat.calls import b64, kept_pngs, make_pictures, picture, run_as, stream_as
from studio.compat.wire import CompatError, flag, json_body, number, route_class, text
from studio.events import origin

FINISH = {"length": "length", "stop": "stop", "cancelled": "stop"}


def error_shape(error: CompatError) -> dict:
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


def model_named(services, user: ApiUser, modality: str, name: str) -> str:
    """The studio model a request's `model` names: blank = the default; a listed name; for owners also what the
    host admits (a folder, file or hub id). An unknown name is 404 model_not_found."""
    name = (name or "").strip()
    if not name or name in allowed_models(services, user, modality):
        return name
    if not user.guest and "/" in name:
        return name  # a path or hub id: the host's admission decides, as for the page
    raise CompatError(404, f"The model '{name[:80]}' does not exist or you do not have access to it.",
                      param="model", code="model_not_found")


def allowed_models(services, user: ApiUser, modality: str) -> list[str]:
    """The listed models of `modality` a caller may use: all for owners; the default and loaded ones for guests."""
    names = services.host.registry.names(modality)
    if not user.guest:
        return names
    loaded = {key.split(" [")[0] for _, key in services.host.cache.loaded(modality)}
    return [n for n in names if n == services.host.registry.default(modality) or n in loaded]


def text_request(services, body: dict, *, chat: bool):
    """(TextParams, model name) from a chat or completion body."""
    if number(body, "n", 1, 1, 128, whole=True) != 1:
        raise CompatError(400, "n: 1 (one choice per request)", param="n")
    limit = services.settings.text_limits.max_new_tokens
    max_tokens = number(body, "max_completion_tokens", None, 1, limit, whole=True)
    max_tokens = number(body, "max_tokens", 256 if max_tokens is None else max_tokens, 1, limit, whole=True)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise CompatError(400, "stop: a string or a list of up to 4 non-empty strings", param="stop")
    seed = number(body, "seed", None, 0, 2**32 - 1, whole=True)
    sampling = [number(body, "temperature", 1.0, 0, 2), number(body, "top_p", 1.0, 0, 1),
                number(body, "top_k", 0, 0, 1000, whole=True), number(body, "repetition_penalty", 1.0, 0.5, 3)]
    if chat:
        system, history, prompt, continue_last = chat_turns(body.get("messages"))
    else:
        prompt = body.get("prompt")
        prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
        if not isinstance(prompt, str):
            raise CompatError(400, "prompt: a string (one prompt per request)", param="prompt")
        system, history, continue_last = "", (), False
    params = build_params(prompt, "chat" if chat else "completion", system, history, max_tokens, *sampling,
                          "", seed, min_p=number(body, "min_p", 0.0, 0, 1), continue_last=continue_last)
    return replace(params, stop=tuple(stops)), text(body, "model", limit=512)


def chat_turns(messages) -> tuple[str, tuple, str, bool]:
    """(system prompt, earlier turns, the newest user message, continue_last) from OpenAI's messages."""
    if not isinstance(messages, list) or not messages:
        raise CompatError(400, "messages: a non-empty list of {role, content}", param="messages")
    system, turns = [], []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        role = "system" if role == "developer" else role
        if role not in ROLES:
            raise CompatError(400, f"messages[{i}].role: one of system, developer, user, assistant; got "
                                   f"{str(role)[:30]!r}", param=f"messages[{i}].role")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise CompatError(400, f"messages[{i}].content: text parts only ({{\"type\": \"text\", \"text\": "
                                       "...}); this studio's text models read no pictures",
                                  param=f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise CompatError(400, f"messages[{i}].content: a string or a list of text parts",
                              param=f"messages[{i}].content")
        (system if role == "system" else turns).append(content if role == "system" else (role, content))
    if not turns:
        raise CompatError(400, "messages: add a user message", param="messages")
    if turns[-1][0] == "assistant":  # the answer's start is given: continue it
        return "\n\n".join(system), tuple(turns), "", True
    return "\n\n".join(system), tuple(turns[:-1]), turns[-1][1], False


def _sse(data) -> str:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"


class TextAnswer:
    """One chat or completion answer, in OpenAI's objects: whole, or as stream chunks."""

    def __init__(self, chat: bool, model: str, include_usage: bool) -> None:
        self.chat, self.model, self.include_usage = chat, model, include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _object(self, choices: list, chunk: bool, **more) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices,
                "system_fingerprint": None, **more}

    def _choice(self, content: str, finish: str | None, *, chunk: bool, first: bool = False) -> dict:
        if not self.chat:
            return {"index": 0, "text": content, "logprobs": None, "finish_reason": finish}
        if chunk:
            delta = {"role": "assistant", "content": content} if first else {"content": content} if content else {}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None, "finish_reason": finish}

    @staticmethod
    def usage(stats: dict) -> dict:
        prompt, made = int(stats.get("prompt_tokens") or 0), int(stats.get("new_tokens") or 0)
        return {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made}

    def whole(self, stats: dict) -> dict:
        finish = FINISH.get(stats.get("finish_reason"), "stop")
        return self._object([self._choice(stats["text"], finish, chunk=False)], False, usage=self.usage(stats))

    def chunks(self, updates) -> object:
        """SSE lines from run_text's (text so far, stats) updates (the first one already taken)."""
        extra = {"usage": None} if self.include_usage else {}
        sent, stats = "", {}
        if self.chat:
            yield _sse(self._object([self._choice("", None, chunk=True, first=True)], True, **extra))
        try:
            for so_far, stats in updates:
                piece, sent = so_far[len(sent):], so_far
                if piece:
                    yield _sse(self._object([self._choice(piece, None, chunk=True)], True, **extra))
        except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes in the stream
            from studio.compat.wire import as_compat_error

            yield _sse(error_shape(as_compat_error(exc)))
            yield _sse("[DONE]")
            return
        finish = FINISH.get(stats.get("finish_reason"), "stop")
        yield _sse(self._object([self._choice("", finish, chunk=True)], True, **extra))
        if self.include_usage:
            yield _sse(self._object([], True, usage=self.usage(stats)))
        yield _sse("[DONE]")


def answer_text(services, user: ApiUser, body: dict, *, chat: bool):
    """A chat or completion answer (run in a worker thread): the JSON object, or a stream of SSE lines."""
    params, name = text_request(services, body, chat=chat)
    model = model_named(services, user, "text", name)
    streamed = flag(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise CompatError(400, "stream_options: an object such as {\"include_usage\": true}", param="stream_options")
    reply = TextAnswer(chat, name or services.host.registry.default("text"), bool(options.get("include_usage")))
    updates = stream_as(services, user, "text", run_text(services, model, params, user.session, user.name))
    first = next(updates)  # here, not in the stream: a refusal (model, quota, prompt) gets its own status
    if not streamed:
        stats = first[1]
        for _, stats in updates:
            pass
        return reply.whole(stats)

    def again():
        yield first
        yield from updates
    return StreamingResponse(reply.chunks(again()), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def image_request(services, body: dict) -> dict:
    """ImageParams fields from an OpenAI images body: prompt, n, size; extras seed, steps, negative_prompt,
    guidance, strength."""
    prompt = text(body, "prompt", limit=32_000)
    if not prompt.strip():
        raise CompatError(400, "prompt: describe the picture (a non-empty string)", param="prompt")
    limits = services.settings.image_limits
    size = text(body, "size", "auto", limit=20).strip().lower()
    if size in ("", "auto"):
        width = height = None
    else:
        parts = size.split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise CompatError(400, f"size: WIDTHxHEIGHT such as 512x512 (multiples of 8 from 64 to 2048) or auto, "
                                   f"got {size[:20]!r}", param="size")
        width, height = (int(p) for p in parts)
    return dict(prompt=prompt, negative_prompt=text(body, "negative_prompt"),
                batch_size=number(body, "n", 1, 1, limits.max_batch_size, whole=True),
                width=width, height=height, seed=number(body, "seed", None, 0, 2**32 - 1, whole=True),
                steps=number(body, "steps", 20, 1, limits.max_steps, whole=True),
                guidance=number(body, "guidance", 7.0, 0, 30), strength=number(body, "strength", 0.75, 0.01, 1))


def answer_images(services, user: ApiUser, request: Request, body: dict, start=None, mask=None) -> dict:
    """Pictures for an images body (a start picture and mask: img2img / inpaint), kept in the caller's History;
    answered as b64_json or as links to the kept pictures (`url`)."""
    response_format = text(body, "response_format", "url", limit=20)
    if response_format not in ("url", "b64_json"):
        raise CompatError(400, f"response_format: url or b64_json, got {response_format[:20]!r}",
                          param="response_format")
    name = model_named(services, user, "image", text(body, "model", limit=512))
    fields = image_request(services, body)
    size = 0
    if fields["width"] is None and start is None:  # "auto": the model's own size (loading it as the caller)
        size = run_as(services, user, "image", lambda: services.host.image_pipeline(name).model.default_size)
    width = fields.pop("width") or (start.width // 8 * 8 if start is not None else size)
    height = fields.pop("height") or (start.height // 8 * 8 if start is not None else size)
    mode = "inpaint" if mask is not None else "img2img" if start is not None else "txt2img"
    params = ImageParams(mode=mode, width=width, height=height, init_image=start, mask=mask, **fields)
    kept, out, _pipe = make_pictures(services, user, params, name)
    if response_format == "b64_json":
        data = [{"b64_json": b64(png), "revised_prompt": None} for png in kept_pngs(kept)]
    else:  # a link to the kept picture, readable without a login by whoever holds it (as an item link)
        base = origin(request)
        data = [{"url": f"{base}{services.links.path(item_id)}/0" if item_id else None, "revised_prompt": None}
                for _path, _seed, item_id in kept]
    return {"created": int(time.time()), "data": data, "seeds": list(out.seeds)}


def alpha_mask(services, data: bytes):
    """OpenAI's mask: fully transparent pixels are the ones to repaint; without transparency, white = repaint."""
    from PIL import ImageOps

    rgba = picture(services, data, "mask", mode="RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] < 255:
        return ImageOps.invert(alpha).point(lambda v: 255 if v == 255 else 0)
    return rgba.convert("L")


def router(services, current_user) -> APIRouter:
    from starlette.concurrency import run_in_threadpool

    api = APIRouter(prefix="/v1", route_class=route_class(error_shape))

    @api.get("/models")
    def list_models(user: ApiUser = Depends(current_user)) -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "studio",
                                            "modality": modality}
                                           for modality in ("text", "image")
                                           for name in allowed_models(services, user, modality)]}

    @api.post("/chat/completions")
    async def chat_completions(request: Request, user: ApiUser = Depends(current_user)):
        return await run_in_threadpool(answer_text, services, user, await json_body(request), chat=True)

    @api.post("/completions")
    async def completions(request: Request, user: ApiUser = Depends(current_user)):
        return await run_in_threadpool(answer_text, services, user, await json_body(request), chat=False)

    @api.post("/images/generations")
    async def generations(request: Request, user: ApiUser = Depends(current_user)):
        return await run_in_threadpool(answer_images, services, user, request, await json_body(request))

    @api.post("/images/edits")
    async def edits(request: Request, user: ApiUser = Depends(current_user)):
        form = await request.form()
        body = {k: v for k, v in form.items() if isinstance(v, str)}
        for name, kind in (("n", int), ("seed", int), ("steps", int), ("guidance", float), ("strength", float)):
            if name in body:
                try:
                    body[name] = kind(body[name])
                except ValueError:
                    raise CompatError(400, f"{name}: a number, got {body[name][:20]!r}", param=name) from None
        image = form.get("image") or form.get("image[]")
        if image is None or isinstance(image, str):
            raise CompatError(400, "image: upload the picture to edit (multipart file field 'image')", param="image")
        start = picture(services, await image.read(), "image")
        mask_file = form.get("mask")
        mask = alpha_mask(services, await mask_file.read()) if mask_file is not None and not isinstance(
            mask_file, str) else None
        if mask is not None and mask.size != start.size:
            raise CompatError(400, f"mask: the same size as image ({start.width}x{start.height}), got "
                                   f"{mask.width}x{mask.height}", param="mask")
        return await run_in_threadpool(answer_images, services, user, request, body, start, mask)

    return api

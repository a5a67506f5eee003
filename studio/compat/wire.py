"""What both compatibility layers share on the wire: an error with its HTTP status, a route class that answers
every error in the layer's own shape (OpenAI's or AUTOMATIC1111's) while the server keeps serving, and checked
reading of JSON body fields (a bad value gets a message naming the field and its allowed range)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from pipelines.checks import short
from pipelines.registry import ModelNotAvailable
from studio.access import AccessDenied

log = logging.getLogger("studio")


class CompatError(Exception):
    """A refused call: HTTP `status`, a message in plain words, the body field it is about (`param`), and
    OpenAI's `kind` (invalid_request_error …) and `code` (model_not_found …)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def as_compat_error(exc: BaseException) -> CompatError:
    """The HTTP answer for a failure: bad input 400, a guest refusal 403 (a spent quota 429), a missing model
    404, anything unexpected 500 (logged)."""
    if isinstance(exc, CompatError):
        return exc
    if isinstance(exc, AccessDenied):
        quota = str(exc).startswith("Quota")
        return CompatError(429 if quota else 403, str(exc), code="quota_exceeded" if quota else "forbidden",
                           kind="rate_limit_error" if quota else "permission_error")
    if isinstance(exc, ModelNotAvailable):
        return CompatError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return CompatError(400, f"{where}: {first.get('msg', 'invalid')}", param=where)
    if isinstance(exc, ValueError):
        text = str(exc)
        param = text.split(":")[0].split(" ")[0] if ":" in text[:40] or " must " in text[:40] else None
        return CompatError(400, text, param=param)
    log.exception("compatibility API: unexpected error")
    return CompatError(500, f"Something went wrong ({type(exc).__name__}); try again.", kind="server_error")


def route_class(shape: Callable[[CompatError], dict], bad_input: int = 400) -> type[APIRoute]:
    """An APIRoute whose every error — from the body, the caller dependency or the work — answers in `shape`;
    bad input gets the status `bad_input` (OpenAI: 400; AUTOMATIC1111: 422)."""
    class LayerRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def answer(request: Request):
                try:
                    return await handler(request)
                except Exception as exc:  # noqa: BLE001 - every failure becomes this layer's error answer
                    error = as_compat_error(exc)
                    headers = {"WWW-Authenticate": 'Basic realm="studio"'} if error.status == 401 else None
                    status = bad_input if error.status == 400 else error.status
                    return JSONResponse(shape(error), status_code=status, headers=headers)
            return answer
    return LayerRoute


async def json_body(request: Request) -> dict:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompatError(400, f"body: not valid JSON ({getattr(exc, 'msg', exc)})", param="body") from None
    if not isinstance(body, dict):
        raise CompatError(400, "body: a JSON object", param="body")
    return body


def number(body: dict, name: str, default, low: float, high: float, *, whole: bool = False):
    """body[name] as a number from `low` to `high` (a whole number when `whole`); `default` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    kind = "a whole number" if whole else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (whole and float(value) != int(value)) or not low <= value <= high:
        raise CompatError(400, f"{name}: {kind} from {low:g} to {high:g}, got {short(value)}", param=name)
    return int(value) if whole else float(value)


def text(body: dict, name: str, default: str = "", *, limit: int = 100_000) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > limit:
        raise CompatError(400, f"{name}: a string of at most {limit:,} characters, got {short(value)}", param=name)
    return value


def flag(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CompatError(400, f"{name}: true or false, got {short(value)}", param=name)
    return value

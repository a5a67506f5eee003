"""Who is calling: the one way the compatibility routes turn an HTTP request into the studio's user and `Caller`.

`Authorization: Bearer KEY` (an API key, studio/keys.py), or HTTP Basic — a studio login's user:password, or
anything:KEY (AUTOMATIC1111's `--api-auth` style). A studio with logins refuses a call without a valid key or
login (401); a studio without logins (this machine only) runs calls without credentials as its local owner.
A wrong key is refused everywhere. Each call's work runs inside `calling(caller_for(...))`, which the model
host's admission reads (model names guests may use, limits, quotas).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from fastapi import Request

from studio.compat.wire import CompatError
from studio.host import Caller
from studio.keys import ApiKeys


@dataclass(frozen=True)
class ApiUser:
    """The user a call runs as. `session`: their jobs on these routes (what their interrupt stops)."""

    name: str
    guest: bool

    @property
    def session(self) -> str:
        return f"api:{self.name}"


def caller_for(services, user: ApiUser, tab: str) -> Caller:
    """The Caller of a call from `user` (the one place these routes build one): the boundary's own, as for the
    page's events, so quotas, guest rules and fair turns are the same at every door."""
    from studio import boundary

    return boundary.caller_for(services, user.name, user.session)


def _refused(message: str) -> CompatError:
    return CompatError(401, message, code="invalid_api_key", kind="authentication_error")


def _credentials(request: Request) -> tuple[str, str, str] | None:
    """("bearer", "", key) or ("basic", user, password) from the Authorization header; None without one."""
    header = request.headers.get("authorization", "").strip()
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return "bearer", "", value.strip()
    if scheme.lower() == "basic":
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if sep:
            return "basic", user, password
    raise _refused("Authorization: give 'Bearer <API key>' or HTTP Basic (user:password, or anything:<API key>)")


def user_dependency(services, keys: ApiKeys):
    """A FastAPI dependency giving the request's `ApiUser`, or a 401 in the layer's error shape."""
    access = services.access

    def from_key(key: str) -> ApiUser | None:
        found = keys.user_of(key)
        if found is None:
            return None
        name, guest = found
        if guest:
            if name in access.owners:
                raise _refused(f"This guest key names the owner login {name!r}; make it again under another name.")
            access.register_key_guest(name)
        return ApiUser(name, access.is_guest(name))

    async def current_user(request: Request) -> ApiUser:
        given = _credentials(request)
        if given is None:
            if services.settings.logins:
                raise _refused("This studio needs an API key: send 'Authorization: Bearer <key>' (make one with "
                               "`studio keys add NAME`).")
            return ApiUser("local", False)
        scheme, name, secret = given
        user = await asyncio.to_thread(from_key, secret)  # hashing a new key takes ~0.1 s: off the event loop
        if user is not None:
            return user
        if scheme == "basic" and name and access.check_password(name, secret):
            return ApiUser(name, access.is_guest(name))
        if scheme == "basic" and name:
            await asyncio.sleep(access.failure_delay(name))  # guessing passwords is slowed down, as at the login
        raise _refused("Incorrect API key or login.")
    return current_user

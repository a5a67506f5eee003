"""The OpenAI- and AUTOMATIC1111-compatible HTTP APIs (/v1, /sdapi/v1): doors onto the same actions, params
and History as the page and the Gradio API, each call run as its user's Caller (studio/compat/auth.py)."""

from __future__ import annotations


def add_compat_routes(fastapi_app, services) -> None:
    """Serve /v1 and /sdapi/v1 on the studio's server, ahead of Gradio's own routes."""
    from studio.compat import a1111, openai
    from studio.compat.auth import user_dependency
    from studio.keys import ApiKeys

    current_user = user_dependency(services, ApiKeys(services.settings.outputs))
    before = len(fastapi_app.router.routes)
    for router in (openai.router(services, current_user), a1111.router(services, current_user)):
        fastapi_app.include_router(router)
    added = fastapi_app.router.routes[before:]
    del fastapi_app.router.routes[before:]
    fastapi_app.router.routes[:0] = added

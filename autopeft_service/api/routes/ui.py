"""The web dashboard under ``/ui``: static files shipped in the package (no build step).

The page keeps the client token in sessionStorage and sends it as a bearer header to the
JSON API; nothing here needs a token (the files hold no data). Every URL the page uses is
relative, so it works behind a reverse proxy that serves the app under a path prefix.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from autopeft_service.ui import STATIC_DIR

router = APIRouter(include_in_schema=False)

#: The page loads only its own files and talks only to its own origin; no framing.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
     b"base-uri 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
]


@router.get("/ui")
def ui_root() -> RedirectResponse:
    """``/ui`` to ``/ui/``, by a relative redirect (kept right behind a path prefix)."""
    return RedirectResponse("ui/", status_code=307)


class DashboardFiles(StaticFiles):
    """StaticFiles with the dashboard's security headers on every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  *SECURITY_HEADERS]}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui/`` (``index.html``) and its files beside it."""
    app.include_router(router)
    app.mount("/ui", DashboardFiles(directory=STATIC_DIR, html=True), name="ui")

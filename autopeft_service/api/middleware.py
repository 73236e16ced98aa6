"""ASGI middleware that runs before a route reads its body: the token gate and the body cap.

Both are plain ASGI (not Starlette's ``BaseHTTPMiddleware``, which costs a task and a
queue per request on the worker protocol's hot path). FastAPI parses a JSON body before it
runs a route's dependencies, so without the gate a malformed body from an unauthenticated
caller got 422 before 401, and without the cap any body size was read into memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

import anyio.to_thread

from autopeft_service.api.auth import TokenResolver

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_error(send: Send, status: int, detail: str,
                     headers: Collection[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``{"detail": detail}`` with ``status`` (and close the connection's request)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes:
    """The first value of request header ``name`` (lower-case bytes), or ``b""``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return b""


class TokenGate:
    """401 for API requests whose bearer token is missing, unknown, revoked or expired,
    before anything else; otherwise the caller (``Principal``) is put in the request's
    state (``scope["state"]["principal"]``) for the routes.

    Roles (403) and ownership (404) are still checked by the routes' dependencies; this
    only decides that the caller is someone. Paths outside ``/v1/`` (docs, the OpenAPI
    document) and the public ones (``/v1/health``) pass. A stored token's first use (and
    its use after the resolver's cache time) is looked up in a worker thread.

    Args:
        app: the wrapped application.
        tokens: resolves a token to its caller.
        public: paths that need no token.
    """

    def __init__(self, app: ASGIApp, tokens: TokenResolver,
                 public: Collection[str] = ("/v1/health",)) -> None:
        self.app = app
        self.tokens = tokens
        self.public = set(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or path in self.public:
            await self.app(scope, receive, send)
            return
        authorization = header(scope, b"authorization")
        # The scheme is case-insensitive; the token is compared exactly.
        scheme, _, raw = authorization.partition(b" ")
        token = raw.strip().decode("latin-1")
        principal = None
        if scheme.lower() == b"bearer" and token:
            known, principal = self.tokens.cached(token)
            if not known:
                principal = await anyio.to_thread.run_sync(self.tokens.lookup, token)
        if principal is None:
            await send_error(send, 401, "missing bearer token" if not authorization
                             else "unknown bearer token (or revoked, or expired)",
                             headers=[(b"www-authenticate", b"Bearer")])
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class BodySizeLimit:
    """413 for a request body larger than ``max_bytes``, declared or streamed.

    A declared ``Content-Length`` above the cap is refused before reading; otherwise the
    body is read (at most ``max_bytes + 1`` bytes are held) and replayed to the app.

    Args:
        app: the wrapped application.
        max_bytes: the largest body accepted.
        streamed: requests passed through unread (their route streams the body and caps it
            itself); none when omitted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 streamed: Callable[[Scope], bool] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.streamed is not None and self.streamed(scope)):
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, send: Send) -> None:
        await send_error(send, 413, f"request body larger than {self.max_bytes} bytes "
                         "(the server's max_request_bytes)", headers=[(b"connection", b"close")])


def is_artifact_upload(scope: Scope) -> bool:
    """``PUT /v1/trials/{id}/artifact`` and ``.../checkpoint``: the bodies streamed to their
    route (which caps them at ``max_artifact_bytes``)."""
    path = scope.get("path", "")
    return (scope.get("method") == "PUT" and path.startswith("/v1/trials/")
            and path.endswith(("/artifact", "/checkpoint")))


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive callable that returns ``messages`` first, then defers to ``receive``."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class ConditionalGet:
    """ETag and ``If-None-Match`` for JSON GET answers under ``/v1/`` (the dashboard's
    polling: an unchanged study, trial page or worker list is answered 304 with no body).

    The ETag is a hash of the body (weak: the same JSON, not a byte-range promise), so the
    route still runs; what a 304 saves is the transfer and the browser's parse and
    redraw. Non-JSON answers (artefact downloads) and other statuses pass through
    unbuffered. ``Cache-Control: no-cache`` makes caches revalidate every time.

    Args:
        app: the wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "GET"
                or not scope.get("path", "").startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        wanted = header(scope, b"if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                sent = dict(message.get("headers", ()))
                if message["status"] == 200 and sent.get(b"content-type", b"").startswith(
                        b"application/json"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            etag = b'W/"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'
            headers = [(k, v) for k, v in start.get("headers", ())
                       if k not in (b"etag", b"cache-control")]
            headers += [(b"etag", etag), (b"cache-control", b"no-cache")]
            if etag in {tag.strip() for tag in wanted.split(b",")}:
                kept = [(k, v) for k, v in headers if k not in (b"content-length",
                                                                b"content-type")]
                await send({"type": "http.response.start", "status": 304, "headers": kept})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered_send)

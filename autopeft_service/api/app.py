"""The FastAPI application: routers, error handlers, and background loops in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import FrameType
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from autopeft_service.api.middleware import (
    BodySizeLimit,
    ConditionalGet,
    TokenGate,
    is_artifact_upload,
)
from autopeft_service.api.routes import (
    admin,
    artifacts,
    checkpoints,
    dashboard,
    health,
    metrics,
    studies,
    ui,
    usage,
    workers,
)
from autopeft_service.api.services import Services
from autopeft_service.core.config import Settings
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.validation import DISCRIMINATOR_TAGS, FieldError
from autopeft_service.storage.database import DataRejected, StorageError

log = logging.getLogger(__name__)


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, object]]:
    """pydantic errors as ``{loc, msg, type}``, with model-level errors located at the field
    their FieldError names (pydantic would put them at the model's root)."""
    details: list[dict[str, object]] = []
    for error in errors:
        loc: list[object] = [p for i, p in enumerate(error.get("loc", ()))
                             if not (i and error["loc"][i - 1] == "search_space"
                                     and p in DISCRIMINATOR_TAGS)]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc += cause.field.split(".")
            message = str(cause)
        details.append({"loc": loc, "msg": message, "type": error.get("type", "value_error")})
    return details


def config_error_details(error: ConfigError) -> list[dict[str, object]]:
    """A ConfigError's ``field.path: reason; ...`` message as 422 ``{loc, msg, type}``
    items (located in the body)."""
    details: list[dict[str, object]] = []
    for part in str(error).split("; "):
        path, sep, message = part.partition(": ")
        if not sep or " " in path:
            path, message = "", part
        loc: list[str | int] = ["body", *[p for p in path.split(".") if p]]
        details.append({"loc": loc, "msg": message, "type": "value_error"})
    return details


@contextmanager
def _shutdown_on_signal(services: Services) -> Iterator[None]:
    """While the server runs, SIGTERM and SIGINT first tell ``services`` that shutdown
    began (long-polling leases answer at once), then reach uvicorn's own handler. Only
    where handlers can be set (the main thread; a server in a test thread is stopped by
    ``Services.begin_shutdown`` directly)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(sig: int, frame: FrameType | None) -> None:
        services.begin_shutdown()
        handler = previous[signal.Signals(sig)]
        if callable(handler):
            handler(sig, frame)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is handle:
                signal.signal(sig, handler)


def _warn_about_tokens(settings: Settings) -> None:
    for role, tokens in (("client", settings.client_tokens), ("worker", settings.worker_tokens)):
        if not tokens:
            log.warning("no %s tokens are set (AUTOPEFT_%s_TOKENS): every %s request will "
                        "get 401", role, role.upper(), role)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for ``path`` (for ``Allow``).

    Read from the document rather than the router: FastAPI keeps one route per method
    inside included routers, which it does not expose.
    """
    for template, operations in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            return sorted(method.upper() for method in operations
                          if method.upper() in _METHODS)
    return []


_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The database schema must already be at Alembic's head
    (``autopeft serve`` runs the migration first; this never calls ``create_all``)."""
    settings = settings or Settings()
    services = Services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Database work of requests runs in anyio's thread pool; its size bounds how many
        # threads contend for the GIL and the connection pool (benchmarks/service_load.py).
        anyio.to_thread.current_default_thread_limiter().total_tokens = \
            settings.request_threads
        services.start(asyncio.get_running_loop())
        try:
            with _shutdown_on_signal(services):
                yield
        finally:
            services.stop()

    _warn_about_tokens(settings)

    app = FastAPI(title="autopeft", version="0.1.0", lifespan=lifespan,
                  description="Multi-objective search over PEFT configurations.")
    app.state.services = services
    app.include_router(health.router)
    app.include_router(metrics.router)  # GET /metrics: public (outside /v1/)
    app.include_router(studies.router)
    app.include_router(workers.router)
    app.include_router(artifacts.router)
    app.include_router(checkpoints.router)
    app.include_router(dashboard.router)
    app.include_router(admin.router)
    app.include_router(usage.router)
    ui.mount(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            # FastAPI makes one route per method, and Starlette's 405 names only the methods
            # of the first route whose path matched: name every route's on this path.
            error.headers = {**(error.headers or {}),
                             "Allow": ", ".join(allowed_methods(app, request.url.path))}
        return await http_exception_handler(request, error)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(list(error.errors()))},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StorageError)
    async def _storage_error(_request: Request, error: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"database unavailable: {error}"},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": str(settings.retry_after_seconds)})

    @app.exception_handler(ConfigError)
    async def _config_error(_request: Request, error: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": config_error_details(error)},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(DataRejected)
    async def _data_rejected(_request: Request, error: DataRejected) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": ["body"], "msg": str(error),
                                         "type": "value_error"}]},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    # Outermost first: the token gate answers 401 before the body is read; the cap then
    # refuses a body above max_request_bytes with 413. Artefact uploads stream past the cap
    # to their route, which enforces max_artifact_bytes as it writes them to the store.
    app.add_middleware(ConditionalGet)  # ETag / 304 for JSON GETs (the dashboard's polls)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes,
                       streamed=is_artifact_upload)
    app.add_middleware(TokenGate, tokens=services.tokens)
    return app

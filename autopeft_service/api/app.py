"""The FastAPI application: routers, error handlers, and background loops in the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from autopeft_service.api.routes import health, studies, workers
from autopeft_service.api.services import Services
from autopeft_service.core.config import Settings
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.validation import FieldError
from autopeft_service.storage.database import StorageError


def validation_details(errors: list[dict]) -> list[dict[str, object]]:
    """pydantic errors as ``{loc, msg, type}``, with model-level errors located at the field
    their FieldError names (pydantic would put them at the model's root)."""
    details = []
    for error in errors:
        loc = list(error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc += cause.field.split(".")
            message = str(cause)
        details.append({"loc": loc, "msg": message, "type": error.get("type", "value_error")})
    return details


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
            yield
        finally:
            services.stop()

    app = FastAPI(title="autopeft", version="0.1.0", lifespan=lifespan,
                  description="Multi-objective search over PEFT configurations.")
    app.state.services = services
    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(workers.router)

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
        return JSONResponse({"detail": str(error)},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    return app

"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from autopeft_service.api.deps import ServicesDep
from autopeft_service.api.schemas import error_responses

router = APIRouter(prefix="/v1", tags=["health"], responses=error_responses(503))


@router.get("/health")
def health(services: ServicesDep) -> dict[str, str]:
    """``{"status": "ok"}`` when the database answers."""
    with services.database.session() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "database": services.database.engine.dialect.name}

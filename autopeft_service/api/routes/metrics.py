"""``GET /metrics``: Prometheus metrics (public, like ``/v1/health``: ids and counts only)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from autopeft_service.api.deps import ServicesDep
from autopeft_service.api.schemas import error_responses

router = APIRouter(tags=["metrics"], responses=error_responses(503))


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text exposition format.",
    "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def metrics(services: ServicesDep) -> Response:
    """Every metric of this server in Prometheus' text format (ids, states and counts
    only); the gauges are read from the database now: 503 when it cannot be read."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

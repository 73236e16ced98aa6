"""Request and response bodies of the HTTP API (kept apart from the tables)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from autopeft_service.domain.protocol import (
    FailureIn,
    HeartbeatIn,
    HeartbeatOut,
    LeaseOut,
    LeaseRequest,
    ReportOut,
    ResultIn,
)
from autopeft_service.domain.views import (
    ArtifactInfo,
    HypervolumeHistory,
    HypervolumePoint,
    Page,
    ParetoOut,
    RungOut,
    StudyOut,
    StudyPage,
    TrialPage,
    TrialSummary,
    WorkerList,
    WorkerOut,
    WorkerTrial,
)

# The wire models live in the domain; routes import them from here.
__all__ = [
    "ArtifactInfo", "ErrorOut", "FailureIn", "HeartbeatIn", "HeartbeatOut", "HypervolumeHistory",
    "HypervolumePoint", "LeaseOut", "LeaseRequest", "Page", "ParetoOut", "ReportOut", "ResultIn",
    "RungOut", "StudyOut", "StudyPage", "TrialPage", "TrialSummary", "ValidationErrorOut",
    "ValidationIssue", "WorkerList", "WorkerOut", "WorkerTrial", "error_responses",
]


class ErrorOut(BaseModel):
    """An error other than a validation error: one line."""

    detail: str


class ValidationIssue(BaseModel):
    """One invalid field: where (``loc``, e.g. ``["body", "budget", "total_trials"]``) and
    why."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """HTTP 422: every invalid field of the request."""

    detail: list[ValidationIssue]


_ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    400: (ErrorOut, "The body could not be read at all (not UTF-8 text)."),
    401: (ErrorOut, "Missing or unknown bearer token."),
    403: (ErrorOut, "The token does not hold this route's role."),
    404: (ErrorOut, "No such study or trial (another tenant's reads as missing), or no "
                    "such tenant or token on the admin routes."),
    409: (ErrorOut, "A conflict: the lease token is not the trial's current lease, the "
                    "trial cannot take this report in its state, or the name exists."),
    413: (ErrorOut, "The request body is larger than the server's max_request_bytes."),
    429: (ErrorOut, "A quota of the caller's tenant is reached (max_running_studies): "
                    "retry after Retry-After seconds."),
    422: (ValidationErrorOut, "Invalid request: each item names a field and the reason."),
    503: (ErrorOut, "The database is unreachable; retry after Retry-After seconds."),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error status codes (model and meaning)."""
    return {code: {"model": _ERRORS[code][0], "description": _ERRORS[code][1]}
            for code in codes}

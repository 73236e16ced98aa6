"""Request and response bodies of the HTTP API (kept apart from the tables)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from autopeft_service.domain.protocol import (  # noqa: F401 - re-exported for routes
    FailureIn,
    HeartbeatIn,
    HeartbeatOut,
    LeaseOut,
    LeaseRequest,
    ResultIn,
)
from autopeft_service.domain.study import StudySpec


class TrialSummary(BaseModel):
    """A trial as users see it."""

    id: int
    number: int
    state: str
    generator: str
    attempt: int
    params: dict[str, int]
    config: dict[str, Any]
    config_description: str
    worker: str | None
    objective: float | None
    param_share: float | None
    dev_score: float | None
    failure_reason: str | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: float
    leased_at: float | None
    finished_at: float | None


class StudyOut(BaseModel):
    """A study with its progress."""

    id: int
    name: str
    state: str
    created_at: float
    updated_at: float
    counts: dict[str, int]
    total_trials: int
    best: TrialSummary | None = Field(description="Completed trial with the best held-out score.")
    hypervolume: float = Field(description="Of the completed trials, against reference_point.")
    pareto_size: int
    spec: StudySpec


class Page(BaseModel):
    """One page of a list."""

    total: int
    offset: int
    limit: int


class StudyPage(Page):
    items: list[StudyOut]


class TrialPage(Page):
    items: list[TrialSummary]


class ParetoOut(BaseModel):
    """The non-dominated completed trials (score max, parameter share min)."""

    study_id: int
    reference_point: dict[str, float]
    hypervolume: float
    trials: list[TrialSummary]


class ReportOut(BaseModel):
    """The trial's state after a report; ``duplicate`` when it repeated an accepted one."""

    trial_id: int
    state: str
    attempt: int
    failure_reason: str | None
    duplicate: bool


class ErrorOut(BaseModel):
    detail: str

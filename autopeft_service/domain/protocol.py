"""Wire types of the worker protocol (docs/design.md, "The worker protocol"), shared by server and workers.

They live in the domain so that workers, which never import the server, speak exactly the
types the server validates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, field_validator

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.early_stopping import MAX_RUNGS, EarlyStopping
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import RungScore, TrainingSettings, TrialResult
from autopeft_service.domain.validation import StorableInput, bounded_json

#: Most bytes (as JSON) of a heartbeat's ``progress``.
MAX_PROGRESS_BYTES = 16 * 1024


class _Body(StorableInput):
    """A request body: unknown fields, non-finite numbers and NUL characters are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LeaseRequest(_Body):
    worker: str = Field(min_length=1, max_length=200, description="Worker name (host:gpu).")
    wait_seconds: StrictFloat | None = Field(
        None, ge=0, le=60, description="Long-poll at most this long (the server caps it).")


class LeaseOut(BaseModel):
    """A leased trial: everything the worker needs to train it."""

    trial_id: int
    study_id: int
    number: int
    attempt: int
    token: str
    deadline: float
    lease_seconds: float
    params: dict[str, int | float | str]
    config: PeftConfig
    backbone: str
    task: str
    data_dir: str | None
    task_options: dict[str, Any]
    training: TrainingSettings
    seed: int
    backbone_dims: BackboneDims | None = Field(
        None, description="The study's backbone dimensions: a worker whose loaded backbone "
        "differs fails the trial (None for studies stored before they were required).")
    early_stopping: EarlyStopping = Field(
        default_factory=EarlyStopping, description="The study's rungs: the worker scores "
        "each and sends the score with a heartbeat.")
    fidelity: float = Field(
        1.0, gt=0, le=1, description="Train to this fraction of the full budget (a fidelity "
        "study's level; 1 otherwise). Below 1 the worker uploads a checkpoint "
        "(PUT /v1/trials/{id}/checkpoint) before it reports the result.")
    resume_sha256: str | None = Field(
        None, description="The trial paused at a lower level: resume from its checkpoint "
        "(GET /v1/trials/{id}/checkpoint, this SHA-256) instead of starting again.")


class HeartbeatIn(_Body):
    token: str = Field(min_length=1, max_length=64)
    progress: dict[str, Any] | None = Field(
        None, description=f"Training progress (at most {MAX_PROGRESS_BYTES} bytes as JSON).")
    rungs: list[RungScore] = Field(
        default_factory=list, max_length=MAX_RUNGS,
        description="Rung scores not yet acknowledged (sent again until a heartbeat is "
        "answered; idempotent by lease token and rung).")

    @field_validator("progress")
    @classmethod
    def _bounded_progress(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else bounded_json(value, MAX_PROGRESS_BYTES)


class HeartbeatOut(BaseModel):
    deadline: float | None
    stop: bool
    reason: str | None = None


class ResultIn(_Body):
    token: str = Field(min_length=1, max_length=64)
    result: TrialResult


class ReportOut(BaseModel):
    """The trial's state after a report; ``duplicate`` when it repeated an accepted one.

    ``state`` is ``completed`` for an accepted result, ``failed`` for a result the server
    recorded as a failure (parameter counts that differ from its own) or a failure with
    no attempt left, ``ready`` for a failure that was requeued.
    """

    trial_id: int
    state: str
    attempt: int
    failure_reason: str | None
    duplicate: bool


class FailureIn(_Body):
    token: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=10_000)
    retry: StrictBool = Field(True, description="False: the configuration itself is bad.")
    preempted: StrictBool = Field(False, description="Worker stopped: requeue without an attempt.")

"""Wire types of the worker protocol (DESIGN section 2), shared by server and workers.

They live in the domain so that workers, which never import the server, speak exactly the
types the server validates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings, TrialResult


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LeaseRequest(_Body):
    worker: str = Field(min_length=1, max_length=200, description="Worker name (host:gpu).")
    wait_seconds: float | None = Field(
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
    params: dict[str, int]
    config: PeftConfig
    backbone: str
    task: str
    data_dir: str | None
    task_options: dict[str, Any]
    training: TrainingSettings
    seed: int


class HeartbeatIn(_Body):
    token: str = Field(min_length=1, max_length=64)
    progress: dict[str, Any] | None = None


class HeartbeatOut(BaseModel):
    deadline: float | None
    stop: bool
    reason: str | None = None


class ResultIn(_Body):
    token: str = Field(min_length=1, max_length=64)
    result: TrialResult


class FailureIn(_Body):
    token: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=10_000)
    retry: bool = Field(True, description="False: the configuration itself is bad.")
    preempted: bool = Field(False, description="Worker stopped: requeue without an attempt.")

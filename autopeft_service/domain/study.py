"""StudySpec: what a user submits to start a search, and the states of studies and trials."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autopeft_service.domain.search_space import MAX_SIZE, AutoPeftSpace, default_sizes
from autopeft_service.domain.trial import MAX_SEED, TrainingSettings
from autopeft_service.domain.validation import FieldError, StorableInput, bounded_json

#: Most bytes (as JSON) of a study's ``task_options``: every lease carries them.
MAX_TASK_OPTIONS_BYTES = 64 * 1024
#: Most bytes (as JSON) of ``optimizer.settings``.
MAX_OPTIMIZER_SETTINGS_BYTES = 16 * 1024


class StudyState(StrEnum):
    """Lifecycle of a study."""

    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"  # ended early: it could not go on (``reason`` says why)


#: Study states after which nothing changes any more.
FINAL_STUDY_STATES = (StudyState.COMPLETED, StudyState.CANCELLED, StudyState.FAILED)


class TrialState(StrEnum):
    """Lifecycle of a trial (DESIGN section 2)."""

    READY = "ready"  # proposed and queued
    LEASED = "leased"  # a worker holds a lease with a deadline
    COMPLETED = "completed"
    FAILED = "failed"  # failed max_attempts times, or a permanent failure
    CANCELLED = "cancelled"  # the study was cancelled first
    PRUNED = "pruned"  # stopped early


#: States in which a trial still occupies a slot of the budget and counts as pending.
PENDING_STATES = (TrialState.READY, TrialState.LEASED)
#: States in which a trial is over.
FINAL_STATES = (TrialState.COMPLETED, TrialState.FAILED, TrialState.CANCELLED, TrialState.PRUNED)
#: Final states that use up a slot of the study's budget (all but cancelled).
BUDGET_STATES = (TrialState.COMPLETED, TrialState.FAILED, TrialState.PRUNED)


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Budget(_Spec):
    """How many trials, how many of them quasi-random, how many at once."""

    total_trials: int = Field(20, ge=1, le=100_000, description="Trials the study runs in all.")
    initial_trials: int = Field(
        8, ge=1, le=100_000, description="Quasi-random (Sobol) trials before the model is used.")
    max_parallel: int = Field(
        4, ge=1, le=10_000, description="Trials kept ready or running at once.")
    max_attempts: int = Field(
        3, ge=1, le=100, description="Leases a trial gets before it is marked failed.")
    stop_after_failures: int = Field(
        3, ge=0, le=100_000, description="End the study (state failed, with the reason) once "
        "this many trials failed for one same reason while none completed: a backbone or data "
        "that no worker can load fails every trial alike. 0: never.")


class OptimizerSpec(_Spec):
    """Which optimiser proposes trials, with its settings (see ``optimizers.factory``)."""

    name: str = Field("saasbo", min_length=1, max_length=40,
                      description="saasbo (default), sobol or random.")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="Seed of the quasi-random sequence and the model.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Optimiser-specific settings "
        f"(at most {MAX_OPTIMIZER_SETTINGS_BYTES} bytes as JSON).")

    @field_validator("settings")
    @classmethod
    def _bounded_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, MAX_OPTIMIZER_SETTINGS_BYTES)


class ReferencePoint(_Spec):
    """Hypervolume reference: the worst score and largest share still worth anything."""

    score: float = Field(0.0, ge=-1e9, le=1e9, description="Score floor (e.g. 0 for accuracy).")
    param_share: float = Field(
        10.0, gt=0, le=1e6, description="Share ceiling, percent of the backbone's parameters.")


class SearchSpaceSpec(AutoPeftSpace):
    """The AutoPEFT space as a study gives it: sizes may be left out when ``hidden_size``
    is given (then AutoPEFT's {0, 1, hidden/2^k} choices are used)."""

    @model_validator(mode="before")
    @classmethod
    def _default_sizes(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hidden_size" in data:
            data = dict(data)
            hidden = data.pop("hidden_size")
            if not isinstance(hidden, int) or isinstance(hidden, bool) \
                    or not 1 <= hidden <= MAX_SIZE:
                raise FieldError("hidden_size", f"must be an integer from 1 to {MAX_SIZE}, "
                                 f"got {hidden!r}")
            for name in ("serial_adapter_sizes", "parallel_adapter_sizes", "prefix_lengths"):
                data.setdefault(name, default_sizes(hidden))
        return data

    def to_space(self) -> AutoPeftSpace:
        """The plain AutoPeftSpace."""
        return AutoPeftSpace.model_validate(self.model_dump())


class StudySpec(_Spec, StorableInput):
    """A search job: backbone, task, space, objectives, budget, training, optimiser.

    Every number and size is bounded and every value must be storable as JSON (no NaN,
    infinity or NUL character): a spec is stored, sent with every lease and read by the
    proposer, so one oversized or malformed spec must not reach them.
    """

    name: str = Field(min_length=1, max_length=200)
    backbone: str = Field(min_length=1, max_length=1000,
                          description="Model folder (as the workers see it) or hub name.")
    task: str = Field(min_length=1, max_length=1000, description="e.g. glue:rte, synthetic.")
    data_dir: str | None = Field(None, max_length=1000,
                                 description="GLUE folder as the workers see it.")
    task_options: dict[str, Any] = Field(
        default_factory=dict, description="Task-specific options sent with every lease "
        f"(at most {MAX_TASK_OPTIONS_BYTES} bytes as JSON).")
    search_space: SearchSpaceSpec
    objective_metric: str | None = Field(
        None, max_length=100,
        description="Informational: the task's primary metric (set by the worker).")
    reference_point: ReferencePoint = Field(default_factory=ReferencePoint)
    budget: Budget = Field(default_factory=Budget)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="Training seed of every trial (fair comparison).")
    kind: Literal["autopeft"] = "autopeft"

    @field_validator("task_options")
    @classmethod
    def _bounded_task_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, MAX_TASK_OPTIONS_BYTES)

    @model_validator(mode="after")
    def _budget_consistent(self) -> Self:
        if self.budget.initial_trials > self.budget.total_trials:
            raise FieldError("budget.initial_trials",
                             f"{self.budget.initial_trials} exceeds budget.total_trials "
                             f"{self.budget.total_trials}")
        # A study never trains one configuration twice, so a budget beyond the space's
        # valid points could never be spent (the study would wait for ever).
        points = self.search_space.size()
        if points < self.budget.total_trials:
            raise FieldError("budget.total_trials",
                             f"{self.budget.total_trials} exceeds the {points} valid "
                             "configurations of search_space")
        return self

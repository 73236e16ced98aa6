"""StudySpec: what a user submits to start a search, and the states of studies and trials."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from autopeft_service.domain.backbone import BackboneDims, packaged_dims
from autopeft_service.domain.early_stopping import EarlyStopping
from autopeft_service.domain.errors import DataError
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.peft_config import LoraTarget
from autopeft_service.domain.spaces import (
    MAX_SIZE,
    SearchSpace,
    SearchSpaceBase,
    default_sizes,
)
from autopeft_service.domain.spaces.unified import unified_sizes
from autopeft_service.domain.task_name import parse_task
from autopeft_service.domain.trial import MAX_SEED, TrainingSettings
from autopeft_service.domain.validation import FieldError, StorableInput, bounded_json
from autopeft_service.domain.warm_start import WarmStart

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
    """Lifecycle of a trial (docs/design.md, "The worker protocol")."""

    READY = "ready"  # proposed and queued
    LEASED = "leased"  # a worker holds a lease with a deadline
    COMPLETED = "completed"
    FAILED = "failed"  # failed max_attempts times, or a permanent failure
    CANCELLED = "cancelled"  # the study was cancelled first
    PRUNED = "pruned"  # stopped at a rung by the early-stopping rule (rung scores kept)
    PAUSED = "paused"  # reached a fidelity level below 1, checkpointed; may continue


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

    total_trials: StrictInt = Field(20, ge=1, le=100_000, description="Trials the study runs in all.")
    initial_trials: StrictInt = Field(
        8, ge=1, le=100_000, description="Quasi-random (Sobol) trials before the model is used.")
    max_parallel: StrictInt = Field(
        4, ge=1, le=10_000, description="Trials kept ready or running at once.")
    max_attempts: StrictInt = Field(
        3, ge=1, le=100, description="Leases a trial gets before it is marked failed.")
    stop_after_failures: StrictInt = Field(
        3, ge=0, le=100_000, description="End the study (state failed, with the reason) once "
        "this many trials failed for one same reason while none completed: a backbone or data "
        "that no worker can load fails every trial alike. 0: never.")


class OptimizerSpec(_Spec):
    """Which optimiser proposes trials, with its settings (see ``optimizers.factory``)."""

    name: str = Field("saasbo", min_length=1, max_length=40,
                      description="saasbo (default), sobol or random.")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED,
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

    score: StrictFloat = Field(0.0, ge=-1e9, le=1e9, description="Score floor (e.g. 0 for accuracy).")
    param_share: StrictFloat = Field(
        10.0, gt=0, le=1e6, description="Share ceiling, percent of the backbone's parameters.")


#: How the parameter share objective counts a configuration's parameters.
ParamShareCount = Literal["deployed", "trainable"]


def _valid_hidden_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SIZE


def _hidden_size(value: Any) -> int:
    if not _valid_hidden_size(value):
        raise FieldError("search_space.hidden_size", f"must be an integer from 1 to {MAX_SIZE}, "
                         f"got {value!r}")
    return int(value)


def _space_shorthands(space: Any, dims: Any) -> Any:
    """Fill a search space given in short: ``kind`` defaults to ``autopeft`` (specs stored
    before there were families), ``hidden_size`` stands for the family's default size
    choices, ``num_layers`` and a design space's ``backbone`` default to ``backbone_dims``,
    and a lora space's ``targets`` to every projection the backbone has."""
    if not isinstance(space, dict):
        return space
    space = dict(space)
    kind = space.setdefault("kind", "autopeft")
    dims_map = dims.model_dump() if isinstance(dims, BackboneDims) else dims
    if not isinstance(dims_map, dict):
        dims_map = None
    hidden = space.pop("hidden_size", None)
    if hidden is None and dims_map is not None and kind in ("autopeft", "unified"):
        hidden = dims_map.get("hidden_size")
        if not _valid_hidden_size(hidden):
            hidden = None  # BackboneDims reports it, at backbone_dims.hidden_size
    if hidden is not None and kind in ("autopeft", "unified"):
        hidden = _hidden_size(hidden)
        names = (("serial_adapter_sizes", "parallel_adapter_sizes", "prefix_lengths")
                 if kind == "autopeft" else ("attention_sizes", "ffn_sizes"))
        sizes = default_sizes(hidden) if kind == "autopeft" else unified_sizes(hidden)
        for name in names:
            space.setdefault(name, sizes)
    elif hidden is not None:
        raise FieldError("search_space.hidden_size", f"is not a field of the {kind} space")
    if kind == "lora" and dims_map is not None and dims_map.get("gated_ffn"):
        space.setdefault("targets", [t.value for t in LoraTarget])  # + ffn_gate: all seven
    if dims_map is not None:
        if kind == "design_space":
            space.setdefault("backbone", dims_map)
        else:
            space.setdefault("num_layers", dims_map.get("num_layers"))
    return space


class StudySpec(_Spec, StorableInput):
    """A search job: backbone, task, space, objectives, budget, training, optimiser.

    Every number and size is bounded and every value must be storable as JSON (no NaN,
    infinity or NUL character): a spec is stored, sent with every lease and read by the
    proposer, so one oversized or malformed spec must not reach them.
    """

    name: str = Field(min_length=1, max_length=200)
    backbone: str = Field(min_length=1, max_length=1000,
                          description="Packaged model name (minilm, smollm2; then "
                          "backbone_dims may be left out), model folder (as the workers see "
                          "it) or hub name.")
    task: str = Field(min_length=1, max_length=1000, description="e.g. glue:rte, synthetic.")
    data_dir: str | None = Field(None, max_length=1000,
                                 description="GLUE folder as the workers see it.")
    task_options: dict[str, Any] = Field(
        default_factory=dict, description="Task-specific options sent with every lease "
        f"(at most {MAX_TASK_OPTIONS_BYTES} bytes as JSON).")
    backbone_dims: BackboneDims | None = Field(
        None, description="The backbone's dimensions (layers, hidden, heads, FFN width, total "
        "parameters): the server computes every configuration's parameter share from them, "
        "and workers check their loaded backbone against them. Required for a new study; "
        "`autopeft submit`, the Python client and the demo read them from the model "
        "folder's config.json.")
    search_space: SearchSpace = Field(description="The family searched (``kind``: autopeft, "
                                      "unified, design_space or lora) and its choices.")
    param_share: ParamShareCount = Field(
        "deployed", description="The share objective counts the parameters deployed after "
        "training (default, as AutoPEFT and He et al. count them: the prefix MLP folded away) "
        "or those that train (training memory).")
    objective_metric: str | None = Field(
        None, max_length=100,
        description="Informational: the task's primary metric (set by the worker).")
    reference_point: ReferencePoint = Field(default_factory=ReferencePoint)
    budget: Budget = Field(default_factory=Budget)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    early_stopping: EarlyStopping = Field(
        default_factory=EarlyStopping, description="Rungs at which trials are scored early, "
        "and the rule that stops those that cannot reach the front (default: none).")
    fidelity: Fidelity | None = Field(
        None, description="A fidelity axis (fractions of the full training budget): trials "
        "pause at each level and the promising ones continue from their checkpoint; the "
        "budget then counts full-training equivalents. None (default): every trial trains "
        "in full.")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED,
                      description="Training seed of every trial (fair comparison).")
    warm_start: WarmStart | None = Field(
        None, description="Learn from earlier studies of the same family (another task or "
        "backbone): their observations in the model (mode model) or their Pareto "
        "configurations as the first trials (mode seed). None (default): a cold start.")
    kind: Literal["autopeft"] = "autopeft"

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if (isinstance(data, dict) and data.get("backbone_dims") is None
                and isinstance(data.get("backbone"), str)
                and (named := packaged_dims(data["backbone"])) is not None):
            data = {**data, "backbone_dims": named.model_dump()}  # minilm, smollm2
        if isinstance(data, dict) and "search_space" in data:
            data = dict(data)
            data["search_space"] = _space_shorthands(data["search_space"],
                                                     data.get("backbone_dims"))
        return data

    @property
    def space(self) -> SearchSpaceBase:
        """The search space (the contract of ``domain.spaces``)."""
        return self.search_space

    @field_validator("name", "backbone")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank (only spaces)")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        """The task string's form and GLUE name are checked here, so that a misspelt task is
        refused at submit rather than failed by every worker (folders are the workers')."""
        try:
            parse_task(value)
        except DataError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("task_options")
    @classmethod
    def _bounded_task_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, MAX_TASK_OPTIONS_BYTES)

    @model_validator(mode="after")
    def _dims_consistent(self) -> Self:
        dims = self.backbone_dims
        if dims is None:
            return self
        layers = getattr(self.search_space, "num_layers", None)
        if layers != dims.num_layers:
            raise FieldError("search_space.num_layers", f"{layers} differs from "
                             f"backbone_dims.num_layers {dims.num_layers}")
        backbone = getattr(self.search_space, "backbone", None)
        if backbone is not None and backbone != dims:
            raise FieldError("search_space.backbone", "differs from backbone_dims")
        problem = self.search_space.backbone_error(dims)
        if problem is not None:
            field, _, reason = problem.partition(": ")
            raise FieldError(f"search_space.{field}", reason)
        return self

    @model_validator(mode="after")
    def _one_way_to_stop_early(self) -> Self:
        if self.fidelity is not None and self.early_stopping.rule != "none":
            raise FieldError("early_stopping.rule", f"{self.early_stopping.rule!r} cannot be "
                             "combined with a fidelity section (its rule decides which trials "
                             "continue); use rule none")
        return self

    @model_validator(mode="after")
    def _warm_model_needs_saasbo(self) -> Self:
        warm = self.warm_start
        if warm is None or warm.mode != "model":
            return self
        if self.optimizer.name != "saasbo":
            raise FieldError("warm_start.mode", f"'model' puts the sources in the saasbo "
                             f"optimiser's model; optimizer {self.optimizer.name!r} has "
                             "none (use 'seed', or optimizer saasbo)")
        if self.fidelity is not None:
            raise FieldError("warm_start.mode", "'model' cannot be combined with a fidelity "
                             "section (its model has no source tasks); use 'seed'")
        return self

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


def parse_search_space(data: Any, backbone_dims: BackboneDims | None = None) -> SearchSpaceBase:
    """A search space from its JSON form, with the shorthands of a study spec (``kind``
    defaults to autopeft, ``hidden_size`` stands for the default sizes).

    Raises:
        ConfigError: invalid field (named, ``search_space.`` prefixed).
    """
    from pydantic import TypeAdapter

    from autopeft_service.domain.validation import parse_model_with

    adapter: TypeAdapter[Any] = TypeAdapter(SearchSpace)
    space: SearchSpaceBase = parse_model_with(adapter, _space_shorthands(data, backbone_dims),
                                              "search_space")
    return space


def check_new_study(spec: StudySpec) -> None:
    """What a new study needs beyond a spec that parses (stored specs may predate it).

    Raises:
        ConfigError: ``backbone_dims`` is missing.
    """
    from autopeft_service.domain.errors import ConfigError

    if spec.backbone_dims is None:
        raise ConfigError(
            "backbone_dims: required: the server computes the parameter share from the "
            "backbone's dimensions (num_layers, hidden_size, num_heads, ffn_size, "
            "total_parameters). `autopeft submit` and the Python client fill them from "
            "the model folder's config.json when they can read it")

"""The response bodies users read: studies, trials, fronts, progress and workers.

Shared by the server (which builds them from rows, ``autopeft_service.api.views``) and the
Python client (which parses the server's JSON into them), so both speak the same types.
Pure pydantic: nothing here imports the API, storage or HTTP.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from autopeft_service.domain.study import ParamShareCount, StudySpec

__all__ = ["ArtifactInfo", "HypervolumeHistory", "HypervolumePoint", "Page", "ParetoOut",
           "RungOut", "StudyOut", "StudyPage", "TrialPage", "TrialSummary", "WorkerList",
           "WorkerOut", "WorkerTrial"]


class ArtifactInfo(BaseModel):
    """A trial's stored artefact."""

    sha256: str
    bytes: int
    uploaded_at: float | None


class RungOut(BaseModel):
    """A trial's score at one rung, and the early-stopping decision on it."""

    rung: int
    step: int
    score: float | None
    examples: int
    eval_seconds: float
    proceed: bool | None = Field(description="True: went on; False: pruned here; None: no "
                                 "rule applied (curve recorded only).")
    decision: str | None


class ObservationOut(BaseModel):
    """A fidelity study's trial scored at one level (``domain.fidelity``)."""

    fidelity: float = Field(description="The level: a fraction of the full training budget.")
    score: float | None = Field(description="The held-out score there (maximised).")
    dev_score: float | None
    step: int
    cost_seconds: float = Field(description="Training plus scoring seconds of the lease "
                                "that reached the level (new steps only).")
    worker: str | None


class PredictionOut(BaseModel):
    """The model's posterior of a trial's score at full training (the model-predicted
    front's score): mean and the central ``level`` interval."""

    mean: float
    low: float
    high: float
    level: float


class TrialSummary(BaseModel):
    """A trial as users see it."""

    id: int
    number: int
    state: str
    generator: str
    attempt: int
    params: dict[str, int | float | str]
    config: dict[str, Any]
    config_description: str
    worker: str | None
    objective: float | None
    param_share: float | None = Field(
        description="The share objective: the deployed or the trainable share, whichever "
        "the study's param_share (param_share_count here) names; percent of the backbone.")
    deployed_share: float | None = Field(
        None, description="Parameters stored per task after training (a prefix's "
        "reparameterising MLP folded away), percent of the backbone. The server's count "
        "when the study has backbone_dims (known from the proposal on), else the worker's "
        "report; None when neither is known.")
    trainable_share: float | None = Field(
        None, description="Parameters that train (a prefix's MLP included; the task head "
        "excluded), percent of the backbone: what training memory scales with. Known as "
        "deployed_share is.")
    dev_score: float | None
    failure_reason: str | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: float
    leased_at: float | None
    finished_at: float | None
    artifact: ArtifactInfo | None = Field(
        None, description="The uploaded adapter artefact (GET /v1/trials/{id}/artifact); "
        "None until its worker uploads it.")
    rungs: list[RungOut] = Field(default_factory=list, description="Scores at the study's "
                                 "early-stopping rungs, in rung order (kept when pruned).")
    fidelity: float | None = Field(
        None, description="A fidelity study's level the trial trains (or trained) to; None "
        "in a study without fidelity.")
    observations: list[ObservationOut] = Field(
        default_factory=list, description="A fidelity study's scores at each level the "
        "trial reached, in level order.")
    predicted: PredictionOut | None = Field(
        None, description="On the model-predicted front only: the model's score at full "
        "training with its interval.")
    replicate: int = Field(
        0, description="0 for a configuration's first trial; k for its k-th replicate, the "
        "same configuration trained again with the study's seed + k (rule model).")


class TransferOut(BaseModel):
    """What a model warm start learnt of its sources at the study's last model proposal."""

    correlations: dict[int, float] = Field(
        description="Source study id -> the posterior mean of its task correlation with "
        "this study in the multi-task model (0: unrelated, 1: the same task up to shift "
        "and scale), for the sources the model was fitted on.")
    predictive: dict[int, float] = Field(
        description="Source study id -> the negative-transfer guard's check: how a model "
        "of the source alone, predicting at this study's points, correlates with this "
        "study's scores (empty until the study has 6 scores).")
    dropped: list[int] = Field(description="Sources the guard left out (check below 0.3).")
    used: bool = Field(description="Whether any source was in the model (false: the guard "
                       "dropped them all; the study's own model proposes, as a cold "
                       "study's would).")
    target_trials: int = Field(description="This study's completed trials the model saw.")
    at: float = Field(description="When (epoch seconds).")


class StudyOut(BaseModel):
    """A study with its progress."""

    id: int
    name: str
    state: str = Field(description="running, completed, cancelled or failed.")
    reason: str | None = Field(
        None, description="Why the study failed; while running, why proposals are failing.")
    proposer_failures: int = Field(
        0, description="Failed proposer passes in a row (the study is retried with backoff).")
    created_at: float
    updated_at: float
    counts: dict[str, int]
    total_trials: int
    best: TrialSummary | None = Field(description="Completed trial with the best held-out score.")
    hypervolume: float = Field(description="Of the completed trials, against reference_point.")
    pareto_size: int
    param_share_count: ParamShareCount = Field(
        "deployed", description="Which share the search minimises (each trial's "
        "param_share): deployed (the default) or trainable.")
    spec: StudySpec | dict[str, Any] = Field(
        union_mode="left_to_right",  # a client parsing the JSON gets a StudySpec back
        description="The spec; shown as stored when an older version stored one that no "
        "longer validates.")
    transfer: TransferOut | None = Field(
        None, description="A model warm start (warm_start.mode model): the learned task "
        "correlations at the last model proposal; null before the first, or without one.")


class Page(BaseModel):
    """One page of a list."""

    total: int
    offset: int
    limit: int


class StudyPage(Page):
    """One page of studies, oldest first."""

    items: list[StudyOut]


class TrialPage(Page):
    """One page of a study's trials, by number."""

    items: list[TrialSummary]


#: How a front=model answer stands (``ParetoOut.model_status``).
ModelFrontStatus = Literal["fresh", "refitting", "fitting", "failed", "unavailable"]


class ParetoOut(BaseModel):
    """The non-dominated completed trials (score max, parameter share min)."""

    study_id: int
    reference_point: dict[str, float]
    hypervolume: float
    param_share_count: ParamShareCount = Field(
        "deployed", description="Which share the front minimises (each trial's "
        "param_share): deployed (the default) or trainable.")
    front: Literal["observed", "model"] = Field(
        "observed", description="observed: the front of the observed held-out scores of "
        "completed trials; model: the front of the model's predicted full-training scores "
        "of every evaluated trial (each with ``predicted``), hypervolume of the means.")
    note: str | None = Field(None, description="With front=model: why the answer is not the "
                             "model front of every observation (the observed front given, "
                             "or older predictions while a refit runs).")
    model_status: ModelFrontStatus | None = Field(
        None, description="Asked for front=model: fresh (fitted on every observation), "
        "refitting (older predictions, a refit running), fitting (the first fit running: "
        "the observed front given), failed (the fit failed: the observed front; asking "
        "again retries) or unavailable (too few observations, or a stored spec that no "
        "longer validates: the observed front). None for the observed front.")
    trials: list[TrialSummary]


class HypervolumePoint(BaseModel):
    """The hypervolume once ``completed`` trials had completed (by finishing time)."""

    completed: int
    trial_number: int = Field(description="The trial whose completion this point follows.")
    finished_at: float | None
    hypervolume: float


class HypervolumeHistory(BaseModel):
    """A study's hypervolume against completed trials (the dashboard's progress curve)."""

    study_id: int
    reference_point: dict[str, float]
    points: list[HypervolumePoint]


class WorkerTrial(BaseModel):
    """A trial a worker holds a lease on."""

    study_id: int
    trial_id: int
    number: int
    leased_at: float | None
    lease_deadline: float | None


class WorkerOut(BaseModel):
    """A worker process, known by the name it leases under (from the ``workers`` table,
    which leases and heartbeats update)."""

    name: str
    first_seen: float
    last_seen: float = Field(description="Last lease or heartbeat (server clock, epoch s).")
    leases: int = Field(description="Leases granted to this worker so far, all studies "
                        "together.")
    study_trials: int | None = Field(
        None, description="With ?study_id=: how many of that study's trials this worker "
        "leased (a trial leased again counts for its latest holder only); null without "
        "study_id.")
    alive: bool = Field(description="Seen within the server's worker_alive_seconds.")
    trials: list[WorkerTrial] = Field(description="Trials it holds a lease on now, of every "
                                      "study the caller may see (study_id names each one's).")
    other_trials: int = Field(0, description="Leases it holds now on other tenants' trials "
                              "(a shared-pool worker busy elsewhere; not listed).")


class WorkerList(BaseModel):
    """The workers the server has seen, with the clock to judge them by."""

    now: float = Field(description="The server's clock, to read last_seen against.")
    alive_seconds: float
    items: list[WorkerOut]

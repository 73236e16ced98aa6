"""Turn rows into response bodies (shared by routes).

Views show what the database holds, whatever an older version stored there: a completed
trial without finite objectives stays out of the best trial, the front and the
hypervolume; a stored spec that no longer validates is shown as stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autopeft_service.api.model_front_cache import Lookup, Predictions, model_fronts
from autopeft_service.domain.pareto import (
    ObjectivePoint,
    hypervolume,
    hypervolume_history,
    pareto_indices,
)
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.spaces import point_key
from autopeft_service.domain.study import ParamShareCount, ReferencePoint, StudySpec, TrialState
from autopeft_service.domain.views import (
    ArtifactInfo,
    HypervolumeHistory,
    HypervolumePoint,
    ModelFrontStatus,
    ObservationOut,
    ParetoOut,
    PredictionOut,
    RungOut,
    StudyOut,
    TransferOut,
    TrialSummary,
    WorkerList,
    WorkerOut,
    WorkerTrial,
)
from autopeft_service.optimizers.prediction import MIN_OBSERVATIONS, ScoreObservation
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import database_now
from autopeft_service.storage.models import ObservationRow, RungRow, StudyRow, TrialRow
from autopeft_service.storage.repository.fidelity import observations_of
from autopeft_service.storage.rungs import rungs_of


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON cannot carry them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _describe(config: dict[str, Any]) -> str:
    try:
        return PeftConfig.model_validate(config).describe()
    except ValidationError:
        return "(configuration no longer readable)"


def _percent(value: Any) -> float | None:
    """A stored result's share (percent) when it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return _finite(float(value))


def _count(value: Any) -> int | None:
    """A stored result's parameter count when it is a whole number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def trial_shares(row: TrialRow, backbone_total: int | None) -> tuple[float | None,
                                                                     float | None]:
    """A trial's (deployed, trainable) share, percent of the backbone.

    The server's counts (``expected_*``, set at proposal when the study has backbone_dims)
    over ``backbone_total`` come first: computed as the share objective is, so one of them
    equals ``param_share``, and known before any result (a completed trial's report
    matched them). Otherwise (a study stored before backbone_dims) the worker's report; a
    report of an older worker without ``deployed_percent`` gives it through the ratio of
    its counts. None where neither is known. Cheap: no configuration is counted here.
    """
    if backbone_total and row.expected_deployed is not None \
            and row.expected_trainable is not None:
        return (100.0 * row.expected_deployed / backbone_total,
                100.0 * row.expected_trainable / backbone_total)
    result = row.result if isinstance(row.result, dict) else {}
    trainable = _percent(result.get("trainable_percent"))
    deployed = _percent(result.get("deployed_percent"))
    trained_count, deployed_count = (_count(result.get("trainable_parameters")),
                                     _count(result.get("deployed_parameters")))
    if deployed is None and trainable is not None and trained_count and \
            deployed_count is not None:
        deployed = trainable * deployed_count / trained_count
    return deployed, trainable


def trial_summaries(session: Session, rows: Sequence[TrialRow],
                    backbone_total: int | None | Literal["look up"] = "look up"
                    ) -> list[TrialSummary]:
    """Trials as users see them, with their rung scores (one query for all).

    ``backbone_total``: the study's backbone parameters (``backbone_dims``; None: unknown),
    the denominator of the trials' shares; by default each trial's study is looked up
    (once per study, without a query when the route already loaded it).
    """
    rungs = rungs_of(session, [row.id for row in rows])
    observations = observations_of(session, [row.id for row in rows if row.fidelity is not None])
    totals: dict[int, int | None] = {}
    for study_id in {row.study_id for row in rows} if backbone_total == "look up" else ():
        study = session.get(StudyRow, study_id)
        totals[study_id] = None if study is None else study_backbone_total(study)
    return [trial_summary(row, rungs[row.id], totals.get(row.study_id)
                          if backbone_total == "look up" else backbone_total,
                          observations.get(row.id, ()))
            for row in rows]


def trial_summary(row: TrialRow, rungs: Sequence[RungRow] = (),
                  backbone_total: int | None = None,
                  observations: Sequence[ObservationRow] = ()) -> TrialSummary:
    deployed, trainable = trial_shares(row, backbone_total)
    return TrialSummary(
        id=row.id, number=row.number, state=row.state, generator=row.generator,
        attempt=row.attempt, params=row.params, config=row.config,
        config_description=_describe(row.config), worker=row.worker,
        objective=_finite(row.objective), param_share=_finite(row.param_share),
        deployed_share=deployed, trainable_share=trainable,
        dev_score=_finite(row.dev_score),
        failure_reason=row.failure_reason, progress=_json_safe(row.progress),
        result=_json_safe(row.result),
        created_at=row.created_at, leased_at=row.leased_at, finished_at=row.finished_at,
        artifact=None if row.artifact_sha256 is None else ArtifactInfo(
            sha256=row.artifact_sha256, bytes=row.artifact_bytes or 0,
            uploaded_at=row.artifact_at),
        rungs=[RungOut(rung=r.rung, step=r.step, score=_finite(r.score), examples=r.examples,
                       eval_seconds=r.eval_seconds, proceed=r.proceed, decision=r.decision)
               for r in rungs],
        fidelity=row.fidelity, replicate=int(row.replicate or 0),
        observations=[ObservationOut(fidelity=o.fidelity, score=_finite(o.score),
                                     dev_score=_finite(o.dev_score), step=o.step,
                                     cost_seconds=o.cost_seconds, worker=o.worker)
                      for o in observations])


def _spec_backbone_total(spec: StudySpec | dict[str, Any]) -> int | None:
    """The backbone's parameters a spec names (as stored when it no longer validates)."""
    if isinstance(spec, StudySpec):
        return None if spec.backbone_dims is None else spec.backbone_dims.total_parameters
    dims = spec.get("backbone_dims")
    total = _count(dims.get("total_parameters")) if isinstance(dims, dict) else None
    return total if total is not None and total > 0 else None


def _share_count(spec: StudySpec | dict[str, Any]) -> ParamShareCount:
    """Which share a study's trials minimise: its spec's ``param_share``; trainable for a
    study without backbone_dims (the worker's trainable share was its objective)."""
    if isinstance(spec, StudySpec):
        return spec.param_share if spec.backbone_dims is not None else "trainable"
    stored = spec.get("param_share")
    if stored == "trainable":
        return "trainable"
    return "deployed" if stored == "deployed" or spec.get("backbone_dims") else "trainable"


def study_backbone_total(study: StudyRow) -> int | None:
    """The backbone's parameters of a study's spec (None when it names none)."""
    spec, _reference, _total = _stored_spec(study)
    return _spec_backbone_total(spec)


def _stored_spec(study: StudyRow) -> tuple[StudySpec | dict[str, Any], ReferencePoint, int]:
    """The study's spec (as stored when it no longer validates), its reference point and
    its total trials (defaults where the stored spec cannot say)."""
    try:
        spec = StudySpec.model_validate(study.spec)
    except ValidationError:
        raw = study.spec if isinstance(study.spec, dict) else {}
        try:
            reference = ReferencePoint.model_validate(raw.get("reference_point", {}))
        except ValidationError:
            reference = ReferencePoint()
        total = (raw.get("budget") or {}).get("total_trials")
        return raw, reference, total if isinstance(total, int) else 0
    return spec, spec.reference_point, spec.budget.total_trials


def _scored_trials(session: Session, study_id: int) -> list[TrialRow]:
    """Completed trials with two finite objectives."""
    return [r for r in repo.trials_in_states(session, study_id, [TrialState.COMPLETED.value])
            if _finite(r.objective) is not None and _finite(r.param_share) is not None]


def _objectives(row: TrialRow) -> tuple[float, float]:
    """The (objective, param_share) of a row of ``_scored_trials`` (both finite)."""
    if row.objective is None or row.param_share is None:
        raise ValueError(f"trial {row.id} is not scored")
    return float(row.objective), float(row.param_share)


def _point(row: TrialRow) -> ObjectivePoint:
    score, share = _objectives(row)
    return ObjectivePoint(score=score, share=share)


def _best_key(row: TrialRow) -> tuple[float, float]:
    """Best trial first by objective, then by the smaller parameter share."""
    score, share = _objectives(row)
    return score, -share


def _front(completed: list[TrialRow], reference_point: ReferencePoint
           ) -> tuple[list[TrialRow], float]:
    points = [_point(r) for r in completed]
    reference = ObjectivePoint(score=reference_point.score, share=reference_point.param_share)
    return [completed[i] for i in pareto_indices(points)], hypervolume(points, reference)


def study_out(session: Session, study: StudyRow) -> StudyOut:
    spec, reference, total = _stored_spec(study)
    completed = _scored_trials(session, study.id)
    front, volume = _front(completed, reference)
    best = max(completed, key=_best_key, default=None)
    backbone_total = _spec_backbone_total(spec)
    return StudyOut(id=study.id, name=study.name, state=study.state, reason=study.reason,
                    proposer_failures=study.proposer_failures or 0,
                    created_at=study.created_at, updated_at=study.updated_at,
                    counts=repo.trial_counts(session, study.id), total_trials=total,
                    best=(trial_summaries(session, [best], backbone_total)[0]
                          if best is not None else None),
                    hypervolume=volume, pareto_size=len(front),
                    param_share_count=_share_count(spec), spec=spec,
                    transfer=(TransferOut.model_validate(study.transfer)
                              if study.transfer else None))


def pareto_out(session: Session, study: StudyRow) -> ParetoOut:
    spec, reference, _total = _stored_spec(study)
    front, volume = _front(_scored_trials(session, study.id), reference)
    return ParetoOut(study_id=study.id, reference_point=reference.model_dump(),
                     hypervolume=volume, param_share_count=_share_count(spec),
                     trials=trial_summaries(session, front, _spec_backbone_total(spec)))


def _score_observations(session: Session, study_id: int, spec: StudySpec
                        ) -> tuple[list[ScoreObservation], list[TrialRow]]:
    """Every score the model learns from, and the trials it predicts (completed, and in a
    fidelity study paused), each with a finite share."""
    rows = [r for r in repo.trials_in_states(session, study_id, [
        TrialState.COMPLETED.value, TrialState.PAUSED.value]) if _finite(r.param_share) is not None]
    if spec.fidelity is None:
        scored = [r for r in rows if _finite(r.objective) is not None]
        return [ScoreObservation(r.id, r.params, 1.0, float(r.objective or 0.0))
                for r in scored], scored
    by_trial = observations_of(session, [r.id for r in rows])
    observations = [ScoreObservation(r.id, r.params, o.fidelity, o.score)
                    for r in rows for o in by_trial.get(r.id, [])
                    if _finite(o.score) is not None]
    return observations, [r for r in rows if r.id in by_trial]


def model_pareto_out(session: Session, study: StudyRow) -> ParetoOut:
    """The front of the model's predicted full-training scores (``optimizers.prediction``).

    The fit runs in the background (``model_front_cache``), once per new set of
    observations; this waits for it at most ``model_front_wait_seconds``. Past that the
    front of the study's older predictions is given with a ``note`` saying on how many
    observations they were fitted; without older predictions, or when the model has too
    few observations, the fit failed or the stored spec no longer validates, the observed
    front with a ``note`` saying why.

    Args:
        session: a read session.
        study: the study (the caller may see it).

    Returns:
        The model front, or the observed front with a note.
    """
    spec, _reference, _total = _stored_spec(study)
    if not isinstance(spec, StudySpec):
        return _observed_with_note(session, study,
                                   "the study's stored spec no longer validates: no model front",
                                   "unavailable")
    observations, rows = _score_observations(session, study.id, spec)
    if len(observations) < MIN_OBSERVATIONS:
        return _observed_with_note(session, study, (
            f"the model needs at least {MIN_OBSERVATIONS} observations; "
            f"the study has {len(observations)}: the observed front is shown"), "unavailable")
    lookup = model_fronts.lookup(study.id, spec.space, observations)
    note = _stale_note(lookup, len(observations))
    if lookup.error is not None:
        return _observed_with_note(session, study, note or "the model fit failed", "failed")
    if lookup.fit is None:
        return _observed_with_note(session, study, note or "the model front is being fitted",
                                   "fitting")
    if not lookup.fit.predictions:
        return _observed_with_note(session, study, note or (
            f"the model predicts none of the study's {len(observations)} observations "
            "(no finite prediction): the observed front is shown"),
            "fresh" if lookup.fresh else "refitting")
    return _model_front(session, study.id, spec, rows, lookup.fit.predictions, note,
                        "fresh" if lookup.fresh else "refitting")


def _observed_with_note(session: Session, study: StudyRow, note: str,
                        status: ModelFrontStatus) -> ParetoOut:
    """The observed front, with why the model front is not given and its status."""
    return pareto_out(session, study).model_copy(update={"note": note, "model_status": status})


def _stale_note(lookup: Lookup, observations: int) -> str | None:
    """Why the answer is not the model front of all ``observations`` (None: it is).

    Args:
        lookup: the cache's answer.
        observations: how many observations the study has now.

    Returns:
        The note of a failed fit, of older predictions, or of none yet; None when fresh.
    """
    if lookup.error is not None:
        return (f"the model fit failed ({lookup.error}): the observed front is shown; "
                "asking again tries a new fit")
    if lookup.fresh:
        return None
    if lookup.fit is None:
        return (f"the model front is being fitted on the study's {observations} "
                "observations: the observed front is shown; ask again shortly")
    return (f"model front fitted on {lookup.fit.observations} of {observations} "
            "observations; a refit is running")


def _model_front(session: Session, study_id: int, spec: StudySpec, rows: list[TrialRow],
                 predicted: Predictions, note: str | None,
                 status: ModelFrontStatus) -> ParetoOut:
    """The front of the predicted means of the trials in ``predicted`` (a trial newer
    than the fit is left out; a configuration's replicates appear once, as its first
    trial), each trial with its prediction.

    Args:
        session: a read session.
        study_id: the study.
        spec: its spec.
        rows: the trials the model predicts (``_score_observations``).
        predicted: trial id -> prediction.
        note: the response's note (older predictions), or None.
        status: fresh, or refitting (older predictions).

    Returns:
        The model front.
    """
    # one row per configuration: its replicates share its prediction (the first trial,
    # by number, stands for them)
    candidates, seen = [], set()
    for row in sorted((r for r in rows if r.id in predicted), key=lambda r: r.number):
        if point_key(row.params) not in seen:
            seen.add(point_key(row.params))
            candidates.append(row)
    points = [ObjectivePoint(score=predicted[r.id].mean, share=float(r.param_share or 0.0))
              for r in candidates]
    reference = spec.reference_point
    front = [candidates[i] for i in pareto_indices(points)]
    volume = hypervolume(points, ObjectivePoint(score=reference.score,
                                                share=reference.param_share))
    summaries = trial_summaries(session, front, _spec_backbone_total(spec))
    for summary in summaries:
        p = predicted[summary.id]
        summary.predicted = PredictionOut(mean=p.mean, low=p.low, high=p.high, level=p.level)
    return ParetoOut(study_id=study_id, reference_point=reference.model_dump(),
                     hypervolume=volume, param_share_count=_share_count(spec), front="model",
                     note=note, model_status=status, trials=summaries)


def hypervolume_out(session: Session, study: StudyRow) -> HypervolumeHistory:
    """The hypervolume after each completed trial, in the order they finished (ties by
    number): what a user watching the study saw it reach."""
    _spec, reference, _total = _stored_spec(study)
    rows = sorted(_scored_trials(session, study.id),
                  key=lambda r: (r.finished_at if r.finished_at is not None else math.inf,
                                 r.number))
    volumes = hypervolume_history(
        [_point(r) for r in rows],
        ObjectivePoint(score=reference.score, share=reference.param_share))
    return HypervolumeHistory(
        study_id=study.id, reference_point=reference.model_dump(),
        points=[HypervolumePoint(completed=index + 1, trial_number=row.number,
                                 finished_at=row.finished_at, hypervolume=volume)
                for index, (row, volume) in enumerate(zip(rows, volumes, strict=True))])


def _held_trials(session: Session, tenant_id: int | None
                 ) -> tuple[dict[str, list[WorkerTrial]], dict[str, int]]:
    """Each worker's leased trials now (by study and number) of ``tenant_id``'s studies
    (every study's when None), and how many others each holds."""
    held: dict[str, list[WorkerTrial]] = {}
    others: dict[str, int] = {}
    rows = repo.leased_trials(session)
    owners: dict[int, int] = {}
    if tenant_id is not None and rows:
        study_ids = {row.study_id for row in rows}
        owners = {study_id: owner for study_id, owner in session.execute(
            select(StudyRow.id, StudyRow.tenant_id).where(StudyRow.id.in_(study_ids)))}
    for row in rows:
        if tenant_id is not None and owners.get(row.study_id) != tenant_id:
            others[row.worker or ""] = others.get(row.worker or "", 0) + 1
            continue
        held.setdefault(row.worker or "", []).append(WorkerTrial(
            study_id=row.study_id, trial_id=row.id, number=row.number,
            leased_at=row.leased_at, lease_deadline=row.lease_deadline))
    return held, others


def _study_trials_by_worker(session: Session, study_id: int) -> dict[str, int]:
    """How many of the study's trials each worker leased (its latest lease holder)."""
    rows = session.execute(select(TrialRow.worker, func.count())
                           .where(TrialRow.study_id == study_id, TrialRow.worker.is_not(None))
                           .group_by(TrialRow.worker))
    return {str(name): int(count) for name, count in rows}


def workers_out(session: Session, alive_seconds: float, study_id: int | None = None,
                tenant_id: int | None = None) -> WorkerList:
    """Every worker with the trials it holds leases on now (a worker busy elsewhere is
    never shown idle); with ``study_id``, only the workers that hold or held a lease on
    that study's trials, each with its count of them (``study_trials``). With
    ``tenant_id``: only the workers of that tenant's private pool and of the shared pool,
    and only its studies' trials (others are counted in ``other_trials``)."""
    now = database_now(session)
    held, others = _held_trials(session, tenant_id)
    counts = None if study_id is None else _study_trials_by_worker(session, study_id)
    items = [WorkerOut(name=w.name, first_seen=w.first_seen, last_seen=w.last_seen,
                       leases=w.leases, alive=now - w.last_seen <= alive_seconds,
                       study_trials=None if counts is None else counts[w.name],
                       trials=held.get(w.name, []), other_trials=others.get(w.name, 0))
             for w in repo.list_workers(session, tenant_id)
             if counts is None or w.name in counts]
    return WorkerList(now=now, alive_seconds=alive_seconds, items=items)

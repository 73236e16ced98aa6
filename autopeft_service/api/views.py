"""Turn rows into response bodies (shared by routes).

Views show what the database holds, whatever an older version stored there: a completed
trial without finite objectives stays out of the best trial, the front and the
hypervolume; a stored spec that no longer validates is shown as stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autopeft_service.domain.pareto import (
    ObjectivePoint,
    hypervolume,
    hypervolume_history,
    pareto_indices,
)
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.study import ReferencePoint, StudySpec, TrialState
from autopeft_service.domain.views import (
    ArtifactInfo,
    HypervolumeHistory,
    HypervolumePoint,
    ParetoOut,
    RungOut,
    StudyOut,
    TrialSummary,
    WorkerList,
    WorkerOut,
    WorkerTrial,
)
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import database_now
from autopeft_service.storage.models import RungRow, StudyRow, TrialRow
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


def trial_summaries(session: Session, rows: Sequence[TrialRow]) -> list[TrialSummary]:
    """Trials as users see them, with their rung scores (one query for all)."""
    rungs = rungs_of(session, [row.id for row in rows])
    return [trial_summary(row, rungs[row.id]) for row in rows]


def trial_summary(row: TrialRow, rungs: Sequence[RungRow] = ()) -> TrialSummary:
    return TrialSummary(
        id=row.id, number=row.number, state=row.state, generator=row.generator,
        attempt=row.attempt, params=row.params, config=row.config,
        config_description=_describe(row.config), worker=row.worker,
        objective=_finite(row.objective), param_share=_finite(row.param_share),
        dev_score=_finite(row.dev_score),
        failure_reason=row.failure_reason, progress=_json_safe(row.progress),
        result=_json_safe(row.result),
        created_at=row.created_at, leased_at=row.leased_at, finished_at=row.finished_at,
        artifact=None if row.artifact_sha256 is None else ArtifactInfo(
            sha256=row.artifact_sha256, bytes=row.artifact_bytes or 0,
            uploaded_at=row.artifact_at),
        rungs=[RungOut(rung=r.rung, step=r.step, score=_finite(r.score), examples=r.examples,
                       eval_seconds=r.eval_seconds, proceed=r.proceed, decision=r.decision)
               for r in rungs])


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
    return StudyOut(id=study.id, name=study.name, state=study.state, reason=study.reason,
                    proposer_failures=study.proposer_failures or 0,
                    created_at=study.created_at, updated_at=study.updated_at,
                    counts=repo.trial_counts(session, study.id), total_trials=total,
                    best=trial_summaries(session, [best])[0] if best is not None else None,
                    hypervolume=volume, pareto_size=len(front), spec=spec)


def pareto_out(session: Session, study: StudyRow) -> ParetoOut:
    _spec, reference, _total = _stored_spec(study)
    front, volume = _front(_scored_trials(session, study.id), reference)
    return ParetoOut(study_id=study.id, reference_point=reference.model_dump(),
                     hypervolume=volume, trials=trial_summaries(session, front))


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


def _held_trials(session: Session) -> dict[str, list[WorkerTrial]]:
    """Each worker's leased trials now, of every study (by study and number)."""
    held: dict[str, list[WorkerTrial]] = {}
    for row in repo.leased_trials(session):
        held.setdefault(row.worker or "", []).append(WorkerTrial(
            study_id=row.study_id, trial_id=row.id, number=row.number,
            leased_at=row.leased_at, lease_deadline=row.lease_deadline))
    return held


def _study_trials_by_worker(session: Session, study_id: int) -> dict[str, int]:
    """How many of the study's trials each worker leased (its latest lease holder)."""
    rows = session.execute(select(TrialRow.worker, func.count())
                           .where(TrialRow.study_id == study_id, TrialRow.worker.is_not(None))
                           .group_by(TrialRow.worker))
    return {str(name): int(count) for name, count in rows}


def workers_out(session: Session, alive_seconds: float, study_id: int | None = None
                ) -> WorkerList:
    """Every worker with the trials it holds leases on now (of every study, so a worker
    busy elsewhere is never shown idle); with ``study_id``, only the workers that hold or
    held a lease on that study's trials, each with its count of them (``study_trials``)."""
    now = database_now(session)
    held = _held_trials(session)
    counts = None if study_id is None else _study_trials_by_worker(session, study_id)
    items = [WorkerOut(name=w.name, first_seen=w.first_seen, last_seen=w.last_seen,
                       leases=w.leases, alive=now - w.last_seen <= alive_seconds,
                       study_trials=None if counts is None else counts[w.name],
                       trials=held.get(w.name, []))
             for w in repo.list_workers(session) if counts is None or w.name in counts]
    return WorkerList(now=now, alive_seconds=alive_seconds, items=items)

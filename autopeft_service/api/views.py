"""Turn rows into response bodies (shared by routes)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from autopeft_service.api.schemas import ParetoOut, StudyOut, TrialSummary
from autopeft_service.domain.pareto import ObjectivePoint, hypervolume, pareto_indices
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.study import StudySpec, TrialState
from autopeft_service.storage import repository as repo
from autopeft_service.storage.models import StudyRow, TrialRow


def trial_summary(row: TrialRow) -> TrialSummary:
    return TrialSummary(
        id=row.id, number=row.number, state=row.state, generator=row.generator,
        attempt=row.attempt, params=row.params, config=row.config,
        config_description=PeftConfig.model_validate(row.config).describe(), worker=row.worker,
        objective=row.objective, param_share=row.param_share, dev_score=row.dev_score,
        failure_reason=row.failure_reason, progress=row.progress, result=row.result,
        created_at=row.created_at, leased_at=row.leased_at, finished_at=row.finished_at)


def _front(completed: list[TrialRow], spec: StudySpec) -> tuple[list[TrialRow], float]:
    points = [ObjectivePoint(score=float(r.objective), share=float(r.param_share))
              for r in completed]
    reference = ObjectivePoint(score=spec.reference_point.score,
                               share=spec.reference_point.param_share)
    return [completed[i] for i in pareto_indices(points)], hypervolume(points, reference)


def study_out(session: Session, study: StudyRow) -> StudyOut:
    spec = StudySpec.model_validate(study.spec)
    completed = repo.trials_in_states(session, study.id, [TrialState.COMPLETED.value])
    front, volume = _front(completed, spec)
    best = max(completed, key=lambda r: (r.objective, -r.param_share), default=None)
    return StudyOut(id=study.id, name=study.name, state=study.state,
                    created_at=study.created_at, updated_at=study.updated_at,
                    counts=repo.trial_counts(session, study.id),
                    total_trials=spec.budget.total_trials,
                    best=trial_summary(best) if best is not None else None,
                    hypervolume=volume, pareto_size=len(front), spec=spec)


def pareto_out(session: Session, study: StudyRow) -> ParetoOut:
    spec = StudySpec.model_validate(study.spec)
    completed = repo.trials_in_states(session, study.id, [TrialState.COMPLETED.value])
    front, volume = _front(completed, spec)
    return ParetoOut(study_id=study.id, reference_point=spec.reference_point.model_dump(),
                     hypervolume=volume, trials=[trial_summary(r) for r in front])

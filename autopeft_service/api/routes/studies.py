"""User routes: create, list, read and cancel studies; list trials; the Pareto front.

Readers read their tenant's studies, members also create and cancel them, admins act on
every tenant's; another tenant's study answers 404, as a missing one does. Creating and
cancelling are written to the audit log."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy.orm import Session

from autopeft_service.api.deps import (
    Member,
    Reader,
    ReaderAuth,
    ReadSessionDep,
    ServicesDep,
    SessionDep,
)
from autopeft_service.api.schemas import error_responses
from autopeft_service.api.views import model_pareto_out, pareto_out, study_out, trial_summaries
from autopeft_service.domain.study import StudySpec, TrialState, check_new_study
from autopeft_service.domain.tenancy import Principal
from autopeft_service.domain.views import ParetoOut, StudyOut, StudyPage, TrialPage
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.storage import repository as repo
from autopeft_service.storage.models import StudyRow
from autopeft_service.warm_start import seed_study

router = APIRouter(prefix="/v1/studies", tags=["studies"], dependencies=[ReaderAuth],
                   responses=error_responses(401, 403, 422, 503))
ONE_STUDY = error_responses(404)

Offset = Annotated[int, Query(ge=0, le=10_000_000)]
# A study's JSON is bounded (spec fields and task_options), so a page of 100 stays a few MB.
StudyLimit = Annotated[int, Query(ge=1, le=100)]
Limit = Annotated[int, Query(ge=1, le=500)]
StudyId = Annotated[int, Path(ge=1, le=2**31 - 1)]
#: Retry-After of a creation past the tenant's running-studies quota: studies run for
#: minutes at least, so asking again sooner only repeats the 429.
QUOTA_RETRY_AFTER_SECONDS = 30


def _study(session: Session, study_id: int, caller: Principal) -> StudyRow:
    """The study if the caller may see it (its tenant's, or any for an admin); 404
    otherwise."""
    try:
        return repo.get_study(session, study_id, caller.scope)
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StudyOut,
             responses=error_responses(400, 404, 413, 429))
def create_study(spec: StudySpec, session: SessionDep, services: ServicesDep,
                 caller: Member) -> StudyOut:
    """Start a search, owned by the caller's tenant. ``backbone_dims``, the optimiser's
    name and settings and the pair of optimiser and space are checked before anything is
    stored (422 naming the field)."""
    check_new_study(spec)  # ConfigError: 422 naming the field
    make_optimizer(spec)
    try:  # warm start: sources the caller may read, of the same family (422 otherwise)
        sources = repo.warm_start_sources(session, spec, caller.scope)
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    if repo.running_studies_left(session, caller.tenant_id) == 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, (
            f"tenant {caller.tenant} runs as many studies as its max_running_studies "
            "allows: retry once one ends (or cancel one)"),
            headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)})
    row = repo.create_study(session, spec, caller.tenant_id)
    if spec.warm_start is not None and spec.warm_start.mode == "seed":
        seed_study(session, row.id, spec, sources)
    repo.audit(session, caller, "create_study", row.id)
    out = study_out(session, row)
    session.commit()
    services.proposer.wake()
    return out


@router.get("", response_model=StudyPage)
def list_studies(session: ReadSessionDep, caller: Reader, offset: Offset = 0,
                 limit: StudyLimit = 50) -> StudyPage:
    """The caller's tenant's studies (every tenant's for an admin), newest first."""
    rows, total = repo.list_studies(session, offset, limit, caller.scope)
    return StudyPage(total=total, offset=offset, limit=limit,
                     items=[study_out(session, r) for r in rows])


@router.get("/{study_id}", response_model=StudyOut, responses=ONE_STUDY)
def get_study(study_id: StudyId, session: ReadSessionDep, caller: Reader) -> StudyOut:
    return study_out(session, _study(session, study_id, caller))


@router.post("/{study_id}/cancel", response_model=StudyOut, responses=ONE_STUDY)
def cancel_study(study_id: StudyId, session: SessionDep, caller: Member) -> StudyOut:
    """Stop a study: queued and running trials are cancelled (workers are told to stop)."""
    study = _study(session, study_id, caller)
    repo.audit(session, caller, "cancel_study", study_id, study.tenant_id)
    out = study_out(session, repo.cancel_study(session, study_id))
    # Committed before answering: the session dependency's own commit runs after the
    # response is sent, and reads (plain snapshots) must see what a 200 announced.
    session.commit()
    return out


@router.get("/{study_id}/trials", response_model=TrialPage, responses=ONE_STUDY)
def list_trials(study_id: StudyId, session: ReadSessionDep, caller: Reader,
                state: TrialState | None = None, offset: Offset = 0,
                limit: Limit = 50) -> TrialPage:
    _study(session, study_id, caller)
    rows, total = repo.list_trials(session, study_id, state.value if state else None, offset,
                                   limit)
    return TrialPage(total=total, offset=offset, limit=limit,
                     items=trial_summaries(session, rows))


@router.get("/{study_id}/pareto", response_model=ParetoOut, responses=ONE_STUDY)
def get_pareto(study_id: StudyId, session: ReadSessionDep, caller: Reader,
               front: Annotated[Literal["observed", "model"], Query(
                   description="observed (default): completed trials' observed held-out "
                   "scores; model: the model's predicted full-training scores with 90 % "
                   "intervals")] = "observed") -> ParetoOut:
    """Non-dominated trials: held-out score (max) vs. parameter share (min), observed or
    as the model predicts them."""
    study = _study(session, study_id, caller)
    return model_pareto_out(session, study) if front == "model" else pareto_out(session, study)

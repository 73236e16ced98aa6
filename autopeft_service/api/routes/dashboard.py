"""Read-only views the web dashboard polls (and any client may): a study's hypervolume
against completed trials, and the workers with the trials they hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from autopeft_service.api.deps import Reader, ReaderAuth, ReadSessionDep, ServicesDep
from autopeft_service.api.schemas import error_responses
from autopeft_service.api.views import hypervolume_out, workers_out
from autopeft_service.domain.views import HypervolumeHistory, WorkerList
from autopeft_service.storage import repository as repo

router = APIRouter(prefix="/v1", tags=["dashboard"], dependencies=[ReaderAuth],
                   responses=error_responses(401, 403, 422, 503))
StudyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/studies/{study_id}/hypervolume", response_model=HypervolumeHistory,
            responses=error_responses(404))
def get_hypervolume_history(study_id: StudyId, session: ReadSessionDep,
                            caller: Reader) -> HypervolumeHistory:
    """The hypervolume after each completed trial, in the order they finished (of the
    caller's tenant's study: another tenant's is a 404)."""
    try:
        study = repo.get_study(session, study_id, caller.scope)
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    return hypervolume_out(session, study)


@router.get("/workers", response_model=WorkerList, responses=error_responses(404))
def list_workers(session: ReadSessionDep, services: ServicesDep, caller: Reader,
                 study_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
                 ) -> WorkerList:
    """Workers by last contact (a lease or a heartbeat), with the trials they hold now;
    ``study_id`` keeps those that ran that study's trials and counts them
    (``study_trials``). A tenant sees its private pool's workers and the shared pool's,
    and only its own studies' trials (an admin sees all); another tenant's ``study_id``
    is a 404."""
    if study_id is not None:
        try:
            repo.get_study(session, study_id, caller.scope)
        except repo.NotFound as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    return workers_out(session, services.settings.worker_alive_seconds, study_id,
                       caller.scope)

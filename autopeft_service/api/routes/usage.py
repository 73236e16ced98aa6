"""``GET /v1/usage``: a tenant's use of the service against its quotas (an admin's: every
tenant's). The CLI's ``autopeft usage`` and the dashboard read it."""

from __future__ import annotations

from fastapi import APIRouter

from autopeft_service.api.deps import Reader, ReaderAuth, ReadSessionDep
from autopeft_service.api.schemas import error_responses
from autopeft_service.domain.tenancy import UsageOut
from autopeft_service.storage import repository as repo

router = APIRouter(prefix="/v1", tags=["usage"], dependencies=[ReaderAuth],
                   responses=error_responses(401, 403, 503))


@router.get("/usage", response_model=list[UsageOut])
def get_usage(session: ReadSessionDep, caller: Reader) -> list[UsageOut]:
    """Running studies, leased and ready trials, each beside its quota (null: no limit):
    the caller's tenant, or every tenant for an admin."""
    return [UsageOut(tenant=u.name, weight=u.weight, running_studies=u.running_studies,
                     max_running_studies=u.max_running_studies,
                     leased_trials=u.leased_trials, max_parallel_trials=u.max_parallel_trials,
                     ready_trials=u.ready_trials, max_queued_trials=u.max_queued_trials)
            for u in repo.tenant_usage(session, caller.scope)]

"""Worker protocol (docs/design.md, "The worker protocol"): lease, heartbeat, result, failure.

Lease long-polls: when nothing is ready it waits (up to the server's ``long_poll_seconds``
or the request's ``wait_seconds``, whichever is shorter) for the proposer's signal, then
answers 204 with ``Retry-After``. Reports are idempotent by lease token; a token that is
no longer the trial's lease gets 409.

Each handler's time to its answer, whatever the status, is observed in the server's
metrics (``api.metrics``): leases by outcome, heartbeats, reports by kind.

The handlers are ``async def`` and run their database work with ``run_in_threadpool``:
FastAPI validates a plain ``def`` endpoint's answer in a second trip through the thread
pool, one hand-off per request that the hot path does not need (the answers here are
small models, validated on the event loop).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from autopeft_service.api.deps import ServicesDep, Worker, WorkerAuth
from autopeft_service.api.schemas import (
    FailureIn,
    HeartbeatIn,
    HeartbeatOut,
    LeaseOut,
    LeaseRequest,
    ReportOut,
    ResultIn,
    error_responses,
)
from autopeft_service.api.services import Services
from autopeft_service.domain.early_stopping import EarlyStopping
from autopeft_service.domain.trial import MAX_SEED
from autopeft_service.storage import repository as repo
from autopeft_service.storage.rungs import RungRefused

TrialId = Annotated[int, Path(ge=1, le=2**31 - 1)]
router = APIRouter(prefix="/v1", tags=["workers"], dependencies=[WorkerAuth],
                   responses=error_responses(400, 401, 403, 413, 422, 503))
CONFLICT = error_responses(404, 409)


def _try_lease(services: Services, worker: str, first: bool = True,
               pool: int | None = None) -> LeaseOut | None:
    """The lease answer, or None when nothing is ready; ``pool``: only that tenant's
    trials (a private pool's worker), None: any tenant's (the shared pool). Built from the stored JSON of the
    trial and its study's spec (``services.study_spec_json``: parsed once per study, not
    per lease); the answer is validated as a ``LeaseOut``, so a stored field it cannot
    carry fails here rather than in the worker.

    The first try of a request writes the worker's row (seen now) in the lease's
    statement; the long poll's later tries write it only with a lease, and otherwise
    note the worker as seen for the next batch (``services.sightings``)."""
    seconds = services.settings.lease_seconds
    with services.database.statement_session() as session:
        lease = repo.lease_trial(session, worker, seconds, touch=first, pool=pool)
        if lease is None:
            if not first:
                services.sightings.seen(worker)
            return None
        spec = services.study_spec_json(session, lease.study_id)
    out = LeaseOut.model_validate({
        "trial_id": lease.trial_id, "study_id": lease.study_id, "number": lease.number,
        "attempt": lease.attempt, "token": lease.token, "deadline": lease.deadline,
        "lease_seconds": seconds, "params": lease.params, "config": lease.config,
        "backbone": spec["backbone"], "task": spec["task"], "data_dir": spec["data_dir"],
        "task_options": spec["task_options"], "training": spec["training"],
        # a replicate trains its configuration again with another seed (migration 0008),
        # within the seeds a result may report
        "seed": (spec["seed"] + lease.replicate) % (MAX_SEED + 1),
        "backbone_dims": spec.get("backbone_dims"),
        "early_stopping": spec.get("early_stopping") or {},
        "fidelity": 1.0 if lease.fidelity is None else lease.fidelity,
        "resume_sha256": lease.checkpoint_sha256})
    services.proposer.wake()  # a slot opened in the ready queue
    return out


def _lease_links() -> dict[str, Any]:
    """OpenAPI links from a lease to the calls its worker makes next (clients and
    schemathesis's stateful phase follow them): trial id from the answer, token in the body."""
    operations = {"Heartbeat": "heartbeat", "ReportResult": "report_result",
                  "ReportFailure": "report_failure"}
    return {name: {"operationId": f"{operation}_v1_trials__trial_id__{operation.split('_')[-1]}"
                                  "_post",
                   "parameters": {"trial_id": "$response.body#/trial_id"},
                   "description": f"{name} for the leased trial (token: $response.body#/token)"}
            for name, operation in operations.items()}


@router.post("/leases", response_model=LeaseOut,
             responses={200: {"model": LeaseOut, "links": _lease_links()},
                        204: {"description": "nothing ready; retry after Retry-After"}})
async def lease(body: LeaseRequest, services: ServicesDep, caller: Worker) -> Response:
    """Lease the oldest ready trial of the worker's pool (its tenant's studies for a
    private pool's token, any tenant's for the shared pool), long-polling while none is
    ready. The time to the answer goes to ``autopeft_lease_seconds`` by outcome (leased,
    empty, error)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        answer = await _lease_or_wait(body, services, caller.scope)
        outcome = "leased" if answer.status_code == status.HTTP_200_OK else "empty"
        return answer
    finally:
        services.metrics.observe_lease(outcome, time.perf_counter() - started)


async def _lease_or_wait(body: LeaseRequest, services: Services,
                         pool: int | None) -> Response:
    """A lease (200) from ``pool`` (``_try_lease``), or 204 with ``Retry-After`` once the
    long poll ran out or shutdown began."""
    settings = services.settings
    wait = settings.long_poll_seconds if body.wait_seconds is None else min(
        body.wait_seconds, settings.long_poll_seconds)
    deadline = time.monotonic() + wait
    first = True
    while True:
        out = await run_in_threadpool(_try_lease, services, body.worker, first, pool)
        if out is not None:  # JSONResponse, not the model: FastAPI would validate it again
            return JSONResponse(out.model_dump(mode="json"))
        first = False
        remaining = deadline - time.monotonic()
        if remaining <= 0 or services.stopping:  # shutting down: answer now
            return Response(status_code=status.HTTP_204_NO_CONTENT,
                            headers={"Retry-After": str(settings.retry_after_seconds)})
        # Wake on the proposer's signal; re-check at least every second (other processes).
        await services.ready.wait(min(remaining, 1.0))


def _conflict(error: Exception) -> HTTPException:
    if isinstance(error, repo.NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(error))
    return HTTPException(status.HTTP_409_CONFLICT, str(error))


@router.post("/trials/{trial_id}/heartbeat", response_model=HeartbeatOut, responses=CONFLICT)
async def heartbeat(trial_id: TrialId, body: HeartbeatIn, services: ServicesDep
                    ) -> HeartbeatOut:
    """Extend the lease and record progress and rung scores; ``stop`` tells the worker to
    abandon the trial (cancelled, or pruned by the early-stopping rule: ``reason`` says
    where and why). A rung the study does not have gets 422 naming it."""
    with services.metrics.heartbeat_seconds.time():
        return await run_in_threadpool(_heartbeat, trial_id, body, services)


def _heartbeat(trial_id: int, body: HeartbeatIn, services: Services) -> HeartbeatOut:
    """The heartbeat's work (``heartbeat``, untimed). Without rung scores, and while the
    trial is leased under the token, one statement (``repo.extend_lease``, autocommit on
    PostgreSQL); rung scores, and every answer but "go on" (404, 409, stop), take the
    transaction of ``repo.heartbeat``. The worker is noted as seen, written in batches
    (``services.sightings``)."""

    def early_stopping(study_id: int) -> EarlyStopping:
        spec = services.study_spec_json(session, study_id)
        return EarlyStopping.model_validate(spec.get("early_stopping") or {})

    seconds = services.settings.lease_seconds
    try:
        answer = None
        if not body.rungs:
            with services.database.statement_session() as session:
                answer = repo.extend_lease(session, trial_id, body.token, seconds,
                                           body.progress)
        if answer is None:
            with services.database.session() as session:
                answer = repo.heartbeat(session, trial_id, body.token, seconds,
                                        body.progress, body.rungs, early_stopping)
    except (repo.NotFound, repo.LeaseConflict) as error:
        raise _conflict(error) from None
    except RungRefused as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["body", *error.field.split(".")], "msg": str(error),
            "type": "value_error"}]) from None
    if answer.worker:
        services.sightings.seen(answer.worker)
    if answer.pruned:
        services.proposer.wake()  # a budget slot was used: the proposer may fill or finish
    return HeartbeatOut(deadline=answer.deadline, stop=answer.stop, reason=answer.reason)


@router.post("/trials/{trial_id}/result", response_model=ReportOut, responses=CONFLICT)
async def report_result(trial_id: TrialId, body: ResultIn, services: ServicesDep
                        ) -> ReportOut:
    """Record the result (idempotent: the same token again is a no-op). The proposer,
    woken here, completes the study once its budget is spent."""
    with services.metrics.report_seconds.labels(kind="result").time():
        return await run_in_threadpool(_report_result, trial_id, body, services)


def _report_result(trial_id: int, body: ResultIn, services: Services) -> ReportOut:
    """The result report's work (``report_result``, untimed)."""
    try:
        with services.database.statement_session() as session:
            outcome = repo.complete_trial(session, trial_id, body.token, body.result)
            out = _report_out(outcome)
    except (repo.NotFound, repo.LeaseConflict) as error:
        raise _conflict(error) from None
    services.proposer.wake()
    return out


def _report_out(outcome: repo.ReportOutcome) -> ReportOut:
    """The report answer: the trial's state after the report, and whether it repeated one."""
    trial = outcome.trial
    return ReportOut(trial_id=trial.id, state=trial.state, attempt=trial.attempt,
                     failure_reason=trial.failure_reason, duplicate=outcome.duplicate)


@router.post("/trials/{trial_id}/failure", response_model=ReportOut, responses=CONFLICT)
async def report_failure(trial_id: TrialId, body: FailureIn, services: ServicesDep
                         ) -> ReportOut:
    """Record a failed attempt: requeued until the study's ``max_attempts``, then failed;
    ``preempted`` requeues at once without using an attempt."""
    with services.metrics.report_seconds.labels(kind="failure").time():
        return await run_in_threadpool(_report_failure, trial_id, body, services)


def _report_failure(trial_id: int, body: FailureIn, services: Services) -> ReportOut:
    """The failure report's work (``report_failure``, untimed)."""
    try:
        with services.database.session() as session:
            trial = repo.get_trial(session, trial_id)
            budget = repo.study_budget(repo.get_study(session, trial.study_id))
            outcome = repo.fail_trial(session, trial_id, body.token, body.reason,
                                      budget.max_attempts, retry=body.retry,
                                      preempted=body.preempted)
            out = _report_out(outcome)
    except (repo.NotFound, repo.LeaseConflict) as error:
        raise _conflict(error) from None
    services.ready.notify()
    services.proposer.wake()
    return out

"""Leases: hand a ready trial to a worker, heartbeats (extend, progress, rungs, stop),
and the sweep of expired leases."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, bindparam, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.orm import Session

from autopeft_service.domain.early_stopping import EarlyStopping
from autopeft_service.domain.study import StudyState, TrialState
from autopeft_service.domain.trial import RungScore
from autopeft_service.storage.database import database_now, is_postgres
from autopeft_service.storage.models import TrialRow
from autopeft_service.storage.repository._common import (
    _STUDIES,
    _TRIALS,
    _WORKERS,
    LeaseConflict,
    _not_current,
    _prebuilt,
)
from autopeft_service.storage.repository.fair_share import chosen_study, tenants_at_quota
from autopeft_service.storage.repository.studies import get_study, study_budget
from autopeft_service.storage.repository.trials import get_trial
from autopeft_service.storage.repository.workers import _touch_worker
from autopeft_service.storage.rungs import record_rung_scores


@dataclass(frozen=True)
class Lease:
    """A trial handed to a worker (the columns a worker needs, not an ORM object)."""

    trial_id: int
    study_id: int
    number: int
    attempt: int
    params: dict[str, Any]
    config: dict[str, Any]
    token: str
    deadline: float
    fidelity: float | None = None
    checkpoint_sha256: str | None = None
    #: 0, or k for a configuration's k-th replicate (trained with the study's seed + k).
    replicate: int = 0


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What a heartbeat tells the worker: the new deadline, and whether to stop;
    ``worker`` is the lease's worker (the caller records it as seen)."""

    deadline: float | None
    stop: bool
    reason: str | None = None
    pruned: bool = False
    worker: str | None = None


def _lease_statement(private: bool, fair: bool = True) -> Callable[[bool, Any], Any]:
    """The lease ``UPDATE``; ``private`` limits it to the studies of the tenant bound as
    ``p_pool`` (a private pool's worker), otherwise any tenant's. ``fair``: the oldest
    ready trial of the study the fair share chooses (``fair_share.chosen_study``);
    otherwise the oldest ready trial of any running study (the fallback when concurrent
    leasers locked every ready trial of the chosen study, PostgreSQL)."""
    def build(postgres: bool, now: Any) -> Any:
        oldest_ready = (select(_TRIALS.c.id)
                        .join(_STUDIES, _STUDIES.c.id == _TRIALS.c.study_id)
                        .where(_TRIALS.c.state == TrialState.READY.value,
                               _STUDIES.c.state == StudyState.RUNNING.value)
                        .order_by(_TRIALS.c.id).limit(1))
        if fair:
            oldest_ready = (select(_TRIALS.c.id)
                            .where(_TRIALS.c.study_id == chosen_study(private),
                                   _TRIALS.c.state == TrialState.READY.value)
                            .order_by(_TRIALS.c.id).limit(1))
        else:
            oldest_ready = oldest_ready.where(_STUDIES.c.tenant_id.not_in(tenants_at_quota()))
            if private:
                oldest_ready = oldest_ready.where(_STUDIES.c.tenant_id == bindparam(
                    "p_pool", type_=_STUDIES.c.tenant_id.type))
        if postgres:
            oldest_ready = oldest_ready.with_for_update(of=_TRIALS, skip_locked=True)
        return (update(_TRIALS)
                .where(_TRIALS.c.id == oldest_ready.scalar_subquery(),
                       _TRIALS.c.state == TrialState.READY.value)
                .values(state=TrialState.LEASED.value, lease_token=bindparam("p_token"),
                        lease_deadline=now + bindparam("p_seconds", type_=Float),
                        worker=bindparam("p_worker"), attempt=_TRIALS.c.attempt + 1,
                        leased_at=now)
                .returning(_TRIALS.c.id, _TRIALS.c.study_id, _TRIALS.c.number,
                           _TRIALS.c.attempt, _TRIALS.c.params, _TRIALS.c.config,
                           _TRIALS.c.lease_deadline, _TRIALS.c.fidelity,
                           _TRIALS.c.checkpoint_sha256, _TRIALS.c.replicate))
    return build


_LEASE = {(private, fair): _lease_statement(private, fair)
          for private in (False, True) for fair in (False, True)}


def _lease_and_touch_statement(touch: bool, private: bool,
                               fair: bool) -> Callable[[bool, Any], Any]:
    """PostgreSQL: the lease and the worker's upsert in one statement (two round trips
    were one too many): ``WITH leased AS (UPDATE ... RETURNING ...), touched AS (INSERT
    INTO workers ... ON CONFLICT DO UPDATE) SELECT * FROM leased``. A data-modifying CTE
    runs whether or not it is read; ``touch`` False upserts only when a trial was leased
    (the insert selects from ``leased``)."""
    def build(_postgres: bool, now: Any) -> Any:
        leased = _LEASE[private, fair](True, now).cte("leased")
        columns = ["name", "first_seen", "last_seen", "leases", "pool_tenant_id"]
        worker = bindparam("p_worker", type_=_WORKERS.c.name.type)
        pool = bindparam("p_worker_pool", type_=_WORKERS.c.pool_tenant_id.type)
        if touch:
            count = select(func.count()).select_from(leased).scalar_subquery()
            rows = select(worker, now, now, count, pool)
        else:
            rows = select(worker, now, now, literal(1), pool).select_from(leased)
        insert = postgres_insert(_WORKERS).from_select(columns, rows)
        touched = insert.on_conflict_do_update(
            index_elements=[_WORKERS.c.name],
            set_={"last_seen": insert.excluded.last_seen,
                  "leases": _WORKERS.c.leases + insert.excluded.leases,
                  "pool_tenant_id": insert.excluded.pool_tenant_id}).cte("touched")
        return select(leased).add_cte(touched)
    return build


_LEASE_AND_TOUCH = {(touch, private, fair): _lease_and_touch_statement(touch, private, fair)
                    for touch in (False, True) for private in (False, True)
                    for fair in (False, True)}


def lease_trial(session: Session, worker: str, lease_seconds: float,
                touch: bool = True, pool: int | None = None) -> Lease | None:
    """Give a ready trial to ``worker``: the oldest ready trial of the study the weighted
    fair share chooses (``fair_share``: the tenant holding the fewest leases per weight,
    then its study holding fewest), among every tenant's studies or, with ``pool``, that
    tenant's only (a private pool's worker). A tenant at its ``max_parallel_trials`` gets
    none. Record the worker (last seen, leases, pool; ``touch`` False: only when a trial
    was leased).

    Promise: a trial is held by at most one lease at a time; the returned token is new and
    secret; ``attempt`` counts leases. Returns None when nothing is ready.

    One ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING`` statement: on PostgreSQL
    the sub-select takes the row ``FOR UPDATE SKIP LOCKED`` (concurrent leasers skip it),
    and the same statement upserts the worker's row (``_lease_and_touch_statement``); on
    SQLite the immediate transaction already excludes other writers, and the worker's row
    is a second statement of it. Atomic on its own, so it may run in autocommit
    (``Database.statement_session``). On PostgreSQL, when concurrent leasers hold every
    ready trial of the chosen study, a second statement takes the pool's oldest ready
    trial of a tenant under its quota (fair share is then approximate for that lease).
    """
    token = secrets.token_urlsafe(24)
    private = pool is not None
    parameters: dict[str, Any] = {"p_token": token, "p_seconds": float(lease_seconds),
                                  "p_worker": worker}
    if private:
        parameters["p_pool"] = pool
    if is_postgres(session):
        parameters["p_worker_pool"] = pool
        row = session.execute(_prebuilt(session, f"lease_touch_{touch}_{private}_fair",
                                        _LEASE_AND_TOUCH[touch, private, True]),
                              parameters).one_or_none()
        if row is None:  # every ready trial of the chosen study was locked by a concurrent
            # leaser (SKIP LOCKED): take the oldest ready trial of the pool instead
            row = session.execute(_prebuilt(session, f"lease_touch_{touch}_{private}_fifo",
                                            _LEASE_AND_TOUCH[touch, private, False]),
                                  parameters).one_or_none()
    else:  # the immediate transaction runs alone: the chosen study's trial is there
        row = session.execute(_prebuilt(session, f"lease_{private}_fair",
                                        _LEASE[private, True]), parameters).one_or_none()
        if touch or row is not None:
            _touch_worker(session, worker, leased=row is not None, pool=pool)
    if row is None:
        return None
    return Lease(trial_id=row.id, study_id=row.study_id, number=row.number,
                 attempt=row.attempt, params=row.params, config=row.config, token=token,
                 deadline=float(row.lease_deadline), fidelity=row.fidelity,
                 checkpoint_sha256=row.checkpoint_sha256, replicate=int(row.replicate or 0))


def _extend_statement(with_progress: bool) -> Callable[[bool, Any], Any]:
    def build(_postgres: bool, now: Any) -> Any:
        values: dict[str, Any] = {"lease_deadline": now + bindparam("p_seconds", type_=Float)}
        if with_progress:
            values["progress"] = bindparam("p_progress", type_=JSON)
        return (update(_TRIALS)
                .where(_TRIALS.c.id == bindparam("p_id"),
                       _TRIALS.c.lease_token == bindparam("p_token"),
                       _TRIALS.c.state == TrialState.LEASED.value)
                .values(**values)
                .returning(_TRIALS.c.lease_deadline, _TRIALS.c.worker))
    return build


_EXTEND = {False: _extend_statement(False), True: _extend_statement(True)}


def extend_lease(session: Session, trial_id: int, token: str, lease_seconds: float,
                 progress: Mapping[str, Any] | None) -> HeartbeatAnswer | None:
    """A heartbeat without rung scores in the common case, one statement: extend the lease
    and store ``progress`` (kept as it is when None) if the trial is leased under
    ``token``. The statement is atomic on its own (``Database.statement_session``).

    Returns:
        The answer (go on, new deadline), or None when the trial is not leased under
        ``token``: ``heartbeat`` then finds out why (not found, conflict, stop).
    """
    name = "extend_progress" if progress is not None else "extend"
    parameters: dict[str, Any] = {"p_id": trial_id, "p_token": token,
                                  "p_seconds": float(lease_seconds)}
    if progress is not None:
        parameters["p_progress"] = dict(progress)
    row = session.execute(_prebuilt(session, name, _EXTEND[progress is not None]),
                          parameters).one_or_none()
    if row is None:
        return None
    return HeartbeatAnswer(deadline=float(row.lease_deadline), stop=False, worker=row.worker)


def heartbeat(session: Session, trial_id: int, token: str, lease_seconds: float,
              progress: Mapping[str, Any] | None, rungs: Sequence[RungScore] = (),
              early_stopping: Callable[[int], EarlyStopping] | None = None) -> HeartbeatAnswer:
    """Extend a lease, record progress and rung scores, and apply the early-stopping rule.

    Returns stop=True (and no deadline) when the trial was cancelled or pruned, now or
    before; ``pruned`` is True when these rung scores pruned it. The worker is not
    written here: the answer names it, and the server batches sightings
    (``record_sightings``). Without rung scores ``extend_lease`` does the same in one
    statement; this is its fallback and the path of rung reports.

    Args:
        rungs: rung scores the worker has not had acknowledged (``rungs.record_rung_scores``:
            idempotent by lease token and rung).
        early_stopping: the study's early-stopping section, by study id (called only when
            ``rungs`` is not empty); None: no rule (scores recorded only).

    Raises:
        NotFound: no such trial.
        LeaseConflict: the token is not the trial's current lease.
        RungRefused: a rung score names a rung the study does not have.
    """
    trial = get_trial(session, trial_id, lock=True)
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state in (TrialState.CANCELLED.value, TrialState.PRUNED.value):
        return HeartbeatAnswer(deadline=None, stop=True, reason=trial.failure_reason
                               if trial.state == TrialState.PRUNED.value else trial.state)
    if trial.state != TrialState.LEASED.value:
        raise LeaseConflict(f"trial {trial_id}: not leased (state {trial.state})")
    now = database_now(session)
    if progress is not None:
        trial.progress = dict(progress)
    if rungs:
        policy = early_stopping(trial.study_id) if early_stopping else EarlyStopping()
        outcome = record_rung_scores(session, trial, token, rungs, policy)
        if outcome.pruned is not None:
            return HeartbeatAnswer(deadline=None, stop=True, reason=outcome.pruned,
                                   pruned=True, worker=trial.worker)
    trial.lease_deadline = now + lease_seconds
    return HeartbeatAnswer(deadline=trial.lease_deadline, stop=False, worker=trial.worker)


def sweep_expired_leases(session: Session) -> list[TrialRow]:
    """Return expired leases to ``ready`` (or ``failed`` after the study's max attempts).

    The lease token stays until the next lease, so a late report of an expired lease that
    nobody took yet is still accepted. Returns the trials swept (callers then run
    ``finish_study_if_done`` for their studies in a new transaction).
    """
    now = database_now(session)
    statement = select(TrialRow).where(TrialRow.state == TrialState.LEASED.value,
                                       TrialRow.lease_deadline < now)
    if is_postgres(session):
        statement = statement.with_for_update(skip_locked=True)
    expired = list(session.execute(statement).scalars())
    studies: dict[int, int] = {}
    for trial in expired:
        if trial.study_id not in studies:
            studies[trial.study_id] = study_budget(get_study(session, trial.study_id)).max_attempts
        trial.failure_reason = f"lease expired (worker {trial.worker}, attempt {trial.attempt})"
        if trial.attempt >= studies[trial.study_id]:
            trial.state = TrialState.FAILED.value
            trial.finished_at = now
        else:
            trial.state = TrialState.READY.value
    return expired

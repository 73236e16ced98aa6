"""Repository: every read and write of studies, trials and workers, with written contracts.

Each function takes an open ``Session`` (one transaction, see ``Database.session``) and
states what it promises. Nothing here knows about HTTP; routes map the exceptions below to
status codes. Times are database times (``database_now``).

Concurrency contracts:
  * ``lease_trial`` hands a ready trial to exactly one caller: on PostgreSQL the row is
    taken with ``FOR UPDATE SKIP LOCKED``; on SQLite the transaction began with
    ``BEGIN IMMEDIATE`` and so runs alone among writers.
  * Reports lock the trial row (PostgreSQL ``FOR UPDATE``; SQLite: immediate transaction)
    before deciding, so a report and a re-lease never interleave.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from autopeft_service.domain.early_stopping import EarlyStopping
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.spaces import point_key
from autopeft_service.domain.study import (
    BUDGET_STATES,
    PENDING_STATES,
    Budget,
    StudySpec,
    StudyState,
    TrialState,
)
from autopeft_service.domain.trial import RungScore
from autopeft_service.storage.database import database_now, database_now_expression, is_postgres
from autopeft_service.storage.models import StudyRow, TrialRow, WorkerRow
from autopeft_service.storage.rungs import record_rung_scores

log = logging.getLogger(__name__)


class NotFound(AutopeftError, LookupError):
    """The study or trial does not exist."""


class LeaseConflict(AutopeftError):
    """The lease token is not the trial's current lease (expired and re-leased, or wrong)."""


class StudyNotRunning(AutopeftError):
    """The operation needs a running study."""


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


@dataclass(frozen=True)
class TrialStatus:
    """A trial's state after a report."""

    id: int
    study_id: int
    state: str
    attempt: int
    failure_reason: str | None

    @classmethod
    def of(cls, row: TrialRow) -> TrialStatus:
        return cls(id=row.id, study_id=row.study_id, state=row.state, attempt=row.attempt,
                   failure_reason=row.failure_reason)


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What a heartbeat tells the worker: the new deadline, and whether to stop;
    ``worker`` is the lease's worker (the caller records it as seen)."""

    deadline: float | None
    stop: bool
    reason: str | None = None
    pruned: bool = False
    worker: str | None = None


@dataclass(frozen=True)
class ReportOutcome:
    """Result of a report: ``duplicate`` is True when it repeated an accepted report."""

    trial: TrialStatus
    duplicate: bool


# --------------------------------------------------------------------------- studies


def create_study(session: Session, spec: StudySpec) -> StudyRow:
    """Insert a running study with no trials. Returns the row (id assigned)."""
    now = database_now(session)
    row = StudyRow(name=spec.name, state=StudyState.RUNNING.value,
                   spec=spec.model_dump(mode="json"), created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def get_study(session: Session, study_id: int) -> StudyRow:
    """The study. Raises NotFound."""
    row = session.get(StudyRow, study_id)
    if row is None:
        raise NotFound(f"study {study_id} does not exist")
    return row


def list_studies(session: Session, offset: int = 0, limit: int = 50) -> tuple[list[StudyRow], int]:
    """Studies, newest first, and the total count."""
    total = session.execute(select(func.count()).select_from(StudyRow)).scalar_one()
    rows = session.execute(select(StudyRow).order_by(StudyRow.id.desc())
                           .offset(offset).limit(limit)).scalars().all()
    return list(rows), int(total)


def running_study_ids(session: Session, due_only: bool = False) -> list[int]:
    """Ids of every running study; with ``due_only``, not those the proposer is backing
    off from (``proposer_retry_at`` still in the future)."""
    statement = select(StudyRow.id).where(StudyRow.state == StudyState.RUNNING.value)
    if due_only:
        statement = statement.where(or_(
            StudyRow.proposer_retry_at.is_(None),
            StudyRow.proposer_retry_at <= database_now_expression(session)))
    return list(session.execute(statement.order_by(StudyRow.id)).scalars())


def trial_counts(session: Session, study_id: int) -> dict[str, int]:
    """Number of trials per state (every state present, zero when none)."""
    counts = {state.value: 0 for state in TrialState}
    for state, count in session.execute(
            select(TrialRow.state, func.count()).where(TrialRow.study_id == study_id)
            .group_by(TrialRow.state)):
        counts[state] = int(count)
    return counts


def cancel_study(session: Session, study_id: int) -> StudyRow:
    """Cancel a study: it stops, and its ready and leased trials become cancelled.

    Workers holding a cancelled trial learn it from their next heartbeat ("stop").
    Cancelling a finished or cancelled study changes nothing. Raises NotFound.
    """
    return _end_study(session, study_id, StudyState.CANCELLED, None)


def fail_study(session: Session, study_id: int, reason: str) -> StudyRow:
    """End a running study that cannot go on: state ``failed`` with ``reason``; its ready
    and leased trials are cancelled (workers hear "stop" at their next heartbeat). A study
    that is not running is returned unchanged. Raises NotFound."""
    return _end_study(session, study_id, StudyState.FAILED, reason)


def _end_study(session: Session, study_id: int, state: StudyState,
               reason: str | None) -> StudyRow:
    study = _lock_study(session, study_id)
    if study.state != StudyState.RUNNING.value:
        return study
    now = database_now(session)
    session.execute(update(TrialRow).where(
        TrialRow.study_id == study_id,
        TrialRow.state.in_([s.value for s in PENDING_STATES])).values(
        state=TrialState.CANCELLED.value, finished_at=now,
        failure_reason="study cancelled" if reason is None else f"study failed: {reason}"))
    study.state = state.value
    study.reason = reason
    study.proposer_retry_at = None
    study.updated_at = now
    return study


def record_proposer_failure(session: Session, study_id: int, error: str, max_failures: int,
                            first_delay: float, max_delay: float) -> StudyRow:
    """Count one more consecutive failed proposer pass of a running study.

    The study is skipped by the proposer for ``first_delay * 2**(n-1)`` seconds (at most
    ``max_delay``) after its n-th failure, and its ``reason`` says so; at ``max_failures``
    it ends ``failed`` (``fail_study``). Returns the study row. Raises NotFound.
    """
    study = _lock_study(session, study_id)
    if study.state != StudyState.RUNNING.value:
        return study
    failures = (study.proposer_failures or 0) + 1
    study.proposer_failures = failures  # the count and the reason always agree
    if failures >= max_failures:
        return fail_study(session, study_id,
                          f"the optimiser failed {failures} times in a row: {error}")
    delay = min(max_delay, first_delay * 2 ** (failures - 1))
    study.proposer_retry_at = database_now(session) + delay
    study.reason = (f"the optimiser failed {failures} time(s) in a row, next try in "
                    f"{delay:g} s: {error}")
    return study


def clear_proposer_failures(session: Session, study_id: int) -> None:
    """Forget a running study's failed proposer passes after one that succeeded."""
    session.execute(update(StudyRow).where(
        StudyRow.id == study_id, StudyRow.state == StudyState.RUNNING.value,
        StudyRow.proposer_failures > 0).values(
        proposer_failures=0, proposer_retry_at=None, reason=None))


def repeated_failure(session: Session, study_id: int, at_least: int) -> str | None:
    """A failure reason shared by at least ``at_least`` failed trials of the study (the
    most frequent), or None."""
    row = session.execute(
        select(TrialRow.failure_reason, func.count().label("n"))
        .where(TrialRow.study_id == study_id, TrialRow.state == TrialState.FAILED.value,
               TrialRow.failure_reason.is_not(None))
        .group_by(TrialRow.failure_reason).order_by(func.count().desc()).limit(1)).first()
    if row is None or int(row.n) < at_least:
        return None
    return str(row.failure_reason)


def study_budget(study: StudyRow) -> Budget:
    """The study's budget, read from its stored spec (validated when the study was made;
    parsing the budget alone keeps hot paths off the whole spec)."""
    return Budget.model_validate(study.spec["budget"])


def _lock_study(session: Session, study_id: int) -> StudyRow:
    statement = select(StudyRow).where(StudyRow.id == study_id)
    if is_postgres(session):
        statement = statement.with_for_update()
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise NotFound(f"study {study_id} does not exist")
    return row


def finish_study_if_done(session: Session, study_id: int) -> bool:
    """Mark a running study completed once every budgeted trial has ended.

    Call it in its own transaction *after* the one that ended a trial has committed, so the
    last of several concurrent completions always counts them all. The count is read
    without a lock (reports never wait on each other here); only the transition to
    ``completed`` locks the study row and re-counts. Returns True when it is completed.
    """
    study = get_study(session, study_id)
    if study.state == StudyState.COMPLETED.value:
        return True
    if study.state != StudyState.RUNNING.value:
        return False
    total = study_budget(study).total_trials
    if ended_trial_count(session, study_id) < total:
        return False
    study = _lock_study(session, study_id)
    if study.state != StudyState.RUNNING.value:
        return study.state == StudyState.COMPLETED.value
    if ended_trial_count(session, study_id) < total:
        return False
    study.state = StudyState.COMPLETED.value
    study.updated_at = database_now(session)
    return True


def ended_trial_count(session: Session, study_id: int) -> int:
    """Trials of the study that used up their budget slot: completed, failed or pruned."""
    return int(session.execute(select(func.count()).select_from(TrialRow).where(
        TrialRow.study_id == study_id,
        TrialRow.state.in_([state.value for state in BUDGET_STATES]))).scalar_one())


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class Proposal:
    """A configuration to queue: its point, its config (JSON), what proposed it, and the
    server's analytic counts and share when the study knows its backbone (else None)."""

    params: Mapping[str, Any]
    config: Mapping[str, Any]
    generator: str
    param_share: float | None = None
    expected_trainable: int | None = None
    expected_deployed: int | None = None


def add_trials(session: Session, study_id: int, proposals: Sequence[Proposal],
               max_new: int) -> list[TrialRow]:
    """Append proposed trials to a running study, never beyond its budget.

    The study row is locked (PostgreSQL) or the transaction is immediate (SQLite), so two
    proposers cannot both fill the same slots.

    Args:
        proposals: the configurations, in order.
        max_new: at most this many are added (the caller's view of free slots).

    Returns:
        The rows added (possibly fewer than proposed: budget, study state, or a
        configuration the study already has, which is never added twice).
    """
    study = _lock_study(session, study_id)
    if study.state != StudyState.RUNNING.value:
        return []
    budget = study_budget(study)
    existing = session.execute(select(func.count(), func.max(TrialRow.number)).where(
        TrialRow.study_id == study_id, TrialRow.state != TrialState.CANCELLED.value)).one()
    free = budget.total_trials - int(existing[0])
    next_number = session.execute(select(func.max(TrialRow.number)).where(
        TrialRow.study_id == study_id)).scalar_one()
    next_number = 0 if next_number is None else int(next_number) + 1
    now = database_now(session)
    # Under the study lock, so this holds across proposers (a lost leadership race, a
    # restart): the configurations already in the study, in any state.
    seen = {point_key(p) for p in session.execute(
        select(TrialRow.params).where(TrialRow.study_id == study_id)).scalars()}
    fresh = []
    for proposal in proposals:
        key = point_key(proposal.params)
        if key not in seen:
            seen.add(key)
            fresh.append(proposal)
    rows = []
    for proposal in fresh[:max(0, min(free, max_new))]:
        row = TrialRow(study_id=study_id, number=next_number, state=TrialState.READY.value,
                       params=dict(proposal.params), config=dict(proposal.config),
                       generator=proposal.generator, attempt=0, created_at=now,
                       param_share=proposal.param_share,
                       expected_trainable=proposal.expected_trainable,
                       expected_deployed=proposal.expected_deployed)
        next_number += 1
        rows.append(row)
    session.add_all(rows)
    session.flush()
    return rows


def get_trial(session: Session, trial_id: int, lock: bool = False) -> TrialRow:
    """The trial (row-locked on PostgreSQL when ``lock``). Raises NotFound."""
    statement = select(TrialRow).where(TrialRow.id == trial_id)
    if lock and is_postgres(session):
        statement = statement.with_for_update()
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise NotFound(f"trial {trial_id} does not exist")
    return row


def list_trials(session: Session, study_id: int, state: str | None = None, offset: int = 0,
                limit: int = 50) -> tuple[list[TrialRow], int]:
    """A study's trials by number, optionally of one state, and their total count."""
    condition = [TrialRow.study_id == study_id]
    if state is not None:
        condition.append(TrialRow.state == state)
    total = session.execute(select(func.count()).select_from(TrialRow).where(*condition)
                            ).scalar_one()
    rows = session.execute(select(TrialRow).where(*condition).order_by(TrialRow.number)
                           .offset(offset).limit(limit)).scalars().all()
    return list(rows), int(total)


def trials_in_states(session: Session, study_id: int, states: Sequence[str]) -> list[TrialRow]:
    """All of a study's trials in the given states, by number."""
    return list(session.execute(select(TrialRow).where(
        TrialRow.study_id == study_id, TrialRow.state.in_(list(states)))
        .order_by(TrialRow.number)).scalars())


# Hot-path statements (lease, result) are built once per dialect and reused with bind
# parameters: building and cache-keying a fresh statement per request cost more CPU than
# executing it. Core (not ORM) rows are returned for the same reason.
_TRIALS = TrialRow.__table__
_STUDIES = StudyRow.__table__
_WORKERS = WorkerRow.__table__
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _prebuilt(session: Session, name: str, build: Any) -> Any:
    key = (session.get_bind().dialect.name, name)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = build(is_postgres(session), database_now_expression(session))
    return statement


def _lease_statement(postgres: bool, now: Any) -> Any:
    oldest_ready = (select(_TRIALS.c.id).join(_STUDIES, _STUDIES.c.id == _TRIALS.c.study_id)
                    .where(_TRIALS.c.state == TrialState.READY.value,
                           _STUDIES.c.state == StudyState.RUNNING.value)
                    .order_by(_TRIALS.c.id).limit(1))
    if postgres:
        oldest_ready = oldest_ready.with_for_update(of=_TRIALS, skip_locked=True)
    return (update(_TRIALS)
            .where(_TRIALS.c.id == oldest_ready.scalar_subquery(),
                   _TRIALS.c.state == TrialState.READY.value)
            .values(state=TrialState.LEASED.value, lease_token=bindparam("p_token"),
                    lease_deadline=now + bindparam("p_seconds", type_=Float),
                    worker=bindparam("p_worker"), attempt=_TRIALS.c.attempt + 1, leased_at=now)
            .returning(_TRIALS.c.id, _TRIALS.c.study_id, _TRIALS.c.number, _TRIALS.c.attempt,
                       _TRIALS.c.params, _TRIALS.c.config, _TRIALS.c.lease_deadline))


def _lease_and_touch_statement(touch: bool) -> Callable[[bool, Any], Any]:
    """PostgreSQL: the lease and the worker's upsert in one statement (two round trips
    were one too many): ``WITH leased AS (UPDATE ... RETURNING ...), touched AS (INSERT
    INTO workers ... ON CONFLICT DO UPDATE) SELECT * FROM leased``. A data-modifying CTE
    runs whether or not it is read; ``touch`` False upserts only when a trial was leased
    (the insert selects from ``leased``)."""
    def build(_postgres: bool, now: Any) -> Any:
        leased = _lease_statement(True, now).cte("leased")
        columns = ["name", "first_seen", "last_seen", "leases"]
        if touch:
            count = select(func.count()).select_from(leased).scalar_subquery()
            rows = select(bindparam("p_worker", type_=_WORKERS.c.name.type), now, now, count)
        else:
            rows = select(bindparam("p_worker", type_=_WORKERS.c.name.type), now, now,
                          literal(1)).select_from(leased)
        insert = postgres_insert(_WORKERS).from_select(columns, rows)
        touched = insert.on_conflict_do_update(
            index_elements=[_WORKERS.c.name],
            set_={"last_seen": insert.excluded.last_seen,
                  "leases": _WORKERS.c.leases + insert.excluded.leases}).cte("touched")
        return select(leased).add_cte(touched)
    return build


_LEASE_AND_TOUCH = {True: _lease_and_touch_statement(True),
                    False: _lease_and_touch_statement(False)}


def lease_trial(session: Session, worker: str, lease_seconds: float,
                touch: bool = True) -> Lease | None:
    """Give the oldest ready trial of any running study to ``worker``, and record the
    worker (last seen, leases; ``touch`` False: only when a trial was leased).

    Promise: a trial is held by at most one lease at a time; the returned token is new and
    secret; ``attempt`` counts leases. Returns None when nothing is ready.

    One ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING`` statement: on PostgreSQL
    the sub-select takes the row ``FOR UPDATE SKIP LOCKED`` (concurrent leasers skip it),
    and the same statement upserts the worker's row (``_lease_and_touch_statement``); on
    SQLite the immediate transaction already excludes other writers, and the worker's row
    is a second statement of it. Atomic on its own, so it may run in autocommit
    (``Database.statement_session``).
    """
    token = secrets.token_urlsafe(24)
    parameters = {"p_token": token, "p_seconds": float(lease_seconds), "p_worker": worker}
    if is_postgres(session):
        row = session.execute(_prebuilt(session, f"lease_touch_{touch}",
                                        _LEASE_AND_TOUCH[touch]), parameters).one_or_none()
    else:
        row = session.execute(_prebuilt(session, "lease", _lease_statement),
                              parameters).one_or_none()
        if touch or row is not None:
            _touch_worker(session, worker, leased=row is not None)
    if row is None:
        return None
    return Lease(trial_id=row.id, study_id=row.study_id, number=row.number,
                 attempt=row.attempt, params=row.params, config=row.config, token=token,
                 deadline=float(row.lease_deadline))


def _touch_worker_statement(postgres: bool, now: Any) -> Any:
    insert = postgres_insert if postgres else sqlite_insert
    statement = insert(_WORKERS).values(name=bindparam("p_name"), first_seen=now, last_seen=now,
                                        leases=bindparam("p_leased"))
    return statement.on_conflict_do_update(index_elements=[_WORKERS.c.name], set_={
        "last_seen": now, "leases": _WORKERS.c.leases + statement.excluded.leases})


def _touch_worker(session: Session, name: str, leased: bool = False) -> None:
    """Upsert the worker's row (last seen, leases) in one statement (no read, no lost
    update). Called on leases; heartbeats are batched (``record_sightings``) and reports
    not recorded (kept off those hot paths)."""
    session.execute(_prebuilt(session, "touch_worker", _touch_worker_statement),
                    {"p_name": name, "p_leased": int(leased)})


def record_sightings(session: Session, ages: Mapping[str, float], chunk: int = 500) -> None:
    """Record workers as seen ``ages[name]`` seconds before now (database time), one
    statement per ``chunk`` workers: the heartbeats' sightings, which a server batches
    (``api.sightings``) instead of writing one per heartbeat. A ``last_seen`` never moves
    back (a lease may have written a later one meanwhile); a worker not known yet is
    added, with no lease."""
    names = sorted(ages)  # one order: concurrent batches lock rows alike
    if not names:
        return
    now = database_now(session)
    postgres = is_postgres(session)
    insert = postgres_insert if postgres else sqlite_insert
    later = func.greatest if postgres else func.max  # SQLite's two-argument max()
    for first in range(0, len(names), chunk):
        statement = insert(_WORKERS).values([
            {"name": name, "first_seen": now - ages[name], "last_seen": now - ages[name],
             "leases": 0} for name in names[first:first + chunk]])
        session.execute(statement.on_conflict_do_update(
            index_elements=[_WORKERS.c.name],
            set_={"last_seen": later(_WORKERS.c.last_seen, statement.excluded.last_seen)}))


def _not_current(trial_id: int) -> str:
    return (f"trial {trial_id}: this lease token is not the trial's current lease (a wrong "
            "token, or an expired lease whose trial was leased again)")


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


def _complete_statement(_postgres: bool, now: Any) -> Any:
    return (update(_TRIALS)
            .where(_TRIALS.c.id == bindparam("p_id"), _TRIALS.c.lease_token == bindparam("p_token"),
                   # Not state.in_(...): an IN list is an "expanding" parameter, re-rendered
                   # into the SQL at every execution (half of this statement's CPU).
                   or_(_TRIALS.c.state == TrialState.LEASED.value,
                       _TRIALS.c.state == TrialState.READY.value),
                   # The worker's counts must be the server's (when the server has them).
                   or_(_TRIALS.c.expected_trainable.is_(None),
                       and_(_TRIALS.c.expected_trainable == bindparam("p_trainable"),
                            _TRIALS.c.expected_deployed == bindparam("p_deployed"))))
            .values(state=TrialState.COMPLETED.value, result=bindparam("p_result", type_=JSON),
                    objective=bindparam("p_objective", type_=Float),
                    # The server's share, computed at proposal; the worker's trainable share
                    # only for trials of studies without backbone_dims (before 0003).
                    param_share=func.coalesce(_TRIALS.c.param_share,
                                              bindparam("p_share", type_=Float)),
                    dev_score=bindparam("p_dev", type_=Float), finished_at=now,
                    lease_deadline=None, failure_reason=None)
            .returning(_TRIALS.c.id, _TRIALS.c.study_id, _TRIALS.c.state, _TRIALS.c.attempt,
                       _TRIALS.c.failure_reason))


def complete_trial(session: Session, trial_id: int, token: str,
                   result: Mapping[str, Any]) -> ReportOutcome:
    """Record a trial's result under its lease token.

    Idempotent: the same token reporting again returns the stored trial (``duplicate``).
    A lease that expired but was not yet handed out again is still accepted (the work is
    done and nobody else holds it). The study is completed by ``finish_study_if_done``,
    which the proposer runs after reports (off this hot path).

    Raises:
        NotFound: no such trial.
        LeaseConflict: the token is not the trial's current lease (it was re-leased), or the
            trial was cancelled.
    """
    dev_score = result.get("dev_score")
    row = session.execute(_prebuilt(session, "complete", _complete_statement), {
        "p_id": trial_id, "p_token": token, "p_result": dict(result),
        "p_objective": float(result["objective"]),
        "p_share": float(result["trainable_percent"]),
        "p_trainable": int(result["trainable_parameters"]),
        "p_deployed": int(result["deployed_parameters"]),
        "p_dev": float(dev_score) if dev_score is not None else None}).one_or_none()
    if row is not None:  # the common case: one statement
        return ReportOutcome(trial=TrialStatus(id=row.id, study_id=row.study_id, state=row.state,
                                               attempt=row.attempt,
                                               failure_reason=row.failure_reason),
                             duplicate=False)
    trial = get_trial(session, trial_id)  # why not: decide between duplicate and conflict
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state == TrialState.COMPLETED.value:
        return ReportOutcome(trial=TrialStatus.of(trial), duplicate=True)
    if trial.state in (TrialState.LEASED.value, TrialState.READY.value) \
            and trial.expected_trainable is not None:
        return _fail_count_mismatch(session, trial, result)
    raise LeaseConflict(f"trial {trial_id}: cannot complete a {trial.state} trial")


def _fail_count_mismatch(session: Session, trial: TrialRow,
                         result: Mapping[str, Any]) -> ReportOutcome:
    """Fail a trial whose reported parameter counts differ from the server's (no retry:
    the same worker code would build the same model again)."""
    reason = (f"parameter count mismatch: the worker built {result['trainable_parameters']} "
              f"trainable / {result['deployed_parameters']} deployed parameters, the server "
              f"counts {trial.expected_trainable} / {trial.expected_deployed} for this "
              "configuration on the study's backbone_dims (another backbone, or a worker of "
              "another version?)")
    log.error("trial %s: %s", trial.id, reason)
    # One conditional statement (the protocol's sessions may autocommit each statement).
    row = session.execute(
        update(_TRIALS)
        .where(_TRIALS.c.id == trial.id, _TRIALS.c.lease_token == trial.lease_token,
               _TRIALS.c.state.in_([TrialState.LEASED.value, TrialState.READY.value]))
        .values(state=TrialState.FAILED.value, failure_reason=reason, lease_deadline=None,
                finished_at=database_now_expression(session), result=dict(result))
        .returning(_TRIALS.c.id, _TRIALS.c.study_id, _TRIALS.c.state, _TRIALS.c.attempt,
                   _TRIALS.c.failure_reason)).one_or_none()
    if row is None:
        raise LeaseConflict(f"trial {trial.id}: changed while its result was checked")
    return ReportOutcome(trial=TrialStatus(id=row.id, study_id=row.study_id, state=row.state,
                                           attempt=row.attempt,
                                           failure_reason=row.failure_reason),
                         duplicate=False)


def fail_trial(session: Session, trial_id: int, token: str, reason: str, max_attempts: int,
               retry: bool = True, preempted: bool = False) -> ReportOutcome:
    """Record a failed attempt.

    ``preempted`` (the worker was stopped, e.g. SIGTERM) requeues at once without using up
    an attempt. Otherwise the trial is requeued while ``retry`` and ``attempt < max_attempts``,
    else marked failed. A trial already failed or requeued (a repeated report, or a lease
    swept after expiry) is left as it is.

    Raises:
        NotFound: no such trial.
        LeaseConflict: the token is not the trial's current lease.
    """
    trial = get_trial(session, trial_id, lock=True)
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state in (TrialState.FAILED.value, TrialState.READY.value):
        return ReportOutcome(trial=TrialStatus.of(trial), duplicate=True)  # already over
    if trial.state != TrialState.LEASED.value:
        raise LeaseConflict(f"trial {trial_id}: cannot fail a {trial.state} trial")
    now = database_now(session)
    trial.failure_reason = reason[:2000]
    trial.lease_deadline = None
    if preempted:
        trial.attempt = max(0, trial.attempt - 1)
        trial.state = TrialState.READY.value
    elif retry and trial.attempt < max_attempts:
        trial.state = TrialState.READY.value
    else:
        trial.state = TrialState.FAILED.value
        trial.finished_at = now
    return ReportOutcome(trial=TrialStatus.of(trial), duplicate=False)


class ArtifactRefused(AutopeftError):
    """An artefact cannot be taken for this trial now (not completed)."""


def artifact_upload_check(session: Session, trial_id: int, token: str) -> TrialRow:
    """The trial an artefact upload under ``token`` is for; its ``artifact_sha256`` is set
    when one is already stored (the upload is then a no-op).

    Raises:
        NotFound: no such trial.
        LeaseConflict: ``token`` is not the lease the trial completed under (stale).
        ArtifactRefused: the trial has not completed (its result comes first).
    """
    trial = get_trial(session, trial_id)
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state != TrialState.COMPLETED.value:
        raise ArtifactRefused(f"trial {trial_id} is {trial.state}: report its result before "
                              "uploading its artefact")
    return trial


def record_artifact(session: Session, trial_id: int, token: str, sha256: str,
                    size: int) -> bool:
    """Record a stored artefact of a completed trial under its lease. False when one was
    recorded first (a concurrent duplicate upload): the first stays."""
    row = session.execute(
        update(_TRIALS)
        .where(_TRIALS.c.id == trial_id, _TRIALS.c.lease_token == token,
               _TRIALS.c.state == TrialState.COMPLETED.value,
               _TRIALS.c.artifact_sha256.is_(None))
        .values(artifact_sha256=sha256, artifact_bytes=size,
                artifact_at=database_now_expression(session))
        .returning(_TRIALS.c.id)).one_or_none()
    return row is not None


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


def leased_trials(session: Session, study_id: int | None = None) -> list[TrialRow]:
    """Trials under a lease now (of one study, or of all), by study and number."""
    condition = [TrialRow.state == TrialState.LEASED.value]
    if study_id is not None:
        condition.append(TrialRow.study_id == study_id)
    return list(session.execute(select(TrialRow).where(*condition)
                                .order_by(TrialRow.study_id, TrialRow.number)).scalars())


def worker_names_of_study(session: Session, study_id: int) -> set[str]:
    """Names of the workers that ran (or run) any of the study's trials."""
    return {name for name in session.execute(
        select(TrialRow.worker).where(TrialRow.study_id == study_id,
                                      TrialRow.worker.is_not(None)).distinct()).scalars()}


def list_workers(session: Session) -> list[WorkerRow]:
    """Every worker seen, most recently seen first."""
    return list(session.execute(select(WorkerRow).order_by(WorkerRow.last_seen.desc())
                                ).scalars())


@dataclass(frozen=True)
class StudyTally:
    """A study's state and how many of its trials are in each state (for metrics)."""

    study_id: int
    state: str
    #: Every trial state, zero when the study has no trial in it.
    trials: dict[str, int]


def study_tallies(session: Session) -> list[StudyTally]:
    """Every study with its trial counts by state, from one grouped ``SELECT`` (studies
    left-joined to trials, grouped by study and trial state), by study id."""
    rows = session.execute(
        select(StudyRow.id, StudyRow.state, TrialRow.state, func.count(TrialRow.id))
        .select_from(StudyRow).outerjoin(TrialRow, TrialRow.study_id == StudyRow.id)
        .group_by(StudyRow.id, StudyRow.state, TrialRow.state).order_by(StudyRow.id))
    tallies: dict[int, StudyTally] = {}
    for study_id, study_state, trial_state, count in rows:
        tally = tallies.get(study_id)
        if tally is None:
            tally = tallies[study_id] = StudyTally(
                study_id=study_id, state=study_state,
                trials={state.value: 0 for state in TrialState})
        if trial_state is not None:  # None: the study has no trial (outer join)
            tally.trials[trial_state] = int(count)
    return list(tallies.values())


def worker_counts(session: Session, alive_seconds: float) -> tuple[int, int]:
    """(workers ever seen, workers seen within ``alive_seconds`` of the database clock),
    in one ``SELECT``; "seen" is a lease request or a heartbeat, as the dashboard counts."""
    alive = case((WorkerRow.last_seen >= database_now_expression(session)
                  - bindparam("alive", float(alive_seconds), type_=Float), 1), else_=0)
    known, seen = session.execute(select(func.count(), func.coalesce(func.sum(alive), 0))
                                  .select_from(WorkerRow)).one()
    return int(known), int(seen)

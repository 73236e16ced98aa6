"""Studies: create, read, cancel or fail, the proposer's back-off, completion, tallies."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from autopeft_service.domain.study import (
    BUDGET_STATES,
    PENDING_STATES,
    Budget,
    StudySpec,
    StudyState,
    TrialState,
)
from autopeft_service.storage.database import database_now, database_now_expression
from autopeft_service.storage.models import StudyRow, TrialRow
from autopeft_service.storage.repository._common import NotFound, _lock_study


def create_study(session: Session, spec: StudySpec, tenant_id: int = 1) -> StudyRow:
    """Insert a running study with no trials, owned by ``tenant_id`` (the ``default``
    tenant when omitted). Returns the row (id assigned)."""
    now = database_now(session)
    row = StudyRow(name=spec.name, tenant_id=tenant_id, state=StudyState.RUNNING.value,
                   spec=spec.model_dump(mode="json"), created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def get_study(session: Session, study_id: int, tenant_id: int | None = None) -> StudyRow:
    """The study; with ``tenant_id``, only if that tenant owns it (another tenant's study
    is "not found" alike, so ids tell nothing). Raises NotFound."""
    row = session.get(StudyRow, study_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"study {study_id} does not exist")
    return row


def list_studies(session: Session, offset: int = 0, limit: int = 50,
                 tenant_id: int | None = None) -> tuple[list[StudyRow], int]:
    """Studies, newest first, and the total count; only ``tenant_id``'s when given."""
    count = select(func.count()).select_from(StudyRow)
    page = select(StudyRow).order_by(StudyRow.id.desc()).offset(offset).limit(limit)
    if tenant_id is not None:
        count = count.where(StudyRow.tenant_id == tenant_id)
        page = page.where(StudyRow.tenant_id == tenant_id)
    total = session.execute(count).scalar_one()
    return list(session.execute(page).scalars().all()), int(total)


def running_study_ids(session: Session, due_only: bool = False) -> list[int]:
    """Ids of every running study; with ``due_only``, not those the proposer is backing
    off from (``proposer_retry_at`` still in the future)."""
    statement = select(StudyRow.id).where(StudyRow.state == StudyState.RUNNING.value)
    if due_only:
        statement = statement.where(or_(
            StudyRow.proposer_retry_at.is_(None),
            StudyRow.proposer_retry_at <= database_now_expression(session)))
    return list(session.execute(statement.order_by(StudyRow.id)).scalars())


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


def complete_study(session: Session, study_id: int) -> StudyRow:
    """End a running study ``completed`` now (a fidelity study whose compute budget is
    spent; ``finish_study_if_done`` counts trials instead). Raises NotFound."""
    return _end_study(session, study_id, StudyState.COMPLETED, None)


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


def study_budget(study: StudyRow) -> Budget:
    """The study's budget, read from its stored spec (validated when the study was made;
    parsing the budget alone keeps hot paths off the whole spec)."""
    return Budget.model_validate(study.spec["budget"])


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

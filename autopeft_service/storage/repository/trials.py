"""Trials: proposals queued into a study, reads, and counts by state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from autopeft_service.domain.spaces import point_key
from autopeft_service.domain.study import StudyState, TrialState
from autopeft_service.storage.database import database_now, is_postgres
from autopeft_service.storage.models import StudyRow, TrialRow
from autopeft_service.storage.repository._common import NotFound, _lock_study
from autopeft_service.storage.repository.studies import study_budget


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
    fidelity: float | None = None
    #: Train a configuration the study already has again (a replicate, with another seed)
    #: instead of skipping it as a duplicate.
    replicate: bool = False


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
        configuration the study already has, which is added again only as a replicate:
        ``Proposal.replicate``, numbered after the configuration's earlier trials).
    """
    study = _lock_study(session, study_id)
    if study.state != StudyState.RUNNING.value:
        return []
    budget = study_budget(study)
    existing = session.execute(select(func.count(), func.max(TrialRow.number)).where(
        TrialRow.study_id == study_id, TrialRow.state != TrialState.CANCELLED.value)).one()
    free = budget.total_trials - int(existing[0])
    # a fidelity study's budget is compute: full-training equivalents (domain.fidelity),
    # and each proposal spends its own level (a replicate trains straight to full)
    compute_left = (budget.total_trials - fidelity_spent(session, study_id)
                    if proposals and proposals[0].fidelity is not None else None)
    next_number = session.execute(select(func.max(TrialRow.number)).where(
        TrialRow.study_id == study_id)).scalar_one()
    next_number = 0 if next_number is None else int(next_number) + 1
    now = database_now(session)
    # Under the study lock, so this holds across proposers (a lost leadership race, a
    # restart): the configurations already in the study, in any state.
    seen: dict[tuple[Any, ...], int] = {}  # configuration -> its trials so far
    for params in session.execute(
            select(TrialRow.params).where(TrialRow.study_id == study_id)).scalars():
        key = point_key(params)
        seen[key] = seen.get(key, 0) + 1
    fresh: list[tuple[Proposal, int]] = []  # (proposal, its replicate number)
    for proposal in proposals:
        key = point_key(proposal.params)
        if key not in seen or proposal.replicate:
            fresh.append((proposal, seen.get(key, 0)))
            seen[key] = seen.get(key, 0) + 1
    rows: list[TrialRow] = []
    for proposal, replicate in fresh:
        if len(rows) >= max_new or (compute_left is None and len(rows) >= free):
            break
        if compute_left is not None:
            cost = float(proposal.fidelity or 1.0)
            if cost > compute_left + 1e-9:
                continue
            compute_left -= cost
        row = TrialRow(study_id=study_id, number=next_number, state=TrialState.READY.value,
                       params=dict(proposal.params), config=dict(proposal.config),
                       generator=proposal.generator, attempt=0, created_at=now,
                       param_share=proposal.param_share,
                       expected_trainable=proposal.expected_trainable,
                       expected_deployed=proposal.expected_deployed,
                       fidelity=proposal.fidelity, replicate=replicate)
        next_number += 1
        rows.append(row)
    session.add_all(rows)
    session.flush()
    return rows


def get_trial(session: Session, trial_id: int, lock: bool = False,
              tenant_id: int | None = None) -> TrialRow:
    """The trial (row-locked on PostgreSQL when ``lock``); with ``tenant_id``, only if
    that tenant owns its study (another's is "not found" alike). Raises NotFound."""
    statement = select(TrialRow).where(TrialRow.id == trial_id)
    if tenant_id is not None:
        statement = statement.join(StudyRow, StudyRow.id == TrialRow.study_id).where(
            StudyRow.tenant_id == tenant_id)
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


def trial_counts(session: Session, study_id: int) -> dict[str, int]:
    """Number of trials per state (every state present, zero when none)."""
    counts = {state.value: 0 for state in TrialState}
    for state, count in session.execute(
            select(TrialRow.state, func.count()).where(TrialRow.study_id == study_id)
            .group_by(TrialRow.state)):
        counts[state] = int(count)
    return counts


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
                                      TrialRow.worker.is_not(None)).distinct()).scalars()
            if name is not None}


#: States whose trials use their level of the compute budget (cancelled ones do not).
_SPENDING = (TrialState.READY.value, TrialState.LEASED.value, TrialState.PAUSED.value,
             TrialState.FAILED.value, TrialState.COMPLETED.value, TrialState.PRUNED.value)


def fidelity_spent(session: Session, study_id: int) -> float:
    """Full-training equivalents the study has used or committed: each trial's level
    (ready, leased, paused, failed) or 1 (completed)."""
    spent = session.execute(select(func.coalesce(func.sum(case(
        (TrialRow.state == TrialState.COMPLETED.value, 1.0),
        else_=func.coalesce(TrialRow.fidelity, 1.0))), 0.0)).where(
        TrialRow.study_id == study_id, TrialRow.state.in_(_SPENDING))).scalar_one()
    return float(spent)

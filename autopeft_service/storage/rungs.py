"""Rung records: trials' scores at rungs of their training, and the early-stopping
decisions taken on them (``domain.early_stopping``).

Called by ``repository.heartbeat`` inside its transaction, with the trial row already
locked (PostgreSQL ``FOR UPDATE``; SQLite: the immediate transaction), so a rung report
and a re-lease or result of the same trial never interleave. Reports of different trials
of one study may be decided concurrently on PostgreSQL; each decides on the rung records
committed before it, which is what an asynchronous rule asks for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft_service.domain.early_stopping import EarlyStopping, RungEntry, moasha_decision
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.study import TrialState
from autopeft_service.domain.trial import RungScore
from autopeft_service.storage.database import database_now
from autopeft_service.storage.models import RungRow, TrialRow

log = logging.getLogger(__name__)


class RungRefused(AutopeftError):
    """A rung report names a rung the study does not have (``field`` says which)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RungOutcome:
    """What the rung reports of one heartbeat decided.

    Attributes:
        pruned: the reason when the trial was pruned (it is now ``pruned``), else None.
        recorded: rung indices newly recorded (not repeats of this lease).
    """

    pruned: str | None
    recorded: tuple[int, ...]


def record_rung_scores(session: Session, trial: TrialRow, token: str,
                       reports: Sequence[RungScore], policy: EarlyStopping) -> RungOutcome:
    """Record a leased trial's rung scores and apply the study's rule to each.

    Idempotent by lease token and rung: a rung already recorded under ``token`` keeps its
    row and its decision (a worker repeats unacknowledged reports). A row of an earlier
    lease of the trial is replaced. The first report whose decision is "stop" prunes the
    trial: state ``pruned``, its reason the decision, its rung rows kept.

    Args:
        trial: the trial, locked, leased under ``token``.
        reports: the rung scores, in any order.
        policy: the study's early-stopping section.

    Returns:
        The outcome (``pruned`` set when the trial was pruned now or by a repeated report).

    Raises:
        RungRefused: a report names a rung beyond ``policy.rungs``, or one rung twice.
    """
    seen: set[int] = set()
    for position, report in enumerate(reports):
        if report.rung >= len(policy.rungs):
            raise RungRefused(f"rungs.{position}.rung",
                              f"rung {report.rung} does not exist: the study has "
                              f"{len(policy.rungs)} rung(s)")
        if report.rung in seen:
            raise RungRefused(f"rungs.{position}.rung", f"rung {report.rung} is sent twice")
        seen.add(report.rung)
    recorded: list[int] = []
    for report in sorted(reports, key=lambda r: r.rung):
        row = session.get(RungRow, (trial.id, report.rung))
        if row is not None and row.lease_token == token:
            if row.proceed is False:
                return _prune(session, trial, row.decision or "pruned", tuple(recorded))
            continue
        row = _store(session, trial, token, report, row)
        recorded.append(report.rung)
        if policy.stops and row.share is not None:
            decision = moasha_decision(trial.id, _entries(session, trial, report.rung),
                                       policy.eta)
            row.proceed = decision.proceed
            row.decision = decision.describe(report.rung, policy.rungs[report.rung])
            log.info("trial %s: %s", trial.id, row.decision)
            if not decision.proceed:
                return _prune(session, trial, row.decision, tuple(recorded))
    return RungOutcome(pruned=None, recorded=tuple(recorded))


def _store(session: Session, trial: TrialRow, token: str, report: RungScore,
           row: RungRow | None) -> RungRow:
    values = {"lease_token": token, "step": report.step, "score": report.score,
              "share": trial.param_share, "examples": report.examples,
              "eval_seconds": report.eval_seconds, "proceed": None, "decision": None,
              "created_at": database_now(session)}  # read before the row joins the session
    if row is None:
        row = RungRow(trial_id=trial.id, rung=report.rung, study_id=trial.study_id, **values)
        session.add(row)
    else:
        for name, value in values.items():
            setattr(row, name, value)
    session.flush()
    return row


def _entries(session: Session, trial: TrialRow, rung: int) -> list[RungEntry]:
    """Every trial of the study at ``rung`` with a known share (cancelled ones excluded:
    they never competed), the deciding trial included."""
    rows = session.execute(
        select(RungRow.trial_id, RungRow.score, RungRow.share)
        .join(TrialRow, TrialRow.id == RungRow.trial_id)
        .where(RungRow.study_id == trial.study_id, RungRow.rung == rung,
               RungRow.share.is_not(None), TrialRow.state != TrialState.CANCELLED.value)
        .order_by(RungRow.trial_id)).all()
    return [RungEntry(key=int(r.trial_id), score=float(r.score), share=float(r.share))
            for r in rows]


def _prune(session: Session, trial: TrialRow, reason: str,
           recorded: tuple[int, ...]) -> RungOutcome:
    trial.state = TrialState.PRUNED.value
    trial.failure_reason = reason
    trial.lease_deadline = None
    trial.finished_at = database_now(session)
    return RungOutcome(pruned=reason, recorded=recorded)


def rungs_of(session: Session, trial_ids: Sequence[int]) -> dict[int, list[RungRow]]:
    """The rung rows of the given trials, by trial id, each list in rung order."""
    out: dict[int, list[RungRow]] = {trial_id: [] for trial_id in trial_ids}
    if not trial_ids:
        return out
    for row in session.execute(select(RungRow).where(RungRow.trial_id.in_(list(trial_ids)))
                               .order_by(RungRow.trial_id, RungRow.rung)).scalars():
        out[row.trial_id].append(row)
    return out

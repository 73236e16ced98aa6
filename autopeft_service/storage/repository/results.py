"""Results: a trial's completion or failure under its lease, and its artefact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, and_, bindparam, func, or_, update
from sqlalchemy.orm import Session

from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.study import TrialState
from autopeft_service.domain.trial import TrialResult
from autopeft_service.storage.database import database_now, database_now_expression
from autopeft_service.storage.models import ObservationRow, TrialRow
from autopeft_service.storage.repository._common import _TRIALS, LeaseConflict, _not_current, _prebuilt
from autopeft_service.storage.repository.trials import get_trial

log = logging.getLogger(__name__)


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
class ReportOutcome:
    """Result of a report: ``duplicate`` is True when it repeated an accepted report."""

    trial: TrialStatus
    duplicate: bool


def _complete_statement(_postgres: bool, now: Any) -> Any:
    return (update(_TRIALS)
            .where(_TRIALS.c.id == bindparam("p_id"), _TRIALS.c.lease_token == bindparam("p_token"),
                   # Not state.in_(...): an IN list is an "expanding" parameter, re-rendered
                   # into the SQL at every execution (half of this statement's CPU).
                   or_(_TRIALS.c.state == TrialState.LEASED.value,
                       _TRIALS.c.state == TrialState.READY.value),
                   # a fidelity study's trial pauses or records its level: the slow path
                   _TRIALS.c.fidelity.is_(None),
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
                   result: TrialResult) -> ReportOutcome:
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
    row = session.execute(_prebuilt(session, "complete", _complete_statement), {
        "p_id": trial_id, "p_token": token, "p_result": result.model_dump(mode="json"),
        "p_objective": result.objective, "p_share": result.trainable_percent,
        "p_trainable": result.trainable_parameters, "p_deployed": result.deployed_parameters,
        "p_dev": result.dev_score}).one_or_none()
    if row is not None:  # the common case: one statement
        return ReportOutcome(trial=TrialStatus(id=row.id, study_id=row.study_id, state=row.state,
                                               attempt=row.attempt,
                                               failure_reason=row.failure_reason),
                             duplicate=False)
    trial = get_trial(session, trial_id)  # why not: decide between duplicate and conflict
    if trial.fidelity is not None:
        return complete_fidelity_trial(session, trial_id, token, result)
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state == TrialState.COMPLETED.value:
        return ReportOutcome(trial=TrialStatus.of(trial), duplicate=True)
    if trial.state in (TrialState.LEASED.value, TrialState.READY.value) \
            and trial.expected_trainable is not None:
        return _fail_count_mismatch(session, trial, result)
    raise LeaseConflict(f"trial {trial_id}: cannot complete a {trial.state} trial")


def _fail_count_mismatch(session: Session, trial: TrialRow,
                         result: TrialResult) -> ReportOutcome:
    """Fail a trial whose reported parameter counts differ from the server's (no retry:
    the same worker code would build the same model again)."""
    reason = (f"parameter count mismatch: the worker built {result.trainable_parameters} "
              f"trainable / {result.deployed_parameters} deployed parameters, the server "
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
                finished_at=database_now_expression(session),
                result=result.model_dump(mode="json"))
        .returning(_TRIALS.c.id, _TRIALS.c.study_id, _TRIALS.c.state, _TRIALS.c.attempt,
                   _TRIALS.c.failure_reason)).one_or_none()
    if row is None:
        raise LeaseConflict(f"trial {trial.id}: changed while its result was checked")
    return ReportOutcome(trial=TrialStatus(id=row.id, study_id=row.study_id, state=row.state,
                                           attempt=row.attempt,
                                           failure_reason=row.failure_reason),
                         duplicate=False)


def complete_fidelity_trial(session: Session, trial_id: int, token: str,
                            result: TrialResult) -> ReportOutcome:
    """Record a fidelity trial's result: an observation at its level, then paused (below
    1; the checkpoint of the result's step must have arrived) or completed (at 1).

    Idempotent by lease token, as ``complete_trial``.

    Raises:
        NotFound: no such trial.
        LeaseConflict: the token is not the trial's lease, the trial cannot end now, or a
            pause without its checkpoint.
    """
    trial = get_trial(session, trial_id, lock=True)
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state in (TrialState.PAUSED.value, TrialState.COMPLETED.value):
        return ReportOutcome(trial=TrialStatus.of(trial), duplicate=True)
    if trial.state not in (TrialState.LEASED.value, TrialState.READY.value):
        raise LeaseConflict(f"trial {trial_id}: cannot complete a {trial.state} trial")
    if trial.expected_trainable is not None and (
            trial.expected_trainable != result.trainable_parameters
            or trial.expected_deployed != result.deployed_parameters):
        return _fail_count_mismatch(session, trial, result)
    level = 1.0 if trial.fidelity is None else float(trial.fidelity)
    pausing = level < 1.0
    if pausing and trial.checkpoint_step != result.steps:
        raise LeaseConflict(f"trial {trial_id}: upload the checkpoint of step {result.steps} "
                            "(PUT /v1/trials/{id}/checkpoint) before the result of a level "
                            "below 1")
    now = database_now(session)
    session.merge(ObservationRow(
        trial_id=trial.id, fidelity=level, study_id=trial.study_id, lease_token=token,
        score=result.objective, dev_score=result.dev_score, share=trial.param_share,
        step=result.steps, cost_seconds=result.train_seconds + result.eval_seconds,
        worker=trial.worker, created_at=now))
    trial.result = result.model_dump(mode="json")
    trial.lease_deadline = None
    trial.failure_reason = None
    trial.dev_score = result.dev_score
    if pausing:
        trial.state = TrialState.PAUSED.value
    else:
        trial.state = TrialState.COMPLETED.value
        trial.objective = result.objective
        if trial.param_share is None:
            trial.param_share = result.trainable_percent
        trial.finished_at = now
    session.flush()
    return ReportOutcome(trial=TrialStatus.of(trial), duplicate=False)


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

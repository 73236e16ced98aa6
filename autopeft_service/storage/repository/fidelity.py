"""Fidelity studies (``domain.fidelity``): checkpoints, pauses, observations, continuations
and the compute budget.

A trial of a fidelity study carries its target level (``trials.fidelity``). Its worker
uploads a checkpoint below full training (``record_checkpoint``) and then reports; the
report (``complete_fidelity_trial``) records an observation at the level and pauses the
trial, or completes it at level 1. The proposer continues paused trials
(``continue_trial``): ready again at the next level, resumed by any worker from the
checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from autopeft_service.domain.study import TrialState
from autopeft_service.storage.models import ObservationRow, TrialRow
from autopeft_service.storage.repository._common import LeaseConflict, _not_current
from autopeft_service.storage.repository.results import complete_fidelity_trial
from autopeft_service.storage.repository.trials import fidelity_spent, get_trial

__all__ = ["CheckpointRefused", "checkpoint_upload_check", "complete_fidelity_trial",
           "continue_trial", "fidelity_spent", "observations_of", "paused_trials",
           "record_checkpoint", "study_observations"]

class CheckpointRefused(LeaseConflict):
    """The trial cannot take a checkpoint now (not leased below full training)."""


def checkpoint_upload_check(session: Session, trial_id: int, token: str) -> TrialRow:
    """The trial, when ``token`` holds its lease below full training.

    Raises:
        NotFound: no such trial.
        LeaseConflict: another lease holds it.
        CheckpointRefused: it is not leased, or trains in full (no checkpoint to keep).
    """
    trial = get_trial(session, trial_id)
    if trial.lease_token != token:
        raise LeaseConflict(_not_current(trial_id))
    if trial.state != TrialState.LEASED.value:
        raise CheckpointRefused(f"trial {trial_id} is {trial.state}: a checkpoint is uploaded "
                                "under the lease, before the result")
    if trial.fidelity is None or trial.fidelity >= 1.0:
        raise CheckpointRefused(f"trial {trial_id} trains in full: it keeps no checkpoint")
    return trial


def record_checkpoint(session: Session, trial_id: int, token: str, sha256: str, size: int,
                      step: int) -> str | None:
    """Record the trial's checkpoint under its lease; returns the hash it replaced (the
    store may drop those bytes), or None.

    Raises:
        as ``checkpoint_upload_check``.
    """
    trial = checkpoint_upload_check(session, trial_id, token)
    previous = trial.checkpoint_sha256
    trial.checkpoint_sha256, trial.checkpoint_bytes, trial.checkpoint_step = sha256, size, step
    return previous if previous != sha256 else None


def continue_trial(session: Session, trial_id: int, level: float) -> bool:
    """Queue a paused trial again, to train on to ``level`` from its checkpoint. Returns
    False when it is no longer paused with a checkpoint (nothing changed)."""
    done = session.execute(update(TrialRow).where(
        TrialRow.id == trial_id, TrialRow.state == TrialState.PAUSED.value,
        TrialRow.checkpoint_sha256.is_not(None)).values(
        state=TrialState.READY.value, fidelity=level, lease_token=None)
        .returning(TrialRow.id)).first()
    return done is not None


def study_observations(session: Session, study_id: int) -> Sequence[ObservationRow]:
    """Every observation of the study, by trial and level."""
    return session.execute(select(ObservationRow).where(ObservationRow.study_id == study_id)
                           .order_by(ObservationRow.trial_id, ObservationRow.fidelity)
                           ).scalars().all()


def paused_trials(session: Session, study_id: int) -> Sequence[TrialRow]:
    """The study's paused trials with a checkpoint, oldest first."""
    return session.execute(select(TrialRow).where(
        TrialRow.study_id == study_id, TrialRow.state == TrialState.PAUSED.value,
        TrialRow.checkpoint_sha256.is_not(None)).order_by(TrialRow.id)).scalars().all()


def observations_of(session: Session, trial_ids: Sequence[int]) -> dict[int, list[ObservationRow]]:
    """The observations of the given trials, by trial id, each list in level order (one
    query; trials without any are left out)."""
    out: dict[int, list[ObservationRow]] = {}
    if not trial_ids:
        return out
    for row in session.execute(select(ObservationRow).where(
            ObservationRow.trial_id.in_(list(trial_ids)))
            .order_by(ObservationRow.trial_id, ObservationRow.fidelity)).scalars():
        out.setdefault(row.trial_id, []).append(row)
    return out

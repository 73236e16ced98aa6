"""The proposer's pass over a fidelity study (``domain.fidelity``): continue the paused
trials its rule promotes, say how many new configurations fit the compute budget, and end
the study once nothing more can run.

Rule ``asha``: a trial paused at level i continues to level i+1 when it ranks among the
best ``max(1, floor(n / eta))`` of the n trials observed at level i, by the two objectives
(``domain.early_stopping.moasha_decision``: non-dominated sorting, then crowding
distance), as asynchronous successive halving promotes. A trial not promoted now may be
later, when more trials have reached its level. Continuations go before new
configurations: they cost only their new steps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from autopeft_service.domain.early_stopping import RungEntry, moasha_decision
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.share import planned_counts
from autopeft_service.domain.study import StudySpec, TrialState
from autopeft_service.optimizers.base import History, PausedTrial, ScoreObservation, Suggestion
from autopeft_service.storage import repository as repo
from autopeft_service.storage.models import TrialRow
from autopeft_service.storage.repository import fidelity as fidelity_repo

log = logging.getLogger(__name__)
#: Budget arithmetic tolerance (levels such as 1/3 are not exact in binary).
_EPS = 1e-9


def proposal(spec: StudySpec, suggestion: Suggestion) -> repo.Proposal:
    """A suggestion as the trial to queue: its config, the share and counts the server
    expects when the study knows its backbone, and a fidelity study's lowest level (a
    replicate's: full training, which it trains to at once)."""
    config = spec.space.decode(suggestion.params)
    planned = (None if spec.backbone_dims is None  # a study stored before backbone_dims
               else planned_counts(config, spec.backbone_dims, spec.param_share))
    level = None if spec.fidelity is None else (
        1.0 if suggestion.replicate else spec.fidelity.levels[0])
    return repo.Proposal(
        params=suggestion.params, config=config.model_dump(mode="json"),
        generator=suggestion.generator, replicate=suggestion.replicate,
        fidelity=level,
        param_share=None if planned is None else planned.share,
        expected_trainable=None if planned is None else planned.trainable,
        expected_deployed=None if planned is None else planned.deployed)


def fidelity_pass(session: Session, study_id: int, spec: StudySpec,
                  counts: dict[str, int]) -> tuple[int, int]:
    """Promote paused trials by the study's rule, end the study when it is done, and size
    the new work.

    Args:
        session: an open transaction.
        study_id: the running fidelity study.
        spec: its spec (``spec.fidelity`` set).
        counts: its trials by state.

    Returns:
        (trials continued now, new configurations to propose at the lowest level).
    """
    fidelity = spec.fidelity
    assert fidelity is not None
    left = spec.budget.total_trials - fidelity_repo.fidelity_spent(session, study_id)
    outcome = _RULES[fidelity.rule](session, study_id, fidelity, left)
    ready = counts[TrialState.READY.value] + outcome.promoted
    active = ready + counts[TrialState.LEASED.value]
    if active == 0 and _fits(fidelity, outcome.left) <= 0 and not outcome.can_grow:
        session.flush()
        _finish(session, study_id, counts)
        return outcome.promoted, 0
    room = spec.budget.max_parallel - ready
    want = room if outcome.new_cap is None else min(room, outcome.new_cap)
    return outcome.promoted, max(0, want)


@dataclasses.dataclass(frozen=True)
class _RuleOutcome:
    """What a rule's pass over the paused trials did and allows.

    Attributes:
        promoted: paused trials continued now.
        left: compute left after them (full-training equivalents).
        can_grow: a paused trial could continue within the budget.
        new_cap: the most new configurations the rule allows; None when only
            ``max_parallel`` bounds them.
    """

    promoted: int
    left: float
    can_grow: bool
    new_cap: int | None


def _fits(fidelity: Fidelity, left: float) -> int:
    """How many new configurations at the lowest level ``left`` compute holds."""
    return math.floor(left / fidelity.levels[0] + _EPS)


def _asha_pass(session: Session, study_id: int, fidelity: Fidelity,
               left: float) -> _RuleOutcome:
    """Rule ``asha``: continue each paused trial that ranks among the best 1/eta at its level
    (``moasha_decision``) while the budget holds its next level's steps.

    Args:
        session: an open transaction.
        study_id: the study.
        fidelity: its fidelity section.
        left: compute left before the continuations.

    Returns:
        The continuations made; new configurations are capped by the compute then left.
    """
    observations = fidelity_repo.study_observations(session, study_id)
    promoted = 0
    can_grow = False
    for trial in fidelity_repo.paused_trials(session, study_id):
        level = float(trial.fidelity or 1.0)
        after = fidelity.next_level(level)
        if after is None:
            continue
        cost = after - level
        if cost > left + _EPS:
            continue
        can_grow = True
        entries = [RungEntry(o.trial_id, o.score, o.share) for o in observations
                   if abs(o.fidelity - level) <= _EPS and o.share is not None]
        if not any(e.key == trial.id for e in entries):
            continue  # its observation lacks a share (a study without backbone_dims)
        decision = moasha_decision(trial.id, entries, fidelity.eta)
        if decision.proceed and fidelity_repo.continue_trial(session, trial.id, after):
            left -= cost
            promoted += 1
            log.info("study %s: trial %s continues to level %g (%s)", study_id, trial.id,
                     after, decision.describe(fidelity.level_index(level), level))
    return _RuleOutcome(promoted, left, can_grow, _fits(fidelity, left))


def _model_pass(session: Session, study_id: int, fidelity: Fidelity,
                left: float) -> _RuleOutcome:
    """Rule ``model``: continue nothing here (the model's suggestions decide,
    ``continue_suggested``); only note whether a paused trial could continue.

    Args:
        session: an open transaction.
        study_id: the study.
        fidelity: its fidelity section.
        left: compute left.

    Returns:
        No continuations; the model's actions may be continuations, so new work is not
        capped by the compute for new configurations, only refused when neither a new
        configuration nor a continuation fits.
    """
    can_grow = False
    for trial in fidelity_repo.paused_trials(session, study_id):
        level = float(trial.fidelity or 1.0)
        after = fidelity.next_level(level)
        can_grow = can_grow or (after is not None and after - level <= left + _EPS)
    allowed = _fits(fidelity, left) > 0 or can_grow
    return _RuleOutcome(0, left, can_grow, None if allowed else 0)


#: Each rule's pass over the paused trials, by ``Fidelity.rule``.
_RULES: dict[str, Callable[[Session, int, Fidelity, float], _RuleOutcome]] = {
    "asha": _asha_pass,
    "model": _model_pass,
}


def _finish(session: Session, study_id: int, counts: dict[str, int]) -> None:
    """End a fidelity study whose budget is spent: completed when any trial reached a
    level (paused or completed), failed when every trial failed."""
    if counts[TrialState.COMPLETED.value] or counts[TrialState.PAUSED.value] \
            or not counts[TrialState.FAILED.value]:
        repo.complete_study(session, study_id)
        return
    repo.fail_study(session, study_id, f"all {counts[TrialState.FAILED.value]} trials failed "
                    "and none reached a fidelity level")


def fidelity_history(session: Session, study_id: int, spec: StudySpec,
                     rows: Sequence[TrialRow], history: History) -> History:
    """``history`` with a fidelity study's observations at every level, its paused trials
    (with a checkpoint) and its compute left (what rule ``model`` plans with)."""
    params = {r.id: r.params for r in rows}
    observations = [ScoreObservation(o.trial_id, params[o.trial_id], o.fidelity, o.score)
                    for o in fidelity_repo.study_observations(session, study_id)
                    if o.trial_id in params]
    paused = [PausedTrial(r.id, r.params, float(r.fidelity or 1.0))
              for r in fidelity_repo.paused_trials(session, study_id)]
    left = spec.budget.total_trials - fidelity_repo.fidelity_spent(session, study_id)
    return dataclasses.replace(history, observations=observations, paused=paused,
                               budget_left=left)


def continue_suggested(session: Session, study_id: int, spec: StudySpec,
                       suggestions: Sequence[Suggestion]) -> int:
    """Continue the paused trials the suggestions name, each only while the compute budget
    holds it (checked again here, in the queueing transaction). Returns how many."""
    resumed = 0
    for suggestion in suggestions:
        if suggestion.continue_trial is None or suggestion.level is None:
            continue
        trial = session.get(TrialRow, suggestion.continue_trial)
        if trial is None or trial.study_id != study_id or trial.fidelity is None:
            continue
        cost = suggestion.level - float(trial.fidelity)
        spent = fidelity_repo.fidelity_spent(session, study_id)
        if spent + cost <= spec.budget.total_trials + _EPS and \
                fidelity_repo.continue_trial(session, trial.id, suggestion.level):
            resumed += 1
    return resumed

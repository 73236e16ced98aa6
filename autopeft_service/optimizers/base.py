"""The optimiser protocol: ``suggest(n, history)`` and nothing else.

No HTTP or SQL inside an optimiser (Vizier's habit): the proposer reads the database and
hands an optimiser plain data; the optimiser returns points. An optimiser holds no state
that the database does not: given the same study history it proposes the same points, so
a restarted server continues exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from autopeft_service.domain.errors import AutopeftError, ConfigError
from autopeft_service.domain.spaces import ParamValue, SearchSpaceBase, point_key

__all__ = ["History", "Observation", "Optimizer", "OptimizerError", "PausedTrial", "Point",
           "SamplerExhausted", "ScoreObservation", "Suggestion", "TransferObservation",
           "TransferReport", "point_key", "seen_configs"]

Point = Mapping[str, ParamValue]


class OptimizerError(AutopeftError, RuntimeError):
    """An optimiser could not propose (e.g. the space is exhausted)."""


class SamplerExhausted(OptimizerError):
    """A deduplicating sampler reached its draw limit: it will find nothing new, ever.

    Not a transient failure (retrying draws the same sequence again): the proposer queues
    ``found``, the last new points it had, and ends the study once they are done.

    Attributes:
        found: the new points found before the limit (possibly none).
        draws: the sequence position reached.
    """

    def __init__(self, message: str, found: Sequence[Suggestion] = (), draws: int = 0) -> None:
        super().__init__(message)
        self.found = list(found)
        self.draws = draws

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable with its attributes: it may cross the proposal pool's process boundary.
        return (type(self), (str(self), self.found, self.draws))


@dataclass(frozen=True)
class Observation:
    """A completed trial as the optimiser sees it.

    Attributes:
        params: the point in the search space.
        score: held-out task score (maximised).
        param_share: trainable parameters, percent of the backbone (minimised).
    """

    params: Point
    score: float
    param_share: float


@dataclass(frozen=True)
class ScoreObservation:
    """One score of a configuration in a fidelity study: trial id, its point, the level it
    was taken at (1 for full training) and the score."""

    trial_id: int
    params: Point
    fidelity: float
    score: float


@dataclass(frozen=True)
class PausedTrial:
    """A fidelity study's trial paused at ``level`` (its checkpoint can be continued)."""

    trial_id: int
    params: Point
    level: float


@dataclass(frozen=True)
class TransferObservation:
    """A completed trial of a warm start's source study, as a point of this study's space
    (``warm_start.mode: model``; mapped by ``SearchSpaceBase.transfer_point``).

    Attributes:
        source: the source study's id (one task of the multi-task model per source).
        number: the trial's number in that study.
        params: its point, mapped to this study's space.
        score: its observed score on the source task.
        share: its parameter share in the source study (percent).
    """

    source: int
    number: int
    params: Point
    score: float
    share: float


@dataclass(frozen=True)
class TransferReport:
    """What a warm-started model learned about its sources (``saasbo/transfer.py``).

    Attributes:
        correlations: source study id -> the posterior mean of its task correlation with
            this study in the multi-task model (0: unrelated, 1: the same task up to a
            shift and scale), for the sources the model was fitted on.
        predictive: source study id -> the guard's check, once the study has enough
            scores: the correlation between a GP fitted on the source alone, predicting at
            this study's points, and this study's scores there (empty before).
        dropped: sources the negative-transfer guard left out of the model.
        used: some source was in the model that proposed (False: the guard dropped them
            all, and the study's own model proposed, as a cold study's would).
        target_trials: this study's completed trials the model saw.
    """

    correlations: dict[int, float]
    predictive: dict[int, float]
    dropped: tuple[int, ...]
    used: bool
    target_trials: int


@dataclass(frozen=True)
class Suggestion:
    """A proposed point and the name of what generated it (e.g. ``sobol``, ``saasbo``).

    In a fidelity study (rule ``model``) a suggestion may instead continue a paused trial:
    ``continue_trial`` names it and ``level`` is the level to train it to. Or it may be a
    replicate (``replicate``: True): a configuration the study has already trained, trained
    again in full with another seed, so the model sees the score's noise at that point.
    A warm-started model's proposal carries ``transfer``, what it learned of its sources.
    """

    params: dict[str, ParamValue]
    generator: str
    continue_trial: int | None = None
    level: float | None = None
    replicate: bool = False
    transfer: TransferReport | None = None


@dataclass(frozen=True)
class History:
    """Everything the optimiser may use about a study's trials so far.

    Attributes:
        completed: trials with results.
        pending: points ready or leased (proposed, not yet evaluated).
        failed: points that failed (never fed as scores; not proposed again).
        pruned: points stopped at a rung by the early-stopping rule. Not completed scores
            (a rung score is a lower-fidelity, biased-low view of the final score, and a
            single-fidelity model fed with it would learn that those configurations are
            worse than they are) and not pending (they hold no worker). Never proposed
            again: the rule judged them off the front once already.
        observations: a fidelity study's scores at every level (rule ``model``).
        paused: its paused trials, which a suggestion may continue (rule ``model``).
        budget_left: its compute left, in full-training equivalents (rule ``model``).
        transfer: a warm start's source observations (``warm_start.mode: model``), read
            from the database at proposal time; the optimiser models them as other tasks.
    """

    completed: Sequence[Observation] = ()
    pending: Sequence[Point] = ()
    failed: Sequence[Point] = ()
    pruned: Sequence[Point] = ()
    observations: Sequence[ScoreObservation] = ()
    paused: Sequence[PausedTrial] = ()
    budget_left: float | None = None
    transfer: Sequence[TransferObservation] = ()

    def points(self) -> list[Point]:
        """Every point already proposed (completed, pending, failed, pruned)."""
        return ([o.params for o in self.completed] + list(self.pending) + list(self.failed)
                + list(self.pruned))

    def seen(self) -> set[tuple[tuple[str, ParamValue], ...]]:
        """Every point already proposed, as hashable keys."""
        return {point_key(p) for p in self.points()}


class Optimizer(Protocol):
    """Proposes points of a search space."""

    name: str

    def suggest(self, n: int, history: History) -> list[Suggestion]:
        """Propose up to ``n`` new valid points not in ``history``.

        Raises:
            OptimizerError: nothing new can be proposed.
        """
        ...

    # Optional: ``needs_model(n, history) -> bool``, True when ``suggest`` would fit a model
    # (seconds to minutes). The proposer runs such calls in its process pool and keeps
    # serving other studies; optimisers without it (Sobol) always run in its thread.
    #
    # Optional: ``suggest_within(n, history, seconds) -> list[Suggestion]``, up to ``n``
    # new points found within ``seconds`` (fewer: out of time, resumed at the next call);
    # raises ``SamplerExhausted`` at its draw limit. The proposer prefers it for calls that
    # fit no model, so that no study holds the proposer (``proposer.Proposer.time_budget``).


def seen_configs(space: SearchSpaceBase, history: History) -> set[str] | None:
    """The configurations (``space.config_key``) the study already has, for a space whose
    distinct points can train the same configuration; None for an injective space, where
    the points' keys say it all. Points of the history that no longer decode are ignored."""
    if space.injective:
        return None
    keys: set[str] = set()
    for point in history.points():
        try:
            keys.add(space.config_key(point))
        except ConfigError:
            continue
    return keys

"""The multi-fidelity rule (``fidelity.rule: model``): one model of score against
configuration and level decides what to train next, at which level, and which paused trial
to continue.

The model is ``optimizers.prediction``'s GP over (configuration, level) fitted to every
observation, noise learned from the data. Each possible action is valued by the **expected
hypervolume improvement at full training** of the configuration it trains (the share is
exact, the score is the GP's full-training posterior), per unit of the compute it needs to
reach full training, since only a fully trained configuration joins the front:

* continuing a trial paused at level l needs ``1 - l`` more; its step to the next level
  l' spends ``l' - l`` of the budget now;
* a new configuration needs 1; it starts at the lowest level and spends ``levels[0]``.

(Per unit of the next step's cost instead, a new configuration always looks cheaper than a
continuation, and a study would start configurations at the lowest level until its budget
is gone without completing one: measured in ``tests/api/test_fidelity.py``'s model-rule
study before this rule was chosen.)

The n best actions by value per cost are taken greedily; after each, its configuration
joins the front at its posterior mean ("kriging believer"), so a batch does not pile onto
one region. New configurations are drawn from the space (valid random points and the
neighbours of the predicted front's points).

The 2-objective EHVI with one Gaussian objective and one exact one has a closed form (a
sum of normal expected improvements over the front's staircase; BoTorch's qLogNEHVI
integrates by Monte Carlo over every objective and would model the exact share as well). This is a
freeze-thaw heuristic (Swersky et al., 2014) in the cost-aware form; BoTorch's MOMF and
MF-HVKG value the information a low-level observation brings about the full-training
score, which this does not. Which of them does better is for the benchmark to say
(docs/early_stopping.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices
from autopeft_service.domain.spaces import ParamValue, SearchSpaceBase, point_key
from autopeft_service.optimizers.base import (
    History,
    PausedTrial,
    Point,
    ScoreObservation,
    Suggestion,
)
from autopeft_service.optimizers.prediction import MIN_OBSERVATIONS, predict_points


@dataclass(frozen=True)
class FidelityAction:
    """What to train next.

    Attributes:
        params: the configuration.
        level: the level to train it to.
        continue_trial: the paused trial to continue, or None for a new configuration.
        value: its expected hypervolume improvement at full training.
        cost: the budget it spends now, in full-training equivalents.
    """

    params: dict[str, ParamValue]
    level: float
    continue_trial: int | None
    value: float
    cost: float


def _staircase(front: Sequence[ObjectivePoint], share: float,
               reference: ObjectivePoint) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights of the front's attainment staircase over [share, reference
    share]: at share s' the best score of a front point with share <= s' (the reference
    score where none is)."""
    cuts = sorted({p.share for p in front if share < p.share < reference.share})
    edges = [share, *cuts, reference.share]
    widths, heights = [], []
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        level = max([p.score for p in front if p.share <= left] + [reference.score])
        widths.append(right - left)
        heights.append(level)
    return np.asarray(widths), np.asarray(heights)


def expected_improvement(front: Sequence[ObjectivePoint], share: float, mean: float,
                         sd: float, reference: ObjectivePoint) -> float:
    """E[HV(front + (share, Y)) - HV(front)] for Y ~ N(mean, sd^2), in closed form.

    A point of exact share s and score y newly dominates, at each share s' in
    [s, reference share], the scores between the front's staircase h(s') and y: the
    improvement is the sum over the staircase's steps of width w and height h of
    ``w max(0, y - h)``, whose expectation is ``w (sd pdf(z) + (mean - h) cdf(z))`` with
    ``z = (mean - h) / sd``.

    Args:
        front: the current points (any; dominated ones add nothing).
        share: the candidate's exact share (minimised).
        mean, sd: its score's posterior (maximised).
        reference: the hypervolume's reference point.

    Returns:
        The expected improvement (0 when it cannot improve).
    """
    if share >= reference.share:
        return 0.0
    widths, heights = _staircase(front, share, reference)
    gaps = mean - heights
    if sd <= 0:
        return float(np.sum(widths * np.maximum(gaps, 0.0)))
    from scipy.stats import norm

    z = gaps / sd
    return float(np.sum(widths * (sd * norm.pdf(z) + gaps * norm.cdf(z))))


def plan_actions(space: SearchSpaceBase, fidelity: Fidelity,
                 observations: Sequence[ScoreObservation], paused: Sequence[PausedTrial],
                 seen: Sequence[Point], share: Callable[[Point], float], n: int,
                 budget_left: float, reference: ObjectivePoint, seed: int = 0,
                 candidates: int = 256) -> list[FidelityAction]:
    """The next ``n`` actions at most, best value per compute to full training first, each
    step within ``budget_left``.

    Args:
        space: the search space.
        fidelity: the study's levels.
        observations: every score so far (trial, point, level, score).
        paused: the trials that may continue.
        seen: every point the study already has (never proposed anew).
        share: a point's exact share (minimised).
        n: most actions.
        budget_left: full-training equivalents still free.
        reference: the hypervolume reference point.
        seed: the candidates' random draw.
        candidates: random new points considered.

    Returns:
        The actions (possibly fewer than n: budget, nothing new, no model yet).
    """
    from autopeft_service.optimizers.saasbo.encoding import Encoding

    encoding = Encoding(space)
    generator = torch.Generator().manual_seed(seed)
    known = {point_key(p) for p in seen}
    fresh: list[Point] = []
    for row in encoding.random_valid(candidates, generator):
        point = encoding.to_point(row)
        if point_key(point) not in known:
            known.add(point_key(point))
            fresh.append(point)
    # the front the actions improve: trials observed at full training, at their posterior
    completed = {o.trial_id: o.params for o in observations if o.fidelity >= 1.0}
    everything = [*completed.values(), *(p.params for p in paused), *fresh]
    predicted = predict_points(space, observations, everything)
    if predicted is None:  # too few observations: new points at the lowest level, in order
        return [FidelityAction(dict(p), fidelity.levels[0], None, 0.0, fidelity.levels[0])
                for p in fresh[:max(0, min(n, math.floor(budget_left / fidelity.levels[0]
                                                             + 1e-9)))]]
    means, sds = predicted
    index = {point_key(p): i for i, p in enumerate(everything)}
    front = [ObjectivePoint(score=means[index[point_key(p)]], share=share(p))
             for p in completed.values()]
    front = [front[i] for i in pareto_indices(front)] if front else []
    # (point, level to train to, trial to continue, budget spent now, compute to full)
    options: list[tuple[Point, float, int | None, float, float]] = []
    for trial in paused:
        after = fidelity.next_level(trial.level)
        if after is not None:
            options.append((trial.params, after, trial.trial_id, after - trial.level,
                            1.0 - trial.level))
    options += [(p, fidelity.levels[0], None, fidelity.levels[0], 1.0) for p in fresh]
    chosen: list[FidelityAction] = []
    left = budget_left
    taken: set[int] = set()
    for _ in range(n):
        best: tuple[float, int] | None = None
        for k, (candidate, _level, _trial, cost, to_full) in enumerate(options):
            if k in taken or cost > left + 1e-9:
                continue
            i = index[point_key(candidate)]
            value = expected_improvement(front, share(candidate), means[i], sds[i], reference)
            if best is None or value / to_full > best[0]:
                best = (value / to_full, k)
        if best is None:
            break
        k = best[1]
        picked, level, trial_id, cost, to_full = options[k]
        i = index[point_key(picked)]
        chosen.append(FidelityAction(dict(picked), level, trial_id, best[0] * to_full, cost))
        taken.add(k)
        left -= cost
        front = [*front, ObjectivePoint(score=means[i], share=share(picked))]
        front = [front[j] for j in pareto_indices(front)]
    return chosen


class MultiFidelityOptimizer:
    """Rule ``model`` as an optimiser (``optimizers.base.Optimizer``): ``suggest`` plans
    with ``plan_actions`` from the history's observations, paused trials and compute left,
    and returns new points and continuations (``Suggestion.continue_trial``).

    Args:
        space: the study's search space.
        fidelity: its levels.
        share: a point's exact share.
        reference: the hypervolume's reference point.
        seed: the candidates' seed (offset by the number of observations, so a study's
            history fixes its proposals).
    """

    name = "mfbo"

    def __init__(self, space: SearchSpaceBase, fidelity: Fidelity,
                 share: Callable[[Point], float], reference: ObjectivePoint,
                 seed: int = 0) -> None:
        self.space, self.fidelity, self.share = space, fidelity, share
        self.reference, self.seed = reference, seed

    def needs_model(self, n: int, history: History) -> bool:
        """A GP fit (seconds): the proposer runs it in its pool."""
        return len(history.observations) >= MIN_OBSERVATIONS

    def suggest(self, n: int, history: History) -> list[Suggestion]:
        """Up to ``n`` actions within ``history.budget_left`` (module docstring)."""
        budget = (float(n) if history.budget_left is None else history.budget_left)
        actions = plan_actions(self.space, self.fidelity, history.observations,
                               history.paused, history.points(), self.share, n, budget,
                               self.reference, seed=self.seed + len(history.observations))
        return [Suggestion(a.params, self.name, a.continue_trial, a.level) for a in actions]

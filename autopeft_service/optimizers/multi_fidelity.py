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
* a new configuration needs 1; it starts at the lowest level and spends ``levels[0]``;
* a **replicate** of a configuration already trained in full (another seed) needs 1 and
  spends 1: it trains in full at once.

Scores are noisy, and the front the user reads is the model's (posterior means), so the
value of a draw is how far it can move that front: a configuration's posterior mean moves
by the *revealed* sd ``sd^2 / sqrt(sd^2 + noise^2)`` (``revealed_sd``), not by its full
posterior sd; with the noise learned large, a draw is worth little. A replicate is valued
by the same measure (``replicate_value``, a knowledge gradient): the expected change of its
configuration's contribution to the model front, largest for a point near being dominated.
A configuration gets at most ``MAX_FULL_OBSERVATIONS`` full-training draws, and none while
one is pending.

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
from autopeft_service.optimizers.prediction import MIN_OBSERVATIONS, posterior_at_full

#: Most full-training observations of one configuration (the first and its replicates):
#: beyond four draws the mean's sd is half one draw's, and the budget is better spent on
#: other configurations.
MAX_FULL_OBSERVATIONS = 4


@dataclass(frozen=True)
class FidelityAction:
    """What to train next.

    Attributes:
        params: the configuration.
        level: the level to train it to.
        continue_trial: the paused trial to continue, or None for a new configuration.
        value: its expected improvement of the model front's hypervolume (module docstring).
        cost: the budget it spends now, in full-training equivalents.
        replicate: a configuration already trained in full, trained again with another seed.
    """

    params: dict[str, ParamValue]
    level: float
    continue_trial: int | None
    value: float
    cost: float
    replicate: bool = False


def revealed_sd(sd: float, noise_sd: float) -> float:
    """How far one more full-training observation moves a point's posterior mean: the sd of
    the mean's change, ``sd^2 / sqrt(sd^2 + noise^2)`` (Gaussian updating: the prior
    variance minus the variance after a draw with noise variance ``noise^2``). With no
    noise it is ``sd``; with much noise, near 0: a draw then tells little.
    """
    if sd <= 0:
        return 0.0
    return sd * sd / math.sqrt(sd * sd + noise_sd * noise_sd)


def replicate_value(front: Sequence[ObjectivePoint], share: float, mean: float, sd: float,
                    noise_sd: float, reference: ObjectivePoint) -> float:
    """The expected gain in the model front's hypervolume from one more draw of a point
    that is already on it at ``mean`` (a knowledge gradient): the point's contribution over
    the rest of the front is convex in its mean, so moving the mean by a draw gains
    ``E[gain(mean')] - gain(mean)`` >= 0, largest where the point is near being dominated.

    Args:
        front: the model front's other points (without this configuration).
        share: the configuration's exact share.
        mean, sd: its score's posterior at full training.
        noise_sd: one draw's noise sd.
        reference: the hypervolume's reference point.

    Returns:
        The expected gain (0 when a draw cannot change the front).
    """
    moved = revealed_sd(sd, noise_sd)
    return max(0.0, expected_improvement(front, share, mean, moved, reference)
               - expected_improvement(front, share, mean, 0.0, reference))


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


def new_candidates(space: SearchSpaceBase, seen: Sequence[Point], candidates: int, seed: int,
                   pool: Sequence[Point] | None = None) -> list[Point]:
    """The new configurations a plan considers: the pool's unseen points when a pool is
    given, else up to ``candidates`` random valid points the study has not seen.

    Args:
        space: the search space.
        seen: every point the study already has.
        candidates: random points drawn (without a pool).
        seed: the draw's seed.
        pool: the only allowed points, or None.

    Returns:
        Distinct unseen points.
    """
    from autopeft_service.optimizers.saasbo.encoding import Encoding

    known = {point_key(p) for p in seen}
    fresh: list[Point] = []
    if pool is not None:
        drawn: list[Point] = list(pool)
    else:
        encoding = Encoding(space)
        generator = torch.Generator().manual_seed(seed)
        drawn = [encoding.to_point(row) for row in encoding.random_valid(candidates, generator)]
    for point in drawn:
        if point_key(point) not in known:
            known.add(point_key(point))
            fresh.append(dict(point))
    return fresh


def plan_actions(space: SearchSpaceBase, fidelity: Fidelity,
                 observations: Sequence[ScoreObservation], paused: Sequence[PausedTrial],
                 seen: Sequence[Point], share: Callable[[Point], float], n: int,
                 budget_left: float, reference: ObjectivePoint, seed: int = 0,
                 candidates: int = 256, pending: Sequence[Point] = (),
                 replicates: bool = True, pool: Sequence[Point] | None = None,
                 max_full_draws: int = MAX_FULL_OBSERVATIONS) -> list[FidelityAction]:
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
        pending: points queued or training now (a configuration with one is not
            replicated again until its draw is in).
        replicates: consider replicates of configurations trained in full.
        pool: when given, the only new configurations considered (a replay of recorded
            configurations); otherwise ``candidates`` random valid points.
        max_full_draws: most full-training draws of one configuration.

    Returns:
        The actions (possibly fewer than n: budget, nothing new, no model yet).
    """

    fresh = new_candidates(space, seen, candidates, seed, pool)
    # the front the actions improve: configurations observed at full training (each once,
    # however many replicates), at their posterior
    completed: dict[tuple[tuple[str, ParamValue], ...], Point] = {}
    full_draws: dict[tuple[tuple[str, ParamValue], ...], int] = {}
    for o in observations:
        if o.fidelity >= 1.0:
            completed.setdefault(point_key(o.params), o.params)
            full_draws[point_key(o.params)] = full_draws.get(point_key(o.params), 0) + 1
    everything = [*completed.values(), *(p.params for p in paused), *fresh]
    posterior = posterior_at_full(space, observations, everything)
    if posterior is None:  # too few observations: new points at the lowest level, in order
        return [FidelityAction(dict(p), fidelity.levels[0], None, 0.0, fidelity.levels[0])
                for p in fresh[:max(0, min(n, math.floor(budget_left / fidelity.levels[0]
                                                             + 1e-9)))]]
    means, sds, noise = posterior.means, posterior.sds, posterior.noise_sds
    index = {point_key(p): i for i, p in enumerate(everything)}
    model_front = {key: ObjectivePoint(score=means[index[key]], share=share(p))
                   for key, p in completed.items()}

    def pareto(points: Sequence[ObjectivePoint]) -> list[ObjectivePoint]:
        return [points[j] for j in pareto_indices(points)] if points else []

    front = pareto(list(model_front.values()))
    # (point, level to train to, trial to continue, budget spent now, compute to full,
    #  replicate?)
    options: list[tuple[Point, float, int | None, float, float, bool]] = []
    for trial in paused:
        after = fidelity.next_level(trial.level)
        if after is not None:
            options.append((trial.params, after, trial.trial_id, after - trial.level,
                            1.0 - trial.level, False))
    options += [(p, fidelity.levels[0], None, fidelity.levels[0], 1.0, False) for p in fresh]
    if replicates:
        waiting = {point_key(p) for p in pending}
        options += [(p, 1.0, None, 1.0, 1.0, True) for key, p in completed.items()
                    if full_draws[key] < max_full_draws and key not in waiting]

    def value_of(option: tuple[Point, float, int | None, float, float, bool]) -> float:
        candidate, replicate = option[0], option[5]
        key = point_key(candidate)
        i = index[key]
        if replicate:  # the front without this configuration, which the draw re-places
            others = pareto([q for k, q in model_front.items() if k != key])
            return replicate_value(others, share(candidate), means[i], sds[i], noise[i],
                                   reference)
        # a configuration not yet trained in full joins the model front at its mean after
        # the draw: the mean moves by the revealed sd, not by the draw's own spread
        return expected_improvement(front, share(candidate), means[i],
                                    revealed_sd(sds[i], noise[i]), reference)

    chosen: list[FidelityAction] = []
    left = budget_left
    taken: set[int] = set()
    for _ in range(n):
        best: tuple[float, int] | None = None
        for k, option in enumerate(options):
            cost, to_full = option[3], option[4]
            if k in taken or cost > left + 1e-9:
                continue
            value = value_of(option)
            if best is None or value / to_full > best[0]:
                best = (value / to_full, k)
        if best is None:
            break
        k = best[1]
        picked, level, trial_id, cost, to_full, replicate = options[k]
        i = index[point_key(picked)]
        chosen.append(FidelityAction(dict(picked), level, trial_id, best[0] * to_full, cost,
                                     replicate))
        taken.add(k)
        left -= cost
        if not replicate:  # kriging believer: it joins the front at its mean
            model_front[point_key(picked)] = ObjectivePoint(score=means[i],
                                                            share=share(picked))
            front = pareto(list(model_front.values()))
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
                               self.reference, seed=self.seed + len(history.observations),
                               pending=history.pending)
        return [Suggestion(a.params, self.name, a.continue_trial, a.level, a.replicate)
                for a in actions]

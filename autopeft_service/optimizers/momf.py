"""MOMF for a fidelity study: the alternative to rule ``model``'s planner that the issue
names, measured against it in ``benchmarks/multi_fidelity.py`` (arm ``mf-momf``).

MOMF (Irshad et al., 2021; BoTorch's ``MOMF``) treats the fidelity as one more objective to
maximise (the "trust" objective) and values a candidate by its expected hypervolume
improvement in (score, -share, level) space over every observation so far, divided by the
candidate's cost. A low-level observation then counts for what it is, a point at low trust,
instead of being valued only by what it predicts about full training (rule ``model``).

BoTorch's ``MOMF`` computes that by Monte Carlo over a model with one output per
objective. Here the share and the level are exact and only the score is uncertain, so the
q = 1 value has a closed form over the box decomposition of the non-dominated region
(BoTorch's ``FastNondominatedPartitioning``): for each cell ``[l, u)`` the improvement is
``E[clip(Y, l0, u0) - l0] * prod_j (min(p_j, u_j) - l_j)+`` with Y ~ N(mean, sd^2). It is
checked against BoTorch's ``MOMF`` in ``tests/optimizers/test_momf.py``. The candidate set
is discrete (continuing a paused trial to its next level; a new configuration at any level,
costing that level), so no gradient optimisation is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.pareto import ObjectivePoint
from autopeft_service.domain.spaces import SearchSpaceBase, point_key
from autopeft_service.optimizers.base import PausedTrial, Point, ScoreObservation
from autopeft_service.optimizers.multi_fidelity import FidelityAction, new_candidates
from autopeft_service.optimizers.prediction import MIN_OBSERVATIONS, posterior_at_levels

__all__ = ["expected_improvement_cells", "non_dominated_cells", "plan_momf"]


def non_dominated_cells(points: np.ndarray, reference: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The box decomposition of the region the points do not dominate (maximisation).

    Args:
        points: ``n x m`` objective values (maximised), possibly empty.
        reference: ``m`` reference values.

    Returns:
        (lower, upper) bounds, each ``cells x m`` (upper bounds may be infinite).
    """
    from botorch.utils.multi_objective.box_decompositions.non_dominated import (
        FastNondominatedPartitioning,
    )

    ref = torch.as_tensor(reference, dtype=torch.double)
    Y = torch.as_tensor(points, dtype=torch.double).reshape(-1, len(reference))
    bounds = FastNondominatedPartitioning(ref_point=ref, Y=Y).get_hypercell_bounds()
    return bounds[0].numpy(), bounds[1].numpy()


def expected_improvement_cells(lower: np.ndarray, upper: np.ndarray, mean: float, sd: float,
                               exact: Sequence[float]) -> float:
    """E[HVI] of a point whose first objective is N(mean, sd^2) and whose others are exact.

    Args:
        lower, upper: the cells (``non_dominated_cells``).
        mean, sd: the first objective's distribution.
        exact: the other objectives' values.

    Returns:
        The expected hypervolume improvement (>= 0).
    """
    others = np.asarray(exact, dtype=float)
    widths = np.clip(np.minimum(others, upper[:, 1:]) - lower[:, 1:], 0.0, None).prod(axis=1)
    if not np.any(widths > 0):
        return 0.0
    low, high = lower[:, 0], upper[:, 0]
    if sd <= 0:
        first = np.clip(np.minimum(mean, high) - low, 0.0, None)
    else:
        from scipy.stats import norm

        def above(edge: np.ndarray) -> np.ndarray:  # E[max(0, Y - edge)]
            finite = np.isfinite(edge)
            z = np.where(finite, (mean - np.where(finite, edge, 0.0)) / sd, -np.inf)
            value = sd * norm.pdf(z) + (mean - np.where(finite, edge, 0.0)) * norm.cdf(z)
            return np.where(finite, value, 0.0)

        first = above(low) - above(high)  # E[clip(Y, low, high) - low]
    return float(np.sum(first * widths))


def plan_momf(space: SearchSpaceBase, fidelity: Fidelity,
              observations: Sequence[ScoreObservation], paused: Sequence[PausedTrial],
              seen: Sequence[Point], share: Callable[[Point], float], n: int,
              budget_left: float, reference: ObjectivePoint, seed: int = 0,
              candidates: int = 128, pool: Sequence[Point] | None = None
              ) -> list[FidelityAction]:
    """The next ``n`` actions at most by MOMF value (expected improvement of the
    (score, -share, level) hypervolume per unit of the action's cost), each within
    ``budget_left``; a picked action joins the observations at its mean.

    Args:
        space: the search space.
        fidelity: the study's levels.
        observations: every score so far.
        paused: the trials that may continue.
        seen: every point the study already has.
        share: a point's exact share (minimised).
        n: most actions.
        budget_left: full-training equivalents still free.
        reference: the hypervolume reference point (score, share).
        seed: the candidates' random draw.
        candidates: random new points considered.
        pool: when given, the only new configurations considered (a replay).

    Returns:
        The actions (fewer than n: budget, nothing new, no model yet).
    """
    fresh = new_candidates(space, seen, candidates, seed, pool)
    # (point, level, trial to continue, cost now)
    options: list[tuple[Point, float, int | None, float]] = []
    for trial in paused:
        after = fidelity.next_level(trial.level)
        if after is not None:
            options.append((trial.params, after, trial.trial_id, after - trial.level))
    options += [(p, level, None, level) for p in fresh for level in fidelity.levels]
    if len(observations) < MIN_OBSERVATIONS:
        return [FidelityAction(dict(p), fidelity.levels[0], None, 0.0, fidelity.levels[0])
                for p in fresh[:max(0, min(n, math.floor(budget_left / fidelity.levels[0]
                                                             + 1e-9)))]]
    posterior = posterior_at_levels(space, observations, [(o[0], o[1]) for o in options])
    assert posterior is not None
    means, sds = posterior
    points = [[o.score, -share(o.params), o.fidelity] for o in observations]
    ref = np.array([reference.score, -reference.share, 0.0])
    chosen: list[FidelityAction] = []
    left = budget_left
    taken: set[int] = set()
    for _ in range(n):
        lower, upper = non_dominated_cells(np.asarray(points, dtype=float), ref)
        best: tuple[float, int] | None = None
        for k, (candidate, level, _trial, cost) in enumerate(options):
            if k in taken or cost > left + 1e-9 or cost <= 0:
                continue
            value = expected_improvement_cells(lower, upper, means[k], sds[k],
                                               [-share(candidate), level]) / cost
            if best is None or value > best[0]:
                best = (value, k)
        if best is None:
            break
        k = best[1]
        picked, level, trial_id, cost = options[k]
        chosen.append(FidelityAction(dict(picked), level, trial_id, best[0] * cost, cost))
        taken.add(k)
        # a continued trial's new configuration-level is taken; so is a new point at any level
        taken.update(j for j, o in enumerate(options) if point_key(o[0]) == point_key(picked))
        left -= cost
        points.append([means[k], -share(picked), level])
    return chosen

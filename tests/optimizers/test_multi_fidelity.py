"""The multi-fidelity rule's pieces: the EHVI of a Gaussian score at an exact share, and
the actions it plans within the compute budget."""

from __future__ import annotations

import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint
from autopeft_service.domain.spaces.autopeft import AutoPeftSpace
from autopeft_service.optimizers.base import History, PausedTrial, ScoreObservation
from autopeft_service.optimizers.multi_fidelity import (
    MAX_FULL_OBSERVATIONS,
    expected_improvement,
    plan_actions,
    replicate_value,
    revealed_sd,
)
from autopeft_service.optimizers.sobol import SobolOptimizer

REFERENCE = ObjectivePoint(score=0.0, share=10.0)
SPACE = AutoPeftSpace.for_backbone(MINILM_DIMS)
FIDELITY = Fidelity(levels=(1 / 3, 1.0))


def test_ehvi_by_hand() -> None:
    # empty front, a certain score: the rectangle to the reference, (10 - 2) x 0.8
    assert expected_improvement([], 2.0, 0.8, 0.0, REFERENCE) == pytest.approx(6.4)
    # a certain point dominated by the front adds nothing
    front = [ObjectivePoint(score=0.9, share=1.0)]
    assert expected_improvement(front, 2.0, 0.8, 0.0, REFERENCE) == 0.0
    # uncertainty gives a dominated mean a chance: positive, and growing with sd
    small = expected_improvement(front, 2.0, 0.8, 0.05, REFERENCE)
    large = expected_improvement(front, 2.0, 0.8, 0.2, REFERENCE)
    assert 0 < small < large
    # beyond the reference share nothing counts
    assert expected_improvement([], 11.0, 0.9, 0.1, REFERENCE) == 0.0


def _share(point: dict) -> float:
    return count_parameters(SPACE.decode(point), MINILM_DIMS).deployed_percent


def test_plans_stay_in_budget_and_continue_a_promising_paused_trial() -> None:
    points = [s.params for s in SobolOptimizer(SPACE, seed=2).suggest(12, History())]
    # eight trials completed (seen at 1/3 and at 1), three paused at 1/3; paused #9 scored
    # far above everything at 1/3
    observations = []
    for i, p in enumerate(points[:8]):
        observations += [ScoreObservation(i, p, 1 / 3, 0.55 + 0.01 * i),
                         ScoreObservation(i, p, 1.0, 0.65 + 0.01 * i)]
    paused = []
    for i, p in enumerate(points[8:11], start=8):
        score = 0.80 if i == 9 else 0.50
        observations.append(ScoreObservation(i, p, 1 / 3, score))
        paused.append(PausedTrial(i, p, 1 / 3))
    actions = plan_actions(SPACE, FIDELITY, observations, paused, points, _share, n=4,
                           budget_left=1.0, reference=REFERENCE, candidates=64)
    assert actions and sum(a.cost for a in actions) <= 1.0 + 1e-9
    assert actions[0].continue_trial == 9 and actions[0].level == 1.0
    for action in actions:
        if action.replicate:  # a configuration trained in full, again
            assert action.level == 1.0 and action.cost == 1.0 and action.params in points[:8]
        elif action.continue_trial is None:
            assert action.level == pytest.approx(1 / 3)
            assert action.params not in points  # new configurations only
    to_full = [a.value / (1.0 - (1 / 3 if a.continue_trial is not None else 0.0))
               for a in actions]
    assert to_full[0] == max(to_full)


def test_without_a_model_new_points_start_at_the_lowest_level() -> None:
    actions = plan_actions(SPACE, FIDELITY, [], [], [], _share, n=3, budget_left=0.7,
                           reference=REFERENCE, candidates=16)
    assert len(actions) == 2  # floor(0.7 / (1/3)) = 2 fit the budget
    assert all(a.continue_trial is None and a.level == pytest.approx(1 / 3) for a in actions)


def test_revealed_sd_by_hand() -> None:
    # no noise: a draw reveals the score, the mean moves by the whole posterior sd
    assert revealed_sd(0.03, 0.0) == pytest.approx(0.03)
    # sd 0.03, noise 0.04: 0.03^2 / sqrt(0.03^2 + 0.04^2) = 0.0009 / 0.05
    assert revealed_sd(0.03, 0.04) == pytest.approx(0.018)
    assert revealed_sd(0.0, 0.04) == 0.0


def test_a_replicate_is_worth_most_near_the_edge_of_the_front() -> None:
    """Knowledge gradient of one more draw: a point the rest of the front nearly dominates
    can move onto or off the front; a point far above the rest, or one with no noise left
    to resolve, gains nothing from a draw."""
    others = [ObjectivePoint(score=0.81, share=1.0)]
    edge = replicate_value(others, 2.0, 0.80, 0.02, 0.02, REFERENCE)
    far = replicate_value(others, 0.5, 0.95, 0.02, 0.02, REFERENCE)
    known = replicate_value(others, 2.0, 0.80, 0.0, 0.02, REFERENCE)
    assert edge > 1e-4
    assert far == pytest.approx(0.0, abs=1e-9) and known == 0.0


def _noisy_completed(points: list[dict], draws: int) -> list[ScoreObservation]:
    """Every point trained in full ``draws`` times, the draws 6 points apart (noise)."""
    observations = []
    for i, p in enumerate(points):
        for d in range(draws):
            observations.append(ScoreObservation(i * 10 + d, p, 1.0,
                                                 0.70 + 0.005 * i + (0.03 if d % 2 else -0.03)))
    return observations


def test_replicates_train_in_full_once_each_never_while_one_is_pending_or_at_the_cap() -> None:
    """With no new configuration to consider, every action is a replicate: each in full at
    cost 1, a configuration at most once, none of a configuration with a replicate pending
    or with MAX_FULL_OBSERVATIONS draws already."""
    points = [s.params for s in SobolOptimizer(SPACE, seed=3).suggest(6, History())]
    observations = _noisy_completed(points[:5], 2)
    observations += [ScoreObservation(900 + d, points[5], 1.0, 0.7)
                     for d in range(MAX_FULL_OBSERVATIONS)]
    actions = plan_actions(SPACE, FIDELITY, observations, [], points, _share, n=6,
                           budget_left=3.5, reference=REFERENCE, candidates=0,
                           pending=[points[0]])
    assert len(actions) == 3  # floor(3.5) draws in full fit the budget
    assert all(a.replicate and a.level == 1.0 and a.cost == 1.0 for a in actions)
    replicated = [a.params for a in actions]
    assert points[0] not in replicated and points[5] not in replicated
    assert all(p in points[1:5] for p in replicated)
    assert len({tuple(sorted(p.items())) for p in replicated}) == 3
    without = plan_actions(SPACE, FIDELITY, observations, [], points, _share, n=6,
                           budget_left=3.5, reference=REFERENCE, candidates=0,
                           replicates=False)
    assert without == []


def test_with_a_pool_new_configurations_come_only_from_it() -> None:
    """A replay of recorded configurations: new actions are pool points not yet seen."""
    points = [s.params for s in SobolOptimizer(SPACE, seed=4).suggest(12, History())]
    observations = [ScoreObservation(i, p, 1.0, 0.6 + 0.01 * i) for i, p in enumerate(points[:6])]
    pool = points[4:10]  # two of them seen already
    actions = plan_actions(SPACE, FIDELITY, observations, [], points[:6], _share, n=8,
                           budget_left=5.0, reference=REFERENCE, pool=pool, replicates=False)
    new = [a.params for a in actions]
    assert len(new) == 4 and all(p in points[6:10] for p in new)

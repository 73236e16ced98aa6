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
from autopeft_service.optimizers.multi_fidelity import expected_improvement, plan_actions
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
        if action.continue_trial is None:
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

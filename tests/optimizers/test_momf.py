"""The MOMF planner (``optimizers.momf``): its closed form against BoTorch's ``MOMF``, and
its actions within the compute budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint
from autopeft_service.domain.spaces.autopeft import AutoPeftSpace
from autopeft_service.optimizers.base import History, PausedTrial, ScoreObservation
from autopeft_service.optimizers.momf import (
    expected_improvement_cells,
    non_dominated_cells,
    plan_momf,
)
from autopeft_service.optimizers.sobol import SobolOptimizer

SPACE = AutoPeftSpace.for_backbone(MINILM_DIMS)
FIDELITY = Fidelity(levels=(1 / 3, 1.0))
REFERENCE = ObjectivePoint(score=0.0, share=10.0)


def test_the_closed_form_equals_botorchs_momf_by_monte_carlo() -> None:
    """Objectives (score ~ GP, -share, level): BoTorch's MOMF (Monte Carlo, unit cost) and
    the closed form at the GP's posterior agree within Monte Carlo error."""
    from botorch.acquisition.multi_objective.multi_fidelity import MOMF
    from botorch.models import SingleTaskGP
    from botorch.models.deterministic import GenericDeterministicModel
    from botorch.models.model import ModelList
    from botorch.sampling.get_sampler import get_sampler
    from botorch.utils.multi_objective.box_decompositions.non_dominated import (
        FastNondominatedPartitioning,
    )

    torch.manual_seed(0)
    X = torch.rand(12, 3, dtype=torch.double)  # (x, share, level)
    scores = (X[:, :1] * 0.5 + 0.3 + 0.05 * torch.randn(12, 1, dtype=torch.double))
    gp = SingleTaskGP(X, scores)  # hyperparameters at their defaults: any posterior will do
    model = ModelList(gp, GenericDeterministicModel(lambda x: -x[..., 1:2]),
                      GenericDeterministicModel(lambda x: x[..., 2:3]))
    observed = torch.cat([scores, -X[:, 1:2], X[:, 2:3]], dim=-1)
    ref = torch.tensor([0.0, -1.0, 0.0], dtype=torch.double)
    partitioning = FastNondominatedPartitioning(ref_point=ref, Y=observed)
    # a list of one Gaussian and two deterministic posteriors: BoTorch's sampler for it
    sampler = get_sampler(model.posterior(X[:1]), torch.Size([8192]), seed=1)
    momf = MOMF(model, ref, partitioning, sampler=sampler,
                cost_call=lambda x: torch.ones(*x.shape[:-1], 1, dtype=x.dtype))
    lower, upper = non_dominated_cells(observed.numpy(), ref.numpy())
    candidates = torch.tensor([[0.9, 0.2, 1.0], [0.5, 0.1, 0.5], [0.2, 0.8, 0.3]],
                              dtype=torch.double)
    values = []
    for x in candidates:
        with torch.no_grad():
            expected = float(momf(x.reshape(1, 1, 3)))
            posterior = gp.posterior(x.reshape(1, 3))
        mean = float(posterior.mean)
        sd = float(posterior.variance.sqrt())
        closed = expected_improvement_cells(lower, upper, mean, sd, [-float(x[1]), float(x[2])])
        values.append(expected)
        assert closed == pytest.approx(expected, rel=0.03, abs=1e-5)
    assert max(values) > 1e-3  # not a comparison of zeros
    assert expected_improvement_cells(lower, upper, 0.0, 0.0, [-1.0, 0.0]) == 0.0


def test_a_certain_point_by_hand() -> None:
    # one observed point (0.5, -0.5, 1) and reference (0, -1, 0): a certain point at
    # (0.8, -0.25, 1) adds 0.8 * 0.75 * 1 - 0.5 * 0.5 * 1 = 0.35
    lower, upper = non_dominated_cells(np.array([[0.5, -0.5, 1.0]]), np.array([0.0, -1.0, 0.0]))
    assert expected_improvement_cells(lower, upper, 0.8, 0.0, [-0.25, 1.0]) == \
        pytest.approx(0.35)


def _share(point: dict) -> float:
    return count_parameters(SPACE.decode(point), MINILM_DIMS).deployed_percent


def test_plans_stay_in_budget_and_never_pick_one_configuration_twice() -> None:
    points = [s.params for s in SobolOptimizer(SPACE, seed=2).suggest(10, History())]
    observations = [ScoreObservation(i, p, 1 / 3, 0.5 + 0.02 * i) for i, p in enumerate(points)]
    observations += [ScoreObservation(i, p, 1.0, 0.6 + 0.02 * i)
                     for i, p in enumerate(points[:5])]
    paused = [PausedTrial(i, p, 1 / 3) for i, p in enumerate(points[5:], start=5)]
    actions = plan_momf(SPACE, FIDELITY, observations, paused, points, _share, n=4,
                        budget_left=1.5, reference=REFERENCE, candidates=32)
    assert actions and sum(a.cost for a in actions) <= 1.5 + 1e-9
    keys = [tuple(sorted(a.params.items())) for a in actions]
    assert len(set(keys)) == len(keys)
    for action in actions:
        if action.continue_trial is not None:
            assert action.level == 1.0 and action.cost == pytest.approx(2 / 3)
        else:
            assert action.params not in points and action.cost == pytest.approx(action.level)

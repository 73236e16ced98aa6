"""The model's predicted scores (``optimizers.prediction``): on noiseless scores the
model-predicted front is the observed front; on noisy ones the intervals hold the
noise-free scores about as often as they say."""

from __future__ import annotations

import random

import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices
from autopeft_service.domain.spaces.autopeft import AutoPeftSpace
from autopeft_service.optimizers.base import History
from autopeft_service.optimizers.prediction import ScoreObservation, predict_scores
from autopeft_service.optimizers.sobol import SobolOptimizer

SPACE = AutoPeftSpace.for_backbone(MINILM_DIMS)


def _points(n: int) -> list[dict]:
    return [s.params for s in SobolOptimizer(SPACE, seed=1).suggest(n, History())]


def _share(point: dict) -> float:
    return count_parameters(SPACE.decode(point), MINILM_DIMS).deployed_percent


def _position(point: dict, name: str) -> float:
    """Where the point's choice of ``name`` lies in its choices, from 0 to 1."""
    choices = next(p.values for p in SPACE.parameters() if p.name == name)
    return choices.index(point[name]) / (len(choices) - 1)


def _true_score(point: dict) -> float:
    """A noise-free score that the share alone does not order: later layers and larger
    parallel adapters help, a longer prefix hurts."""
    layers = sum(point[f"layer_{i}"] * (i + 1) for i in range(6)) / 21
    return (0.6 + 0.1 * layers + 0.08 * _position(point, "parallel_adapter_size")
            - 0.05 * _position(point, "prefix_length")
            + 0.03 * _position(point, "serial_adapter_size"))


def test_noiseless_scores_give_the_observed_front() -> None:
    points = _points(24)
    observations = [ScoreObservation(i, p, 1.0, _true_score(p)) for i, p in enumerate(points)]
    predicted = predict_scores(SPACE, observations)
    assert set(predicted) == set(range(24))
    for o in observations:
        assert predicted[o.trial_id].mean == pytest.approx(o.score, abs=2e-3)
        assert predicted[o.trial_id].low <= predicted[o.trial_id].mean <= predicted[o.trial_id].high
    observed = [ObjectivePoint(score=o.score, share=_share(o.params)) for o in observations]
    model = [ObjectivePoint(score=predicted[o.trial_id].mean, share=_share(o.params))
             for o in observations]
    assert sorted(pareto_indices(model)) == sorted(pareto_indices(observed))


def test_with_replicates_the_model_learns_the_noise() -> None:
    """Three noisy replicates (sd 0.02) of 20 configurations: the intervals hold the
    noise-free score about as often as they say, and the model's error is below that of
    the replicates' mean (it pools neighbours). (Without replicates, at this few
    observations, the fit explains noise as signal: docs/early_stopping.md.)"""
    rng = random.Random(0)
    points = _points(20)
    observations = [ScoreObservation(i, p, 1.0, _true_score(p) + rng.gauss(0, 0.02))
                    for i, p in enumerate(points) for _ in range(3)]
    predicted = predict_scores(SPACE, observations, level=0.9)
    inside = sum(predicted[i].low <= _true_score(p) <= predicted[i].high
                 for i, p in enumerate(points))
    assert inside >= 15, inside  # measured 17 of 20 at this seed
    model_error = sum((predicted[i].mean - _true_score(p)) ** 2 for i, p in enumerate(points))
    mean_error = sum((sum(o.score for o in observations if o.trial_id == i) / 3
                      - _true_score(p)) ** 2 for i, p in enumerate(points))
    assert model_error < mean_error


def test_lower_fidelity_scores_inform_the_full_training_prediction() -> None:
    """A fidelity study: every trial observed at 1/3 (score lower by a fixed gap), some
    also at 1. The prediction is at level 1 for all of them."""
    points = _points(16)
    observations = [ScoreObservation(i, p, 1 / 3, _true_score(p) - 0.1)
                    for i, p in enumerate(points)]
    observations += [ScoreObservation(i, p, 1.0, _true_score(p))
                     for i, p in enumerate(points) if i % 2 == 0]
    predicted = predict_scores(SPACE, observations)
    assert set(predicted) == set(range(16))
    for i, p in enumerate(points):
        if i % 2:  # seen at 1/3 only: predicted near its full-training score, not 0.1 below
            assert abs(predicted[i].mean - _true_score(p)) < 0.05


def test_too_few_observations_and_bad_level() -> None:
    points = _points(2)
    assert predict_scores(SPACE, [ScoreObservation(i, p, 1.0, 0.5)
                                  for i, p in enumerate(points)]) == {}
    with pytest.raises(ValueError, match="level"):
        predict_scores(SPACE, [], level=1.5)

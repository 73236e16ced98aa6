"""Fleet mode of ``saasbo``: Thompson-sampled large batches, kept NUTS samples, and the
hypervolume arithmetic it ranks candidates by (against brute force)."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from autopeft_service.domain.pareto import ObjectivePoint, hypervolume, pareto_indices
from autopeft_service.optimizers.base import History, point_key
from autopeft_service.optimizers.saasbo import fleet
from autopeft_service.optimizers.sobol import SobolOptimizer
from tests.optimizers.test_saasbo import CHEAP, REFERENCE, SPACE, observe, optimizer


@pytest.mark.parametrize("seed", range(40))
def test_hypervolume_gain_and_gap_equal_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    reference = (0.5, 4.0)
    points = [ObjectivePoint(score=rng.choice([0.4, 0.55, 0.6, 0.7, 0.8, 0.9]),
                             share=rng.choice([0.1, 0.5, 1.0, 2.0, 3.5, 5.0]))
              for _ in range(rng.randint(1, 8))]
    front = [points[i] for i in pareto_indices(points)]
    candidates = [ObjectivePoint(score=rng.uniform(0.3, 1.0), share=rng.uniform(0.05, 6.0))
                  for _ in range(30)]
    scores = torch.tensor([c.score for c in candidates], dtype=torch.float64)
    shares = torch.tensor([c.share for c in candidates], dtype=torch.float64)
    front_scores = torch.tensor([f.score for f in front], dtype=torch.float64)
    front_shares = torch.tensor([f.share for f in front], dtype=torch.float64)
    gains = fleet.hypervolume_gain(scores, shares, front_scores, front_shares, reference)
    gaps = fleet.gap_to_front(scores, shares, front_scores, front_shares, reference[0])
    base = hypervolume(front, ObjectivePoint(*reference))
    for index, candidate in enumerate(candidates):
        expected = hypervolume([*front, candidate], ObjectivePoint(*reference)) - base
        assert float(gains[index]) == pytest.approx(expected, abs=1e-12)
        reachable = max([reference[0], *(f.score for f in front
                                         if f.share <= candidate.share)])
        assert float(gaps[index]) == pytest.approx(candidate.score - reachable)


def _history(completed: int, pending: int, seed: int = 1) -> History:
    points = SobolOptimizer(SPACE, seed=seed).suggest(completed + pending, History())
    return History(completed=[observe(s.params) for s in points[:completed]],
                   pending=[s.params for s in points[completed:]])


def test_many_pending_points_switch_to_thompson_sampling_and_keep_the_fit() -> None:
    fleet.clear_cache()
    history = _history(24, 20)
    first = optimizer(initial_trials=0)
    assert fleet.uses_fleet_mode(first, 8, history)
    assert not fleet.uses_fleet_mode(first, 8, dataclasses.replace(history, pending=[]))
    got = [s.params for s in first.suggest(12, history)]
    info = first.last_info
    assert info is not None and info.fleet and not info.reused_fit and info.nuts is not None
    seen = {point_key(p) for p in history.points()}
    assert len(got) == 12 and all(SPACE.is_valid(p) for p in got)
    assert len({point_key(p) for p in got}) == 12 and not seen & {point_key(p) for p in got}
    # a fresh optimiser (as a pool child builds per call) reuses the kept NUTS samples
    # until the completed trials grew by refit_growth percent (25 %)
    more = dataclasses.replace(history, completed=[*history.completed,
                                                   *map(observe, got[:4])])
    second = optimizer(initial_trials=0)
    second.suggest(12, more)
    assert second.last_info is not None and second.last_info.reused_fit
    assert second.last_info.nuts is None
    grown = dataclasses.replace(history, completed=[*history.completed, *map(observe, got)])
    third = optimizer(initial_trials=0)
    third.suggest(12, grown)
    assert third.last_info is not None and not third.last_info.reused_fit


def test_the_threshold_keeps_small_batches_on_greedy_qlognehvi() -> None:
    history = _history(16, 4)
    small = optimizer(initial_trials=0)
    small.suggest(4, history)
    assert small.last_info is not None and not small.last_info.fleet
    forced = optimizer(initial_trials=0,
                       settings=dataclasses.replace(CHEAP, fleet_threshold=4))
    forced.suggest(4, history)
    assert forced.last_info is not None and forced.last_info.fleet


def test_thompson_batches_beat_random_batches_on_the_synthetic_objective() -> None:
    """Three batches of 16 from 16 Sobol points: the hypervolume of the Thompson batches
    exceeds that of the next 48 Sobol points, on each of three seeds."""
    reference = ObjectivePoint(*REFERENCE)
    for seed in range(3):
        fleet.clear_cache()
        start = _history(16, 0, seed=seed + 10)
        completed = list(start.completed)
        for _ in range(3):
            proposer = optimizer(seed=seed, initial_trials=0,
                                 settings=dataclasses.replace(CHEAP, fleet_threshold=8))
            batch = proposer.suggest(16, History(completed=completed))
            completed += [observe(s.params) for s in batch]
        sobol = _history(16 + 48, 0, seed=seed + 10).completed
        ours = hypervolume([ObjectivePoint(o.score, o.param_share) for o in completed],
                           reference)
        plain = hypervolume([ObjectivePoint(o.score, o.param_share) for o in sobol],
                            reference)
        assert ours > plain, (seed, ours, plain)

"""The early-stopping benchmark (benchmarks/early_stopping.py): the learning-curve problem,
the asynchronous simulation and its accounting of compute, and the summary."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.conftest import load_benchmark

es = load_benchmark("early_stopping")


def _trial(number: int, share: float, rungs: list[float], final: float,
           seconds: float = 10.0, rung_seconds: float = 1.0) -> object:
    return es.SimTrial(number=number, point={"n": number}, share=share, rung_scores=rungs,
                       final=final, truth=final, seconds=seconds,
                       rung_seconds=[rung_seconds] * len(rungs))


def _queue(trials: list) -> object:
    pending = list(trials)
    return lambda *_: pending.pop(0) if pending else None


def test_without_early_stopping_every_trial_completes_and_rungs_cost_nothing() -> None:
    trials = [_trial(i, share=1.0 + i, rungs=[0.5], final=0.9 - 0.1 * i) for i in range(4)]
    log = es.simulate(_queue(trials), workers=2, rungs=[0.5], eta=None, reference=(0.5, 10.0))
    assert [t.state for t in log.trials] == ["completed"] * 4
    assert log.compute[-1] == pytest.approx(40.0)  # rungs are not scored without the rule
    assert [t.ended_at for t in log.trials] == pytest.approx([10.0, 10.0, 20.0, 20.0])
    assert log.hypervolume == sorted(log.hypervolume)


def test_a_dominated_trial_stops_at_its_rung_and_pays_only_up_to_it() -> None:
    # One worker: trial 0 reaches the rung alone (goes on); trial 1, dearer and worse at
    # the rung, is pruned there: half its training and one rung scoring.
    trials = [_trial(0, share=1.0, rungs=[0.8], final=0.9),
              _trial(1, share=2.0, rungs=[0.6], final=0.95)]
    log = es.simulate(_queue(trials), workers=1, rungs=[0.5], eta=3, reference=(0.5, 10.0))
    first, second = log.trials
    assert (first.state, second.state) == ("completed", "pruned")
    assert first.spent == pytest.approx(11.0) and second.spent == pytest.approx(6.0)
    assert second.ended_at == pytest.approx(17.0)
    assert log.compute == pytest.approx([11.0, 17.0])
    # It would have reached the final front had it completed (0.95 beats 0.9).
    assert es.would_reach_front(log) == (1, 1)


def test_the_compute_budget_stops_new_trials() -> None:
    trials = [_trial(i, share=1.0, rungs=[0.5], final=0.8) for i in range(10)]
    log = es.simulate(_queue(trials), workers=1, rungs=[0.5], eta=None, reference=(0.5, 10.0),
                      compute_budget=25.0)
    assert len(log.trials) == 3  # the third starts at 20 s spent (< 25) and completes


def test_curves_start_at_chance_end_at_the_final_score_and_cross() -> None:
    problem = es.CurveProblem("lora", seed=0, rungs=[1 / 9, 1 / 3], trial_seconds=45,
                              rung_cost=0.05)
    points = problem.family.sobol(40, seed=1)
    for point in points[:5]:
        assert problem.curve(point, 1.0) == pytest.approx(problem.family.noiseless(point))
        assert problem.curve(point, 1e-9) == pytest.approx(es.CHANCE, abs=1e-6)
        assert problem.curve(point, 0.2) < problem.curve(point, 0.5)
    early = [problem.curve(p, 1 / 9) for p in points]
    final = [problem.curve(p, 1.0) for p in points]
    crossed = sum(1 for i in range(40) for j in range(40)
                  if early[i] > early[j] and final[i] < final[j])
    assert crossed > 0  # some curves cross: the rung ranking is not the final ranking
    trial = problem.trial(0, points[0])
    assert len(trial.rung_scores) == 2 and trial.rung_seconds == [2.25, 2.25]


def test_summary_finds_the_compute_share_to_reach_the_plain_hypervolume() -> None:
    plain = {"problem": "p", "early": False, "compute": [50, 100], "hypervolume": [1, 2],
             "trials": 2, "stopped": 0, "stopped_would_reach_front": 0}
    early = {"problem": "p", "early": True, "compute": [10, 30, 45, 90],
             "hypervolume": [0.5, 1.5, 2.0, 2.2], "trials": 4, "stopped": 2,
             "stopped_would_reach_front": 1}
    [row] = es.summarise([plain, early])
    assert row["compute_share_to_reach"] == pytest.approx(0.45)
    assert row["stopped_fraction"] == 0.5 and row["stopped_would_reach_front"] == 0.5
    never = {**early, "hypervolume": [0.5, 1, 1.5, 1.9]}
    assert math.isinf(es.summarise([plain, never])[0]["compute_share_to_reach"])

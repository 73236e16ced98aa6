"""benchmarks/warm_start.py: the task pairs have the correlation they are named for, the
unrelated task is another task, and the summary's evaluations-to-reach arithmetic."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.conftest import load_benchmark

ws = load_benchmark("warm_start")


@pytest.mark.parametrize("rho", [0.95, 0.7, 0.3])
def test_a_pair_has_the_correlation_it_is_named_for(rho: float) -> None:
    pair = ws.TaskPair(rho, seed=0, noise=0.0)
    assert ws.measured_correlation(pair) == pytest.approx(rho, abs=1e-6)


def test_the_unrelated_task_is_another_task() -> None:
    pair = ws.TaskPair(None, seed=0, noise=0.0)
    assert abs(ws.measured_correlation(pair)) < 0.2
    # their optima differ: the source's best Sobol point is not the unrelated task's
    from autopeft_service.optimizers.base import History
    from autopeft_service.optimizers.sobol import SobolOptimizer

    points = [s.params for s in SobolOptimizer(pair.space, seed=1).suggest(256, History())]
    assert max(points, key=pair.source_score) != max(points, key=pair.target_score)


def test_summary_counts_evaluations_to_cold_median_and_final_ratio() -> None:
    def run(arm: str, seed: int, curve: list[float]) -> dict:
        return {"pair": "rho-0.95", "arm": arm, "seed": seed, "correlation": 0.95,
                "hypervolume": curve}

    runs = [run("cold", 0, [0.1, 0.2, 0.4]), run("cold", 1, [0.1, 0.3, 0.5]),
            run("cold", 2, [0.2, 0.3, 0.6]),
            run("warm-model", 0, [0.5, 0.5, 0.5]), run("warm-model", 1, [0.1, 0.2, 0.3]),
            run("warm-model", 2, [0.2, 0.5, 0.6])]
    summary = ws.summarise(runs)["rho-0.95"]
    assert summary["cold_median_hv"] == 0.5
    model = summary["warm-model"]
    assert model["evaluations_to_cold_median"] == [1.0, math.inf, 2.0]
    assert model["median_evaluations_to_cold_median"] == 2.0
    assert model["median_final_ratio_to_cold"] == pytest.approx(1.0)  # 1.25, 0.6, 1.0


def test_paired_difference_says_better_only_when_the_interval_excludes_zero() -> None:
    cold = {seed: {"seed": seed, "hypervolume": [0.3] * 15} for seed in range(5)}
    ahead = [{"seed": seed, "hypervolume": [0.3] * 14 + [0.35 + 0.01 * seed]}
             for seed in range(5)]
    mixed = [{"seed": seed, "hypervolume": [0.3] * 14 + [0.3 + (-0.02, 0.02)[seed % 2]]}
             for seed in range(5)]
    better = ws.paired_difference(ahead, cold, 15)
    assert better["verdict"] == "better" and better["ci95"][0] > 0
    assert better["mean"] == pytest.approx(0.07)
    assert ws.paired_difference(mixed, cold, 15)["verdict"] == "not distinguishable"
    assert ws.paired_difference(ahead, cold, 40) is None  # curves too short

"""The search-quality benchmark's loop, problems and summary (benchmarks/search_quality.py)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from autopeft_service.domain.param_count import count_parameters
from autopeft_service.optimizers.base import Observation
from tests.benchmarks.conftest import load_benchmark

sq = load_benchmark("search_quality")


class Recording:
    """Wraps a method and records how many points were pending at each call."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = "recording"
        self.pending_seen: list[int] = []
        self.completed_seen: list[int] = []

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[dict[str, int]],
                failed: Sequence[dict[str, int]]) -> list[dict[str, int]]:
        self.pending_seen.append(len(pending))
        self.completed_seen.append(len(completed))
        return self.inner.propose(n, completed, pending, failed)  # type: ignore[attr-defined]


def test_batches_are_proposed_while_the_previous_batch_is_pending() -> None:
    problem = sq.SyntheticProblem(15)
    method = Recording(sq.make_method("random", problem, seed=0))
    result = sq.run_search(problem, method, evaluations=14)
    assert len(result["hypervolume"]) == 14
    # first batch: nothing pending; then each call sees the 4 points being evaluated
    assert method.pending_seen == [0, 4, 4, 4]
    assert method.completed_seen == [0, 0, 4, 8]
    assert all(b >= a for a, b in zip(result["hypervolume"], result["hypervolume"][1:], strict=False))


class Scripted:
    """Proposes an invalid point, then the same valid point over and over."""

    name = "scripted"

    def __init__(self, problem: object) -> None:
        params = problem.space.parameters()  # type: ignore[attr-defined]
        self.invalid = {p.name: 0 for p in params}
        self.valid = {p.name: p.values[-1] for p in params}
        self.calls = 0

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[dict[str, int]],
                failed: Sequence[dict[str, int]]) -> list[dict[str, int]]:
        self.calls += 1
        return [self.invalid] + [self.valid] * (n - 1) if self.calls == 1 else [self.valid] * n


def test_invalid_and_repeated_points_count_as_evaluations() -> None:
    problem = sq.SyntheticProblem(15)
    result = sq.run_search(problem, Scripted(problem), evaluations=9)
    assert len(result["hypervolume"]) == 9
    assert result["invalid"] == 1
    assert result["repeated"] == 7  # 8 copies of the valid point, the first one is new
    assert result["hypervolume"][0] == 0.0  # the invalid point adds nothing


def test_a_method_that_returns_fewer_points_is_asked_again() -> None:
    problem = sq.SyntheticProblem(15)

    class OneAtATime:
        name = "one"

        def __init__(self) -> None:
            self.inner = sq.make_method("random", problem, seed=1)

        def propose(self, n, completed, pending, failed):  # type: ignore[no-untyped-def]
            return [] if pending else self.inner.propose(1, completed, pending, failed)

    result = sq.run_search(problem, OneAtATime(), evaluations=5)
    assert len(result["hypervolume"]) == 5


@pytest.mark.parametrize("name", ["optuna-tpe", "optuna-nsga2"])
def test_optuna_methods_learn_the_results_of_their_proposals(name: str) -> None:
    problem = sq.SyntheticProblem(15)
    method = sq.make_method(name, problem, seed=0)
    result = sq.run_search(problem, method, evaluations=16)
    assert len(result["hypervolume"]) == 16
    told = [t for t in method.study.trials if t.state.name in ("COMPLETE", "FAIL")]
    # the last call (proposing batch 4) saw batches 1-2 completed and batch 3 pending
    assert len(told) == 8
    for trial in told:
        if trial.state.name == "COMPLETE":
            point = {p.name: int(p.values[trial.params[p.name]]) for p in problem.space.parameters()}
            observation = problem.observe(point)
            assert observation is not None
            assert trial.values == pytest.approx([observation.score, observation.param_share])


def _write_table(path: Path, rows: int) -> None:
    problem = sq.SurrogateProblem.__new__(sq.SurrogateProblem)
    space = sq.AutoPeftSpace.for_backbone(sq.minilm_backbone())
    problem.space = space
    rng = np.random.default_rng(0)
    names = [p.name for p in space.parameters()]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["trial", "state", *names, "score", "param_share"])
        writer.writeheader()
        written = 0
        while written < rows:
            point = {p.name: int(rng.choice(p.values)) for p in space.parameters()}
            if not space.is_valid(point):
                continue
            # score rises with the serial adapter size and the last layer's flag
            sizes = list(space.serial_adapter_sizes)
            score = 0.6 + 0.2 * sizes.index(point["serial_adapter_size"]) / (len(sizes) - 1) \
                + 0.1 * point[names[5]]
            writer.writerow({"trial": written, "state": "completed", **point, "score": score,
                             "param_share": 0.0})
            written += 1


def test_surrogate_learns_the_table_and_shares_are_exact(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    _write_table(table, 120)
    problem = sq.SurrogateProblem(table)
    assert problem.rows == 120
    assert problem.fit_error["r2"] > 0.7
    assert problem.fit_error["spearman"] > 0.8
    assert problem.reference[1] == 10.0
    params = problem.space.parameters()
    big = {p.name: p.values[-1] for p in params}
    small = {**{p.name: 0 for p in params}, params[5].name: 1, "serial_adapter_size": 1}
    high, low = problem.observe(big), problem.observe(small)
    assert high is not None and low is not None
    assert high.score > low.score
    assert high.param_share == pytest.approx(
        count_parameters(problem.space.decode(big), problem.dims).trainable_percent)
    assert problem.observe({p.name: 0 for p in params}) is None


def test_surrogate_refuses_a_table_too_small_to_fit(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    _write_table(table, 10)
    with pytest.raises(SystemExit, match="needs >= 20"):
        sq.SurrogateProblem(table)


def _run(method: str, seed: int, curve: list[float]) -> dict[str, object]:
    return {"problem": "p", "method": method, "seed": seed, "hypervolume": curve, "invalid": 0,
            "repeated": 0, "seconds": 1.0}


def test_summary_counts_evaluations_to_reach_random_search() -> None:
    runs = [_run("random", s, [0.1 * (i + 1) for i in range(100)]) for s in range(3)]
    # reaches random's final 10.0 at evaluation 40 in every seed
    runs += [_run("saasbo", s, [min(10.0, 0.25 * (i + 1)) for i in range(100)]) for s in range(3)]
    rows = {r["method"]: r for r in sq.summarise(runs)}
    assert rows["random"]["evals_to_random_final"] == 100
    assert rows["saasbo"]["evals_to_random_final"] == 40
    q1, median, q3 = rows["saasbo"]["hv50"]
    assert median == pytest.approx(10.0) and q1 <= median <= q3
    assert math.isclose(rows["random"]["hv20"][1], 2.0)

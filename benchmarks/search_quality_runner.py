"""One search of the benchmark: a method proposing batches on a problem, the hypervolume
after each evaluation (``run_search``), and one seeded run by name (``run_one``, the
unit a process pool maps over).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search_quality_methods import BATCH, VERSIONS, Method, make_method
from search_quality_problems import Problem, make_problem
from synthetic_problem import (
    Point,
    quiet_libraries,
)

from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.optimizers.base import Observation, point_key


def run_search(problem: Problem, method: Method, evaluations: int, batch: int = BATCH
               ) -> dict[str, Any]:
    """Batches of ``batch`` (default ``BATCH``), each proposed while the previous one is
    evaluated (so ``batch`` points are pending at every proposal after the first).

    Returns:
        ``hypervolume``: the value after each evaluation (index i = i+1 evaluations), on
        the problem's noise-free score when it has one (``noiseless``), then also
        ``observed_hypervolume`` on the observed scores; ``invalid`` and ``repeated``
        counts; ``propose_seconds``: time of each call.
    """
    reference = ObjectivePoint(*problem.reference)
    noiseless = getattr(problem, "noiseless", None)
    truth: list[ObjectivePoint] = []
    observed: list[float] = []
    completed: list[Observation] = []
    failed: list[Point] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    curve: list[float] = []
    seconds: list[float] = []
    repeated = 0

    def propose(n: int, pending: Sequence[Point]) -> list[Point]:
        start = time.perf_counter()
        points = method.propose(n, completed, pending, failed)
        seconds.append(time.perf_counter() - start)
        return points[:n]

    current: list[Point] = []
    while len(curve) < evaluations:
        if not current:  # the first batch, or the method gave nothing while points were pending
            current = propose(min(batch, evaluations - len(curve)), [])
            if not current:
                raise RuntimeError(f"{method.name} proposed nothing with nothing pending")
        remaining = evaluations - len(curve) - len(current)
        following = propose(min(batch, remaining), current) if remaining > 0 else []
        for point in current:
            key = point_key(point)
            repeated += key in seen
            seen.add(key)
            observation = problem.observe(point)
            if observation is None:
                failed.append(point)
            else:
                completed.append(observation)
                if noiseless is not None:
                    truth.append(ObjectivePoint(noiseless(point), observation.param_share))
            measured = hypervolume([ObjectivePoint(o.score, o.param_share) for o in completed],
                                   reference)
            if noiseless is None:
                curve.append(measured)
            else:
                curve.append(hypervolume(truth, reference))
                observed.append(measured)
        current = following
    result: dict[str, Any] = {"hypervolume": curve, "invalid": len(failed),
                              "repeated": repeated, "propose_seconds": seconds}
    if noiseless is not None:
        result["observed_hypervolume"] = observed
    return result


def run_one(task: tuple[str, str, int, int, str, int]) -> dict[str, Any]:
    """One (problem, method, seed) search; runs in a worker process."""
    problem_name, method_name, seed, evaluations, table, batch = task
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    quiet_libraries()
    problem = make_problem(problem_name, Path(table), seed)
    method = make_method(method_name, problem, seed)
    start = time.perf_counter()
    result = run_search(problem, method, evaluations, batch)
    if batch != BATCH:
        result["batch"] = batch
    result.update(problem=problem_name, method=method_name, seed=seed, version=VERSIONS.get(method_name, 1),
                  evaluations=evaluations, seconds=time.perf_counter() - start,
                  reference=list(problem.reference))
    return result

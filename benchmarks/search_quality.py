"""Search quality: hypervolume against evaluations for five optimisers on six problems.

Methods, each behind the same ``propose(n, completed, pending, failed)`` call:
  * ``random``: the service's ``random`` optimiser (a scrambled Sobol sequence).
  * ``saasbo``: the service's default (``SaasboOptimizer``, default settings, 10 Sobol
    points first).
  * ``ax-default``: Ax 1.3.1 ``Client`` with its default generation strategy
    (``method="fast"``: centre + Sobol, then Ax's standard GP model with qLogNEHVI), with
    the same 10-point initialisation budget; each binary or ordinal parameter an integer
    range over its choice indices, each categorical an unordered choice; the part of the
    validity rule that is linear in those integers as parameter constraints.
  * ``optuna-nsga2``: Optuna 5.0 ``NSGAIISampler`` (population 20 so that 100 evaluations
    are five generations; Optuna's default of 50 would make 50 of them random).
  * ``optuna-tpe``: Optuna 5.0 multi-objective ``TPESampler`` (10 random start-up trials,
    ``constant_liar=True`` so pending trials are accounted for).
  Optuna sees each binary or ordinal parameter as an ordered integer (the index of its
  value) and each categorical as ``suggest_categorical``.
  Ax and Optuna do not know the space's canonical form (a parameter without effect at a
  point holds its first value) or the rules that are not linear (unified: a function at
  one of the two positions; design_space: a strategy in every tuned group, a budget large
  enough for a module). Their points are put in canonical form with ``space.canonical``;
  a point still invalid is a failed evaluation. ``random`` and ``saasbo`` only propose
  valid canonical points.

Problems on the AutoPEFT encoding (a 0/1 flag per layer, then serial adapter size,
parallel adapter size and prefix length as ordered choices):
  * ``synthetic-15`` / ``synthetic-27``: a BERT-base-wide backbone with 12 / 24 layers and
    the fake worker's score (only the top third of the layers, the serial adapter and the
    prefix matter: 6 of 15 and 10 of 27 dimensions relevant), exact parameter share.
  * ``surrogate``: a regression model fitted on the real-evaluation table (``--table``,
    built by ``benchmarks/real_table.py``) predicts the held-out score; the parameter share
    is exact. Its cross-validated fit error is printed and stored.

Problems on the other space families (``synthetic_problem.FamilyProblem``), on MiniLM-L6
dimensions: ``synthetic-unified`` (He et al.'s unified space, 14 parameters),
``synthetic-design`` (Chen et al.'s design space, 24 parameters) and ``synthetic-lora``
(one rank per layer, target flags, alpha/r: 13 parameters). One noisy task model for all:
only modules in the top two layers help (and of LoRA's projections only query, value and
FFN output), the score peaks at a moderate capacity and falls beyond it, the scale of a
parallel adapter and LoRA's alpha/r matter, Gaussian noise of sd 0.01 on every evaluation
(seeded by run seed, point and repetition). The share is the exact deployed share. The
hypervolume is computed on the noise-free scores of the evaluated points (the quality of
what a method found; ``observed_hypervolume``: on the noisy scores it saw), reference
point score 0.5, share 1 %.

Protocol, as the service runs with four workers: batches of 4; the next batch is proposed
while the previous one is still being evaluated, so every proposal after the first sees
4 pending points. A point an optimiser proposes that is invalid (no layer or no module
switched on) is a failed evaluation; a repeated point is evaluated again; both count.
Hypervolume (score up, share down) against one fixed reference point per problem, after
every evaluation. Summary: median and interquartile range over seeds at 20, 50 and 100
evaluations, and the evaluations each method's median curve needs to reach the median
hypervolume of ``random`` at 100.

Reproduce (results are appended to ``--output`` and finished runs are skipped, so an
interrupted run resumes):
    .venv/bin/python benchmarks/search_quality.py --problems synthetic-15 synthetic-27 \
        --seeds 0 1 2 3 4 --jobs 2
    .venv/bin/python benchmarks/search_quality.py --problems surrogate \
        --table benchmarks/results/real_table_mrpc.csv --seeds 0 1 2 3 4 --jobs 2
    .venv/bin/python benchmarks/search_quality.py --report   # tables + plot from the JSON
The family problems go to their own file and plot (``--output`` and ``--plot`` default to
``benchmarks/results/search_quality_spaces.json`` and ``.png`` beside it
when every problem named is a family problem):
    .venv/bin/python benchmarks/search_quality.py --problems synthetic-unified \
        synthetic-design synthetic-lora --evaluations 50 --seeds 0 1 2 3 4 --jobs 1
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from synthetic_problem import (
    FAMILY_PROBLEMS,
    FamilyProblem,
    Point,
    ServiceOptimizer,
    SyntheticProblem,
    quiet_libraries,
)

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.domain.search_space import AutoPeftSpace
from autopeft_service.domain.spaces import ParameterKind, SearchSpaceBase
from autopeft_service.optimizers.base import Observation, point_key
from autopeft_service.optimizers.saasbo import Encoding, SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

RESULTS = Path(__file__).parent / "results"
DEFAULT_OUTPUT = RESULTS / "search_quality.json"
DEFAULT_PLOT = Path("docs") / "search_quality.png"
#: Output and plot of runs on the family problems only.
SPACES_OUTPUT = RESULTS / "search_quality_spaces.json"
SPACES_PLOT = RESULTS / "search_quality_spaces.png"
DEFAULT_TABLE = RESULTS / "real_table_mrpc.csv"
BATCH = 4
INITIAL = 10
CHECKPOINTS = (20, 50, 100)
METHOD_NAMES = ("random", "saasbo", "ax-default", "optuna-nsga2", "optuna-tpe")
PROBLEM_NAMES = ("surrogate", "synthetic-15", "synthetic-27", *FAMILY_PROBLEMS)
#: Bumped when a method's formulation changes; runs of an older version are re-run.
VERSIONS = {"ax-default": 2}


# ----------------------------------------------------------------------------- problems


class Problem(Protocol):
    """A problem may also have ``noiseless(point) -> float``: then the hypervolume is
    computed on it (the true score of the evaluated points), not on the observed score."""

    name: str
    space: SearchSpaceBase
    reference: tuple[float, float]

    def observe(self, point: Point) -> Observation | None:
        """The result of evaluating ``point``; None when it is invalid (a failed trial)."""
        ...

    def share(self, point: Point) -> float:
        """The exact share objective of a valid point (what ``observe`` reports)."""
        ...


def minilm_backbone() -> BackboneDims:
    """MiniLM-L6 (all-MiniLM-L6-v2): 6 layers, hidden 384."""
    return BackboneDims.from_hf_config({
        "model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
        "num_hidden_layers": 6, "num_attention_heads": 12, "vocab_size": 30522,
        "max_position_embeddings": 512})


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a real-evaluation table CSV (columns: the space's parameters, ``score``,
    ``dev_score``, ``param_share``, ...), completed trials only."""
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("state", "completed") == "completed"]


class SurrogateProblem:
    """A regression model of the real table's held-out score; exact parameter share.

    The model is sklearn's ``ExtraTreesRegressor`` (500 trees, min 3 samples per leaf) on
    the scaled choice indices: piecewise-constant, so it never extrapolates beyond the scores
    it saw, and it needs no tuning. ``fit_error`` is its 5-fold cross-validated error.
    """

    def __init__(self, table: Path) -> None:
        from sklearn.ensemble import ExtraTreesRegressor

        self.name = "surrogate"
        self.dims = minilm_backbone()
        self.space = AutoPeftSpace.for_backbone(self.dims)
        self.encoding = Encoding(self.space)  # the scaled choice indices SAAS-BO models
        rows = read_table(table)
        if len(rows) < 20:
            raise SystemExit(f"{table}: {len(rows)} completed rows; the surrogate needs >= 20")
        points = [{p.name: int(row[p.name]) for p in self.space.parameters()} for row in rows]
        self.x = self._inputs(points)
        self.y = np.array([float(row["score"]) for row in rows])
        self.model_factory: Callable[[], Any] = lambda: ExtraTreesRegressor(
            n_estimators=500, min_samples_leaf=3, random_state=0, n_jobs=1)
        self.model = self.model_factory().fit(self.x, self.y)
        self.fit_error = self._cross_validate()
        # Floor: the table's 10th-percentile score, so the front above typical trials counts.
        self.reference = (float(np.quantile(self.y, 0.1)), 10.0)
        self.rows = len(rows)

    def _inputs(self, points: Sequence[Point]) -> np.ndarray:
        return self.encoding.to_unit(self.encoding.to_index(points)).numpy()

    def _cross_validate(self) -> dict[str, float]:
        from scipy.stats import spearmanr
        from sklearn.model_selection import KFold

        predicted = np.zeros_like(self.y)
        for train, test in KFold(5, shuffle=True, random_state=0).split(self.x):
            predicted[test] = self.model_factory().fit(self.x[train], self.y[train]).predict(
                self.x[test])
        residual = predicted - self.y
        total = float(np.sum((self.y - self.y.mean()) ** 2))
        return {"rmse": float(np.sqrt(np.mean(residual ** 2))),
                "mae": float(np.mean(np.abs(residual))),
                "r2": 1 - float(np.sum(residual ** 2)) / total if total > 0 else float("nan"),
                "spearman": float(spearmanr(predicted, self.y).statistic),
                "score_std": float(self.y.std())}

    def observe(self, point: Point) -> Observation | None:
        if not self.space.is_valid(point):
            return None
        config = self.space.decode(point)
        score = float(self.model.predict(self._inputs([point]))[0])
        return Observation(params=dict(point), score=score,
                           param_share=count_parameters(config, self.dims).trainable_percent)

    def share(self, point: Point) -> float:
        return count_parameters(self.space.decode(point), self.dims).trainable_percent


def make_problem(name: str, table: Path, seed: int = 0) -> Problem:
    """The problem ``name``; ``seed`` is the run's (it seeds the family problems' noise)."""
    if name == "surrogate":
        return SurrogateProblem(table)
    if name in FAMILY_PROBLEMS:
        return FamilyProblem(FAMILY_PROBLEMS[name], seed=seed)
    return SyntheticProblem(int(name.split("-")[1]))


# ----------------------------------------------------------------------------- methods


class Method(Protocol):
    name: str

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        ...


def index_parameters(space: SearchSpaceBase) -> tuple[list[str], list[str]]:
    """(binary and ordinal names, categorical names) of a space."""
    ordered = [p.name for p in space.parameters() if p.kind is not ParameterKind.CATEGORICAL]
    return ordered, [p.name for p in space.parameters() if p.kind is ParameterKind.CATEGORICAL]


def linear_constraints(space: SearchSpaceBase) -> list[str]:
    """The part of a space's validity rule that is linear in the choice indices of its
    binary and ordinal parameters, as Ax parameter constraints.

    * ``autopeft``: a layer on; a module size above 0 (the whole rule).
    * ``lora``: a target on; a rank above 0 (the whole rule).
    * ``unified``: a layer on (not: a function at one position, a categorical).
    * ``design_space``: a group tuned (not: only groups below ``groups`` count, a strategy
      in each tuned group, a budget large enough for a module).
    """
    names = [p.name for p in space.parameters()]

    def at_least_one(chosen: Sequence[str]) -> str:
        return " + ".join(chosen) + " >= 1"

    if space.kind == "autopeft":
        flags = [p.name for p in space.parameters() if list(p.values) == [0, 1]]
        return [at_least_one(flags), at_least_one([n for n in names if n not in flags])]
    if space.kind == "lora":
        return [at_least_one([n for n in names if n.startswith("target_")]),
                at_least_one([n for n in names if n == "rank" or n.startswith("rank_")])]
    if space.kind == "unified":
        return [at_least_one([n for n in names if n.startswith("layer_")])]
    if space.kind == "design_space":
        return [at_least_one([n for n in names if n.endswith("_tuned")])]
    return []


class _Pending:
    """What an ask/tell adapter has proposed and not yet been told about, per evaluated
    point (first in, first out), and how much of the loop's history it has read."""

    def __init__(self) -> None:
        self.running: dict[tuple[tuple[str, Any], ...], list[Any]] = {}
        self.completed_read = 0
        self.failed_read = 0

    def add(self, point: Point, handle: Any) -> None:
        self.running.setdefault(point_key(point), []).append(handle)

    def take(self, point: Point) -> Any | None:
        handles = self.running.get(point_key(point))
        return handles.pop(0) if handles else None

    def news(self, completed: Sequence[Observation],
             failed: Sequence[Point]) -> tuple[list[Observation], list[Point]]:
        """The completed and failed entries added since the last call (the loop's lists
        only grow)."""
        new_completed = list(completed[self.completed_read:])
        new_failed = list(failed[self.failed_read:])
        self.completed_read, self.failed_read = len(completed), len(failed)
        return new_completed, new_failed


class AxDefault:
    """Ax's ``Client`` with its default ("fast") generation strategy and a 10-trial start.

    Formulated as a competent Ax user would: each binary or ordinal parameter an integer
    range over its choice indices (ordered, so Ax's GP sees distances), each categorical an
    unordered ``ChoiceParameter``, and the part of the space's validity rule that is linear
    in the integers as parameter constraints (``linear_constraints``; on the AutoPEFT space
    that is the whole rule, so Ax never proposes an invalid configuration there). (Ordered
    *choice* parameters cannot carry constraints: in a first run with them, 84 of Ax's 100
    evaluations on synthetic-15 were the invalid all-zero point, which a failure does not
    teach the model to avoid.)

    Ax's point is put in the space's canonical form (``space.canonical``); a point that is
    still invalid (a rule Ax cannot express) is returned as it is and the loop counts it as
    a failed evaluation, which is reported to Ax as a failed trial.

    Stateful like a user's Ax loop: each call attaches what changed since the last one
    (results of its earlier proposals, failures) and asks for ``n`` more; pending points are
    Ax trials still running.
    """

    name = "ax-default"

    def __init__(self, problem: Problem, seed: int, initial: int = INITIAL) -> None:
        from ax.api.client import Client
        from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig

        quiet_libraries()
        self.space = problem.space
        self.parameters = problem.space.parameters()
        self.client = Client(random_seed=seed)
        self.client.configure_experiment(
            parameters=[
                ChoiceParameterConfig(name=p.name, values=[str(v) for v in p.values],
                                      parameter_type="str", is_ordered=False)
                if p.kind is ParameterKind.CATEGORICAL else
                RangeParameterConfig(name=p.name, bounds=(0, len(p.values) - 1),
                                     parameter_type="int")
                for p in self.parameters],
            parameter_constraints=linear_constraints(problem.space))
        score, share = problem.reference
        self.client.configure_optimization(
            objective="score, -param_share",
            outcome_constraints=[f"score >= {score}", f"param_share <= {share}"])
        self.client.configure_generation_strategy(
            initialization_budget=initial, initialization_random_seed=seed)
        quiet_libraries()
        self.pending = _Pending()

    def to_point(self, parameters: dict[str, Any]) -> Point:
        """The space point of Ax's parameters, in canonical form (maybe invalid)."""
        point: dict[str, Any] = {}
        for p in self.parameters:
            value = parameters[p.name]
            if p.kind is ParameterKind.CATEGORICAL:
                point[p.name] = next(v for v in p.values if str(v) == value)
            else:
                point[p.name] = p.values[round(value)]
        return self.space.canonical(point)

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        new_completed, new_failed = self.pending.news(completed, failed)
        for observation in new_completed:
            index = self.pending.take(observation.params)
            if index is not None:
                self.client.complete_trial(index, raw_data={
                    "score": observation.score, "param_share": observation.param_share})
        for point in new_failed:
            index = self.pending.take(point)
            if index is not None:
                self.client.mark_trial_failed(index)
        out = []
        for index, parameters in self.client.get_next_trials(max_trials=n).items():
            point = self.to_point(parameters)
            self.pending.add(point, index)
            out.append(point)
        return out


class OptunaMethod:
    """An Optuna sampler in an ask/tell loop; each binary or ordinal parameter an ordered
    integer index, each categorical ``suggest_categorical``.

    The sampled point is put in the space's canonical form; a point still invalid is a
    failed evaluation (told to Optuna as a failed trial). Optuna keeps the values it
    sampled for a trial, so a parameter without effect at that point still has one there.
    """

    def __init__(self, name: str, problem: Problem, sampler: Any) -> None:
        import optuna

        quiet_libraries()
        self.name = name
        self.space = problem.space
        self.parameters = problem.space.parameters()
        self.study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        self.pending = _Pending()

    def sample(self, trial: Any) -> Point:
        point: dict[str, Any] = {}
        for p in self.parameters:
            if p.kind is ParameterKind.CATEGORICAL:
                point[p.name] = trial.suggest_categorical(p.name, list(p.values))
            else:
                point[p.name] = p.values[trial.suggest_int(p.name, 0, len(p.values) - 1)]
        return self.space.canonical(point)

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        import optuna

        new_completed, new_failed = self.pending.news(completed, failed)
        for observation in new_completed:
            trial = self.pending.take(observation.params)
            if trial is not None:
                self.study.tell(trial, [observation.score, observation.param_share])
        for point in new_failed:
            trial = self.pending.take(point)
            if trial is not None:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out = []
        for _ in range(n):
            trial = self.study.ask()
            point = self.sample(trial)
            self.pending.add(point, trial)
            out.append(point)
        return out


def make_method(name: str, problem: Problem, seed: int,
                settings: SaasboSettings | None = None, initial: int = INITIAL) -> Method:
    """Method ``name`` on ``problem``; ``settings``: saasbo's (default: its defaults);
    ``initial``: the quasi-random start of saasbo, Ax and TPE (tests make it shorter)."""
    if name == "random":
        return ServiceOptimizer(name, SobolOptimizer(problem.space, seed=seed))
    if name == "saasbo":
        # the exact share function, as the server passes it (optimizers/factory.py)
        return ServiceOptimizer(name, SaasboOptimizer(
            problem.space, seed=seed, initial_trials=initial, reference_point=problem.reference,
            settings=settings or SaasboSettings(), share=problem.share))
    if name == "ax-default":
        return AxDefault(problem, seed, initial)
    import optuna

    if name == "optuna-nsga2":
        return OptunaMethod(name, problem, optuna.samplers.NSGAIISampler(
            population_size=20, seed=seed))
    if name == "optuna-tpe":
        return OptunaMethod(name, problem, optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=initial, constant_liar=True))
    raise ValueError(f"unknown method {name!r}")


# ----------------------------------------------------------------------------- the loop


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


# ----------------------------------------------------------------------------- summary


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q1, median, q3 = np.quantile(np.asarray(values), [0.25, 0.5, 0.75])
    return float(q1), float(median), float(q3)


def median_curve(runs: Sequence[dict[str, Any]]) -> np.ndarray:
    length = min(len(r["hypervolume"]) for r in runs)
    return np.median(np.array([r["hypervolume"][:length] for r in runs]), axis=0)


def evaluations_to_reach(curve: np.ndarray, target: float) -> int | None:
    """First evaluation count at which ``curve`` reaches ``target`` (None: never)."""
    hits = np.nonzero(curve >= target - 1e-12)[0]
    return int(hits[0]) + 1 if len(hits) else None


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (problem, method): quartiles at the checkpoints, and evaluations needed
    to reach the median hypervolume of ``random`` at its last evaluation."""
    rows = []
    problems = sorted({r["problem"] for r in runs})
    for problem in problems:
        by_method = {m: [r for r in runs if r["problem"] == problem and r["method"] == m]
                     for m in METHOD_NAMES}
        random_runs = by_method.get("random") or []
        random_curve = median_curve(random_runs) if random_runs else None
        target = float(random_curve[-1]) if random_curve is not None else None
        for method, group in by_method.items():
            if not group:
                continue
            row: dict[str, Any] = {"problem": problem, "method": method, "seeds": len(group),
                                   "invalid": sum(r["invalid"] for r in group),
                                   "repeated": sum(r["repeated"] for r in group),
                                   "seconds_per_run": statistics.median(r["seconds"] for r in group)}
            for k in CHECKPOINTS:
                values = [r["hypervolume"][k - 1] for r in group if len(r["hypervolume"]) >= k]
                if len(values) == len(group):
                    row[f"hv{k}"] = quartiles(values)
            if target is not None:
                row["random_target"] = target
                row["random_evaluations"] = len(random_curve)
                row["evals_to_random_final"] = evaluations_to_reach(median_curve(group), target)
            rows.append(row)
    return rows


def print_summary(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the summary (also returned): a column per checkpoint that some
    row reached."""
    checkpoints = [k for k in CHECKPOINTS if any(f"hv{k}" in row for row in rows)]
    finals = {row["random_evaluations"] for row in rows if "random_evaluations" in row}
    final = f"HV@{finals.pop()}" if len(finals) == 1 else "final HV"
    lines = ["| problem | method | seeds | "
             + "".join(f"HV@{k} median [IQR] | " for k in checkpoints)
             + f"evals to random's {final} | invalid / repeated | s per run |",
             "|---|---|---:|" + "---:|" * len(checkpoints) + "---:|---:|---:|"]

    def cell(row: dict[str, Any], k: int) -> str:
        if f"hv{k}" not in row:
            return "–"
        q1, median, q3 = row[f"hv{k}"]
        return f"{median:.4f} [{q1:.4f}, {q3:.4f}]"

    for row in rows:
        reach = row.get("evals_to_random_final")
        lines.append(
            f"| {row['problem']} | {row['method']} | {row['seeds']} | "
            + "".join(f"{cell(row, k)} | " for k in checkpoints)
            + f"{reach if reach is not None else '> max'} | "
            f"{row['invalid']} / {row['repeated']} | {row['seconds_per_run']:.0f} |")
    text = "\n".join(lines)
    print(text)
    return text


def plot(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """Median hypervolume against evaluations (band: interquartile range), one panel per
    problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(METHOD_NAMES, ("tab:gray", "tab:orange", "tab:blue", "tab:green", "tab:red"),
                       strict=True))
    problems = [p for p in PROBLEM_NAMES if any(r["problem"] == p for r in runs)]
    figure, axes = plt.subplots(1, len(problems), figsize=(5.2 * len(problems), 4.2),
                                squeeze=False)
    for axis, problem in zip(axes[0], problems, strict=True):
        floor = float("inf")
        for method in METHOD_NAMES:
            group = [r for r in runs if r["problem"] == problem and r["method"] == method]
            if not group:
                continue
            length = min(len(r["hypervolume"]) for r in group)
            values = np.array([r["hypervolume"][:length] for r in group])
            x = np.arange(1, length + 1)
            q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
            axis.plot(x, median, label=f"{method} ({len(group)} seeds)", color=colours[method],
                      linewidth=2.2 if method == "saasbo" else 1.4)
            axis.fill_between(x, q1, q3, alpha=0.15, color=colours[method])
            floor = min(floor, float(q1[min(9, length - 1)]))
        # the first few evaluations span most of the range: start the axis at evaluation 10
        axis.set_ylim(bottom=floor - 0.05 * abs(floor))
        axis.set_title(problem)
        axis.set_xlabel("evaluations")
        axis.set_ylabel("hypervolume (median, IQR band)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- main


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": [], "surrogate": None, "commands": []}


def save_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(results, indent=1))
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", choices=PROBLEM_NAMES,
                        default=["synthetic-15", "synthetic-27"])
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="points proposed at a time (and pending at each proposal); "
                        "above 16 saasbo runs in fleet mode. Use its own --output")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help="real-evaluation table for the surrogate problem")
    parser.add_argument("--jobs", type=int, default=1, help="searches run in parallel")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"results JSON (default {DEFAULT_OUTPUT}, or {SPACES_OUTPUT} when "
                        "every problem is a family problem)")
    parser.add_argument("--plot", type=Path, default=None,
                        help=f"plot (default {DEFAULT_PLOT}, or {SPACES_PLOT} when every "
                        "problem is a family problem)")
    parser.add_argument("--report", action="store_true",
                        help="only print the summary and draw the plot from --output")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="with --report: add the runs of these result files (searches run "
                        "in parallel into separate files) to --output first")
    args = parser.parse_args(argv)
    families_only = set(args.problems) <= set(FAMILY_PROBLEMS)
    if args.output is None:
        args.output = SPACES_OUTPUT if families_only else DEFAULT_OUTPUT
    if args.plot is None:
        args.plot = SPACES_PLOT if families_only else DEFAULT_PLOT
    results = load_results(args.output)
    for other in args.merge:
        extra = load_results(other)
        keys = {(r["problem"], r["method"], r["seed"], r["evaluations"]) for r in results["runs"]}
        results["runs"] += [r for r in extra["runs"]
                            if (r["problem"], r["method"], r["seed"], r["evaluations"]) not in keys]
        results["commands"] += [c for c in extra["commands"] if c not in results["commands"]]
    if not args.report:
        command = " ".join([".venv/bin/python", "benchmarks/search_quality.py",
                            *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
        if command not in results["commands"]:
            results["commands"].append(command)
        results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "python": platform.python_version()}
        if "surrogate" in args.problems:
            surrogate = SurrogateProblem(args.table)
            results["surrogate"] = {"table": str(args.table), "rows": surrogate.rows,
                                    "reference": list(surrogate.reference),
                                    "model": "ExtraTreesRegressor(500, min_samples_leaf=3)",
                                    "cross_validated_fit_error": surrogate.fit_error}
            print(f"surrogate: {surrogate.rows} rows, 5-fold CV {surrogate.fit_error}")
        results["runs"] = [r for r in results["runs"]
                           if r.get("version", 1) == VERSIONS.get(r["method"], 1)]
        done = {(r["problem"], r["method"], r["seed"], r["evaluations"]) for r in results["runs"]}
        tasks = [(p, m, s, args.evaluations, str(args.table), args.batch) for s in args.seeds
                 for p in args.problems for m in args.methods
                 if (p, m, s, args.evaluations) not in done]
        print(f"{len(tasks)} searches to run ({len(done)} already in {args.output})", flush=True)
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.jobs, maxtasksperchild=1) as pool:
            for result in pool.imap_unordered(run_one, tasks):
                results["runs"].append(result)
                save_results(args.output, results)
                curve = result["hypervolume"]
                print(f"  {result['problem']:13} {result['method']:13} seed {result['seed']}: "
                      + " ".join(f"HV@{k} {curve[k - 1]:.4f}" for k in CHECKPOINTS
                                 if len(curve) >= k)
                      + f"  invalid {result['invalid']} repeated {result['repeated']}"
                      f"  {result['seconds']:.0f} s", flush=True)
    rows = summarise(results["runs"])
    results["summary"] = rows
    results["summary_markdown"] = print_summary(rows)
    save_results(args.output, results)
    if results["runs"]:
        plot(results["runs"], args.plot)


if __name__ == "__main__":
    main()

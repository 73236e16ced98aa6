"""Search quality: hypervolume against evaluations for five optimisers on three problems.

Methods, each behind the same ``propose(n, completed, pending, failed)`` call:
  * ``random``: the service's ``random`` optimiser (a scrambled Sobol sequence).
  * ``saasbo``: the service's default (``SaasboOptimizer``, default settings, 10 Sobol
    points first).
  * ``ax-default``: Ax 1.3.1 ``Client`` with its default generation strategy
    (``method="fast"``: centre + Sobol, then Ax's standard GP model with qLogNEHVI), with
    the same 10-point initialisation budget; each parameter an integer range over its
    choice indices, the validity rule as two linear parameter constraints.
  * ``optuna-nsga2``: Optuna 5.0 ``NSGAIISampler`` (population 20 so that 100 evaluations
    are five generations; Optuna's default of 50 would make 50 of them random).
  * ``optuna-tpe``: Optuna 5.0 multi-objective ``TPESampler`` (10 random start-up trials,
    ``constant_liar=True`` so pending trials are accounted for).
  Optuna sees each parameter as an ordered integer (the index of its value).

Problems (all on the AutoPEFT encoding: a 0/1 flag per layer, then serial adapter size,
parallel adapter size and prefix length as ordered choices):
  * ``synthetic-15`` / ``synthetic-27``: a BERT-base-wide backbone with 12 / 24 layers and
    the fake worker's score (only the top third of the layers, the serial adapter and the
    prefix matter: 6 of 15 and 10 of 27 dimensions relevant), exact parameter share.
  * ``surrogate``: a regression model fitted on the real-evaluation table (``--table``,
    built by ``benchmarks/real_table.py``) predicts the held-out score; the parameter share
    is exact. Its cross-validated fit error is printed and stored.

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
from synthetic_problem import Point, ServiceOptimizer, SyntheticProblem, quiet_libraries

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.domain.search_space import AutoPeftSpace
from autopeft_service.optimizers.base import Observation, point_key
from autopeft_service.optimizers.saasbo import Encoding, SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

RESULTS = Path(__file__).parent / "results"
DEFAULT_OUTPUT = RESULTS / "search_quality.json"
DEFAULT_TABLE = RESULTS / "real_table_mrpc.csv"
BATCH = 4
INITIAL = 10
CHECKPOINTS = (20, 50, 100)
METHOD_NAMES = ("random", "saasbo", "ax-default", "optuna-nsga2", "optuna-tpe")
PROBLEM_NAMES = ("surrogate", "synthetic-15", "synthetic-27")
#: Bumped when a method's formulation changes; runs of an older version are re-run.
VERSIONS = {"ax-default": 2}


# ----------------------------------------------------------------------------- problems


class Problem(Protocol):
    name: str
    space: AutoPeftSpace
    reference: tuple[float, float]

    def observe(self, point: Point) -> Observation | None:
        """The result of evaluating ``point``; None when it is invalid (a failed trial)."""
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


def make_problem(name: str, table: Path) -> Problem:
    if name == "surrogate":
        return SurrogateProblem(table)
    return SyntheticProblem(int(name.split("-")[1]))


# ----------------------------------------------------------------------------- methods


class Method(Protocol):
    name: str

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        ...


class AxDefault:
    """Ax's ``Client`` with its default ("fast") generation strategy and a 10-trial start.

    Formulated as a competent Ax user would: each parameter an integer range over its choice
    indices (ordered, so Ax's GP sees distances), with the space's validity rule as two
    linear parameter constraints (at least one layer flag on; at least one module size
    index above 0), so Ax never proposes an invalid configuration. (Ordered *choice*
    parameters cannot carry constraints: in a first run with them, 84 of Ax's 100
    evaluations on synthetic-15 were the invalid all-zero point, which a failure does not
    teach the model to avoid.)

    Stateful like a user's Ax loop: each call attaches what changed since the last one
    (results of its earlier proposals, failures) and asks for ``n`` more; pending points are
    Ax trials still running.
    """

    name = "ax-default"

    def __init__(self, problem: Problem, seed: int) -> None:
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig

        quiet_libraries()
        self.parameters = problem.space.parameters()
        self.client = Client(random_seed=seed)
        flags = [p.name for p in self.parameters if list(p.values) == [0, 1]]
        sizes = [p.name for p in self.parameters if p.name not in flags]
        self.client.configure_experiment(
            parameters=[RangeParameterConfig(name=p.name, bounds=(0, len(p.values) - 1),
                                             parameter_type="int") for p in self.parameters],
            parameter_constraints=[" + ".join(flags) + " >= 1", " + ".join(sizes) + " >= 1"])
        score, share = problem.reference
        self.client.configure_optimization(
            objective="score, -param_share",
            outcome_constraints=[f"score >= {score}", f"param_share <= {share}"])
        self.client.configure_generation_strategy(
            initialization_budget=INITIAL, initialization_random_seed=seed)
        quiet_libraries()
        self.running: dict[tuple[tuple[str, int], ...], list[int]] = {}

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        for observation in completed:
            for index in self.running.pop(point_key(observation.params), []):
                self.client.complete_trial(index, raw_data={
                    "score": observation.score, "param_share": observation.param_share})
        for point in failed:
            for index in self.running.pop(point_key(point), []):
                self.client.mark_trial_failed(index)
        out = []
        for index, parameters in self.client.get_next_trials(max_trials=n).items():
            point = {p.name: int(p.values[round(parameters[p.name])]) for p in self.parameters}
            self.running.setdefault(point_key(point), []).append(index)
            out.append(point)
        return out


class OptunaMethod:
    """An Optuna sampler in an ask/tell loop; each parameter an ordered integer index."""

    def __init__(self, name: str, problem: Problem, sampler: Any) -> None:
        import optuna

        quiet_libraries()
        self.name = name
        self.parameters = problem.space.parameters()
        self.study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        self.running: dict[tuple[tuple[str, int], ...], list[Any]] = {}

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        import optuna

        for observation in completed:
            for trial in self.running.pop(point_key(observation.params), []):
                self.study.tell(trial, [observation.score, observation.param_share])
        for point in failed:
            for trial in self.running.pop(point_key(point), []):
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out = []
        for _ in range(n):
            trial = self.study.ask()
            point = {p.name: int(p.values[trial.suggest_int(p.name, 0, len(p.values) - 1)])
                     for p in self.parameters}
            self.running.setdefault(point_key(point), []).append(trial)
            out.append(point)
        return out


def make_method(name: str, problem: Problem, seed: int) -> Method:
    if name == "random":
        return ServiceOptimizer(name, SobolOptimizer(problem.space, seed=seed))
    if name == "saasbo":
        return ServiceOptimizer(name, SaasboOptimizer(
            problem.space, seed=seed, initial_trials=INITIAL, reference_point=problem.reference,
            settings=SaasboSettings()))
    if name == "ax-default":
        return AxDefault(problem, seed)
    import optuna

    if name == "optuna-nsga2":
        return OptunaMethod(name, problem, optuna.samplers.NSGAIISampler(
            population_size=20, seed=seed))
    if name == "optuna-tpe":
        return OptunaMethod(name, problem, optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=INITIAL, constant_liar=True))
    raise ValueError(f"unknown method {name!r}")


# ----------------------------------------------------------------------------- the loop


def run_search(problem: Problem, method: Method, evaluations: int) -> dict[str, Any]:
    """Batches of ``BATCH``, each proposed while the previous one is evaluated.

    Returns:
        ``hypervolume``: the value after each evaluation (index i = i+1 evaluations);
        ``invalid`` and ``repeated`` counts; ``propose_seconds``: time of each call.
    """
    reference = ObjectivePoint(*problem.reference)
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
            current = propose(min(BATCH, evaluations - len(curve)), [])
            if not current:
                raise RuntimeError(f"{method.name} proposed nothing with nothing pending")
        remaining = evaluations - len(curve) - len(current)
        following = propose(min(BATCH, remaining), current) if remaining > 0 else []
        for point in current:
            key = point_key(point)
            repeated += key in seen
            seen.add(key)
            observation = problem.observe(point)
            if observation is None:
                failed.append(point)
            else:
                completed.append(observation)
            curve.append(hypervolume([ObjectivePoint(o.score, o.param_share) for o in completed],
                                     reference))
        current = following
    return {"hypervolume": curve, "invalid": len(failed), "repeated": repeated,
            "propose_seconds": seconds}


def run_one(task: tuple[str, str, int, int, str]) -> dict[str, Any]:
    """One (problem, method, seed) search; runs in a worker process."""
    problem_name, method_name, seed, evaluations, table = task
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    quiet_libraries()
    problem = make_problem(problem_name, Path(table))
    method = make_method(method_name, problem, seed)
    start = time.perf_counter()
    result = run_search(problem, method, evaluations)
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
        target = float(median_curve(random_runs)[-1]) if random_runs else None
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
                row["evals_to_random_final"] = evaluations_to_reach(median_curve(group), target)
            rows.append(row)
    return rows


def print_summary(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the summary (also returned)."""
    lines = [("| problem | method | seeds | HV@20 median [IQR] | HV@50 median [IQR] | "
              "HV@100 median [IQR] | evals to random's HV@100 | invalid / repeated | s per run |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(row: dict[str, Any], k: int) -> str:
        if f"hv{k}" not in row:
            return "–"
        q1, median, q3 = row[f"hv{k}"]
        return f"{median:.4f} [{q1:.4f}, {q3:.4f}]"

    for row in rows:
        reach = row.get("evals_to_random_final")
        lines.append(
            f"| {row['problem']} | {row['method']} | {row['seeds']} | {cell(row, 20)} | "
            f"{cell(row, 50)} | {cell(row, 100)} | {reach if reach is not None else '> max'} | "
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
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help="real-evaluation table for the surrogate problem")
    parser.add_argument("--jobs", type=int, default=1, help="searches run in parallel")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--plot", type=Path, default=Path("docs") / "search_quality.png")
    parser.add_argument("--report", action="store_true",
                        help="only print the summary and draw the plot from --output")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="with --report: add the runs of these result files (searches run "
                        "in parallel into separate files) to --output first")
    args = parser.parse_args(argv)
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
        tasks = [(p, m, s, args.evaluations, str(args.table)) for s in args.seeds
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

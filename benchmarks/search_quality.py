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

The script's parts, beside it: ``search_quality_problems.py`` (the problems),
``search_quality_methods.py`` (the methods), ``search_quality_runner.py`` (one search, one
seeded run) and ``search_quality_report.py`` (summary, table, plot, results file).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from search_quality_methods import (
    BATCH,
    METHOD_NAMES,
    VERSIONS,
    AxDefault,
    linear_constraints,
    make_method,
)
from search_quality_problems import (
    PROBLEM_NAMES,
    SurrogateProblem,
    make_problem,
    minilm_backbone,
)
from search_quality_report import CHECKPOINTS, load_results, plot, print_summary, save_results, summarise
from search_quality_runner import run_one, run_search
from synthetic_problem import (
    FAMILY_PROBLEMS,
    SyntheticProblem,
)

from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.domain.spaces import AutoPeftSpace, ParameterKind

#: The script's parts under the names the tests (tests/benchmarks) and users know.
__all__ = ["DEFAULT_TABLE", "METHOD_NAMES", "AutoPeftSpace", "AxDefault", "ObjectivePoint",
           "ParameterKind", "SurrogateProblem", "SyntheticProblem", "hypervolume", "main",
           "linear_constraints", "make_method", "make_problem", "minilm_backbone", "run_one",
           "run_search", "summarise"]


RESULTS = Path(__file__).parent / "results"
DEFAULT_OUTPUT = RESULTS / "search_quality.json"
DEFAULT_PLOT = Path("docs") / "search_quality.png"
#: Output and plot of runs on the family problems only.
SPACES_OUTPUT = RESULTS / "search_quality_spaces.json"
SPACES_PLOT = RESULTS / "search_quality_spaces.png"
DEFAULT_TABLE = RESULTS / "real_table_mrpc.csv"


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

"""The proposer at the largest space a study may ask for (256 layers, the bound of
``search_space.num_layers``): how long validating the spec, four Sobol proposals and four
``saasbo`` proposals take, so the bound is a measured one.

The problem is the synthetic one of ``search_quality.py`` on a hidden-768 backbone with
``--layers`` layers (``--completed`` Sobol trials observed, four pending).

Rows are kept in ``benchmarks/results/proposer_bounds.json``, one per (layers, completed
trials, torch threads). Reproduce (the numbers in the README's hardening notes):
    for layers in 24 32 64; do
        .venv/bin/python benchmarks/proposer_bounds.py --layers $layers --threads 1
        .venv/bin/python benchmarks/proposer_bounds.py --layers $layers --threads 2
    done
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from synthetic_problem import SyntheticProblem

from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import History
from autopeft_service.optimizers.saasbo import SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

RESULTS = Path(__file__).parent / "results" / "proposer_bounds.json"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=256)
    parser.add_argument("--completed", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the other core runs the rest of the service)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    problem = SyntheticProblem(args.layers + 3)
    row: dict[str, object] = {"layers": args.layers, "dimension": args.layers + 3,
                              "completed": args.completed, "pending": 4,
                              "threads": args.threads}
    started = time.perf_counter()
    StudySpec.model_validate({"name": "big", "backbone": "b", "task": "synthetic",
                              "search_space": {"num_layers": args.layers, "hidden_size": 768}})
    row["validate_spec_seconds"] = time.perf_counter() - started

    points = problem.sobol(args.completed + 4, seed=0)
    completed = [o for o in (problem.observe(p) for p in points[:args.completed]) if o]
    history = History(completed=completed, pending=points[args.completed:])
    started = time.perf_counter()
    SobolOptimizer(problem.space, seed=1).suggest(4, history)
    row["sobol_4_seconds"] = time.perf_counter() - started

    optimizer = SaasboOptimizer(problem.space, seed=0, initial_trials=8,
                                reference_point=problem.reference, settings=SaasboSettings())
    started = time.perf_counter()
    optimizer.suggest(4, history)
    row["saasbo_4_seconds"] = time.perf_counter() - started
    print(json.dumps(row, indent=2))
    # One row per (layers, completed, threads): a new measurement replaces the old one.
    rows = json.loads(args.output.read_text()) if args.output.exists() else []
    key = ("layers", "completed", "threads")
    rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row[k] for k in key)]
    rows.append(row)
    rows.sort(key=lambda r: tuple(r.get(k) or 0 for k in key))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

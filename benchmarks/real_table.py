"""The real-evaluation table: configurations drawn uniformly from the AutoPEFT space, each
fine-tuned for real through the service and its workers, one row per trial.

Starts ``autopeft serve`` on a SQLite file and ``--workers`` ``autopeft worker`` processes
on this machine (real HTTP, real fine-tuning), submits one study with the ``random``
optimiser (a scrambled Sobol sequence over the space: uniform marginals, no model) and
``--trials`` trials, waits for it, and writes the trials as CSV: the space's parameters
(``layer_i`` flags, ``serial_adapter_size``, ``parallel_adapter_size``, ``prefix_length``),
the configuration's description, ``score`` (the held-out score the search optimises),
``dev_score``, ``param_share`` (% of the backbone), seconds and worker.

The study's database stays in ``--workdir``: run the same command again to resume an
interrupted build (the study is found by name and continues; workers pick up what is
left). Reproduce (the fidelity flags are the table's; state them with any number quoted):
    .venv/bin/python benchmarks/real_table.py --task glue:mrpc \
        --data-dir ../shared/data/glue --trials 300 --workers 2 \
        --max-train-examples 2000 --max-length 64 --epochs 1 \
        --output benchmarks/results/real_table_mrpc.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autopeft_service.cli.demo import default_model_path
from autopeft_service.client import AutopeftClient
from autopeft_service.domain.search_space import AutoPeftSpace
from autopeft_service.domain.study import SearchSpaceSpec
from autopeft_service.local import LocalServer, LocalWorkers

RESULTS = Path(__file__).parent / "results"


def model_search_space(model: str) -> dict[str, int]:
    """The study's ``search_space`` for a model folder (AutoPEFT's default sizes)."""
    config = json.loads((Path(model) / "config.json").read_text())
    return {"num_layers": config["num_hidden_layers"], "hidden_size": config["hidden_size"]}


def study_spec(args: argparse.Namespace, model: str, search_space: dict[str, int]
               ) -> dict[str, Any]:
    """One ``random`` study of ``args.trials`` trials over ``search_space``."""
    return {
        "name": args.name, "backbone": model, "task": args.task,
        "data_dir": str(Path(args.data_dir).resolve()),
        "search_space": search_space,
        "reference_point": {"score": 0.0, "param_share": 10.0},
        "budget": {"total_trials": args.trials, "initial_trials": args.trials,
                   "max_parallel": args.workers, "max_attempts": 2},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size,
                     "learning_rate": args.learning_rate, "max_length": args.max_length,
                     "max_train_examples": args.max_train_examples,
                     "held_out_fraction": 0.1, "max_held_out_examples": args.max_held_out,
                     "max_dev_examples": args.max_dev_examples},
        "optimizer": {"name": "random", "seed": args.seed},
        "seed": 0,
    }


def _blank(value: object) -> object:
    return "" if value is None else value


def table_rows(trials: Sequence[dict[str, Any]], space: AutoPeftSpace) -> list[dict[str, Any]]:
    """One CSV row per trial (completed or failed), in trial order."""
    names = [p.name for p in space.parameters()]
    rows = []
    for trial in sorted(trials, key=lambda t: t["id"]):
        result = trial.get("result") or {}
        rows.append({
            "trial": trial["id"], "state": trial["state"],
            **{name: trial["params"][name] for name in names},
            "config": trial["config_description"],
            "score": _blank(trial["objective"]), "dev_score": _blank(trial["dev_score"]),
            "param_share": _blank(trial["param_share"]),
            "trainable_parameters": result.get("trainable_parameters", ""),
            "train_seconds": result.get("train_seconds", ""),
            "eval_seconds": result.get("eval_seconds", ""),
            "worker": trial.get("worker") or "",
        })
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="glue:mrpc")
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--model", default=None, help="backbone folder (default MiniLM-L6)")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--max-held-out", type=int, default=300)
    parser.add_argument("--max-dev-examples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the Sobol sequence")
    parser.add_argument("--name", default=None, help="study name (default from the task)")
    parser.add_argument("--workdir", type=Path, default=Path(".autopeft") / "real_table")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    model = args.model or default_model_path()
    search_space = model_search_space(model)
    space = SearchSpaceSpec.model_validate(search_space).to_space()
    label = args.task.replace(":", "_")
    args.name = args.name or f"real-table {args.task} {args.trials} trials"
    output = args.output or RESULTS / f"real_table_{label.removeprefix('glue_')}.csv"
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = LocalServer(f"sqlite:///{(args.workdir / 'autopeft.db').resolve()}",
                         log=args.workdir / "server.log", long_poll_seconds="5")
    workers = LocalWorkers(server, args.workdir)
    started = time.monotonic()
    try:
        server.start()
        with AutopeftClient(server.base_url, server.client_token, timeout=60) as client:
            existing = [s for s in client.list_studies() if s["name"] == args.name]
            study = existing[0] if existing else client.submit(study_spec(args, model, search_space))
            print(f"study {study['id']} ({'resumed' if existing else 'new'}): {args.trials} "
                  f"trials, {args.workers} workers; logs in {args.workdir}", flush=True)
            for index in range(args.workers):
                workers.start(f"worker-{index}", "--threads", str(args.threads))
            while True:
                status = client.status(study["id"])
                counts = status["counts"]
                done = counts["completed"] + counts["failed"]
                print(f"  {time.strftime('%H:%M:%S')} completed {counts['completed']} failed "
                      f"{counts['failed']} of {args.trials}", flush=True)
                if status["state"] != "running" or done >= args.trials:
                    break
                time.sleep(30)
            trials = client.trials(study["id"])
    finally:
        workers.stop()
        server.stop()
    rows = table_rows(trials, space)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {output} in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()

"""Where a worker's time goes: training vs. loading vs. waiting, and backbone reuse.

Runs a real study (server + worker processes on this machine, SQLite) of ``--trials``
trials on MiniLM-L6 with an SST-2 subset, then reads every trial's record from the API:
for each worker, the wall time from its first lease to its last result, split into
training (the trial's train + eval seconds), loading (backbone, data, PEFT build: the
trial's load seconds) and the rest (waiting for leases, reporting, heartbeats). The shares
are reported over all trials and after each worker's first trial (the first one loads the
backbone and tokenises the data), and the start-up time of each worker's first and second
trial shows the backbone reuse.

Reproduce:
    .venv/bin/python benchmarks/worker_overhead.py --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from autopeft_service.client import AutopeftClient
from autopeft_service.domain.views import TrialSummary
from autopeft_service.local import LocalServer, LocalWorkers
from workers.commands.demo import default_model_path


def _result(trial: TrialSummary) -> dict[str, Any]:
    """A completed trial's result (the worker's timings)."""
    return trial.result or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--optimizer", default="sobol")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "worker_overhead.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="autopeft-overhead-"))
    server = LocalServer(f"sqlite:///{workdir / 'autopeft.db'}", log=workdir / "server.log",
                         long_poll_seconds="5")
    workers = LocalWorkers(server, workdir, env={"AUTOPEFT_CACHE_DIR": str(workdir / "cache")})
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    spec = {"name": "worker overhead", "backbone": default_model_path(), "task": "glue:sst2",
            "data_dir": str(args.data_dir.resolve()),
            "search_space": {"num_layers": 6, "hidden_size": 384},
            "budget": {"total_trials": args.trials, "initial_trials": args.trials,
                       "max_parallel": args.workers, "max_attempts": 1},
            "training": {"epochs": 1, "max_train_examples": args.train_examples,
                         "max_length": args.max_length, "max_held_out_examples": 300,
                         "max_dev_examples": 300},
            "optimizer": {"name": args.optimizer}}
    started = time.monotonic()
    try:
        server.start()
        with AutopeftClient(server.base_url, server.client_token) as client:
            study = client.submit(spec)
            for index in range(args.workers):
                workers.start(f"worker-{index}", "--threads", str(threads))
            client.watch(study.id, lambda s: None, interval=2.0)
            trials = client.trials(study.id)
    finally:
        workers.stop()
        server.stop()
    wall = time.monotonic() - started

    by_worker: dict[str, list[TrialSummary]] = defaultdict(list)
    for trial in trials:
        if trial.state == "completed" and trial.worker is not None:
            by_worker[trial.worker].append(trial)
    rows = []
    for name, done in sorted(by_worker.items()):
        done.sort(key=lambda t: t.leased_at or 0.0)

        def shares(part: list[TrialSummary]) -> dict[str, float]:
            span = (part[-1].finished_at or 0.0) - (part[0].leased_at or 0.0)
            training = sum(_result(t)["train_seconds"] + _result(t)["eval_seconds"]
                           for t in part)
            loading = sum(_result(t)["load_seconds"] for t in part)
            return {"wall_seconds": span, "training_share": training / span,
                    "loading_share": loading / span,
                    "other_share": max(0.0, 1 - (training + loading) / span)}

        row = {"worker": name, "trials": len(done), "all": shares(done),
               "first_trial_startup_seconds": _result(done[0])["load_seconds"],
               "second_trial_startup_seconds": _result(done[1])["load_seconds"]
               if len(done) > 1 else None,
               "after_first": shares(done[1:]) if len(done) > 2 else None}
        rows.append(row)

    print(f"\n{args.trials} trials, {args.workers} workers x {threads} thread(s), MiniLM-L6, "
          f"SST-2 ({args.train_examples} train, max length {args.max_length}, 300 held-out, "
          f"300 dev), 1 epoch; whole run {wall:.0f} s\n")
    print("| worker | trials | training share (all) | training share (after 1st) | "
          "loading share (after 1st) | 1st trial start-up s | 2nd trial start-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        after = row["after_first"] or {}
        second = row["second_trial_startup_seconds"]
        print(f"| {row['worker']} | {row['trials']} | {100 * row['all']['training_share']:.1f}% | "
              f"{100 * after.get('training_share', float('nan')):.1f}% | "
              f"{100 * after.get('loading_share', float('nan')):.1f}% | "
              f"{row['first_trial_startup_seconds']:.2f} | "
              f"{second if second is None else round(second, 2)} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"command": "python benchmarks/worker_overhead.py",
                                       "wall_seconds": wall, "workers": rows}, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()

"""Another training seed for every configuration of a real table (issue 29's SST-2 replay
needs the real noise at full training): each completed row of a table written by
``real_table.py`` is trained again, at the table's own fidelity, with training seed
``--seed`` (the data subset and held-out split stay the table's: they follow
``data_seed``, not the training seed; so does a replicate trial in the service, whose
lease carries the study's seed plus its replicate number).

Each finished run is appended to a journal beside the table,
``<table stem>.seed<k>.jsonl`` (one JSON line per row: part, trial, seed, held-out score,
dev score, seconds), and a rerun skips what it holds, so an interrupted recording resumes
where it stopped, on any machine. ``--check`` first re-trains the table's first row with
the table's own seed and stops unless it reproduces the recorded score exactly: proof that
the runs here are the service's trials.

``--workers`` processes of one torch thread each take every n-th row; ``--commit`` commits
the journal after every run (one process at a time, ``evidence_v2.results_lock``);
``--hours`` stops starting runs after H hours.

Run (detached; about 30 minutes for 60 rows on the two cores):
    cd /work/main && nohup setsid .venv/bin/python benchmarks/sst2_replicates.py \\
        --table benchmarks/results/real_table_sst2_lora.csv --seed 1 --check --commit \\
        > /tmp/sst2_replicates.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evidence_v2 import _commit, results_lock
from real_table import read_rows

ROOT = Path(__file__).resolve().parent.parent


def journal_path(table: Path, seed: int) -> Path:
    """Where the runs of ``seed`` for ``table`` are journalled."""
    return table.with_name(f"{table.stem}.seed{seed}.jsonl")


def read_journal(path: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """(part, trial) -> run, for every complete line of the journal (a torn last line, from
    a killed process, is skipped)."""
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        try:
            run = json.loads(line)
        except json.JSONDecodeError:
            continue
        runs[(int(run["part"]), int(run["trial"]))] = run
    return runs


def append(path: Path, run: Mapping[str, Any]) -> None:
    """Append one run in one write, flushed to disk, on a line of its own (after a torn
    last line left by a killed process)."""
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as handle:
        handle.write(("\n" if torn else "") + json.dumps(run, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def fidelity_of(table: Path) -> dict[str, Any]:
    """The table's fidelity record (``<stem>.fidelity.json``)."""
    return json.loads(table.with_name(f"{table.stem}.fidelity.json").read_text())


def train_row(runner: Any, row: Mapping[str, str], fidelity: Mapping[str, Any], seed: int,
              data_dir: str) -> dict[str, Any]:
    """Train the row's configuration at the table's fidelity with training seed ``seed``.

    Returns:
        The run: part, trial, seed, held-out score, dev score, seconds, configuration.
    """
    from autopeft_service.domain.peft_config import PeftConfig
    from autopeft_service.domain.trial import TrainingSettings
    from workers.commands.demo import default_model_path
    from workers.trial import TrialRequest

    request = TrialRequest(model=default_model_path(), task=fidelity["task"],
                           config=PeftConfig.model_validate_json(row["config"]),
                           settings=TrainingSettings(**fidelity["training"]), seed=seed,
                           data_dir=data_dir, hold_out=True)
    started = time.time()
    result = runner.run(request)
    return {"part": int(row["part"]), "trial": int(row["trial"]), "seed": seed,
            "score": result.objective, "dev_score": result.dev_score,
            "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
            "wall_seconds": time.time() - started, "config_description": row["config_description"],
            "threads": 1, "finished_at": time.time()}


def check(runner: Any, table: Path, rows: Sequence[Mapping[str, str]], data_dir: str) -> None:
    """Re-train the first row with its recorded seed; exit 1 unless the score is the same."""
    row = rows[0]
    run = train_row(runner, row, fidelity_of(table), int(row["seed"]), data_dir)
    recorded = float(row["score"])
    same = abs(run["score"] - recorded) < 1e-9
    print(f"check: row part {row['part']} trial {row['trial']} seed {row['seed']}: "
          f"recorded {recorded:.4f}, re-trained {run['score']:.4f}: "
          f"{'reproduced' if same else 'DIFFERENT'}", file=sys.stderr, flush=True)
    if not same:
        sys.exit(1)


def record(table: Path, seed: int, data_dir: str, shard: tuple[int, int], hours: float | None,
           commit: bool) -> None:
    """Shard i of n: train every n-th row the journal lacks, appending each run."""
    import torch

    from workers.commands.trial import quiet_libraries
    from workers.trial import TrialRunner

    quiet_libraries()
    torch.set_num_threads(1)
    rows = [r for r in read_rows(table) if r["state"] == "completed"]
    fidelity = fidelity_of(table)
    runner = TrialRunner(device="cpu")
    journal = journal_path(table, seed)
    started = time.monotonic()
    index, count = shard
    for position, row in enumerate(rows):
        if position % count != index or (int(row["part"]), int(row["trial"])) in \
                read_journal(journal):
            continue
        if hours is not None and time.monotonic() - started > hours * 3600:
            print(f"record: stopped after {hours} h; rerun to resume", file=sys.stderr)
            return
        run = train_row(runner, row, fidelity, seed, data_dir)
        with results_lock(journal.parent):
            append(journal, run)
            done = len(read_journal(journal))
            if commit:
                _commit(journal, f"sst2_replicates: {table.stem} seed {seed} trial "
                        f"{row['trial']} ({run['score']:.4f}); {done} of {len(rows)} rows")
        print(f"record [{index}/{count}]: trial {row['trial']}: {run['score']:.4f} "
              f"(recorded seed {row['seed']}: {float(row['score']):.4f}) in "
              f"{run['wall_seconds']:.0f} s; {done} of {len(rows)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1, help="the training seed of the runs")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hours", type=float, default=None)
    parser.add_argument("--check", action="store_true",
                        help="first re-train row 0 with its own seed; stop unless identical")
    parser.add_argument("--commit", action="store_true")
    args = parser.parse_args(argv)
    if args.shard is not None:
        record(args.table, args.seed, args.data_dir, (args.shard, args.workers), args.hours,
               args.commit)
        return 0
    rows = [r for r in read_rows(args.table) if r["state"] == "completed"]
    if any(int(r["seed"]) == args.seed for r in rows):
        parser.error(f"--seed {args.seed} is a seed the table already used")
    if args.check:
        import torch

        from workers.commands.trial import quiet_libraries
        from workers.trial import TrialRunner

        quiet_libraries()
        torch.set_num_threads(1)
        check(TrialRunner(device="cpu"), args.table, rows, args.data_dir)
    command = [sys.executable, __file__, "--table", str(args.table), "--seed", str(args.seed),
               "--data-dir", args.data_dir, "--workers", str(args.workers)]
    if args.hours is not None:
        command += ["--hours", str(args.hours)]
    if args.commit:
        command.append("--commit")
    children = [subprocess.Popen([*command, "--shard", str(i)]) for i in range(args.workers)]
    return max(child.wait() for child in children)


if __name__ == "__main__":
    sys.exit(main())

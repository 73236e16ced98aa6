"""Hostile studies against the proposer: how long a normal study waits for its first ready
trial, and how fast study reads stay, while four large studies are being proposed.

Issue 31, item 4 ("no study can hold the proposer"). The server (``autopeft serve``) runs
as a child process on a fresh database. Four hostile studies are created first, one per
search-space family (autopeft, unified, design_space, lora), the largest budget a study may
ask for (``--budget``, default 100,000 trials, ``--max-parallel`` 10,000 kept ready) on a
``--layers``-layer backbone (default 256), optimiser sobol or random. A family whose
space holds fewer configurations than the budget is refused with 422 at creation (lora on
256 layers); the refusal is recorded and the rest go on. After ``--settle`` seconds of
hostile proposing, a normal study (MiniLM's 6 layers, 20 trials, 4 in parallel, sobol) is
created. Measured:

* ``first_ready_seconds``: from the normal study's creation (POST answered) to its first
  ready trial (GET polled every 50 ms); the target is under 5 s.
* study reads: a reader thread GETs ``/v1/studies/{id}`` (the hostile and normal studies
  in turn) from the first hostile study's creation to the end (``--read-seconds`` after
  the normal study is made); p50, p99 and max in milliseconds; the target is p99 under
  200 ms.
* the hostile studies' ready trials and state (and reason) at the end.

Run (numbers in docs/benchmarks.md, "Hostile studies and the proposer"):
    .venv/bin/python benchmarks/proposer_hold.py --smoke                 # < 1 min, a check
    .venv/bin/python benchmarks/proposer_hold.py --databases sqlite postgresql \\
        --output benchmarks/results/proposer_hold.json                   # the issue's case
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.testing.postgres import TemporaryPostgres, create_database
from autopeft_service.testing.server import CLIENT_TOKEN, ServerProcess

HEADERS = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
#: One hostile study per family, with the optimiser the issue used for it.
HOSTILE = (("autopeft", "sobol"), ("unified", "random"), ("design_space", "sobol"),
           ("lora", "random"))


def hostile_spec(kind: str, optimizer: str, layers: int, budget: int,
                 parallel: int) -> dict[str, Any]:
    """A hostile study: the largest budget on a ``layers``-layer backbone."""
    dims = MINILM_DIMS.model_copy(update={"num_layers": layers})
    return {"name": f"hostile-{kind}", "backbone": "fake", "task": "synthetic",
            "backbone_dims": dims.model_dump(), "search_space": {"kind": kind},
            "optimizer": {"name": optimizer},
            "budget": {"total_trials": budget, "initial_trials": budget,
                       "max_parallel": parallel, "max_attempts": 1}}


def normal_spec() -> dict[str, Any]:
    """The normal study whose first trial is timed."""
    return {"name": "normal", "backbone": "fake", "task": "synthetic",
            "backbone_dims": MINILM_DIMS.model_dump(),
            "search_space": {"num_layers": MINILM_DIMS.num_layers,
                             "hidden_size": MINILM_DIMS.hidden_size},
            "optimizer": {"name": "sobol"},
            "budget": {"total_trials": 20, "initial_trials": 20, "max_parallel": 4}}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Reader(threading.Thread):
    """GETs the studies in turn until stopped, recording each read's latency (ms)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.study_ids: list[int] = []
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=HEADERS, timeout=120) as http:
            turn = 0
            while not self.stop.is_set():
                if not self.study_ids:
                    time.sleep(0.01)
                    continue
                study_id = self.study_ids[turn % len(self.study_ids)]
                turn += 1
                started = time.perf_counter()
                status = http.get(f"/v1/studies/{study_id}").status_code
                self.latencies_ms.append(1000 * (time.perf_counter() - started))
                self.errors += status != 200
                time.sleep(0.02)  # a dashboard's pace, not a load test of reads


def _create_hostile(http: httpx.Client, args: argparse.Namespace) -> tuple[list[int], dict[str, Any]]:
    """Create the hostile studies; returns their ids and the refusals (family -> detail)."""
    ids, refused = [], {}
    for kind, optimizer in HOSTILE:
        response = http.post("/v1/studies", json=hostile_spec(
            kind, optimizer, args.layers, args.budget, args.max_parallel))
        if response.status_code == 201:
            ids.append(response.json()["id"])
        else:
            refused[kind] = {"status": response.status_code, "detail": response.text[:300]}
    return ids, refused


def _first_ready(http: httpx.Client, study_id: int, created: float, limit: float) -> float | None:
    """Seconds from ``created`` to the study's first ready trial (None: not within limit)."""
    while time.perf_counter() - created < limit:
        counts = http.get(f"/v1/studies/{study_id}").json()["counts"]
        if counts["ready"] or counts["leased"]:
            return time.perf_counter() - created
        time.sleep(0.05)
    return None


def run_one(database: str, url: str, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """One measurement on a fresh database; returns the result row."""
    server = ServerProcess(url, log=log, proposal_time_budget_s=str(args.time_budget)).start()
    reader = Reader(server.base_url)
    try:
        with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=120) as http:
            reader.start()
            hostile, refused = _create_hostile(http, args)
            reader.study_ids = list(hostile)
            time.sleep(args.settle)
            created = time.perf_counter()
            normal = http.post("/v1/studies", json=normal_spec()).json()["id"]
            first = _first_ready(http, normal, created, args.read_seconds + 60)
            reader.study_ids = [*hostile, normal]
            time.sleep(max(0.0, args.read_seconds - (time.perf_counter() - created)))
            reader.stop.set()
            reader.join(130)
            ends = {study_id: http.get(f"/v1/studies/{study_id}").json() for study_id in hostile}
    finally:
        reader.stop.set()
        server.stop()
    reads = reader.latencies_ms
    return {
        "database": database, "layers": args.layers, "budget": args.budget,
        "max_parallel": args.max_parallel, "time_budget_s": args.time_budget,
        "settle_seconds": args.settle, "first_ready_seconds": first,
        "reads": len(reads), "read_errors": reader.errors,
        "read_p50_ms": percentile(reads, 0.5), "read_p99_ms": percentile(reads, 0.99),
        "read_max_ms": max(reads, default=float("nan")), "refused": refused,
        "hostile": [{"id": i, "state": s["state"], "reason": s.get("reason"),
                     "ready": s["counts"]["ready"]} for i, s in ends.items()],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--smoke`` shrinks the case to a check of under a minute)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--layers", type=int, default=256)
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--max-parallel", type=int, default=10_000)
    parser.add_argument("--time-budget", type=float, default=2.0,
                        help="AUTOPEFT_PROPOSAL_TIME_BUDGET_S of the server")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds of hostile proposing before the normal study")
    parser.add_argument("--read-seconds", type=float, default=30.0,
                        help="reads go on this long after the normal study is created")
    parser.add_argument("--smoke", action="store_true",
                        help="64 layers, budget 20,000, 2,000 ready, 3 s settle, 5 s reads")
    parser.add_argument("--output", type=Path, help="write the rows here (JSON)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.budget, args.max_parallel = 64, 20_000, 2_000
        args.settle, args.read_seconds = 3.0, 5.0
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run every database asked for; print each row (JSON) and write them if asked."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="autopeft-hold-"))
    postgres = TemporaryPostgres() if "postgresql" in args.databases else None
    rows = []
    try:
        for number, database in enumerate(args.databases):
            if database == "sqlite":
                url = f"sqlite:///{workdir}/{number}.db"
            else:
                assert postgres is not None
                url = create_database(postgres.admin_url)
            row = run_one(database, url, args, workdir / f"server-{number}.log")
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if postgres is not None:
            postgres.stop()
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"host": platform.node(), "rows": rows}, indent=2)
                               + "\n")
    return rows


if __name__ == "__main__":
    main()

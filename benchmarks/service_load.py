"""Load on the worker protocol: many fake workers on loopback against SQLite and PostgreSQL.

Two modes. In both the server (``autopeft serve --processes N``) runs as a child process
on a fresh database, the fake workers run as asyncio tasks (aiohttp) in other processes
(``--client-processes``), each with its own keep-alive connection, and every trial is
proposed before the clock starts (Sobol), so what is measured is the protocol, not the
optimiser. After each run the database is checked for trials lost (reported and not stored,
held and not leased, in a state a clean run never reaches, or missing numbers) and
duplicated (leased twice, or completed twice).

**Closed loop (capacity)**, the default: each fake worker loops lease -> (``--think``
seconds, standing in for training) -> report, never pausing otherwise. With W workers W
requests are always outstanding, so this measures throughput; its latencies follow from
Little's law (W / throughput), not from the server's speed per request. Measured: lease +
report cycles per second (two operations each), p50/p99 of successful leases and reports.

**Open-loop fleet** (``--fleet``): what a real fleet offers. Each simulated worker starts
at a random offset within the first heartbeat interval, leases, "trains" for an
exponentially distributed time (mean ``--trial-mean`` seconds), heartbeats every
``--heartbeat-seconds`` meanwhile (the first at a random offset within the interval; a
trial shorter than that offset sends none), reports, and leases again at once. Every
worker's timeline of intended send times is drawn in advance from ``--seed``
(``worker_schedule``), so the arrivals are set by trial durations, not by the server's
speed: the offered load is about ``workers * (2 + trial_mean / heartbeat) / trial_mean``
operations/s. Latency is counted from the *intended* send time (coordinated omission):
a request sent late because the worker's previous request was still waiting counts that
lateness, so a slow answer cannot hide the requests it held back. Measured, over the
window from ``--warmup`` to ``--seconds``: offered ops/s (scheduled sends in the window),
achieved ops/s (answers in the window), p50/p99/p999 of lease, heartbeat and report, and
the service time (send to answer) besides; errors, leases that found nothing, sends
given up after ``--drain`` seconds past the end, the generator's own lag (a send later
than both its intended time and its worker's previous answer: the load generator, not
the server, fell behind) and its CPU use, and the CPU milliseconds the server processes
and the PostgreSQL backends spent per operation.

Flags (``--fleet`` only where marked; lists make a sweep, one fresh database per run):
  --databases sqlite postgresql   databases (default both; PostgreSQL: a temporary cluster)
  --workers N [N ...]             fake workers (default 50 200)
  --seconds S                     closed loop: run time; fleet: end of the schedule (default 15)
  --think T [T ...]               closed loop: seconds between lease and report (default 0 0.5)
  --server-processes P [P ...]    ``autopeft serve --processes`` (default 1)
  --client-processes C            processes the fake workers are spread over (default 1)
  --fleet                         the open-loop fleet instead of the closed loop
  --trial-mean T [T ...]          fleet: mean trial duration, exponential (default 60)
  --heartbeat-seconds H [H ...]   fleet: heartbeat period (default 10)
  --warmup W                      fleet: latencies and rates count sends intended from W s
                                  on (default 0: the start-up ramp counts too)
  --drain D                       fleet: a worker still behind D s after --seconds gives up
                                  its remaining sends (counted as unsent; default 30)
  --seed N                        fleet: the schedules' seed (default 0)
  --tenants N                     fleet: the studies belong to N tenants (default 1)
  --note TEXT                     fleet: a remark stored with the run in the output
  --output PATH                   closed loop: written (default results/service_load.json);
                                  fleet: each row appended as it is measured to the file's
                                  ``runs`` (default results/service_load_fleet.json)

Reproduce:
    .venv/bin/python benchmarks/service_load.py                      # both DBs, 50 and 200 workers
    .venv/bin/python benchmarks/service_load.py --databases postgresql --workers 200 --seconds 20
    .venv/bin/python benchmarks/service_load.py --databases sqlite postgresql --workers 50 200 \
        --think 0 0.5 --server-processes 2 --seconds 15          # the README's capacity table
    # the README's small fleet rows (2 cores): 60 s and 5 s trials, 2 s heartbeats
    .venv/bin/python benchmarks/service_load.py --fleet --databases postgresql --workers 300 \
        --trial-mean 60 5 --heartbeat-seconds 2 --seconds 20 --server-processes 1 2
    # the README's "before" rows: the same generator against the server of another commit
    # (the server is started as `python -m autopeft_service.cli`, found on PYTHONPATH first)
    mkdir -p /tmp/before && git archive c7d669c autopeft_service migrations alembic.ini \
        | tar -x -C /tmp/before
    (cd /tmp/before && PYTHONPATH=/tmp/before "$OLDPWD/.venv/bin/python" \
        "$OLDPWD/benchmarks/service_load.py" --fleet --databases postgresql --workers 300 \
        --trial-mean 60 --heartbeat-seconds 2 --seconds 20 --note "before: c7d669c" \
        --output "$OLDPWD/benchmarks/results/service_load_fleet.json")
    # the issue's target: 2,000 workers, 60 s trials, 10 s heartbeats (~270 ops/s offered)
    .venv/bin/python benchmarks/service_load.py --fleet --databases postgresql --workers 2000 \
        --trial-mean 60 --heartbeat-seconds 10 --seconds 180 --warmup 20 \
        --server-processes 1 2 --client-processes 4
    # issue 31: the same fleet with the studies split between 4 tenants (fair share on)
    .venv/bin/python benchmarks/service_load.py --fleet --databases postgresql --workers 2000 \
        --trial-mean 60 --heartbeat-seconds 10 --seconds 120 --warmup 20 \
        --server-processes 1 --client-processes 4 --tenants 4 --note "tenancy: 4 tenants"
    # the same fleet with 5 s trials (~1,000 ops/s offered; about 50,000 trials queued first)
    .venv/bin/python benchmarks/service_load.py --fleet --databases postgresql --workers 2000 \
        --trial-mean 5 --heartbeat-seconds 10 --seconds 120 --warmup 20 \
        --server-processes 1 2 --client-processes 4

The script's parts, beside it: ``service_load_problem.py`` (the offered load: schedules of
events), ``service_load_runner.py`` (server, client processes, the two modes) and
``service_load_report.py`` (samples, percentiles, integrity check, results and tables).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import tempfile
from pathlib import Path

from service_load_problem import (
    CLOSED_LOOP,
    FLEET,
    HEARTBEAT,
    KINDS,
    LEASE,
    REPORT,
    Event,
    expected_operations_per_second,
    fleet_schedules,
    heartbeat_offsets,
    worker_schedule,
)
from service_load_report import (
    Ledger,
    Sample,
    append_row,
    closed_table,
    fleet_table,
    integrity,
    offered_operations_per_second,
    percentile,
    summarise,
)
from service_load_runner import HttpTransport, run_fleet, run_one, run_schedule

from autopeft_service.testing.postgres import TemporaryPostgres, create_database

#: The script's parts under the names the tests (tests/benchmarks) and users know.
__all__ = ["CLOSED_LOOP", "FLEET", "HEARTBEAT", "KINDS", "LEASE", "REPORT", "Event",
           "HttpTransport", "Ledger", "Sample", "expected_operations_per_second",
           "fleet_schedules", "heartbeat_offsets", "integrity", "main",
           "offered_operations_per_second", "percentile", "run_fleet", "run_one",
           "run_schedule", "summarise", "worker_schedule"]


def _raise_open_files_limit() -> None:
    """Each fake worker holds a connection, and so does the server: lift the soft limit
    on open files to the hard one (the server, a child, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--workers", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="closed loop: run time; fleet: end of the schedule")
    parser.add_argument("--think", nargs="+", type=float, default=[0.0, 0.5],
                        help="closed loop: seconds each fake worker 'trains' between lease "
                        "and report")
    parser.add_argument("--server-processes", nargs="+", type=int, default=[1],
                        help="autopeft serve --processes (one proposer among them)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="processes the fake workers are spread over")
    parser.add_argument("--fleet", action="store_true",
                        help="the open-loop fleet instead of the closed loop (capacity)")
    parser.add_argument("--trial-mean", nargs="+", type=float, default=[60.0],
                        help="fleet: mean trial duration in seconds (exponential)")
    parser.add_argument("--heartbeat-seconds", nargs="+", type=float, default=[10.0],
                        help="fleet: heartbeat period during a trial")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="fleet: count only sends intended from this many seconds on")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="fleet: give up sends still pending this long after --seconds")
    parser.add_argument("--seed", type=int, default=0, help="fleet: the schedules' seed")
    parser.add_argument("--tenants", type=int, default=1,
                        help="fleet: split the studies between this many tenants (served "
                        "by the shared pool's fair share; default 1: the default tenant)")
    parser.add_argument("--note", help="fleet: a remark stored with the run (e.g. which "
                        "server version was measured)")
    parser.add_argument("--output", type=Path, help="default: results/service_load.json "
                        "(closed loop, rewritten) or results/service_load_fleet.json (fleet, "
                        "rows appended)")
    args = parser.parse_args()
    results = Path(__file__).parent / "results"
    output = args.output or results / ("service_load_fleet.json" if args.fleet
                                       else "service_load.json")
    command = " ".join([".venv/bin/python", "benchmarks/service_load.py", *sys.argv[1:]])
    _raise_open_files_limit()

    rows = []
    postgres = TemporaryPostgres() if "postgresql" in args.databases else None
    workdir = Path(tempfile.mkdtemp(prefix="autopeft-load-"))
    runs = [(database, processes, workers, a, b)
            for database in args.databases for processes in args.server_processes
            for workers in args.workers
            for a in (args.trial_mean if args.fleet else args.think)
            for b in (args.heartbeat_seconds if args.fleet else [None])]
    try:
        for number, (database, processes, workers, a, b) in enumerate(runs):
            if database == "sqlite":
                url = f"sqlite:///{workdir}/{number}.db"
            else:
                assert postgres is not None
                url = create_database(postgres.admin_url)
            if args.fleet:
                row = run_fleet(database, url, workers, args.seconds, a, b,
                                workdir / "server.log", processes, args.client_processes,
                                args.seed, args.warmup, args.drain, args.tenants)
                append_row(output, command, row, new_run=number == 0, note=args.note)
            else:
                row = run_one(database, url, workers, args.seconds, a,
                              workdir / "server.log", processes, args.client_processes)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if postgres is not None:
            postgres.stop()
    print(f"\n{platform.node()}: {multiprocessing.cpu_count()} cores, server and fake workers "
          "on the same machine (loopback)\n")
    if args.fleet:
        fleet_table(rows)
        print(f"appended to: {output}")
        return
    closed_table(rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    print(f"written: {output}")


if __name__ == "__main__":
    main()

"""Load on the worker protocol: many fake workers on loopback against SQLite and PostgreSQL.

The server (``autopeft serve --processes N``) runs as a child process on a fresh
database; the fake workers run as asyncio tasks in other processes (``--client-processes``),
each with its own HTTP connection, looping lease ->
(optional think time, standing in for training) -> report. The study's trials are all
proposed before the clock starts (Sobol, max_parallel = total), so what is measured is the
protocol: leases and reports, not the optimiser.

Measured: lease+report cycles per second (each cycle is two operations: one lease, one
report), p50/p99 latency of successful leases and of reports, and, from the database after
the run, trials lost (leased and never completed, or missing numbers) and duplicated
(completed twice, or two non-duplicate completions of one trial seen by workers).

Reproduce:
    .venv/bin/python benchmarks/service_load.py                      # both DBs, 50 and 200 workers
    .venv/bin/python benchmarks/service_load.py --databases postgresql --workers 200 --seconds 20
    .venv/bin/python benchmarks/service_load.py --databases sqlite postgresql --workers 50 200 \
        --think 0 0.5 --server-processes 2 --seconds 15          # the README's table
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from autopeft_service.testing.postgres import TemporaryPostgres, create_database
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerProcess

RESULT = {"metric": "accuracy", "objective": 0.8, "held_out": {"accuracy": 0.8},
          "dev": {"accuracy": 0.8}, "dev_score": 0.8, "trainable_parameters": 10,
          "trainable_percent": 1.0, "deployed_parameters": 10, "head_parameters": 2,
          "train_seconds": 0.0, "eval_seconds": 0.0, "load_seconds": 0.0, "steps": 1,
          "train_examples": 1, "examples_per_second": 1.0, "final_loss": 0.1,
          "peak_memory_mb": 0.0, "device": "fake", "seed": 0, "config_description": "fake"}
HEADERS = {"Authorization": f"Bearer {WORKER_TOKEN}"}


async def _worker(name: str, base_url: str, end: float, think: float,
                  stats: dict[str, Any]) -> None:
    """One fake worker: its own session holding one keep-alive connection, as a real
    worker process has."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=HEADERS,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        while time.monotonic() < end:
            try:
                await _cycle(name, client, think, stats)
            except (aiohttp.ClientError, TimeoutError) as error:  # counted, never fatal
                stats["errors"].append(f"{type(error).__name__}")


async def _cycle(name: str, client: aiohttp.ClientSession, think: float,
                 stats: dict[str, Any]) -> None:
    """One lease -> think -> report cycle."""
    start = time.perf_counter()
    async with client.post("/v1/leases", json={"worker": name, "wait_seconds": 1}) as response:
        lease = await response.json() if response.status == 200 else None
    lease_ms = 1000 * (time.perf_counter() - start)
    if response.status == 204:
        stats["empty"] += 1
        return
    if lease is None:
        stats["errors"].append(f"lease {response.status}")
        return
    stats["lease_ms"].append(lease_ms)
    if think:
        await asyncio.sleep(think)
    start = time.perf_counter()
    async with client.post(f"/v1/trials/{lease['trial_id']}/result",
                           json={"token": lease["token"], "result": RESULT}) as done:
        answer = await done.json() if done.status == 200 else None
    stats["report_ms"].append(1000 * (time.perf_counter() - start))
    if answer is None:
        stats["errors"].append(f"result {done.status}")
    elif not answer["duplicate"]:
        stats["completed"][lease["trial_id"]] += 1


async def _load(base_url: str, names: list[str], seconds: float, think: float
                ) -> dict[str, Any]:
    """Run the fake workers ``names`` for ``seconds``. Each has its own keep-alive
    connection, as real workers do. The client is aiohttp: with httpx the load generator,
    not the server, was the bottleneck (about 3 ms of CPU per request against the
    server's 2; one shared httpx pool for all workers was worse still)."""
    stats: dict[str, Any] = {"lease_ms": [], "report_ms": [], "errors": [], "empty": 0,
                             "completed": Counter()}
    start = time.monotonic()
    end = start + seconds
    await asyncio.gather(*[_worker(name, base_url, end, think, stats) for name in names])
    stats["elapsed"] = time.monotonic() - start
    return stats


def _client_process(base_url: str, names: list[str], seconds: float, think: float,
                    queue: multiprocessing.Queue) -> None:
    import uvloop

    stats = uvloop.run(_load(base_url, names, seconds, think))
    stats["completed"] = dict(stats["completed"])
    queue.put(stats)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats of several client processes as one (elapsed: the longest)."""
    merged: dict[str, Any] = {"lease_ms": [], "report_ms": [], "errors": [], "empty": 0,
                              "completed": Counter(), "elapsed": 0.0}
    for part in parts:
        for key in ("lease_ms", "report_ms", "errors"):
            merged[key] += part[key]
        merged["empty"] += part["empty"]
        merged["completed"].update(part["completed"])
        merged["elapsed"] = max(merged["elapsed"], part["elapsed"])
    return merged


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else \
        (values[0] if values else float("nan"))


def run_one(database: str, url: str, workers: int, seconds: float, think: float,
            log: Path, processes: int = 1, client_processes: int = 1) -> dict[str, Any]:
    """One measurement on a fresh database; returns the row of the results table."""
    server = ServerProcess(url, log=log, processes=processes, lease_seconds="600",
                           long_poll_seconds="1", database_pool_size="40").start()
    try:
        total = max(2000, int(workers * (seconds / max(think, 0.05)) * 1.5)) if think else 6000
        total = min(total, 10_000)
        headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        with httpx.Client(base_url=server.base_url, timeout=120, headers=headers) as http:
            spec = {"name": "load", "backbone": "fake", "task": "synthetic",
                    "search_space": {"num_layers": 12, "hidden_size": 768},
                    "budget": {"total_trials": total, "initial_trials": total,
                               "max_parallel": total, "max_attempts": 1}}
            study = http.post("/v1/studies", json=spec).json()
            while http.get(f"/v1/studies/{study['id']}").json()["counts"]["ready"] < total:
                time.sleep(0.2)
            context = multiprocessing.get_context("spawn")
            queue: multiprocessing.Queue = context.Queue()
            names = [f"fake-{i}" for i in range(workers)]
            clients = [context.Process(target=_client_process, args=(
                server.base_url, names[k::client_processes], seconds, think, queue))
                for k in range(client_processes)]
            for client in clients:
                client.start()
            stats = _merge([queue.get(timeout=seconds + 300) for _ in clients])
            for client in clients:
                client.join(60)
            trials = []
            offset = 0
            while True:
                page = http.get(f"/v1/studies/{study['id']}/trials",
                                params={"offset": offset, "limit": 500}).json()
                trials += page["items"]
                offset += 500
                if offset >= page["total"]:
                    break
    finally:
        server.stop()
    completed_db = {t["id"] for t in trials if t["state"] == "completed"}
    seen = stats["completed"]
    duplicated = sum(1 for count in seen.values() if count > 1)
    numbers = sorted(t["number"] for t in trials)
    lost = (len({int(k) for k in seen} - completed_db)  # reported, not stored
            + sum(1 for t in trials if t["state"] not in ("completed", "ready", "leased"))
            + (0 if numbers == list(range(len(numbers))) else 1))
    cycles = len(stats["report_ms"])
    return {
        "database": database, "server_processes": processes,
        "client_processes": client_processes, "workers": workers,
        "think_seconds": think,
        "seconds": round(stats["elapsed"], 1), "cycles": cycles,
        "cycles_per_second": cycles / stats["elapsed"],
        "operations_per_second": 2 * cycles / stats["elapsed"],
        "lease_p50_ms": _percentile(stats["lease_ms"], 0.5),
        "lease_p99_ms": _percentile(stats["lease_ms"], 0.99),
        "report_p50_ms": _percentile(stats["report_ms"], 0.5),
        "report_p99_ms": _percentile(stats["report_ms"], 0.99),
        "errors": len(stats["errors"]), "lost": lost, "duplicated": duplicated,
        "completed_in_db": len(completed_db),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--workers", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--think", nargs="+", type=float, default=[0.0, 0.5],
                        help="seconds each fake worker 'trains' between lease and report")
    parser.add_argument("--server-processes", nargs="+", type=int, default=[1],
                        help="autopeft serve --processes (one proposer among them)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="processes the fake workers are spread over")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "service_load.json")
    args = parser.parse_args()

    rows = []
    postgres = TemporaryPostgres() if "postgresql" in args.databases else None
    workdir = Path(tempfile.mkdtemp(prefix="autopeft-load-"))
    try:
        for database in args.databases:
            for processes in args.server_processes:
                for workers in args.workers:
                    for think in args.think:
                        if database == "sqlite":
                            url = f"sqlite:///{workdir}/{processes}-{workers}-{think}.db"
                        else:
                            assert postgres is not None
                            url = create_database(postgres.admin_url)
                        row = run_one(database, url, workers, args.seconds, think,
                                      workdir / "server.log", processes,
                                      args.client_processes)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    finally:
        if postgres is not None:
            postgres.stop()
    print(f"\n{platform.node()}: {multiprocessing.cpu_count()} cores, server and fake workers "
          "on the same machine (loopback)\n")
    print("| database | server processes | workers | think s | cycles/s | ops/s | lease p50 ms | "
          "lease p99 ms | report p99 ms | lost | duplicated |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['database']} | {r['server_processes']} | {r['workers']} | "
              f"{r['think_seconds']:g} | "
              f"{r['cycles_per_second']:.0f} | {r['operations_per_second']:.0f} | "
              f"{r['lease_p50_ms']:.1f} | {r['lease_p99_ms']:.1f} | {r['report_p99_ms']:.1f} | "
              f"{r['lost']} | {r['duplicated']} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python", "benchmarks/service_load.py", *sys.argv[1:]])
    args.output.write_text(json.dumps({"command": command,
                                       "rows": rows}, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()

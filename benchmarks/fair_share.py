"""Fair share of the shared worker pool between tenants (issue 31, item 3), over real HTTP
against ``autopeft serve`` on a fresh SQLite or PostgreSQL database.

Two measurements per database:

* **Starvation.** Tenant ``big`` queues ``--big-trials`` ready trials (default 30,000, in
  studies of 10,000, Sobol, all proposed before the clock starts) and its workers hold
  ``--held`` leases. Then, ``--rounds`` times, tenant ``small`` creates a study of one
  trial; once it is ready, shared-pool workers lease until they get it. Measured: the
  position of ``small``'s trial among those leases (the target: within the next 2), and
  the lease latency (p50/p99) with the long queue beside it. Before the fair share, leases
  were first-in-first-out: 896 in a row never reached the later tenant's study.
* **Saturated share.** Tenants ``a`` and ``b`` (weights ``--weights``, default 1 1) each
  queue ``--share-trials`` ready trials (default 10,000: more than the run leases);
  ``--share-workers`` (default 40) shared-pool workers loop
  lease -> "train" (exponential, mean ``--trial-mean`` s) -> report for
  ``--share-seconds`` (default 600: the issue's 10 minutes). Measured: each tenant's share
  of the leases, overall and per minute (the target: 45-55 % at 1:1).

Results are appended to ``--output`` row by row as they are measured.

Reproduce (numbers in docs/benchmarks.md, "Tenants and fair share"):
    .venv/bin/python benchmarks/fair_share.py --smoke                      # ~1 min check
    .venv/bin/python benchmarks/fair_share.py --databases sqlite postgresql \\
        --output benchmarks/results/fair_share.json                         # the issue's case
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_load_problem import DIMS, queue_trials, result_for  # noqa: E402

from autopeft_service.domain.tenancy import Role  # noqa: E402
from autopeft_service.storage import repository as repo  # noqa: E402
from autopeft_service.storage.database import Database  # noqa: E402
from autopeft_service.testing.postgres import TemporaryPostgres, create_database  # noqa: E402
from autopeft_service.testing.server import ServerProcess  # noqa: E402


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_tenants(url: str, weights: dict[str, float]) -> dict[str, str]:
    """Tenants with these weights, a member token each, and a shared-pool worker token
    (under the key ``worker``)."""
    database = Database(url)
    try:
        with database.session() as session:
            tokens = {}
            for name, weight in weights.items():
                repo.create_tenant(session, name, weight)
                tokens[name] = repo.create_token(session, name, Role.MEMBER)[1]
            first = next(iter(weights))
            tokens["worker"] = repo.create_token(session, first, Role.WORKER,
                                                 shared_pool=True)[1]
    finally:
        database.dispose()
    return tokens


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def starvation(http: httpx.Client, tokens: dict[str, str], big_trials: int, held: int,
               rounds: int) -> dict[str, Any]:
    """Where ``small``'s one trial lands among the shared pool's leases, beside ``big``'s
    long queue (see the module's docstring)."""
    started = time.perf_counter()
    queue_trials(http, big_trials, [tokens["big"]], "big")
    queued_seconds = time.perf_counter() - started
    worker = bearer(tokens["worker"])
    latencies: list[float] = []

    def lease(name: str) -> dict[str, Any]:
        began = time.perf_counter()
        answer = http.post("/v1/leases", json={"worker": name, "wait_seconds": 0},
                           headers=worker)
        latencies.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"no lease: {answer.status_code} {answer.text}")
        return answer.json()

    for index in range(held):  # big's workers are busy
        lease(f"busy-{index}")
    positions = []
    for round_ in range(rounds):
        small = http.post("/v1/studies", headers=bearer(tokens["small"]), json={
            "name": f"small-{round_}", "backbone": "fake", "task": "synthetic",
            "backbone_dims": DIMS.model_dump(),
            "search_space": {"num_layers": DIMS.num_layers, "hidden_size": DIMS.hidden_size},
            "optimizer": {"name": "sobol", "seed": 100 + round_},
            "budget": {"total_trials": 1, "initial_trials": 1, "max_parallel": 1,
                       "max_attempts": 1}}).json()
        while http.get(f"/v1/studies/{small['id']}", headers=bearer(tokens["small"])
                       ).json()["counts"]["ready"] < 1:
            time.sleep(0.05)
        for position in range(1, 1001):
            if lease(f"round-{round_}-{position}")["study_id"] == small["id"]:
                positions.append(position)
                break
        else:
            positions.append(None)
    return {"big_trials": big_trials, "held_leases": held, "rounds": rounds,
            "queue_seconds": round(queued_seconds, 1),
            "small_trial_lease_positions": positions,
            "worst_position": None if None in positions else max(positions),
            "lease_ms_p50": round(percentile(latencies, 0.5), 2),
            "lease_ms_p99": round(percentile(latencies, 0.99), 2),
            "leases_timed": len(latencies)}


async def _saturate(base_url: str, token: str, workers: int, seconds: float,
                    trial_mean: float, owner: dict[int, str]) -> list[tuple[float, str]]:
    """Workers looping lease -> train -> report; returns (time, tenant) per lease."""
    leases: list[tuple[float, str]] = []
    start = time.monotonic()
    headers = bearer(token)

    async def one(index: int) -> None:
        rng = random.Random(index)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            while time.monotonic() - start < seconds:
                answer = await client.post("/v1/leases", headers=headers, json={
                    "worker": f"shared-{index}", "wait_seconds": 1})
                if answer.status_code != 200:
                    continue
                held = answer.json()
                leases.append((time.monotonic() - start, owner[held["study_id"]]))
                await asyncio.sleep(rng.expovariate(1 / trial_mean))
                await client.post(f"/v1/trials/{held['trial_id']}/result", headers=headers,
                                  json={"token": held["token"], "result": result_for(held)})

    await asyncio.gather(*(one(i) for i in range(workers)))
    return leases


def saturated_share(http: httpx.Client, base_url: str, tokens: dict[str, str],
                    weights: dict[str, float], trials: int, workers: int, seconds: float,
                    trial_mean: float) -> dict[str, Any]:
    """Each saturated tenant's share of the pool's leases (see the module's docstring)."""
    owner = {}
    for tenant in weights:
        for study_id in queue_trials(http, trials, [tokens[tenant]], tenant):
            owner[study_id] = tenant
    leases = asyncio.run(_saturate(base_url, tokens["worker"], workers, seconds, trial_mean,
                                   owner))
    total = Counter(tenant for _, tenant in leases)
    minutes: dict[int, Counter[str]] = {}
    for at, tenant in leases:
        minutes.setdefault(int(at // 60), Counter())[tenant] += 1
    first = next(iter(weights))
    per_minute = [round(100 * count[first] / sum(count.values()), 1)
                  for _, count in sorted(minutes.items()) if sum(count.values()) >= 10]
    return {"weights": weights, "workers": workers, "seconds": seconds,
            "trial_mean_seconds": trial_mean, "leases": len(leases),
            "share_percent": {t: round(100 * total[t] / max(1, len(leases)), 1)
                              for t in weights},
            f"{first}_share_per_minute_percent": per_minute,
            "per_minute_min_max": [min(per_minute), max(per_minute)] if per_minute else None,
            "target_share_percent": round(100 * weights[first] / sum(weights.values()), 1)}


def run_database(kind: str, url: str, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """Both measurements on one fresh database (a server each)."""
    row: dict[str, Any] = {"database": kind}
    server = ServerProcess(url, log=log).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            tokens = make_tenants(url, {"big": 1.0, "small": 1.0})
            row["starvation"] = starvation(http, tokens, args.big_trials, args.held,
                                           args.rounds)
    finally:
        server.stop()
    print(f"{kind}: starvation {row['starvation']}", flush=True)
    # a second fresh database: the share is measured without the first part's trials
    second = (url.replace(".db", "-share.db") if kind == "sqlite"
              else create_database(args.postgres.admin_url))
    weights = {"a": args.weights[0], "b": args.weights[1]}
    server = ServerProcess(second, log=log).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            tokens = make_tenants(second, weights)
            row["saturated"] = saturated_share(http, server.base_url, tokens, weights,
                                               args.share_trials, args.share_workers,
                                               args.share_seconds, args.trial_mean)
    finally:
        server.stop()
    print(f"{kind}: saturated {row['saturated']}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--big-trials", type=int, default=30_000)
    parser.add_argument("--held", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weights", nargs=2, type=float, default=[1.0, 1.0])
    parser.add_argument("--share-trials", type=int, default=10_000)
    parser.add_argument("--share-workers", type=int, default=40)
    parser.add_argument("--share-seconds", type=float, default=600.0)
    parser.add_argument("--trial-mean", type=float, default=2.0)
    parser.add_argument("--smoke", action="store_true",
                        help="small sizes, seconds long: checks the benchmark runs")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "fair_share.json")
    args = parser.parse_args()
    if args.smoke:
        args.big_trials, args.held, args.rounds = 300, 5, 2
        args.share_trials, args.share_workers, args.share_seconds = 200, 8, 15.0
        args.trial_mean = 0.2
    runs: dict[str, Any] = {"runs": []}
    if args.output.exists():
        runs = json.loads(args.output.read_text())
    command = "python " + " ".join(sys.argv)
    with tempfile.TemporaryDirectory() as scratch:
        args.postgres = TemporaryPostgres() if "postgresql" in args.databases else None
        try:
            for kind in args.databases:
                url = (f"sqlite:///{scratch}/fair.db" if kind == "sqlite"
                       else create_database(args.postgres.admin_url))
                row = run_database(kind, url, args, Path(scratch) / f"{kind}.log")
                row.update({"command": command, "smoke": args.smoke,
                            "machine": f"{platform.node()}: {platform.processor() or '?'}, "
                            f"{os.cpu_count()} cores, server, database and "
                            "workers on one machine (loopback)",
                            "when": time.strftime("%Y-%m-%d %H:%M")})
                runs["runs"].append(row)
                if not args.smoke:
                    args.output.parent.mkdir(parents=True, exist_ok=True)
                    args.output.write_text(json.dumps(runs, indent=2) + "\n")
        finally:
            if args.postgres is not None:
                args.postgres.stop()
    print(json.dumps(runs["runs"][-len(args.databases):], indent=2))


if __name__ == "__main__":
    main()

"""How the service-load benchmark runs: a server process on a fresh database, fake workers
as asyncio tasks in client processes (closed loop: ``run_one``; open-loop fleet:
``run_fleet``), and the trials read back for the integrity check.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import queue as queue_module
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import httpx
import psutil
from service_load_problem import (
    CLOSED_LOOP,
    FLEET,
    HEARTBEAT,
    KINDS,
    LEASE,
    Event,
    expected_operations_per_second,
    fleet_schedules,
    queue_trials,
    result_for,
)
from service_load_report import (
    Ledger,
    Sample,
    integrity,
    interpolated_percentile,
    offered_operations_per_second,
    summarise,
)

from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerProcess

HEADERS = {"Authorization": f"Bearer {WORKER_TOKEN}"}
CLIENT_HEADERS = {"Authorization": f"Bearer {CLIENT_TOKEN}"}




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
                           json={"token": lease["token"], "result": result_for(lease)}
                           ) as done:
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


def _fetch_trials(http: httpx.Client, study_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Every trial of the studies (paged), each with its ``study_id``."""
    trials = []
    for study_id in study_ids:
        offset = 0
        while True:
            page = http.get(f"/v1/studies/{study_id}/trials",
                            params={"offset": offset, "limit": 500}).json()
            trials += [{**t, "study_id": study_id} for t in page["items"]]
            offset += 500
            if offset >= page["total"]:
                break
    return trials


def _tenant_tokens(url: str, tenants: int) -> tuple[list[str], str]:
    """``tenants`` tenants (``t1``...) with a member token each, and an admin token (which
    reads every tenant's studies)."""
    from autopeft_service.domain.tenancy import Role
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    database = Database(url)
    try:
        with database.session() as session:
            members = []
            for index in range(1, tenants + 1):
                repo.create_tenant(session, f"t{index}")
                members.append(repo.create_token(session, f"t{index}", Role.MEMBER)[1])
            admin = repo.create_token(session, "default", Role.ADMIN)[1]
    finally:
        database.dispose()
    return members, admin


def run_one(database: str, url: str, workers: int, seconds: float, think: float,
            log: Path, processes: int = 1, client_processes: int = 1) -> dict[str, Any]:
    """One closed-loop measurement on a fresh database; returns the row of the results
    table."""
    server = ServerProcess(url, log=log, processes=processes, lease_seconds="600",
                           long_poll_seconds="1", database_pool_size="40").start()
    try:
        total = max(2000, int(workers * (seconds / max(think, 0.05)) * 1.5)) if think else 6000
        total = min(total, 10_000)
        with httpx.Client(base_url=server.base_url, timeout=120,
                          headers=CLIENT_HEADERS) as http:
            studies = queue_trials(http, total)
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
            trials = _fetch_trials(http, studies)
    finally:
        server.stop()
    checked = integrity(trials, stats["completed"])
    cycles = len(stats["report_ms"])
    return {
        "mode": CLOSED_LOOP, "database": database, "server_processes": processes,
        "client_processes": client_processes, "workers": workers,
        "think_seconds": think,
        "seconds": round(stats["elapsed"], 1), "cycles": cycles,
        "cycles_per_second": cycles / stats["elapsed"],
        "operations_per_second": 2 * cycles / stats["elapsed"],
        "lease_p50_ms": interpolated_percentile(stats["lease_ms"], 0.5),
        "lease_p99_ms": interpolated_percentile(stats["lease_ms"], 0.99),
        "report_p50_ms": interpolated_percentile(stats["report_ms"], 0.5),
        "report_p99_ms": interpolated_percentile(stats["report_ms"], 0.99),
        "errors": len(stats["errors"]), "lost": checked["lost"],
        "duplicated": checked["duplicated"], "completed_in_db": checked["completed_in_db"],
    }


class Transport(Protocol):
    """A worker's requests: each returns the HTTP status (0: no answer) and the lease,
    the heartbeat's ``stop`` or the report's ``duplicate``."""

    async def lease(self) -> tuple[int, dict[str, Any] | None]: ...

    async def heartbeat(self, lease: dict[str, Any], step: int) -> tuple[int, bool]: ...

    async def report(self, lease: dict[str, Any]) -> tuple[int, bool]: ...


async def run_schedule(events: Sequence[Event], transport: Transport,
                       clock: Callable[[], float], give_up_at: float, ledger: Ledger,
                       sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                       retry_seconds: float = 0.2) -> None:
    """Send one worker's scheduled requests in order, each at its intended time or, when
    the previous answer came later, at once; record each answer (``Sample``).

    A lease answered 204 or with an error is sent again (its latency counts from the first
    intended time) until a trial comes or ``give_up_at`` passes; heartbeats and the report
    of a trial never leased are skipped. Past ``give_up_at`` (seconds on ``clock``) the
    remaining sends are counted as unsent.
    """
    lease: dict[str, Any] | None = None
    previous_done = -math.inf
    beats = 0
    for position, event in enumerate(events):
        if clock() > give_up_at:
            ledger.unsent += len(events) - position
            break
        wait = event.at - clock()
        if wait > 0:
            await sleep(wait)
        ready = max(event.at, previous_done)
        if event.kind == LEASE:
            if lease is not None:  # the previous trial was never reported (no answer)
                ledger.holding.add(lease["trial_id"])
            lease, sent, beats = None, clock(), 0
            while lease is None and clock() <= give_up_at:
                status, lease = await transport.lease()
                if status == 204:
                    ledger.empty += 1
                elif lease is None:
                    ledger.errors[f"lease {status}"] += 1
                    await sleep(retry_seconds)
            previous_done = clock()
            if lease is not None:
                ledger.leased[lease["trial_id"]] += 1
                ledger.samples.append(Sample(LEASE, event.at, ready, sent, previous_done))
            continue
        if lease is None:
            ledger.skipped += 1
            continue
        sent = clock()
        if event.kind == HEARTBEAT:
            beats += 1
            status, stop = await transport.heartbeat(lease, beats)
            ledger.stopped += int(status == 200 and stop)
        else:  # a report is idempotent by its token: sent again after an error, as a
            # real worker does (else a result stored but unanswered would look lost)
            while True:
                status, duplicate = await transport.report(lease)
                if status in (200, 404, 409, 422) or clock() > give_up_at:
                    break
                ledger.errors[f"{event.kind} {status}"] += 1
                await sleep(retry_seconds)
            if status == 200 and not duplicate:
                ledger.completed[lease["trial_id"]] += 1
            if status in (200, 404, 409, 422):
                lease = None  # the trial is no longer this worker's
        previous_done = clock()
        if status == 200:
            ledger.samples.append(Sample(event.kind, event.at, ready, sent, previous_done))
        else:
            ledger.errors[f"{event.kind} {status}"] += 1
    if lease is not None:
        ledger.holding.add(lease["trial_id"])


class HttpTransport:
    """The worker protocol over one aiohttp session (one keep-alive connection)."""

    def __init__(self, client: aiohttp.ClientSession, name: str) -> None:
        self.client = client
        self.name = name

    async def lease(self) -> tuple[int, dict[str, Any] | None]:
        try:
            async with self.client.post("/v1/leases", json={"worker": self.name,
                                                            "wait_seconds": 1}) as response:
                body = await response.read()
                return response.status, json.loads(body) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def heartbeat(self, lease: dict[str, Any], step: int) -> tuple[int, bool]:
        body = {"token": lease["token"],
                "progress": {"step": step, "total_steps": 1000, "loss": 0.5}}
        try:
            async with self.client.post(f"/v1/trials/{lease['trial_id']}/heartbeat",
                                        json=body) as response:
                answer = await response.read()
                return response.status, (response.status == 200
                                         and bool(json.loads(answer)["stop"]))
        except (aiohttp.ClientError, TimeoutError):
            return 0, False

    async def report(self, lease: dict[str, Any]) -> tuple[int, bool]:
        try:
            async with self.client.post(f"/v1/trials/{lease['trial_id']}/result",
                                        json={"token": lease["token"],
                                              "result": result_for(lease)}) as response:
                answer = await response.read()
                return response.status, (response.status == 200
                                         and bool(json.loads(answer)["duplicate"]))
        except (aiohttp.ClientError, TimeoutError):
            return 0, False


@dataclass(frozen=True)
class FleetConfig:
    """What every client process needs to rebuild its workers' schedules."""

    base_url: str
    workers: int
    seed: int
    trial_mean: float
    heartbeat_seconds: float
    seconds: float
    drain: float


async def _fleet_load(config: FleetConfig, schedules: Mapping[int, list[Event]],
                      t0: float) -> Ledger:
    """Run the schedules against the server from monotonic time ``t0``."""
    ledger = Ledger()

    def clock() -> float:
        return time.monotonic() - t0

    async def one(index: int, events: list[Event]) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(config.base_url, connector=connector,
                                         headers=HEADERS,
                                         timeout=aiohttp.ClientTimeout(total=60)) as client:
            await run_schedule(events, HttpTransport(client, f"fleet-{index}"), clock,
                               config.seconds + config.drain, ledger)

    await asyncio.gather(*[one(index, events) for index, events in schedules.items()])
    return ledger


def _fleet_process(config: dict[str, Any], indices: list[int], ready: multiprocessing.Queue,
                   start: Any, go: Any, results: multiprocessing.Queue) -> None:
    """A client process: its workers' schedules, then, from the shared start time, the
    fleet; sends back its ledger (builtins) and CPU seconds."""
    import uvloop

    fleet = FleetConfig(**config)
    schedules = fleet_schedules(fleet.workers, fleet.seed, fleet.trial_mean,
                                fleet.heartbeat_seconds, fleet.seconds, indices)
    ready.put(os.getpid())
    go.wait()
    cpu = time.process_time()
    ledger = uvloop.run(_fleet_load(fleet, schedules, start.value))
    results.put((ledger.plain(), time.process_time() - cpu))


def _start_client(context: Any, *args: Any) -> Any:
    """A spawned process running ``_fleet_process(*args)``: the child imports this module
    by its name from the parent's ``sys.path`` (the benchmarks folder), whatever name the
    parent loaded the script under."""
    process = context.Process(target=_fleet_process, args=args)
    process.start()
    return process


def _collect(queue: multiprocessing.Queue, clients: list[Any], timeout: float) -> list[Any]:
    """One item from each client process, failing fast when one died."""
    items: list[Any] = []
    end = time.monotonic() + timeout
    while len(items) < len(clients):
        try:
            items.append(queue.get(timeout=1.0))
        except queue_module.Empty:
            dead = [c.exitcode for c in clients if c.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a fleet client process failed (exit codes {dead})") from None
            if time.monotonic() > end:
                raise TimeoutError("the fleet client processes did not answer") from None
    return items


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of process ``pid`` and its descendants (live ones, plus those it
    reaped); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process, found from a backend's parent."""
    if not url.startswith("postgresql"):
        return None
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as db:
        backend = db.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        return psutil.Process(backend).ppid()
    except psutil.NoSuchProcess:
        return None


def run_fleet(database: str, url: str, workers: int, seconds: float, trial_mean: float,
              heartbeat_seconds: float, log: Path, processes: int = 1,
              client_processes: int = 1, seed: int = 0, warmup: float = 0.0,
              drain: float = 30.0, tenants: int = 1) -> dict[str, Any]:
    """One open-loop fleet measurement on a fresh database; returns its row. With
    ``tenants`` above 1 the trials belong to that many tenants' studies (the shared pool
    serves them by fair share); otherwise to the environment token's default tenant."""
    if not 0 <= warmup < seconds:
        raise ValueError(f"--warmup must be in [0, --seconds), got {warmup}")
    schedules = fleet_schedules(workers, seed, trial_mean, heartbeat_seconds, seconds)
    needed = sum(1 for events in schedules.values() for e in events if e.kind == LEASE)
    server = ServerProcess(url, log=log, processes=processes, lease_seconds="600",
                           long_poll_seconds="1", database_pool_size="40").start()
    try:
        headers = CLIENT_HEADERS
        members: list[str] = []
        if tenants > 1:
            members, admin = _tenant_tokens(url, tenants)
            headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=server.base_url, timeout=120, headers=headers) as http:
            studies = queue_trials(http, needed + needed // 100 + 20, members)
            postmaster = _postmaster_pid(url)
            config = asdict(FleetConfig(server.base_url, workers, seed, trial_mean,
                                        heartbeat_seconds, seconds, drain))
            context = multiprocessing.get_context("spawn")
            ready, results = context.Queue(), context.Queue()
            start, go = context.Value("d", 0.0), context.Event()
            clients = [_start_client(context, config, list(range(workers))[k::client_processes],
                                     ready, start, go, results)
                       for k in range(client_processes)]
            _collect(ready, clients, 300)
            server_cpu, database_cpu = _tree_cpu(server.process.pid), _tree_cpu(postmaster)
            start.value = time.monotonic() + 0.5
            go.set()
            ledger, client_cpu = Ledger(), []
            for part, cpu in _collect(results, clients, seconds + drain + 300):
                ledger.merge(Ledger.from_plain(part))
                client_cpu.append(cpu)
            elapsed = time.monotonic() - start.value
            server_cpu = _tree_cpu(server.process.pid) - server_cpu
            database_cpu = _tree_cpu(postmaster) - database_cpu
            for client in clients:
                client.join(60)
            trials = _fetch_trials(http, studies)
    finally:
        server.stop()
    checked = integrity(trials, ledger.completed, ledger.leased, ledger.holding)
    summary = summarise(ledger.samples, warmup, seconds)
    answered = len(ledger.samples)
    row: dict[str, Any] = {
        "mode": FLEET, "database": database, "server_processes": processes, "tenants": tenants,
        "client_processes": client_processes, "workers": workers,
        "trial_mean_seconds": trial_mean, "heartbeat_seconds": heartbeat_seconds,
        "seconds": seconds, "warmup_seconds": warmup, "seed": seed,
        "offered_ops_per_second": offered_operations_per_second(schedules, warmup, seconds),
        "steady_offered_ops_per_second": expected_operations_per_second(
            workers, trial_mean, heartbeat_seconds),
        "achieved_ops_per_second": summary["achieved_ops_per_second"],
    }
    for kind in KINDS:
        row.update({f"{kind}_{key}": value for key, value in summary[kind].items()})
    row.update({
        "generator_lag_p99_ms": summary["generator_lag_p99_ms"],
        "client_cpu_fraction_max": max(client_cpu) / elapsed,
        "server_cpu_ms_per_op": 1000 * server_cpu / max(answered, 1),
        "database_cpu_ms_per_op": 1000 * database_cpu / max(answered, 1)
        if postmaster else None,
        "errors": sum(ledger.errors.values()), "error_kinds": dict(ledger.errors),
        "empty_leases": ledger.empty, "skipped": ledger.skipped, "stopped": ledger.stopped,
        "unsent": ledger.unsent, "trials_queued": len(trials),
        "trials_leased": len(ledger.leased), **checked,
    })
    return row

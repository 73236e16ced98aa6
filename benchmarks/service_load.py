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
    # the same fleet with 5 s trials (~1,000 ops/s offered; about 50,000 trials queued first)
    .venv/bin/python benchmarks/service_load.py --fleet --databases postgresql --workers 2000 \
        --trial-mean 5 --heartbeat-seconds 10 --seconds 120 --warmup 20 \
        --server-processes 1 2 --client-processes 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import queue as queue_module
import random
import resource
import runpy
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import httpx
import psutil

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.testing.postgres import TemporaryPostgres, create_database
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerProcess

RESULT = {"metric": "accuracy", "objective": 0.8, "held_out": {"accuracy": 0.8},
          "dev": {"accuracy": 0.8}, "dev_score": 0.8, "trainable_parameters": 10,
          "trainable_percent": 1.0, "deployed_parameters": 10, "head_parameters": 2,
          "train_seconds": 0.0, "eval_seconds": 0.0, "load_seconds": 0.0, "steps": 1,
          "train_examples": 1, "examples_per_second": 1.0, "final_loss": 0.1,
          "peak_memory_mb": 0.0, "device": "fake", "seed": 0, "config_description": "fake"}
HEADERS = {"Authorization": f"Bearer {WORKER_TOKEN}"}
CLIENT_HEADERS = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
#: The studies' backbone (the server checks reported parameter counts against it).
DIMS = MINILM_DIMS
CLOSED_LOOP = "closed loop (capacity)"
#: The module name a fleet client process runs this file under.
FLEET_CLIENT = "__fleet_client__"
FLEET = "open-loop fleet"
#: A study keeps at most this many trials ready or running (``Budget.max_parallel``'s
#: bound): a fleet needing more gets several studies (a lease takes the oldest of any).
STUDY_TRIALS = 10_000


# --------------------------------------------------------------------------- closed loop


def result_for(lease: Mapping[str, Any]) -> dict[str, Any]:
    """A result for ``lease`` whose parameter counts are its configuration's on the
    study's backbone, as a real worker reports them (the server fails a trial whose
    counts differ from its own)."""
    counts = count_parameters(PeftConfig.model_validate(lease["config"]),
                              BackboneDims.model_validate(lease["backbone_dims"]))
    return {**RESULT, "trainable_parameters": counts.trainable,
            "trainable_percent": counts.trainable_percent,
            "deployed_parameters": counts.deployed}


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


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else \
        (values[0] if values else float("nan"))


def integrity(trials: Sequence[Mapping[str, Any]], completed: Mapping[int, int],
              leased: Mapping[int, int] | None = None,
              holding: Collection[int] = ()) -> dict[str, int]:
    """Trials lost and duplicated, from the database's trials after a run and what the
    fake workers saw.

    Args:
        trials: every trial of the run's studies (``GET /v1/studies/{id}/trials`` items).
        completed: non-duplicate completions the workers got, by trial id.
        leased: leases the workers got, by trial id (None: not tracked).
        holding: trials the workers held (leased, not reported) when the run ended.

    Returns:
        ``lost``: completions not stored, held trials the database no longer shows leased,
        trials in a state a clean run never reaches (failed, cancelled, pruned), plus one
        per study whose numbers are not 0..n-1; ``duplicated``: trials completed twice or
        leased twice; ``completed_in_db``; ``orphaned``: trials leased in the database
        that no worker held at the end (a lease answer lost in transit).
    """
    completed_db = {t["id"] for t in trials if t["state"] == "completed"}
    leased_db = {t["id"] for t in trials if t["state"] == "leased"}
    twice = {trial for trial, count in completed.items() if count > 1}
    twice |= {trial for trial, count in (leased or {}).items() if count > 1}
    numbers: dict[int, list[int]] = {}
    for trial in trials:
        numbers.setdefault(trial.get("study_id", 0), []).append(trial["number"])
    gaps = sum(1 for found in numbers.values() if sorted(found) != list(range(len(found))))
    lost = (len({int(k) for k in completed} - completed_db)  # reported, not stored
            + len(set(holding) - leased_db)  # held, but no longer leased
            + sum(1 for t in trials if t["state"] not in ("completed", "ready", "leased"))
            + gaps)
    return {"lost": lost, "duplicated": len(twice), "completed_in_db": len(completed_db),
            "orphaned": len(leased_db - set(holding)) if leased is not None else 0}


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


def _queue_trials(http: httpx.Client, total: int) -> list[int]:
    """Studies holding ``total`` ready trials in all (Sobol, everything proposed at once,
    at most ``STUDY_TRIALS`` per study); returns their ids once every trial is ready."""
    ids = []
    left = total
    while left > 0:
        size = min(left, STUDY_TRIALS)
        left -= size
        spec = {"name": f"load-{len(ids)}", "backbone": "fake", "task": "synthetic",
                "backbone_dims": DIMS.model_dump(),
                "search_space": {"num_layers": DIMS.num_layers,
                                 "hidden_size": DIMS.hidden_size},
                "optimizer": {"name": "sobol", "seed": len(ids)},
                "budget": {"total_trials": size, "initial_trials": size,
                           "max_parallel": size, "max_attempts": 1}}
        response = http.post("/v1/studies", json=spec)
        if response.status_code != 201:
            raise RuntimeError(f"the study was refused: {response.text}")
        ids.append((response.json()["id"], size))
    for study_id, size in ids:
        while http.get(f"/v1/studies/{study_id}").json()["counts"]["ready"] < size:
            time.sleep(0.2)
    return [study_id for study_id, _ in ids]


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
            studies = _queue_trials(http, total)
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
        "lease_p50_ms": _percentile(stats["lease_ms"], 0.5),
        "lease_p99_ms": _percentile(stats["lease_ms"], 0.99),
        "report_p50_ms": _percentile(stats["report_ms"], 0.5),
        "report_p99_ms": _percentile(stats["report_ms"], 0.99),
        "errors": len(stats["errors"]), "lost": checked["lost"],
        "duplicated": checked["duplicated"], "completed_in_db": checked["completed_in_db"],
    }


# --------------------------------------------------------------------------- open-loop fleet

LEASE, HEARTBEAT, REPORT = "lease", "heartbeat", "report"
KINDS = (LEASE, HEARTBEAT, REPORT)


@dataclass(frozen=True)
class Event:
    """One request a simulated worker means to send.

    Attributes:
        at: intended send time, seconds after the fleet's clock started.
        kind: ``lease``, ``heartbeat`` or ``report``.
        trial: index of the trial in the worker's sequence.
    """

    at: float
    kind: str
    trial: int


def heartbeat_offsets(first: float, period: float, duration: float) -> list[float]:
    """A trial's heartbeats, as offsets from its lease: ``first``, ``first + period``, ...,
    each strictly before ``duration`` (the report)."""
    if period <= 0:
        raise ValueError(f"the heartbeat period must be positive, got {period}")
    count = max(0, math.ceil((duration - first) / period))
    return [first + k * period for k in range(count)]


def worker_schedule(rng: random.Random, trial_mean: float, heartbeat_seconds: float,
                    horizon: float) -> list[Event]:
    """One worker's timeline, every intended send before ``horizon``, in order.

    The worker starts at a uniform offset in ``[0, heartbeat_seconds)``; each trial lasts
    an exponential time of mean ``trial_mean``; its heartbeats begin at a uniform offset in
    ``[0, heartbeat_seconds)`` after the lease and repeat every ``heartbeat_seconds`` until
    the report; the next lease is due at the report's time (a real worker leases again at
    once). Nothing here depends on the server: the arrivals are open-loop.
    """
    events: list[Event] = []
    start = rng.uniform(0.0, heartbeat_seconds)
    trial = 0
    while start < horizon:
        duration = rng.expovariate(1.0 / trial_mean)
        first = rng.uniform(0.0, heartbeat_seconds)
        events.append(Event(start, LEASE, trial))
        for offset in heartbeat_offsets(first, heartbeat_seconds, duration):
            if start + offset >= horizon:
                break
            events.append(Event(start + offset, HEARTBEAT, trial))
        end = start + duration
        if end < horizon:
            events.append(Event(end, REPORT, trial))
        start = end
        trial += 1
    return events


def worker_rng(seed: int, index: int) -> random.Random:
    """Worker ``index``'s generator: the same schedule in any process, for one seed."""
    return random.Random(f"fleet:{seed}:{index}")


def fleet_schedules(workers: int, seed: int, trial_mean: float, heartbeat_seconds: float,
                    horizon: float, indices: Sequence[int] | None = None
                    ) -> dict[int, list[Event]]:
    """The schedules of workers ``indices`` (default all), by index."""
    chosen = range(workers) if indices is None else indices
    return {i: worker_schedule(worker_rng(seed, i), trial_mean, heartbeat_seconds, horizon)
            for i in chosen}


def expected_operations_per_second(workers: int, trial_mean: float,
                                   heartbeat_seconds: float) -> float:
    """The fleet's steady offered load: per trial one lease, one report and on average
    ``trial_mean / heartbeat_seconds`` heartbeats (the first one's offset is uniform)."""
    return workers * (2.0 + trial_mean / heartbeat_seconds) / trial_mean


@dataclass(frozen=True)
class Sample:
    """One answered request, times in seconds after the fleet's clock started.

    Attributes:
        kind: ``lease``, ``heartbeat`` or ``report``.
        intended: when the schedule meant to send it.
        ready: when the worker could first send it: the later of ``intended`` and its
            previous answer (``sent - ready`` is the load generator's own lag).
        sent: when it was sent (a lease: its first attempt).
        done: when its answer arrived.
    """

    kind: str
    intended: float
    ready: float
    sent: float
    done: float

    @property
    def latency(self) -> float:
        """From the intended send time (coordinated-omission aware)."""
        return self.done - self.intended

    @property
    def service(self) -> float:
        """From the actual send (what a closed-loop client would report)."""
        return self.done - self.sent


@dataclass
class Ledger:
    """What the simulated workers of one process saw."""

    samples: list[Sample] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # "kind status" -> count
    leased: Counter = field(default_factory=Counter)  # trial id -> leases
    completed: Counter = field(default_factory=Counter)  # trial id -> non-duplicate reports
    holding: set[int] = field(default_factory=set)  # leased, not reported, at the end
    empty: int = 0  # lease answers without a trial (204)
    skipped: int = 0  # heartbeats and reports of a trial whose lease never came
    stopped: int = 0  # heartbeats answered "stop"
    unsent: int = 0  # scheduled sends given up after the drain deadline

    def plain(self) -> dict[str, Any]:
        """Builtins only: what a client process sends back (it runs this file under
        another module name, so its classes would not unpickle in the parent)."""
        return {"samples": [(s.kind, s.intended, s.ready, s.sent, s.done)
                            for s in self.samples],
                "errors": dict(self.errors), "leased": dict(self.leased),
                "completed": dict(self.completed), "holding": sorted(self.holding),
                "empty": self.empty, "skipped": self.skipped, "stopped": self.stopped,
                "unsent": self.unsent}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(samples=[Sample(*s) for s in data["samples"]],
                   errors=Counter(data["errors"]), leased=Counter(data["leased"]),
                   completed=Counter(data["completed"]), holding=set(data["holding"]),
                   empty=data["empty"], skipped=data["skipped"], stopped=data["stopped"],
                   unsent=data["unsent"])

    def merge(self, other: Ledger) -> None:
        self.samples += other.samples
        self.errors.update(other.errors)
        self.leased.update(other.leased)
        self.completed.update(other.completed)
        self.holding |= other.holding
        for name in ("empty", "skipped", "stopped", "unsent"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


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
    """A spawned process running ``_fleet_process(*args)`` from this file, whatever name
    it was imported under (a test loads it as ``bench_service_load``, which a spawned
    child cannot import): the target is ``runpy.run_path`` on this file."""
    process = context.Process(target=runpy.run_path, args=(__file__,), kwargs={
        "init_globals": {"FLEET_CLIENT_ARGS": args}, "run_name": FLEET_CLIENT})
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


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) - 1e-9)  # 0.99 * 100 is 99, not 99.000...01
    return ordered[min(len(ordered), max(1, rank)) - 1]


def summarise(samples: Sequence[Sample], start: float, end: float) -> dict[str, Any]:
    """Latency (from the intended send, ms) and service time of the samples intended in
    ``[start, end)``, by kind; achieved operations/s: answers that arrived in the window."""
    out: dict[str, Any] = {}
    window = [s for s in samples if start <= s.intended < end]
    for kind in KINDS:
        chosen = [s for s in window if s.kind == kind]
        latency = [1000 * s.latency for s in chosen]
        service = [1000 * s.service for s in chosen]
        out[kind] = {"count": len(chosen), "p50_ms": percentile(latency, 0.5),
                     "p99_ms": percentile(latency, 0.99),
                     "p999_ms": percentile(latency, 0.999),
                     "max_ms": max(latency, default=float("nan")),
                     "service_p50_ms": percentile(service, 0.5),
                     "service_p99_ms": percentile(service, 0.99)}
    lag = [1000 * (s.sent - s.ready) for s in window]
    out["generator_lag_p99_ms"] = percentile(lag, 0.99)
    out["achieved_ops_per_second"] = sum(1 for s in samples if start <= s.done < end) / (
        end - start)
    return out


def offered_operations_per_second(schedules: Mapping[int, Sequence[Event]], start: float,
                                  end: float) -> float:
    """Scheduled sends intended in ``[start, end)``, per second."""
    return sum(1 for events in schedules.values() for e in events
               if start <= e.at < end) / (end - start)


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
              drain: float = 30.0) -> dict[str, Any]:
    """One open-loop fleet measurement on a fresh database; returns its row."""
    if not 0 <= warmup < seconds:
        raise ValueError(f"--warmup must be in [0, --seconds), got {warmup}")
    schedules = fleet_schedules(workers, seed, trial_mean, heartbeat_seconds, seconds)
    needed = sum(1 for events in schedules.values() for e in events if e.kind == LEASE)
    server = ServerProcess(url, log=log, processes=processes, lease_seconds="600",
                           long_poll_seconds="1", database_pool_size="40").start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=120,
                          headers=CLIENT_HEADERS) as http:
            studies = _queue_trials(http, needed + needed // 100 + 20)
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
        "mode": FLEET, "database": database, "server_processes": processes,
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


# --------------------------------------------------------------------------- main


def append_row(path: Path, command: str, row: dict[str, Any], new_run: bool,
               note: str | None = None) -> None:
    """Add ``row`` to the last run in ``path``, or to a new run of ``command`` (each
    invocation's first row), keeping every earlier run: a sweep cut short keeps the rows
    it measured."""
    data = json.loads(path.read_text()) if path.exists() else {"runs": []}
    runs = data.setdefault("runs", [])
    if new_run or not runs:
        runs.append({"command": command, "machine": f"{platform.node()}: "
                     f"{multiprocessing.cpu_count()} cores, server, database and fake "
                     "workers on one machine (loopback)", "note": note, "rows": []})
    runs[-1]["rows"].append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _fleet_table(rows: list[dict[str, Any]]) -> None:
    print(f"{FLEET} (latency from the intended send time, p50 / p99 / p999 ms)")
    print("| database | server processes | workers | trial mean s | heartbeat s | offered ops/s "
          "| achieved ops/s | lease | heartbeat | report | lost | duplicated |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|")
    for r in rows:
        cells = [" / ".join(f"{r[f'{kind}_{q}_ms']:.0f}" for q in ("p50", "p99", "p999"))
                 for kind in KINDS]
        print(f"| {r['database']} | {r['server_processes']} | {r['workers']} | "
              f"{r['trial_mean_seconds']:g} | {r['heartbeat_seconds']:g} | "
              f"{r['offered_ops_per_second']:.0f} | {r['achieved_ops_per_second']:.0f} | "
              f"{' | '.join(cells)} | {r['lost']} | {r['duplicated']} |")


def _closed_table(rows: list[dict[str, Any]]) -> None:
    print(f"{CLOSED_LOOP}")
    print("| database | server processes | workers | think s | cycles/s | ops/s | lease p50 ms | "
          "lease p99 ms | report p99 ms | lost | duplicated |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['database']} | {r['server_processes']} | {r['workers']} | "
              f"{r['think_seconds']:g} | "
              f"{r['cycles_per_second']:.0f} | {r['operations_per_second']:.0f} | "
              f"{r['lease_p50_ms']:.1f} | {r['lease_p99_ms']:.1f} | {r['report_p99_ms']:.1f} | "
              f"{r['lost']} | {r['duplicated']} |")


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
                                args.seed, args.warmup, args.drain)
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
        _fleet_table(rows)
        print(f"appended to: {output}")
        return
    _closed_table(rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    print(f"written: {output}")


if __name__ == "__main__":
    main()
elif __name__ == FLEET_CLIENT:  # a fleet client process (``_start_client``)
    _fleet_process(*FLEET_CLIENT_ARGS)  # type: ignore[name-defined]  # noqa: F821

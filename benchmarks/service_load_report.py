"""What the service-load benchmark measures and reports: the samples and their ledger,
nearest-rank percentiles, the window summary, the database integrity check, and the
results file and tables.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import platform
import statistics
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_load_problem import CLOSED_LOOP, FLEET, KINDS, Event


def interpolated_percentile(values: list[float], q: float) -> float:
    """The closed loop's ``q`` quantile (statistics.quantiles, per mille); NaN when empty."""
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


def fleet_table(rows: list[dict[str, Any]]) -> None:
    """Print the open-loop fleet rows as a Markdown table."""
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


def closed_table(rows: list[dict[str, Any]]) -> None:
    """Print the closed-loop rows as a Markdown table."""
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

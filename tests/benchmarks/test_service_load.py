"""The service-load benchmark's open-loop fleet (benchmarks/service_load.py --fleet): the
schedule generator, coordinated-omission-aware latency accounting, the integrity check,
and a tiny run against a real server on SQLite."""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.conftest import load_benchmark

sl = load_benchmark("service_load")


# --------------------------------------------------------------------------- the schedule


def test_heartbeats_fall_every_period_strictly_before_the_report() -> None:
    assert sl.heartbeat_offsets(3.0, 10.0, 25.0) == [3.0, 13.0, 23.0]
    assert sl.heartbeat_offsets(3.0, 10.0, 23.0) == [3.0, 13.0]  # none at the report
    assert sl.heartbeat_offsets(3.0, 10.0, 3.0) == []  # shorter than the first offset
    assert sl.heartbeat_offsets(0.5, 2.0, 60.0) == [0.5 + 2 * k for k in range(30)]
    with pytest.raises(ValueError):
        sl.heartbeat_offsets(0.0, 0.0, 1.0)


def _trials(events: list[Any]) -> dict[int, list[Any]]:
    by_trial: dict[int, list[Any]] = {}
    for event in events:
        by_trial.setdefault(event.trial, []).append(event)
    return by_trial


def test_each_trial_is_a_lease_its_heartbeats_and_a_report_and_the_next_lease_is_at_once(
        ) -> None:
    period, horizon = 2.0, 400.0
    events = sl.worker_schedule(random.Random(7), 5.0, period, horizon)
    assert events[0].kind == sl.LEASE and 0 <= events[0].at < period  # random start offset
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert all(e.at < horizon for e in events)
    trials = _trials(events)
    complete = [t for t in trials.values() if t[-1].kind == sl.REPORT]
    assert len(complete) > 50
    for trial in complete:
        lease, *beats, report = trial
        assert lease.kind == sl.LEASE and {b.kind for b in beats} <= {sl.HEARTBEAT}
        duration = report.at - lease.at
        first = beats[0].at - lease.at if beats else None
        # the count is the number of periods that fit after the first offset
        if first is not None:
            assert 0 <= first < period
            assert len(beats) == len(sl.heartbeat_offsets(first, period, duration))
            assert all(b2.at - b1.at == pytest.approx(period) for b1, b2 in zip(beats, beats[1:], strict=False))
            assert beats[-1].at < report.at <= beats[-1].at + period
    for number in range(len(trials) - 1):  # open loop: the next lease at the report's time
        if trials[number][-1].kind == sl.REPORT:
            assert trials[number + 1][0].at == trials[number][-1].at


def test_trial_durations_are_exponential_with_the_given_mean() -> None:
    events = sl.worker_schedule(random.Random(0), 60.0, 10.0, 600_000.0)
    durations = [t[-1].at - t[0].at for t in _trials(events).values()
                 if t[-1].kind == sl.REPORT]
    assert len(durations) > 9000
    mean = statistics.fmean(durations)
    assert mean == pytest.approx(60.0, rel=0.03)
    assert statistics.pstdev(durations) == pytest.approx(mean, rel=0.05)  # exponential: sd = mean
    assert statistics.median(durations) == pytest.approx(60.0 * 0.6931, rel=0.05)
    beats = sum(1 for e in events if e.kind == sl.HEARTBEAT)
    assert beats / len(durations) == pytest.approx(60.0 / 10.0, rel=0.05)  # T / H per trial


def test_schedules_are_reproducible_per_seed_and_worker() -> None:
    one = sl.fleet_schedules(5, seed=3, trial_mean=5.0, heartbeat_seconds=2.0, horizon=30.0)
    again = sl.fleet_schedules(5, seed=3, trial_mean=5.0, heartbeat_seconds=2.0, horizon=30.0,
                               indices=[4, 2])
    assert again == {4: one[4], 2: one[2]}  # a client process rebuilds its share alike
    assert one[0] != one[1]
    other = sl.fleet_schedules(5, seed=4, trial_mean=5.0, heartbeat_seconds=2.0, horizon=30.0)
    assert other[0] != one[0]


def test_the_offered_load_is_the_fleets_steady_rate() -> None:
    schedules = sl.fleet_schedules(2000, seed=0, trial_mean=60.0, heartbeat_seconds=10.0,
                                   horizon=180.0)
    offered = sl.offered_operations_per_second(schedules, 20.0, 180.0)
    assert sl.expected_operations_per_second(2000, 60.0, 10.0) == pytest.approx(266.67, rel=1e-3)
    assert offered == pytest.approx(266.67, rel=0.03)


# --------------------------------------------------------------------------- accounting


class FakeClock:
    """Virtual time: sleeping and requests advance it, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class FakeTransport:
    """Answers after fixed virtual delays; leases answer 204 ``empty`` times first, and
    reports fail ``report_errors`` times first."""

    def __init__(self, clock: FakeClock, lease: float = 0.01, heartbeat: float = 0.01,
                 report: float = 0.01, empty: int = 0, report_errors: int = 0) -> None:
        self.clock, self.delays = clock, {"lease": lease, "heartbeat": heartbeat,
                                          "report": report}
        self.empty, self.report_errors = empty, report_errors
        self.trial = 0
        self.sent: list[tuple[str, float]] = []

    async def _take(self, kind: str) -> None:
        self.sent.append((kind, self.clock.now))
        self.clock.now += self.delays[kind]

    async def lease(self) -> tuple[int, dict[str, Any] | None]:
        await self._take("lease")
        if self.empty:
            self.empty -= 1
            return 204, None
        self.trial += 1
        return 200, {"trial_id": self.trial, "token": f"t{self.trial}"}

    async def heartbeat(self, lease: dict[str, Any], step: int) -> tuple[int, bool]:
        await self._take("heartbeat")
        return 200, False

    async def report(self, lease: dict[str, Any]) -> tuple[int, bool]:
        await self._take("report")
        if self.report_errors:
            self.report_errors -= 1
            return 0, False
        return 200, False


def _run(events: list[Any], transport: FakeTransport, clock: FakeClock,
         give_up_at: float = 100.0) -> Any:
    ledger = sl.Ledger()
    asyncio.run(sl.run_schedule(events, transport, clock, give_up_at, ledger,
                                sleep=clock.sleep, retry_seconds=0.1))
    return ledger


def test_latency_counts_from_the_intended_send_time_when_a_slow_answer_held_sends_back(
        ) -> None:
    E = sl.Event
    events = [E(0.0, "lease", 0), E(1.0, "heartbeat", 0), E(2.0, "heartbeat", 0),
              E(3.0, "report", 0), E(3.0, "lease", 1), E(4.0, "heartbeat", 1)]
    clock = FakeClock()
    transport = FakeTransport(clock, lease=2.5)  # the first lease blocks for 2.5 s
    ledger = _run(events[:4], transport, clock)
    # sent as soon as the worker could: the heartbeats due at 1 s and 2 s left at 2.5 s
    assert [t for _, t in transport.sent] == pytest.approx([0.0, 2.5, 2.51, 3.0])
    by_kind = {(s.kind, s.intended): s for s in ledger.samples}
    assert by_kind[("lease", 0.0)].latency == pytest.approx(2.5)
    assert by_kind[("heartbeat", 1.0)].latency == pytest.approx(1.51)  # not 10 ms
    assert by_kind[("heartbeat", 1.0)].service == pytest.approx(0.01)
    assert by_kind[("heartbeat", 2.0)].latency == pytest.approx(0.52)
    assert by_kind[("report", 3.0)].latency == pytest.approx(0.01)
    assert all(s.sent == pytest.approx(s.ready) for s in ledger.samples)  # no generator lag
    summary = sl.summarise(ledger.samples, 0.0, 10.0)
    assert summary["heartbeat"]["p99_ms"] == pytest.approx(1510.0)
    assert summary["heartbeat"]["service_p99_ms"] == pytest.approx(10.0)
    assert ledger.completed == {1: 1} and ledger.holding == set()

    # the next lease is due with the report: its latency includes the report's answer time
    clock = FakeClock()
    ledger = _run(events, FakeTransport(clock, report=0.4), clock)
    assert {(s.kind, s.intended): s for s in ledger.samples}[("lease", 3.0)].latency == \
        pytest.approx(0.41)
    assert ledger.holding == {2}  # leased, never reported: still held at the end


def test_an_empty_lease_is_asked_again_and_its_wait_counts() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, lease=1.0, empty=2)  # two long polls answered 204
    ledger = _run([sl.Event(0.5, "lease", 0), sl.Event(1.0, "heartbeat", 0)], transport,
                  clock)
    assert ledger.empty == 2 and ledger.leased == {1: 1}
    (lease,) = [s for s in ledger.samples if s.kind == "lease"]
    assert lease.latency == pytest.approx(3.0) and lease.sent == 0.5


def test_a_failed_report_is_sent_again_and_counted_once() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, report_errors=2)
    ledger = _run([sl.Event(0.0, "lease", 0), sl.Event(1.0, "report", 0)], transport, clock)
    assert [k for k, _ in transport.sent] == ["lease", "report", "report", "report"]
    assert ledger.completed == {1: 1} and ledger.errors == {"report 0": 2}
    (report,) = [s for s in ledger.samples if s.kind == "report"]
    assert report.latency == pytest.approx(0.23)  # two failures, two retry waits, success


def test_sends_behind_the_drain_deadline_are_given_up_and_counted() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, lease=5.0)
    events = [sl.Event(0.0, "lease", 0)] + [sl.Event(float(t), "heartbeat", 0)
                                            for t in range(1, 5)]
    ledger = _run(events, transport, clock, give_up_at=2.0)
    assert ledger.unsent == 4 and ledger.holding == {1}


def test_percentiles_are_nearest_rank_and_the_window_filters_by_intended_time() -> None:
    values = [float(v) for v in range(1, 101)]
    assert sl.percentile(values, 0.5) == 50.0
    assert sl.percentile(values, 0.99) == 99.0
    assert sl.percentile(values, 0.999) == 100.0
    assert sl.percentile([], 0.5) != sl.percentile([], 0.5)  # NaN
    samples = [sl.Sample("heartbeat", at, at, at, at + 0.1) for at in (0.5, 1.5, 2.5, 9.95)]
    summary = sl.summarise(samples, 1.0, 10.0)
    assert summary["heartbeat"]["count"] == 3  # intended before the warmup: not counted
    assert summary["achieved_ops_per_second"] == pytest.approx(2 / 9)  # answered in window
    assert summary["lease"]["count"] == 0


def test_integrity_finds_lost_and_duplicated_trials() -> None:
    def trial(id_: int, number: int, state: str, study: int = 1) -> dict[str, Any]:
        return {"id": id_, "number": number, "state": state, "study_id": study}

    clean = [trial(1, 0, "completed"), trial(2, 1, "leased"), trial(3, 2, "ready"),
             trial(4, 0, "ready", study=2)]
    ok = sl.integrity(clean, completed={1: 1}, leased={1: 1, 2: 1}, holding={2})
    assert ok == {"lost": 0, "duplicated": 0, "completed_in_db": 1, "orphaned": 0}
    assert sl.integrity(clean, completed={1: 1, 3: 1}, leased={})["lost"] == 1  # not stored
    assert sl.integrity(clean, completed={}, leased={}, holding={3})["lost"] == 1  # not leased
    assert sl.integrity([*clean, trial(5, 3, "failed")], completed={})["lost"] == 1
    assert sl.integrity([trial(1, 0, "ready"), trial(2, 2, "ready")], completed={})["lost"] == 1
    assert sl.integrity(clean, completed={1: 2})["duplicated"] == 1
    assert sl.integrity(clean, completed={1: 1}, leased={1: 2, 2: 1},
                        holding={2})["duplicated"] == 1
    assert sl.integrity(clean, completed={}, leased={2: 1}, holding=set())["orphaned"] == 1


# --------------------------------------------------------------------------- end to end


def test_a_tiny_fleet_against_a_real_server_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    row = sl.run_fleet("sqlite", f"sqlite:///{tmp_path / 'fleet.db'}", workers=4,
                       seconds=3.0, trial_mean=0.5, heartbeat_seconds=0.25,
                       log=tmp_path / "server.log", client_processes=2, seed=1, drain=10.0)
    assert row["mode"] == sl.FLEET
    assert row["lost"] == 0 and row["duplicated"] == 0 and row["orphaned"] == 0
    assert row["errors"] == 0 and row["unsent"] == 0 and row["empty_leases"] == 0
    assert row["lease_count"] > 8 and row["heartbeat_count"] > 8 and row["report_count"] > 4
    # every trial a worker completed is completed in the database, and no more
    assert row["completed_in_db"] == row["report_count"]
    assert row["achieved_ops_per_second"] == pytest.approx(row["offered_ops_per_second"],
                                                           rel=0.25)
    assert 0 < row["lease_p50_ms"] <= row["lease_p99_ms"] <= row["lease_p999_ms"]
    assert row["server_cpu_ms_per_op"] > 0 and row["database_cpu_ms_per_op"] is None

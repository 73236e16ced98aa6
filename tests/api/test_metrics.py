"""``GET /metrics``: Prometheus gauges read from the database, the worker protocol's and
the proposer's histograms, public access without secrets, and several server processes,
on SQLite and PostgreSQL. The exposition is parsed with prometheus-client's own parser."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update
from sqlalchemy.exc import OperationalError

from autopeft_service.storage.models import WorkerRow
from autopeft_service.testing.server import (
    CLIENT_TOKEN,
    WORKER_TOKEN,
    ServerProcess,
    ServerThread,
)
from tests.api.conftest import CLIENT, WORKER, create_study, lease_result, wait_for_ready

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    """``GET /metrics`` without a token, parsed: every sample by (name, labels)."""
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.documentation, family.name  # every metric has HELP text
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (KeyError when the series is absent)."""
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of one sample name, by labels."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def lease(http: httpx.Client, worker: str = "w", wait: float = 2.0) -> httpx.Response:
    """One lease call (200 or 204)."""
    response = http.post("/v1/leases", json={"worker": worker, "wait_seconds": wait},
                         headers=WORKER)
    assert response.status_code in (200, 204), response.text
    return response


def counts(http: httpx.Client, study_id: int) -> dict[str, int]:
    return http.get(f"/v1/studies/{study_id}", headers=CLIENT).json()["counts"]


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition never held"
        time.sleep(0.05)


def protocol_counts(samples: Samples) -> dict[str, float]:
    """The `_count` of every protocol histogram series."""
    return {"leased": value(samples, "autopeft_lease_seconds_count", outcome="leased"),
            "empty": value(samples, "autopeft_lease_seconds_count", outcome="empty"),
            "heartbeat": value(samples, "autopeft_heartbeat_seconds_count"),
            "result": value(samples, "autopeft_report_seconds_count", kind="result"),
            "failure": value(samples, "autopeft_report_seconds_count", kind="failure")}


def test_trial_gauges_equal_the_api_and_histograms_count_every_call(
        server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        before = protocol_counts(scrape(http))
        assert lease(http, wait=0).status_code == 204  # nothing to lease yet
        # Budgets the proposer fills at once and never tops up after the calls below, so
        # the gauges and the API read the same state.
        first = create_study(http, budget={"total_trials": 5, "initial_trials": 5,
                                           "max_parallel": 5, "max_attempts": 2})
        wait_for_ready(http, first["id"], 5)
        leases = [lease(http).json() for _ in range(5)]  # the only study's
        assert {held["study_id"] for held in leases} == {first["id"]}
        second = create_study(http, name="second", budget={
            "total_trials": 2, "initial_trials": 2, "max_parallel": 2, "max_attempts": 2})
        wait_for_ready(http, second["id"], 2)
        beats = 0
        for held in leases[:3]:
            for _ in range(2):
                beat = http.post(f"/v1/trials/{held['trial_id']}/heartbeat", headers=WORKER,
                                 json={"token": held["token"], "progress": {"step": 1}})
                assert beat.status_code == 200, beat.text
                beats += 1
        stale = http.post(f"/v1/trials/{leases[0]['trial_id']}/heartbeat", headers=WORKER,
                          json={"token": "not-the-lease"})
        assert stale.status_code == 409  # answered, so timed too
        beats += 1
        for held in leases[:2]:
            done = http.post(f"/v1/trials/{held['trial_id']}/result", headers=WORKER,
                             json={"token": held["token"], "result": lease_result(held)})
            assert done.status_code == 200, done.text
        for held, retry, state in ((leases[2], True, "ready"), (leases[3], False, "failed")):
            failed = http.post(f"/v1/trials/{held['trial_id']}/failure", headers=WORKER,
                               json={"token": held["token"], "reason": "oom", "retry": retry})
            assert failed.status_code == 200 and failed.json()["state"] == state
        cancelled = http.post(f"/v1/studies/{second['id']}/cancel", headers=CLIENT)
        assert cancelled.status_code == 200, cancelled.text
        samples = scrape(http)
        api = {study["id"]: counts(http, study["id"]) for study in (first, second)}

    # Every state but pruned and paused (early stopping, fidelity) is non-zero in one of the studies.
    assert api == {first["id"]: {"ready": 1, "leased": 1, "completed": 2, "failed": 1,
                                 "cancelled": 0, "pruned": 0, "paused": 0},
                   second["id"]: {"ready": 0, "leased": 0, "completed": 0, "failed": 0,
                                  "cancelled": 2, "pruned": 0, "paused": 0}}
    scraped: dict[int, dict[str, int]] = {}
    for labels, count in series(samples, "autopeft_trials").items():
        label = dict(labels)
        scraped.setdefault(int(label["study"]), {})[label["state"]] = int(count)
    assert scraped == api
    assert value(samples, "autopeft_queue_depth") == 1
    assert series(samples, "autopeft_study_queue_depth") == {  # running studies only
        frozenset({("study", str(first["id"]))}): 1}
    assert {dict(labels)["state"]: count for labels, count in
            series(samples, "autopeft_studies").items()} == {
        "running": 1, "cancelled": 1, "completed": 0, "failed": 0}

    after = protocol_counts(samples)
    made = {"leased": 5, "empty": 1, "heartbeat": beats, "result": 2, "failure": 2}
    assert {k: after[k] - before[k] for k in made} == made
    for name, labels in [("autopeft_lease_seconds", {"outcome": "leased"}),
                         ("autopeft_heartbeat_seconds", {}),
                         ("autopeft_report_seconds", {"kind": "result"})]:
        total = value(samples, f"{name}_count", **labels)
        assert value(samples, f"{name}_bucket", le="+Inf", **labels) == total
        assert 0 < value(samples, f"{name}_sum", **labels) < 30 * total


def test_workers_alive_drops_a_worker_not_seen_within_the_window(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server(worker_alive_seconds=30.0)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        samples = scrape(http)
        assert value(samples, "autopeft_workers_known") == 0
        assert value(samples, "autopeft_workers_alive") == 0
        for name in ("gpu-0", "gpu-1"):
            lease(http, worker=name, wait=0)  # an empty lease request also counts as seen
        samples = scrape(http)
        assert value(samples, "autopeft_workers_known") == 2
        assert value(samples, "autopeft_workers_alive") == 2
        with server.services.database.session() as session:  # gpu-1 last seen 31 s ago
            session.execute(update(WorkerRow).where(WorkerRow.name == "gpu-1")
                            .values(last_seen=WorkerRow.last_seen - 31.0))
        samples = scrape(http)
        assert value(samples, "autopeft_workers_known") == 2
        assert value(samples, "autopeft_workers_alive") == 1
        listed = http.get("/v1/workers", headers=CLIENT).json()["items"]
        assert sorted((w["name"], w["alive"]) for w in listed) == [("gpu-0", True),
                                                                   ("gpu-1", False)]


def test_proposer_fit_histogram_counts_suggest_calls(server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        fits = series(scrape(http), "autopeft_proposer_fit_seconds_count")
        assert fits == {}  # no study yet: the optimiser never ran
        study = create_study(http, budget={"total_trials": 6, "initial_trials": 6,
                                           "max_parallel": 2, "max_attempts": 2})
        wait_for_ready(http, study["id"], 2)
        held = lease(http).json()  # frees a ready slot: the proposer suggests again
        wait_until(lambda: counts(http, study["id"])["ready"] == 2)
        samples = scrape(http)
        proposed = sum(counts(http, study["id"]).values())
        done = http.post(f"/v1/trials/{held['trial_id']}/result", headers=WORKER,
                         json={"token": held["token"], "result": lease_result(held)})
        assert done.status_code == 200
    calls = value(samples, "autopeft_proposer_fit_seconds_count", optimizer="sobol")
    # At least two passes proposed (the first two trials, then the third); each call
    # that is observed added at least one trial.
    assert 2 <= calls <= proposed == 3
    assert value(samples, "autopeft_proposer_fit_seconds_bucket", optimizer="sobol",
                 le="+Inf") == calls
    assert value(samples, "autopeft_proposer_fit_seconds_sum", optimizer="sobol") > 0


def test_metrics_need_no_token_and_show_no_secret(server: ServerThread) -> None:
    secret_name = "study-name-not-in-metrics"
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, name=secret_name)
        wait_for_ready(http, study["id"], 1)
        held = lease(http, worker="worker-name-not-in-metrics").json()
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, CLIENT, WORKER):
            response = http.get("/metrics", headers=headers)
            assert response.status_code == 200
        body = response.text
    for secret in (CLIENT_TOKEN, WORKER_TOKEN, held["token"], secret_name,
                   "worker-name-not-in-metrics", held["backbone"]):
        assert secret not in body
    scrape_families = {f.name for f in text_string_to_metric_families(body)}
    assert {"autopeft_trials", "autopeft_studies", "autopeft_queue_depth",
            "autopeft_study_queue_depth", "autopeft_workers_alive", "autopeft_workers_known",
            "autopeft_lease_seconds", "autopeft_heartbeat_seconds", "autopeft_report_seconds",
            "autopeft_proposer_fit_seconds"} <= scrape_families


def test_a_database_error_at_scrape_is_503_without_traceback(server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert http.get("/metrics").status_code == 200
        database = server.services.database
        engine, url = database.engine, database.url

        def broken(*_args: Any, **_kwargs: Any) -> Any:
            raise OperationalError("SELECT", {}, Exception("connection refused"))

        event.listen(engine, "before_cursor_execute", broken)
        try:
            response = http.get("/metrics")
        finally:
            event.remove(engine, "before_cursor_execute", broken)
        assert http.get("/metrics").status_code == 200  # back once the database is
    assert response.status_code == 503
    assert response.json()["detail"].startswith("database unavailable:")
    assert "Traceback" not in response.text and url not in response.text
    assert response.headers["Retry-After"] == "2"


def test_several_processes_sum_their_histograms(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --processes 2``: ``serve`` makes a fresh multiprocess directory (in TMPDIR),
    both processes write their histograms there, any of them answers a scrape with the sum
    of both, and the directory is gone after the server stops."""
    from prometheus_client.multiprocess import MultiProcessCollector

    from autopeft_service.api.metrics import MULTIPROC_ENV

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where the server's mkdtemp goes
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    server = ServerProcess(database_url, log=tmp_path / "server.log", processes=2,
                           long_poll_seconds="0.2").start()
    calls = 24
    try:
        for _ in range(calls):  # a new connection each: spread over both processes
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                lease(http, wait=0)
        scraped = set()
        for _ in range(12):
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                scraped.add(value(scrape(http), "autopeft_lease_seconds_count",
                                  outcome="empty"))
        (shared,) = temp.glob("autopeft-metrics-*")
        per_process = []
        for path in sorted(shared.glob("histogram_*.db")):
            (family,) = [m for m in MultiProcessCollector.merge([str(path)])
                         if m.name == "autopeft_lease_seconds"]
            per_process.append(sum(s.value for s in family.samples
                                   if s.name == "autopeft_lease_seconds_count"
                                   and s.labels == {"outcome": "empty"}))
    finally:
        server.stop()
    assert scraped == {calls}
    assert len(per_process) == 2 and sum(per_process) == calls  # one file per process
    assert not shared.exists()


def test_serve_shares_a_fresh_metrics_dir_only_between_several_processes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from autopeft_service.api.metrics import MULTIPROC_ENV, shared_metrics_dir

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with shared_metrics_dir(1) as path:
        assert path is None and MULTIPROC_ENV not in os.environ
    with shared_metrics_dir(2) as path:
        assert path is not None and Path(path).is_dir() and not any(Path(path).iterdir())
        assert os.environ[MULTIPROC_ENV] == path
    assert not Path(path).exists() and MULTIPROC_ENV not in os.environ
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))  # the operator's own: kept
    with shared_metrics_dir(2) as path:
        assert path == str(tmp_path)
    assert tmp_path.is_dir()

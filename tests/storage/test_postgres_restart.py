"""Restart the server's PostgreSQL while fake workers run a study.

A private cluster (``PostgresCluster``: its own data folder and port, so the shared test
cluster is never disturbed) serves a real ``autopeft serve`` process; four fake worker
threads speak the real protocol. When the outage's lease is handed out, that worker stops
PostgreSQL (``pg_ctl stop -m fast``, or ``-m immediate``: a crash) before it "trains", so
at least that trial is in flight for the whole outage; the database stays down for
``OUTAGE_SECONDS`` (many heartbeat periods) and comes back on the same port and folder.

Asserted: while the database is down every request that needs it (a client GET, a lease,
the health check) answers 503 with Retry-After at once, never 500 and never a hang; the
workers back off and go on (no thread dies); the server process survives, its connection
pool recovers (no 503 long after the restart) and its log has no traceback; the study ends
``completed`` with exactly ``total_trials`` trials, each completed once (numbers 0..N-1,
one accepted result each, distinct configurations; the workers' completed counts add up
to N). Two lease lengths:
  * ``fast``, leases of 15 s (longer than the outage): nobody loses a lease; the trial
    trained during the outage is delivered afterwards, on its first attempt;
  * ``immediate``, leases of 2 s (shorter than the outage): leases expire while the
    database is down and are swept afterwards; each trial still completes exactly once.
And with no traffic during a restart, the idle connection pool costs one failed request
(503), then recovers (no ``pool_pre_ping``: ``storage/database.py``).

The cluster runs with ``synchronous_commit=on`` (PostgreSQL's default; the shared test
cluster has it off): with it off, an immediate stop loses the last acknowledged commits,
and workers then hold leases the database forgot (their reports get 409).

Needs PostgreSQL's binaries (like the shared fixture, it fails rather than skips without
them: a restart needs a cluster of our own, so AUTOPEFT_TEST_POSTGRES_URL cannot stand in).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from autopeft_service.domain.protocol import LeaseOut
from autopeft_service.storage.database import Database, StorageError
from autopeft_service.testing.postgres import PostgresCluster, create_database
from autopeft_service.testing.server import WORKER_TOKEN, ServerProcess
from tests.api.conftest import CLIENT, WORKER, study_spec
from workers.client import ServerClient
from workers.fake_worker import FakeWorker

TRIALS = 30
WORKERS = 4
TRAIN_SECONDS = 1.0
HEARTBEAT_SECONDS = 0.25
OUTAGE_SECONDS = 4.0
#: The lease during which the database goes down (about a quarter into the study).
OUTAGE_AT_LEASE = 9


@dataclass(frozen=True)
class Seen:
    """One HTTP answer a worker got."""

    at: float  # time.monotonic()
    worker: str
    kind: str  # lease, heartbeat, result, failure
    trial: int | None  # the trial a heartbeat or report was about
    status: int
    retry_after: str | None
    duplicate: bool | None  # result reports: the server's ``duplicate``


class Outage:
    """Stops the database from inside the worker that takes lease ``OUTAGE_AT_LEASE``."""

    def __init__(self, cluster: PostgresCluster, mode: str) -> None:
        self.cluster = cluster
        self.mode = mode
        self.leases = 0
        self.trial_id: int | None = None
        self.worker: str | None = None
        self.down_at = 0.0
        self.down = threading.Event()
        self._lock = threading.Lock()

    def on_lease(self, worker: str, lease: LeaseOut) -> None:
        with self._lock:
            self.leases += 1
            if self.leases != OUTAGE_AT_LEASE:
                return
            self.cluster.stop(self.mode)  # blocks this worker only; the others go on
            self.trial_id, self.worker, self.down_at = lease.trial_id, worker, time.monotonic()
            self.down.set()


@dataclass
class Observed:
    """What one run through the outage saw."""

    outage: Outage
    trials: list[dict[str, Any]] = field(default_factory=list)
    workers: list[FakeWorker] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)  # every answer the workers got
    errors: list[str] = field(default_factory=list)  # exceptions that ended a worker thread
    probe_seconds: dict[str, float] = field(default_factory=dict)
    up_at: float = 0.0  # PostgreSQL accepting connections again
    api_recovered: float = 0.0  # seconds from then to the first 200 of a client GET
    server_log: str = ""


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(max_connections=100, synchronous_commit=True)
    try:
        yield cluster.start()
    finally:
        cluster.remove()


@pytest.mark.parametrize(("mode", "lease_seconds"), [
    pytest.param("fast", 15, id="fast-leases-outlive-the-outage"),
    pytest.param("immediate", 2, id="immediate-leases-expire-in-the-outage"),
])
def test_postgres_restart_under_load_loses_and_repeats_nothing(
        cluster: PostgresCluster, tmp_path: Path, mode: str, lease_seconds: int) -> None:
    began = time.monotonic()
    run = _run_through_outage(cluster, tmp_path, mode, lease_seconds)
    trials, seen, outage, up_at = run.trials, run.seen, run.outage, run.up_at

    # None lost, none repeated, none extra; no worker thread died.
    assert not run.errors, run.errors
    assert sorted(t["number"] for t in trials) == list(range(TRIALS))
    assert all(t["state"] == "completed" for t in trials)
    assert len({tuple(sorted(t["params"].items())) for t in trials}) == TRIALS
    assert sum(w.completed for w in run.workers) == TRIALS
    results = [s for s in seen if s.kind == "result" and s.status == 200]
    accepted = [s for s in results if not s.duplicate]
    assert len(accepted) == TRIALS  # one accepted result per trial, never two

    # Only 503 (with Retry-After) for the outage: no 500, no other 5xx.
    errors_5xx = [s for s in seen if s.status >= 500]
    assert all(s.status == 503 and (s.retry_after or "").isdigit() for s in errors_5xx), \
        Counter((s.kind, s.status) for s in errors_5xx)
    assert errors_5xx, "the workers never met the outage"
    # The pool recovered: no 503 once the database had been back a while.
    late = [s for s in errors_5xx if s.at > up_at + 15]
    assert not late, f"{len(late)} answers 503 more than 15 s after PostgreSQL came back"

    lost = [s for s in seen if s.status == 409]
    reruns = sum(t["attempt"] - 1 for t in trials)
    # A lease lost to expiry means its trial was leased again. (Not equal: a lease whose
    # answer the outage cut off is held by nobody, and expires without a 409.)
    assert len(lost) <= reruns, (lost, [(t["id"], t["attempt"], t["worker"]) for t in trials])
    outage_trial = next(t for t in trials if t["id"] == outage.trial_id)
    outage_answers = [s for s in seen if s.worker == outage.worker and s.at >= outage.down_at
                      and s.trial == outage.trial_id]
    assert any(s.status == 503 for s in outage_answers)  # it trained through the outage
    if lease_seconds > OUTAGE_SECONDS:
        # The leases outlived the outage: nobody lost one; the trial trained while the
        # database was down was delivered afterwards by its worker, on its first lease.
        assert not lost, Counter((s.kind, s.worker) for s in lost)
        assert outage_trial["attempt"] == 1 and outage_trial["worker"] == outage.worker
        assert any(s.kind == "result" and s.status == 200 and not s.duplicate
                   for s in outage_answers)

    # The server handled every database error: logged as a warning, no traceback.
    assert "Traceback" not in run.server_log, run.server_log[-4000:]
    assert "Exception in ASGI application" not in run.server_log

    down_503 = Counter(s.kind for s in errors_5xx if s.at <= up_at)
    after_503 = Counter(s.kind for s in errors_5xx if s.at > up_at)
    first_ok = min((s.at for s in seen if s.at > up_at and s.status < 500), default=up_at)
    first_result = min((s.at for s in accepted if s.at > up_at), default=up_at)
    print(f"\n[{mode}, lease {lease_seconds} s] PostgreSQL down "
          f"{up_at - outage.down_at:.1f} s; workers got {sum(down_503.values())} x 503 while "
          f"it was down ({dict(down_503)}), {sum(after_503.values())} after it came back "
          f"({dict(after_503)}), all with Retry-After, no other 5xx; probes answered 503 in "
          f"{max(run.probe_seconds.values()):.3f} s at most; recovery after the restart: "
          f"API {run.api_recovered:.2f} s, first worker 2xx {first_ok - up_at:.2f} s, first "
          f"accepted result {first_result - up_at:.2f} s; {len(lost)} leases lost (409), "
          f"{reruns} trials re-run, {len(results) - len(accepted)} duplicate reports; "
          f"{TRIALS}/{TRIALS} completed once; DB-error warnings in the server log: "
          f"{run.server_log.count('WARNING')}; {time.monotonic() - began:.1f} s in all")


def _run_through_outage(cluster: PostgresCluster, tmp_path: Path, mode: str,
                        lease_seconds: int) -> Observed:
    """Run a study with ``WORKERS`` fake worker threads against a server process on
    ``cluster``; the worker that takes lease ``OUTAGE_AT_LEASE`` stops PostgreSQL (``mode``),
    which this thread probes and starts again ``OUTAGE_SECONDS`` later. Returns once the
    study completed and everything was stopped."""
    run = Observed(Outage(cluster, mode))
    log_path = tmp_path / "server.log"
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with ExitStack() as stack:  # torn down in reverse: workers, client, server
        server = ServerProcess(create_database(cluster.admin_url), log=log_path,
                               lease_seconds=str(lease_seconds), sweep_interval_seconds="0.2",
                               long_poll_seconds="1", proposer_poll_seconds="0.1")
        stack.callback(server.stop)
        server.start()
        http = stack.enter_context(httpx.Client(base_url=server.base_url, timeout=30))
        stack.callback(_stop_workers, stop, threads, run.workers)

        spec = study_spec(budget={"total_trials": TRIALS, "initial_trials": TRIALS,
                                  "max_parallel": WORKERS, "max_attempts": 5})
        response = http.post("/v1/studies", json=spec, headers=CLIENT)
        assert response.status_code == 201, response.text
        study = response.json()["id"]
        for i in range(WORKERS):
            name = f"fake-{i}"
            client = ServerClient(server.base_url, WORKER_TOKEN, name, timeout=10,
                                  max_backoff=1.0, stop=stop)
            client._http.event_hooks["response"].append(_recorder(name, run.seen))
            worker = FakeWorker(client, train_seconds=TRAIN_SECONDS,
                                heartbeat_seconds=HEARTBEAT_SECONDS,
                                on_lease=lambda lease, n=name: run.outage.on_lease(n, lease))
            run.workers.append(worker)
            threads.append(threading.Thread(target=_work, args=(worker, name, run.errors),
                                            name=name, daemon=True))
            threads[-1].start()

        assert run.outage.down.wait(120), "the workers never reached the outage's lease"
        time.sleep(0.5)  # the database is down: whatever needs it answers 503 at once
        _probe(run, {
            "client GET study": lambda: http.get(f"/v1/studies/{study}", headers=CLIENT),
            "client GET trials": lambda: http.get(f"/v1/studies/{study}/trials",
                                                  headers=CLIENT),
            "worker lease": lambda: http.post("/v1/leases", headers=WORKER,
                                              json={"worker": "probe", "wait_seconds": 0}),
            "health": lambda: http.get("/v1/health"),
        })
        time.sleep(max(0.0, run.outage.down_at + OUTAGE_SECONDS - time.monotonic()))
        assert server.process is not None and server.process.poll() is None
        assert all(t.is_alive() for t in threads), run.errors

        cluster.start()  # same port, same data folder (crash recovery after immediate)
        run.up_at = time.monotonic()
        while (answer := http.get(f"/v1/studies/{study}", headers=CLIENT)).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() - run.up_at < 60, "the server did not recover"
            time.sleep(0.05)
        run.api_recovered = time.monotonic() - run.up_at

        final = _wait_completed(http, study, timeout=180)
        assert final["counts"]["completed"] == TRIALS, final["counts"]
        assert all(t.is_alive() for t in threads), f"a worker thread died: {run.errors}"
        run.trials = http.get(f"/v1/studies/{study}/trials", params={"limit": 500},
                              headers=CLIENT).json()["items"]
        assert server.process.poll() is None, "the server process died"
    run.server_log = log_path.read_text(errors="replace")
    return run


def _probe(run: Observed, probes: dict[str, Callable[[], httpx.Response]]) -> None:
    """Each probe answers 503 with Retry-After within 10 s (no 500, no hang)."""
    for what, probe in probes.items():
        started = time.monotonic()
        answer = probe()
        run.probe_seconds[what] = time.monotonic() - started
        assert answer.status_code == 503, (what, answer.status_code, answer.text)
        assert answer.headers.get("Retry-After", "").isdigit(), (what, answer.headers)
        assert "database unavailable" in answer.json()["detail"], (what, answer.text)
        assert run.probe_seconds[what] < 10, (what, run.probe_seconds[what])


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_an_idle_pool_recovers_after_one_failed_request(cluster: PostgresCluster,
                                                       mode: str) -> None:
    """Nothing used the database while it restarted, so every pooled connection is to the
    old server. Without ``pool_pre_ping`` the first request fails (``StorageError``: the
    server answers 503 with Retry-After), SQLAlchemy invalidates the whole pool with it, and
    every request after that gets a new connection and succeeds."""
    database = Database(create_database(cluster.admin_url), pool_size=5)
    try:
        held = [database.engine.connect() for _ in range(5)]
        for connection in held:
            connection.execute(text("SELECT 1"))
            connection.close()
        assert database.engine.pool.checkedin() == 5  # type: ignore[attr-defined]
        cluster.restart(mode, down_seconds=1.0)
        outcomes = []
        for i in range(12):
            session = database.session() if i % 2 else database.statement_session()
            try:
                with session as s:
                    s.execute(text("SELECT 1"))
                outcomes.append("ok")
            except StorageError:
                outcomes.append("503")
        assert outcomes[1:] == ["ok"] * 11, outcomes
    finally:
        database.dispose()


def _recorder(worker: str, seen: list[Seen]) -> Callable[[httpx.Response], None]:
    """An httpx response hook recording each answer ``worker`` gets."""

    def record(response: httpx.Response) -> None:
        path = response.request.url.path
        kind = "lease" if path.endswith("/leases") else path.rsplit("/", 1)[-1]
        trial = None if kind == "lease" else int(path.rsplit("/", 2)[-2])
        duplicate = None
        if kind == "result" and response.status_code == 200:
            response.read()
            duplicate = bool(response.json()["duplicate"])
        seen.append(Seen(time.monotonic(), worker, kind, trial, response.status_code,
                         response.headers.get("Retry-After"), duplicate))

    return record


def _work(worker: FakeWorker, name: str, errors: list[str]) -> None:
    """The worker's loop; an exception that escapes it is recorded (the test fails)."""
    try:
        worker.run(idle_rounds=10 ** 6)
    except BaseException as error:  # noqa: BLE001 - reported by the test
        errors.append(f"{name}: {type(error).__name__}: {error}")


def _stop_workers(stop: threading.Event, threads: list[threading.Thread],
                  workers: list[FakeWorker]) -> None:
    stop.set()
    for thread in threads:
        thread.join(30)
    for worker in workers:
        worker.client.close()


def _wait_completed(http: httpx.Client, study_id: int, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        answer = http.get(f"/v1/studies/{study_id}", headers=CLIENT)
        if answer.status_code == 200 and answer.json()["state"] == "completed":
            return dict(answer.json())
        assert time.monotonic() < end, f"study stuck: {answer.text[:500]}"
        time.sleep(0.2)

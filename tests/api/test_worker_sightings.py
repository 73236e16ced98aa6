"""Workers' ``last_seen`` with the cheaper protocol, on SQLite and PostgreSQL: a heartbeat
is one statement on the trial and notes its worker for a batched write
(``api.sightings``), a lease writes its worker in the lease's statement, and the
heartbeat's other answers (404, 409, stop) still come from the full path."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select, update

from autopeft_service.api.sightings import WorkerSightings, flush_interval
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import database_now
from autopeft_service.storage.models import TrialRow, WorkerRow
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import CLIENT, WORKER, create_study, lease_result, wait_for_ready


def _workers(server: ServerThread) -> dict[str, WorkerRow]:
    with server.services.database.session() as session:
        return {w.name: w for w in session.execute(select(WorkerRow)).scalars()}


def _age_worker(server: ServerThread, name: str, seconds: float) -> None:
    with server.services.database.session() as session:
        session.execute(update(WorkerRow).where(WorkerRow.name == name)
                        .values(last_seen=WorkerRow.last_seen - seconds))


def _now(server: ServerThread) -> float:
    with server.services.database.session() as session:
        return database_now(session)


def _lease(http: httpx.Client, worker: str) -> dict:
    response = http.post("/v1/leases", json={"worker": worker, "wait_seconds": 5},
                         headers=WORKER)
    assert response.status_code == 200, response.text
    return response.json()


def test_flush_interval_stays_well_within_the_alive_window() -> None:
    assert flush_interval(60.0) == 5.0
    assert flush_interval(2.0) == 0.5
    assert all(flush_interval(alive) <= alive / 4 for alive in (0.1, 1.0, 10.0, 60.0, 600.0))


def test_a_heartbeat_marks_its_worker_seen_within_the_flush_interval(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server(worker_alive_seconds=2.0)  # flushes every 0.5 s
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http)
        wait_for_ready(http, study["id"], 1)
        lease = _lease(http, "gpu-0")
        _age_worker(server, "gpu-0", 30.0)
        (listed,) = http.get("/v1/workers", headers=CLIENT).json()["items"]
        assert not listed["alive"]
        beat = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", headers=WORKER,
                         json={"token": lease["token"], "progress": {"step": 1}})
        assert beat.status_code == 200 and beat.json()["stop"] is False
        end = time.monotonic() + 10
        while True:
            listed = http.get("/v1/workers", headers=CLIENT).json()
            (worker,) = listed["items"]
            if worker["alive"]:
                break
            assert time.monotonic() < end, "the heartbeat's sighting was never written"
            time.sleep(0.1)
        assert 0 <= listed["now"] - worker["last_seen"] < 2.0
        assert worker["leases"] == 1  # a heartbeat is no lease


def test_sightings_wait_for_the_flush_and_keep_the_time_they_were_seen(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    sightings = WorkerSightings(server.services.database, interval=60.0)  # never started
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        http.post("/v1/leases", json={"worker": "gpu-0", "wait_seconds": 0}, headers=WORKER)
    _age_worker(server, "gpu-0", 100.0)
    before = _workers(server)["gpu-0"].last_seen
    sightings.seen("gpu-0")
    sightings.seen("new-worker")
    time.sleep(0.3)
    assert _workers(server)["gpu-0"].last_seen == before  # nothing written yet
    assert "new-worker" not in _workers(server)
    assert sightings.flush() == 2
    now = _now(server)
    rows = _workers(server)
    # written with the time they were seen (0.3 s before the flush), not the flush's
    assert 0.25 < now - rows["gpu-0"].last_seen < 2.0
    assert rows["gpu-0"].leases == 0 and rows["gpu-0"].first_seen < rows["gpu-0"].last_seen
    assert 0.25 < now - rows["new-worker"].last_seen < 2.0 and rows["new-worker"].leases == 0
    assert sightings.flush() == 0  # emptied


def test_a_sighting_never_moves_last_seen_back(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        http.post("/v1/leases", json={"worker": "gpu-0", "wait_seconds": 0}, headers=WORKER)
    seen = _workers(server)["gpu-0"].last_seen
    with server.services.database.session() as session:
        repo.record_sightings(session, {"gpu-0": 50.0})  # an older sighting
    assert _workers(server)["gpu-0"].last_seen == seen


def test_stopping_writes_the_last_sightings(make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    sightings = WorkerSightings(server.services.database, interval=60.0)
    sightings.start()
    sightings.seen("late-worker")
    sightings.stop()
    assert "late-worker" in _workers(server)


def test_a_failed_flush_keeps_its_sightings_for_the_next(
        make_server: Callable[..., ServerThread], monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()
    sightings = WorkerSightings(server.services.database, interval=60.0)
    sightings.seen("gpu-0")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(repo, "record_sightings", refuse)
    with pytest.raises(RuntimeError):
        sightings.flush()
    monkeypatch.undo()
    assert sightings.flush() == 1
    assert "gpu-0" in _workers(server)


def test_leases_count_once_and_empty_requests_count_as_seen(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server(long_poll_seconds=1.5)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        # an empty queue: the long poll re-checks (about every second) and writes nothing
        # more than its first try did
        empty = http.post("/v1/leases", json={"worker": "idle", "wait_seconds": 1.5},
                          headers=WORKER)
        assert empty.status_code == 204
        assert _workers(server)["idle"].leases == 0
        study = create_study(http)
        wait_for_ready(http, study["id"], 2)
        _lease(http, "gpu-0")
        _lease(http, "gpu-0")
    rows = _workers(server)
    assert rows["gpu-0"].leases == 2 and rows["idle"].leases == 0
    assert rows["gpu-0"].first_seen <= rows["gpu-0"].last_seen


def test_heartbeat_answers_other_than_go_on_are_unchanged(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http)
        wait_for_ready(http, study["id"], 2)
        lease = _lease(http, "gpu-0")
        url = f"/v1/trials/{lease['trial_id']}/heartbeat"
        assert http.post("/v1/trials/999999/heartbeat", json={"token": "x"},
                         headers=WORKER).status_code == 404
        assert http.post(url, json={"token": "wrong"}, headers=WORKER).status_code == 409
        # progress kept when a heartbeat carries none
        http.post(url, json={"token": lease["token"], "progress": {"step": 7}}, headers=WORKER)
        beat = http.post(url, json={"token": lease["token"]}, headers=WORKER).json()
        assert beat["stop"] is False and beat["deadline"] > lease["deadline"]
        with server.services.database.session() as session:
            assert session.get(TrialRow, lease["trial_id"]).progress == {"step": 7}
        assert http.post(f"/v1/studies/{study['id']}/cancel", headers=CLIENT).status_code == 200
        stopped = http.post(url, json={"token": lease["token"]}, headers=WORKER)
        assert stopped.status_code == 200
        assert stopped.json() == {"deadline": None, "stop": True, "reason": "cancelled"}
        # a result reported, then a late heartbeat of the same lease: 409 (not leased)
        other = create_study(http, name="other")
        wait_for_ready(http, other["id"], 1)
        second = _lease(http, "gpu-1")
        done = http.post(f"/v1/trials/{second['trial_id']}/result", headers=WORKER,
                         json={"token": second["token"], "result": lease_result(second)})
        assert done.status_code == 200
        late = http.post(f"/v1/trials/{second['trial_id']}/heartbeat",
                         json={"token": second["token"]}, headers=WORKER)
        assert late.status_code == 409

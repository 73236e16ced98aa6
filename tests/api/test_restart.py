"""SIGKILL the server mid-study with fake workers running; a restart finishes the study."""

import threading
import time
from pathlib import Path

import httpx

from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerProcess
from tests.api.conftest import CLIENT, study_spec
from workers.client import ServerClient
from workers.fake_worker import FakeWorker

TRIALS = 30


def test_server_killed_mid_study_restarts_and_finishes_exactly(database_url: str,
                                                                tmp_path: Path) -> None:
    server = ServerProcess(database_url, log=tmp_path / "server.log", lease_seconds="3",
                           sweep_interval_seconds="0.2", long_poll_seconds="1",
                           proposer_poll_seconds="0.1").start()
    stop = threading.Event()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            spec = study_spec(budget={"total_trials": TRIALS, "initial_trials": TRIALS,
                                      "max_parallel": 4, "max_attempts": 5})
            study = http.post("/v1/studies", json=spec, headers=CLIENT).json()
        clients = [ServerClient(server.base_url, WORKER_TOKEN, f"fake-{i}", timeout=5,
                                max_backoff=0.5, stop=stop) for i in range(3)]
        workers = [FakeWorker(c, train_seconds=0.2, heartbeat_seconds=0.1) for c in clients]
        threads = [threading.Thread(target=w.run, kwargs={"idle_rounds": 10 ** 6})
                   for w in workers]
        for thread in threads:
            thread.start()
        _wait_completed(server.base_url, study["id"], 8)
        server.kill()  # SIGKILL in the middle: leases, reports and proposals in flight
        time.sleep(1.0)
        server.start()
        final = _wait_state(server.base_url, study["id"], "completed", timeout=120)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    assert final["counts"]["completed"] == TRIALS
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        server.start()
        trials = http.get(f"/v1/studies/{study['id']}/trials", params={"limit": 500},
                          headers=CLIENT).json()["items"]
        server.stop()
    assert sorted(t["number"] for t in trials) == list(range(TRIALS))  # none lost, none extra
    assert all(t["state"] == "completed" for t in trials)
    configs = [tuple(sorted(t["params"].items())) for t in trials]
    assert len(set(configs)) == TRIALS  # no configuration proposed twice across the restart
    assert sum(w.completed for w in workers) >= TRIALS - 4  # a few reports may be lost to 409


def _get(base_url: str, study_id: int) -> dict:
    response = httpx.get(f"{base_url}/v1/studies/{study_id}", timeout=10,
                         headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    response.raise_for_status()
    return response.json()


def _wait_completed(base_url: str, study_id: int, count: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while _get(base_url, study_id)["counts"]["completed"] < count:
        assert time.monotonic() < end, "study made no progress"
        time.sleep(0.1)


def _wait_state(base_url: str, study_id: int, state: str, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while True:
        got = _get(base_url, study_id)
        if got["state"] == state:
            return got
        assert time.monotonic() < end, f"study stuck: {got['counts']}"
        time.sleep(0.2)

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
    spec = study_spec(budget={"total_trials": TRIALS, "initial_trials": TRIALS,
                              "max_parallel": 4, "max_attempts": 5})
    trials, workers = _kill_and_restart(database_url, tmp_path, spec, kill_after=8)
    assert sum(w.completed for w in workers) >= TRIALS - 4  # a few reports may be lost to 409
    assert len(trials) == TRIALS


SAASBO_TRIALS = 14
SAASBO_INITIAL = 6
#: Cheap NUTS (two GP samples): the model's proposals, not its quality, are under test.
CHEAP_SAASBO = {"warmup_steps": 32, "num_samples": 16, "thinning": 8, "mc_samples": 16,
                "candidates": 128, "restarts": 2}


def test_saasbo_proposer_resumes_after_a_kill_and_the_study_ends_exactly(
        database_url: str, tmp_path: Path) -> None:
    """Killed after the Sobol prefix, while the SAAS model proposes: the restarted proposer
    rebuilds the optimiser from the database and the study still ends with every trial
    once, the first ``initial_trials`` from Sobol and the rest from the model."""
    spec = study_spec(budget={"total_trials": SAASBO_TRIALS, "initial_trials": SAASBO_INITIAL,
                              "max_parallel": 3, "max_attempts": 5},
                      optimizer={"name": "saasbo", "seed": 2, "settings": CHEAP_SAASBO})
    trials, _ = _kill_and_restart(database_url, tmp_path, spec, kill_after=SAASBO_INITIAL + 2)
    by_number = sorted(trials, key=lambda t: t["number"])
    assert [t["generator"] for t in by_number[:SAASBO_INITIAL]] == ["sobol"] * SAASBO_INITIAL
    assert {t["generator"] for t in by_number[SAASBO_INITIAL:]} == {"saasbo"}


def test_two_server_processes_share_one_database_and_one_proposer(
        database_url: str, tmp_path: Path) -> None:
    """``autopeft serve --processes 2`` (killed and restarted mid-study, as above): the
    study still ends exactly, none lost, none repeated. (That only the elected process
    proposes is asserted in tests/test_proposer.py.)"""
    spec = study_spec(budget={"total_trials": 20, "initial_trials": 20, "max_parallel": 4,
                              "max_attempts": 5})
    trials, _ = _kill_and_restart(database_url, tmp_path, spec, kill_after=6, processes=2)
    assert len(trials) == 20


def _kill_and_restart(database_url: str, tmp_path: Path, spec: dict, kill_after: int,
                      processes: int = 1) -> tuple[list[dict], list[FakeWorker]]:
    """Run ``spec`` with three fake workers, SIGKILL the server once ``kill_after`` trials
    are completed, start it again and wait for the study to complete.

    Returns:
        The study's trials (all checked: completed, numbered 0..total-1, no configuration
        twice) and the fake workers.
    """
    total = spec["budget"]["total_trials"]
    server = ServerProcess(database_url, log=tmp_path / "server.log", processes=processes,
                           lease_seconds="3",
                           sweep_interval_seconds="0.2", long_poll_seconds="1",
                           proposer_poll_seconds="0.1").start()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            response = http.post("/v1/studies", json=spec, headers=CLIENT)
            assert response.status_code == 201, response.text
            study = response.json()
        clients = [ServerClient(server.base_url, WORKER_TOKEN, f"fake-{i}", timeout=5,
                                max_backoff=0.5, stop=stop) for i in range(3)]
        workers = [FakeWorker(c, train_seconds=0.2, heartbeat_seconds=0.1) for c in clients]
        threads = [threading.Thread(target=w.run, kwargs={"idle_rounds": 10 ** 6})
                   for w in workers]
        for thread in threads:
            thread.start()
        _wait_completed(server.base_url, study["id"], kill_after, timeout=120)
        server.kill()  # SIGKILL in the middle: leases, reports and proposals in flight
        time.sleep(1.0)
        server.start()
        final = _wait_state(server.base_url, study["id"], "completed", timeout=240)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    assert final["counts"]["completed"] == total
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        server.start()
        trials = http.get(f"/v1/studies/{study['id']}/trials", params={"limit": 500},
                          headers=CLIENT).json()["items"]
        server.stop()
    assert sorted(t["number"] for t in trials) == list(range(total))  # none lost, none extra
    assert all(t["state"] == "completed" for t in trials)
    configs = [tuple(sorted(t["params"].items())) for t in trials]
    assert len(set(configs)) == total  # no configuration proposed twice across the restart
    return trials, workers


def _get(base_url: str, study_id: int) -> dict:
    response = httpx.get(f"{base_url}/v1/studies/{study_id}", timeout=10,
                         headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    response.raise_for_status()
    return response.json()


def _wait_completed(base_url: str, study_id: int, count: int, timeout: float) -> None:
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

"""Early stopping with real training: the worker scores its rungs, hears the prune in the
answer to the rung's own heartbeat and stops at that step; a study run by real worker
processes with MO-ASHA ends with exactly its trials."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopeft_service.client import backbone_dims_of
from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.early_stopping import rung_steps
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.local import LocalWorkers
from autopeft_service.testing.server import (
    CLIENT_TOKEN,
    WORKER_TOKEN,
    ServerProcess,
    ServerThread,
    fast_settings,
)
from workers.client import ServerClient
from workers.data import TokenizedCache
from workers.trial import TrialRunner
from workers.worker import Worker

CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
WORKER = {"Authorization": f"Bearer {WORKER_TOKEN}"}
TRAIN_EXAMPLES = 256  # batch 32: 8 steps


def _spec(model: Path, trials: int, early_stopping: dict[str, Any],
          max_parallel: int) -> dict[str, Any]:
    dims = backbone_dims_of(model)
    assert dims is not None
    return {"name": "early stopping", "backbone": str(model), "task": "synthetic",
            "backbone_dims": dims.model_dump(), "search_space": {"kind": "autopeft"},
            "budget": {"total_trials": trials, "initial_trials": trials,
                       "max_parallel": max_parallel, "max_attempts": 2},
            "training": {"epochs": 1, "max_train_examples": TRAIN_EXAMPLES, "max_length": 24,
                         "max_held_out_examples": 100, "max_dev_examples": 50,
                         "learning_rate": 3e-3},
            "early_stopping": early_stopping}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    settings = fast_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "artifacts")
    with ServerThread(settings) as running:
        yield running


def _share(lease: dict[str, Any]) -> float:
    dims = BackboneDims.model_validate(lease["backbone_dims"])
    return count_parameters(PeftConfig.model_validate(lease["config"]), dims).deployed_percent


def test_worker_hears_the_prune_at_its_rung_and_stops_at_that_step(
        server: ServerThread, tiny_bert_path: Path, tmp_path: Path) -> None:
    """Seven trials reach the rung first (by hand, scoring 1.0); the dearest trial is left
    to a real worker, whose rung score is then dominated whatever it is."""
    http = httpx.Client(base_url=server.base_url, timeout=30)
    study = http.post("/v1/studies", headers=CLIENT, json=_spec(
        tiny_bert_path, 8, {"rule": "moasha", "rungs": [0.25], "eta": 3}, max_parallel=8))
    assert study.status_code == 201, study.text
    study_id = study.json()["id"]
    leases: list[dict[str, Any]] = []
    end = time.monotonic() + 30
    while len(leases) < 8:
        assert time.monotonic() < end, "the study's trials were never proposed"
        response = http.post("/v1/leases", json={"worker": "hand", "wait_seconds": 1},
                             headers=WORKER)
        if response.status_code == 200:
            leases.append(response.json())
    leases.sort(key=_share)
    dearest = leases[-1]
    assert _share(dearest) > _share(leases[0])
    for lease in leases[:-1]:
        response = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", headers=WORKER, json={
            "token": lease["token"], "rungs": [{"rung": 0, "step": 2, "score": 1.0,
                                                "examples": 100}]})
        assert response.status_code == 200, response.text
    requeued = http.post(f"/v1/trials/{dearest['trial_id']}/failure", headers=WORKER, json={
        "token": dearest["token"], "reason": "handed to the worker", "preempted": True})
    assert requeued.json()["state"] == "ready"

    client = ServerClient(server.base_url, WORKER_TOKEN, "real")
    runner = TrialRunner(cache=TokenizedCache(tmp_path / "cache"))
    worker = Worker(client, runner, wait_seconds=2)
    stats = worker.run(max_trials=1)

    assert stats.pruned == 1 and stats.completed == 0 and stats.failed == 0
    assert stats.stop_lag_steps == [0]  # the decision came with the rung's own heartbeat
    trials = http.get(f"/v1/studies/{study_id}/trials", headers=CLIENT).json()["items"]
    pruned = next(t for t in trials if t["id"] == dearest["trial_id"])
    rung_step = rung_steps([0.25], TRAIN_EXAMPLES // 32)[0]
    assert pruned["state"] == "pruned" and pruned["worker"] == "real"
    assert pruned["result"] is None and pruned["progress"]["step"] == rung_step
    [rung] = pruned["rungs"]
    assert rung["step"] == rung_step and rung["proceed"] is False
    assert rung["examples"] == 100 and 0 <= rung["score"] <= 1 and rung["eval_seconds"] > 0
    http.close()
    client.close()


def test_a_study_run_with_moasha_by_worker_processes_ends_with_exactly_its_trials(
        tiny_bert_path: Path, tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'db.sqlite'}", log=tmp_path / "server.log")
    server.start()
    group = LocalWorkers(server, tmp_path, env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "cache")})
    try:
        response = httpx.post(f"{server.base_url}/v1/studies", headers=CLIENT, timeout=30,
                              json=_spec(tiny_bert_path, 8, {"rule": "moasha",
                                                              "rungs": [0.25, 0.5], "eta": 2},
                                         max_parallel=2))
        assert response.status_code == 201, response.text
        study_id = response.json()["id"]
        for name in ("w1", "w2"):
            group.start(name, "--threads", "1", "--exit-when-idle", "3")
        end = time.monotonic() + 240
        while (study := httpx.get(f"{server.base_url}/v1/studies/{study_id}", headers=CLIENT,
                                  timeout=30).json())["state"] != "completed":
            assert time.monotonic() < end, study
            time.sleep(0.2)
        trials = httpx.get(f"{server.base_url}/v1/studies/{study_id}/trials", headers=CLIENT,
                           timeout=30).json()["items"]
    finally:
        group.stop(timeout=5)
        server.stop()
    assert len(trials) == 8 and sorted(t["number"] for t in trials) == list(range(8))
    counts = study["counts"]
    assert counts["completed"] + counts["pruned"] + counts["failed"] == 8
    # eta 2 at two rungs prunes most trials (5 of 8 when this test was written); none
    # pruned would need every arrival at a rung to be an end of its first front.
    assert counts["failed"] == 0 and counts["completed"] >= 1 and counts["pruned"] >= 1
    for trial in trials:
        decisions = [r["proceed"] for r in trial["rungs"]]
        if trial["state"] == "pruned":  # went on at every rung but its last one
            assert decisions and decisions[-1] is False and all(decisions[:-1])
            assert trial["result"] is None
        else:  # scored at both rungs, went on at both; the result carries them too
            assert trial["state"] == "completed" and decisions == [True, True]
            assert [r["rung"] for r in trial["result"]["rungs"]] == [0, 1]
            assert trial["result"]["rung_eval_seconds"] > 0

"""Real worker processes against a real server: end to end, crashes, preemption, outages."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx

from autopeft_service.cli.main import main as cli_main
from autopeft_service.client import backbone_dims_of
from autopeft_service.domain.trial import TrainingSettings
from autopeft_service.testing.server import CLIENT_TOKEN, ServerProcess
from workers.artifact import load_classifier
from workers.data import TokenizedCache, compute_metrics
from workers.trial import TrialRequest, TrialRunner

CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


def spec(model: Path, trials: int, train_examples: int = 200, epochs: float = 0.5,
         max_parallel: int = 2) -> dict[str, Any]:
    dims = backbone_dims_of(model)  # what `autopeft submit` fills in from config.json
    assert dims is not None
    return {"name": "e2e", "backbone": str(model), "task": "synthetic",
            "backbone_dims": dims.model_dump(), "search_space": {"kind": "autopeft"},
            "budget": {"total_trials": trials, "initial_trials": trials,
                       "max_parallel": max_parallel, "max_attempts": 3},
            "training": {"epochs": epochs, "max_train_examples": train_examples,
                         "max_length": 24, "max_held_out_examples": 100,
                         "max_dev_examples": 100, "learning_rate": 3e-3}}


def submit(server: ServerProcess, body: dict[str, Any]) -> int:
    response = httpx.post(f"{server.base_url}/v1/studies", json=body, headers=CLIENT, timeout=30)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def get(server: ServerProcess, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.base_url}/v1{path}", headers=CLIENT, params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def wait_until(condition: Any, timeout: float, message: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < end, message
        time.sleep(0.1)


def trials(server: ServerProcess, study: int) -> list[dict[str, Any]]:
    return get(server, f"/studies/{study}/trials", limit=500)["items"]


def test_two_workers_run_a_study_to_completion(server_factory, workers, tiny_bert_path,
                                               sqlite_url, tmp_path) -> None:
    server = server_factory(sqlite_url)
    study = submit(server, spec(tiny_bert_path, trials=6, train_examples=1000, epochs=1))
    group = workers(server)
    for name in ("w1", "w2"):
        group.start(name, "--exit-when-idle", "3")
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 240,
               "study did not complete")
    done = trials(server, study)
    assert len(done) == 6 and all(t["state"] == "completed" for t in done)
    assert {t["worker"] for t in done} == {"w1", "w2"}
    for trial in done:  # real trained results: real counts, timings, metrics
        result = trial["result"]
        assert result["train_seconds"] > 0 and result["steps"] == 32  # ceil(1000 / 32)
        assert 0 <= result["objective"] <= 1 and result["device"] == "cpu"
        assert result["trainable_parameters"] > 0
    pareto = get(server, f"/studies/{study}/pareto")
    assert pareto["trials"] and all(t["result"]["config_description"] for t in pareto["trials"])
    for name, process in group.processes.items():
        assert process.wait(30) == 0, group.log(name)
    # every completed trial's adapter was uploaded; one downloads (CLI) and predicts what
    # its worker scored
    done = trials(server, study)
    assert all(t["artifact"] and t["artifact"]["bytes"] > 0 for t in done)
    best = max(done, key=lambda t: t["dev_score"])
    folder = tmp_path / "downloaded"
    assert cli_main(["download", str(study), str(best["number"]), "-o", str(folder),
                     "--server", server.base_url, "--token", CLIENT_TOKEN]) == 0
    classifier = load_classifier(tiny_bert_path, folder)
    settings = TrainingSettings.from_dict(spec(tiny_bert_path, 6, 1000, 1)["training"])
    runner = TrialRunner(cache=TokenizedCache(tmp_path / "cache"))
    request = TrialRequest(model=tiny_bert_path, task="synthetic",
                           config=classifier.manifest.peft_config, settings=settings)
    dev = runner._prepare(request, runner.backbone(tiny_bert_path)).dev
    predicted = classifier.outputs(dev).argmax(-1).numpy()
    assert compute_metrics(("accuracy",), predicted, dev.labels.numpy())["accuracy"] == \
        best["dev_score"]


def test_killed_worker_trial_is_released_and_completed_by_the_other(
        server_factory, workers, tiny_bert_path, sqlite_url) -> None:
    server = server_factory(sqlite_url, lease_seconds="3", sweep_interval_seconds="0.3")
    study = submit(server, spec(tiny_bert_path, trials=3, train_examples=1800, epochs=4,
                                max_parallel=1))
    group = workers(server)
    victim = group.start("victim")
    held = wait_until(lambda: next((t for t in trials(server, study)
                                    if t["state"] == "leased" and (t["progress"] or {}).get("step")),
                                   None), 120, "victim never started training")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    group.start("survivor", "--exit-when-idle", "5")
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 300,
               "study did not complete after the crash")
    done = {t["id"]: t for t in trials(server, study)}
    assert len(done) == 3 and all(t["state"] == "completed" for t in done.values())
    assert done[held["id"]]["worker"] == "survivor" and done[held["id"]]["attempt"] == 2
    # Completed on its second attempt: no stale "lease expired" reason is kept.
    assert done[held["id"]]["failure_reason"] is None


def test_sigterm_preempts_and_requeues_at_once(server_factory, workers, tiny_bert_path,
                                               sqlite_url) -> None:
    server = server_factory(sqlite_url, lease_seconds="600")  # expiry would take 10 minutes
    study = submit(server, spec(tiny_bert_path, trials=2, train_examples=1800, epochs=10,
                                max_parallel=1))
    group = workers(server)
    first = group.start("first")
    held = wait_until(lambda: next((t for t in trials(server, study) if t["state"] == "leased"),
                                   None), 120, "worker never leased")
    time.sleep(1.0)  # into the trial (a stop during loading is noticed at the first step)
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0, group.log("first")
    requeued = next(t for t in trials(server, study) if t["id"] == held["id"])
    assert requeued["state"] == "ready" and requeued["attempt"] == 0
    assert "preempted" in requeued["failure_reason"]
    group.start("second", "--exit-when-idle", "5")
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 300,
               "study did not complete after preemption")
    done = trials(server, study)
    assert all(t["state"] == "completed" and t["worker"] == "second" for t in done)


def test_workers_survive_a_server_outage_and_deliver_results(server_factory, workers,
                                                             tiny_bert_path,
                                                             sqlite_url) -> None:
    server = server_factory(sqlite_url, lease_seconds="120")
    study = submit(server, spec(tiny_bert_path, trials=4, train_examples=1000, epochs=2))
    group = workers(server)
    for name in ("a", "b"):
        group.start(name, "--exit-when-idle", "5")
    wait_until(lambda: sum(t["state"] == "leased" for t in trials(server, study)) == 2, 120,
               "workers did not lease")
    server.kill()  # workers finish their trials while the server is down
    time.sleep(8)
    assert all(p.poll() is None for p in group.processes.values()), "a worker crashed"
    server.start()
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 300,
               "study did not complete after the outage")
    done = trials(server, study)
    assert len(done) == 4 and all(t["state"] == "completed" for t in done)
    assert all(t["attempt"] == 1 for t in done)  # results from the outage were delivered
    for name, process in group.processes.items():
        assert process.wait(60) == 0, group.log(name)


def test_postgresql_server_and_three_workers(server_factory, workers, tiny_bert_path,
                                             postgres_admin_url) -> None:
    from autopeft_service.testing.postgres import create_database

    server = server_factory(create_database(postgres_admin_url))
    group = workers(server)
    for name in ("p1", "p2", "p3"):
        group.start(name, "--exit-when-idle", "60")
    # Every worker is up and asking before the study exists: under load (make test runs
    # two test processes) a worker that starts last could otherwise find the tiny trials
    # all taken by the first one.
    wait_until(lambda: {w["name"] for w in get(server, "/workers")["items"]}
               >= {"p1", "p2", "p3"}, 120, "the workers did not all ask for a lease")
    study = submit(server, spec(tiny_bert_path, trials=6, max_parallel=3))
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 240,
               "study did not complete on PostgreSQL")
    done = trials(server, study)
    assert len(done) == 6 and all(t["state"] == "completed" for t in done)
    assert len({t["worker"] for t in done}) >= 2


def test_real_workers_train_a_study_of_every_family(server_factory, workers, tiny_bert_path,
                                                    sqlite_url) -> None:
    """One study per search-space family on the tiny BERT, trained for real by two worker
    processes: every trial completes, so every configuration built has exactly the counts
    the server planned (the server refuses a result whose counts differ)."""
    from autopeft_service.domain.spaces import FAMILIES

    server = server_factory(sqlite_url)
    overrides = {"design_space": {"budgets": [5.0, 10.0], "max_groups": 2}}
    studies = {}
    for kind in sorted(FAMILIES):
        body = spec(tiny_bert_path, trials=2, train_examples=64, epochs=0.5)
        body["name"] = f"e2e {kind}"
        body["search_space"] = {"kind": kind, **overrides.get(kind, {})}
        studies[kind] = submit(server, body)
    group = workers(server)
    for name in ("w1", "w2"):
        group.start(name, "--exit-when-idle", "3")
    for kind, study in studies.items():
        wait_until(lambda s=study: get(server, f"/studies/{s}")["state"] != "running", 240,
                   f"the {kind} study did not end")
        done = trials(server, study)
        assert [t["state"] for t in done] == ["completed"] * 2, (kind, done)
        for trial in done:
            result = trial["result"]
            assert result["deployed_percent"] == trial["param_share"] > 0
            assert result["trainable_parameters"] > 0


def test_a_worker_with_another_backbone_fails_the_trial_saying_so(
        server_factory, workers, tiny_bert_path, sqlite_url) -> None:
    server = server_factory(sqlite_url)
    body = spec(tiny_bert_path, trials=1, train_examples=64, epochs=0.5)
    body["backbone_dims"] = {**body["backbone_dims"], "ffn_size": body["backbone_dims"]["ffn_size"] * 2}
    body["budget"].update({"max_attempts": 1, "stop_after_failures": 1})
    study = submit(server, body)
    group = workers(server)
    group.start("w1", "--exit-when-idle", "2")
    wait_until(lambda: get(server, f"/studies/{study}")["state"] != "running", 120,
               "the study did not end")
    (trial,) = trials(server, study)
    assert trial["state"] == "failed"
    assert "backbone_dims" in trial["failure_reason"] and "ffn_size" in trial["failure_reason"]

"""A fidelity study end to end (``domain.fidelity``): a real server (SQLite and PostgreSQL),
real worker processes and the tiny BERT. Trials pause at 1/3 of their training with a
checkpoint in the artefact store; the rule continues the promising ones, and a continued
trial is resumed by another worker than the one that paused it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN
from tests.workers.test_worker import get, spec, submit, trials, wait_until


def fidelity_spec(model: Path) -> dict[str, Any]:
    body = spec(model, trials=2, train_examples=300, epochs=1.0, max_parallel=1)
    body["name"] = "fidelity"
    body["fidelity"] = {"levels": [1 / 3, 1.0], "eta": 2.0}
    return body


def _run_fidelity_study(server: Any, group: Any, model: Path) -> None:
    study = submit(server, fidelity_spec(model))
    first = group.start("pauser", "--max-trials", "1")
    assert first.wait(120) == 0, group.log("pauser")  # trained trial #0 to 1/3, then left
    paused = trials(server, study)[0]
    assert paused["state"] in ("paused", "ready")  # ready: already continued by the rule
    assert [o["worker"] for o in paused["observations"]] == ["pauser"]
    group.start("resumer", "--exit-when-idle", "3")
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 240,
               "the fidelity study did not complete")
    done = trials(server, study)
    by_number = {t["number"]: t for t in done}
    resumed = by_number[0]
    assert resumed["state"] == "completed" and resumed["fidelity"] == 1.0
    levels = [(o["fidelity"], o["worker"]) for o in resumed["observations"]]
    assert levels == [(pytest.approx(1 / 3), "pauser"), (1.0, "resumer")]
    steps = [o["step"] for o in resumed["observations"]]
    assert steps == [3, 10]  # 300 examples / batch 32 = 10 steps; 1/3 of them: 3
    # only the new steps cost compute: the continuation's cost is of its own steps
    assert all(o["cost_seconds"] > 0 for o in resumed["observations"])
    assert resumed["result"]["start_step"] == steps[0]
    # the budget counts full-training equivalents
    spent = sum(1.0 if t["state"] == "completed" else t["fidelity"] for t in done
                if t["state"] in ("completed", "paused", "failed"))
    assert spent <= 2.0 + 1e-9
    assert any(t["state"] == "paused" for t in done)  # the rule left some at 1/3
    for trial in done:
        if trial["state"] == "paused":
            assert trial["fidelity"] == pytest.approx(1 / 3) and trial["objective"] is None
            assert len(trial["observations"]) == 1
    # the observed front holds completed (full-training) trials only
    front = get(server, f"/studies/{study}/pareto")["trials"]
    assert front and all(t["state"] == "completed" for t in front)
    # checkpoints are for workers: a client token cannot read one, a worker's can
    paused_one = next(t for t in done if t["state"] == "paused")
    url = f"{server.base_url}/v1/trials/{paused_one['id']}/checkpoint"
    assert httpx.get(url, headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
                     timeout=30).status_code == 403
    response = httpx.get(url, headers={"Authorization": f"Bearer {WORKER_TOKEN}"}, timeout=30)
    assert response.status_code == 200 and response.content[:0] == b""
    assert len(response.content) == int(response.headers["content-length"]) > 0


def test_a_fidelity_study_on_sqlite(server_factory, workers, tiny_bert_path, sqlite_url) -> None:
    server = server_factory(sqlite_url)
    _run_fidelity_study(server, workers(server), tiny_bert_path)


def test_a_fidelity_study_on_postgresql(server_factory, workers, tiny_bert_path,
                                        postgres_admin_url) -> None:
    from autopeft_service.testing.postgres import create_database

    server = server_factory(create_database(postgres_admin_url))
    _run_fidelity_study(server, workers(server), tiny_bert_path)

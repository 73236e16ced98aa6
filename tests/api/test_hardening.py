"""Regression tests of the hardening issue, each on SQLite and PostgreSQL: no study, request
or worker result stops the service for everyone, and every bad input gets a 4xx naming
the field."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.storage.database import Database
from autopeft_service.storage.models import StudyRow, TrialRow
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import (
    CLIENT,
    WORKER,
    create_study,
    lease_result,
    study_spec,
    wait_for_ready,
)


def _post_text(http: httpx.Client, path: str, text: str, headers: dict[str, str]
               ) -> httpx.Response:
    """POST a raw JSON text (httpx's ``json=`` refuses NaN, as a well-behaved client does)."""
    return http.post(path, content=text.encode(),
                     headers={**headers, "Content-Type": "application/json"})


def _locs(response: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in item["loc"]) for item in response.json()["detail"]]


def _lease(http: httpx.Client) -> dict[str, Any]:
    for _ in range(100):
        response = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 1},
                             headers=WORKER)
        if response.status_code == 200:
            return response.json()
    raise AssertionError("no trial was leased")


def _result(lease: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A result (counts of the lease's configuration on MiniLM; made-up counts without a
    lease, for bodies refused before they are checked)."""
    if lease is not None:
        return lease_result(lease, **overrides)
    result = {"metric": "accuracy", "objective": 0.8, "held_out": {"accuracy": 0.8},
              "dev": {"accuracy": 0.7}, "dev_score": 0.7, "trainable_parameters": 10,
              "trainable_percent": 0.5, "deployed_parameters": 10, "head_parameters": 2,
              "train_seconds": 1.0, "eval_seconds": 0.1, "load_seconds": 0.1, "steps": 3,
              "train_examples": 10, "examples_per_second": 10.0, "final_loss": 0.5,
              "peak_memory_mb": 1.0, "device": "cpu", "seed": 0, "config_description": "x"}
    result.update(overrides)
    return result


# ---------------------------------------------------------------------- bounds and values


def test_an_oversized_study_is_refused_and_others_still_get_trials(http: httpx.Client) -> None:
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"num_layers": 21_000, "hidden_size": 384}))
    assert response.status_code == 422, response.text
    assert "body.search_space.num_layers" in _locs(response)
    study = create_study(http)
    wait_for_ready(http, study["id"], 4)


@pytest.mark.parametrize("field, text", [
    ("body.reference_point.score", '"reference_point": {"score": NaN}'),
    ("body.task_options.a.1", '"task_options": {"a": [1, Infinity]}'),
    ("body.training.learning_rate", '"training": {"learning_rate": -Infinity}'),
    ("body.name", '"name": "bad\\u0000name"'),
    ("body.task_options.k", '"task_options": {"k": "nul \\u0000 inside"}'),
])
def test_non_finite_numbers_and_nul_characters_in_a_spec_get_422(
        http: httpx.Client, field: str, text: str) -> None:
    spec = study_spec()
    spec.pop("name", None) if field == "body.name" else None
    body = json.dumps(spec)[:-1] + ", " + text + "}"
    response = _post_text(http, "/v1/studies", body, CLIENT)
    assert response.status_code == 422, response.text
    assert field in _locs(response), response.text
    assert http.get("/v1/studies", headers=CLIENT).json()["total"] == 0


def test_a_nan_result_gets_422_and_the_study_stays_readable_and_cancellable(
        http: httpx.Client) -> None:
    study = create_study(http)
    lease = _lease(http)
    text = json.dumps({"token": lease["token"], "result": _result(lease)}).replace(
        '"objective": 0.8', '"objective": NaN')
    response = _post_text(http, f"/v1/trials/{lease['trial_id']}/result", text, WORKER)
    assert response.status_code == 422, response.text
    assert "body.result.objective" in _locs(response)
    for path in ("/v1/studies", f"/v1/studies/{study['id']}",
                 f"/v1/studies/{study['id']}/pareto", f"/v1/studies/{study['id']}/trials"):
        assert http.get(path, headers=CLIENT).status_code == 200, path
    # The same lease can still report a good result.
    good = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                     json={"token": lease["token"], "result": _result(lease)})
    assert good.status_code == 200, good.text
    cancelled = http.post(f"/v1/studies/{study['id']}/cancel", headers=CLIENT)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


def test_heartbeat_progress_with_nan_or_nul_gets_422(http: httpx.Client) -> None:
    create_study(http)
    lease = _lease(http)
    for text, field in ((json.dumps({"token": lease["token"]})[:-1] + ', "progress": {"loss": NaN}}',
                         "body.progress.loss"),
                        (json.dumps({"token": lease["token"], "progress": {"s": "a\u0000"}}),
                         "body.progress.s")):
        response = _post_text(http, f"/v1/trials/{lease['trial_id']}/heartbeat", text, WORKER)
        assert response.status_code == 422, response.text
        assert field in _locs(response)


def test_a_failure_reason_with_a_nul_character_gets_422(http: httpx.Client) -> None:
    create_study(http)
    lease = _lease(http)
    response = http.post(f"/v1/trials/{lease['trial_id']}/failure", headers=WORKER,
                         json={"token": lease["token"], "reason": "bad \u0000 reason"})
    assert response.status_code == 422 and "body.reason" in _locs(response), response.text


def test_large_bodies_get_413(make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        declared = http.post("/v1/studies", headers={**CLIENT, "Content-Type": "application/json"},
                             content=b"{" + b" " * (50 * 1024 * 1024) + b"}")
        assert declared.status_code == 413, declared.text
        assert "max_request_bytes" in declared.json()["detail"]

        def chunks():  # no Content-Length: streamed, counted as it arrives
            yield b'{"name": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}'

        streamed = http.post("/v1/studies", headers={**CLIENT, "Content-Type": "application/json"},
                             content=chunks())
        assert streamed.status_code == 413, streamed.text
        # Under the cap, the same route still works.
        assert http.post("/v1/studies", headers=CLIENT, json=study_spec()).status_code == 201


def test_task_options_are_capped(http: httpx.Client) -> None:
    response = http.post("/v1/studies", headers=CLIENT,
                         json=study_spec(task_options={"blob": "x" * 70_000}))
    assert response.status_code == 422 and "body.task_options" in _locs(response), response.text


def test_a_budget_larger_than_the_space_is_refused(http: httpx.Client) -> None:
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"num_layers": 6, "serial_adapter_sizes": [0, 8],
                      "parallel_adapter_sizes": [0], "prefix_lengths": [0]},
        budget={"total_trials": 64, "initial_trials": 1}))  # 2^6 - 1 = 63 points
    assert response.status_code == 422, response.text
    assert "body.budget.total_trials" in _locs(response)
    assert "63 valid configurations" in response.text


def test_a_space_exactly_the_budget_is_used_up_and_the_study_completes(
        http: httpx.Client) -> None:
    """Two layers, one size: 3 layer patterns x 1 module = 3 configurations, budget 3."""
    study = create_study(http, search_space={
        "num_layers": 2, "serial_adapter_sizes": [0, 8], "parallel_adapter_sizes": [0],
        "prefix_lengths": [0]}, budget={"total_trials": 3, "initial_trials": 3,
                                        "max_parallel": 3},
        backbone_dims={**MINILM_DIMS.model_dump(), "num_layers": 2})
    for _ in range(3):
        lease = _lease(http)
        assert http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                         json={"token": lease["token"], "result": _result(lease)}).status_code == 200
    end = time.monotonic() + 20
    while http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["state"] != "completed":
        assert time.monotonic() < end, "the study never completed"
        time.sleep(0.1)


# ---------------------------------------------------------------------- smaller findings


def test_a_wrong_lease_token_409_does_not_claim_the_lease_expired(http: httpx.Client) -> None:
    create_study(http)
    lease = _lease(http)
    response = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", headers=WORKER,
                         json={"token": "not-the-token"})
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "wrong token" in detail and "handed to another worker" not in detail


def test_a_completed_trial_drops_an_earlier_failure_reason(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server(lease_seconds=0.5, sweep_interval_seconds=0.1)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, budget={"total_trials": 4, "initial_trials": 4,
                                           "max_parallel": 1, "max_attempts": 3})
        first = _lease(http)
        time.sleep(1.0)  # the lease expires and is swept: "lease expired ..."
        second = _lease(http)
        assert second["trial_id"] == first["trial_id"]
        trials = http.get(f"/v1/studies/{study['id']}/trials", headers=CLIENT).json()["items"]
        assert "lease expired" in trials[0]["failure_reason"]
        assert http.post(f"/v1/trials/{second['trial_id']}/result", headers=WORKER,
                         json={"token": second["token"], "result": _result(second)}).status_code == 200
        trials = http.get(f"/v1/studies/{study['id']}/trials", headers=CLIENT).json()["items"]
        assert trials[0]["state"] == "completed" and trials[0]["failure_reason"] is None


def test_auth_is_checked_before_the_body(http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = http.post("/v1/studies", content=b"{not json",
                             headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
    # With a token, the same body is a 422 naming the body.
    response = http.post("/v1/studies", content=b"{not json",
                         headers={**CLIENT, "Content-Type": "application/json"})
    assert response.status_code == 422


def test_a_server_without_tokens_warns(make_server: Callable[..., ServerThread],
                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="autopeft_service.api.app"):
        make_server(client_tokens=[], worker_tokens=[])
    messages = [r.getMessage() for r in caplog.records]
    assert any("no client tokens" in m and "AUTOPEFT_CLIENT_TOKENS" in m for m in messages)
    assert any("no worker tokens" in m for m in messages)


# ---------------------------------------------------------------------- what the database holds


def test_views_and_the_proposer_tolerate_a_completed_trial_without_objectives(
        server: ServerThread, http: httpx.Client) -> None:
    """A completed trial whose objective is NULL (SQLite stored NaN so) or NaN (PostgreSQL
    stores it), as an older version let in: no view answers 500, the study cancels, and
    the proposer goes on for the other studies."""
    study = create_study(http)
    lease = _lease(http)
    assert http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                     json={"token": lease["token"], "result": _result(lease)}).status_code == 200
    database: Database = server.services.database
    bad = float("nan") if database.engine.dialect.name == "postgresql" else None
    with database.session() as session:
        session.execute(update(TrialRow).where(TrialRow.id == lease["trial_id"]).values(
            objective=bad, dev_score=bad))
    for path in ("/v1/studies", f"/v1/studies/{study['id']}",
                 f"/v1/studies/{study['id']}/pareto", f"/v1/studies/{study['id']}/trials"):
        response = http.get(path, headers=CLIENT)
        assert response.status_code == 200, (path, response.text)
    assert http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["best"] is None
    assert http.post(f"/v1/studies/{study['id']}/cancel", headers=CLIENT).status_code == 200
    other = create_study(http)
    wait_for_ready(http, other["id"], 4)


def test_a_stored_spec_that_no_longer_validates_fails_its_study_only(
        make_server: Callable[..., ServerThread], database_url: str) -> None:
    """A study stored by a laxer version (21,000 layers), met by a new server: readable,
    ended ``failed`` with the reason, and the other studies go on."""
    first = make_server()
    with httpx.Client(base_url=first.base_url, timeout=30) as http:
        broken = create_study(http)
        spec = http.get(f"/v1/studies/{broken['id']}", headers=CLIENT).json()["spec"]
    first.__exit__(None, None, None)
    spec["search_space"]["num_layers"] = 21_000
    database = Database(database_url, pool_size=1)
    with database.session() as session:
        session.execute(update(StudyRow).where(StudyRow.id == broken["id"]).values(spec=spec))
    database.dispose()
    second = make_server()
    with httpx.Client(base_url=second.base_url, timeout=30) as http:
        other = create_study(http)
        wait_for_ready(http, other["id"], 4)
        end = time.monotonic() + 20
        while (study := http.get(f"/v1/studies/{broken['id']}", headers=CLIENT).json())[
                "state"] != "failed":
            assert time.monotonic() < end, study
            time.sleep(0.1)
        assert "search_space.num_layers" in study["reason"]
        assert study["spec"]["search_space"]["num_layers"] == 21_000
        assert study["counts"]["ready"] == study["counts"]["leased"] == 0
        assert http.get("/v1/studies", headers=CLIENT).status_code == 200


@pytest.mark.parametrize("settings, field", [
    ({"warmup_steps": 10**9}, "body.optimizer.settings.warmup_steps"),
    ({"candidates": 10**7}, "body.optimizer.settings.candidates"),
    ({"seed": 2**40}, "body.optimizer.settings.seed"),
])
def test_optimizer_settings_that_would_stall_the_proposer_get_422(
        http: httpx.Client, settings: dict[str, int], field: str) -> None:
    response = http.post("/v1/studies", headers=CLIENT,
                         json=study_spec(optimizer={"name": "saasbo", "settings": settings}))
    assert response.status_code == 422, response.text
    assert field in _locs(response)


def test_saasbo_on_a_space_too_large_to_model_gets_422_and_sobol_takes_it(
        http: httpx.Client) -> None:
    from autopeft_service.optimizers.saasbo import MAX_DIMENSION

    def dims(layers: int) -> dict[str, int]:
        return {**MINILM_DIMS.model_dump(), "num_layers": layers}

    layers = MAX_DIMENSION - 3 + 1
    space = {"num_layers": layers, "hidden_size": 384}
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space=space, optimizer={"name": "saasbo"}, backbone_dims=dims(layers)))
    assert response.status_code == 422, response.text
    assert "body.search_space.num_layers" in _locs(response)
    assert "saasbo" in response.text
    at_bound = study_spec(search_space={"num_layers": layers - 1, "hidden_size": 384},
                          optimizer={"name": "saasbo"}, backbone_dims=dims(layers - 1))
    assert http.post("/v1/studies", headers=CLIENT, json=at_bound).status_code == 201
    # Another family: the field that makes it large is named (LoRA's per-layer ranks).
    lora = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"kind": "lora", "granularity": "layer"}, optimizer={"name": "saasbo"},
        backbone_dims=dims(64)))
    assert lora.status_code == 422 and "body.search_space.granularity" in _locs(lora)
    large = create_study(http, search_space={"num_layers": 256, "hidden_size": 384},
                         backbone_dims=dims(256))
    wait_for_ready(http, large["id"], 4)  # sobol at the layer bound: proposals at once


def test_a_lease_carries_a_bounded_body(http: httpx.Client) -> None:
    """The largest task_options a spec may hold (64 KiB as JSON) is what a lease carries
    beside the configuration: the whole lease stays under 80 KiB."""
    from autopeft_service.domain.study import MAX_TASK_OPTIONS_BYTES

    blob = "x" * (MAX_TASK_OPTIONS_BYTES - 100)
    create_study(http, task_options={"blob": blob})
    lease = _lease(http)
    assert lease["task_options"]["blob"] == blob
    assert len(json.dumps(lease).encode()) < 80 * 1024


# ------------------------------------------------- second pass: strict types and locations


@pytest.mark.parametrize("field, value", [
    ("budget.total_trials", "5"), ("budget.total_trials", True), ("budget.total_trials", 5.0),
    ("budget.max_parallel", "2"), ("seed", True), ("optimizer.seed", "1"),
    ("training.epochs", "1"), ("training.gradient_checkpointing", "yes"),
    ("training.batch_size", 8.0), ("reference_point.score", False),
    ("early_stopping.rung_examples", "64"),
])
def test_numbers_and_booleans_in_a_spec_are_not_coerced(http: httpx.Client, field: str,
                                                        value: Any) -> None:
    spec = study_spec()
    parent, _, leaf = field.rpartition(".")
    target = spec.setdefault(parent, {}) if parent else spec
    target[leaf] = value
    response = http.post("/v1/studies", headers=CLIENT, json=spec)
    assert response.status_code == 422, response.text
    assert f"body.{field}" in _locs(response), response.text


@pytest.mark.parametrize("value", [0, 10**30, True, "384"])
def test_a_bad_backbone_hidden_size_is_reported_at_backbone_dims(http: httpx.Client,
                                                                 value: Any) -> None:
    dims = {**MINILM_DIMS.model_dump(), "hidden_size": value}
    spec = study_spec(backbone_dims=dims, search_space={"kind": "autopeft"})
    response = http.post("/v1/studies", headers=CLIENT, json=spec)
    assert response.status_code == 422, response.text
    locs = _locs(response)
    assert "body.backbone_dims.hidden_size" in locs, response.text
    assert "body.search_space.hidden_size" not in locs, response.text


@pytest.mark.parametrize("name", ["   ", "\t \n"])
def test_a_blank_name_gets_422(http: httpx.Client, name: str) -> None:
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(name=name))
    assert response.status_code == 422, response.text
    assert "body.name" in _locs(response)


@pytest.mark.parametrize("task, reason", [
    ("synthetc", "unknown task"), ("glue:sst3", "unknown GLUE task"),
    ("csv:", "give the directory"), ("hf:a/b/c/d", "expected hf:"), ("hf:", "name is empty"),
])
def test_an_unknown_task_is_refused_at_submit(http: httpx.Client, task: str,
                                              reason: str) -> None:
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(task=task))
    assert response.status_code == 422, response.text
    assert "body.task" in _locs(response)
    assert reason in response.text
    assert http.get("/v1/studies", headers=CLIENT).json()["total"] == 0


@pytest.mark.parametrize("task", ["glue:SST-2", "glue:rte", "csv:data/x", "jsonl:/d",
                                  "hf:nyu-mll/glue:rte", "lm:examples/lm", "synthetic-lm"])
def test_well_formed_tasks_are_accepted(http: httpx.Client, task: str) -> None:
    create_study(http, task=task)


@pytest.mark.parametrize("body, field", [
    ({"worker": "w", "wait_seconds": True}, "body.wait_seconds"),
    ({"worker": "w", "wait_seconds": "1"}, "body.wait_seconds"),
])
def test_lease_numbers_are_not_coerced(http: httpx.Client, body: dict[str, Any],
                                       field: str) -> None:
    response = http.post("/v1/leases", headers=WORKER, json=body)
    assert response.status_code == 422, response.text
    assert field in _locs(response)


@pytest.mark.parametrize("field, value", [("steps", "3"), ("objective", True),
                                          ("trainable_parameters", 10.0), ("seed", False)])
def test_result_numbers_are_not_coerced(http: httpx.Client, field: str, value: Any) -> None:
    create_study(http)
    lease = _lease(http)
    response = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                         json={"token": lease["token"], "result": _result(lease, **{field: value})})
    assert response.status_code == 422, response.text
    assert f"body.result.{field}" in _locs(response)


def test_failure_flags_are_not_coerced(http: httpx.Client) -> None:
    create_study(http)
    lease = _lease(http)
    response = http.post(f"/v1/trials/{lease['trial_id']}/failure", headers=WORKER,
                         json={"token": lease["token"], "reason": "x", "retry": "false"})
    assert response.status_code == 422, response.text
    assert "body.retry" in _locs(response)


# ------------------------------------------------------------------ second pass: OpenAPI


@pytest.mark.parametrize("path, methods", [
    ("/v1/studies", "GET, POST"), ("/v1/trials/1/artifact", "GET, PUT"),
    ("/v1/studies/1", "GET"), ("/v1/leases", "POST"),
])
def test_a_method_not_allowed_names_every_method_of_the_path(http: httpx.Client, path: str,
                                                             methods: str) -> None:
    for method in ("OPTIONS", "DELETE", "PATCH"):
        response = http.request(method, path, headers=CLIENT)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == methods, (method, response.headers)


def test_the_artifact_download_documents_503(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert "503" in document["paths"]["/v1/trials/{trial_id}/artifact"]["get"]["responses"]

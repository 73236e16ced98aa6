"""Every family through the server: studies run to completion with fake workers, every
trial's share is the server's exact one, the share option is honoured, and a worker whose
counts differ from the server's fails the trial with the reason."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.spaces import FAMILIES
from autopeft_service.domain.study import StudySpec
from autopeft_service.testing.server import WORKER_TOKEN, ServerThread
from tests.api.conftest import CLIENT, WORKER, create_study, lease_result, study_spec
from workers.client import ServerClient
from workers.fake_worker import FakeWorker

CHEAP_SAASBO = {"name": "saasbo", "settings": {
    "warmup_steps": 32, "num_samples": 16, "thinning": 8, "mc_samples": 32,
    "candidates": 128, "restarts": 2}}


def _run_fake_workers(server: ServerThread, http: httpx.Client, study_id: int,
                      count: int = 2, timeout: float = 120) -> None:
    """Fake workers lease and report until the study has ended (the model may take a few
    seconds per batch, so they do not stop when the queue is briefly empty)."""
    done = threading.Event()

    def work(name: str) -> None:
        worker = FakeWorker(ServerClient(server.base_url, WORKER_TOKEN, name))
        while not done.is_set():
            worker.run_one(wait_seconds=0.5)

    threads = [threading.Thread(target=work, args=(f"fake-{i}",)) for i in range(count)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            state = http.get(f"/v1/studies/{study_id}", headers=CLIENT).json()["state"]
            if state != "running":
                break
            time.sleep(0.2)
    finally:
        done.set()
        for thread in threads:
            thread.join(30)


def _trials(http: httpx.Client, study_id: int) -> list[dict[str, Any]]:
    return http.get(f"/v1/studies/{study_id}/trials", params={"limit": 500},
                    headers=CLIENT).json()["items"]


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_a_study_per_family_completes_with_exact_server_shares(
        server: ServerThread, http: httpx.Client, kind: str) -> None:
    optimizer = CHEAP_SAASBO if kind == "unified" else {"name": "sobol"}
    study = create_study(http, search_space={"kind": kind}, optimizer=optimizer,
                         budget={"total_trials": 8, "initial_trials": 4, "max_parallel": 4})
    _run_fake_workers(server, http, study["id"])
    state = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()
    assert state["state"] == "completed", state
    spec = StudySpec.model_validate(state["spec"])
    assert spec.space.kind == kind and spec.backbone_dims == MINILM_DIMS
    trials = _trials(http, study["id"])
    assert len(trials) == 8 and all(t["state"] == "completed" for t in trials)
    for trial in trials:
        config = spec.space.decode(trial["params"])
        expected = count_parameters(config, MINILM_DIMS).deployed_percent
        assert trial["param_share"] == expected
        assert trial["config_description"] == config.describe()
    if kind == "unified":  # the model proposed after the Sobol start, on a categorical space
        generators = [t["generator"] for t in trials]
        assert generators.count("saasbo") >= 1, generators
    pareto = http.get(f"/v1/studies/{study['id']}/pareto", headers=CLIENT).json()
    assert pareto["trials"]


def test_param_share_trainable_counts_the_prefix_mlp(http: httpx.Client) -> None:
    """With ``param_share: trainable`` a prefix costs its reparameterising MLP too."""
    space = {"kind": "autopeft", "serial_adapter_sizes": [0], "parallel_adapter_sizes": [0],
             "prefix_lengths": [0, 16]}
    shares = {}
    for count in ("deployed", "trainable"):
        study = create_study(http, name=count, search_space=space, param_share=count,
                             budget={"total_trials": 1, "initial_trials": 1,
                                     "max_parallel": 1})
        lease = _lease_of(http, study["id"])
        assert http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER, json={
            "token": lease["token"], "result": lease_result(lease)}).json()["state"] == \
            "completed"
        (trial,) = _trials(http, study["id"])
        counts = count_parameters(StudySpec.model_validate(study["spec"]).space.decode(
            trial["params"]), MINILM_DIMS)
        shares[count] = trial["param_share"]
        assert trial["param_share"] == getattr(counts, f"{count}_percent")
    assert shares["trainable"] > shares["deployed"] + 1.0  # the MLP: ~4 % of MiniLM


def _lease_of(http: httpx.Client, study_id: int) -> dict[str, Any]:
    for _ in range(50):
        response = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 1},
                             headers=WORKER)
        if response.status_code == 200 and response.json()["study_id"] == study_id:
            return response.json()
    raise AssertionError("no trial of the study was leased")


def test_a_worker_whose_counts_differ_fails_the_trial_loudly(
        http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    study = create_study(http, budget={"total_trials": 2, "initial_trials": 2,
                                       "max_parallel": 1, "max_attempts": 3})
    lease = _lease_of(http, study["id"])
    assert lease["backbone_dims"] == MINILM_DIMS.model_dump()
    right = lease_result(lease)
    wrong = {**right, "trainable_parameters": right["trainable_parameters"] + 1}
    answer = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                       json={"token": lease["token"], "result": wrong})
    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "failed" and "parameter count mismatch" in body["failure_reason"]
    assert str(right["trainable_parameters"] + 1) in body["failure_reason"]
    (trial, *_) = [t for t in _trials(http, study["id"]) if t["id"] == lease["trial_id"]]
    assert trial["state"] == "failed" and trial["objective"] is None
    assert "parameter count mismatch" in caplog.text
    # the right counts, reported again, do not revive it
    again = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                      json={"token": lease["token"], "result": right})
    assert again.status_code == 409


def test_a_new_study_needs_backbone_dims_and_a_fitting_space(http: httpx.Client) -> None:
    missing = study_spec(backbone="/models/some-bert")
    del missing["backbone_dims"]
    response = http.post("/v1/studies", json=missing, headers=CLIENT)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "backbone_dims"]
    design = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"kind": "design_space", "max_groups": 7}))
    assert design.status_code == 422
    assert ["body", "search_space", "max_groups"] in [d["loc"] for d in design.json()["detail"]]


def test_a_design_space_naming_a_pattern_its_depth_cannot_shape_gets_422(
        http: httpx.Client) -> None:
    """Issue 30: patterns are never aliased; a spindle needs three groups, so a space of at
    most two groups on MiniLM cannot offer it and the spec is refused, naming the field."""
    spindle = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"kind": "design_space", "max_groups": 2, "patterns": ["spindle"]}))
    assert spindle.status_code == 422
    detail = spindle.json()["detail"]
    assert ["body", "search_space", "patterns"] in [d["loc"] for d in detail]
    assert "spindle is offered at no group count" in str(detail)
    three = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"kind": "design_space", "max_groups": 3, "patterns": ["spindle"],
                      "budgets": [1.0]}))
    assert three.status_code == 201, three.text


def test_a_packaged_decoder_needs_no_dims_and_a_projection_it_lacks_is_refused(
        http: httpx.Client) -> None:
    from autopeft_service.domain.backbone import SMOLLM2_DIMS

    named = study_spec(backbone="smollm2", search_space={"kind": "lora"},
                       reference_point={"score": 0.0, "param_share": 10.0})
    del named["backbone_dims"]
    response = http.post("/v1/studies", json=named, headers=CLIENT)
    assert response.status_code == 201, response.text
    study = response.json()
    spec = StudySpec.model_validate(study["spec"])
    assert spec.backbone_dims == SMOLLM2_DIMS and spec.space.num_layers == 30
    assert "ffn_gate" in [t.value for t in spec.space.targets]  # seven projections
    lease = _lease_of(http, study["id"])
    assert lease["backbone"] == "smollm2"
    assert lease["backbone_dims"] == SMOLLM2_DIMS.model_dump()
    assert PeftConfig.model_validate(lease["config"]) == spec.space.decode(lease["params"])
    gate_on_bert = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        search_space={"kind": "lora", "num_layers": 6, "targets": ["query", "ffn_gate"]}))
    assert gate_on_bert.status_code == 422
    detail = gate_on_bert.json()["detail"]
    assert ["body", "search_space", "targets"] in [d["loc"] for d in detail], detail
    assert "no gate projection" in str(detail)

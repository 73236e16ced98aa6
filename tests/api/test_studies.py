"""Study API: validation (422 naming the field), 404, auth, listing, cancel, trial pages."""

import httpx
import pytest

from tests.api.conftest import (
    CLIENT,
    WORKER,
    create_study,
    lease_result,
    study_spec,
    wait_for_ready,
)


def _field_errors(response: httpx.Response) -> list[str]:
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return [detail]
    return [".".join(str(p) for p in item["loc"]) + ": " + item["msg"] for item in detail]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"budget": {"total_trials": 0}}, "body.budget.total_trials"),
        ({"budget": {"total_trials": 5, "initial_trials": 6}}, "budget.initial_trials"),
        ({"search_space": {"serial_adapter_sizes": [3, 1]}},
         "body.search_space.serial_adapter_sizes"),
        ({"search_space": {"kind": "unified", "ffn_sizes": [0, 4]}},
         "body.search_space.ffn_sizes"),
        ({"search_space": {"kind": "lora", "granularity": "rows"}},
         "body.search_space.granularity"),
        ({"search_space": {"kind": "nope"}}, "body.search_space"),
        ({"search_space": {"num_layers": 4}}, "body.search_space.num_layers"),
        ({"backbone_dims": None, "backbone": "/models/bert"}, "body.backbone_dims"),
        ({"backbone_dims": {"num_layers": 6}}, "body.backbone_dims.hidden_size"),
        ({"search_space": {"num_layers": 6, "hidden_size": -3}}, "hidden_size"),
        ({"training": {"learning_rate": 5}}, "body.training.learning_rate"),
        ({"optimizer": {"name": "nope"}}, "optimizer.name"),
        ({"optimizer": {"name": "sobol", "settings": {"x": 1}}}, "optimizer.settings"),
        ({"colour": "blue"}, "body.colour"),
        ({"fidelity": {"levels": [0.5, 1.0], "speed": 2}}, "body.fidelity.speed"),
        ({"fidelity": {"levels": [0.5, 0.9]}}, "fidelity.levels.1"),
        ({"fidelity": {"levels": [0.5, 0.3, 1.0]}}, "fidelity.levels.1"),
        ({"fidelity": {"levels": [1.0]}}, "body.fidelity.levels"),
        ({"fidelity": {"levels": [0.0, 1.0]}}, "body.fidelity.levels.0"),
        ({"fidelity": {"rule": "lucky"}}, "body.fidelity.rule"),
        ({"fidelity": {"eta": 1.0}}, "body.fidelity.eta"),
        ({"fidelity": {}, "early_stopping": {"rule": "moasha", "rungs": [0.5]}},
         "early_stopping.rule"),
        ({"name": ""}, "body.name"),
    ],
)
def test_bad_spec_is_422_naming_the_field(http: httpx.Client, overrides: dict,
                                          field: str) -> None:
    response = http.post("/v1/studies", json=study_spec(**overrides), headers=CLIENT)
    assert response.status_code == 422, response.text
    assert any(field in error for error in _field_errors(response)), _field_errors(response)


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"null", b'"text"', b"{}"])
def test_malformed_bodies_are_422(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/studies", content=body, headers={
        **CLIENT, "Content-Type": "application/json"})
    assert response.status_code == 422


def test_unknown_study_and_trial_are_404(http: httpx.Client) -> None:
    for path in ("/v1/studies/999", "/v1/studies/999/trials", "/v1/studies/999/pareto"):
        assert http.get(path, headers=CLIENT).status_code == 404, path
    assert http.post("/v1/studies/999/cancel", headers=CLIENT).status_code == 404
    response = http.post("/v1/trials/999/heartbeat", json={"token": "x"}, headers=WORKER)
    assert response.status_code == 404


def test_auth_missing_wrong_token_is_401_wrong_role_is_403(http: httpx.Client) -> None:
    assert http.get("/v1/studies").status_code == 401
    assert http.get("/v1/studies", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.get("/v1/studies", headers=WORKER).status_code == 403
    assert http.post("/v1/leases", json={"worker": "w"}, headers=CLIENT).status_code == 403
    assert http.post("/v1/leases", json={"worker": "w"}).status_code == 401
    assert http.get("/v1/health").status_code == 200


def test_create_get_list_and_trials_pages(http: httpx.Client) -> None:
    study = create_study(http)
    assert study["state"] == "running" and study["total_trials"] == 12
    second = create_study(http, name="second")
    listed = http.get("/v1/studies", params={"limit": 1}, headers=CLIENT).json()
    assert listed["total"] == 2 and [s["id"] for s in listed["items"]] == [second["id"]]
    wait_for_ready(http, study["id"], 4)
    page = http.get(f"/v1/studies/{study['id']}/trials", params={"state": "ready", "limit": 3},
                    headers=CLIENT).json()
    assert page["total"] == 4 and len(page["items"]) == 3
    assert [t["number"] for t in page["items"]] == [0, 1, 2]
    assert all(t["generator"] == "sobol" for t in page["items"])
    bad = http.get(f"/v1/studies/{study['id']}/trials", params={"state": "bogus"},
                   headers=CLIENT)
    assert bad.status_code == 422


def test_proposer_keeps_max_parallel_ready_and_never_exceeds_budget(http: httpx.Client) -> None:
    study = create_study(http, budget={"total_trials": 6, "initial_trials": 2,
                                       "max_parallel": 4})
    wait_for_ready(http, study["id"], 4)
    leased = [http.post("/v1/leases", json={"worker": f"w{i}"}, headers=WORKER).json()
              for i in range(4)]
    wait_for_ready(http, study["id"], 2)
    import time

    time.sleep(0.5)  # give the proposer time to (wrongly) overfill
    counts = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["counts"]
    assert counts["ready"] == 2 and counts["leased"] == 4  # budget of 6 reached, not 8
    assert len({lease["trial_id"] for lease in leased}) == 4


def test_cancel_stops_study_and_tells_workers_to_stop(http: httpx.Client) -> None:
    study = create_study(http)
    wait_for_ready(http, study["id"], 1)
    lease = http.post("/v1/leases", json={"worker": "w"}, headers=WORKER).json()
    cancelled = http.post(f"/v1/studies/{study['id']}/cancel", headers=CLIENT).json()
    assert cancelled["state"] == "cancelled"
    assert cancelled["counts"]["leased"] == 0 and cancelled["counts"]["ready"] == 0
    beat = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", json={"token": lease["token"]},
                     headers=WORKER).json()
    assert beat["stop"] is True and beat["reason"] == "cancelled"
    late = http.post(f"/v1/trials/{lease['trial_id']}/result",
                     json={"token": lease["token"], "result": _result(lease)}, headers=WORKER)
    assert late.status_code == 409
    nothing = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 0}, headers=WORKER)
    assert nothing.status_code == 204


def _result(lease: dict, score: float = 0.8) -> dict:
    return lease_result(lease, score)

"""Warm start over HTTP (issue 32): the sources are checked when a study is created (404
for a study the caller cannot read, 422 naming the field for the rest), and ``seed`` mode
queues exactly the sources' observed fronts, mapped to the new study's space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from autopeft_service.domain.tenancy import Role
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import CLIENT, create_study, report_result, study_spec, take_lease

#: Scores of the source's six trials, in lease order (two share a front only by share).
SCORES = [0.70, 0.82, 0.75, 0.90, 0.60, 0.85]


def _completed_source(http: httpx.Client, **overrides: Any) -> dict[str, Any]:
    """A source study whose six Sobol trials all completed, with ``SCORES``."""
    budget = {"total_trials": 6, "initial_trials": 6, "max_parallel": 6}
    study = create_study(http, budget=budget, **overrides)
    for score in SCORES:
        report_result(http, take_lease(http), score)
    return study


def _trials(http: httpx.Client, study_id: int) -> list[dict[str, Any]]:
    return http.get(f"/v1/studies/{study_id}/trials", headers=CLIENT,
                    params={"limit": 100}).json()["items"]


def _trial(http: httpx.Client, study_id: int, trial_id: int) -> dict[str, Any]:
    return next(t for t in _trials(http, study_id) if t["id"] == trial_id)


def test_seed_mode_queues_exactly_the_sources_observed_front(http: httpx.Client) -> None:
    source = _completed_source(http)
    front = http.get(f"/v1/studies/{source['id']}/pareto", headers=CLIENT).json()["trials"]
    assert 1 < len(front) < len(SCORES)  # a front, not every trial
    budget = {"total_trials": 10, "initial_trials": 4, "max_parallel": 1}
    target = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        name="warm", budget=budget, seed=3,
        warm_start={"from_studies": [source["id"]], "mode": "seed"}))
    assert target.status_code == 201, target.text
    assert target.json()["spec"]["warm_start"] == {"from_studies": [source["id"]],
                                                    "mode": "seed"}
    seeded = [t for t in _trials(http, target.json()["id"])
              if t["generator"].startswith("transfer:")]
    assert sorted((t["generator"], sorted(t["params"].items())) for t in seeded) == sorted(
        (f"transfer:{source['id']}#{t['number']}", sorted(t["params"].items())) for t in front)
    # the seeded trials come first, by share as the source's front lists them
    numbers = sorted(t["number"] for t in seeded)
    assert numbers == list(range(len(front)))


#: Cheap NUTS for the service tests (the model is tested in tests/optimizers).
CHEAP_SAASBO = {"warmup_steps": 32, "num_samples": 16, "thinning": 8, "mc_samples": 16,
                "candidates": 128, "restarts": 2}


def test_model_mode_starts_from_the_sources_front_then_its_model_reports_the_correlation(
        http: httpx.Client) -> None:
    """Real server, real proposer: the first trials are the source's front (read from the
    database at proposal time), then the multi-task model proposes and the study view
    shows what it learnt of the source."""
    source = _completed_source(http)
    front = http.get(f"/v1/studies/{source['id']}/pareto", headers=CLIENT).json()["trials"]
    target = create_study(
        http, name="warm model", budget={"total_trials": 3, "initial_trials": 2,
                                         "max_parallel": 2},
        optimizer={"name": "saasbo", "seed": 1, "settings": CHEAP_SAASBO},
        warm_start={"from_studies": [source["id"]], "mode": "model"})
    assert target["transfer"] is None  # nothing learnt before the first model proposal
    first = [take_lease(http) for _ in range(2)]
    by_number = {t["number"]: t for t in front}
    generators = []
    for lease, score in zip(first, (0.8, 0.7), strict=True):
        trial = _trial(http, target["id"], lease["trial_id"])
        generators.append(trial["generator"])
        if trial["generator"].startswith("transfer:"):
            assert trial["generator"].startswith(f"transfer:{source['id']}#")
            number = int(trial["generator"].rsplit("#", 1)[1])
            assert trial["params"] == by_number[number]["params"]  # same backbone
        report_result(http, lease, score)
    # the initial design: the source's best front point, then the study's own Sobol point
    assert sorted(g.split(":")[0] for g in generators) == ["sobol", "transfer"], generators
    third = take_lease(http, timeout=180)  # the model's first proposal (a NUTS fit)
    assert _trial(http, target["id"], third["trial_id"])["generator"] == "saasbo"
    study = http.get(f"/v1/studies/{target['id']}", headers=CLIENT).json()
    transfer = study["transfer"]
    assert transfer["used"] is True and transfer["target_trials"] == 2
    assert transfer["dropped"] == [] and transfer["predictive"] == {}
    assert 0.0 < transfer["correlations"][str(source["id"])] <= 1.0


def test_model_mode_needs_saasbo_and_no_fidelity(http: httpx.Client) -> None:
    source = _completed_source(http)
    warm = {"from_studies": [source["id"]], "mode": "model"}
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(warm_start=warm))
    assert response.status_code == 422  # the spec's optimizer is sobol
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "warm_start", "mode"]
    assert "optimizer 'sobol' has none" in error["msg"]
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        warm_start=warm, optimizer={"name": "saasbo"},
        budget={"total_trials": 4, "initial_trials": 2, "max_parallel": 2},
        fidelity={"levels": [0.5, 1.0], "eta": 2.0}))
    assert response.status_code == 422, response.text
    assert "cannot be combined with a fidelity section" in response.text
    default = create_study(http, name="default mode", warm_start={"from_studies": [source["id"]]})
    assert default["spec"]["warm_start"]["mode"] == "seed"


@pytest.mark.parametrize(("warm_start", "status", "message"), [
    ({"from_studies": [999]}, 404, "warm_start.from_studies.0: study 999 does not exist"),
    ({"from_studies": []}, 422, "at least 1 item"),
    ({"from_studies": [1, 1]}, 422, "names a study twice"),
    ({"from_studies": [0]}, 422, "greater than or equal to 1"),
    ({"from_studies": [2**63]}, 422, "less than or equal to 2147483647"),
    ({"from_studies": [1], "mode": "copy"}, 422, "'model' or 'seed'"),
    ({"from_studies": [1], "extra": 1}, 422, "Extra inputs are not permitted"),
])
def test_bad_sources_are_refused_naming_the_field(http: httpx.Client, warm_start: dict,
                                                  status: int, message: str) -> None:
    response = http.post("/v1/studies", headers=CLIENT,
                         json=study_spec(warm_start=warm_start))
    assert response.status_code == status, response.text
    assert message in response.text
    if status == 422:  # pydantic's errors locate the field
        assert response.json()["detail"][0]["loc"][:2] == ["body", "warm_start"]


def test_a_source_of_another_family_or_without_results_is_422(http: httpx.Client) -> None:
    empty = create_study(http, name="empty", budget={"total_trials": 4, "initial_trials": 4,
                                                     "max_parallel": 1})
    response = http.post("/v1/studies", headers=CLIENT,
                         json=study_spec(warm_start={"from_studies": [empty["id"]]}))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "warm_start", "from_studies", "0"]
    assert error["msg"] == f"study {empty['id']} has no completed trial to learn from"
    # cancelled, so that the lora study's leases cannot complete its trials
    assert http.post(f"/v1/studies/{empty['id']}/cancel", headers=CLIENT).status_code == 200
    lora = _completed_source(http, search_space={"kind": "lora"})
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        warm_start={"from_studies": [empty["id"], lora["id"]]}))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "warm_start", "from_studies", "0"]  # the first bad one
    response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        warm_start={"from_studies": [lora["id"]]}))
    assert response.status_code == 422
    assert "searches the 'lora' family, this study 'autopeft'" in response.text


def test_another_tenants_study_cannot_be_named(make_server: Callable[..., ServerThread]
                                               ) -> None:
    """A study the caller may not read is 'does not exist', as every route answers."""
    server = make_server()
    database = Database(server.settings.database_url)
    try:
        with database.session() as session:
            repo.create_tenant(session, "other")
            secret = repo.create_token(session, "other", Role.MEMBER)[1]
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            source = _completed_source(http)
            response = http.post("/v1/studies", json=study_spec(
                warm_start={"from_studies": [source["id"]], "mode": "seed"}),
                headers={"Authorization": f"Bearer {secret}"})
            assert response.status_code == 404, response.text
            assert f"study {source['id']} does not exist" in response.text
    finally:
        database.dispose()


def test_seed_mode_maps_the_front_to_a_deeper_backbone(http: httpx.Client) -> None:
    """A 6-layer source seeds a 12-layer study: each front point by relative layer position
    (``SearchSpaceBase.transfer_point``), so layer i's flag covers layers 2i and 2i+1."""
    from autopeft_service.domain.backbone import MINILM_DIMS

    source = _completed_source(http)
    front = http.get(f"/v1/studies/{source['id']}/pareto", headers=CLIENT).json()["trials"]
    deeper = {**MINILM_DIMS.model_dump(), "num_layers": 12}
    target = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        name="deeper", backbone_dims=deeper,
        search_space={"num_layers": 12, "hidden_size": 384},
        budget={"total_trials": 10, "initial_trials": 4, "max_parallel": 1},
        warm_start={"from_studies": [source["id"]], "mode": "seed"}))
    assert target.status_code == 201, target.text
    seeded = {t["generator"]: t["params"] for t in _trials(http, target.json()["id"])
              if t["generator"].startswith("transfer:")}
    assert len(seeded) == len(front)
    for trial in front:
        mapped = seeded[f"transfer:{source['id']}#{trial['number']}"]
        for i in range(6):
            flag = trial["params"][f"layer_{i}"]
            assert mapped[f"layer_{2 * i}"] == mapped[f"layer_{2 * i + 1}"] == flag
        for size in ("serial_adapter_size", "parallel_adapter_size", "prefix_length"):
            assert mapped[size] == trial["params"][size]

"""Rung scores over the worker protocol: the MO-ASHA rule prunes at a heartbeat, reports are
idempotent, a pruned trial uses its budget slot, records survive a restart; both databases."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import CLIENT, WORKER, create_study, lease_result, wait_for_ready

MOASHA = {"rule": "moasha", "rungs": [0.5], "eta": 2}


def _share(lease: dict[str, Any]) -> float:
    dims = BackboneDims.model_validate(lease["backbone_dims"])
    return count_parameters(PeftConfig.model_validate(lease["config"]), dims).deployed_percent


def _lease_all(http: httpx.Client, study_id: int, count: int) -> list[dict[str, Any]]:
    wait_for_ready(http, study_id, count)
    leases = []
    for _ in range(count):
        response = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 2},
                             headers=WORKER)
        assert response.status_code == 200, response.text
        leases.append(response.json())
    return sorted(leases, key=_share)  # cheapest first


def _rung(http: httpx.Client, lease: dict[str, Any], score: float, rung: int = 0,
          step: int = 5) -> httpx.Response:
    return http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", headers=WORKER, json={
        "token": lease["token"], "progress": {"step": step},
        "rungs": [{"rung": rung, "step": step, "score": score, "examples": 50,
                   "eval_seconds": 0.1}]})


def _trial(http: httpx.Client, study_id: int, trial_id: int) -> dict[str, Any]:
    items = http.get(f"/v1/studies/{study_id}/trials", params={"limit": 500},
                     headers=CLIENT).json()["items"]
    return next(t for t in items if t["id"] == trial_id)


def test_a_dominated_rung_score_prunes_the_trial_in_the_heartbeat_answer(
        http: httpx.Client) -> None:
    study = create_study(http, early_stopping=MOASHA,
                         budget={"total_trials": 4, "initial_trials": 4, "max_parallel": 4})
    cheap, dear = _lease_all(http, study["id"], 2)[:2]
    first = _rung(http, cheap, 0.9)
    assert first.status_code == 200 and first.json()["stop"] is False  # alone at the rung
    second = _rung(http, dear, 0.6)  # lower score at a share at least as high: dominated
    assert second.status_code == 200, second.text
    answer = second.json()
    assert answer["stop"] is True and answer["deadline"] is None
    assert answer["reason"].startswith("pruned at rung 0 (50% of training)")
    trial = _trial(http, study["id"], dear["trial_id"])
    assert trial["state"] == "pruned" and trial["result"] is None
    assert trial["rungs"] == [{"rung": 0, "step": 5, "score": 0.6, "examples": 50,
                               "eval_seconds": 0.1, "proceed": False,
                               "decision": answer["reason"]}]
    assert _trial(http, study["id"], cheap["trial_id"])["rungs"][0]["proceed"] is True
    # Told again at every heartbeat; its result is refused; its rung scores stay.
    again = http.post(f"/v1/trials/{dear['trial_id']}/heartbeat", headers=WORKER,
                      json={"token": dear["token"]})
    assert again.json()["stop"] is True
    late = http.post(f"/v1/trials/{dear['trial_id']}/result", headers=WORKER,
                     json={"token": dear["token"], "result": lease_result(dear)})
    assert late.status_code == 409
    assert http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["counts"]["pruned"] == 1


def test_rung_reports_are_idempotent_by_lease_and_rung(http: httpx.Client) -> None:
    study = create_study(http, early_stopping=MOASHA,
                         budget={"total_trials": 4, "initial_trials": 4, "max_parallel": 4})
    cheap, dear = _lease_all(http, study["id"], 2)[:2]
    assert _rung(http, dear, 0.9).json()["stop"] is False
    # The same lease and rung again (an unacknowledged report resent): kept as first taken.
    assert _rung(http, dear, 0.1).json()["stop"] is False
    assert _trial(http, study["id"], dear["trial_id"])["rungs"][0]["score"] == 0.9
    # A cheaper trial scoring higher dominates it, but a repeat never re-decides.
    assert _rung(http, cheap, 0.95).json()["stop"] is False
    assert _rung(http, dear, 0.9).json()["stop"] is False
    assert _trial(http, study["id"], dear["trial_id"])["state"] == "leased"


def test_a_rung_the_study_lacks_gets_422_naming_it(http: httpx.Client) -> None:
    study = create_study(http, early_stopping=MOASHA,
                         budget={"total_trials": 4, "initial_trials": 4, "max_parallel": 4})
    lease = _lease_all(http, study["id"], 1)[0]
    response = _rung(http, lease, 0.5, rung=1)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "rungs", "0", "rung"]
    assert "the study has 1 rung" in response.json()["detail"][0]["msg"]
    no_rungs = create_study(http, budget={"total_trials": 4, "initial_trials": 4,
                                          "max_parallel": 4})
    wait_for_ready(http, no_rungs["id"], 4)
    leases = [http.post("/v1/leases", json={"worker": "w"}, headers=WORKER).json()
              for _ in range(7)]  # the first study's three others come first
    lease = next(lease for lease in leases if lease["study_id"] == no_rungs["id"])
    assert _rung(http, lease, 0.5).status_code == 422


def test_rule_none_records_the_curve_and_stops_nothing(http: httpx.Client) -> None:
    study = create_study(http, early_stopping={"rule": "none", "rungs": [0.5]},
                         budget={"total_trials": 4, "initial_trials": 4, "max_parallel": 4})
    cheap, dear = _lease_all(http, study["id"], 2)[:2]
    assert _rung(http, cheap, 0.9).json()["stop"] is False
    assert _rung(http, dear, 0.1).json()["stop"] is False
    rung = _trial(http, study["id"], dear["trial_id"])["rungs"][0]
    assert rung["score"] == 0.1 and rung["proceed"] is None and rung["decision"] is None
    # The lease carries the rungs to the worker.
    assert cheap["early_stopping"]["rungs"] == [0.5]


def test_a_pruned_trial_uses_its_budget_slot(http: httpx.Client) -> None:
    study = create_study(http, early_stopping=MOASHA,
                         budget={"total_trials": 3, "initial_trials": 3, "max_parallel": 3})
    leases = _lease_all(http, study["id"], 3)
    assert _rung(http, leases[0], 0.9).json()["stop"] is False
    assert _rung(http, leases[2], 0.5).json()["stop"] is True
    for lease in leases[:2]:
        response = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                             json={"token": lease["token"], "result": lease_result(lease)})
        assert response.status_code == 200, response.text
    end = time.monotonic() + 10
    while (got := http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json())["state"] \
            != "completed":
        assert time.monotonic() < end, got
        time.sleep(0.05)
    assert got["counts"] == {"ready": 0, "leased": 0, "completed": 2, "failed": 0,
                             "cancelled": 0, "pruned": 1, "paused": 0}
    assert http.get(f"/v1/studies/{study['id']}/trials", headers=CLIENT).json()["total"] == 3


def test_rung_records_survive_a_server_restart(make_server: Callable[..., ServerThread]) -> None:
    first = make_server()
    with httpx.Client(base_url=first.base_url, timeout=30) as http:
        study = create_study(http, early_stopping=MOASHA,
                             budget={"total_trials": 4, "initial_trials": 4, "max_parallel": 4})
        cheap, dear = _lease_all(http, study["id"], 2)[:2]
        assert _rung(http, cheap, 0.9).json()["stop"] is False
    first.__exit__(None, None, None)
    second = make_server()
    with httpx.Client(base_url=second.base_url, timeout=30) as http:
        assert _trial(http, study["id"], cheap["trial_id"])["rungs"][0]["score"] == 0.9
        # The record from before the restart still decides: the dearer, worse trial stops.
        assert _rung(http, dear, 0.6).json()["stop"] is True
        assert _trial(http, study["id"], dear["trial_id"])["state"] == "pruned"

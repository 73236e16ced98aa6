"""The dashboard's JSON routes (hypervolume history, workers), ETags, and the /ui files,
on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread
from tests.api.conftest import CLIENT, WORKER, create_study, report_result, take_lease


def test_hypervolume_history_follows_completion_order(server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, budget={"total_trials": 5, "initial_trials": 5,
                                           "max_parallel": 5, "max_attempts": 2})
        leases = [take_lease(http, "w") for _ in range(5)]
        scores = [0.6, 0.9, 0.7, 0.95, 0.5]
        order = [3, 0, 4, 1, 2]  # reported out of trial order
        for index in order:
            report_result(http, leases[index], scores[index])
            time.sleep(0.01)  # distinct finishing times
        history = http.get(f"/v1/studies/{study['id']}/hypervolume", headers=CLIENT).json()
        final = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()
        trials = {t["number"]: t for t in http.get(
            f"/v1/studies/{study['id']}/trials", headers=CLIENT).json()["items"]}
    points = history["points"]
    assert [p["completed"] for p in points] == [1, 2, 3, 4, 5]
    assert [p["trial_number"] for p in points] == [leases[i]["number"] for i in order]
    reference = ObjectivePoint(score=history["reference_point"]["score"],
                               share=history["reference_point"]["param_share"])
    seen: list[ObjectivePoint] = []
    for point in points:
        trial = trials[point["trial_number"]]
        seen.append(ObjectivePoint(score=trial["objective"], share=trial["param_share"]))
        assert point["hypervolume"] == hypervolume(seen, reference)
    assert points[-1]["hypervolume"] == final["hypervolume"] > 0


def test_workers_show_their_current_trial_and_go_silent(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server(worker_alive_seconds=1.0)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http)
        other = create_study(http, name="another")
        running = take_lease(http, "gpu-0")
        listed = http.get("/v1/workers", headers=CLIENT).json()
        assert [w["name"] for w in listed["items"]] == ["gpu-0"]
        (worker,) = listed["items"]
        assert worker["alive"] and worker["leases"] == 1
        assert worker["trials"] == [{"study_id": running["study_id"],
                                     "trial_id": running["trial_id"],
                                     "number": running["number"],
                                     "leased_at": worker["trials"][0]["leased_at"],
                                     "lease_deadline": running["deadline"]}]
        assert 0 <= listed["now"] - worker["last_seen"] < 5
        ran = running["study_id"]
        idle = other["id"] if ran == study["id"] else study["id"]
        assert [w["name"] for w in http.get(f"/v1/workers?study_id={ran}",
                                            headers=CLIENT).json()["items"]] == ["gpu-0"]
        assert http.get(f"/v1/workers?study_id={idle}", headers=CLIENT).json()["items"] == []
        report_result(http, running, 0.8)
        time.sleep(1.3)
        (silent,) = http.get("/v1/workers", headers=CLIENT).json()["items"]
        assert not silent["alive"] and silent["trials"] == []


def test_dashboard_routes_need_a_client_token_and_valid_ids(server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert http.get("/v1/workers").status_code == 401
        assert http.get("/v1/workers", headers=WORKER).status_code == 403
        assert http.get("/v1/studies/99/hypervolume", headers=CLIENT).status_code == 404
        bad = http.get("/v1/workers?study_id=0", headers=CLIENT)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "study_id"


def test_an_unchanged_answer_is_304_and_a_new_report_changes_the_etag(
        server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, budget={"total_trials": 2, "initial_trials": 2,
                                           "max_parallel": 2, "max_attempts": 2})
        lease = take_lease(http, "w")
        url = f"/v1/studies/{study['id']}/trials"
        first = http.get(url, headers=CLIENT)
        etag = first.headers["etag"]
        assert etag.startswith('W/"') and first.headers["cache-control"] == "no-cache"
        again = http.get(url, headers={**CLIENT, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        other = http.get(url, headers={**CLIENT, "If-None-Match": 'W/"other", ' + etag})
        assert other.status_code == 304
        report_result(http, lease, 0.75)
        changed = http.get(url, headers={**CLIENT, "If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert any(t["state"] == "completed" for t in changed.json()["items"])
        # errors and the worker protocol are never buffered or tagged
        missing = http.get("/v1/studies/999", headers={**CLIENT, "If-None-Match": etag})
        assert missing.status_code == 404 and "etag" not in missing.headers


def test_the_pages_are_served_without_a_token_with_a_strict_policy(
        server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        redirect = http.get("/ui")
        assert redirect.status_code == 307 and redirect.headers["location"] == "ui/"
        page = http.get("/ui/")
        assert page.status_code == 200 and "<title>autopeft</title>" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert page.headers["referrer-policy"] == "no-referrer"
        for name in ("app.js", "style.css"):
            assert http.get(f"/ui/{name}").status_code == 200
        assert http.get("/ui/missing.js").status_code == 404
        for token in (CLIENT_TOKEN, WORKER_TOKEN):
            assert token not in page.text


def test_a_study_lists_its_workers_with_their_leases_elsewhere_and_its_own_count(
        server: ServerThread) -> None:
    """A worker that ran this study's trials and now holds another study's is listed
    with that lease (not idle), and with how many of *this* study's trials it leased."""
    budget = {"total_trials": 3, "initial_trials": 3, "max_parallel": 3, "max_attempts": 2}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        first = create_study(http, name="first", budget=budget)
        for worker in ("busy", "busy", "other"):
            report_result(http, take_lease(http, worker), 0.7)
        second = create_study(http, name="second", budget=budget)
        for worker in ("other", "other"):
            report_result(http, take_lease(http, worker), 0.6)
        elsewhere = take_lease(http, "busy")
        assert elsewhere["study_id"] == second["id"]
        listed = http.get(f"/v1/workers?study_id={first['id']}", headers=CLIENT).json()
        everyone = http.get("/v1/workers", headers=CLIENT).json()
    workers = {w["name"]: w for w in listed["items"]}
    assert {name: (w["study_trials"], w["leases"]) for name, w in workers.items()} \
        == {"busy": (2, 3), "other": (1, 3)}
    assert [(t["study_id"], t["number"]) for t in workers["busy"]["trials"]] \
        == [(second["id"], elsewhere["number"])]
    assert workers["other"]["trials"] == []
    assert [w["study_trials"] for w in everyone["items"]] == [None, None]

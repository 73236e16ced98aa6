"""The fidelity protocol over HTTP (``domain.fidelity``), SQLite and PostgreSQL: leases at
a level, the checkpoint before the result, the pause, the rule's continuation with the
checkpoint to resume from, the compute budget and the end of the study."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from typing import Any

import httpx

from tests.api.conftest import CLIENT, WORKER, create_study, lease_result, take_lease

LEVELS = [1 / 3, 1.0]


def _tar(text: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = text.encode()
        info = tarfile.TarInfo("checkpoint.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _put_checkpoint(http: httpx.Client, lease: dict[str, Any], body: bytes, step: int,
                    sha256: str | None = None, token: str | None = None) -> httpx.Response:
    return http.put(f"/v1/trials/{lease['trial_id']}/checkpoint", content=body, headers={
        **WORKER, "X-Lease-Token": token or lease["token"], "X-Checkpoint-Step": str(step),
        "X-Artifact-SHA256": sha256 or hashlib.sha256(body).hexdigest()})


def _result(http: httpx.Client, lease: dict[str, Any], score: float, steps: int) -> httpx.Response:
    return http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER, json={
        "token": lease["token"], "result": lease_result(lease, score, steps=steps)})


def _pause(http: httpx.Client, lease: dict[str, Any], score: float, step: int = 3) -> bytes:
    body = _tar(f"trial {lease['trial_id']} step {step}")
    assert _put_checkpoint(http, lease, body, step).status_code == 200
    answer = _result(http, lease, score, step)
    assert answer.status_code == 200 and answer.json()["state"] == "paused", answer.text
    return body


def _trial(http: httpx.Client, study: int, trial_id: int) -> dict[str, Any]:
    items = http.get(f"/v1/studies/{study}/trials", headers=CLIENT, params={"limit": 500}).json()
    return next(t for t in items["items"] if t["id"] == trial_id)


def test_pause_checkpoint_continue_and_budget(http: httpx.Client) -> None:
    study = create_study(http, fidelity={"levels": LEVELS, "eta": 2.0},
                         budget={"total_trials": 2, "initial_trials": 2, "max_parallel": 1})
    first = take_lease(http)
    assert first["fidelity"] == LEVELS[0] and first["resume_sha256"] is None
    # the result of a level below 1 needs the checkpoint of its step first
    early = _result(http, first, 0.7, 3)
    assert early.status_code == 409 and "checkpoint" in early.text
    body = _tar("state")
    bad_hash = _put_checkpoint(http, first, body, 3, sha256="0" * 64)
    assert bad_hash.status_code == 422 and "SHA-256" in bad_hash.text
    not_tar = _put_checkpoint(http, first, b"not a tar archive at all" * 40, 3)
    assert not_tar.status_code == 422 and "tar" in not_tar.text
    assert _put_checkpoint(http, first, body, 3, token="someone-else").status_code == 409
    body = _pause(http, first, 0.7)
    paused = _trial(http, study["id"], first["trial_id"])
    assert paused["state"] == "paused" and paused["objective"] is None
    assert [(o["fidelity"], o["score"], o["step"]) for o in paused["observations"]] == [
        (LEVELS[0], 0.7, 3)]
    # the first trial at a level always continues: its continuation resumes the checkpoint
    # (a new trial queued before the rule's pass may come first: it is paused low)
    resumed = take_lease(http, worker="other")
    while resumed["trial_id"] != first["trial_id"]:
        _pause(http, resumed, 0.1)
        resumed = take_lease(http, worker="other")
    assert resumed["fidelity"] == 1.0
    assert resumed["resume_sha256"] == hashlib.sha256(body).hexdigest()
    got = http.get(f"/v1/trials/{first['trial_id']}/checkpoint", headers=WORKER)
    assert got.status_code == 200 and got.content == body
    assert got.headers["X-Artifact-SHA256"] == resumed["resume_sha256"]
    assert http.get(f"/v1/trials/{first['trial_id']}/checkpoint",
                    headers=CLIENT).status_code == 403
    # full training keeps no checkpoint
    assert _put_checkpoint(http, resumed, body, 10).status_code == 409
    done = _result(http, resumed, 0.8, 10)
    assert done.status_code == 200 and done.json()["state"] == "completed", done.text
    again = _result(http, resumed, 0.8, 10)
    assert again.json()["duplicate"] is True
    trial = _trial(http, study["id"], first["trial_id"])
    assert trial["objective"] == 0.8 and [o["fidelity"] for o in trial["observations"]] == LEVELS
    assert [o["worker"] for o in trial["observations"]] == ["w", "other"]
    # what is left of the budget of 2 full-training equivalents is spent, then it ends
    end = time.monotonic() + 30
    while http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["state"] != "completed":
        assert time.monotonic() < end, "the spent fidelity study did not end"
        response = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 0.2},
                             headers=WORKER)
        if response.status_code == 200:
            lease = response.json()
            if lease["fidelity"] < 1:
                _pause(http, lease, 0.1)
            else:
                assert _result(http, lease, 0.5, 10).status_code == 200
    assert http.post("/v1/leases", json={"worker": "w", "wait_seconds": 0},
                     headers=WORKER).status_code == 204
    items = http.get(f"/v1/studies/{study['id']}/trials", headers=CLIENT,
                     params={"limit": 500}).json()["items"]
    spent = sum(1.0 if t["state"] == "completed" else t["fidelity"] for t in items
                if t["state"] != "cancelled")
    assert 2 - LEVELS[0] < spent <= 2 + 1e-9


def test_the_rule_keeps_a_dominated_trial_paused(http: httpx.Client) -> None:
    """eta 2: of two trials at a level, keep = floor(2 / 2) = 1: the one that dominates
    (higher score at no larger share) continues, the dominated one stays paused."""
    study = create_study(http, fidelity={"levels": LEVELS, "eta": 2.0},
                         budget={"total_trials": 3, "initial_trials": 3, "max_parallel": 2})
    leases = [take_lease(http), take_lease(http)]
    assert all(lease["fidelity"] == LEVELS[0] for lease in leases)
    shares = {lease["trial_id"]: _trial(http, study["id"], lease["trial_id"])["param_share"]
              for lease in leases}
    better, worse = sorted(leases, key=lambda lease: shares[lease["trial_id"]])
    _pause(http, better, 0.9)
    # the first at its level always continues, on the proposer's next pass: until then the
    # study's third trial is the ready one (a lease taken first under load got it)
    end = time.monotonic() + 30
    while _trial(http, study["id"], better["trial_id"])["state"] != "ready":
        assert time.monotonic() < end, "the better trial was not continued"
        time.sleep(0.05)
    continued = take_lease(http)
    assert continued["trial_id"] == better["trial_id"] and continued["resume_sha256"]
    _pause(http, worse, 0.1)
    time.sleep(1.0)  # proposer passes
    trial = _trial(http, study["id"], worse["trial_id"])
    assert trial["state"] == "paused" and trial["fidelity"] == LEVELS[0]
    items = http.get(f"/v1/studies/{study['id']}/trials", headers=CLIENT,
                     params={"limit": 500}).json()["items"]
    spent = sum(1.0 if t["state"] == "completed" else t["fidelity"] for t in items
                if t["state"] != "cancelled")
    assert spent <= 3 + 1e-9


def test_the_model_rule_runs_a_study_to_its_budget(http: httpx.Client) -> None:
    """rule model: new trials start at 1/3; once the model has observations it continues
    paused trials or starts new ones by expected improvement per compute; the study ends
    with its budget of 2 full-training equivalents spent, never more."""
    study = create_study(http, fidelity={"levels": LEVELS, "rule": "model"},
                         budget={"total_trials": 2, "initial_trials": 2, "max_parallel": 2})
    seen_levels: set[float] = set()
    end = time.monotonic() + 60
    while http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["state"] == "running":
        assert time.monotonic() < end, "the model-rule study did not end"
        response = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 1},
                             headers=WORKER)
        if response.status_code == 204:
            continue
        lease = response.json()
        seen_levels.add(lease["fidelity"])
        score = 0.5 + 0.05 * (lease["number"] % 7) + (0.1 if lease["fidelity"] == 1.0 else 0)
        if lease["fidelity"] < 1:
            _pause(http, lease, score)
        else:
            assert lease["resume_sha256"], "a level-1 lease here is always a continuation"
            assert _result(http, lease, score, 10).status_code == 200
    items = http.get(f"/v1/studies/{study['id']}/trials", headers=CLIENT,
                     params={"limit": 500}).json()["items"]
    assert {t["generator"] for t in items} >= {"mfbo"}
    assert seen_levels == {LEVELS[0], 1.0}
    spent = sum(1.0 if t["state"] == "completed" else t["fidelity"] for t in items
                if t["state"] != "cancelled")
    assert 2 - LEVELS[0] < spent <= 2 + 1e-9

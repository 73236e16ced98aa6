"""Artefact upload and download (routes/artifacts.py) on a real server: round trip with the
SHA-256 checked, idempotent per lease, stale 409, oversize 413, missing 404, roles 403."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

import httpx

from tests.api.conftest import CLIENT, WORKER, create_study, lease_result
from tests.api.test_worker_protocol import _lease


def _archive(payload: bytes = b"weights") -> bytes:
    """A zip with the format's members (the server checks members and hash, not tensors)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", b"{}")
        archive.writestr("weights.safetensors", payload)
    return buffer.getvalue()


def _put(http: httpx.Client, trial_id: int, token: str, body: bytes,
         sha: str | None = None, headers: dict | None = None) -> httpx.Response:
    return http.put(f"/v1/trials/{trial_id}/artifact", content=body, headers={
        **(WORKER if headers is None else headers), "X-Lease-Token": token,
        "X-Artifact-SHA256": sha or hashlib.sha256(body).hexdigest()})


def _completed(http: httpx.Client) -> dict:
    """A lease whose trial has completed (its result reported)."""
    create_study(http)
    lease = _lease(http)
    response = http.post(f"/v1/trials/{lease['trial_id']}/result",
                         json={"token": lease["token"], "result": lease_result(lease)},
                         headers=WORKER)
    assert response.json()["state"] == "completed", response.text
    return lease


def test_upload_download_round_trip_with_sha256(http: httpx.Client) -> None:
    lease = _completed(http)
    trial_id, body = lease["trial_id"], _archive(b"x" * 100_000)
    response = _put(http, trial_id, lease["token"], body)
    assert response.status_code == 200, response.text
    sha = hashlib.sha256(body).hexdigest()
    assert response.json() == {"trial_id": trial_id, "sha256": sha, "bytes": len(body),
                               "duplicate": False}
    got = http.get(f"/v1/trials/{trial_id}/artifact", headers=CLIENT)
    assert got.status_code == 200 and got.content == body
    assert got.headers["x-artifact-sha256"] == sha
    assert got.headers["content-type"] == "application/zip"
    trials = http.get(f"/v1/studies/{lease['study_id']}/trials", headers=CLIENT).json()["items"]
    info = next(t for t in trials if t["id"] == trial_id)["artifact"]
    assert info["sha256"] == sha and info["bytes"] == len(body) and info["uploaded_at"] > 0


def test_the_same_lease_uploading_twice_changes_nothing(http: httpx.Client) -> None:
    lease = _completed(http)
    first = _archive(b"first")
    assert _put(http, lease["trial_id"], lease["token"], first).status_code == 200
    again = _put(http, lease["trial_id"], lease["token"], _archive(b"second"))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["sha256"] == hashlib.sha256(first).hexdigest()
    assert http.get(f"/v1/trials/{lease['trial_id']}/artifact",
                    headers=CLIENT).content == first


def test_a_stale_lease_gets_409_and_a_trial_not_completed_gets_409(http: httpx.Client) -> None:
    lease = _completed(http)
    stale = _put(http, lease["trial_id"], "not-the-lease", _archive())
    assert stale.status_code == 409 and "lease" in stale.json()["detail"]
    running = _lease(http)  # leased, no result yet
    early = _put(http, running["trial_id"], running["token"], _archive())
    assert early.status_code == 409 and "report its result" in early.json()["detail"]
    assert http.get(f"/v1/trials/{running['trial_id']}/artifact",
                    headers=CLIENT).status_code == 404


def test_an_artifact_above_the_cap_gets_413_declared_or_streamed(make_server, tmp_path) -> None:
    server = make_server(max_artifact_bytes=4096)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        lease = _completed(http)
        big = _archive(b"y" * 10_000)
        declared = _put(http, lease["trial_id"], lease["token"], big)
        assert declared.status_code == 413 and "max_artifact_bytes" in declared.json()["detail"]

        def chunks():  # no Content-Length: chunked transfer, counted as it streams
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]

        streamed = http.put(f"/v1/trials/{lease['trial_id']}/artifact", content=chunks(),
                            headers={**WORKER, "X-Lease-Token": lease["token"],
                                     "X-Artifact-SHA256": hashlib.sha256(big).hexdigest()})
        assert streamed.status_code == 413
        assert http.get(f"/v1/trials/{lease['trial_id']}/artifact",
                        headers=CLIENT).status_code == 404
        small = _archive(b"z")
        assert _put(http, lease["trial_id"], lease["token"], small).status_code == 200
    # refused uploads leave no staging file behind (make_server's artifact_dir)
    assert list((tmp_path / "artifacts" / "staging").iterdir()) == []


def test_a_wrong_sha256_or_a_foreign_body_gets_422_naming_the_reason(http: httpx.Client) -> None:
    lease = _completed(http)
    body = _archive()
    wrong = _put(http, lease["trial_id"], lease["token"], body, sha="0" * 64)
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["header", "X-Artifact-SHA256"]
    assert "damaged in transit" in wrong.json()["detail"][0]["msg"]
    foreign = _put(http, lease["trial_id"], lease["token"], b"not a zip")
    assert foreign.status_code == 422 and "not a zip" in foreign.json()["detail"][0]["msg"]
    missing = http.put(f"/v1/trials/{lease['trial_id']}/artifact", content=body,
                       headers={**WORKER, "X-Lease-Token": lease["token"]})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["header", "x-artifact-sha256"]
    # none of these stored anything: the right upload still goes through
    assert _put(http, lease["trial_id"], lease["token"], body).json()["duplicate"] is False


def test_missing_trials_and_artifacts_get_404_and_roles_are_enforced(http: httpx.Client) -> None:
    lease = _completed(http)
    assert http.get("/v1/trials/999999/artifact", headers=CLIENT).status_code == 404
    none_yet = http.get(f"/v1/trials/{lease['trial_id']}/artifact", headers=CLIENT)
    assert none_yet.status_code == 404 and "no artefact" in none_yet.json()["detail"]
    assert _put(http, 999999, "t", _archive()).status_code == 404
    # a client cannot upload, a worker cannot download, nobody without a token
    assert _put(http, lease["trial_id"], lease["token"], _archive(),
                headers=CLIENT).status_code == 403
    assert http.get(f"/v1/trials/{lease['trial_id']}/artifact",
                    headers=WORKER).status_code == 403
    assert http.get(f"/v1/trials/{lease['trial_id']}/artifact").status_code == 401
    assert _put(http, lease["trial_id"], lease["token"], _archive(), headers={}).status_code \
        == 401


def test_an_upload_is_fast_over_loopback(http: httpx.Client) -> None:
    """Sanity of the streaming path: 20 MB in and out well under the request timeout."""
    lease = _completed(http)
    body = _archive(bytes(20_000_000))
    start = time.perf_counter()
    assert _put(http, lease["trial_id"], lease["token"], body).status_code == 200
    assert http.get(f"/v1/trials/{lease['trial_id']}/artifact",
                    headers=CLIENT).content == body
    assert time.perf_counter() - start < 20

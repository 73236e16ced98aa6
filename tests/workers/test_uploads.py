"""A worker's artefact uploads (workers/uploads.py) against a real server in this process:
a worker that dies between its result and its upload loses no result, the study ends with
exactly its trials, and the artefact is uploaded by the next worker started on the folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from autopeft_service.client import backbone_dims_of
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread, fast_settings
from workers.client import Interrupted, ServerClient
from workers.data import TokenizedCache
from workers.trial import TrialRunner
from workers.uploads import LEASE_FILE, PendingUploads
from workers.worker import Worker

CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


class WorkerDied(BaseException):
    """Stands for the process being killed: nothing in the worker catches it."""


@pytest.fixture
def server(tmp_path: Path):
    settings = fast_settings(f"sqlite:///{tmp_path / 'autopeft.db'}",
                             tmp_path / "server-artifacts", long_poll_seconds=0.3)
    with ServerThread(settings) as running:
        yield running


def _study(server: ServerThread, model: Path, trials: int) -> int:
    dims = backbone_dims_of(model)
    assert dims is not None
    response = httpx.post(f"{server.base_url}/v1/studies", headers=CLIENT, timeout=30, json={
        "name": "uploads", "backbone": str(model), "task": "synthetic",
        "backbone_dims": dims.model_dump(), "search_space": {"kind": "autopeft"},
        "budget": {"total_trials": trials, "initial_trials": trials, "max_parallel": 1,
                   "max_attempts": 2},
        "training": {"epochs": 0.5, "max_train_examples": 64, "max_length": 16,
                     "max_held_out_examples": 32, "max_dev_examples": 32},
        "optimizer": {"name": "sobol"}})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _trials(server: ServerThread, study: int) -> list[dict]:
    return httpx.get(f"{server.base_url}/v1/studies/{study}/trials", headers=CLIENT,
                     params={"limit": 100}).json()["items"]


def _worker(server: ServerThread, folder: Path, cache: Path, name: str) -> Worker:
    client = ServerClient(server.base_url, WORKER_TOKEN, name, max_backoff=0.5)
    return Worker(client, TrialRunner(cache=TokenizedCache(cache)), wait_seconds=0.3,
                  uploads=PendingUploads(folder, client))


def test_a_worker_killed_before_its_upload_loses_nothing(server, tiny_bert_path, tmp_path,
                                                         monkeypatch) -> None:
    study = _study(server, tiny_bert_path, trials=3)
    folder = tmp_path / "worker-artifacts"
    first = _worker(server, folder, tmp_path / "cache", "first")

    def die(self, trial_id: int) -> bool:  # killed right after the result was accepted
        raise WorkerDied(trial_id)

    monkeypatch.setattr(PendingUploads, "upload", die)
    with pytest.raises(WorkerDied):
        first.run(max_trials=1)
    monkeypatch.undo()
    killed = [t for t in _trials(server, study) if t["state"] == "completed"]
    assert len(killed) == 1 and killed[0]["artifact"] is None  # the result stands
    pending = folder / str(killed[0]["id"])
    assert (pending / LEASE_FILE).is_file() and (pending / "artifact").is_dir()

    # another worker (its own folder) runs the rest: exactly the study's trials, all done
    other = _worker(server, tmp_path / "other-artifacts", tmp_path / "cache", "other")
    other.run(idle_exit=2.0)
    done = _trials(server, study)
    assert len(done) == 3 and all(t["state"] == "completed" for t in done)
    status = httpx.get(f"{server.base_url}/v1/studies/{study}", headers=CLIENT).json()
    end = time.monotonic() + 10
    while status["state"] != "completed" and time.monotonic() < end:
        time.sleep(0.1)
        status = httpx.get(f"{server.base_url}/v1/studies/{study}", headers=CLIENT).json()
    assert status["state"] == "completed" and status["counts"]["completed"] == 3
    assert [t["artifact"] is not None for t in done].count(True) == 2

    # the killed worker's folder, started again: its artefact goes up before any lease
    restarted = _worker(server, folder, tmp_path / "cache", "first")
    restarted.run(idle_exit=0.5)
    assert all(t["artifact"] is not None for t in _trials(server, study))
    assert not pending.exists() and restarted.uploads.uploaded == 1


def test_uploads_wait_out_a_server_that_refuses_for_now(server, tiny_bert_path, tmp_path,
                                                        monkeypatch) -> None:
    """A 503 (database down) is retried with backoff until it passes; a stop request
    leaves the artefact on disk."""
    study = _study(server, tiny_bert_path, trials=1)
    folder = tmp_path / "wa"
    worker = _worker(server, folder, tmp_path / "cache", "w")
    calls = {"n": 0}
    original = httpx.Client.request

    def flaky(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        if method != "PUT":
            return original(self, method, url, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503, json={"detail": "database unavailable"})
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "request", flaky)
    worker.run(max_trials=1)
    assert calls["n"] == 3
    (trial,) = _trials(server, study)
    assert trial["artifact"] is not None and not any(folder.iterdir())

    # stopping while the server keeps failing: the artefact stays for the next start
    study2 = _study(server, tiny_bert_path, trials=1)
    monkeypatch.setattr(
        httpx.Client, "request",
        lambda self, method, url, *a, **k: httpx.Response(503, json={"detail": "x"})
        if method == "PUT" else original(self, method, url, *a, **k))
    stopper = threading.Timer(3.0, worker.stopping.set)
    stopper.start()
    worker.run(max_trials=1)
    stopper.cancel()
    (trial2,) = _trials(server, study2)
    assert trial2["state"] == "completed" and trial2["artifact"] is None
    assert (folder / str(trial2["id"]) / LEASE_FILE).is_file()
    with pytest.raises(Interrupted):
        worker.uploads.upload(trial2["id"])

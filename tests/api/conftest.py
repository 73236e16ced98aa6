"""A real server (uvicorn in a thread) on a fresh SQLite or PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread, fast_settings

CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
WORKER = {"Authorization": f"Bearer {WORKER_TOKEN}"}


def study_spec(**overrides: Any) -> dict[str, Any]:
    """A valid study spec on MiniLM-sized dimensions (6 layers, hidden 384)."""
    spec: dict[str, Any] = {
        "name": "test study", "backbone": "minilm", "task": "synthetic",
        "backbone_dims": MINILM_DIMS.model_dump(),
        "search_space": {"num_layers": 6, "hidden_size": 384},
        "budget": {"total_trials": 12, "initial_trials": 4, "max_parallel": 4,
                   "max_attempts": 2},
        # The protocol is under test here, not the model: Sobol keeps proposals instant.
        "optimizer": {"name": "sobol"},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def make_server(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Start servers with settings overrides on this test's database; stops them after."""
    started: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        server = ServerThread(fast_settings(database_url, tmp_path / "artifacts",
                                            **overrides)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server()


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def create_study(http: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = http.post("/v1/studies", json=study_spec(**overrides), headers=CLIENT)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_ready(http: httpx.Client, study_id: int, count: int, timeout: float = 20) -> None:
    """Until the proposer has queued ``count`` ready trials."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        counts = http.get(f"/v1/studies/{study_id}", headers=CLIENT).json()["counts"]
        if counts["ready"] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"study {study_id}: {count} ready trials never appeared")


def lease_result(lease: dict[str, Any], score: float = 0.8, **overrides: Any) -> dict[str, Any]:
    """A valid result for a lease: its counts are the configuration's on the lease's
    backbone_dims, as a real worker would report them."""
    from autopeft_service.domain.backbone import BackboneDims
    from autopeft_service.domain.param_count import count_parameters
    from autopeft_service.domain.peft_config import PeftConfig

    dims = BackboneDims.model_validate(lease["backbone_dims"])
    counts = count_parameters(PeftConfig.model_validate(lease["config"]), dims)
    result = {"metric": "accuracy", "objective": score, "held_out": {"accuracy": score},
              "dev": {"accuracy": score}, "dev_score": score,
              "trainable_parameters": counts.trainable,
              "trainable_percent": counts.trainable_percent,
              "deployed_parameters": counts.deployed, "head_parameters": 2,
              "train_seconds": 1.0, "eval_seconds": 1.0, "load_seconds": 0.0, "steps": 1,
              "train_examples": 1, "examples_per_second": 1.0, "final_loss": 0.1,
              "peak_memory_mb": 1.0, "device": "cpu", "seed": 0, "config_description": "x"}
    result.update(overrides)
    return result


def take_lease(http: httpx.Client, worker: str = "w", timeout: float = 20) -> dict[str, Any]:
    """A lease for ``worker``, asking again on 204 as a worker does (the proposer may not
    have queued the study's trials yet)."""
    import time

    end = time.monotonic() + timeout
    while True:
        response = http.post("/v1/leases", json={"worker": worker, "wait_seconds": 1},
                             headers=WORKER)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 204 and time.monotonic() < end, response.text


def report_result(http: httpx.Client, lease: dict[str, Any], score: float = 0.8) -> None:
    """Report a valid result with ``score`` for a lease (``lease_result``); asserts 200."""
    response = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER,
                         json={"token": lease["token"], "result": lease_result(lease, score)})
    assert response.status_code == 200, response.text

"""Every command answers a bad token, an unreachable server or a bad spec with one line and
a non-zero exit; ``autopeft serve`` shuts down promptly with long-polls open."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autopeft_service.local import free_port
from autopeft_service.testing.server import ServerProcess, ServerThread
from tests.cli.test_studies import at, autopeft
from tests.test_client import start_server

COMMANDS = (["studies"], ["status", "1"], ["pareto", "1"], ["cancel", "1"],
            ["watch", "1", "--interval", "0.2"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(tmp_path_factory.mktemp("cli-errors"))
    yield running
    running.__exit__(None, None, None)


def _one_line_error(result, code: int) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_bad_token_is_one_line(server: ServerThread, command: list[str]) -> None:
    line = _one_line_error(autopeft(*command, *at(server, "wrong-token")), 1)
    assert "401" in line and "--token" in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_unreachable_server_is_one_line(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(autopeft(*command, "--server", url, "--token", "t"), 1)
    assert "cannot reach" in line


def test_submit_a_spec_with_nan_is_one_line(server: ServerThread, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"name": "n", "backbone": "b", "task": "synthetic", '
                    '"search_space": {"num_layers": 2, "hidden_size": 32}, '
                    '"reference_point": {"score": NaN}}')
    line = _one_line_error(autopeft("submit", str(spec), *at(server)), 2)
    assert "reference_point.score" in line and "finite" in line


def test_submit_an_oversized_spec_is_one_line(server: ServerThread, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "n", "backbone": "b", "task": "synthetic",
                                "search_space": {"num_layers": 100_000, "hidden_size": 32}}))
    line = _one_line_error(autopeft("submit", str(spec), *at(server)), 2)
    assert "search_space.num_layers" in line


def test_worker_with_a_bad_token_is_one_line(server: ServerThread) -> None:
    result = autopeft("worker", "--server", server.base_url, "--token", "wrong",
                      "--max-trials", "1")
    line = _one_line_error(result, 1)
    assert "401" in line and "worker token" in line


def test_worker_with_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = autopeft("worker", "--server", url, "--token", "t", "--connect-timeout", "1")
    line = _one_line_error(result, 1)
    assert "cannot reach" in line and time.monotonic() - started < 20


def test_serve_stops_promptly_with_open_long_polls(tmp_path: Path) -> None:
    """SIGTERM while workers long-poll (10 s): the polls answer 204 at once and the server
    exits without logging an error (it used to wait out the graceful-shutdown timeout)."""
    log = tmp_path / "server.log"
    server = ServerProcess(f"sqlite:///{tmp_path / 'a.db'}", log=log, long_poll_seconds="10").start()
    answers: list[int] = []

    def poll() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            answers.append(http.post("/v1/leases", json={"worker": "w", "wait_seconds": 10},
                                     headers={"Authorization": f"Bearer {server.worker_token}"}
                                     ).status_code)

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    elapsed = time.monotonic() - started
    for thread in threads:
        thread.join(15)
    assert elapsed < 2.5, elapsed
    assert answers == [204, 204, 204]
    text = log.read_text()
    assert "ERROR" not in text, text


def test_status_shows_why_a_study_failed(server: ServerThread) -> None:
    from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN

    client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    worker = {"Authorization": f"Bearer {WORKER_TOKEN}"}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = http.post("/v1/studies", headers=client, json={
            "name": "doomed", "backbone": "/nowhere", "task": "synthetic",
            "backbone_dims": {"num_layers": 2, "hidden_size": 32, "num_heads": 2,
                              "ffn_size": 64, "total_parameters": 100_000},
            "search_space": {"kind": "autopeft"},
            "budget": {"total_trials": 6, "initial_trials": 2, "max_parallel": 2,
                       "max_attempts": 1, "stop_after_failures": 2},
            "optimizer": {"name": "sobol"}}).json()
        failed = 0
        end = time.monotonic() + 30
        while failed < 2 and time.monotonic() < end:
            lease = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 1},
                              headers=worker)
            if lease.status_code == 200 and lease.json()["study_id"] == study["id"]:
                http.post(f"/v1/trials/{lease.json()['trial_id']}/failure", headers=worker,
                          json={"token": lease.json()["token"], "reason": "no backbone"})
                failed += 1
        while http.get(f"/v1/studies/{study['id']}", headers=client).json()["state"] != "failed":
            assert time.monotonic() < end
            time.sleep(0.1)
    result = autopeft("status", str(study["id"]), *at(server))
    assert result.returncode == 0, result.stderr
    assert f"study {study['id']}: doomed [failed]" in result.stdout
    assert "reason: 2 trials failed for the same reason and none completed: no backbone" \
        in result.stdout

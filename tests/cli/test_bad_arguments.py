"""Every command, given bad arguments, answers one line on stderr naming what is wrong, no
traceback, and a non-zero exit (2 for a usage error) - before it starts any work.

The table holds the findings of the second hardening pass (a bad --device, --port,
--database-url or --server, a configuration for another depth) beside one or more bad
values of each command's other flags. Where a server is needed, the address is a closed
port: each of these must be refused before any connection is tried.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autopeft_service.local import free_port
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread
from tests.api.conftest import study_spec
from tests.cli.test_studies import autopeft
from tests.test_client import start_server

EXAMPLE_CONFIG = str(Path(__file__).parents[2] / "examples" / "lora_config.json")
TRIAL = ["trial", "--model", "minilm", "--config", EXAMPLE_CONFIG]


def _closed() -> list[str]:
    return ["--server", f"http://127.0.0.1:{free_port()}", "--token", "t"]


#: (command line, a fragment the one line must hold). ``{closed}`` is a server address
#: nobody listens on, ``{dir}`` a scratch folder (``full/`` in it holds a file).
CASES: list[tuple[list[str], str]] = [
    # trial
    (["trial"], "required: --model, --config"),
    ([*TRIAL, "--epochs", "many"], "--epochs"),
    (["trial", "--model", "smollm2", "--config", EXAMPLE_CONFIG],
     "config is for 6 layers, backbone has 30"),
    ([*TRIAL, "--device", "tpu"], "--device: 'tpu' is not a device"),
    ([*TRIAL, "--device", "cuda:x"], "--device: 'cuda:x' is not a device"),
    ([*TRIAL, "--task", "glue:sst3"], "--task: unknown GLUE task 'sst3'"),
    ([*TRIAL, "--task", "synthetc"], "--task: unknown task 'synthetc'"),
    ([*TRIAL, "--max-length", "0"], "max_length"),
    ([*TRIAL, "--seed", "-1"], "--seed: must be from 0"),
    ([*TRIAL, "--data-dir", "/nonexistent/glue"], "--data-dir"),
    (["trial", "--model", "minilm", "--config", "/nonexistent.json"], "file not found"),
    # demo
    (["demo", "--trials", "0"], "--trials"),
    (["demo", "--space", "nope"], "invalid choice: 'nope'"),
    (["demo", "--model", "/nonexistent/model"], "not a model folder"),
    (["demo", "--task", "glue:sst3"], "unknown GLUE task 'sst3'"),
    (["demo", "--epochs", "-1"], "training.epochs"),
    (["demo", "--learning-rate", "5"], "training.learning_rate"),
    (["demo", "--seed", "-3"], "--seed: must be from 0"),
    # serve
    (["serve", "--port", "99999"], "--port"),
    (["serve", "--port", "abc"], "--port"),
    (["serve", "--database-url", "bogus://x"], "--database-url"),
    (["serve", "--processes", "0"], "--processes"),
    # the study commands
    (["submit", "/nonexistent.yaml", "{closed}"], "file not found"),
    (["status", "abc", "{closed}"], "invalid study id 'abc'"),
    (["status", "1", "--server", "http://[::1", "--token", "t"], "--server: 'http://[::1'"),
    (["pareto", "1", "--server", "http://127.0.0.1:18801:x", "--token", "t"],
     "--server: 'http://127.0.0.1:18801:x' is not a URL"),
    (["studies", "--server", "http://", "--token", "t"], "--server"),
    (["studies", "--timeout", "0", "{closed}"], "--timeout"),
    (["watch", "1", "--interval", "-1", "{closed}"], "--interval"),
    (["cancel", "-5", "{closed}"], "invalid study id '-5'"),
    (["download", "x", "2", "-o", "{dir}/d", "{closed}"], "invalid study id 'x'"),
    # retrain
    (["retrain", "--seeds", "0", "{closed}"], "--seeds"),
    (["retrain", "--baselines", "nope", "{closed}"], "unknown baseline 'nope'"),
    (["retrain", "--threads", "0", "{closed}"], "--threads"),
    # worker
    (["worker"], "--server and --token are required"),
    (["worker", "--server", "http://[::1", "--token", "t"], "--server: 'http://[::1'"),
    (["worker", "{closed}", "--device", "tpu"], "--device: 'tpu' is not a device"),
    (["worker", "{closed}", "--device", "cuda:x"], "--device: 'cuda:x' is not a device"),
    (["worker", "{closed}", "--threads", "0"], "--threads"),
    (["worker", "{closed}", "--max-trials", "-1"], "--max-trials"),
    (["worker", "{closed}", "--connect-timeout", "-1"], "--connect-timeout"),
    # launch, export
    (["launch", "slurm", "--workers", "0", "{closed}"], "--workers"),
    (["launch", "slurm", "--workers", "2", "--time", "bogus", "{closed}"], "--time"),
    (["export", "/nonexistent", "--format", "peft", "-o", "{dir}/x"], "no such artefact"),
    (["export", "x", "--format", "onnx", "-o", "{dir}/y"], "invalid choice: 'onnx'"),
]


def _expand(args: list[str], scratch: Path) -> list[str]:
    out: list[str] = []
    for arg in args:
        out.extend(_closed() if arg == "{closed}" else [arg.replace("{dir}", str(scratch))])
    return out


def one_line_error(result, code: int | None = None) -> str:  # type: ignore[no-untyped-def]
    """The single ``autopeft: error:`` line of a failed command (asserting the shape)."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_arguments_are_one_line_and_a_usage_error(args: list[str], fragment: str,
                                                      tmp_path: Path) -> None:
    started = time.monotonic()
    result = autopeft(*_expand(args, tmp_path), timeout=60)
    line = one_line_error(result, 2)
    assert fragment in line, line
    assert time.monotonic() - started < 30  # refused before any work, not after it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(tmp_path_factory.mktemp("bad-arguments"))
    yield running
    running.__exit__(None, None, None)


def test_a_worker_on_a_device_this_machine_lacks_refuses_before_its_first_lease(
        server: ServerThread) -> None:
    """cuda:0 without CUDA used to start, lease trials and fail each one three times."""
    import torch

    assert not torch.cuda.is_available(), "this test needs a machine without CUDA"
    client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        made = http.post("/v1/studies", headers=client, json=study_spec(name="no gpu here"))
        assert made.status_code == 201, made.text
        study = made.json()["id"]
        result = autopeft("worker", "--server", server.base_url, "--token", WORKER_TOKEN,
                          "--device", "cuda:0", "--max-trials", "1")
        line = one_line_error(result, 2)
        assert "--device cuda:0: this machine has no cuda device" in line
        counts = http.get(f"/v1/studies/{study}", headers=client).json()["counts"]
        assert counts["leased"] == 0 and counts["failed"] == 0, counts
        workers = http.get("/v1/workers", headers=client).json()["items"]
        assert workers == [], workers


def test_an_unexpected_error_is_one_line_without_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The last net in main(): a command that breaks in a way nobody foresaw says so in one
    line (exit 1); AUTOPEFT_DEBUG=1 lets the traceback through."""
    from autopeft_service.cli.main import main
    from workers.commands import export

    def broken(_args: object) -> int:
        raise KeyError("surprise")

    monkeypatch.setattr(export, "run", broken)
    monkeypatch.delenv("AUTOPEFT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["export", "a", "--format", "peft", "-o", "b"])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autopeft: error: export: unexpected KeyError: 'surprise' (this is a bug; "
                   "AUTOPEFT_DEBUG=1 shows the traceback)"]
    monkeypatch.setenv("AUTOPEFT_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["export", "a", "--format", "peft", "-o", "b"])

"""``autopeft submit | status | watch | pareto | cancel | studies`` as subprocesses against a
real server (uvicorn thread, SQLite file) with fake workers completing the study."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopeft_service.client import AutopeftClient
from autopeft_service.domain.views import ParetoOut, StudyOut, TrialSummary
from autopeft_service.local import free_port
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread
from tests.test_client import SYNTHETIC_EXAMPLE, Workers, small_spec, start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(tmp_path_factory.mktemp("cli-server"))
    yield running
    running.__exit__(None, None, None)


def autopeft(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m autopeft_service.cli ARGS`` with a clean AUTOPEFT_* environment."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("AUTOPEFT_SERVER", "AUTOPEFT_TOKEN", "TTY_INTERACTIVE",
                         "TTY_COMPATIBLE", "FORCE_COLOR")}
    base.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", "autopeft_service.cli", *args], cwd=ROOT,
                          env=base, capture_output=True, text=True, timeout=timeout,
                          check=False)


def at(server: ServerThread, token: str = CLIENT_TOKEN) -> list[str]:
    return ["--server", server.base_url, "--token", token]


def api(server: ServerThread, path: str) -> dict:
    with httpx.Client(base_url=server.base_url) as http:
        response = http.get(path, headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int,
                          *expected: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("autopeft: error: ") and "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def test_submit_status_studies_cancel(server: ServerThread) -> None:
    submitted = autopeft("submit", str(SYNTHETIC_EXAMPLE), *at(server))
    assert submitted.returncode == 0, submitted.stderr
    match = re.search(r"^study (\d+) submitted: 'synthetic-minilm-autopeft', 10 trials of "
                      r"synthetic on /models/minilm-l6 \(optimizer sobol, 4 in parallel\)$",
                      submitted.stdout, re.MULTILINE)
    assert match, submitted.stdout
    first = int(match.group(1))
    assert f"autopeft watch {first}" in submitted.stdout

    as_json = autopeft("submit", str(SYNTHETIC_EXAMPLE), "--json", *at(server))
    second = json.loads(as_json.stdout)
    assert second["id"] == first + 1 and second["state"] == "running"

    # --server/--token from the environment
    env = {"AUTOPEFT_SERVER": server.base_url, "AUTOPEFT_TOKEN": CLIENT_TOKEN}
    status = autopeft("status", str(first), env=env)
    assert status.returncode == 0, status.stderr
    assert f"study {first}: synthetic-minilm-autopeft [running]" in status.stdout
    assert "0/10 trials done" in status.stdout and "best: no completed trial yet" in status.stdout
    status_json = json.loads(autopeft("status", str(first), "--json", env=env).stdout)
    assert status_json["id"] == first and status_json["total_trials"] == 10

    cancelled = autopeft("cancel", str(second["id"]), env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"study {second['id']} (synthetic-minilm-autopeft) is cancelled" in cancelled.stdout
    assert api(server, f"/v1/studies/{second['id']}")["state"] == "cancelled"

    listed = autopeft("studies", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "synthetic-minilm-autopeft" in listed.stdout and "cancelled" in listed.stdout
    listed_json = json.loads(autopeft("studies", "--json", env=env).stdout)
    assert {first, second["id"]} <= {s["id"] for s in listed_json}
    AutopeftClient(server.base_url, CLIENT_TOKEN).cancel(first)


def test_watch_ends_when_the_study_completes(server: ServerThread) -> None:
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        study_id = client.submit(small_spec(name="watched", budget={
            "total_trials": 10, "initial_trials": 4, "max_parallel": 4})).id
    watch = subprocess.Popen(
        [sys.executable, "-m", "autopeft_service.cli", "watch", str(study_id), "--interval",
         "0.2", *at(server)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "COLUMNS": "200"})
    start = time.monotonic()
    try:
        first_line = watch.stdout.readline()  # no worker yet: the study is waiting
        assert first_line.startswith(f"study {study_id} [running]: 0/10 trials done"), (
            first_line + watch.stderr.read())
        with Workers(server.base_url, count=2):  # workers run while watch follows
            stdout, stderr = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, stderr
    assert time.monotonic() - start < 20
    assert stderr == ""
    assert re.search(rf"study {study_id} completed: 10/10 trials done, 0 running, 0 queued, "
                     r"best 0\.\d{4}, Pareto \d+", stdout), stdout
    pareto = api(server, f"/v1/studies/{study_id}/pareto")
    assert f"study {study_id} (watched): Pareto front, {len(pareto['trials'])} trials" in stdout
    for column in ("#", "configuration", "held-out", "accuracy", "dev", "deployed",
                   "trainable", "%*"):
        assert column in stdout

    # pareto --json is the API's body; the table shows every front trial
    as_json = autopeft("pareto", str(study_id), "--json", *at(server))
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == pareto
    table = autopeft("pareto", str(study_id), *at(server))
    assert table.returncode == 0, table.stderr
    for trial in pareto["trials"]:
        row = re.search(rf"│\s+{trial['number']} │ {re.escape(trial['config_description'])}\s+│"
                        rf"\s+{trial['objective']:.4f} │\s+{trial['dev_score']:.4f} │"
                        rf"\s+{trial['deployed_share']:.3f} │"
                        rf"\s+{trial['trainable_share']:.3f} │", table.stdout)
        assert row, (trial, table.stdout)
        assert trial["param_share"] == trial["deployed_share"]  # the default objective
    assert f"hypervolume {pareto['hypervolume']:.4f}" in table.stdout

    # on a terminal: a rich progress bar (the study is over: returns at once)
    live = autopeft("watch", str(study_id), *at(server),
                    env={"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1"})
    assert live.returncode == 0, live.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", live.stdout)
    assert "10/10" in plain and "ETA 0:00" in plain and "Pareto front" in plain


def test_pareto_of_a_study_without_results(server: ServerThread) -> None:
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        study_id = client.submit(small_spec(name="empty")).id
        client.cancel(study_id)
    empty = autopeft("pareto", str(study_id), *at(server))
    assert empty.returncode == 0
    assert f"study {study_id}: no completed trials yet" in empty.stdout


def test_one_line_errors(server: ServerThread, tmp_path: Path) -> None:
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(SYNTHETIC_EXAMPLE.read_text().replace("total_trials: 10",
                                                            "total_trials: 0"))
    line = assert_one_line_error(autopeft("submit", str(invalid), *at(server)), 2,
                                 "budget.total_trials: Input should be greater than or equal")
    assert line.startswith(f"autopeft: error: {invalid}: ")
    assert_one_line_error(autopeft("submit", str(tmp_path / "nope.yaml"), *at(server)), 2,
                          "nope.yaml: file not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [oops\n")
    assert_one_line_error(autopeft("submit", str(broken), *at(server)), 2, "not valid YAML")
    optimizer = tmp_path / "optimizer.json"
    optimizer.write_text(json.dumps(small_spec(optimizer={"name": "nonesuch"})))
    assert_one_line_error(autopeft("submit", str(optimizer), *at(server)), 2,
                          "HTTP 422", "optimizer.name: unknown optimiser 'nonesuch'")

    for command in ("status", "watch", "pareto", "cancel"):
        assert_one_line_error(autopeft(command, "999999", *at(server)), 1,
                              "HTTP 404 Not Found: study 999999 does not exist")
    assert_one_line_error(autopeft("studies", *at(server, "wrong-token")), 1,
                          "HTTP 401 Unauthorized: unknown bearer token", "--token")
    assert_one_line_error(autopeft("status", "1", *at(server, WORKER_TOKEN)), 1,
                          "HTTP 403 Forbidden: this endpoint needs the reader role")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(autopeft("status", "1", "--server", nowhere, "--token", "t"), 1,
                          f"cannot reach the server at {nowhere}: ", "--server")

    assert_one_line_error(autopeft("status", "1", "--server", server.base_url), 2,
                          "no token: pass --token or set AUTOPEFT_TOKEN")
    assert_one_line_error(autopeft("status", "abc", *at(server)), 2, "invalid study id 'abc'")
    assert_one_line_error(autopeft("status", "1", "--server", "localhost:8000", "--token", "t"),
                          2, "--server: must be an http:// or https:// URL")
    assert_one_line_error(autopeft("pareto", *at(server)), 2,
                          "the following arguments are required: ID")


def test_ctrl_c_stops_watching_not_the_study(server: ServerThread) -> None:
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        study_id = client.submit(small_spec(name="interrupted")).id
        watch = subprocess.Popen(
            [sys.executable, "-m", "autopeft_service.cli", "watch", str(study_id),
             "--interval", "0.2", *at(server)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert watch.stdout.readline().startswith(f"study {study_id} [running]")
            watch.send_signal(signal.SIGINT)
            _, stderr = watch.communicate(timeout=20)
        finally:
            watch.kill()
        assert watch.returncode == 130
        assert stderr == (f"autopeft: error: interrupted; study {study_id} goes on "
                          f"(autopeft cancel {study_id} stops it)\n")
        assert client.status(study_id).state == "running"
        client.cancel(study_id)


def test_download_errors_are_one_line(server: ServerThread, tmp_path: Path) -> None:
    """Downloading from a study without artefacts: no such trial, no artefact yet, no
    such study, a bad trial number, no -o (the success path: tests/workers/test_worker.py)."""
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        study_id = client.submit(small_spec(name="no artefacts")).id
        while not client.trials(study_id):
            time.sleep(0.05)
    out = str(tmp_path / "out")
    assert_one_line_error(autopeft("download", str(study_id), "999", "-o", out, *at(server)),
                          1, f"study {study_id} has no trial 999")
    assert_one_line_error(autopeft("download", str(study_id), "0", "-o", out, *at(server)),
                          1, "HTTP 404", "has no artefact")
    assert_one_line_error(autopeft("download", "999999", "0", "-o", out, *at(server)), 1,
                          "study 999999 does not exist")
    assert_one_line_error(autopeft("download", str(study_id), "x", "-o", out, *at(server)), 2,
                          "invalid trial number 'x'")
    assert_one_line_error(autopeft("download", str(study_id), "0", *at(server)), 2,
                          "-o/--output")


def _trial(number: int, description: str, **fields: Any) -> TrialSummary:
    """A completed trial as the client reads it, for the formatting tests."""
    return TrialSummary.model_validate({
        "id": number, "number": number, "state": "completed", "generator": "sobol",
        "attempt": 1, "params": {}, "config": {}, "config_description": description,
        "worker": None, "objective": None, "param_share": None, "dev_score": None,
        "failure_reason": None, "progress": None, "result": None, "created_at": 0.0,
        "leased_at": None, "finished_at": None, **fields})


def test_progress_line_counts_trials_stopped_early() -> None:
    from autopeft_service.cli.tables import progress_line

    counts = {"ready": 1, "leased": 2, "completed": 3, "failed": 0, "cancelled": 0, "pruned": 4}
    study = StudyOut(id=1, name="s", state="running", created_at=0.0, updated_at=0.0,
                     counts=counts, total_trials=10, best=_trial(0, "x", objective=0.9),
                     hypervolume=0.0, pareto_size=2, spec={})
    line = progress_line(study)
    assert line.startswith("7/10 trials done, 2 running, 1 queued, 4 stopped early")


LONG_NAME = ("sst2 on MiniLM-L6, the autopeft family, 200 trials at 1,000 training sentences "
             "of 32 tokens, three seeds")


def _table_rows(output: str) -> list[str]:
    """The body rows of a rich table printed without edges (below the header's rule)."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip().startswith("─"))
    return [line for line in lines[rule + 1:] if line.strip()]


def test_studies_fit_80_columns_one_line_a_study(server: ServerThread) -> None:
    """A long name was folded over six lines; now it is cut with an ellipsis."""
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        study_id = client.submit(small_spec(name=LONG_NAME)).id
        client.cancel(study_id)
        count = len(client.list_studies())
    listed = autopeft("studies", *at(server), env={"COLUMNS": "80"})
    assert listed.returncode == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80, listed.stdout
    rows = _table_rows(listed.stdout)
    assert len(rows) == count, listed.stdout  # no study spans two lines
    (row,) = [r for r in rows if r.split()[0] == str(study_id)]
    assert LONG_NAME[:15] in row and "…" in row and "cancelled" in row, row
    # a wide terminal shows up to NAME_WIDTH characters of it
    from autopeft_service.cli.tables import NAME_WIDTH

    wide = autopeft("studies", *at(server), env={"COLUMNS": "400"}).stdout
    assert f"{LONG_NAME[:NAME_WIDTH - 1]}…" in wide


def test_the_pareto_table_fits_80_columns() -> None:
    from rich.console import Console

    from autopeft_service.cli.tables import pareto_table

    long = ("serial@ffn[18/25/35/44/53x5] + prefix[14/18/26/35/45/54x6] + "
            "lora[7/9/13/17/22/27x6:query,value] + bitfit[4 layers]")
    pareto = ParetoOut(study_id=1, hypervolume=1.5,
                       reference_point={"score": 0.5, "param_share": 10.0},
                       trials=[_trial(n, d, objective=0.9, dev_score=0.85, param_share=0.123,
                                      deployed_share=0.123, trainable_share=4.166,
                                      result={"metric": "accuracy"})
                               for n, d in ((12, long), (3, "lora[8x6:query,value]"))])
    console = Console(width=80, record=True, highlight=False)
    console.print(pareto_table(pareto, "study 1: Pareto front, 2 trials"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(rows) == 2, text  # one line a trial
    assert rows[0].startswith("│ 12 │ serial@ffn[18/25/35/44/53x5") and "…" in rows[0]
    assert rows[0].endswith("│   0.9000 │ 0.8500 │    0.123 │     4.166 │")  # numbers whole
    assert "held-out" in text and "accuracy" in text
    # both shares, the objective (deployed, the default) marked
    header = [line for line in text.splitlines() if line.startswith("┃")]
    assert header[0].endswith("┃ held-out ┃        ┃ deployed ┃ trainable ┃"), text
    assert header[1].endswith("┃ accuracy ┃    dev ┃       %* ┃         % ┃"), text
    assert "*: the objective" in text
    assert "lora[8x6:query,value]" in rows[1]


def test_spec_fields_read_a_valid_spec_and_one_stored_by_an_older_version() -> None:
    """A stored spec that no longer validates reaches the client as a dict: the tables
    still show what it holds, and a dash (or the default) for what it lacks."""
    from autopeft_service.cli.tables import spec_field
    from autopeft_service.domain.study import StudySpec

    spec = StudySpec.model_validate(small_spec(optimizer={"name": "sobol"}))
    fields = {"id": 1, "name": "s", "state": "running", "created_at": 0.0, "updated_at": 0.0,
              "counts": {}, "total_trials": 1, "best": None, "hypervolume": 0.0,
              "pareto_size": 0}
    valid = StudyOut.model_validate({**fields, "spec": spec.model_dump(mode="json")})
    assert isinstance(valid.spec, StudySpec)
    assert (spec_field(valid, "task"), spec_field(valid, "optimizer")) == (spec.task, "sobol")
    old = StudyOut.model_validate({**fields, "spec": {"task": "glue:rte", "retired": 1}})
    assert old.spec == {"task": "glue:rte", "retired": 1}
    assert spec_field(old, "task") == "glue:rte" and spec_field(old, "backbone") == "-"
    assert spec_field(old, "optimizer") == "saasbo"


def test_submit_with_a_warm_start(server: ServerThread) -> None:
    """``--warm-start ID --warm-start-mode seed`` sets the spec's warm start and the study
    starts from the source's front; bad sources are one line."""
    from tests.api.conftest import WORKER, lease_result

    client = AutopeftClient(server.base_url, CLIENT_TOKEN)
    source = client.submit(SYNTHETIC_EXAMPLE)
    scores = [0.7, 0.9, 0.8]
    end = time.monotonic() + 60
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        while scores:  # the module's server may hold other tests' studies: report theirs too
            assert time.monotonic() < end, "the source study's trials were never leased"
            lease = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 1},
                              headers=WORKER)
            if lease.status_code == 204:
                continue
            body = lease.json()
            score = scores.pop() if body["study_id"] == source.id else 0.5
            answer = http.post(f"/v1/trials/{body['trial_id']}/result", headers=WORKER,
                               json={"token": body["token"],
                                     "result": lease_result(body, score)})
            assert answer.status_code == 200, answer.text
    client.cancel(source.id)
    warm = autopeft("submit", str(SYNTHETIC_EXAMPLE), "--warm-start", str(source.id),
                    "--warm-start-mode", "seed", "--json", *at(server))
    assert warm.returncode == 0, warm.stderr
    study = json.loads(warm.stdout)
    assert study["spec"]["warm_start"] == {"from_studies": [source.id], "mode": "seed"}
    generators = {t.generator for t in client.trials(study["id"])}
    assert any(g.startswith(f"transfer:{source.id}#") for g in generators), generators
    client.cancel(study["id"])
    assert_one_line_error(autopeft("submit", str(SYNTHETIC_EXAMPLE), "--warm-start", "99999",
                                   *at(server)), 1,
                          "warm_start.from_studies.0: study 99999 does not exist")
    assert_one_line_error(autopeft("submit", str(SYNTHETIC_EXAMPLE), "--warm-start-mode",
                                   "seed", *at(server)), 2,
                          "--warm-start-mode: needs --warm-start ID")
    assert_one_line_error(autopeft("submit", str(SYNTHETIC_EXAMPLE), "--warm-start", "0",
                                   *at(server)), 2, "invalid study id '0'")

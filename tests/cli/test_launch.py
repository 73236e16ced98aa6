"""``autopeft launch slurm``: real workers started through submitit against a real server.

The local executor runs the very tasks a SLURM array runs (submitit pickles ``WorkerTask``;
each task unpickles it and runs ``autopeft worker`` in-process). The SLURM executor itself
is checked up to ``sbatch``: a stand-in ``sbatch`` records the script submitit writes, and
the job ids it answers are printed.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from autopeft_service.cli.main import main as cli_main
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerProcess
from tests.workers.test_worker import get, spec, submit
from workers.launch import LaunchError, LaunchPlan, parse_time

CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = ServerProcess(f"sqlite:///{tmp_path / 'autopeft.db'}", log=tmp_path / "server.log",
                            lease_seconds="600").start()
    yield running
    running.stop()


def trials(server: ServerProcess, study: int) -> list[dict[str, Any]]:
    return get(server, f"/studies/{study}/trials", limit=500)["items"]


def wait_until(condition: Any, timeout: float, message: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < end, message
        time.sleep(0.2)


class Launch:
    """``autopeft launch slurm`` as a child process (its own session: every job it started
    locally is reached at teardown)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autopeft_service.cli", "launch", "slurm", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            start_new_session=True)
        self.lines: list[str] = []

    def read_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"launch ended early: {self.process.wait()} {self.process.stderr.read()}"
        self.lines.append(line.rstrip("\n"))
        return self.lines[-1]

    def finish(self, timeout: float) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        self.lines += out.splitlines()
        return self.process.returncode, "\n".join(self.lines), err

    def kill(self) -> None:
        """SIGKILL to the whole session: the command and every local job it started."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


@pytest.fixture
def launches() -> Iterator[Any]:
    started: list[Launch] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Launch:
        started.append(Launch(list(args), {**os.environ, **(env or {})}))
        return started[-1]

    yield start
    for launch in started:
        launch.kill()


def local_args(server: ServerProcess, tmp_path: Path, workers: int, name: str,
               extra: str) -> list[str]:
    return ["--executor", "local", "--workers", str(workers), "--gpus-per-worker", "0",
            "--server", server.base_url, "--token", WORKER_TOKEN, "--name", name,
            "--folder", str(tmp_path / "jobs"), "--extra-worker-args", extra, "--wait"]


def test_two_local_workers_complete_a_study(server, launches, tiny_bert_path, tmp_path) -> None:
    body = spec(tiny_bert_path, trials=4, train_examples=200, epochs=0.5)
    body["optimizer"] = {"name": "sobol"}
    env = {"AUTOPEFT_CACHE_DIR": str(tmp_path / "cache")}
    launch = launches(*local_args(server, tmp_path, 2, "lw",
                                  "--threads 1 --exit-when-idle 25 --no-artifacts"), env=env)
    header = launch.read_line()
    assert header.startswith("launched 2 workers: local jobs "), header
    rows = [launch.read_line().split("\t") for _ in range(2)]
    assert [row[0] for row in rows] == ["lw-0", "lw-1"]
    job_ids = [row[1].removeprefix("job ") for row in rows]
    assert all(row[2].startswith("log ") for row in rows)
    # The study arrives once both workers are asking for leases: each then takes one of
    # the two trials queued at once (on a loaded machine one worker can otherwise start
    # late and find the study done).
    wait_until(lambda: {w["name"] for w in get(server, "/workers")["items"]} == {"lw-0", "lw-1"},
               120, "the workers never asked for a lease")
    study = submit(server, body)
    wait_until(lambda: get(server, f"/studies/{study}")["state"] == "completed", 120,
               "the study did not complete")
    code, out, err = launch.finish(timeout=60)  # --wait: returns once both jobs ended
    assert code == 0, (out, err)
    assert sorted(line.split("\t")[0] for line in out.splitlines()[3:]) == ["lw-0", "lw-1"]
    assert all("\tfinished" in line for line in out.splitlines()[3:]), out
    done = trials(server, study)
    assert len(done) == 4 and all(t["state"] == "completed" for t in done)
    assert {t["worker"] for t in done} == {"lw-0", "lw-1"}  # both ran trials
    for job_id in job_ids:  # the jobs (their controller processes) ended
        assert not psutil.pid_exists(int(job_id)) or \
            psutil.Process(int(job_id)).status() == psutil.STATUS_ZOMBIE
    # each worker's own summary is in its job's log
    logs = " ".join(p.read_text() for p in (tmp_path / "jobs").rglob("*_log.out"))
    assert "worker lw-0: " in logs and "worker lw-1: " in logs


def test_preemption_signal_requeues_the_trial_and_ends_the_job(
        server, launches, tiny_bert_path, tmp_path) -> None:
    """SLURM's warning before the time limit (and preemption): SIGUSR2 to the task."""
    body = spec(tiny_bert_path, trials=1, train_examples=1800, epochs=40, max_parallel=1)
    body["optimizer"] = {"name": "sobol"}
    study = submit(server, body)
    launch = launches(*local_args(server, tmp_path, 1, "pre", "--threads 1 --no-artifacts"),
                      env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "cache")})
    launch.read_line()
    controller = int(launch.read_line().split("\t")[1].removeprefix("job "))
    held = wait_until(lambda: next((t for t in trials(server, study) if t["state"] == "leased"),
                                   None), 120, "the worker never leased")
    assert held["worker"] == "pre-0"
    time.sleep(1.5)  # into the trial (40 epochs: it trains for minutes)
    task = psutil.Process(controller).children()[0]  # the task process SLURM would signal
    task.send_signal(signal.SIGUSR2)
    code, out, err = launch.finish(timeout=60)
    assert code == 0, (out, err)
    assert out.splitlines()[-1].startswith("pre-0\tfinished"), out
    requeued = trials(server, study)[0]
    assert requeued["state"] == "ready" and requeued["attempt"] == 0
    assert "preempted" in requeued["failure_reason"]
    log = next((tmp_path / "jobs").rglob("*_log.out")).read_text()
    assert "worker pre-0: 0 completed, 0 failed, 1 preempted" in log


def test_wait_reports_a_failed_worker_with_its_own_error(server, launches, tmp_path) -> None:
    """A wrong token passes the (public) health check; the worker itself is refused, and
    ``--wait`` prints its one-line error and exits 1."""
    args = local_args(server, tmp_path, 1, "bad", "--threads 1")
    args[args.index(WORKER_TOKEN)] = "not-a-worker-token"
    code, out, err = launches(*args).finish(timeout=90)
    assert code == 1, (out, err)
    last = out.splitlines()[-1]
    assert last.startswith("bad-0\tfailed: autopeft: error: worker: the server refused: "), out
    assert "HTTP 401" in last and "_log.err" in last


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopeft: error: launch slurm: "), err
    return err[0]


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers: must be at least 1, got 0"),
    (["--workers", "2", "--gpus-per-worker", "2"], "--gpus-per-worker: a worker trains on one"),
    (["--workers", "2", "--time", "soon"], "--time: 'soon' is not a SLURM time"),
    (["--workers", "2", "--mem", "lots"], "--mem: 'lots' is not a SLURM memory size"),
    (["--workers", "2", "--cpus-per-worker", "0"], "--cpus-per-worker: must be at least 1"),
    (["--workers", "2", "--name", "a b"], "--name: 'a b': letters, digits"),
    (["--workers", "2", "--extra-worker-args", "--bogus"], "--extra-worker-args: unrecognized"),
    (["--workers", "2", "--extra-worker-args", "--name x"], "--name is set by the launcher"),
    (["--workers", "2", "--extra-worker-args", "'open"], "--extra-worker-args: No closing"),
    (["--workers", "2", "--slurm-option", "nokey"], "--slurm-option: 'nokey' is not KEY=VALUE"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["launch", "slurm", "--server", "http://127.0.0.1:9", "--token", "t",
                  "--folder", str(tmp_path / "jobs"), *args])
    assert exit_.value.code == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "jobs").exists()  # nothing submitted


def test_missing_token_and_server(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("AUTOPEFT_WORKER_TOKEN", raising=False)
    for args, message in ((["--server", "http://h:8000"], "--token: a worker token is required"),
                          (["--token", "t", "--server", "h:8000"], "--server: 'h:8000' is not")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["launch", "slurm", "--workers", "1", *args])
        assert exit_.value.code == 2 and message in _one_line(capsys)


def test_unreachable_server_is_refused_before_submitting(capsys, tmp_path) -> None:
    from autopeft_service.local import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_:
        cli_main(["launch", "slurm", "--workers", "2", "--server", url, "--token", "t",
                  "--executor", "local", "--folder", str(tmp_path / "jobs")])
    assert exit_.value.code == 1
    line = _one_line(capsys)
    assert f"cannot reach the server at {url}" in line and "autopeft serve" in line
    assert not (tmp_path / "jobs").exists()


def test_no_slurm_here_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    with pytest.raises(SystemExit) as exit_:
        cli_main(["launch", "slurm", "--workers", "2", "--server", "http://127.0.0.1:9",
                  "--token", "t", "--no-check", "--folder", str(tmp_path / "jobs")])
    assert exit_.value.code == 1
    assert "sbatch and srun not found" in _one_line(capsys)


def _fake_slurm(folder: Path, answer: str) -> Path:
    """``sbatch`` that records its script and answers ``answer``; ``srun`` that is there."""
    folder.mkdir()
    (folder / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" "{folder}/submitted.sh"\necho "{answer}"\n')
    (folder / "srun").write_text("#!/bin/sh\nexec \"$@\"\n")
    for tool in ("sbatch", "srun"):
        (folder / tool).chmod(stat.S_IRWXU)
    return folder


def test_slurm_array_script(capsys, tmp_path, monkeypatch) -> None:
    bin_dir = _fake_slurm(tmp_path / "bin", "Submitted batch job 4242")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code = cli_main(["launch", "slurm", "--workers", "3", "--gpus-per-worker", "1",
                     "--server", "http://login1:8000", "--token", "wt", "--name", "rte",
                     "--partition", "gpu", "--time", "1-02:00:30", "--cpus-per-worker", "8",
                     "--mem", "64G", "--slurm-option", "account=proj1", "--setup",
                     "module load cuda", "--no-check", "--folder", str(tmp_path / "jobs"),
                     "--extra-worker-args", "--trial-timeout 3600"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"launched 3 workers: SLURM job 4242 (folder {tmp_path / 'jobs'})"
    assert [line.split("\t")[:2] for line in out[1:]] == [
        ["rte-0", "job 4242_0"], ["rte-1", "job 4242_1"], ["rte-2", "job 4242_2"]]
    script = (bin_dir / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --job-name=rte", "#SBATCH --partition=gpu",
                 "#SBATCH --time=1561", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@120", "#SBATCH --account=proj1", "module load cuda"):
        assert line in script.splitlines(), (line, script)
    assert "submitit.core._submit" in script and "srun" in script
    assert stat.S_IMODE((tmp_path / "jobs").stat().st_mode) == 0o700  # pickles hold the token
    # each array task's pickle runs worker i with its name, the server and the token
    from submitit.core.utils import DelayedSubmission

    pickles = sorted((tmp_path / "jobs").glob("4242_*/*_submitted.pkl"))
    assert len(pickles) == 3
    task = DelayedSubmission.load(pickles[1]).function
    assert task.name == "rte-1"
    assert task.argv[:8] == ("worker", "--server", "http://login1:8000", "--token=wt", "--name",
                             "rte-1", "--device", "cuda")
    assert task.argv[-2:] == ("--trial-timeout", "3600")


def test_refused_submission_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    bin_dir = _fake_slurm(tmp_path / "bin", "sbatch: error: invalid partition specified: gpux")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SystemExit) as exit_:
        cli_main(["launch", "slurm", "--workers", "2", "--server", "http://h:8000", "--token",
                  "t", "--no-check", "--partition", "gpux", "--folder", str(tmp_path / "jobs")])
    assert exit_.value.code == 1
    line = _one_line(capsys)
    assert "the submission failed" in line and "invalid partition specified: gpux" in line


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("02:00:00", 120),
                                           ("1-0", 1440), ("1-02:03", 1563),
                                           ("0-00:00:01", 1)])
def test_parse_time(text: str, minutes: int) -> None:
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "0", "1:2:3:4", "1-", "h"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(LaunchError):
        parse_time(text)


def test_plan_names_and_cpu_workers(tmp_path) -> None:
    plan = LaunchPlan(workers=2, server="http://s:8000", token="t", name="n",
                      folder=tmp_path, gpus_per_worker=0, worker_args=("--threads", "2"))
    plan.check()
    assert plan.worker_argv(1) == ["worker", "--server", "http://s:8000", "--token=t", "--name",
                                   "n-1", "--device", "cpu", "--log-level", "info",
                                   "--threads", "2"]


def test_the_launcher_keeps_the_worker_side_light() -> None:
    """workers/launch.py imports neither SQLAlchemy nor the server nor (until it submits)
    submitit; the task it pickles unpickles the same way on a compute node."""
    code = ("import sys, workers.launch; print(' '.join(m for m in ('sqlalchemy', 'fastapi', "
            "'autopeft_service.storage', 'submitit', 'torch') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120, cwd=ROOT).stdout.split()
    assert loaded == []

"""Start workers through a batch scheduler with submitit: a SLURM job array, one worker per
array task (``autopeft launch slurm``), or local processes (submitit's LocalExecutor, for
one machine and for tests).

Each task runs, in its own Python process on the allocated node, the very function behind
``autopeft worker`` (``autopeft_service.cli.main.main(["worker", ...])``), named
``NAME-<index>``. The worker protocol is unchanged: the workers lease trials from the
server over HTTP and come and go with their allocations.

Signals. submitit installs its own handlers in a task: SIGTERM is ignored ("bypassed") and
its USR signal (SIGUSR2: SLURM sends it ``--signal=USR2@N`` seconds before the time limit,
and at preemption where ``PreemptParameters=send_user_signal``) checkpoints and requeues the
job. A worker needs neither: it keeps no state worth a checkpoint, and the server requeues
its trial at once when told. ``WorkerTask`` therefore routes both to the worker's own
graceful stop: the running trial stops at its next step and is reported *preempted*
(requeued at once, no attempt used), and the task returns normally, its job ending as
completed. A signal that comes before the worker is up (while
it imports torch or waits for the server) ends the task at once: it holds no trial yet.

This module never imports SQLAlchemy or the server's storage (``workers/`` stays installable
without the server's side); submitit is imported only to submit.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: ``--executor`` choices.
EXECUTORS = ("slurm", "local")
#: Worker options the launcher sets itself (refused in the extra worker arguments).
RESERVED_WORKER_OPTIONS = ("--server", "--token", "--name")
#: Seconds before the time limit at which SLURM signals the workers (``--signal=USR2@N``):
#: enough to finish the current step, report the trial preempted and upload what is ready.
DEFAULT_SIGNAL_DELAY_S = 120
#: The local executor always has a time limit; without ``--time`` it is this (7 days).
LOCAL_DEFAULT_MINUTES = 7 * 24 * 60

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<rest>\d+(?::\d+){0,2})$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


class LaunchError(ValueError):
    """A launch request that cannot work (bad input); the message is one line."""


def parse_time(text: str) -> int:
    """An sbatch ``--time`` value as whole minutes (rounded up).

    Accepts sbatch's forms: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``.

    Raises:
        LaunchError: not one of those forms, or zero.
    """
    match = _TIME.match(text.strip())
    if match is None:
        raise LaunchError(f"--time: {text!r} is not a SLURM time (HH:MM:SS, D-HH:MM:SS or "
                          "minutes)")
    parts = [int(p) for p in match["rest"].split(":")]
    days = match["days"]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total = ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    elif len(parts) == 1:  # M
        total = parts[0] * 60
    elif len(parts) == 2:  # M:S
        total = parts[0] * 60 + parts[1]
    else:  # H:M:S
        total = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    if total <= 0:
        raise LaunchError(f"--time: {text!r} is no time at all")
    return -(-total // 60)


def parse_slurm_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
        raise LaunchError(f"--slurm-option: {text!r} is not KEY=VALUE (an sbatch long option, "
                          "e.g. account=proj1)")
    return key, value


@dataclass(frozen=True)
class LaunchPlan:
    """What to start: ``workers`` workers of one server, each with its own name and GPUs.

    Args:
        workers: how many workers (array tasks).
        server: the server URL as the compute nodes see it.
        token: a worker token.
        name: the SLURM job name; worker ``i`` is ``NAME-i``.
        folder: where submitit keeps each job's pickles and logs (shared with the nodes).
        executor: ``slurm`` or ``local``.
        gpus_per_worker: 0 (CPU workers) or 1.
        partition, time_minutes, cpus_per_worker, mem: sbatch's ``--partition``,
            ``--time``, ``--cpus-per-task``, ``--mem`` (None: the cluster's default).
        worker_args: more ``autopeft worker`` arguments (after the launcher's own).
        setup: shell lines run before each worker (``module load ...``).
        slurm_options: more sbatch long options, ``{"account": "proj1"}``.
        signal_delay_s: seconds before the time limit at which workers are told to stop.
    """

    workers: int
    server: str
    token: str
    name: str
    folder: Path
    executor: str = "slurm"
    gpus_per_worker: int = 1
    partition: str | None = None
    time_minutes: int | None = None
    cpus_per_worker: int | None = None
    mem: str | None = None
    worker_args: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    slurm_options: dict[str, str] = field(default_factory=dict)
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S

    def check(self) -> None:
        """Refuse a plan that cannot work, with one line naming the option.

        Raises:
            LaunchError: the first problem found.
        """
        if self.workers < 1:
            raise LaunchError(f"--workers: must be at least 1, got {self.workers}")
        if self.executor not in EXECUTORS:
            raise LaunchError(f"--executor: {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.gpus_per_worker not in (0, 1):
            raise LaunchError(f"--gpus-per-worker: a worker trains on one device: 0 (CPU) or 1, "
                              f"got {self.gpus_per_worker} (start more workers instead)")
        if not re.match(r"^https?://[^/\s]+", self.server or ""):
            raise LaunchError(f"--server: {self.server!r} is not an http(s) URL")
        if not self.token:
            raise LaunchError("--token: a worker token is required (or AUTOPEFT_WORKER_TOKEN)")
        if not _NAME.match(self.name):
            raise LaunchError(f"--name: {self.name!r}: letters, digits, '.', '_' and '-' only, "
                              "at most 64")
        if self.cpus_per_worker is not None and self.cpus_per_worker < 1:
            raise LaunchError(f"--cpus-per-worker: must be at least 1, got {self.cpus_per_worker}")
        if self.mem is not None and not _MEM.match(self.mem):
            raise LaunchError(f"--mem: {self.mem!r} is not a SLURM memory size (e.g. 32G, 64000M)")
        if self.time_minutes is not None and self.time_minutes < 1:
            raise LaunchError("--time: must be at least one minute")
        if self.signal_delay_s < 1:
            raise LaunchError(f"--signal-delay: must be at least 1 s, got {self.signal_delay_s}")
        for option in self.worker_args:
            if option.split("=", 1)[0] in RESERVED_WORKER_OPTIONS:
                raise LaunchError(f"--extra-worker-args: {option.split('=', 1)[0]} is set by the "
                                  "launcher (use --server, --token, --name)")
        if self.slurm_options.get("array") is not None:
            raise LaunchError("--slurm-option: array is set by the launcher (--workers)")

    def worker_name(self, index: int) -> str:
        return f"{self.name}-{index}"

    def worker_argv(self, index: int) -> list[str]:
        """The ``autopeft`` arguments of worker ``index`` (the token included: keep the
        job folder private)."""
        device = "cuda" if self.gpus_per_worker else "cpu"
        return ["worker", "--server", self.server, f"--token={self.token}",
                "--name", self.worker_name(index), "--device", device, "--log-level", "info",
                *self.worker_args]


class WorkerFailed(RuntimeError):
    """A launched worker ended with a non-zero status (its log says why)."""


class _StoppedBeforeStart(BaseException):
    """A stop signal came before the worker had installed its own handlers."""


@dataclass(frozen=True)
class WorkerTask:
    """The callable submitit pickles and runs in each task: one ``autopeft worker``.

    Returns 0 when the worker ended normally (no more work, ``--max-trials``, or a
    stop signal with its trial reported preempted).

    Raises:
        WorkerFailed: the worker exited non-zero (server unreachable, refused token, ...).
    """

    argv: tuple[str, ...]
    name: str
    #: runs ``autopeft ARGV`` in this process (``workers.commands.worker.main``; given
    #: by the caller, so that this module never imports the command line)
    entry: Callable[[list[str]], int | None]

    def __call__(self) -> int:
        route_stop_signals()
        try:
            status: Any = self.entry(list(self.argv))
        except SystemExit as exit_:
            status = exit_.code
        except _StoppedBeforeStart:
            print(f"worker {self.name}: stopped by a signal before it started", flush=True)
            return 0
        code = status if isinstance(status, int) else (0 if status is None else 1)
        if code != 0:
            raise WorkerFailed(f"worker {self.name} exited with status {code} (its error is the "
                               "last line of this job's stderr log)")
        return 0


def _preempt_signal() -> int:
    """submitit's preemption/timeout signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says)."""
    try:
        from submitit.core.job_environment import JobEnvironment

        return int(JobEnvironment._usr_sig())
    except Exception:  # noqa: BLE001 - submitit's private helper moved: its documented default
        return int(signal.SIGUSR2)


def route_stop_signals() -> None:
    """In a submitit task (main thread): SIGTERM, SIGINT and the preemption signal all mean
    "stop gracefully". Until the worker installs its handlers (``Worker.
    install_signal_handlers``, which replace the SIGTERM/SIGINT ones here) they end the task
    at once; afterwards the preemption signal is re-raised as SIGTERM, which the worker
    answers by reporting its trial preempted and exiting."""
    def before_start(_signum: int, _frame: object) -> None:
        raise _StoppedBeforeStart

    def as_sigterm(signum: int, _frame: object) -> None:
        log.warning("signal %s (the time limit is near, or the job is preempted): stopping "
                    "the worker", signal.Signals(signum).name)
        signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, before_start)
    signal.signal(signal.SIGINT, before_start)
    preempt = _preempt_signal()
    if preempt not in (signal.SIGTERM, signal.SIGINT):
        signal.signal(preempt, as_sigterm)


@dataclass
class LaunchedWorker:
    """One submitted worker: its name, scheduler job and logs."""

    name: str
    job: Any  # submitit.Job

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def stdout(self) -> Path:
        return Path(self.job.paths.stdout)

    @property
    def stderr(self) -> Path:
        return Path(self.job.paths.stderr)


def make_executor(plan: LaunchPlan) -> Any:
    """The submitit executor of ``plan`` with its parameters set.

    Raises:
        LaunchError: ``slurm`` on a machine without SLURM's ``srun``/``sbatch``.
    """
    import shutil

    import submitit

    folder = plan.folder / "%j"
    if plan.executor == "local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(
            timeout_min=plan.time_minutes or LOCAL_DEFAULT_MINUTES, tasks_per_node=1,
            gpus_per_node=plan.gpus_per_worker, signal_delay_s=plan.signal_delay_s,
            **({"setup": list(plan.setup)} if plan.setup else {}))
        return local
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise LaunchError(f"{' and '.join(missing)} not found: run this on a SLURM login node, "
                          "or use --executor local")
    executor = submitit.SlurmExecutor(folder=folder)
    parameters: dict[str, Any] = {
        "job_name": plan.name, "nodes": 1, "ntasks_per_node": 1,
        "signal_delay_s": plan.signal_delay_s,
        # None leaves the option out of the sbatch script: the partition's default.
        "time": plan.time_minutes, "partition": plan.partition,
        "cpus_per_task": plan.cpus_per_worker, "mem": plan.mem,
        "gpus_per_node": plan.gpus_per_worker or None,
        "setup": list(plan.setup) or None,
        "additional_parameters": dict(plan.slurm_options) or None,
    }
    executor.update_parameters(**parameters)
    return executor


def submit(plan: LaunchPlan, entry: Callable[[list[str]], int | None]
           ) -> list[LaunchedWorker]:
    """Submit the plan's workers: one SLURM array (one task per worker), or one local
    process each; each runs ``entry(argv)``, the ``autopeft worker`` command.

    Raises:
        LaunchError: the plan is invalid or SLURM is not available here.
        submitit.core.utils.FailedSubmissionError, subprocess.CalledProcessError: the
            scheduler refused the submission.
    """
    plan.check()
    plan.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(plan.folder, 0o700)  # the pickles hold the worker token
    executor = make_executor(plan)
    tasks = [WorkerTask(tuple(plan.worker_argv(i)), plan.worker_name(i), entry)
             for i in range(plan.workers)]
    with executor.batch():
        jobs = [executor.submit(task) for task in tasks]
    return [LaunchedWorker(task.name, job) for task, job in zip(tasks, jobs, strict=True)]


@dataclass
class Outcome:
    """How a launched worker ended."""

    worker: LaunchedWorker
    ok: bool
    detail: str


def wait(launched: Sequence[LaunchedWorker], poll_seconds: float = 1.0,
         on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Block until every launched job has ended; ``on_done`` hears each as it ends."""
    pending = list(launched)
    outcomes: list[Outcome] = []
    while pending:
        for worker in list(pending):
            if not worker.job.done():
                continue
            pending.remove(worker)
            outcome = _outcome(worker)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
        if pending:
            time.sleep(poll_seconds)
    return outcomes


def _outcome(worker: LaunchedWorker) -> Outcome:
    error = worker.job.exception()
    if error is None:
        return Outcome(worker, True, f"finished (state {worker.job.state})")
    # the worker's own one-line error (``autopeft: error: worker: ...``) when it wrote one,
    # else the last line of submitit's account (an exception, a killed job)
    try:
        logged = worker.stderr.read_text(errors="replace").splitlines()
    except OSError:
        logged = []
    said = [line.strip() for line in logged if line.startswith("autopeft: error: ")]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = said[-1] if said else (lines[-1] if lines else type(error).__name__)
    return Outcome(worker, False, f"failed: {reason[:300]} (log: {worker.stderr})")


def stop(launched: Sequence[LaunchedWorker]) -> None:
    """Ask every launched job to stop (a running trial is preempted and requeued)."""
    for worker in launched:
        try:
            process = getattr(worker.job, "_process", None)
            if process is not None:  # local: SIGTERM reaches the task through its controller
                process.send_signal(signal.SIGTERM)
            else:
                worker.job.cancel(check=False)
        except Exception:  # noqa: BLE001 - best effort; the job may have ended already
            pass

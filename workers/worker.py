"""The worker process: lease a trial over HTTP, train it with a heartbeat, report, repeat.

One worker per GPU (or per CPU machine). It keeps the loaded backbones and tokenised data
in memory across trials (``TrialRunner``), so a new trial of the same backbone and task only
rebuilds the PEFT modules and the head.

Fault handling:
  * a trial that fails (out of memory, NaN loss, bad data, timeout, any exception) is
    reported as failed with its reason, and the worker goes on;
  * SIGTERM/SIGINT: the running trial stops at its next step and is reported as
    *preempted* (requeued at once, no attempt used), then the worker exits;
  * server down or restarting: every request is retried with capped backoff; a finished
    result is kept until the server accepts it (a stop signal does not abandon it);
  * a heartbeat answered "stop" (study cancelled, trial pruned) ends the trial within one
    step;
  * rungs (the study's ``early_stopping``): at each, the training thread sends the rung
    score in a heartbeat at once and waits for the answer (one request; the decision
    belongs to that step): "stop" ends the trial there, pruned, and nothing
    more is reported. A score the server did not acknowledge (it was unreachable) goes
    again with every later heartbeat: the server takes it once per lease and rung;
  * progress for people: each trial's phases, steps and examples scored (with an ETA) are
    logged at INFO, one line per phase and at most one per ``PROGRESS_LOG_SECONDS``
    (``workers.progress.LineProgress``); the heartbeats carry step and loss to the server;
  * artefacts (``uploads``): written by the runner, uploaded after the result was
    accepted, kept on disk and retried while the server cannot take them
    (``workers.uploads``); the result never waits on an upload.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from autopeft_service.domain.early_stopping import EarlyStopping
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.protocol import LeaseOut
from autopeft_service.domain.trial import RungScore, TrialResult
from workers.checkpoint import pack_checkpoint, unpack_checkpoint
from workers.client import (
    Interrupted,
    LeaseLost,
    ProtocolError,
    ServerClient,
    ServerUnavailable,
)
from workers.progress import LineProgress
from workers.trial import RungCallback, TrialProgress, TrialRequest, TrialRunner, TrialStopped
from workers.uploads import PendingUploads

log = logging.getLogger(__name__)

#: Least seconds between two logged progress lines of one trial phase.
PROGRESS_LOG_SECONDS = 30.0


class _RungArguments(TypedDict, total=False):
    """``TrialRunner.run``'s rung arguments, passed only when the lease has rungs."""

    early_stopping: EarlyStopping
    on_rung: RungCallback


class _ArtifactArguments(TypedDict, total=False):
    """``TrialRunner.run``'s artefact arguments, passed only when the worker uploads."""

    artifact_dir: Path
    trial_info: dict[str, object]


def progress_logger(trial_id: int) -> LineProgress:
    """The observer that logs one trial's progress at INFO (``trial <id>: ...`` lines).

    Args:
        trial_id: the leased trial's id, prefixed to every line.

    Returns:
        A ``LineProgress`` writing through this module's logger.
    """
    return LineProgress(lambda line: log.info("%s", line), PROGRESS_LOG_SECONDS,
                        prefix=f"trial {trial_id}")


@dataclass
class WorkerStats:
    """What a worker did, and where its time went (seconds)."""

    completed: int = 0
    failed: int = 0
    preempted: int = 0
    stopped: int = 0
    pruned: int = 0
    lost: int = 0
    started_at: float = field(default_factory=time.monotonic)
    training_seconds: float = 0.0
    trial_seconds: float = 0.0
    load_seconds: list[float] = field(default_factory=list)
    #: Per trial stopped by the server: steps trained after the stop was heard (0 at a
    #: rung, whose decision is awaited; at most 1 otherwise).
    stop_lag_steps: list[int] = field(default_factory=list)


class _TrialControl:
    """Shared state between the training loop and the heartbeat thread of one trial."""

    def __init__(self, deadline: float | None, worker_stop: threading.Event) -> None:
        self.stop = threading.Event()
        self.reason = ""
        self.progress: dict[str, float] = {}
        self.deadline = deadline
        self.worker_stop = worker_stop
        #: One heartbeat at a time (the heartbeat thread's, or a rung's from training).
        self.beat_lock = threading.Lock()
        #: Rung scores the server has not acknowledged yet.
        self.unacknowledged: list[RungScore] = []
        #: Training step when a stop was requested, and heartbeats answered so far.
        self.stop_step: int | None = None
        self.heartbeats = 0

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop_step = int(self.progress.get("step", 0))
            self.stop.set()

    def on_progress(self, progress: TrialProgress) -> bool:
        """Training callback: record progress; False stops the trial."""
        self.progress = {"step": progress.step, "total_steps": progress.total_steps,
                         "loss": progress.loss}
        if self.worker_stop.is_set():
            self.request_stop("preempted")
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.request_stop("timeout")
        return not self.stop.is_set()


class Worker:
    """Pulls trials from the server and trains them until stopped.

    Args:
        client: the protocol client (its ``stop`` event is the worker's stop signal).
        runner: the trial runner (holds the model and data caches).
        trial_timeout: seconds a trial may train before it is stopped and failed.
        wait_seconds: long-poll length of each lease request.
        uploads: where completed trials' artefacts wait for upload; None: no artefacts.
    """

    def __init__(self, client: ServerClient, runner: TrialRunner,
                 trial_timeout: float | None = None, wait_seconds: float = 10.0,
                 uploads: PendingUploads | None = None) -> None:
        self.client = client
        self.runner = runner
        self.trial_timeout = trial_timeout
        self.wait_seconds = wait_seconds
        self.uploads = uploads
        self.stats = WorkerStats()

    @property
    def stopping(self) -> threading.Event:
        return self.client.stop

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker gracefully (main thread only)."""
        def handle(signum: int, _frame: object) -> None:
            log.warning("signal %s: preempting the running trial and exiting", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self, max_trials: int | None = None, idle_exit: float | None = None) -> WorkerStats:
        """Work until stopped, ``max_trials`` trials were taken, or no trial came for
        ``idle_exit`` seconds."""
        taken = 0
        idle_since = time.monotonic()
        while not self.stopping.is_set() and (max_trials is None or taken < max_trials):
            if self.uploads is not None:
                self.uploads.flush()  # left by a server outage or an earlier run
            try:
                lease = self.client.lease(wait_seconds=self.wait_seconds)
            except Interrupted:
                break
            if lease is None:
                if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                continue
            taken += 1
            self.run_trial(lease)
            idle_since = time.monotonic()
        return self.stats

    def run_trial(self, lease: LeaseOut) -> None:
        """Train one leased trial and report its outcome (never raises for trial errors)."""
        start = time.monotonic()
        deadline = start + self.trial_timeout if self.trial_timeout else None
        control = _TrialControl(deadline, self.stopping)
        beat = threading.Thread(target=self._heartbeat, args=(lease, control), daemon=True,
                                name=f"heartbeat-{lease.trial_id}")
        beat.start()
        rungs: _RungArguments = {"early_stopping": lease.early_stopping,
                 "on_rung": lambda score: self._report_rung(lease, control, score)
                 } if lease.early_stopping.rungs else {}
        pausing = lease.fidelity < 1.0  # a fidelity study's level: checkpoint, no artefact
        artifact: _ArtifactArguments = {} if self.uploads is None or pausing else {
            "artifact_dir": self.uploads.artifact_dir(lease.trial_id),
            "trial_info": {"study": lease.study_id, "trial": lease.number,
                           "trial_id": lease.trial_id, "attempt": lease.attempt}}
        delivered = False
        scratch = tempfile.TemporaryDirectory(prefix=f"autopeft-trial-{lease.trial_id}-")
        try:
            resume = self._fetch_checkpoint(lease, Path(scratch.name))
            request = TrialRequest(model=lease.backbone, task=lease.task, config=lease.config,
                                   settings=lease.training, seed=lease.seed,
                                   data_dir=Path(lease.data_dir) if lease.data_dir else None,
                                   task_options=lease.task_options,
                                   expected_dims=lease.backbone_dims,
                                   fidelity=lease.fidelity, resume_from=resume)
            checkpoint = Path(scratch.name) / "checkpoint" if pausing else None
            result = self.runner.run(request, progress=control.on_progress, progress_every=1,
                                     observer=progress_logger(lease.trial_id),
                                     checkpoint_dir=checkpoint, **rungs, **artifact)
            if checkpoint is not None:
                self._upload_checkpoint(lease, checkpoint, result.steps)
        except TrialStopped:
            if control.stop_step is not None:
                self.stats.stop_lag_steps.append(
                    int(control.progress.get("step", 0)) - control.stop_step)
            self._report_stopped(lease, control)
        except Exception as error:  # noqa: BLE001 - every failure is reported, the worker goes on
            reason = _describe(error)
            log.warning("trial %s failed: %s", lease.trial_id, reason)
            self._report_failure(lease, reason)
        else:
            self.stats.training_seconds += result.train_seconds + result.eval_seconds
            self.stats.load_seconds.append(result.load_seconds)
            delivered = self._deliver_result(lease, result)
        finally:
            control.request_stop("trial ended")
            beat.join(5)
            scratch.cleanup()
            self.stats.trial_seconds += time.monotonic() - start
        if self.uploads is not None and not pausing:
            self._upload_artifact(lease, delivered)

    def _fetch_checkpoint(self, lease: LeaseOut, scratch: Path) -> Path | None:
        """The unpacked checkpoint a continued trial resumes from (None for a fresh one).

        Raises:
            LeaseLost / ProtocolError: the server has no such checkpoint, or other bytes.
            CheckpointError: the archive is not a checkpoint.
        """
        if lease.resume_sha256 is None:
            return None
        data = self.client.download_checkpoint(lease.trial_id, lease.resume_sha256)
        folder = scratch / "resume"
        unpack_checkpoint(data, folder)
        log.info("trial %s: resuming from its checkpoint (%d bytes) to level %g",
                 lease.trial_id, len(data), lease.fidelity)
        return folder

    def _upload_checkpoint(self, lease: LeaseOut, folder: Path, step: int) -> None:
        """Send a paused trial's checkpoint before its result (the server needs it to
        pause the trial). Raises LeaseLost / ProtocolError / Interrupted."""
        data = pack_checkpoint(folder)
        self.client.upload_checkpoint(lease.trial_id, lease.token, data,
                                      hashlib.sha256(data).hexdigest(), step)

    def _upload_artifact(self, lease: LeaseOut, delivered: bool) -> None:
        """Upload a completed trial's artefact (kept on disk if the server cannot take it
        now); forget the artefact of any other outcome."""
        assert self.uploads is not None
        if not delivered:
            self.uploads.discard(lease.trial_id)
            return
        self.uploads.mark_ready(lease.trial_id, lease.token)
        try:
            self.uploads.upload(lease.trial_id)
        except Interrupted:
            log.info("stopping: the artefact of trial %s stays for the next start",
                     lease.trial_id)

    def _heartbeat(self, lease: LeaseOut, control: _TrialControl) -> None:
        interval = max(0.5, min(10.0, lease.lease_seconds / 4))
        while not control.stop.wait(interval):
            if not self._beat(lease, control):
                return

    def _beat(self, lease: LeaseOut, control: _TrialControl) -> bool:
        """Send one heartbeat with the unacknowledged rung scores; act on its answer.
        False when the trial must stop (the caller's loop ends)."""
        with control.beat_lock:
            if control.stop.is_set():
                return False
            rungs = list(control.unacknowledged)
            try:
                answer = self.client.heartbeat(lease.trial_id, lease.token, control.progress,
                                               rungs=rungs)
            except ServerUnavailable as error:
                log.info("heartbeat of trial %s: %s (training goes on)", lease.trial_id, error)
                return True
            except LeaseLost as error:
                control.request_stop(f"lease lost: {error}")
                return False
            except ProtocolError as error:
                # Refused (422): sending these rung scores again cannot help.
                log.warning("heartbeat of trial %s refused: %s", lease.trial_id, error)
                control.unacknowledged = [r for r in control.unacknowledged if r not in rungs]
                return True
            except AutopeftError as error:
                log.warning("heartbeat of trial %s refused: %s", lease.trial_id, error)
                return True
            control.heartbeats += 1
            control.unacknowledged = [r for r in control.unacknowledged if r not in rungs]
            if answer.stop:
                control.request_stop(answer.reason or "stop")
                return False
            return True

    def _report_rung(self, lease: LeaseOut, control: _TrialControl, score: RungScore) -> bool:
        """Training callback at a rung: send its score now and wait for the decision.
        True: training goes on (also when the server cannot answer: the score goes again
        with the next heartbeat)."""
        control.unacknowledged.append(score)
        log.info("trial %s: rung %s at step %s: %.4f", lease.trial_id, score.rung, score.step,
                 score.score)
        self._beat(lease, control)
        return not control.stop.is_set()

    def _report_stopped(self, lease: LeaseOut, control: _TrialControl) -> None:
        reason = control.reason
        if reason == "preempted":
            self.stats.preempted += 1
            self._report_failure(lease, "preempted: worker stopping", preempted=True)
        elif reason == "timeout":
            self._report_failure(lease, f"timeout after {self.trial_timeout:g} s")
        else:  # cancelled or pruned by the server, or the lease was lost: nothing to report
            self.stats.stopped += 1
            if reason.startswith("pruned"):
                self.stats.pruned += 1
            log.info("trial %s stopped: %s", lease.trial_id, reason)

    def _report_failure(self, lease: LeaseOut, reason: str, preempted: bool = False) -> None:
        if not preempted:
            self.stats.failed += 1
        try:
            self.client.report_failure(lease.trial_id, lease.token, reason, preempted=preempted,
                                       interruptible=False)
        except LeaseLost as error:
            self.stats.lost += 1
            log.info("failure of trial %s not recorded: %s", lease.trial_id, error)
        except AutopeftError as error:
            log.warning("failure of trial %s not recorded: %s", lease.trial_id, error)

    def _deliver_result(self, lease: LeaseOut, result: TrialResult) -> bool:
        """Report the result; retried until the server accepts it (even when stopping).
        True when the trial is now completed with it."""
        try:
            answer = self.client.report_result(lease.trial_id, lease.token, result,
                                               interruptible=False)
            if answer.state == "failed":  # e.g. counts that differ from the server's
                log.error("result of trial %s was recorded as a failure: %s", lease.trial_id,
                          answer.failure_reason)
                self.stats.failed += 1
                return False
            self.stats.completed += 1
            return True
        except LeaseLost as error:
            self.stats.lost += 1
            log.warning("result of trial %s refused: %s", lease.trial_id, error)
        except ProtocolError as error:  # the server refused the result itself (422)
            log.warning("result of trial %s refused: %s", lease.trial_id, error)
            self._report_failure(lease, f"result refused by the server: {error}")
        return False


def _describe(error: BaseException) -> str:
    """A one-line failure reason: the exception type and first line of its message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "out of memory" in text.lower():
        return f"out of memory: {text}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

"""The model front's predictions, fitted in the background, one fit per study at a time.

``GET /v1/studies/{id}/pareto?front=model`` needs a GP fitted to the study's observations
(``optimizers.prediction.predict_scores``, seconds of CPU). Fitted on the request path,
every new observation made the next readers each start their own fit, in the server
process, competing for the interpreter with leases and heartbeats. Here instead:

- each study keeps its latest predictions with the fingerprint of the observations they
  were fitted on (the last ``kept`` studies asked about, least recently used dropped);
- a request whose observations match gets them at once;
- otherwise it starts a refit unless one is in flight for that study (single flight: the
  readers of a study share one future), and waits for it at most ``wait_seconds``; past
  that it gets the older predictions, or none, and the caller says a refit is running;
- a failed fit is reported to the requests that waited for it, and the next request
  starts another.

Where the fits run: one spawned child process (``ProcessPoolExecutor(1)``, spawn: torch
and fork do not mix), created at the first fit and terminated by ``close`` at shutdown,
so that no fit holds the server process's interpreter. It is the proposal pool's
approach (``autopeft_service.proposal_pool``) but not its executor: the proposer fills
that one with optimiser fits of tens of seconds, behind which a reader would wait. A
server configured without child processes (``proposer_processes == 0``, as some tests
run) fits in one thread of its own instead: still off the request threads and one at a
time. One process serves every study, so fits of several studies queue; each reader
still waits at most ``wait_seconds``.

The request routes take no services, so the cache is a module-level object
(``model_fronts``) that ``Services`` configures at start and closes at shutdown; an
executor closed by one server of a test process is created again at the next fit.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from autopeft_service.domain.spaces import SearchSpaceBase
from autopeft_service.optimizers.prediction import (
    PredictedScore,
    ScoreObservation,
    predict_scores,
)
from autopeft_service.proposal_pool import terminate_executor

log = logging.getLogger(__name__)

Predictions = dict[int, PredictedScore]
#: Fits a study's predictions (``predict_scores``' contract); injectable for tests.
PredictFunction = Callable[[SearchSpaceBase, Sequence[ScoreObservation]], Predictions]

DEFAULT_WAIT_SECONDS = 5.0
#: Studies whose predictions are kept (each a few hundred bytes a trial).
DEFAULT_KEPT = 64
#: Request threads that may wait for a fit at once; the others answer at once. Requests
#: share anyio's few threads (``request_threads``, 8 by default) with heartbeats and
#: result reports, which a crowd of waiting readers must not starve.
MAX_WAITERS = 2


def predict_in_child(space: SearchSpaceBase, observations: Sequence[ScoreObservation]
                     ) -> Predictions:
    """Run in the child process: ``predict_scores`` on one core.

    Args:
        space: the study's search space.
        observations: every score of the study.

    Returns:
        trial id -> prediction (empty below ``MIN_OBSERVATIONS``).
    """
    import torch

    torch.set_num_threads(1)  # one fit at a time: one core, leaving the others to serve
    return predict_scores(space, observations)


def fingerprint(observations: Sequence[ScoreObservation]) -> int:
    """What identifies a set of observations: a trial's params never change, so its id,
    level and score do. Sorted: the same rows read in another order need no refit."""
    return hash(tuple(sorted((o.trial_id, o.fidelity, o.score) for o in observations)))


@dataclass(frozen=True)
class Fit:
    """Predictions and the observations they were fitted on.

    Attributes:
        fingerprint: ``fingerprint`` of those observations.
        observations: how many there were.
        predictions: trial id -> prediction.
    """

    fingerprint: int
    observations: int
    predictions: Predictions


@dataclass(frozen=True)
class Lookup:
    """What a request gets.

    Attributes:
        fit: the latest predictions of the study (None: none yet).
        fresh: whether ``fit`` is of the request's observations.
        error: the failure of the fit this request waited for (then ``fresh`` is False).
    """

    fit: Fit | None
    fresh: bool
    error: str | None = None


@dataclass(frozen=True)
class _Pending:
    """A fit in flight: its future and the observations it fits (fingerprint, count)."""

    future: Future[Predictions]
    fingerprint: int
    observations: int


@dataclass
class _Study:
    """One study's state: its latest fit and the fit in flight.

    The lock is re-entrant: a future that is already done runs its callback (``settle``)
    in the thread adding it, which holds the lock.
    """

    fit: Fit | None = None
    pending: _Pending | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def settle(self) -> None:
        """Record the fit in flight if it has ended (its predictions when it succeeded).
        Idempotent: run by the future's callback and by each waiter, whichever is first
        (``concurrent.futures`` wakes waiters before it runs callbacks)."""
        with self.lock:
            pending = self.pending
            if pending is None or not pending.future.done():
                return
            self.pending = None
            if _failure(pending.future) is None:
                self.fit = Fit(pending.fingerprint, pending.observations,
                               pending.future.result())


class ModelFrontCache:
    """Per-study predictions, refitted in the background (module docstring).

    Args:
        wait_seconds: how long a request waits for a fit in flight.
        processes: fit in a spawned child process (True) or in a thread of this process.
        kept: how many studies' predictions are kept (least recently asked dropped).
        predict: the fit; by default ``predict_in_child`` in a process, ``predict_scores``
            in a thread. With processes it must be a module-level function (pickled).

    Raises:
        ValueError: a negative wait or a ``kept`` below 1.
    """

    def __init__(self, wait_seconds: float = DEFAULT_WAIT_SECONDS, processes: bool = True,
                 kept: int = DEFAULT_KEPT, predict: PredictFunction | None = None) -> None:
        if wait_seconds < 0 or kept < 1:
            raise ValueError(f"need wait_seconds >= 0 and kept >= 1, got {wait_seconds}, {kept}")
        self.wait_seconds = wait_seconds
        self.processes = processes
        self.kept = kept
        self.predict = predict
        self._studies: OrderedDict[int, _Study] = OrderedDict()
        self._lock = threading.Lock()  # guards _studies and _executor
        self._executor: Executor | None = None
        self._waiters = threading.BoundedSemaphore(MAX_WAITERS)

    def configure(self, wait_seconds: float, processes: bool) -> None:
        """Apply a server's settings (at its start) and forget every study (another
        server of this process may have read another database, whose study and trial
        ids are the same numbers); a running executor of the other kind is closed, and
        the next fit creates the right one.

        Args:
            wait_seconds: ``Settings.model_front_wait_seconds``.
            processes: whether fits run in a child process (``proposer_processes > 0``).
        """
        self.wait_seconds = wait_seconds
        self.clear()
        if processes != self.processes:
            self.close()
            self.processes = processes

    def lookup(self, study_id: int, space: SearchSpaceBase,
               observations: Sequence[ScoreObservation]) -> Lookup:
        """The study's predictions for ``observations``, fitting them if need be.

        Args:
            study_id: the study.
            space: its search space.
            observations: its current observations (at least ``MIN_OBSERVATIONS``: fewer
                need no fit).

        Returns:
            Fresh predictions, or (when the fit did not end within the wait, or failed)
            the latest older ones or none, with the failure if there was one.
        """
        key = fingerprint(observations)
        study = self._study(study_id)
        # Waiting threads are few (MAX_WAITERS); a request beyond them only starts the fit.
        waiting = self._waiters.acquire(blocking=False)
        try:
            return self._await_fit(study, key, space, observations,
                                   self.wait_seconds if waiting else 0.0)
        finally:
            if waiting:
                self._waiters.release()

    def _await_fit(self, study: _Study, key: int, space: SearchSpaceBase,
                   observations: Sequence[ScoreObservation], wait_seconds: float) -> Lookup:
        """Start or join the study's fit and wait for it up to ``wait_seconds``.

        A fit in flight for older observations is waited for first (one fit per study at
        a time); when it ends, this request's own fit starts in the time left.
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            with study.lock:
                study.settle()
                if study.fit is not None and study.fit.fingerprint == key:
                    return Lookup(study.fit, fresh=True)
                pending = study.pending or self._start(study, key, space, observations)
                fit = study.fit
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not wait_for([pending.future], remaining).done:
                return Lookup(fit, fresh=False)
            error = _failure(pending.future)
            if error is not None and pending.fingerprint == key:
                return Lookup(fit, fresh=False, error=error)
            # the fit ended: ours (fresh after settle) or an older one (then ours starts)

    def _start(self, study: _Study, key: int, space: SearchSpaceBase,
               observations: Sequence[ScoreObservation]) -> _Pending:
        """Submit the study's fit (the caller holds ``study.lock``); its callback records
        the outcome in ``study`` whether or not anyone still waits.

        Returns:
            The fit in flight (already settled, ``study.pending`` None again, if it ended
            before the callback was added).
        """
        future = self._submit(space, list(observations))
        pending = study.pending = _Pending(future, key, len(observations))
        # After the assignment: a future already done runs the callback here, at once.
        future.add_done_callback(lambda _done: study.settle())
        return pending

    def _submit(self, space: SearchSpaceBase, observations: list[ScoreObservation]
                ) -> Future[Predictions]:
        """Submit one fit; a pool broken by a dead child (killed, out of memory) is
        replaced first (as ``ProposalPool.submit``)."""
        predict = self.predict or (predict_in_child if self.processes else predict_scores)
        try:
            return self._pool().submit(predict, space, observations)
        except BrokenProcessPool:
            log.warning("model front: the fitting process died; starting a new one")
            with self._lock:
                self._executor = None
            return self._pool().submit(predict, space, observations)

    def _pool(self) -> Executor:
        """The executor, created at the first fit (a child costs a second and torch's
        memory: not paid by servers nobody asks for a model front)."""
        with self._lock:
            if self._executor is None:
                self._executor = (
                    ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                    if self.processes else
                    ThreadPoolExecutor(1, thread_name_prefix="model-front"))
            return self._executor

    def _study(self, study_id: int) -> _Study:
        """The study's state, most recently used now; the least recently used beyond
        ``kept`` are dropped (a fit in flight for one still ends, unrecorded)."""
        with self._lock:
            study = self._studies.get(study_id)
            if study is None:
                study = self._studies[study_id] = _Study()
            self._studies.move_to_end(study_id)
            while len(self._studies) > self.kept:
                self._studies.popitem(last=False)
            return study

    def clear(self) -> None:
        """Forget every study's predictions (fits in flight end unrecorded)."""
        with self._lock:
            self._studies.clear()

    def close(self) -> None:
        """Cancel queued fits and stop the running one (at shutdown; a later fit creates a
        new executor). A child process is terminated: its fit may take seconds more."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            terminate_executor(executor)


def _failure(future: Future[Predictions]) -> str | None:
    """How a finished fit failed (None: it succeeded)."""
    if future.cancelled():
        return "the fit was cancelled (the server is stopping)"
    error = future.exception()
    return None if error is None else f"{type(error).__name__}: {error}"


#: The server process's cache (``Services`` configures and closes it).
model_fronts = ModelFrontCache()

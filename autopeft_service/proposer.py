"""The proposer: a background loop that keeps each running study's queue filled.

For every running study it keeps up to ``budget.max_parallel`` trials ``ready`` ahead of
demand, never beyond ``budget.total_trials``. The optimiser runs outside any database
transaction (a model fit can take seconds to minutes), so lease requests never wait on it;
the insert re-checks the budget under a lock. All state comes from the database on every
pass, so a restarted server resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from autopeft_service.domain.study import BUDGET_STATES, StudySpec, TrialState
from autopeft_service.optimizers.base import History, Observation, Optimizer, OptimizerError
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database, StorageError
from autopeft_service.storage.leader import LeaderLock

log = logging.getLogger(__name__)


def load_history(database: Database, study_id: int) -> tuple[StudySpec, History, dict[str, int]]:
    """A study's spec, the optimiser's view of its trials, and its counts by state."""
    with database.session() as session:
        study = repo.get_study(session, study_id)
        spec = StudySpec.model_validate(study.spec)
        rows = repo.trials_in_states(session, study_id, [
            TrialState.COMPLETED.value, TrialState.READY.value, TrialState.LEASED.value,
            TrialState.FAILED.value])
        counts = repo.trial_counts(session, study_id)
    completed = [Observation(params=r.params, score=float(r.objective),
                             param_share=float(r.param_share))
                 for r in rows if r.state == TrialState.COMPLETED.value]
    pending = [r.params for r in rows if r.state in (TrialState.READY.value,
                                                     TrialState.LEASED.value)]
    failed = [r.params for r in rows if r.state == TrialState.FAILED.value]
    return spec, History(completed=completed, pending=pending, failed=failed), counts


def free_slots(spec: StudySpec, counts: dict[str, int]) -> int:
    """Trials to add now: up to max_parallel ready, never beyond the total budget."""
    ready = counts[TrialState.READY.value]
    used = sum(counts.values()) - counts[TrialState.CANCELLED.value]
    return min(spec.budget.max_parallel - ready, spec.budget.total_trials - used)


class BackgroundLoop:
    """A daemon thread that calls ``tick()`` every ``interval`` seconds, or sooner when
    woken; any error of one tick is logged and the loop goes on (the database may be
    down for a while). ``min_interval`` spaces ticks out so that bursts of wake-ups
    coalesce into one tick."""

    name = "background-loop"

    def __init__(self, interval: float, min_interval: float = 0.0) -> None:
        self.interval = interval
        self.min_interval = min_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Tick now."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.tick()
            except StorageError as error:  # the database is down: keep trying
                log.warning("%s: %s", self.name, error)
            except Exception:  # noqa: BLE001 - the loop must survive any one failure
                log.exception("%s: unexpected error", self.name)
            self._wake.wait(self.interval)
            self._stop.wait(self.min_interval)


class Proposer(BackgroundLoop):
    """Fills study queues in a background thread.

    Args:
        database: the store.
        poll_seconds: time between passes when nothing wakes the loop.
        optimizer_factory: builds a study's optimiser from its spec.
        min_interval: least time between passes (every lease and report wakes the loop).
        leader: when given, a pass runs only while this process holds it (one proposer
            per database however many server processes share it; ``storage.leader``).
    """

    name = "proposer"

    def __init__(self, database: Database, poll_seconds: float = 0.5,
                 optimizer_factory: Callable[[StudySpec], Optimizer] = make_optimizer,
                 min_interval: float = 0.25, leader: LeaderLock | None = None) -> None:
        super().__init__(poll_seconds, min_interval)
        self.database = database
        self.leader = leader
        self.optimizer_factory = optimizer_factory
        self._optimizers: dict[int, Optimizer] = {}
        self._specs: dict[int, StudySpec] = {}

    def _spec(self, session: Session, study_id: int) -> StudySpec:
        """A study's spec, validated once: a spec never changes after creation, and
        validating it on every pass cost more than the pass's queries."""
        spec = self._specs.get(study_id)
        if spec is None:
            spec = self._specs[study_id] = StudySpec.model_validate(
                repo.get_study(session, study_id).spec)
        return spec

    def tick(self) -> int:
        if self.leader is not None and not self.leader.try_acquire():
            self._optimizers.clear()  # another process proposes; rebuild if we lead again
            return 0
        return self.step()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, then hand leadership over."""
        super().stop(timeout)
        if self.leader is not None:
            self.leader.release()

    def step(self) -> int:
        """One pass over every running study. Returns the number of trials added."""
        with self.database.session() as session:
            study_ids = repo.running_study_ids(session)
        for stale in set(self._optimizers) - set(study_ids):
            del self._optimizers[stale]
        for stale in set(self._specs) - set(study_ids):
            del self._specs[stale]
        return sum(self.fill(study_id) for study_id in study_ids)

    def fill(self, study_id: int) -> int:
        """Top up one study's ready queue, or complete the study once its budget is used
        up (reports wake us to do this). Returns the number of trials added."""
        with self.database.session() as session:
            spec = self._spec(session, study_id)
            counts = repo.trial_counts(session, study_id)
            if sum(counts[state.value] for state in BUDGET_STATES) >= spec.budget.total_trials:
                repo.finish_study_if_done(session, study_id)
                return 0
            want = free_slots(spec, counts)
        if want <= 0:  # the common case: answered from counts, without loading history
            return 0
        spec, history, counts = load_history(self.database, study_id)
        want = free_slots(spec, counts)
        if want <= 0:
            return 0
        optimizer = self._optimizers.get(study_id)
        if optimizer is None:
            optimizer = self._optimizers[study_id] = self.optimizer_factory(spec)
        try:
            suggestions = optimizer.suggest(want, history)
        except OptimizerError as error:
            log.warning("study %s: %s", study_id, error)
            return 0
        space = spec.search_space.to_space()
        proposals = [(s.params, space.decode(s.params).model_dump(mode="json"), s.generator)
                     for s in suggestions]
        with self.database.session() as session:
            added = repo.add_trials(session, study_id, proposals, max_new=want)
        return len(added)


class LeaseSweeper(BackgroundLoop):
    """Returns expired leases to the queue every ``interval`` seconds, in a thread."""

    name = "lease-sweeper"

    def __init__(self, database: Database, interval: float = 1.0,
                 on_swept: Callable[[list[int]], None] | None = None) -> None:
        super().__init__(interval)
        self.database = database
        self.on_swept = on_swept

    def tick(self) -> list[int]:
        return self.sweep()

    def sweep(self) -> list[int]:
        """Sweep once; returns the trial ids requeued or failed (``on_swept`` hears of
        them: the server wakes the proposer, which also completes finished studies)."""
        with self.database.session() as session:
            ids = [trial.id for trial in repo.sweep_expired_leases(session)]
        if ids and self.on_swept is not None:
            self.on_swept(ids)
        return ids

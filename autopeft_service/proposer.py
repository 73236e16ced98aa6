"""The proposer: a background loop that keeps each running study's queue filled.

For every running study it keeps up to ``budget.max_parallel`` trials ``ready`` ahead of
demand, never beyond ``budget.total_trials``. The optimiser runs outside any database
transaction (a model fit can take seconds to minutes), so lease requests never wait on it;
the insert re-checks the budget under a lock. All state comes from the database on every
pass, so a restarted server resumes where it stopped.

With a ``ProposalPool``, model fits run in child processes and the loop goes on serving
the other studies while one fits (at most one fit in flight per study; proposals that need
no model stay in this thread): a new study's Sobol trials are queued within a pass even
while another study's long fit runs, and no fit runs in a process that serves requests.

No study holds the proposer (issue 31). A sampling call (no model) gets ``time_budget``
seconds per study and pass (``suggest_within``); a study that used it up *yields*: what it
found is queued, and it goes to the back of a round-robin queue, after the studies that did
not overrun. A pass stops starting studies once it has run ``time_budget`` seconds; the
rest go first in the next pass, which follows at once. A sampler that reports
``SamplerExhausted`` gets its last points queued and is not asked again; once the study's
trials are done it ends with the reason (``exhausted: ...``): ``completed`` when a trial
completed, else ``failed``. A pass holds no database transaction while it computes.

One study never stops the others: a study whose optimiser fails is recorded as failing
(``reason``, visible in the API), skipped with exponential backoff, its traceback logged
once, and ended ``failed`` after ``max_failures`` failed passes in a row. A study whose
trials all fail for one reason, or whose stored spec no longer validates, ends ``failed``
with that reason at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.orm import Session

from autopeft_service.domain.study import BUDGET_STATES, StudySpec, StudyState, TrialState
from autopeft_service.domain.validation import format_validation_error
from autopeft_service.optimizers.base import (
    History,
    Observation,
    Optimizer,
    OptimizerError,
    SamplerExhausted,
    Suggestion,
)
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.proposal_pool import ProposalPool
from autopeft_service.proposer_fidelity import (
    continue_suggested,
    fidelity_history,
    fidelity_pass,
    proposal,
)
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database, StorageError
from autopeft_service.storage.leader import LeaderLock
from autopeft_service.storage.models import TrialRow
from autopeft_service.warm_start import transfer_observations

log = logging.getLogger(__name__)

#: Default of ``Proposer.time_budget`` (``Settings.proposal_time_budget_s``).
TIME_BUDGET_SECONDS = 2.0
#: Points a study may queue in its first time slice; later slices queue as many as its
#: last slice's pace fits in ``time_budget`` (turning a 256-layer point into a trial row
#: takes milliseconds, so 10,000 of them would hold the proposer for half a minute).
FIRST_SLICE_POINTS = 128
#: Fewest points a slice may be sized to (a slow study still progresses every turn).
MIN_SLICE_POINTS = 8
#: Trial states that may still produce a result or continue (a study is not done).
_UNFINISHED = (TrialState.READY.value, TrialState.LEASED.value, TrialState.PAUSED.value)


def load_history(database: Database, study_id: int) -> tuple[StudySpec, History, dict[str, int]]:
    """A study's spec, the optimiser's view of its trials, and its counts by state (read
    in a read-only transaction: a large study's history takes a while to read, and on
    SQLite a write transaction would hold up every lease, report and read meanwhile)."""
    with database.read_session() as session:
        study = repo.get_study(session, study_id)
        spec = StudySpec.model_validate(study.spec)
        rows = repo.trials_in_states(session, study_id, [
            TrialState.COMPLETED.value, TrialState.READY.value, TrialState.LEASED.value,
            TrialState.FAILED.value, TrialState.PRUNED.value, TrialState.PAUSED.value])
        counts = repo.trial_counts(session, study_id)
        sources = (repo.model_sources(session, spec)
                   if spec.warm_start is not None and spec.warm_start.mode == "model" else [])
    # A completed row without both objectives (written before results were validated) is
    # no observation: it is kept from being proposed again, as a failed point is.
    completed = [Observation(params=r.params, score=scores[0], param_share=scores[1])
                 for r in rows if r.state == TrialState.COMPLETED.value
                 and (scores := _scores(r)) is not None]
    pending = [r.params for r in rows if r.state in (TrialState.READY.value,
                                                     TrialState.LEASED.value)]
    failed = [r.params for r in rows if r.state == TrialState.FAILED.value
              or (r.state == TrialState.COMPLETED.value and not _scored(r))]
    # Paused (a fidelity study's trial at a lower level) are not proposed again and not
    # modelled: a lower-fidelity score is not the full-training one (domain.fidelity).
    pruned = [r.params for r in rows if r.state in (TrialState.PRUNED.value,
                                                    TrialState.PAUSED.value)]
    history = History(completed=completed, pending=pending, failed=failed, pruned=pruned,
                      transfer=transfer_observations(sources, spec.space))
    if spec.fidelity is not None:  # the levels' scores, paused trials, compute left
        with database.session() as session:
            history = fidelity_history(session, study_id, spec, rows, history)
    return spec, history, counts


def _scores(row: TrialRow) -> tuple[float, float] | None:
    """A trial row's two objectives (objective, param_share) when both are finite."""
    objective, share = row.objective, row.param_share
    if objective is None or share is None or not (math.isfinite(objective)
                                                  and math.isfinite(share)):
        return None
    return float(objective), float(share)


def _scored(row: TrialRow) -> bool:
    """True when a trial row holds two finite objectives."""
    return _scores(row) is not None


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


@dataclass
class InFlight:
    """A study's fit running in the pool: what it was asked for."""

    future: Future[list[Suggestion]]
    spec: StudySpec
    want: int
    optimizer: str


class Proposer(BackgroundLoop):
    """Fills study queues in a background thread.

    Args:
        database: the store.
        poll_seconds: time between passes when nothing wakes the loop.
        optimizer_factory: builds a study's optimiser from its spec.
        min_interval: least time between passes (every lease and report wakes the loop).
        leader: when given, a pass runs only while this process holds it (one proposer
            per database however many server processes share it; ``storage.leader``).
        retry_seconds: backoff after a study's first failed pass (doubling each time).
        max_retry_seconds: cap of that backoff.
        max_failures: failed passes in a row after which the study ends ``failed``.
        pool: where model fits run (child processes); None: in this thread.
        fit_observer: hears ``(optimizer name, seconds)`` after each successful
            ``suggest`` call (the server's metrics).
        time_budget: seconds a study's sampling may take in one pass, and seconds after
            which a pass starts no further study (module docstring).
    """

    name = "proposer"

    def __init__(self, database: Database, poll_seconds: float = 0.5,
                 optimizer_factory: Callable[[StudySpec], Optimizer] = make_optimizer,
                 min_interval: float = 0.25, leader: LeaderLock | None = None,
                 retry_seconds: float = 10.0, max_retry_seconds: float = 600.0,
                 max_failures: int = 6, pool: ProposalPool | None = None,
                 fit_observer: Callable[[str, float], None] | None = None,
                 time_budget: float = TIME_BUDGET_SECONDS) -> None:
        super().__init__(poll_seconds, min_interval)
        if time_budget <= 0:
            raise ValueError(f"time_budget must be positive, got {time_budget}")
        self.time_budget = time_budget
        #: Studies that used up their time slice, in the order they yielded (round robin).
        self._yielded: dict[int, None] = {}
        self._partial: set[int] = set()  # studies whose sampling ran out of time this pass
        #: Studies whose sampler is exhausted -> why (not asked again; ended when done).
        self._exhausted: dict[int, str] = {}
        #: Studies -> points their next time slice may queue (``_pace``).
        self._slice_points: dict[int, int] = {}
        self.pool = pool
        self.fit_observer = fit_observer
        self._inflight: dict[int, InFlight] = {}
        self.database = database
        self.leader = leader
        self.optimizer_factory = optimizer_factory
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.max_failures = max_failures
        self._optimizers: dict[int, Optimizer] = {}
        self._specs: dict[int, StudySpec] = {}
        self._traced: set[int] = set()  # studies whose failure traceback was logged

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
            self._inflight.clear()  # its fits' trials would go in after the leader's
            self._exhausted.clear()
            return 0
        return self.step()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and the pool's fits, then hand leadership over."""
        super().stop(timeout)
        if self.pool is not None:
            self.pool.close()
        self._inflight.clear()
        if self.leader is not None:
            self.leader.release()

    def _time_pool_fit(self, future: Future[list[Suggestion]], optimizer: str) -> None:
        """Tell ``fit_observer`` how long a pool fit took, from now to its answer, once it
        succeeds (the callback runs in the pool's result thread of this process).

        Args:
            future: the fit handed to the pool.
            optimizer: the optimiser's name (the histogram's label).
        """
        observer = self.fit_observer
        if observer is None:
            return
        started = time.perf_counter()

        def done(finished: Future[list[Suggestion]]) -> None:
            if not finished.cancelled() and finished.exception() is None:
                observer(optimizer, time.perf_counter() - started)

        future.add_done_callback(done)

    def added(self, count: int) -> None:
        """Called after ``count`` > 0 trials were queued (subclasses wake lease waiters)."""

    def step(self) -> int:
        """One pass over every running study not backed off from, in round-robin order,
        until the pass has run ``time_budget`` seconds (the rest go first next pass).
        Returns the number of trials added. A study whose pass fails is recorded and
        skipped (``_failed``); only a database failure ends the pass early."""
        with self.database.session() as session:
            study_ids = repo.running_study_ids(session, due_only=True)
        self._forget_stale(set(study_ids))
        added = self.harvest()
        started = time.monotonic()
        deferred = False
        for study_id in self._order(study_ids):
            if study_id in self._inflight:
                continue  # its fit is running in the pool; the others go on meanwhile
            if time.monotonic() - started >= self.time_budget:
                deferred = True  # this pass had its time: the rest go first next pass
                break
            added += self._turn(study_id)
        if deferred or self._yielded:
            self.wake()  # resume the deferred and yielded studies without a poll's wait
        return added

    def _turn(self, study_id: int) -> int:
        """One study's turn: ``fill``, timed; a study that used its time slice goes to
        the back of the round-robin queue. Returns the number of trials added."""
        turn_started = time.monotonic()
        added = 0
        try:
            added = self.fill(study_id)
        except StorageError:
            raise  # the database is down: no study can go on; the loop retries
        except Exception as error:  # noqa: BLE001 - one study must not stop the others
            self._failed(study_id, error)
        elapsed = time.monotonic() - turn_started
        overran = study_id in self._partial or elapsed >= self.time_budget
        if overran:
            self._pace(study_id, added, elapsed)
        self._partial.discard(study_id)
        self._yielded.pop(study_id, None)
        if overran:
            self._yielded[study_id] = None  # re-inserted: the back of the queue
        return added

    def _order(self, study_ids: list[int]) -> list[int]:
        """This pass's order: the studies that did not overrun last time (cheap: a new
        study's first trials never wait behind a large one), then those that yielded,
        longest waiting first."""
        due = set(study_ids)
        return [s for s in study_ids if s not in self._yielded] + \
            [s for s in self._yielded if s in due]

    def _forget_stale(self, running: set[int]) -> None:
        """Drop what is kept about studies that are no longer due (ended, backed off)."""
        for cache in (self._optimizers, self._specs, self._yielded, self._exhausted,
                      self._slice_points):
            for stale in set(cache) - running:
                del cache[stale]

    def _failed(self, study_id: int, error: Exception) -> None:
        """Record a failed pass of one study: traceback logged once per study, then one
        line per failure; the study backs off (``repo.record_proposer_failure``)."""
        message = f"{type(error).__name__}: {error}".splitlines()[0][:1000]
        if study_id not in self._traced:
            self._traced.add(study_id)
            log.error("study %s: proposing failed (retried with backoff; later failures of "
                      "this study are logged in one line)", study_id, exc_info=error)
        else:
            log.warning("study %s: proposing failed again: %s", study_id, message)
        self._optimizers.pop(study_id, None)  # rebuilt at the next try
        with self.database.session() as session:
            repo.record_proposer_failure(session, study_id, message, self.max_failures,
                                         self.retry_seconds, self.max_retry_seconds)

    def fill(self, study_id: int) -> int:
        """Top up one study's ready queue, or complete the study once its budget is used
        up (reports wake us to do this). Returns the number of trials added."""
        with self.database.session() as session:
            try:
                spec = self._spec(session, study_id)
            except ValidationError as error:  # stored by an older, laxer version
                repo.fail_study(session, study_id, "its stored spec is no longer valid: "
                                + format_validation_error(error))
                return 0
            counts = repo.trial_counts(session, study_id)
            # Before the budget check: a budget spent on trials that all failed alike ends
            # the study failed with the reason, not completed.
            if self._stop_on_repeated_failure(session, study_id, spec, counts):
                return 0
            if spec.fidelity is not None:
                promoted, want = fidelity_pass(session, study_id, spec, counts)
                if promoted:
                    self.added(promoted)
            elif sum(counts[state.value] for state in BUDGET_STATES) >= spec.budget.total_trials:
                self._finish(session, study_id, counts)
                return 0
            else:
                want = free_slots(spec, counts)
            if want > 0:  # the tenant's max_queued_trials caps its ready queue
                room = repo.queue_room(session, study_id)
                want = want if room is None else min(want, room)
            if want > 0 and study_id in self._exhausted:
                self._end_if_exhausted(session, study_id, counts)
                return 0  # its sampler has nothing new: never sampled again
        if want <= 0:  # the common case: answered from counts, without loading history
            return 0
        spec, history, counts = load_history(self.database, study_id)
        if spec.fidelity is None:
            want = min(want, free_slots(spec, counts))
        if want <= 0:
            return 0
        optimizer = self._optimizers.get(study_id)
        if optimizer is None:
            optimizer = self._optimizers[study_id] = self.optimizer_factory(spec)
        needs_model = _needs_model(optimizer, want, history)
        if self.pool is not None and needs_model:
            future = self.pool.submit(spec, want, history)
            self._time_pool_fit(future, optimizer.name)
            future.add_done_callback(lambda _done: self.wake())
            self._inflight[study_id] = InFlight(future, spec, want, optimizer.name)
            return 0
        started = time.perf_counter()
        try:
            suggestions = self._suggest(study_id, optimizer, want, history, needs_model)
        except SamplerExhausted as error:
            return self._exhaust(study_id, spec, optimizer.name, error, want)
        if self.fit_observer is not None:
            self.fit_observer(optimizer.name, time.perf_counter() - started)
        if not suggestions:
            return 0  # out of time before a first new point: resumed next turn
        return self._queue(study_id, spec, optimizer.name, suggestions, want)

    def _suggest(self, study_id: int, optimizer: Optimizer, want: int, history: History,
                 needs_model: bool) -> list[Suggestion]:
        """Ask for ``want`` points: within the time slice when the optimiser can stop
        early and fits no model (sampling), else in one call.

        Raises:
            OptimizerError: as ``suggest`` (``SamplerExhausted`` at the sequence's end).
        """
        within = getattr(optimizer, "suggest_within", None)
        if within is None or needs_model:
            return optimizer.suggest(want, history)
        # Sampling and queueing share the slice: the sampler gets half of it, and at most
        # as many points as the study's pace says the whole turn can queue in time.
        cap = min(want, self._slice_points.get(study_id, FIRST_SLICE_POINTS))
        suggestions: list[Suggestion] = within(cap, history, self.time_budget / 2)
        if len(suggestions) < want:
            self._partial.add(study_id)  # out of time: it yields, resumed on a later pass
        return suggestions

    def _pace(self, study_id: int, queued: int, seconds: float) -> None:
        """Size a yielding study's next slice from this turn: ``queued`` points in
        ``seconds``, scaled to fill ``time_budget`` (with a margin: turns vary)."""
        if queued <= 0 or seconds <= 0:
            return
        fitting = int(0.8 * queued * self.time_budget / seconds)
        self._slice_points[study_id] = max(MIN_SLICE_POINTS, fitting)

    def _exhaust(self, study_id: int, spec: StudySpec, optimizer: str,
                 error: SamplerExhausted, want: int) -> int:
        """The study's sampler is exhausted: queue the last points it found, ask it no
        more, and end the study now if nothing of it is left to run. Returns the number
        of trials added."""
        log.warning("study %s: %s", study_id, error)
        self._exhausted[study_id] = str(error)
        added = self._queue(study_id, spec, optimizer, error.found, want) if error.found else 0
        if not added:
            with self.database.session() as session:
                self._end_if_exhausted(session, study_id, repo.trial_counts(session, study_id))
        return added

    def _end_if_exhausted(self, session: Session, study_id: int,
                          counts: dict[str, int]) -> bool:
        """End a study whose sampler is exhausted once none of its trials can still run:
        ``completed`` (a trial completed or was pruned) or ``failed``, the reason saying
        ``exhausted: ...`` either way. Returns True when the study is (now) over."""
        if any(counts[state] for state in _UNFINISHED):
            return False  # its last trials still run; asked again when they end
        reason = f"exhausted: {self._exhausted[study_id]}"
        if counts[TrialState.COMPLETED.value] or counts[TrialState.PRUNED.value]:
            study = repo.complete_study(session, study_id)
            if study.state == StudyState.COMPLETED.value:
                study.reason = reason  # the budget was not spent: say why it ended
        else:
            repo.fail_study(session, study_id, reason)
        return True

    def harvest(self) -> int:
        """Queue the suggestions of every finished fit (a failed fit is a failed pass of
        its study). Returns the number of trials added."""
        added = 0
        for study_id in [s for s, f in self._inflight.items() if f.future.done()]:
            flight = self._inflight.pop(study_id)
            try:
                suggestions = flight.future.result()  # the optimiser's exception, if any
                added += self._queue(study_id, flight.spec, flight.optimizer, suggestions,
                                     flight.want)
            except StorageError:
                raise
            except Exception as error:  # noqa: BLE001 - one study must not stop the others
                self._failed(study_id, error)
        return added

    def _queue(self, study_id: int, spec: StudySpec, optimizer: str,
               suggestions: list[Suggestion], want: int) -> int:
        """Insert suggestions as ready trials (the budget re-checked under the study's lock).

        Raises:
            OptimizerError: none of them was new to the study.
        """
        continued = [s for s in suggestions if s.continue_trial is not None]
        proposals = [self._proposal(spec, s) for s in suggestions if s.continue_trial is None]
        with self.database.session() as session:
            resumed = continue_suggested(session, study_id, spec, continued)
            added = repo.add_trials(session, study_id, proposals, max_new=want - resumed) \
                if proposals else []
            if resumed:
                repo.clear_proposer_failures(session, study_id)
                self.added(resumed)
                if not added:
                    return resumed
            if not added:
                if repo.get_study(session, study_id).state != StudyState.RUNNING.value:
                    return 0  # cancelled or ended while the fit ran
                # never spin on an optimiser that repeats itself
                raise OptimizerError(f"{optimizer} proposed {len(proposals)} "
                                     "configuration(s), none of them new to the study")
            repo.clear_proposer_failures(session, study_id)
            report = next((s.transfer for s in suggestions if s.transfer is not None), None)
            if report is not None:  # a warm start's model: what it learnt of the sources
                repo.record_transfer(session, study_id, {
                    **dataclasses.asdict(report), "at": time.time()})
        self._traced.discard(study_id)
        self.added(len(added))
        return len(added) + resumed

    @staticmethod
    def _proposal(spec: StudySpec, suggestion: Suggestion) -> repo.Proposal:
        """A suggestion as the trial to queue (``proposer_fidelity.proposal``)."""
        return proposal(spec, suggestion)

    @staticmethod
    def _finish(session: Session, study_id: int, counts: dict[str, int]) -> None:
        """End a study whose budget is used up: ``completed`` when a trial completed or was
        pruned, ``failed`` (with the most frequent reason) when every budgeted trial failed."""
        if counts[TrialState.COMPLETED.value] or counts[TrialState.PRUNED.value] \
                or not counts[TrialState.FAILED.value]:
            repo.finish_study_if_done(session, study_id)
            return
        failed = counts[TrialState.FAILED.value]
        reason = repo.repeated_failure(session, study_id, 1) or "no reason given"
        repo.fail_study(session, study_id, f"all {failed} trials of the budget failed and none "
                        f"completed; the most frequent reason: {reason}")

    @staticmethod
    def _stop_on_repeated_failure(session: Session, study_id: int, spec: StudySpec,
                                  counts: dict[str, int]) -> bool:
        """End the study when ``budget.stop_after_failures`` trials failed for one reason
        and none completed (a backbone or data no worker can load). Returns True if ended."""
        limit = spec.budget.stop_after_failures
        if not limit or counts[TrialState.COMPLETED.value] or \
                counts[TrialState.FAILED.value] < limit:
            return False
        reason = repo.repeated_failure(session, study_id, limit)
        if reason is None:
            return False
        repo.fail_study(session, study_id, f"{limit} trials failed for the same reason and "
                        f"none completed: {reason}")
        return True


def _needs_model(optimizer: Optimizer, n: int, history: History) -> bool:
    """Whether ``optimizer.suggest(n, history)`` fits a model (slow: goes to the pool).
    Optimisers without ``needs_model`` never do (Sobol, random)."""
    needs = getattr(optimizer, "needs_model", None)
    return bool(needs(n, history)) if needs is not None else False


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

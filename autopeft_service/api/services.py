"""The server's long-lived parts (database, proposer, sweeper, ready signal) in one object."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sqlalchemy.orm import Session

from autopeft_service.api.auth import TokenResolver
from autopeft_service.api.metrics import ServiceMetrics, multiprocess_dir
from autopeft_service.api.model_front_cache import model_fronts
from autopeft_service.api.sightings import WorkerSightings, flush_interval
from autopeft_service.core.config import Settings
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.proposal_pool import ProposalPool
from autopeft_service.proposer import LeaseSweeper, Proposer
from autopeft_service.storage import repository as repo
from autopeft_service.storage.artifacts import ArtifactStore, LocalArtifactStore
from autopeft_service.storage.database import Database
from autopeft_service.storage.leader import LeaderLock, leader_lock_for


class ReadySignal:
    """Wakes long-polling lease requests when trials become ready.

    ``notify`` may be called from any thread; ``wait`` is awaited on the server's loop.
    Each notify resolves the current generation's future and starts a new one, so every
    waiter of that generation wakes once.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the server's event loop (at start-up)."""
        self._loop = loop
        self._future = loop.create_future()

    def notify(self) -> None:
        """Wake every current waiter (thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._resolve, loop)

    def _resolve(self, loop: asyncio.AbstractEventLoop) -> None:
        future, self._future = self._future, loop.create_future()
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Return at the next notify or after ``timeout`` seconds."""
        if self._future is None or timeout <= 0:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            pass


class Services:
    """Database + background loops of one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.database_url, settings.database_pool_size)
        self.artifacts: ArtifactStore = LocalArtifactStore(settings.artifact_dir)
        #: Bearer tokens to callers (the environment's, then the database's).
        self.tokens = TokenResolver(self.database, settings.client_tokens,
                                    settings.worker_tokens, settings.token_cache_seconds)
        self.ready = ReadySignal()
        #: True once shutdown began: long-polling leases answer 204 at once.
        self.stopping = False
        self._specs: dict[int, dict[str, Any]] = {}
        self.metrics = ServiceMetrics(self.database, settings.worker_alive_seconds,
                                      multiprocess_dir())
        # One proposer per database, whatever the number of server processes.
        self.proposer = NotifyingProposer(
            self.database, self.ready, poll_seconds=settings.proposer_poll_seconds,
            leader=leader_lock_for(self.database.engine),
            retry_seconds=settings.proposer_retry_seconds,
            max_retry_seconds=settings.proposer_max_retry_seconds,
            max_failures=settings.proposer_max_failures,
            time_budget=settings.proposal_time_budget_s,
            fit_observer=self.metrics.observe_fit,
            pool=(ProposalPool(settings.proposer_processes, make_optimizer)
                  if settings.proposer_processes > 0 else None))
        self.sweeper = LeaseSweeper(self.database, settings.sweep_interval_seconds,
                                    on_swept=self._swept)
        #: Workers seen by heartbeats, written in batches (leases write theirs at once).
        self.sightings = WorkerSightings(self.database,
                                         flush_interval(settings.worker_alive_seconds))
        # The model front's fits run in a child process unless the server runs none.
        model_fronts.configure(settings.model_front_wait_seconds,
                               processes=settings.proposer_processes > 0)

    def _swept(self, _trial_ids: list[int]) -> None:
        """Expired leases went back to ready: wake the waiting leases and the proposer."""
        self.ready.notify()
        self.proposer.wake()

    def study_spec_json(self, session: Session, study_id: int) -> dict[str, Any]:
        """A study's stored spec (JSON), cached: a spec never changes after creation."""
        spec = self._specs.get(study_id)
        if spec is None:
            spec = self._specs[study_id] = repo.get_study(session, study_id).spec
        return spec

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ready.bind(loop)
        self.proposer.start()
        self.sweeper.start()
        self.sightings.start()

    def begin_shutdown(self) -> None:
        """Shutdown began (thread- and signal-safe): wake every long-polling lease, which
        then answers 204 instead of waiting out its poll."""
        self.stopping = True
        self.ready.notify()

    def stop(self) -> None:
        self.stopping = True
        self.proposer.stop()
        self.sweeper.stop()
        self.sightings.stop()  # writes the last sightings
        model_fronts.close()  # terminates a model-front fit in flight
        self.database.dispose()


class NotifyingProposer(Proposer):
    """A Proposer that wakes long-polling lease requests after adding trials."""

    def __init__(self, database: Database, ready: ReadySignal, poll_seconds: float,
                 leader: LeaderLock | None = None, **backoff: Any) -> None:
        super().__init__(database, poll_seconds=poll_seconds, leader=leader, **backoff)
        self.ready = ready

    def added(self, count: int) -> None:
        self.ready.notify()

"""Workers seen by heartbeats, written to the database in batches.

A heartbeat used to upsert its worker's row, one more statement per heartbeat, for a
``last_seen`` that only needs to hold within ``worker_alive_seconds`` (60 s by default).
Now a heartbeat notes its worker here (a dictionary write under a lock) and a thread
writes every worker noted since the last flush in one statement per 500 workers, every
``interval`` seconds (``flush_interval``: at most 5 s, and a quarter of the alive window),
each with the time it was last seen. Leases still write their worker at once (they count
leases, and a new worker shows up at its first request). Stopping flushes what is left.
"""

from __future__ import annotations

import threading
import time

from autopeft_service.proposer import BackgroundLoop
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database


def flush_interval(worker_alive_seconds: float) -> float:
    """How often sightings are written: often enough that a worker heartbeating well
    within the alive window never looks dead (a quarter of it), at most every 5 s."""
    return min(5.0, worker_alive_seconds / 4)


class WorkerSightings(BackgroundLoop):
    """Heartbeats' workers, flushed to the ``workers`` table every ``interval`` seconds.

    Args:
        database: the store.
        interval: seconds between flushes.
    """

    name = "worker-sightings"

    def __init__(self, database: Database, interval: float) -> None:
        super().__init__(interval)
        self.database = database
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # name -> monotonic time last seen

    def seen(self, name: str) -> None:
        """Note that ``name`` was seen now (thread-safe, no I/O)."""
        now = time.monotonic()
        with self._lock:
            self._seen[name] = now

    def tick(self) -> int:
        return self.flush()

    def flush(self) -> int:
        """Write the sightings noted since the last flush; returns how many workers. On a
        database error they are kept for the next flush (unless newer ones replaced them)
        and the error is raised."""
        with self._lock:
            batch, self._seen = self._seen, {}
        if not batch:
            return 0
        now = time.monotonic()
        try:
            with self.database.session() as session:
                repo.record_sightings(session, {name: max(0.0, now - at)
                                                for name, at in batch.items()})
        except BaseException:
            with self._lock:
                for name, at in batch.items():
                    if self._seen.get(name, -1.0) < at:
                        self._seen[name] = at
            raise
        return len(batch)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, then write what is left (best effort: the database may be
        gone)."""
        super().stop(timeout)
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - shutting down; the next heartbeat re-notes them
            pass

"""Leader election between server processes that share one database.

Several ``autopeft serve`` processes (``--workers N``, or several machines behind a load
balancer) may serve the same database. Leases and reports are safe to handle anywhere
(one atomic statement each), but exactly one process may run the proposer: two would
each call their optimiser on the same history and propose the same points.

The lock is held for the life of the leader and released by the operating system or the
database when the process dies, so a SIGKILLed leader is replaced within one proposer
poll by whichever process asks next:
  * PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection
    the lock keeps open; a lost connection is a lost lock.
  * SQLite file: ``fcntl.flock`` on ``<database file>.leader`` (the processes share a
    machine, as they share the file).
  * SQLite in memory: one process by definition; always the leader.

Hand-written because no well-kept library covers both cases behind one interface; each
is a few lines of the database's or the OS's own primitive.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

#: Advisory lock key of the proposer ("autopeft" as a 64-bit integer).
PROPOSER_LOCK_KEY = int.from_bytes(b"autopeft", "big") & 0x7FFF_FFFF_FFFF_FFFF


class LeaderLock(Protocol):
    """A non-blocking, process-lifetime lock."""

    def try_acquire(self) -> bool:
        """True when this process holds the lock now (taking it if it is free).

        Never raises: a database error means "not the leader" until the next call.
        """
        ...

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        ...


class AlwaysLeader:
    """The lock of a database only one process can open (SQLite in memory)."""

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


class FileLeaderLock:
    """``flock`` on a file next to the SQLite database.

    Args:
        path: the lock file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._fd is not None:
                return True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                log.warning("leader lock %s: %s", self.path, error)
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor drops the flock
                self._fd = None


class PostgresLeaderLock:
    """A PostgreSQL session-level advisory lock on a connection kept for the purpose.

    Args:
        engine: the server's engine (one pooled connection is kept while leading).
        key: the advisory lock key.
    """

    def __init__(self, engine: Engine, key: int = PROPOSER_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            try:
                if self._connection is not None:
                    # Still ours only while the session lives: check it.
                    self._connection.execute(text("SELECT 1")).scalar_one()
                    return True
                connection = self.engine.connect()
                got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                              {"key": self.key}).scalar_one())
                connection.commit()
                if got:
                    self._connection = connection
                else:
                    connection.close()
                return got
            except SQLAlchemyError as error:
                log.warning("leader lock: %s", error)
                self._drop()
                return False

    def release(self) -> None:
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                             {"key": self.key})
                    self._connection.commit()
                except SQLAlchemyError:
                    pass  # closing the session below releases it anyway
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()  # never return a lock-holding session to the pool
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None


def leader_lock_for(engine: Engine) -> LeaderLock:
    """The leader lock that fits ``engine``'s database (module docstring)."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresLeaderLock(engine)
    database = url.database or ""
    if not database or database == ":memory:":
        return AlwaysLeader()
    path = Path(database).expanduser()
    return FileLeaderLock(path.with_name(path.name + ".leader"))

"""Engine creation, the database clock, and a session helper with atomic write transactions.

SQLite (the default) gets WAL, a busy timeout and foreign keys, and every write transaction
starts with ``BEGIN IMMEDIATE`` so that two writers serialise at the start rather than fail
on upgrade; PostgreSQL uses row locks (``FOR UPDATE SKIP LOCKED``) in the repository.
Driver errors become ``StorageError`` so routes never leak them as HTTP 500s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, create_engine, event, func, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from autopeft_service.domain.errors import AutopeftError

#: Execution option of the engine behind ``Database.read_session`` (SQLite: plain BEGIN).
_READ_ONLY = "autopeft_read_only"


class StorageError(AutopeftError, RuntimeError):
    """The database failed (connection lost, lock timeout, ...): worth retrying (HTTP 503)."""


class DataRejected(AutopeftError, ValueError):
    """The database refused a value (a driver DataError: a NUL character, a number out of
    range, invalid JSON): the request is at fault, and retrying cannot help (HTTP 422).
    Validation refuses such values first; this is the net under it."""


def make_engine(url: str, pool_size: int = 20) -> Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    SQLite files get their parent folder created, WAL mode, a 30 s busy timeout, and
    ``BEGIN IMMEDIATE`` at the start of every transaction.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=pool_size, max_overflow=2 * pool_size)

        @event.listens_for(engine, "connect")
        def _sqlite_setup(dbapi_connection: Any, _record: object) -> None:  # DBAPI: untyped
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Connection) -> None:
            # A read-only session (``Database.read_session``) reads a WAL snapshot instead
            # of taking the write lock: it neither waits for writers nor holds them up.
            read_only = connection.get_execution_options().get(_READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # No pool_pre_ping: it costs a round trip on every checkout (about 15 % of the server's
    # time per lease). A connection that died (database restart) fails its next statement,
    # SQLAlchemy then invalidates the whole pool, and that one request answers 503 with
    # Retry-After (``StorageError``), which workers and clients retry.
    return create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size)


def is_postgres(engine_or_session: Engine | Session) -> bool:
    """True for a PostgreSQL database."""
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) \
        else engine_or_session
    return bind.dialect.name == "postgresql"


def database_now_expression(session: Session) -> ColumnElement[Any]:
    """The database clock as a SQL expression (seconds since the epoch), for use inside a
    statement so that reading the clock costs no extra round trip. A number: numeric on
    PostgreSQL (``extract``), real on SQLite."""
    if is_postgres(session):
        return func.extract("epoch", func.clock_timestamp())
    return (func.julianday("now") - 2440587.5) * 86400.0


def database_now(session: Session) -> float:
    """The database clock, in seconds since the epoch (the time base of every deadline)."""
    if is_postgres(session):
        return float(session.execute(text("SELECT extract(epoch FROM clock_timestamp())"))
                     .scalar_one())
    return float(session.execute(
        text("SELECT (julianday('now') - 2440587.5) * 86400.0")).scalar_one())


class Database:
    """An engine plus a session factory; ``session()`` is the one way to talk to the DB."""

    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Same pool; PostgreSQL connections checked out through it run in autocommit.
        statements_bind = self.engine.execution_options(isolation_level="AUTOCOMMIT") \
            if is_postgres(self.engine) else self.engine
        self._statement_sessions = sessionmaker(statements_bind, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine.execution_options(**{_READ_ONLY: True}),
                                           expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on error.

        Raises:
            DataRejected: the database refused a value (the caller's fault).
            StorageError: any other database driver error inside the block.
        """
        with self._run(self._sessions()) as session:
            yield session

    @staticmethod
    @contextmanager
    def _run(session: Session) -> Iterator[Session]:
        try:
            yield session
            session.commit()
        except DataError as error:
            session.rollback()
            raise DataRejected(f"the database refused a value: "
                               f"{str(error.orig).splitlines()[0]}") from error
        except SQLAlchemyError as error:
            session.rollback()
            raise StorageError(f"database error: {type(error).__name__}: "
                               f"{str(error).splitlines()[0]}") from error
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A transaction that only reads. On SQLite it starts with a plain ``BEGIN`` (a
        snapshot of the WAL) rather than ``BEGIN IMMEDIATE``, so a long read (the
        proposer's history of a large study) never holds up writers or other reads, and
        never waits for a writer; writing in it may fail with SQLITE_BUSY. On PostgreSQL
        it is ``session()`` (reads never wait for row locks there).

        Raises:
            StorageError: any database driver error inside the block.
        """
        with self._run(self._read_sessions()) as session:
            yield session

    @contextmanager
    def statement_session(self) -> Iterator[Session]:
        """A session for work whose every statement is atomic on its own (the worker
        protocol's hot path: one ``UPDATE ... RETURNING`` per lease or report).

        On PostgreSQL each statement commits by itself (autocommit): no BEGIN and COMMIT
        round trips. On SQLite it is ``session()``: a lone write statement there reads
        under a snapshot and fails with SQLITE_BUSY_SNAPSHOT when another writer got in
        first, instead of waiting, so it keeps ``BEGIN IMMEDIATE``.

        Raises:
            StorageError: any database driver error inside the block.
        """
        with self._run(self._statement_sessions()) as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

"""Database sessions: what commits when, and recovery from connections the server dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from autopeft_service.storage.database import Database, StorageError, is_postgres
from autopeft_service.storage.migrate import upgrade_to_head


class Boom(Exception):
    pass


def _workers(database: Database) -> list[str]:
    with database.session() as session:
        return list(session.execute(text("SELECT name FROM workers ORDER BY name")).scalars())


def _insert_worker(session, name: str) -> None:  # type: ignore[no-untyped-def]
    session.execute(text("INSERT INTO workers (name, first_seen, last_seen, leases) "
                         "VALUES (:name, 0, 0, 0)"), {"name": name})


def test_session_rolls_back_everything_on_error(database_url: str) -> None:
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    try:
        with pytest.raises(Boom), database.session() as session:
            _insert_worker(session, "a")
            raise Boom
        assert _workers(database) == []
    finally:
        database.dispose()


def test_statement_session_commits_each_statement_on_postgres_only(database_url: str) -> None:
    """PostgreSQL: autocommit (a statement stands once executed, even if the block then
    fails). SQLite: an ordinary immediate transaction (rolled back as a whole)."""
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    try:
        with pytest.raises(Boom), database.statement_session() as session:
            _insert_worker(session, "a")
            if is_postgres(database.engine):  # visible to others at once (SQLite: every
                assert _workers(database) == ["a"]  # session is a writer, it would wait)
            raise Boom
        assert _workers(database) == (["a"] if is_postgres(database.engine) else [])
        # Ordinary sessions drawn from the same pool afterwards are transactions again.
        with pytest.raises(Boom), database.session() as session:
            _insert_worker(session, "b")
            raise Boom
        assert "b" not in _workers(database)
    finally:
        database.dispose()


def test_connections_killed_by_the_server_fail_one_request_then_recover(
        postgres_admin_url: str) -> None:
    """Without pre-ping, a pooled connection whose backend died fails its next statement
    with StorageError (the API answers 503); SQLAlchemy then replaces the whole pool, so
    the next request works."""
    from autopeft_service.testing.postgres import create_database

    url = create_database(postgres_admin_url)
    upgrade_to_head(url)
    database = Database(url, pool_size=4)
    try:
        sessions = [database.session() for _ in range(3)]  # three pooled connections
        for session in sessions:
            session.__enter__().execute(text("SELECT 1"))
        for session in reversed(sessions):
            session.__exit__(None, None, None)
        name = database.engine.url.database
        with database.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = :name AND pid <> pg_backend_pid()"),
                          {"name": name})
            admin.commit()
        failures = 0
        for _ in range(4):
            try:
                _workers(database)
            except StorageError:
                failures += 1
        assert failures <= 1
        assert _workers(database) == []
    finally:
        database.dispose()


def test_a_value_postgresql_refuses_is_data_rejected_not_storage_error(
        postgres_admin_url: str) -> None:
    """A driver DataError (here a NUL character, which PostgreSQL text cannot hold) is the
    caller's fault: DataRejected (HTTP 422), not StorageError (503, retried for ever)."""
    from autopeft_service.storage.database import DataRejected
    from autopeft_service.testing.postgres import create_database

    url = create_database(postgres_admin_url)
    upgrade_to_head(url)
    database = Database(url, pool_size=1)
    try:
        with pytest.raises(DataRejected, match="NUL|0x00"), database.session() as session:
            _insert_worker(session, "bad\x00name")
        assert not issubclass(DataRejected, StorageError)
        assert _workers(database) == []  # rolled back; the next session works
    finally:
        database.dispose()

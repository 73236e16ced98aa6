"""Alembic head matches the models on both databases; the migration is reversible."""

from alembic import command
from sqlalchemy import inspect

from autopeft_service.storage.database import make_engine
from autopeft_service.storage.migrate import alembic_config, schema_diff, upgrade_to_head


def test_head_matches_models_with_no_pending_autogenerate_diff(database_url: str) -> None:
    upgrade_to_head(database_url)
    assert schema_diff(database_url) == []


def test_downgrade_then_upgrade_round_trips(database_url: str) -> None:
    upgrade_to_head(database_url)
    command.downgrade(alembic_config(database_url), "base")
    engine = make_engine(database_url, pool_size=1)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade_to_head(database_url)
    assert schema_diff(database_url) == []


def test_diff_detects_a_missing_column(database_url: str) -> None:
    """The check can fail: drop a column behind Alembic's back and the diff reports it."""
    upgrade_to_head(database_url)
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE workers DROP COLUMN leases")
    finally:
        engine.dispose()
    assert any("leases" in str(change) for change in schema_diff(database_url))

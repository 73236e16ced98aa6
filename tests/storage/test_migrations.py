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


def test_a_database_at_0001_with_a_study_upgrades_and_keeps_working(database_url: str) -> None:
    """A database made by the previous release (revision 0001) with a running study and a
    completed trial: upgraded to head, the study reads as before, with no reason and no
    proposer failures, and the proposer fills it."""
    import json

    from autopeft_service.api.views import study_out
    from autopeft_service.proposer import Proposer
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    command.upgrade(alembic_config(database_url), "0001")
    spec = {"name": "old", "backbone": "b", "task": "synthetic",
            "search_space": {"kind": "autopeft", "num_layers": 2,
                             "serial_adapter_sizes": [0, 8], "parallel_adapter_sizes": [0, 4],
                             "prefix_lengths": [0]},
            "budget": {"total_trials": 4, "initial_trials": 4, "max_parallel": 2,
                       "max_attempts": 1},
            "optimizer": {"name": "sobol", "seed": 0, "settings": {}}}
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO studies (name, state, spec, created_at, updated_at) "
                "VALUES ('old', 'running', %s, 1.0, 1.0)" if "postgresql" in database_url
                else "INSERT INTO studies (name, state, spec, created_at, updated_at) "
                "VALUES ('old', 'running', ?, 1.0, 1.0)", (json.dumps(spec),))
    finally:
        engine.dispose()
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    try:
        assert Proposer(database).step() == 2
        with database.session() as session:
            out = study_out(session, repo.get_study(session, 1))
        assert (out.state, out.reason, out.proposer_failures) == ("running", None, 0)
        assert out.counts["ready"] == 2 and out.total_trials == 4
    finally:
        database.dispose()

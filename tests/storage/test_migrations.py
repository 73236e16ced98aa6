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


def test_a_study_stored_before_search_space_families_keeps_loading_and_proposing(
        database_url: str) -> None:
    """A database at revision 0002 (before families, backbone_dims and expected counts)
    with a study stored in that release's form: upgraded to head, its spec loads (kind
    autopeft, no backbone_dims), completed trials keep the worker's share, and saasbo
    proposes from them with a share model (it has no dimensions to count with)."""
    import json

    from autopeft_service.domain.backbone import MINILM_DIMS
    from autopeft_service.domain.param_count import count_parameters
    from autopeft_service.domain.study import StudySpec
    from autopeft_service.domain.trial import TrialResult
    from autopeft_service.proposer import Proposer, load_history
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    command.upgrade(alembic_config(database_url), "0002")
    space = {"kind": "autopeft", "num_layers": 6, "serial_adapter_sizes": [0, 8, 64],
             "parallel_adapter_sizes": [0, 4], "prefix_lengths": [0, 16],
             "parallel_adapter_scale": 4.0, "prefix_reparameterize": True,
             "prefix_mlp_width": 800}
    cheap = {"warmup_steps": 32, "num_samples": 16, "thinning": 8, "mc_samples": 32,
             "candidates": 64, "restarts": 2}
    spec = {"name": "old", "backbone": "b", "task": "synthetic", "data_dir": None,
            "task_options": {}, "search_space": space, "objective_metric": None,
            "reference_point": {"score": 0.0, "param_share": 10.0},
            "budget": {"total_trials": 8, "initial_trials": 3, "max_parallel": 2,
                       "max_attempts": 1, "stop_after_failures": 3},
            "optimizer": {"name": "saasbo", "seed": 0, "settings": cheap}, "seed": 0,
            "kind": "autopeft"}
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            marker = "%s" if "postgresql" in database_url else "?"
            connection.exec_driver_sql(
                "INSERT INTO studies (name, state, spec, created_at, updated_at, "
                f"proposer_failures) VALUES ('old', 'running', {marker}, 1.0, 1.0, 0)",
                (json.dumps(spec),))
    finally:
        engine.dispose()
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    try:
        loaded, history, _ = load_history(database, 1)
        assert loaded.backbone_dims is None and loaded.space.kind == "autopeft"
        proposer = Proposer(database)
        shares = []
        for _ in range(2):  # the Sobol start, completed by a worker reporting its share
            proposer.step()
            with database.session() as session:
                while (lease := repo.lease_trial(session, "w", 60)) is not None:
                    config = StudySpec.model_validate(spec).space.decode(lease.params)
                    counts = count_parameters(config, MINILM_DIMS)
                    shares.append(counts.trainable_percent)
                    score = 0.6 + 0.01 * len(shares)
                    repo.complete_trial(session, lease.trial_id, lease.token, TrialResult(
                        metric="accuracy", objective=score, held_out={"accuracy": score},
                        dev={"accuracy": 0.6}, dev_score=0.6,
                        trainable_parameters=counts.trainable,
                        trainable_percent=counts.trainable_percent,
                        deployed_parameters=counts.deployed, head_parameters=0,
                        train_seconds=1.0, eval_seconds=1.0, load_seconds=0.0, steps=1,
                        train_examples=1, examples_per_second=1.0, final_loss=0.1,
                        peak_memory_mb=1.0, device="cpu", seed=0, config_description="x"))
        _, history, counts = load_history(database, 1)
        assert counts["completed"] == 4
        assert sorted(o.param_share for o in history.completed) == sorted(shares)
        assert proposer.step() == 2  # saasbo, from the completed trials
        with database.session() as session:
            rows = repo.trials_in_states(session, 1, ["ready"])
            assert {row.generator for row in rows} == {"saasbo"}
            assert all(row.param_share is None and row.expected_trainable is None
                       for row in rows)
    finally:
        database.dispose()

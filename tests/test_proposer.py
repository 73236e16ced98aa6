"""The proposer: one per database (leader election), and never a configuration twice."""

from __future__ import annotations

from autopeft_service.domain.study import StudySpec
from autopeft_service.proposer import Proposer
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.storage.leader import leader_lock_for
from autopeft_service.storage.migrate import upgrade_to_head


def _spec(total: int = 12, parallel: int = 4) -> StudySpec:
    return StudySpec.model_validate({
        "name": "leader", "backbone": "b", "task": "synthetic",
        "search_space": {"num_layers": 6, "hidden_size": 384},
        "budget": {"total_trials": total, "initial_trials": total, "max_parallel": parallel},
        "optimizer": {"name": "sobol"}})


def _count(database: Database, study_id: int) -> int:
    with database.session() as session:
        return sum(repo.trial_counts(session, study_id).values())


def test_only_the_leader_proposes_and_leadership_moves_on_stop(database_url: str) -> None:
    """Two server processes' proposers on one database: the second adds nothing while the
    first leads (without the lock both would propose the same Sobol points), and takes
    over once the first stops."""
    upgrade_to_head(database_url)
    databases = [Database(database_url, pool_size=4) for _ in range(2)]
    first, second = (Proposer(d, leader=leader_lock_for(d.engine)) for d in databases)
    try:
        with databases[0].session() as session:
            study_id = repo.create_study(session, _spec()).id
        assert first.tick() == 4
        assert second.tick() == 0  # not the leader: it does not even look
        with databases[0].session() as session:  # a worker takes two trials
            assert repo.lease_trial(session, "w", 60) is not None
            assert repo.lease_trial(session, "w", 60) is not None
        assert second.tick() == 0
        first.stop()  # releases the lock (a dying process loses it too: test_leader)
        assert second.tick() == 2
        assert _count(databases[0], study_id) == 6
    finally:
        second.stop()
        for database in databases:
            database.dispose()


def test_add_trials_never_adds_a_configuration_twice(database_url: str) -> None:
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    spec = _spec()
    space = spec.space
    try:
        with database.session() as session:
            study_id = repo.create_study(session, spec).id
        point = {**{f"layer_{i}": 1 for i in range(6)}, "serial_adapter_size": 12,
                 "parallel_adapter_size": 0, "prefix_length": 0}
        other = {**point, "layer_0": 0}
        proposal = repo.Proposal(point, space.decode(point).model_dump(mode="json"), "test")
        second = repo.Proposal(other, space.decode(other).model_dump(mode="json"), "test")
        with database.session() as session:
            assert len(repo.add_trials(session, study_id, [proposal, proposal], max_new=4)) == 1
        with database.session() as session:
            added = repo.add_trials(session, study_id, [proposal, second], max_new=4)
            assert [row.params for row in added] == [other]
        assert _count(database, study_id) == 2
    finally:
        database.dispose()

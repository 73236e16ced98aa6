"""The proposer: one per database (leader election), and never a configuration twice."""

from __future__ import annotations

import time
from collections.abc import Callable

from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import Optimizer
from autopeft_service.optimizers.sobol import SobolOptimizer
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


def test_a_replicate_is_added_again_numbered_and_leased_with_its_own_seed_offset(
        database_url: str) -> None:
    """A configuration the study has is skipped as a duplicate, but queued again as a
    replicate: numbered 1, then 2, and its lease says so (the lease route adds it to the
    study's seed)."""
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    spec = _spec()
    try:
        with database.session() as session:
            study_id = repo.create_study(session, spec).id
        point = {**{f"layer_{i}": 1 for i in range(6)}, "serial_adapter_size": 12,
                 "parallel_adapter_size": 0, "prefix_length": 0}
        config = spec.space.decode(point).model_dump(mode="json")
        first = repo.Proposal(point, config, "test")
        again = repo.Proposal(point, config, "test", replicate=True)
        with database.session() as session:
            rows = repo.add_trials(session, study_id, [first, first, again, again], max_new=4)
            assert [row.replicate for row in rows] == [0, 1, 2]
            assert all(row.params == point for row in rows)
        with database.session() as session:
            leases = [repo.lease_trial(session, "w", 60) for _ in range(3)]
        assert sorted(lease.replicate for lease in leases if lease) == [0, 1, 2]
    finally:
        database.dispose()


# -- no study holds the proposer (issue 31, item 4)

WIDE_DIMS = {"num_layers": 256, "hidden_size": 384, "num_heads": 12, "ffn_size": 1536,
             "total_parameters": 22_713_216}


def _hostile(kind: str, optimizer: str) -> StudySpec:
    """The issue's hostile study: the largest budget and ready queue on a 256-layer space."""
    return StudySpec.model_validate({
        "name": f"hostile-{kind}", "backbone": "b", "task": "synthetic",
        "backbone_dims": WIDE_DIMS, "search_space": {"kind": kind},
        "budget": {"total_trials": 100_000, "initial_trials": 100_000,
                   "max_parallel": 10_000},
        "optimizer": {"name": optimizer}})


def _ready(database: Database, study_id: int) -> int:
    with database.read_session() as session:
        return repo.trial_counts(session, study_id)["ready"]


def test_hostile_studies_do_not_delay_a_normal_studys_first_trial(database_url: str) -> None:
    """Two hostile studies created first (one the sampler soon exhausts) hold the proposer
    for a time slice each at most: a normal study created after them has its first trials
    within a few seconds (before: the first pass alone took tens of seconds)."""
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=4)
    proposer = Proposer(database, poll_seconds=0.1, min_interval=0.05, time_budget=0.5)
    try:
        with database.session() as session:
            hostile = [repo.create_study(session, _hostile("autopeft", "sobol")).id,
                       repo.create_study(session, _hostile("design_space", "random")).id]
            normal = repo.create_study(session, _spec()).id
        started = time.monotonic()
        proposer.start()
        while _ready(database, normal) == 0 and time.monotonic() - started < 30:
            time.sleep(0.05)
        waited = time.monotonic() - started
        assert _ready(database, normal) == 4
        assert waited < 4.0, f"the normal study waited {waited:.1f} s"
        assert _ready(database, hostile[0]) > 0  # the hostile ones got their slices too
    finally:
        proposer.stop()
        database.dispose()


def _sampler_factory(max_draws: int) -> Callable[[StudySpec], Optimizer]:
    """Sobol with a draw limit a test can reach."""
    return lambda spec: SobolOptimizer(spec.space, seed=spec.optimizer.seed,
                                       max_draws=max_draws)


def test_an_exhausted_sampler_queues_what_it_found_and_the_study_ends_exhausted(
        database_url: str) -> None:
    """The points found before the end are queued (not lost with an error, as before), the
    sampler is not asked again (no failure, no backoff), and a study with nothing left to
    run ends with an ``exhausted:`` reason."""
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    try:
        with database.session() as session:
            some = repo.create_study(session, _spec(total=12, parallel=12)).id
            none = repo.create_study(session, _spec(total=12, parallel=12)).id
        Proposer(database, optimizer_factory=_sampler_factory(4)).fill(some)
        assert Proposer(database, optimizer_factory=_sampler_factory(0)).fill(none) == 0
        with database.session() as session:
            found, still = repo.trial_counts(session, some)["ready"], repo.get_study(session, some)
            ended = repo.get_study(session, none)
        assert 0 < found <= 4
        assert (still.state, still.reason) == ("running", None)
        assert ended.state == "failed" and ended.reason.startswith("exhausted: sobol: only 0")
    finally:
        database.dispose()


def test_a_yielding_study_goes_to_the_back_of_the_round_robin(database_url: str) -> None:
    """A study that used up its slice is served after the others in the next pass."""
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=2)
    proposer = Proposer(database, time_budget=0.2)
    try:
        with database.session() as session:
            big = repo.create_study(session, _hostile("autopeft", "sobol")).id
            small = repo.create_study(session, _spec()).id
        proposer.step()
        assert list(proposer._yielded) == [big]
        assert proposer._order([big, small]) == [small, big]
    finally:
        database.dispose()

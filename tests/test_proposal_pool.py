"""The proposer's process pool: fits run in child processes, one study's long fit never
holds up another study's proposals, and failed or dead fits are a study's failed pass."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from autopeft_service.domain.study import StudySpec
from autopeft_service.proposal_pool import ProposalPool
from autopeft_service.proposer import Proposer
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.storage.migrate import upgrade_to_head
from autopeft_service.testing.optimizers import scripted_fit_factory


def _spec(name: str, total: int = 8, parallel: int = 2) -> StudySpec:
    return StudySpec.model_validate({
        "name": name, "backbone": "b", "task": "synthetic",
        "search_space": {"num_layers": 6, "hidden_size": 384},
        "budget": {"total_trials": total, "initial_trials": 2, "max_parallel": parallel},
        "optimizer": {"name": "sobol"}})


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    upgrade_to_head(database_url)
    database = Database(database_url, pool_size=4)
    yield database
    database.dispose()


@pytest.fixture
def proposer(database: Database) -> Iterator[Proposer]:
    proposer = Proposer(database, poll_seconds=0.1, min_interval=0.0,
                        optimizer_factory=scripted_fit_factory,
                        pool=ProposalPool(1, scripted_fit_factory))
    proposer.start()
    yield proposer
    proposer.stop()


def _create(database: Database, spec: StudySpec) -> int:
    with database.session() as session:
        return repo.create_study(session, spec).id


def _counts(database: Database, study_id: int) -> dict[str, int]:
    with database.session() as session:
        return repo.trial_counts(session, study_id)


def _complete_one(database: Database, study_id: int) -> None:
    """One of the study's ready trials completes (as if leased, trained and reported)."""
    with database.session() as session:
        trial = repo.trials_in_states(session, study_id, ["ready"])[0]
        trial.state, trial.objective, trial.param_share = "completed", 0.8, 1.0
        trial.worker, trial.leased_at, trial.finished_at = "w", time.time(), time.time()


def _wait(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_new_studys_first_trials_are_ready_within_2_s_while_a_60_s_fit_runs(
        database: Database, proposer: Proposer) -> None:
    slow = _create(database, _spec("slow-60"))
    _wait(lambda: _counts(database, slow)["ready"] == 2, 30, "the slow study's Sobol trials")
    _complete_one(database, slow)  # now it needs a model: a 60 s fit starts in the pool
    proposer.wake()
    _wait(lambda: slow in proposer._inflight, 10, "the slow study's fit")
    time.sleep(1.0)  # the fit is running (the child sleeps 60 s)
    fresh = _create(database, _spec("fresh"))
    proposer.wake()
    took = _wait(lambda: _counts(database, fresh)["ready"] == 2, 2.0,
                 "the new study's first trials")
    assert took < 2.0
    assert slow in proposer._inflight and not proposer._inflight[slow].future.done()
    assert _counts(database, slow)["ready"] == 1  # its refill waits for its own fit only


def test_a_fit_in_the_pool_queues_its_trials_when_it_ends(
        database: Database, proposer: Proposer) -> None:
    study = _create(database, _spec("slow-1.5"))
    _wait(lambda: _counts(database, study)["ready"] == 2, 30, "Sobol trials")
    _complete_one(database, study)
    proposer.wake()
    _wait(lambda: _counts(database, study)["ready"] == 2, 60, "the fitted trial")
    with database.session() as session:
        generators = [t.generator for t in repo.trials_in_states(session, study, ["ready"])]
    assert "scripted-fit" in generators


@pytest.mark.parametrize("behaviour", ["raise", "die"])
def test_a_failed_or_dead_fit_is_a_failed_pass_and_the_pool_goes_on(
        database: Database, proposer: Proposer, behaviour: str) -> None:
    broken = _create(database, _spec(behaviour))
    _wait(lambda: _counts(database, broken)["ready"] == 2, 30, "Sobol trials")
    _complete_one(database, broken)
    proposer.wake()

    def failed() -> bool:
        with database.session() as session:
            return (repo.get_study(session, broken).proposer_failures or 0) >= 1

    _wait(failed, 60, "the failure record")
    with database.session() as session:
        reason = repo.get_study(session, broken).reason or ""
    assert ("scripted fit failure" in reason if behaviour == "raise"
            else "BrokenProcessPool" in reason or "terminated abruptly" in reason), reason
    # the pool still serves: another study's fit runs and queues its trial
    other = _create(database, _spec("slow-0"))
    _wait(lambda: _counts(database, other)["ready"] == 2, 30, "Sobol trials")
    _complete_one(database, other)
    proposer.wake()
    _wait(lambda: _counts(database, other)["ready"] == 2, 60, "a fit after the failure")


def test_stopping_terminates_a_running_fit(database: Database) -> None:
    pool = ProposalPool(1, scripted_fit_factory)
    proposer = Proposer(database, poll_seconds=0.1, optimizer_factory=scripted_fit_factory,
                        pool=pool)
    proposer.start()
    study = _create(database, _spec("slow-600"))
    _wait(lambda: _counts(database, study)["ready"] == 2, 30, "Sobol trials")
    _complete_one(database, study)
    proposer.wake()
    _wait(lambda: study in proposer._inflight, 10, "the fit")
    children = list(pool._executor._processes.values())  # type: ignore[union-attr]
    assert children and all(child.is_alive() for child in children)
    started = time.monotonic()
    proposer.stop()
    assert time.monotonic() - started < 15
    assert not any(child.is_alive() for child in children)
    assert all(child.pid != os.getpid() for child in children)

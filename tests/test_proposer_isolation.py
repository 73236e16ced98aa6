"""One study never stops the others: a failing optimiser is recorded, backed off and ended;
a study whose trials all fail alike ends with the reason (real database, real workers)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import History, Optimizer, Suggestion
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.proposer import Proposer
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.storage.migrate import upgrade_to_head
from autopeft_service.testing.server import WORKER_TOKEN, ServerThread
from tests.api.conftest import CLIENT, create_study, make_server  # noqa: F401 - fixture


def _spec(name: str) -> StudySpec:
    return StudySpec.model_validate({
        "name": name, "backbone": "b", "task": "synthetic",
        "search_space": {"num_layers": 6, "hidden_size": 384},
        "budget": {"total_trials": 8, "initial_trials": 8, "max_parallel": 2,
                   "max_attempts": 1, "stop_after_failures": 2},
        "optimizer": {"name": "sobol"}})


class Broken:
    """An optimiser that fails ``failures`` times, then proposes like Sobol."""

    name = "broken"

    def __init__(self, spec: StudySpec, failures: int) -> None:
        self.inner = make_optimizer(spec)
        self.failures = failures
        self.calls = 0

    def suggest(self, n: int, history: History) -> list[Suggestion]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"model fit exploded (call {self.calls})")
        return self.inner.suggest(n, history)


@pytest.fixture
def database(database_url: str) -> Database:
    upgrade_to_head(database_url)
    made = Database(database_url, pool_size=4)
    yield made
    made.dispose()


def _study(database: Database, name: str) -> int:
    with database.session() as session:
        return repo.create_study(session, _spec(name)).id


def _row(database: Database, study_id: int):  # type: ignore[no-untyped-def]
    with database.session() as session:
        return repo.get_study(session, study_id)


def _proposer(database: Database, broken: dict[str, Broken],
              **backoff: float) -> Proposer:
    def factory(spec: StudySpec) -> Optimizer:
        return broken.get(spec.name) or make_optimizer(spec)

    return Proposer(database, optimizer_factory=factory, **backoff)  # type: ignore[arg-type]


def test_a_failing_study_is_backed_off_marked_and_ended_while_others_go_on(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    failing = _study(database, "failing")
    healthy = _study(database, "healthy")
    broken = {"failing": Broken(_spec("failing"), failures=100)}
    proposer = _proposer(database, broken, retry_seconds=0.3, max_retry_seconds=0.3,
                         max_failures=3)
    with caplog.at_level(logging.WARNING, logger="autopeft_service.proposer"):
        assert proposer.step() == 2  # the healthy study got its two trials
        row = _row(database, failing)
        assert row.state == "running" and row.proposer_failures == 1
        assert "model fit exploded" in row.reason and "next try in 0.3 s" in row.reason
        for _ in range(5):  # backed off: not retried on every pass
            proposer.step()
        assert broken["failing"].calls == 1
        for _ in range(2):
            time.sleep(0.35)
            proposer.step()
    row = _row(database, failing)
    assert row.state == "failed" and broken["failing"].calls == 3
    assert row.reason.startswith("the optimiser failed 3 times in a row")
    tracebacks = [r for r in caplog.records if r.exc_info and "study %s" in r.msg]
    assert len(tracebacks) == 1  # the traceback once; later failures in one line
    with database.session() as session:
        assert repo.trial_counts(session, healthy)["ready"] == 2


def test_a_study_that_recovers_is_cleared(database: Database) -> None:
    study = _study(database, "flaky")
    broken = {"flaky": Broken(_spec("flaky"), failures=1)}
    proposer = _proposer(database, broken, retry_seconds=0.1)
    assert proposer.step() == 0
    assert _row(database, study).proposer_failures == 1
    time.sleep(0.15)
    assert proposer.step() == 2
    row = _row(database, study)
    assert (row.state, row.proposer_failures, row.reason) == ("running", 0, None)


def test_trials_failing_for_one_reason_end_the_study(database: Database) -> None:
    study = _study(database, "doomed")
    other = _study(database, "fine")
    proposer = Proposer(database)
    proposer.step()
    for _ in range(2):
        with database.session() as session:
            lease = repo.lease_trial(session, "w", 60)
            assert lease is not None and lease.study_id == study
            repo.fail_trial(session, lease.trial_id, lease.token,
                            "ModelError: no backbone at /nowhere", max_attempts=1)
    proposer.step()
    row = _row(database, study)
    assert row.state == "failed"
    assert row.reason == ("2 trials failed for the same reason and none completed: "
                          "ModelError: no backbone at /nowhere")
    assert _row(database, other).state == "running"


def test_different_failure_reasons_do_not_end_the_study(database: Database) -> None:
    study = _study(database, "unlucky")
    proposer = Proposer(database)
    proposer.step()
    for reason in ("out of memory", "timeout after 10 s"):
        with database.session() as session:
            lease = repo.lease_trial(session, "w", 60)
            repo.fail_trial(session, lease.trial_id, lease.token, reason, max_attempts=1)
    proposer.step()
    assert _row(database, study).state == "running"


def test_a_backbone_no_worker_has_ends_the_study_with_the_reason(
        make_server: Callable[..., ServerThread]) -> None:  # noqa: F811 - the fixture
    """Real workers (the trial runner, in threads) on a backbone path that does not exist."""
    from workers.client import ServerClient
    from workers.trial import TrialRunner
    from workers.worker import Worker

    server = make_server()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, backbone="/nonexistent/backbone", budget={
            "total_trials": 12, "initial_trials": 4, "max_parallel": 2, "max_attempts": 2,
            "stop_after_failures": 3})
        stop = threading.Event()
        clients = [ServerClient(server.base_url, WORKER_TOKEN, f"w{i}", stop=stop)
                   for i in range(2)]
        workers = [Worker(client, TrialRunner()) for client in clients]
        threads = [threading.Thread(target=w.run, kwargs={"idle_exit": 30}, daemon=True)
                   for w in workers]
        for thread in threads:
            thread.start()
        try:
            end = time.monotonic() + 60
            while (out := http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json())[
                    "state"] == "running":
                assert time.monotonic() < end, out
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            for client in clients:
                client.close()
    assert out["state"] == "failed"
    assert out["reason"].startswith("3 trials failed for the same reason and none completed")
    assert "/nonexistent/backbone" in out["reason"]
    assert out["counts"]["failed"] + out["counts"]["cancelled"] < 12  # budget not burnt


def _fail_ready_trials(database: Database, reasons: list[str]) -> None:
    """Lease and fail one trial per reason (one attempt each)."""
    for reason in reasons:
        with database.session() as session:
            lease = repo.lease_trial(session, "w", 60)
            assert lease is not None
            repo.fail_trial(session, lease.trial_id, lease.token, reason, max_attempts=1)


def _small_study(database: Database, name: str, total: int, stop_after: int) -> int:
    spec = _spec(name).model_copy(update={"budget": _spec(name).budget.model_copy(update={
        "total_trials": total, "initial_trials": total, "max_parallel": total,
        "stop_after_failures": stop_after})})
    with database.session() as session:
        return repo.create_study(session, spec).id


def test_a_budget_equal_to_stop_after_failures_ends_failed_with_the_reason(
        database: Database) -> None:
    """total_trials 3, stop_after_failures 3, all three failed alike: failed, not completed
    (the budget check used to come first and complete it with no reason)."""
    study = _small_study(database, "spent", total=3, stop_after=3)
    proposer = Proposer(database)
    proposer.step()
    _fail_ready_trials(database, ["ModelError: no backbone at /nowhere"] * 3)
    proposer.step()
    row = _row(database, study)
    assert row.state == "failed"
    assert row.reason == ("3 trials failed for the same reason and none completed: "
                          "ModelError: no backbone at /nowhere")


def test_a_budget_spent_on_failures_of_different_reasons_ends_failed(
        database: Database) -> None:
    study = _small_study(database, "all-failed", total=2, stop_after=0)
    proposer = Proposer(database)
    proposer.step()
    _fail_ready_trials(database, ["out of memory", "timeout after 10 s"])
    proposer.step()
    row = _row(database, study)
    assert row.state == "failed"
    assert row.reason.startswith("all 2 trials of the budget failed and none completed")


def test_the_failure_count_and_the_reason_agree_when_a_study_fails(
        database: Database) -> None:
    failing = _study(database, "failing")
    broken = {"failing": Broken(_spec("failing"), failures=100)}
    proposer = _proposer(database, broken, retry_seconds=0.01, max_retry_seconds=0.01,
                         max_failures=4)
    for _ in range(4):
        time.sleep(0.02)
        proposer.step()
    row = _row(database, failing)
    assert row.state == "failed"
    assert row.proposer_failures == 4
    assert row.reason.startswith("the optimiser failed 4 times in a row")

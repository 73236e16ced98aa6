"""Worker protocol: lease, long-poll, heartbeat, expiry, idempotent and stale reports."""

import time

import httpx
import pytest

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.protocol import LeaseOut, ReportOut
from autopeft_service.domain.trial import TrialResult
from autopeft_service.testing.server import WORKER_TOKEN, ServerThread
from tests.api.conftest import CLIENT, WORKER, create_study
from tests.api.test_studies import _result
from workers import fake_worker
from workers.client import ServerClient
from workers.fake_worker import FakeWorker, fake_result


def _lease(http: httpx.Client, worker: str = "w", wait: float | None = 2.0,
           deadline: float = 20.0) -> dict:
    """A lease, asking again on 204 as a worker does (the test server long-polls only 0.5 s,
    and a loaded machine can take longer to propose a new study's first trials)."""
    end = time.monotonic() + deadline
    while True:
        response = http.post("/v1/leases", json={"worker": worker, "wait_seconds": wait},
                             headers=WORKER)
        if response.status_code != 204 or time.monotonic() > end:
            assert response.status_code == 200, response.text
            return response.json()


def _wait_for_state(http: httpx.Client, study_id: int, state: str, timeout: float = 5) -> dict:
    """The study once it reaches ``state`` (the proposer completes studies after reports)."""
    end = time.monotonic() + timeout
    while True:
        got = http.get(f"/v1/studies/{study_id}", headers=CLIENT).json()
        if got["state"] == state or time.monotonic() > end:
            assert got["state"] == state, got
            return got
        time.sleep(0.05)


def _trial(http: httpx.Client, study_id: int, trial_id: int) -> dict:
    trials = http.get(f"/v1/studies/{study_id}/trials", params={"limit": 500},
                      headers=CLIENT).json()["items"]
    return next(t for t in trials if t["id"] == trial_id)


def test_a_replicates_lease_carries_the_study_seed_plus_its_number(
        http: httpx.Client, server: ServerThread) -> None:
    """A replicate trains its configuration again with another seed: the lease's seed is
    the study's plus the replicate's number (the first trial keeps the study's seed)."""
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    study = create_study(http, seed=5, budget={"total_trials": 6, "initial_trials": 1,
                                               "max_parallel": 1})
    first = _lease(http)
    assert first["seed"] == 5
    database = Database(server.settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            again = repo.Proposal(first["params"], first["config"], "test", replicate=True)
            rows = repo.add_trials(session, study["id"], [again, again], max_new=2)
            assert [row.replicate for row in rows] == [1, 2]
            ids = {row.id for row in rows}
    finally:
        database.dispose()
    # the proposer keeps one new (Sobol) trial ready too: lease until both replicates came
    leases = [_lease(http) for _ in range(3)]
    replicates = [lease for lease in leases if lease["trial_id"] in ids]
    others = [lease for lease in leases if lease["trial_id"] not in ids]
    assert sorted(lease["seed"] for lease in replicates) == [6, 7]
    assert all(lease["params"] == first["params"] for lease in replicates)
    assert all(lease["seed"] == 5 for lease in others)
    listed = {t["id"]: t["replicate"] for t in http.get(
        f"/v1/studies/{study['id']}/trials", headers=CLIENT, params={"limit": 50}
    ).json()["items"]}
    assert sorted(listed[i] for i in ids) == [1, 2] and listed[first["trial_id"]] == 0


def test_a_replicates_seed_wraps_within_the_seeds_a_result_may_carry(
        http: httpx.Client, server: ServerThread) -> None:
    """Study seed 2**32 - 1 (the largest): its first replicate trains with seed 0, not
    2**32, which its result could not report."""
    from autopeft_service.domain.trial import MAX_SEED
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    study = create_study(http, seed=MAX_SEED, budget={"total_trials": 6, "initial_trials": 1,
                                                      "max_parallel": 1})
    first = _lease(http)
    database = Database(server.settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            [row] = repo.add_trials(session, study["id"], [repo.Proposal(
                first["params"], first["config"], "test", replicate=True)], max_new=1)
            replicate_id = row.id
    finally:
        database.dispose()
    leases = [_lease(http) for _ in range(2)]
    [replicate] = [lease for lease in leases if lease["trial_id"] == replicate_id]
    assert first["seed"] == MAX_SEED and replicate["seed"] == 0
    report = http.post(f"/v1/trials/{replicate_id}/result", headers=WORKER, json={
        "token": replicate["token"], "result": {**_result(replicate), "seed": 0}})
    assert report.status_code == 200, report.text


def test_lease_carries_everything_to_train(http: httpx.Client) -> None:
    study = create_study(http, seed=5)
    lease = _lease(http)
    assert lease["study_id"] == study["id"] and lease["attempt"] == 1 and lease["seed"] == 5
    assert lease["backbone"] == "minilm" and lease["task"] == "synthetic"
    config = PeftConfig.model_validate(lease["config"])
    assert config.num_layers == 6 and config.has_modules
    assert lease["deadline"] > time.time() - 5


def test_lease_answer_is_a_lease_out_field_for_field(http: httpx.Client) -> None:
    """The route builds a LeaseOut: every field, in its order, and nothing the model would
    change (the stored JSON goes out as it was stored)."""
    study = create_study(http)
    lease = _lease(http)
    assert list(lease) == list(LeaseOut.model_fields)
    assert LeaseOut.model_validate(lease).model_dump(mode="json") == lease
    stored = _trial(http, study["id"], lease["trial_id"])
    assert (lease["params"], lease["config"]) == (stored["params"], stored["config"])
    spec = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["spec"]
    assert {name: lease[name] for name in ("training", "early_stopping", "backbone_dims")} == \
        {name: spec[name] for name in ("training", "early_stopping", "backbone_dims")}


def test_the_worker_client_reads_typed_lease_and_report_answers(
        server: ServerThread, http: httpx.Client) -> None:
    create_study(http, budget={"total_trials": 3, "initial_trials": 3, "max_parallel": 3,
                               "max_attempts": 2})
    with ServerClient(server.base_url, WORKER_TOKEN, "typed") as client:
        first = client.lease(wait_seconds=2.0)
        assert isinstance(first, LeaseOut) and first.attempt == 1
        requeued = client.report_failure(first.trial_id, first.token, "out of memory")
        assert requeued == ReportOut(trial_id=first.trial_id, state="ready", attempt=1,
                                     failure_reason="out of memory", duplicate=False)
        lease = client.lease(wait_seconds=2.0)
        assert lease is not None
        result = fake_result(lease, MINILM_DIMS, 1.0)
        done = client.report_result(lease.trial_id, lease.token, result)
        assert (done.trial_id, done.state, done.duplicate) == (lease.trial_id, "completed", False)
        assert client.report_result(lease.trial_id, lease.token, result).duplicate is True


def test_a_result_recorded_as_a_failure_is_not_counted_completed(
        server: ServerThread, http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report answer's state decides: counts that differ from the server's fail the
    trial, and the fake worker does not count it as completed."""
    study = create_study(http, budget={"total_trials": 1, "initial_trials": 1,
                                       "max_parallel": 1, "max_attempts": 1})

    def miscounted(lease: LeaseOut, dims: BackboneDims, seconds: float) -> TrialResult:
        result = fake_result(lease, dims, seconds)
        return result.model_copy(update={"trainable_parameters": result.trainable_parameters + 1})

    monkeypatch.setattr(fake_worker, "fake_result", miscounted)
    leases: list[LeaseOut] = []
    with ServerClient(server.base_url, WORKER_TOKEN, "miscounting") as client:
        worker = FakeWorker(client, on_lease=leases.append)
        assert worker.run_one(wait_seconds=2.0) is True
    assert worker.completed == 0
    assert _trial(http, study["id"], leases[0].trial_id)["state"] == "failed"


def test_empty_queue_answers_204_with_retry_after_after_long_poll(http: httpx.Client) -> None:
    start = time.monotonic()
    response = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 0.4},
                         headers=WORKER)
    assert response.status_code == 204 and response.headers["Retry-After"] == "2"
    assert time.monotonic() - start >= 0.35


def test_long_poll_returns_as_soon_as_a_trial_is_proposed(make_server) -> None:
    import threading

    server = make_server(long_poll_seconds=10)
    box: dict = {}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        def poll() -> None:
            start = time.monotonic()
            box["response"] = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 8},
                                        headers=WORKER)
            box["seconds"] = time.monotonic() - start

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.3)
        create_study(http)
        waiter.join()
    assert box["response"].status_code == 200
    assert box["seconds"] < 4  # woken by the proposer's signal, not by the 8 s timeout


def test_heartbeat_extends_and_records_progress(http: httpx.Client) -> None:
    study = create_study(http)
    lease = _lease(http)
    time.sleep(0.05)
    beat = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat",
                     json={"token": lease["token"], "progress": {"step": 3, "loss": 0.5}},
                     headers=WORKER).json()
    assert beat["stop"] is False and beat["deadline"] > lease["deadline"]
    assert _trial(http, study["id"], lease["trial_id"])["progress"] == {"step": 3, "loss": 0.5}
    wrong = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", json={"token": "nope"},
                      headers=WORKER)
    assert wrong.status_code == 409


def test_expired_lease_is_requeued_and_stale_report_is_409(make_server) -> None:
    server = make_server(lease_seconds=0.5)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, budget={"total_trials": 1, "initial_trials": 1,
                                           "max_parallel": 1, "max_attempts": 3})
        first = _lease(http, "slow")
        time.sleep(1.0)  # lease expires; the sweeper requeues it
        second = _lease(http, "fast")
        assert second["trial_id"] == first["trial_id"] and second["attempt"] == 2
        assert second["token"] != first["token"]
        stale = http.post(f"/v1/trials/{first['trial_id']}/result",
                          json={"token": first["token"], "result": _result(first)}, headers=WORKER)
        assert stale.status_code == 409
        done = http.post(f"/v1/trials/{second['trial_id']}/result",
                         json={"token": second["token"], "result": _result(second, 0.7)},
                         headers=WORKER)
        assert done.status_code == 200 and done.json()["duplicate"] is False
        got = _wait_for_state(http, study["id"], "completed")
        assert got["counts"]["completed"] == 1


def test_expired_lease_not_yet_released_still_accepts_its_result(make_server) -> None:
    server = make_server(lease_seconds=0.3)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, budget={"total_trials": 1, "initial_trials": 1,
                                           "max_parallel": 1, "max_attempts": 3})
        lease = _lease(http)
        time.sleep(0.8)  # expired and swept back to ready, nobody leased it again
        assert _trial(http, study["id"], lease["trial_id"])["state"] == "ready"
        late = http.post(f"/v1/trials/{lease['trial_id']}/result",
                         json={"token": lease["token"], "result": _result(lease)}, headers=WORKER)
        assert late.status_code == 200
        assert _trial(http, study["id"], lease["trial_id"])["state"] == "completed"


def test_duplicate_report_is_a_no_op(http: httpx.Client) -> None:
    study = create_study(http)
    lease = _lease(http)
    body = {"token": lease["token"], "result": _result(lease, 0.81)}
    first = http.post(f"/v1/trials/{lease['trial_id']}/result", json=body, headers=WORKER)
    again = http.post(f"/v1/trials/{lease['trial_id']}/result",
                      json={"token": lease["token"], "result": _result(lease, 0.1)}, headers=WORKER)
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    trial = _trial(http, study["id"], lease["trial_id"])
    # The share is the server's, computed at proposal (deployed count on backbone_dims).
    expected = count_parameters(PeftConfig.model_validate(lease["config"]), MINILM_DIMS)
    assert (trial["objective"], trial["param_share"]) == (0.81, expected.deployed_percent)
    counts = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["counts"]
    assert counts["completed"] == 1


def test_failures_requeue_until_max_attempts_then_fail(http: httpx.Client) -> None:
    study = create_study(http, budget={"total_trials": 1, "initial_trials": 1,
                                       "max_parallel": 1, "max_attempts": 2})
    first = _lease(http)
    out = http.post(f"/v1/trials/{first['trial_id']}/failure",
                    json={"token": first["token"], "reason": "CUDA out of memory"},
                    headers=WORKER).json()
    assert out["state"] == "ready"
    second = _lease(http)
    assert second["trial_id"] == first["trial_id"] and second["attempt"] == 2
    out = http.post(f"/v1/trials/{second['trial_id']}/failure",
                    json={"token": second["token"], "reason": "loss became nan"},
                    headers=WORKER).json()
    assert out["state"] == "failed" and out["failure_reason"] == \
        "loss became nan"
    # The whole budget failed: the study ends failed with the reason, not completed.
    got = _wait_for_state(http, study["id"], "failed")
    assert got["counts"]["failed"] == 1
    assert got["reason"] == ("all 1 trials of the budget failed and none completed; the most "
                             "frequent reason: loss became nan")


def test_preempted_trial_is_requeued_without_using_an_attempt(http: httpx.Client) -> None:
    create_study(http, budget={"total_trials": 1, "initial_trials": 1, "max_parallel": 1,
                               "max_attempts": 1})
    first = _lease(http)
    out = http.post(f"/v1/trials/{first['trial_id']}/failure",
                    json={"token": first["token"], "reason": "SIGTERM", "preempted": True},
                    headers=WORKER).json()
    assert out["state"] == "ready" and out["attempt"] == 0
    again = _lease(http)
    assert again["trial_id"] == first["trial_id"] and again["attempt"] == 1


def test_non_retryable_failure_fails_at_once(http: httpx.Client) -> None:
    create_study(http, budget={"total_trials": 2, "initial_trials": 1, "max_parallel": 1,
                               "max_attempts": 3})
    lease = _lease(http)
    out = http.post(f"/v1/trials/{lease['trial_id']}/failure",
                    json={"token": lease["token"], "reason": "bad config", "retry": False},
                    headers=WORKER).json()
    assert out["state"] == "failed"

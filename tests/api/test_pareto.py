"""The Pareto endpoint equals a brute-force non-dominated filter of the completed trials."""

import threading
import time

import httpx

from autopeft_service.testing.server import WORKER_TOKEN
from tests.api.conftest import CLIENT, WORKER, create_study
from workers.client import ServerClient
from workers.fake_worker import FakeWorker


def test_pareto_endpoint_matches_brute_force(server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = create_study(http, budget={"total_trials": 40, "initial_trials": 40,
                                           "max_parallel": 8})
        workers = [FakeWorker(ServerClient(server.base_url, WORKER_TOKEN, f"w{i}"))
                   for i in range(4)]
        threads = [threading.Thread(target=w.run, kwargs={"idle_rounds": 2}) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        trials = http.get(f"/v1/studies/{study['id']}/trials",
                          params={"state": "completed", "limit": 500}, headers=CLIENT).json()
        pareto = http.get(f"/v1/studies/{study['id']}/pareto", headers=CLIENT).json()
        got = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()
    completed = trials["items"]
    assert len(completed) == 40

    def dominated(t: dict) -> bool:
        return any(o["objective"] >= t["objective"] and o["param_share"] <= t["param_share"]
                   and (o["objective"] > t["objective"] or o["param_share"] < t["param_share"])
                   for o in completed)

    brute = {t["id"] for t in completed if not dominated(t)}
    assert {t["id"] for t in pareto["trials"]} == brute
    assert 1 < len(brute) < 40
    shares = [t["param_share"] for t in pareto["trials"]]
    assert shares == sorted(shares)
    assert got["pareto_size"] == len(brute) and got["hypervolume"] == pareto["hypervolume"] > 0
    assert got["best"]["objective"] == max(t["objective"] for t in completed)


def _fitted_model_front(http: httpx.Client, url: str, timeout: float = 90) -> dict:
    """The model front once its fit ended: the fit runs in a spawned child process, whose
    start (torch, BoTorch) may outlast the server's wait, answered with a ``note``."""
    end = time.monotonic() + timeout
    while True:
        model = http.get(url, params={"front": "model"}, headers=CLIENT).json()
        if model["note"] is None or time.monotonic() > end:
            return model
        assert "fitted" in model["note"], model["note"]  # a fit running, not one failed
        time.sleep(0.2)


def test_model_front_carries_predictions_and_falls_back_with_a_note(http) -> None:
    from tests.api.conftest import report_result, take_lease

    study = create_study(http, budget={"total_trials": 6, "initial_trials": 6,
                                       "max_parallel": 6})
    url = f"/v1/studies/{study['id']}/pareto"
    for score in (0.6, 0.7):
        report_result(http, take_lease(http), score)
    few = http.get(url, params={"front": "model"}, headers=CLIENT).json()
    assert few["front"] == "observed" and "at least 3 observations" in few["note"]
    assert few["model_status"] == "unavailable"
    for score in (0.65, 0.8, 0.75, 0.72):
        report_result(http, take_lease(http), score)
    model = _fitted_model_front(http, url)
    assert model["front"] == "model" and model["note"] is None and model["trials"]
    assert model["model_status"] == "fresh"
    for trial in model["trials"]:
        predicted = trial["predicted"]
        assert predicted["level"] == 0.9
        assert predicted["low"] <= predicted["mean"] <= predicted["high"]
    observed = http.get(url, headers=CLIENT).json()
    assert observed["front"] == "observed"
    assert all(t["predicted"] is None for t in observed["trials"])
    bad = http.get(url, params={"front": "lucky"}, headers=CLIENT)
    assert bad.status_code == 422 and "front" in bad.text


def test_a_configurations_replicates_appear_once_on_the_model_front(
        http: httpx.Client, server) -> None:
    """Three replicates of one configuration share its prediction: the model front lists
    the configuration once, as its first trial (retrain would otherwise train it 4 times)."""
    from autopeft_service.domain.study import StudySpec
    from autopeft_service.optimizers.base import Suggestion
    from autopeft_service.proposer_fidelity import proposal
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database
    from tests.api.conftest import report_result, take_lease

    study = create_study(http, budget={"total_trials": 8, "initial_trials": 4,
                                       "max_parallel": 4})
    leases = [take_lease(http) for _ in range(4)]
    best = leases[0]
    for lease, score in zip(leases, (0.95, 0.6, 0.7, 0.65), strict=True):
        report_result(http, lease, score)
    database = Database(server.settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            spec = StudySpec.model_validate(repo.get_study(session, study["id"]).spec)
            # as the proposer queues one: with the server's share and counts
            again = proposal(spec, Suggestion(best["params"], "test", replicate=True))
            rows = repo.add_trials(session, study["id"], [again] * 3, max_new=3)
            replicate_ids = {row.id for row in rows}
    finally:
        database.dispose()
    done = 0
    while done < 3:
        lease = take_lease(http)
        if lease["trial_id"] in replicate_ids:
            report_result(http, lease, 0.93 + 0.01 * done)
            done += 1
        else:  # the proposer's own trials: fail them out of the way
            assert http.post(f"/v1/trials/{lease['trial_id']}/failure", headers=WORKER, json={
                "token": lease["token"], "reason": "not this test's",
                "retry": False}).status_code == 200
    model = _fitted_model_front(http, f"/v1/studies/{study['id']}/pareto")
    assert model["model_status"] == "fresh", model["note"]
    params = [tuple(sorted(t["params"].items())) for t in model["trials"]]
    assert len(params) == len(set(params))
    ids = {t["id"] for t in model["trials"]}
    assert best["trial_id"] in ids and not ids & replicate_ids
    # the same with predictions made equal by hand (the GP's means of one configuration can
    # differ in their last bits, which would hide all but one replicate by chance)
    from autopeft_service.api.views import _model_front, _score_observations
    from autopeft_service.optimizers.prediction import PredictedScore

    database = Database(server.settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            _observations, rows = _score_observations(session, study["id"], spec)
            same = PredictedScore(mean=0.99, low=0.98, high=1.0, level=0.9)
            predicted = {r.id: same if r.params == best["params"]
                         else PredictedScore(mean=0.5, low=0.4, high=0.6, level=0.9)
                         for r in rows}
            front = _model_front(session, study["id"], spec, rows, predicted, None, "fresh")
    finally:
        database.dispose()
    listed = [t.id for t in front.trials if t.params == best["params"]]
    assert listed == [best["trial_id"]]

"""The Pareto endpoint equals a brute-force non-dominated filter of the completed trials."""

import threading

import httpx

from autopeft_service.testing.server import WORKER_TOKEN
from tests.api.conftest import CLIENT, create_study
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

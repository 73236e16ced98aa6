"""32 concurrent leasing clients: no trial held by two leases, every trial completed once."""

import threading
import time
from collections import Counter, defaultdict

import httpx

from tests.api.conftest import CLIENT, WORKER, create_study
from tests.api.test_studies import _result
from tests.api.test_worker_protocol import _wait_for_state

CLIENTS = 32
TRIALS = 160


def test_concurrent_leases_never_overlap_and_complete_each_trial_once(make_server) -> None:
    server = make_server(lease_seconds=300, long_poll_seconds=1.0)
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        study = create_study(http, budget={"total_trials": TRIALS, "initial_trials": TRIALS,
                                           "max_parallel": 64, "max_attempts": 1})
    holders: dict[int, str] = {}  # trial -> worker holding it right now (as workers see it)
    overlaps: list[tuple[int, str, str]] = []
    completions: Counter[int] = Counter()
    leases_by_trial: defaultdict[int, list[str]] = defaultdict(list)
    lock = threading.Lock()
    errors: list[str] = []

    def work(name: str) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60, headers=WORKER) as http:
            idle = 0
            while idle < 3:
                response = http.post("/v1/leases", json={"worker": name, "wait_seconds": 0.5})
                if response.status_code == 204:
                    idle += 1
                    continue
                if response.status_code != 200:
                    errors.append(f"lease {response.status_code} {response.text[:200]}")
                    return
                idle = 0
                lease = response.json()
                trial = lease["trial_id"]
                with lock:
                    if trial in holders:
                        overlaps.append((trial, holders[trial], name))
                    holders[trial] = name
                    leases_by_trial[trial].append(lease["token"])
                time.sleep(0.002)
                with lock:
                    holders.pop(trial, None)
                done = http.post(f"/v1/trials/{trial}/result",
                                 json={"token": lease["token"], "result": _result(lease)})
                if done.status_code != 200:
                    errors.append(f"result {done.status_code} {done.text[:200]}")
                    return
                if not done.json()["duplicate"]:
                    with lock:
                        completions[trial] += 1

    threads = [threading.Thread(target=work, args=(f"worker-{i}",)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors[:5]
    assert overlaps == []
    assert all(len(tokens) == 1 for tokens in leases_by_trial.values())
    assert len(completions) == TRIALS and set(completions.values()) == {1}
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        got = _wait_for_state(http, study["id"], "completed")
        trials = http.get(f"/v1/studies/{study['id']}/trials", params={"limit": 500},
                          headers=CLIENT).json()["items"]
    assert got["state"] == "completed" and got["counts"]["completed"] == TRIALS
    assert sorted(t["number"] for t in trials) == list(range(TRIALS))
    assert {t["id"] for t in trials} == set(completions)

"""Fair share of the shared pool and per-tenant quotas over real HTTP, on SQLite and
PostgreSQL (issue 31, item 3): no tenant's queue starves another's, and a quota answers
429 (creation) or holds back (leases, the ready queue) until a slot frees."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from autopeft_service.domain.tenancy import Role
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import lease_result, study_spec


class Tenants:
    """A server with tenants ``a`` and ``b`` (a member token each, an admin) and one
    shared-pool worker token."""

    def __init__(self, server: ServerThread, http: httpx.Client) -> None:
        self.server, self.http = server, http
        self.database = Database(server.settings.database_url)
        with self.database.session() as session:
            repo.create_tenant(session, "a")
            repo.create_tenant(session, "b")
            self.tokens = {name: repo.create_token(session, tenant, role, **options)[1]
                           for name, tenant, role, options in (
                               ("a", "a", Role.MEMBER, {}), ("b", "b", Role.MEMBER, {}),
                               ("admin", "a", Role.ADMIN, {}),
                               ("worker", "b", Role.WORKER, {"shared_pool": True}))}

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def study(self, who: str, trials: int) -> httpx.Response:
        return self.http.post("/v1/studies", headers=self.headers(who), json=study_spec(
            budget={"total_trials": trials, "initial_trials": trials,
                    "max_parallel": trials, "max_attempts": 1}))

    def wait_ready(self, who: str, study_id: int, count: int) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            counts = self.http.get(f"/v1/studies/{study_id}",
                                   headers=self.headers(who)).json()["counts"]
            if counts["ready"] >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"study {study_id}: {count} ready trials never appeared")

    def lease(self, worker: str = "w") -> httpx.Response:
        return self.http.post("/v1/leases", json={"worker": worker, "wait_seconds": 0},
                              headers=self.headers("worker"))

    def limits(self, tenant: str, **limits: Any) -> None:
        response = self.http.patch(f"/v1/admin/tenants/{tenant}", json=limits,
                                   headers=self.headers("admin"))
        assert response.status_code == 200, response.text


@pytest.fixture
def tenants(make_server: Callable[..., ServerThread]) -> Iterator[Tenants]:
    server = make_server()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        made = Tenants(server, http)
        yield made
        made.database.dispose()


def test_one_ready_trial_beside_a_long_queue_is_leased_within_two_leases(
        tenants: Tenants) -> None:
    big = tenants.study("a", 40).json()
    tenants.wait_ready("a", big["id"], 40)
    for _ in range(5):  # the busy tenant holds leases already
        assert tenants.lease().json()["study_id"] == big["id"]
    small = tenants.study("b", 1).json()
    tenants.wait_ready("b", small["id"], 1)
    next_two = [tenants.lease().json()["study_id"] for _ in range(2)]
    assert small["id"] in next_two


@pytest.mark.parametrize("weights", [(1, 1), (3, 1)])
def test_saturated_tenants_hold_the_pool_in_proportion_to_their_weights(
        tenants: Tenants, weights: tuple[int, int]) -> None:
    tenants.limits("a", weight=weights[0])
    tenants.limits("b", weight=weights[1])
    owner = {}
    for who in ("a", "b"):
        study = tenants.study(who, 30).json()
        tenants.wait_ready(who, study["id"], 30)
        owner[study["id"]] = who
    held = Counter(owner[tenants.lease(f"w{i}").json()["study_id"]] for i in range(24))
    total = sum(weights)
    assert held == {"a": 24 * weights[0] // total, "b": 24 * weights[1] // total}


def test_parallel_quota_holds_leases_back_until_one_ends(tenants: Tenants) -> None:
    tenants.limits("a", max_parallel_trials=2)
    study = tenants.study("a", 6).json()
    tenants.wait_ready("a", study["id"], 6)
    leases = [tenants.lease().json() for _ in range(2)]
    assert tenants.lease().status_code == 204  # a holds its 2: the pool passes it over
    usage = tenants.http.get("/v1/usage", headers=tenants.headers("a")).json()
    assert [(u["tenant"], u["leased_trials"], u["max_parallel_trials"]) for u in usage] == [
        ("a", 2, 2)]
    done = tenants.http.post(f"/v1/trials/{leases[0]['trial_id']}/result",
                             headers=tenants.headers("worker"),
                             json={"token": leases[0]["token"],
                                   "result": lease_result(leases[0])})
    assert done.status_code == 200, done.text
    assert tenants.lease().status_code == 200


def test_running_studies_quota_is_a_429_then_succeeds_once_one_ends(tenants: Tenants) -> None:
    tenants.limits("a", max_running_studies=1)
    first = tenants.study("a", 2)
    assert first.status_code == 201
    refused = tenants.study("a", 2)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "max_running_studies" in refused.json()["detail"]
    assert tenants.study("b", 2).status_code == 201  # b is not limited by a's quota
    tenants.http.post(f"/v1/studies/{first.json()['id']}/cancel", headers=tenants.headers("a"))
    assert tenants.study("a", 2).status_code == 201


def test_queued_quota_caps_the_tenants_ready_trials(tenants: Tenants) -> None:
    tenants.limits("a", max_queued_trials=3)
    study = tenants.study("a", 10).json()
    tenants.wait_ready("a", study["id"], 3)
    time.sleep(0.5)  # several proposer passes (0.1 s apart)
    usage = tenants.http.get("/v1/usage", headers=tenants.headers("a")).json()[0]
    assert (usage["ready_trials"], usage["max_queued_trials"]) == (3, 3)
    tenants.lease()
    tenants.wait_ready("a", study["id"], 3)  # refilled to the quota, not beyond
    time.sleep(0.5)
    assert tenants.http.get("/v1/usage", headers=tenants.headers("a")).json()[0][
        "ready_trials"] == 3


def test_usage_shows_quotas_to_the_tenant_and_all_to_an_admin_and_in_metrics(
        tenants: Tenants) -> None:
    tenants.limits("b", max_running_studies=4, max_queued_trials=None, weight=2)
    tenants.study("b", 2)
    mine = tenants.http.get("/v1/usage", headers=tenants.headers("b")).json()
    assert [(u["tenant"], u["running_studies"], u["max_running_studies"], u["weight"])
            for u in mine] == [("b", 1, 4, 2.0)]
    everyone = tenants.http.get("/v1/usage", headers=tenants.headers("admin")).json()
    assert [u["tenant"] for u in everyone] == ["default", "a", "b"]
    metrics = tenants.http.get("/metrics").text
    assert 'autopeft_tenant_usage{resource="running_studies",tenant="b"} 1.0' in metrics
    assert 'autopeft_tenant_quota{resource="running_studies",tenant="b"} 4.0' in metrics
    assert 'autopeft_tenant_weight{tenant="b"} 2.0' in metrics
    bad = tenants.http.patch("/v1/admin/tenants/b", json={"max_parallel_trials": -1},
                             headers=tenants.headers("admin"))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "max_parallel_trials"
    assert tenants.http.patch("/v1/admin/tenants/nobody", json={"weight": 1},
                              headers=tenants.headers("admin")).status_code == 404

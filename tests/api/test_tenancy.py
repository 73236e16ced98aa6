"""Tenants and tokens over real HTTP, on SQLite and PostgreSQL: who may read, create,
cancel and lease what (issue 31, items 1-2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select, text, update

from autopeft_service.domain.tenancy import Role
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.storage.models import TokenRow
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import CLIENT, WORKER, lease_result, study_spec


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Fleet:
    """A server with tenants ``a`` and ``b`` and tokens of every kind."""

    server: ServerThread
    http: httpx.Client
    database: Database
    tokens: dict[str, str]

    def token(self, tenant: str, role: Role, **options: Any) -> str:
        with self.database.session() as session:
            return repo.create_token(session, tenant, role, **options)[1]

    def study(self, who: str, **overrides: Any) -> dict[str, Any]:
        response = self.http.post("/v1/studies", json=study_spec(**overrides),
                                  headers=bearer(self.tokens[who]))
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def fleet(make_server: Callable[..., ServerThread]) -> Iterator[Fleet]:
    server = make_server()
    database = Database(server.settings.database_url)
    with database.session() as session:
        repo.create_tenant(session, "a")
        repo.create_tenant(session, "b")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        fleet = Fleet(server, http, database, {})
        fleet.tokens = {
            "a": fleet.token("a", Role.MEMBER), "a_reader": fleet.token("a", Role.READER),
            "b": fleet.token("b", Role.MEMBER), "admin": fleet.token("b", Role.ADMIN),
            "revoked": fleet.token("a", Role.MEMBER), "expired": fleet.token("a", Role.MEMBER),
            "a_worker": fleet.token("a", Role.WORKER),
            "shared_worker": fleet.token("b", Role.WORKER, shared_pool=True)}
        with database.session() as session:
            ids = {row.token_sha256: row.id for row in repo.list_tokens(session)}
            repo.revoke_token(session, ids[repo.token_digest(fleet.tokens["revoked"])])
            session.execute(update(TokenRow).where(
                TokenRow.token_sha256 == repo.token_digest(fleet.tokens["expired"]))
                .values(expires_at=0.0))
        yield fleet
    database.dispose()


#: Every person's route that names a study or trial (method, path template; {id} the
#: study, {trial} its completed trial with an artefact). Cancel last: it ends the study.
STUDY_ROUTES = [("GET", "/v1/studies/{id}"), ("GET", "/v1/studies/{id}/trials"),
                ("GET", "/v1/studies/{id}/pareto"), ("GET", "/v1/studies/{id}/hypervolume"),
                ("GET", "/v1/workers?study_id={id}"), ("GET", "/v1/trials/{trial}/artifact"),
                ("POST", "/v1/studies/{id}/cancel")]
#: Routes that name no study: every person may call them (scoped to the tenant).
OPEN_ROUTES = [("GET", "/v1/studies"), ("GET", "/v1/workers"), ("GET", "/v1/usage")]
#: Caller -> the status each route gives it on tenant a's study.
EXPECTED = {"a": 200, "b": 404, "admin": 200, "revoked": 401, "expired": 401,
            "a_worker": 403}


def _completed_with_artifact(fleet: Fleet) -> tuple[dict[str, Any], int]:
    """Tenant a's study with one completed trial whose artefact is uploaded."""
    import hashlib
    import io
    import zipfile

    study = fleet.study("a")
    worker = bearer(fleet.tokens["a_worker"])
    for _ in range(40):  # until the proposer has queued the study's trials
        lease = fleet.http.post("/v1/leases", json={"worker": "aw", "wait_seconds": 1},
                                headers=worker)
        if lease.status_code == 200:
            break
    held = lease.json()
    assert fleet.http.post(f"/v1/trials/{held['trial_id']}/result", headers=worker, json={
        "token": held["token"], "result": lease_result(held)}).status_code == 200
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", b"{}")
        archive.writestr("weights.safetensors", b"w")
    body = buffer.getvalue()
    uploaded = fleet.http.put(f"/v1/trials/{held['trial_id']}/artifact", content=body,
                              headers={**worker, "X-Lease-Token": held["token"],
                                       "X-Artifact-SHA256": hashlib.sha256(body).hexdigest()})
    assert uploaded.status_code == 200, uploaded.text
    return study, held["trial_id"]


@pytest.mark.parametrize("caller", list(EXPECTED))
def test_cross_tenant_matrix(fleet: Fleet, caller: str) -> None:
    study, trial = _completed_with_artifact(fleet)
    headers = bearer(fleet.tokens[caller])
    for method, template in STUDY_ROUTES:
        response = fleet.http.request(method, template.format(id=study["id"], trial=trial),
                                      headers=headers)
        assert response.status_code == EXPECTED[caller], (method, template, response.text)
        if EXPECTED[caller] == 404:  # another tenant's study reads as a missing one
            missing = fleet.http.request(method, template.format(id=10**6, trial=10**6),
                                         headers=headers)
            assert response.json() == {"detail": missing.json()["detail"].replace(
                str(10**6), str(trial if "trials/" in template else study["id"]))}
    for method, path in OPEN_ROUTES:
        status = {404: 200}.get(EXPECTED[caller], EXPECTED[caller])
        assert fleet.http.request(method, path, headers=headers).status_code == status, path
    admin_status = {"admin": 200, "revoked": 401, "expired": 401}.get(caller, 403)
    assert fleet.http.get("/v1/admin/tenants", headers=headers).status_code == admin_status


def test_a_reader_reads_but_cannot_create_or_cancel(fleet: Fleet) -> None:
    study = fleet.study("a")
    reader = bearer(fleet.tokens["a_reader"])
    assert fleet.http.get(f"/v1/studies/{study['id']}", headers=reader).status_code == 200
    cancel = fleet.http.post(f"/v1/studies/{study['id']}/cancel", headers=reader)
    assert cancel.status_code == 403 and "member" in cancel.json()["detail"]
    create = fleet.http.post("/v1/studies", json=study_spec(), headers=reader)
    assert create.status_code == 403


def test_lists_hold_only_the_callers_tenant_and_admins_see_all(fleet: Fleet) -> None:
    own, other, default = fleet.study("a"), fleet.study("b"), fleet.study("a")
    legacy = fleet.http.post("/v1/studies", json=study_spec(), headers=CLIENT).json()

    def listed(who: str | None) -> set[int]:
        headers = CLIENT if who is None else bearer(fleet.tokens[who])
        page = fleet.http.get("/v1/studies", headers=headers).json()
        assert page["total"] == len(page["items"])
        return {item["id"] for item in page["items"]}

    assert listed("a") == {own["id"], default["id"]}
    assert listed("b") == {other["id"]}
    assert listed(None) == {legacy["id"]}  # the environment's token: the default tenant
    assert listed("admin") == {own["id"], other["id"], default["id"], legacy["id"]}


def test_create_and_cancel_are_audited_with_who_and_when(fleet: Fleet) -> None:
    study = fleet.study("a")
    assert fleet.http.post(f"/v1/studies/{study['id']}/cancel",
                           headers=bearer(fleet.tokens["admin"])).status_code == 200
    audit = fleet.http.get("/v1/admin/audit", headers=bearer(fleet.tokens["admin"])).json()
    assert [(e["action"], e["study_id"], e["tenant"]) for e in audit[:2]] == [
        ("cancel_study", study["id"], "a"), ("create_study", study["id"], "a")]
    assert audit[0]["actor"].startswith("b/admin (token ")
    assert audit[1]["actor"].startswith("a/member (token ")
    assert audit[0]["at"] >= audit[1]["at"] > 0


def test_a_private_pool_leases_only_its_tenants_trials_and_the_shared_pool_any(
        fleet: Fleet) -> None:
    b_study = fleet.study("b", budget={"total_trials": 2, "initial_trials": 2,
                                       "max_parallel": 2, "max_attempts": 1})

    def lease(token: str) -> httpx.Response:
        return fleet.http.post("/v1/leases", json={"worker": token[:12], "wait_seconds": 1},
                               headers=bearer(token))

    # tenant a has nothing ready: its private worker waits even though b's trials are ready
    shared = lease(fleet.tokens["shared_worker"])
    assert shared.status_code == 200 and shared.json()["study_id"] == b_study["id"]
    assert lease(fleet.tokens["a_worker"]).status_code == 204
    a_study = fleet.study("a")
    private = lease(fleet.tokens["a_worker"])
    for _ in range(20):
        if private.status_code == 200:
            break
        private = lease(fleet.tokens["a_worker"])
    assert private.status_code == 200 and private.json()["study_id"] == a_study["id"]
    # the environment's worker token is in the shared pool too
    assert fleet.http.post("/v1/leases", json={"worker": "env", "wait_seconds": 1},
                           headers=WORKER).status_code == 200
    report = fleet.http.post(f"/v1/trials/{private.json()['trial_id']}/result",
                             headers=bearer(fleet.tokens["a_worker"]),
                             json={"token": private.json()["token"],
                                   "result": lease_result(private.json())})
    assert report.status_code == 200, report.text


def test_the_workers_view_is_scoped_to_the_callers_pools(fleet: Fleet) -> None:
    fleet.study("b")
    for _ in range(20):  # until the proposer has queued b's trials
        leased = fleet.http.post("/v1/leases", json={"worker": "shared_worker",
                                                     "wait_seconds": 1},
                                 headers=bearer(fleet.tokens["shared_worker"]))
        if leased.status_code == 200:
            break
    assert leased.status_code == 200
    fleet.http.post("/v1/leases", json={"worker": "a_worker", "wait_seconds": 0},
                    headers=bearer(fleet.tokens["a_worker"]))
    a_only = fleet.token("a", Role.WORKER)
    fleet.http.post("/v1/leases", json={"worker": "a-second", "wait_seconds": 0},
                    headers=bearer(a_only))

    def names(who: str) -> dict[str, dict[str, Any]]:
        items = fleet.http.get("/v1/workers", headers=bearer(fleet.tokens[who])).json()["items"]
        return {item["name"]: item for item in items}

    seen_by_b = names("b")
    assert set(seen_by_b) == {"shared_worker"}  # a's private workers are a's
    assert seen_by_b["shared_worker"]["trials"]  # it holds b's trial, which b sees
    seen_by_a = names("a")
    assert set(seen_by_a) == {"shared_worker", "a_worker", "a-second"}
    assert seen_by_a["shared_worker"]["trials"] == []  # b's trial is not a's to see
    assert seen_by_a["shared_worker"]["other_trials"] == 1
    assert set(names("admin")) == {"shared_worker", "a_worker", "a-second"}


def test_admin_routes_make_tenants_and_tokens_and_revoke_at_once(fleet: Fleet) -> None:
    admin = bearer(fleet.tokens["admin"])
    assert fleet.http.post("/v1/admin/tenants", json={"name": "c"},
                           headers=admin).status_code == 201
    assert fleet.http.post("/v1/admin/tenants", json={"name": "c"},
                           headers=admin).status_code == 409
    bad = fleet.http.post("/v1/admin/tenants", json={"name": "No Spaces"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "name"]
    made = fleet.http.post("/v1/admin/tokens", json={"tenant": "c", "role": "member"},
                           headers=admin)
    assert made.status_code == 201
    token = made.json()["token"]
    assert len(token) >= 32 and "token_sha256" not in made.json()
    unknown = fleet.http.post("/v1/admin/tokens", json={"tenant": "zz", "role": "member"},
                              headers=admin)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == [
        "body", "tenant"]
    assert fleet.http.get("/v1/studies", headers=bearer(token)).status_code == 200
    revoked = fleet.http.post(f"/v1/admin/tokens/{made.json()['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert fleet.http.get("/v1/studies", headers=bearer(token)).status_code == 401
    listed = fleet.http.get("/v1/admin/tokens?tenant=c", headers=admin).json()
    assert [t["id"] for t in listed] == [made.json()["id"]] and "token" not in listed[0]
    for who in ("a", "a_reader", "a_worker"):
        assert fleet.http.get("/v1/admin/tenants",
                              headers=bearer(fleet.tokens[who])).status_code == 403
    assert fleet.http.get("/v1/admin/tenants", headers=CLIENT).status_code == 403


def test_tenant_and_token_changes_are_audited(fleet: Fleet) -> None:
    """Who made a tenant, changed its limits, made or revoked a token, and what: a failed
    change (409) leaves no entry."""
    admin = bearer(fleet.tokens["admin"])
    assert fleet.http.post("/v1/admin/tenants", json={"name": "d", "weight": 2},
                           headers=admin).status_code == 201
    assert fleet.http.post("/v1/admin/tenants", json={"name": "d"},
                           headers=admin).status_code == 409
    assert fleet.http.patch("/v1/admin/tenants/d", json={"max_parallel_trials": 3,
                                                         "max_queued_trials": None},
                            headers=admin).status_code == 200
    made = fleet.http.post("/v1/admin/tokens", json={"tenant": "d", "role": "worker",
                                                     "name": "ci", "shared_pool": False},
                           headers=admin).json()
    for _ in range(2):  # the second revoke changes nothing and is not audited
        assert fleet.http.post(f"/v1/admin/tokens/{made['id']}/revoke",
                               headers=admin).status_code == 200
    assert fleet.http.patch("/v1/admin/tenants/d", json={"max_queued_trials": 1234567,
                                                         "weight": 1.2345678},
                            headers=admin).status_code == 200
    audit = fleet.http.get("/v1/admin/audit", headers=admin).json()
    token = f"token {made['id']} (worker of d): ci"
    assert [(e["action"], e["tenant"], e["target"], e["study_id"]) for e in audit[:5]] == [
        ("set_tenant", "d", "d: max_queued_trials=1234567, weight=1.2345678", None),
        ("revoke_token", "d", token, None), ("create_token", "d", token, None),
        ("set_tenant", "d", "d: max_parallel_trials=3, max_queued_trials=none", None),
        ("create_tenant", "d", "d (weight 2)", None)]
    assert all(e["actor"].startswith("b/admin (token ") for e in audit[:4])


def test_a_token_is_never_stored_in_plain_text(fleet: Fleet) -> None:
    """Every text column of every table, read back, holds no token; the SQLite file's
    bytes neither."""
    secrets = list(fleet.tokens.values())
    with fleet.database.session() as session:
        tables = inspect(session.get_bind()).get_table_names()
        dumped = "".join(repr(row) for table in tables
                         for row in session.execute(text(f'SELECT * FROM "{table}"')))
        stored = session.execute(select(TokenRow.token_sha256)).scalars().all()
    assert dumped and len(stored) == len(secrets)
    for secret in secrets:
        assert secret not in dumped and secret[4:] not in dumped
        assert repo.token_digest(secret) in stored
    url = fleet.server.settings.database_url
    if url.startswith("sqlite:///"):
        raw = open(url.removeprefix("sqlite:///"), "rb").read()  # noqa: SIM115
        assert all(secret.encode() not in raw for secret in secrets)

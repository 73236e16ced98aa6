"""Two tenants for the schemathesis tests (issue 31): tenant ``a``'s and tenant ``b``'s
member tokens, an admin, and the environment's worker token (the shared pool). Every call
a test makes with a's token on a people's route is replayed with b's token, which must get
404 for a's study or trial, and lists and usage that hold nothing of a's.

Generated admin calls could revoke these tokens or put quotas on these tenants and end
the run at 401 or 429; ``guard`` moves such calls to throwaway ones (the same route and
answer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft_service.domain.tenancy import Role
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from tests.api.conftest import WORKER

#: The scratch tenant generated admin calls are moved to.
SCRATCH = "scratch"
#: Routes whose path names a study or a trial (another tenant's is a 404).
_ID_PARAMETERS = ("study_id", "trial_id")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class TwoTenants:
    """Tokens of tenants ``a`` and ``b`` (members), of an admin (tenant b's: admins see
    all), and what tenant a's calls reached (its study and trial ids)."""

    database: Database
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    protected_tokens: set[int] = field(default_factory=set)
    a_studies: set[int] = field(default_factory=set)
    a_trials: set[int] = field(default_factory=set)

    @classmethod
    def make(cls, database_url: str) -> TwoTenants:
        made = cls(Database(database_url))
        with made.database.session() as session:
            for tenant in ("a", "b", SCRATCH):
                repo.create_tenant(session, tenant)
            for who, tenant, role in (("a", "a", Role.MEMBER), ("b", "b", Role.MEMBER),
                                      ("admin", "b", Role.ADMIN)):
                row, secret = repo.create_token(session, tenant, role, name=who)
                session.flush()
                made.headers[who] = bearer(secret)
                made.protected_tokens.add(row.id)
        made.headers["worker"] = WORKER
        return made

    def close(self) -> None:
        self.database.dispose()

    def role_of(self, operation: Any) -> str:
        """Whose token an operation takes: ``worker``, ``admin`` or ``a`` (people)."""
        tags = operation.definition.raw.get("tags", [])
        if "workers" in tags:
            return "worker"
        return "admin" if "admin" in tags else "a"

    def guard(self, case: Any) -> None:
        """Keep a generated admin call off this fixture's tokens and tenants."""
        path, method = case.operation.path, case.operation.method.upper()
        parameters = case.path_parameters or {}
        if path == "/v1/admin/tokens/{token_id}/revoke" and \
                parameters.get("token_id") in self.protected_tokens:
            with self.database.session() as session:
                row, _ = repo.create_token(session, SCRATCH, Role.READER, name="throwaway")
                session.flush()
                case.path_parameters = {**parameters, "token_id": row.id}
        elif path == "/v1/admin/tenants/{name}" and method == "PATCH" and \
                parameters.get("name") in ("a", "b", "default"):
            case.path_parameters = {**parameters, "name": SCRATCH}

    def note(self, case: Any, response: Any) -> None:
        """Remember the study and trial ids tenant a's (or the shared worker's) answer
        names."""
        if not 200 <= response.status_code < 300:
            return
        path, method = case.operation.path, case.operation.method.upper()
        try:
            body = response.json()
        except ValueError:
            return
        if path == "/v1/studies" and method == "POST":
            self.a_studies.add(body["id"])
        elif path == "/v1/studies" and method == "GET":
            self.a_studies.update(item["id"] for item in body["items"])
        elif path == "/v1/studies/{study_id}/trials":
            self.a_trials.update(item["id"] for item in body["items"])
        elif path == "/v1/leases" and body.get("study_id") in self.a_studies:
            self.a_trials.add(body["trial_id"])
        if "study_id" in (case.path_parameters or {}):
            self.a_studies.add(case.path_parameters["study_id"])
        if "trial_id" in (case.path_parameters or {}) and path.startswith("/v1/trials/"):
            self.a_trials.add(case.path_parameters["trial_id"])

    def leak(self, case: Any, a_status: int, b_response: Any) -> str | None:
        """What tenant b's answer to tenant a's call shows of a's (None: nothing)."""
        label = f"{case.operation.method.upper()} {case.operation.path}"
        parameters = case.path_parameters or {}
        named = any(name in parameters for name in _ID_PARAMETERS) or \
            "study_id" in (case.query or {})
        status = b_response.status_code
        if named and 200 <= a_status < 300 and status != 404:
            return f"{label} {parameters or case.query}: a got {a_status}, b got {status}"
        path = case.operation.path
        if status != 200 or named or path not in ("/v1/studies", "/v1/workers", "/v1/usage"):
            return None
        body = b_response.json()
        if path == "/v1/studies":
            seen = {item["id"] for item in body["items"]} & self.a_studies
            return f"{label}: b lists a's studies {sorted(seen)}" if seen else None
        if path == "/v1/workers":
            held = [trial for worker in body["items"] for trial in worker["trials"]
                    if trial["study_id"] in self.a_studies or trial["trial_id"] in self.a_trials]
            return f"{label}: b sees a's trials {held}" if held else None
        if path == "/v1/usage":
            tenants = [row["tenant"] for row in body]
            return f"{label}: b sees tenants {tenants}" if tenants != ["b"] else None
        return None

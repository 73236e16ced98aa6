"""Tenants, token roles and the caller a request acts as (``Principal``).

A tenant is a team: it owns its studies (and through them their trials, artefacts and
views) and may own a private pool of workers. A token belongs to one tenant and has one
role; people hold ``reader``, ``member`` or ``admin``, machines hold ``worker``. Pure
data and rules: nothing here imports the API, storage or HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

__all__ = ["DEFAULT_TENANT", "AuditOut", "Principal", "Role", "TenantIn", "TenantLimits",
           "TenantOut", "TokenCreated", "TokenIn", "TokenOut", "UsageOut", "check_tenant_name"]

#: The tenant of the environment's tokens (``AUTOPEFT_CLIENT_TOKENS``), and of every study
#: created before tenancy (migration 0007 creates it with id 1).
DEFAULT_TENANT = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Role(StrEnum):
    """What a token may do. People: ``reader`` reads its tenant's studies, ``member`` also
    creates and cancels them, ``admin`` reads and manages every tenant. Machines:
    ``worker`` leases and reports trials of its pool."""

    READER = "reader"
    MEMBER = "member"
    ADMIN = "admin"
    WORKER = "worker"


#: People's roles in increasing power; a route that needs one admits the stronger ones.
_PEOPLE_RANK = {Role.READER: 0, Role.MEMBER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as.

    Attributes:
        tenant_id: the token's tenant.
        tenant: its name.
        role: the token's role.
        token_id: the stored token's id; None for an environment token.
        shared_pool: for a worker, True when it serves the shared pool (every tenant),
            False when it serves only ``tenant_id``'s private pool.
    """

    tenant_id: int
    tenant: str
    role: Role
    token_id: int | None = None
    shared_pool: bool = True

    @property
    def sees_all(self) -> bool:
        """An admin reads and manages every tenant's studies."""
        return self.role is Role.ADMIN

    def admits(self, needed: Role) -> bool:
        """Whether this caller may use a route that needs ``needed``: the worker role only
        for workers; a person's role for that role and the weaker ones."""
        if needed is Role.WORKER or self.role is Role.WORKER:
            return self.role is needed
        return _PEOPLE_RANK[self.role] >= _PEOPLE_RANK[needed]

    @property
    def scope(self) -> int | None:
        """The tenant a query is limited to; None: every tenant."""
        if self.role is Role.WORKER:
            return None if self.shared_pool else self.tenant_id
        return None if self.sees_all else self.tenant_id

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        token = "environment token" if self.token_id is None else f"token {self.token_id}"
        return f"{self.tenant}/{self.role.value} ({token})"


def check_tenant_name(name: str) -> str:
    """``name`` if it is a valid tenant name. Raises ValueError saying the rule."""
    if not _NAME.match(name):
        raise ValueError("a tenant name is 1-63 characters: lower-case letters, digits, "
                         "'-' and '_', starting with a letter or digit")
    return name


class TenantIn(BaseModel):
    """A tenant to create."""

    name: str = Field(description="Lower-case letters, digits, '-' and '_' (1-63).")
    weight: float = Field(1.0, gt=0, le=1000, description="Share of the shared worker pool "
                          "relative to other tenants.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_tenant_name(value)


class TenantLimits(BaseModel):
    """A change of a tenant's weight or quotas: only the fields given change; a quota
    given as null is cleared (no limit)."""

    weight: float | None = Field(None, gt=0, le=1000)
    max_running_studies: int | None = Field(
        None, ge=0, le=10_000_000, description="Studies running at once; one more is 429.")
    max_parallel_trials: int | None = Field(
        None, ge=0, le=10_000_000, description="Trials leased at once (the shared pool "
        "passes the tenant over at this many).")
    max_queued_trials: int | None = Field(
        None, ge=0, le=10_000_000, description="Trials queued ready at once (the proposer "
        "stops filling the tenant's studies at this many).")

    def changes(self) -> dict[str, float | int | None]:
        """The fields given, with their values (``weight`` cannot be cleared)."""
        given = {key: getattr(self, key) for key in self.model_fields_set}
        if "weight" in given and given["weight"] is None:
            raise ValueError("weight cannot be null")
        return given


class TenantOut(BaseModel):
    """A tenant, with its weight and quotas (null: no limit)."""

    id: int
    name: str
    weight: float
    max_running_studies: int | None = None
    max_parallel_trials: int | None = None
    max_queued_trials: int | None = None
    created_at: float


class UsageOut(BaseModel):
    """A tenant's use of the service now, against its quotas (null: no limit)."""

    tenant: str
    weight: float
    running_studies: int
    max_running_studies: int | None
    leased_trials: int = Field(description="Trials its workers train now.")
    max_parallel_trials: int | None
    ready_trials: int = Field(description="Trials queued for a worker.")
    max_queued_trials: int | None


class TokenIn(BaseModel):
    """A token to create."""

    tenant: str = Field(description="The tenant's name.")
    role: Role
    name: str = Field("", max_length=200, description="A label (who or what holds it).")
    expires_in_days: float | None = Field(None, gt=0, le=3650,
                                          description="None: never expires.")
    shared_pool: bool = Field(False, description="Worker tokens only: serve every tenant "
                              "(the shared pool) instead of the tenant's private pool.")


class TokenOut(BaseModel):
    """A stored token, without its secret."""

    id: int
    tenant: str
    role: Role
    name: str
    shared_pool: bool
    created_at: float
    expires_at: float | None
    revoked_at: float | None


class TokenCreated(TokenOut):
    """A new token: the secret is in ``token``, shown this once and never stored."""

    token: str


class AuditOut(BaseModel):
    """One audited action: who did what to which study, tenant or token, and when."""

    id: int
    at: float
    tenant: str
    actor: str
    action: str
    study_id: int | None
    target: str | None = Field(None, description="What an admin action changed (a tenant "
                               "and its new limits, a token); None for a study's actions.")

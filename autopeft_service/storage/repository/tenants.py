"""Tenants, their tokens (stored as SHA-256 only) and the audit log."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.study import StudyState, TrialState
from autopeft_service.domain.tenancy import Principal, Role
from autopeft_service.storage.database import database_now, is_postgres
from autopeft_service.storage.models import AuditRow, StudyRow, TenantRow, TokenRow, TrialRow
from autopeft_service.storage.repository._common import NotFound

#: 32 random bytes (256 bits; the issue asks at least 128), URL-safe text, with a prefix
#: that secret scanners and people recognise.
TOKEN_PREFIX = "apt_"


class TenantExists(AutopeftError):
    """A tenant of that name exists already."""


def token_digest(token: str) -> str:
    """The stored form of a token: its hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_tenant(session: Session, name: str, weight: float = 1.0) -> TenantRow:
    """Insert a tenant. Raises TenantExists when the name is taken."""
    if session.execute(select(TenantRow.id).where(TenantRow.name == name)).first():
        raise TenantExists(f"tenant {name!r} exists already")
    row = TenantRow(name=name, weight=weight, created_at=database_now(session))
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # created by a concurrent request since the check
        raise TenantExists(f"tenant {name!r} exists already") from None
    return row


def get_tenant(session: Session, name: str) -> TenantRow:
    """The tenant called ``name``. Raises NotFound."""
    row = session.execute(select(TenantRow).where(TenantRow.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"tenant {name!r} does not exist")
    return row


def list_tenants(session: Session) -> list[TenantRow]:
    """Every tenant, oldest first."""
    return list(session.execute(select(TenantRow).order_by(TenantRow.id)).scalars())


def tenant_names(session: Session) -> dict[int, str]:
    """Tenant names by id."""
    return {tenant_id: name for tenant_id, name in
            session.execute(select(TenantRow.id, TenantRow.name))}


def create_token(session: Session, tenant: str, role: Role, name: str = "",
                 expires_in_days: float | None = None,
                 shared_pool: bool = False) -> tuple[TokenRow, str]:
    """A new random token for ``tenant``; only its digest is stored.

    Returns:
        The stored row and the secret (shown once: it cannot be read back).

    Raises:
        NotFound: no such tenant.
        ValueError: ``shared_pool`` for a role other than ``worker``.
    """
    if shared_pool and role is not Role.WORKER:
        raise ValueError("shared_pool is for worker tokens only")
    owner = get_tenant(session, tenant)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = database_now(session)
    row = TokenRow(tenant_id=owner.id, role=role.value, name=name,
                   token_sha256=token_digest(secret), shared_pool=shared_pool,
                   created_at=now,
                   expires_at=None if expires_in_days is None else now + expires_in_days * 86400)
    session.add(row)
    session.flush()
    return row, secret


def revoke_token(session: Session, token_id: int) -> TokenRow:
    """Revoke a token now (revoking twice keeps the first time, and audits once: the
    revocation is audited by the caller only when ``token_revoked_now``). Raises NotFound."""
    row = session.get(TokenRow, token_id)
    if row is None:
        raise NotFound(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = database_now(session)
        session.flush()
        session.info.setdefault(_REVOKED_NOW, set()).add(row.id)
    return row


#: ``Session.info`` key: ids of the tokens this transaction revoked.
_REVOKED_NOW = "autopeft_revoked_tokens"


def token_revoked_now(session: Session, token_id: int) -> bool:
    """Whether ``revoke_token`` revoked the token in this session (not earlier)."""
    return token_id in session.info.get(_REVOKED_NOW, set())


def list_tokens(session: Session, tenant: str | None = None) -> list[TokenRow]:
    """Stored tokens (never their secrets), oldest first; only ``tenant``'s when given.
    Raises NotFound for an unknown tenant."""
    statement = select(TokenRow).order_by(TokenRow.id)
    if tenant is not None:
        statement = statement.where(TokenRow.tenant_id == get_tenant(session, tenant).id)
    return list(session.execute(statement).scalars())


def principal_for_token(session: Session, token: str) -> Principal | None:
    """The caller a stored token acts as; None when it is unknown, revoked or expired."""
    row = session.execute(
        select(TokenRow, TenantRow.name).join(TenantRow, TenantRow.id == TokenRow.tenant_id)
        .where(TokenRow.token_sha256 == token_digest(token))).one_or_none()
    if row is None:
        return None
    stored, tenant = row.tuple()
    now = database_now(session)
    if stored.revoked_at is not None or (stored.expires_at is not None
                                         and stored.expires_at <= now):
        return None
    return Principal(tenant_id=stored.tenant_id, tenant=tenant, role=Role(stored.role),
                     token_id=stored.id, shared_pool=stored.shared_pool)


def audit(session: Session, principal: Principal, action: str, study_id: int | None,
          tenant_id: int | None = None) -> None:
    """Record that ``principal`` did ``action`` (to ``study_id``), in the study's tenant
    (``tenant_id``; the principal's own when None)."""
    session.add(AuditRow(at=database_now(session),
                         tenant_id=principal.tenant_id if tenant_id is None else tenant_id,
                         token_id=principal.token_id, actor=principal.actor, action=action,
                         study_id=study_id))


def audit_admin(session: Session, actor: str, token_id: int | None, tenant_id: int,
                action: str, target: str) -> None:
    """Record an admin change (``create_tenant``, ``set_tenant``, ``create_token``,
    ``revoke_token``) to ``target`` in ``tenant_id``, by ``actor`` (a principal's
    ``actor``, or the admin CLI's ``user@host``)."""
    session.add(AuditRow(at=database_now(session), tenant_id=tenant_id, token_id=token_id,
                         actor=actor[:300], action=action, study_id=None,
                         target=target[:300]))


def token_target(row: TokenRow, tenant: str) -> str:
    """How the audit log names a token: ``token 7 (worker of acme, shared pool): ci``."""
    pool = ", shared pool" if row.role == "worker" and row.shared_pool else ""
    name = f": {row.name}" if row.name else ""
    return f"token {row.id} ({row.role} of {tenant}{pool}){name}"


def limits_target(name: str, changes: dict[str, float | int | None]) -> str:
    """How the audit log names a tenant's new limits: ``acme: weight=2, max_parallel_trials=none``."""
    shown = ", ".join(f"{key}={'none' if value is None else repr(value)}"
                      for key, value in sorted(changes.items()))
    return f"{name}: {shown}"


def list_audit(session: Session, limit: int = 100) -> list[AuditRow]:
    """The latest audited actions, newest first."""
    return list(session.execute(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
                                ).scalars())


@dataclass(frozen=True)
class TenantUsage:
    """A tenant's use of the service now, beside its weight and quotas (None: no limit)."""

    tenant_id: int
    name: str
    weight: float
    running_studies: int
    leased_trials: int
    ready_trials: int
    max_running_studies: int | None
    max_parallel_trials: int | None
    max_queued_trials: int | None


def tenant_usage(session: Session, tenant_id: int | None = None) -> list[TenantUsage]:
    """Every tenant's usage (only ``tenant_id``'s when given), by tenant id: running
    studies, and their leased and ready trials."""
    tenants = select(TenantRow).order_by(TenantRow.id)
    if tenant_id is not None:
        tenants = tenants.where(TenantRow.id == tenant_id)
    running = StudyRow.state == StudyState.RUNNING.value
    studies = dict(session.execute(
        select(StudyRow.tenant_id, func.count()).where(running)
        .group_by(StudyRow.tenant_id)).tuples().all())
    trials: dict[tuple[int, str], int] = {
        (owner, state): count for owner, state, count in session.execute(
            select(StudyRow.tenant_id, TrialRow.state, func.count())
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(running, TrialRow.state.in_([TrialState.LEASED.value,
                                                 TrialState.READY.value]))
            .group_by(StudyRow.tenant_id, TrialRow.state))}
    return [TenantUsage(
        tenant_id=row.id, name=row.name, weight=row.weight,
        running_studies=int(studies.get(row.id, 0)),
        leased_trials=trials.get((row.id, TrialState.LEASED.value), 0),
        ready_trials=trials.get((row.id, TrialState.READY.value), 0),
        max_running_studies=row.max_running_studies,
        max_parallel_trials=row.max_parallel_trials,
        max_queued_trials=row.max_queued_trials)
        for row in session.execute(tenants).scalars()]


def running_studies_left(session: Session, tenant_id: int) -> int | None:
    """How many more studies the tenant may run now (None: no limit). Locks the tenant's
    row for the transaction on PostgreSQL (SQLite's immediate transaction runs alone), so
    two concurrent creations cannot both take the last place."""
    statement = select(TenantRow).where(TenantRow.id == tenant_id)
    if is_postgres(session):
        statement = statement.with_for_update()
    limit = session.execute(statement).scalar_one_or_none()
    if limit is None or limit.max_running_studies is None:
        return None
    running = session.execute(select(func.count()).select_from(StudyRow).where(
        StudyRow.tenant_id == tenant_id,
        StudyRow.state == StudyState.RUNNING.value)).scalar_one()
    return max(0, limit.max_running_studies - int(running))


def queue_room(session: Session, study_id: int) -> int | None:
    """How many more trials the study's tenant may queue ready now (its
    ``max_queued_trials`` less the ready trials of its running studies; None: no limit)."""
    tenant = session.execute(select(TenantRow).join(StudyRow, StudyRow.tenant_id == TenantRow.id)
                             .where(StudyRow.id == study_id)).scalar_one_or_none()
    if tenant is None or tenant.max_queued_trials is None:
        return None
    ready = session.execute(
        select(func.count()).select_from(TrialRow)
        .join(StudyRow, StudyRow.id == TrialRow.study_id)
        .where(StudyRow.tenant_id == tenant.id, StudyRow.state == StudyState.RUNNING.value,
               TrialRow.state == TrialState.READY.value)).scalar_one()
    return max(0, tenant.max_queued_trials - int(ready))


def set_tenant_limits(session: Session, name: str, changes: dict[str, float | int | None]
                      ) -> TenantRow:
    """Change a tenant's weight or quotas: ``changes`` maps ``weight``,
    ``max_running_studies``, ``max_parallel_trials`` or ``max_queued_trials`` to the new
    value (None clears a quota). Raises NotFound; ValueError for another key."""
    allowed = {"weight", "max_running_studies", "max_parallel_trials", "max_queued_trials"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not a tenant setting: {', '.join(sorted(unknown))}")
    row = get_tenant(session, name)
    for key, value in changes.items():
        setattr(row, key, value)
    session.flush()
    return row

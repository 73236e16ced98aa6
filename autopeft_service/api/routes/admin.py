"""Admin routes: tenants, tokens and the audit log (the ``admin`` role only).

``autopeft admin`` does the same on the server's database directly, which is how the first
admin token is made.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy.orm import Session

from autopeft_service.api.deps import Admin, AdminAuth, ServicesDep, SessionDep
from autopeft_service.api.schemas import error_responses
from autopeft_service.domain.tenancy import (
    AuditOut,
    Principal,
    TenantIn,
    TenantLimits,
    TenantOut,
    TokenCreated,
    TokenIn,
    TokenOut,
)
from autopeft_service.storage import repository as repo
from autopeft_service.storage.models import TenantRow, TokenRow

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAuth],
                   responses=error_responses(400, 401, 403, 413, 422, 503))
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def tenant_out(row: TenantRow) -> TenantOut:
    """The API form of a tenant row."""
    return TenantOut(id=row.id, name=row.name, weight=row.weight,
                     max_running_studies=row.max_running_studies,
                     max_parallel_trials=row.max_parallel_trials,
                     max_queued_trials=row.max_queued_trials, created_at=row.created_at)


def token_out(row: TokenRow, tenant: str) -> TokenOut:
    """The API form of a token row (never its digest)."""
    return TokenOut(id=row.id, tenant=tenant, role=row.role, name=row.name,
                    shared_pool=row.shared_pool, created_at=row.created_at,
                    expires_at=row.expires_at, revoked_at=row.revoked_at)


def _audit(session: Session, caller: Principal, tenant_id: int, action: str,
           target: str) -> None:
    repo.audit_admin(session, caller.actor, caller.token_id, tenant_id, action, target)


def _field_error(field: str, message: str) -> HTTPException:
    """422 naming ``field`` of the body."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
        {"loc": ["body", field], "msg": message, "type": "value_error"}])


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantOut,
             responses=error_responses(409))
def create_tenant(body: TenantIn, session: SessionDep, caller: Admin) -> TenantOut:
    """A new tenant (409 when the name is taken)."""
    try:
        row = repo.create_tenant(session, body.name, body.weight)
    except repo.TenantExists as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    out = tenant_out(row)
    _audit(session, caller, row.id, "create_tenant", f"{row.name} (weight {row.weight:g})")
    session.commit()  # before the answer (the dependency commits after it is sent)
    return out


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(session: SessionDep) -> list[TenantOut]:
    """Every tenant, oldest first."""
    return [tenant_out(row) for row in repo.list_tenants(session)]


@router.patch("/tenants/{name}", response_model=TenantOut, responses=error_responses(404))
def update_tenant(name: Annotated[str, Path(max_length=63)], body: TenantLimits,
                  session: SessionDep, caller: Admin) -> TenantOut:
    """Change a tenant's weight or quotas (only the fields given; a null quota is no
    limit). Takes effect at the next lease, proposer pass or creation."""
    try:
        changes = body.changes()
    except ValueError as error:
        raise _field_error("weight", str(error)) from None
    try:
        row = repo.set_tenant_limits(session, name, changes)
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    out = tenant_out(row)
    _audit(session, caller, row.id, "set_tenant", repo.limits_target(name, changes))
    session.commit()  # in force as soon as it is answered
    return out


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_token(body: TokenIn, session: SessionDep, caller: Admin) -> TokenCreated:
    """A new token; its secret is in the answer only (the server keeps its SHA-256)."""
    try:
        row, secret = repo.create_token(session, body.tenant, body.role, body.name,
                                        body.expires_in_days, body.shared_pool)
    except repo.NotFound as error:
        raise _field_error("tenant", str(error)) from None
    except ValueError as error:
        raise _field_error("shared_pool", str(error)) from None
    out = TokenCreated(**token_out(row, body.tenant).model_dump(), token=secret)
    session.flush()  # the token's id, for the audit
    _audit(session, caller, row.tenant_id, "create_token", repo.token_target(row, body.tenant))
    session.commit()  # the token works as soon as its creation is answered
    return out


@router.get("/tokens", response_model=list[TokenOut], responses=error_responses(404))
def list_tokens(session: SessionDep,
                tenant: Annotated[str | None, Query(max_length=63)] = None) -> list[TokenOut]:
    """Stored tokens (never their secrets), of one tenant or all (404: no such tenant)."""
    try:
        rows = repo.list_tokens(session, tenant)
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    names = repo.tenant_names(session)
    return [token_out(row, names[row.tenant_id]) for row in rows]


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut,
             responses=error_responses(404))
def revoke_token(token_id: TokenId, session: SessionDep, services: ServicesDep,
                 caller: Admin) -> TokenOut:
    """Revoke a token: it gets 401 from now on (at once on this server process, within
    the token cache's seconds on others)."""
    try:
        row = repo.revoke_token(session, token_id)
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    if repo.token_revoked_now(session, row.id):  # a second revoke changes nothing
        _audit(session, caller, row.tenant_id, "revoke_token",
               repo.token_target(row, repo.tenant_names(session)[row.tenant_id]))
    session.commit()
    services.tokens.forget()
    return token_out(row, repo.tenant_names(session)[row.tenant_id])


@router.get("/audit", response_model=list[AuditOut])
def list_audit(session: SessionDep,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    """The latest audited actions (studies created and cancelled, tenants and tokens
    changed): who, what and when, newest first."""
    names = repo.tenant_names(session)
    return [AuditOut(id=row.id, at=row.at, tenant=names[row.tenant_id], actor=row.actor,
                     action=row.action, study_id=row.study_id, target=row.target)
            for row in repo.list_audit(session, limit)]

"""Request dependencies: the services, a database session, and the caller's role.

The token gate (``api.middleware.TokenGate``) has already answered 401 for a missing or
unknown token and put the caller (``Principal``) in the request's state; the dependencies
here check the role a route needs (403 otherwise) and hand the caller to the route, which
scopes what it reads to the caller's tenant (another tenant's study is a 404).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, params, status
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from autopeft_service.api.services import Services
from autopeft_service.domain.tenancy import Principal, Role

__all__ = ["AdminAuth", "MemberAuth", "ReadSessionDep", "ReaderAuth", "Role", "ServicesDep",
           "SessionDep", "WorkerAuth", "require"]

_bearer = HTTPBearer(auto_error=False, description="A person's or a worker's token.")


# The dependencies below are ``async def`` although they never await: FastAPI runs a plain
# ``def`` dependency in the thread pool, a thread hop per dependency per request.
async def get_services(request: Request) -> Services:
    # cast: Starlette's app.state holds Any; create_app stores the Services there.
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """A session committed when the route returns (rolled back on error)."""
    with services.database.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(services: ServicesDep) -> Iterator[Session]:
    """A read-only session (``Database.read_session``): on SQLite a snapshot that neither
    waits for nor holds up the proposer's and workers' writes. For GET routes."""
    with services.database.read_session() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def require(role: Role) -> params.Depends:
    """A dependency that admits callers whose role admits ``role`` (403 otherwise) and
    returns the caller (``Principal``).

    The bearer scheme is declared for OpenAPI; the token itself was resolved by the gate.
    """

    async def check(request: Request,
                    _credentials: Annotated[object, Depends(_bearer)]) -> Principal:
        principal = getattr(request.state, "principal", None)
        if not isinstance(principal, Principal):  # the gate always sets it under /v1/
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not principal.admits(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this endpoint needs the {role} role")
        return principal

    # cast: fastapi.Depends is typed Any (so that it can stand as a parameter's default); it
    # returns a params.Depends.
    return cast(params.Depends, Depends(check))


ReaderAuth = require(Role.READER)
MemberAuth = require(Role.MEMBER)
AdminAuth = require(Role.ADMIN)
WorkerAuth = require(Role.WORKER)

#: The caller, for routes that scope what they read or write to it.
Reader = Annotated[Principal, ReaderAuth]
Member = Annotated[Principal, MemberAuth]
Admin = Annotated[Principal, AdminAuth]
Worker = Annotated[Principal, WorkerAuth]

"""Request dependencies: the services, a database session, and bearer-token roles."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, params, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from autopeft_service.api.services import Services


class Role(StrEnum):
    CLIENT = "client"
    WORKER = "worker"


_bearer = HTTPBearer(auto_error=False, description="Client or worker token.")


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


def _roles(services: Services, credentials: HTTPAuthorizationCredentials | None) -> set[Role]:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    token = credentials.credentials
    roles = set()
    if token in services.settings.client_tokens:
        roles.add(Role.CLIENT)
    if token in services.settings.worker_tokens:
        roles.add(Role.WORKER)
    if not roles:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    return roles


def require(role: Role) -> params.Depends:
    """A dependency that admits callers holding ``role`` (401 no/bad token, 403 wrong role)."""

    async def check(services: ServicesDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Depends(_bearer)]) -> Role:
        if role not in _roles(services, credentials):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this endpoint needs the {role} role")
        return role

    # cast: fastapi.Depends is typed Any (so that it can stand as a parameter's default); it
    # returns a params.Depends.
    return cast(params.Depends, Depends(check))


ClientAuth = require(Role.CLIENT)
WorkerAuth = require(Role.WORKER)

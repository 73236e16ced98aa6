"""Roles and scopes of a caller (``domain.tenancy``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from autopeft_service.domain.tenancy import Principal, Role, TenantIn, TenantLimits


def caller(role: Role, shared_pool: bool = False) -> Principal:
    return Principal(tenant_id=7, tenant="t", role=role, token_id=3, shared_pool=shared_pool)


def test_people_roles_admit_the_weaker_ones_and_never_the_worker_role() -> None:
    admitted = {role: {needed for needed in Role if caller(role).admits(needed)}
                for role in Role}
    assert admitted == {Role.READER: {Role.READER},
                        Role.MEMBER: {Role.READER, Role.MEMBER},
                        Role.ADMIN: {Role.READER, Role.MEMBER, Role.ADMIN},
                        Role.WORKER: {Role.WORKER}}


def test_scope_is_the_tenant_except_for_admins_and_shared_pool_workers() -> None:
    assert caller(Role.READER).scope == 7 and caller(Role.MEMBER).scope == 7
    assert caller(Role.ADMIN).scope is None
    assert caller(Role.WORKER, shared_pool=False).scope == 7
    assert caller(Role.WORKER, shared_pool=True).scope is None
    assert caller(Role.MEMBER).actor == "t/member (token 3)"


def test_tenant_names_and_limits_are_checked() -> None:
    assert TenantIn(name="team-a_2").name == "team-a_2"
    for bad in ("", "Team", "a b", "-a", "x" * 64):
        with pytest.raises(ValidationError):
            TenantIn(name=bad)
    assert TenantLimits(max_queued_trials=None).changes() == {"max_queued_trials": None}
    assert TenantLimits().changes() == {}
    with pytest.raises(ValueError, match="weight cannot be null"):
        TenantLimits(weight=None).changes()
    with pytest.raises(ValidationError):
        TenantLimits(max_parallel_trials=-1)

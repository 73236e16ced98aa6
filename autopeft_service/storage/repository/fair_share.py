"""Which study the next lease serves: weighted fair share by tenant, then by study.

Written by hand (no scheduling library schedules rows of a SQL table): one sub-select that
the lease statement embeds, so choosing stays inside the lease's own statement.

The share is of leases *held now*: a tenant's leased trials divided by its weight, lowest
first; within the tenant, the study holding fewest leases; then the oldest study. A tenant
at its ``max_parallel_trials`` is passed over. It is max-min fairness of the fleet's slots
(what YARN's and Slurm's fair schedulers share out), so a tenant with one ready trial
beside one with 30,000 gets the next lease once it holds fewer; and two saturated tenants
of equal weight hold half the fleet each.

Cost per lease: for each running study (of the pool), an index count of its leased trials
and an index probe for a ready one (``ix_trials_study_state_id``): proportional to the
running studies and the leases held, never to the ready queue's length.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, bindparam, cast, exists, func, select

from autopeft_service.domain.study import StudyState, TrialState
from autopeft_service.storage.models import TenantRow
from autopeft_service.storage.repository._common import _STUDIES, _TRIALS, _table

_TENANTS = _table(TenantRow)


def chosen_study(private: bool) -> Any:
    """A scalar sub-select: the id of the running study the next lease should serve (None
    when no study of a tenant under its parallel quota has a ready trial). ``private``
    limits it to the tenant bound as ``p_pool``."""
    held = _TRIALS.alias("held")
    waiting = _TRIALS.alias("waiting")
    leased = (select(func.count()).select_from(held)
              .where(held.c.study_id == _STUDIES.c.id,
                     held.c.state == TrialState.LEASED.value)
              .scalar_subquery())
    has_ready = exists().where(waiting.c.study_id == _STUDIES.c.id,
                               waiting.c.state == TrialState.READY.value)
    load = (select(_STUDIES.c.id.label("study_id"), _STUDIES.c.tenant_id.label("tenant_id"),
                   leased.label("leased"), has_ready.label("ready"))
            .where(_STUDIES.c.state == StudyState.RUNNING.value))
    if private:
        load = load.where(_STUDIES.c.tenant_id == bindparam(
            "p_pool", type_=_STUDIES.c.tenant_id.type))
    load_cte = load.cte("study_load")
    tenant_load = (select(load_cte.c.tenant_id,
                          func.sum(load_cte.c.leased).label("leased"))
                   .group_by(load_cte.c.tenant_id).cte("tenant_load"))
    share = cast(tenant_load.c.leased, Float) / _TENANTS.c.weight
    return (select(load_cte.c.study_id)
            .join(tenant_load, tenant_load.c.tenant_id == load_cte.c.tenant_id)
            .join(_TENANTS, _TENANTS.c.id == load_cte.c.tenant_id)
            .where(load_cte.c.ready,
                   _TENANTS.c.max_parallel_trials.is_(None)
                   | (cast(tenant_load.c.leased, Integer) < _TENANTS.c.max_parallel_trials))
            .order_by(share, load_cte.c.leased, load_cte.c.study_id)
            .limit(1).scalar_subquery())


def tenants_at_quota() -> Any:
    """A sub-select of the ids of tenants holding ``max_parallel_trials`` leases or more
    (the first-come fallback of the lease passes them over too)."""
    held = _TRIALS.alias("held_by_tenant")
    owner = _STUDIES.alias("owner")
    holding = (select(func.count()).select_from(held)
               .join(owner, owner.c.id == held.c.study_id)
               .where(owner.c.tenant_id == _TENANTS.c.id,
                      held.c.state == TrialState.LEASED.value)
               .scalar_subquery())
    return select(_TENANTS.c.id).where(_TENANTS.c.max_parallel_trials.is_not(None),
                                       holding >= _TENANTS.c.max_parallel_trials)

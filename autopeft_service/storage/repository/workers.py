"""Workers: sightings (leases, batched heartbeats), lists and counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Float, bindparam, case, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from autopeft_service.storage.database import database_now, database_now_expression, is_postgres
from autopeft_service.storage.models import WorkerRow
from autopeft_service.storage.repository._common import _WORKERS, _prebuilt


def _touch_worker_statement(postgres: bool, now: Any) -> Any:
    insert = postgres_insert if postgres else sqlite_insert
    statement = insert(_WORKERS).values(
        name=bindparam("p_name"), first_seen=now, last_seen=now, leases=bindparam("p_leased"),
        pool_tenant_id=bindparam("p_pool", type_=_WORKERS.c.pool_tenant_id.type))
    return statement.on_conflict_do_update(index_elements=[_WORKERS.c.name], set_={
        "last_seen": now, "leases": _WORKERS.c.leases + statement.excluded.leases,
        "pool_tenant_id": statement.excluded.pool_tenant_id})


def _touch_worker(session: Session, name: str, leased: bool = False,
                  pool: int | None = None) -> None:
    """Upsert the worker's row (last seen, leases, pool: a tenant's id for a private
    pool, None for the shared one) in one statement (no read, no lost update). Called on
    leases; heartbeats are batched (``record_sightings``) and reports not recorded (kept
    off those hot paths)."""
    session.execute(_prebuilt(session, "touch_worker", _touch_worker_statement),
                    {"p_name": name, "p_leased": int(leased), "p_pool": pool})


def record_sightings(session: Session, ages: Mapping[str, float], chunk: int = 500) -> None:
    """Record workers as seen ``ages[name]`` seconds before now (database time), one
    statement per ``chunk`` workers: the heartbeats' sightings, which a server batches
    (``api.sightings``) instead of writing one per heartbeat. A ``last_seen`` never moves
    back (a lease may have written a later one meanwhile); a worker not known yet is
    added, with no lease."""
    names = sorted(ages)  # one order: concurrent batches lock rows alike
    if not names:
        return
    now = database_now(session)
    postgres = is_postgres(session)
    insert = postgres_insert if postgres else sqlite_insert
    later = func.greatest if postgres else func.max  # SQLite's two-argument max()
    for first in range(0, len(names), chunk):
        statement = insert(_WORKERS).values([
            {"name": name, "first_seen": now - ages[name], "last_seen": now - ages[name],
             "leases": 0} for name in names[first:first + chunk]])
        session.execute(statement.on_conflict_do_update(
            index_elements=[_WORKERS.c.name],
            set_={"last_seen": later(_WORKERS.c.last_seen, statement.excluded.last_seen)}))


def list_workers(session: Session, tenant_id: int | None = None) -> list[WorkerRow]:
    """Every worker seen, most recently seen first; with ``tenant_id``, those a tenant's
    people see: its private pool's and the shared pool's."""
    statement = select(WorkerRow).order_by(WorkerRow.last_seen.desc())
    if tenant_id is not None:
        statement = statement.where(or_(WorkerRow.pool_tenant_id.is_(None),
                                        WorkerRow.pool_tenant_id == tenant_id))
    return list(session.execute(statement).scalars())


def worker_counts(session: Session, alive_seconds: float) -> tuple[int, int]:
    """(workers ever seen, workers seen within ``alive_seconds`` of the database clock),
    in one ``SELECT``; "seen" is a lease request or a heartbeat, as the dashboard counts."""
    alive = case((WorkerRow.last_seen >= database_now_expression(session)
                  - bindparam("alive", float(alive_seconds), type_=Float), 1), else_=0)
    known, seen = session.execute(select(func.count(), func.coalesce(func.sum(alive), 0))
                                  .select_from(WorkerRow)).one()
    return int(known), int(seen)

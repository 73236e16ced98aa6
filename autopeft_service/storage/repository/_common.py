"""Shared by the repository's modules: its errors, the study row lock, and the
hot-path statements built once per dialect (``_prebuilt``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from autopeft_service.domain.errors import AutopeftError
from autopeft_service.storage.database import database_now_expression, is_postgres
from autopeft_service.storage.models import Base, StudyRow, TrialRow, WorkerRow


class NotFound(AutopeftError, LookupError):
    """The study or trial does not exist."""


class LeaseConflict(AutopeftError):
    """The lease token is not the trial's current lease (expired and re-leased, or wrong)."""


class StudyNotRunning(AutopeftError):
    """The operation needs a running study."""


def _lock_study(session: Session, study_id: int) -> StudyRow:
    """The study row, locked for this transaction on PostgreSQL (``FOR UPDATE``; SQLite's
    immediate transaction already excludes writers). Raises NotFound."""
    statement = select(StudyRow).where(StudyRow.id == study_id)
    if is_postgres(session):
        statement = statement.with_for_update()
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise NotFound(f"study {study_id} does not exist")
    return row


def _not_current(trial_id: int) -> str:
    """The LeaseConflict message for a token that is not the trial's current lease."""
    return (f"trial {trial_id}: this lease token is not the trial's current lease (a wrong "
            "token, or an expired lease whose trial was leased again)")


# Hot-path statements (lease, result) are built once per dialect and reused with bind
# parameters: building and cache-keying a fresh statement per request cost more CPU than
# executing it. Core (not ORM) rows are returned for the same reason.
def _table(model: type[Base]) -> Table:
    """The model's table (declarative typing says only ``FromClause``; a model declared with
    ``__tablename__`` always has a ``Table``)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


_TRIALS: Table = _table(TrialRow)
_STUDIES: Table = _table(StudyRow)
_WORKERS: Table = _table(WorkerRow)
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _prebuilt(session: Session, name: str, build: Any) -> Any:
    """The statement ``name`` for the session's dialect, built by ``build(postgres, now)``
    on first use and cached for the process."""
    key = (session.get_bind().dialect.name, name)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = build(is_postgres(session), database_now_expression(session))
    return statement

"""Run Alembic migrations from code (``autopeft serve`` upgrades before it starts)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from autopeft_service.storage.database import make_engine
from autopeft_service.storage.models import Base

#: The repository's alembic.ini (migrations/ sits beside the package).
ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def alembic_config(url: str) -> Config:
    """Alembic's config for the database at ``url``."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (creates it when empty)."""
    command.upgrade(alembic_config(url), "head")


def schema_diff(url: str) -> list[object]:
    """Differences between the database at ``url`` and the models (empty when in sync)."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()

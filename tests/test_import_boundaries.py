"""The server never loads the training stack and workers never load the server's: each
side stays installable and fast to start without the other's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded(module: str, heavy: list[str]) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has imported after importing ``module``."""
    code = (f"import sys, {module}; print(' '.join(n for n in {heavy!r} if n in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    return result.stdout.split()


@pytest.mark.parametrize("module, heavy", [
    ("autopeft_service.api.app", ["transformers", "torch", "workers.trial"]),
    ("workers.worker", ["sqlalchemy", "fastapi", "alembic", "autopeft_service.storage"]),
    ("workers.client", ["sqlalchemy", "fastapi", "torch"]),
])
def test_import_boundary(module: str, heavy: list[str]) -> None:
    assert _loaded(module, heavy) == []


def test_the_check_can_fail() -> None:
    assert _loaded("workers.worker", ["torch"]) == ["torch"]

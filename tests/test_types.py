"""mypy passes on the packages pyproject.toml's ``[tool.mypy]`` lists, with strict mode's
checks on the domain and the optimisers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
MYPY = [sys.executable, "-m", "mypy"]


def test_mypy_finds_nothing() -> None:
    done = subprocess.run([*MYPY, "--config-file", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success" in done.stdout


def test_strict_checks_apply_to_the_domain(tmp_path: Path) -> None:
    """An untyped function in the domain is an error (the strict override holds)."""
    package = tmp_path / "autopeft_service" / "domain"
    package.mkdir(parents=True)
    (tmp_path / "autopeft_service" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "loose.py").write_text("def untyped(x):\n    return x\n")
    done = subprocess.run([*MYPY, "--config-file", str(ROOT / "pyproject.toml"),
                           "autopeft_service/domain/loose.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "no-untyped-def" in done.stdout, done.stdout

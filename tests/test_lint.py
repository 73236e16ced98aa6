"""ruff's rules (``[tool.ruff.lint]`` in pyproject.toml) hold over the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_finds_nothing() -> None:
    done = subprocess.run([str(RUFF), "check", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_would_find_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")  # unused import: F401
    done = subprocess.run([str(RUFF), "check", "--config", str(ROOT / "pyproject.toml"),
                           str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "F401" in done.stdout, done.stdout

"""``autopeft serve``: bad arguments are a usage error, before anything starts."""

import subprocess
import sys
from pathlib import Path


def test_serve_rejects_fewer_than_one_process(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    done = subprocess.run([sys.executable, "-m", "autopeft_service.cli", "serve",
                           "--processes", "0", "--database-url", f"sqlite:///{database}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "autopeft: error: --processes: must be at least 1, got 0"
    assert not database.exists()  # refused before migrating

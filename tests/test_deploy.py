"""docker-compose.yml: checked by docker compose's own parser (no Docker engine here).

The same topology (PostgreSQL + server + three workers) runs without Docker in
tests/workers/test_worker.py::test_postgresql_server_and_three_workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {"POSTGRES_PASSWORD": "pg-secret", "AUTOPEFT_CLIENT_TOKENS": "client-secret",
       "AUTOPEFT_WORKER_TOKEN": "worker-secret"}


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker compose`` (v2 plugin) when present, else ``docker-compose`` (v1)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True) \
        if shutil.which("docker") else None
    if plugin is not None and plugin.returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.fail("neither `docker compose` nor `docker-compose` is installed "
                    "(.ci/run installs Debian's docker-compose)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPEFT_", "POSTGRES_"))}
    return subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), *args],
                          capture_output=True, text=True, env={**clean, **env}, cwd=ROOT,
                          timeout=120)


def test_compose_file_is_valid_and_wires_the_services() -> None:
    done = compose("config", env=ENV)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "server", "worker"}
    postgres, server, worker = services["postgres"], services["server"], services["worker"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(str(v).startswith("pgdata:") for v in postgres["volumes"])
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert server["command"][0] == "serve"
    url = server["environment"]["AUTOPEFT_DATABASE_URL"]
    assert url == "postgresql+psycopg://autopeft:pg-secret@postgres:5432/autopeft"
    assert server["environment"]["AUTOPEFT_WORKER_TOKENS"] == "worker-secret"
    assert worker["command"][:3] == ["worker", "--server", "http://server:8000"]
    assert worker["environment"]["AUTOPEFT_WORKER_TOKEN"] == "worker-secret"
    assert worker["depends_on"]["server"]["condition"] == "service_healthy"
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    assert "ports" not in worker  # workers scale with --scale worker=N: no fixed host port


@pytest.mark.parametrize("missing", sorted(ENV))
def test_missing_secret_is_refused(missing: str) -> None:
    done = compose("config", env={k: v for k, v in ENV.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr


def test_dockerfile_installs_pinned_torch_and_runs_autopeft() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "-c constraints.txt" in text
    assert 'ENTRYPOINT ["autopeft"]' in text

"""``autopeft serve``: bad arguments are one ``autopeft: error:`` line and exit 2, before
anything starts; a good start prints one line (address, dashboard, database, artefacts);
``--demo`` serves a demo folder with its own tokens (a whole demo: tests/cli/test_demo.py)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autopeft_service.cli.main import main
from autopeft_service.cli.serve import checked_database_url, start_line
from autopeft_service.core.config import Settings
from autopeft_service.local import DemoFolder
from tests.cli.test_studies import ROOT, assert_one_line_error, autopeft

START_LINE = (r"^autopeft serve: listening on 127\.0\.0\.1:(\d+), dashboard "
              r"http://127\.0\.0\.1:(\d+)/ui, database (\S+), artefacts ([^,\s]+)(.*)$")


def test_serve_rejects_fewer_than_one_process(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    done = subprocess.run([sys.executable, "-m", "autopeft_service.cli", "serve",
                           "--processes", "0", "--database-url", f"sqlite:///{database}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "autopeft: error: --processes: must be at least 1, got 0"
    assert not database.exists()  # refused before migrating


@pytest.mark.parametrize(("flags", "expected"), [
    (["--port", "99999"], "--port: Input should be less than or equal to 65535, got 99999"),
    (["--database-url", "bogus://x"], "--database-url: unknown database 'bogus' in bogus://x"),
], ids=["port", "database-url"])
def test_bad_values_are_one_line_not_a_traceback(tmp_path: Path, flags: list[str],
                                                 expected: str) -> None:
    """Each was a traceback: a pydantic ValidationError, SQLAlchemy's NoSuchModuleError."""
    done = autopeft("serve", "--artifact-dir", str(tmp_path / "artifacts"), *flags)
    assert_one_line_error(done, 2, expected)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AUTOPEFT_* variable, no .env, in an empty folder (in-process runs of serve)."""
    for name in ("AUTOPEFT_HOST", "AUTOPEFT_PORT", "AUTOPEFT_DATABASE_URL",
                 "AUTOPEFT_ARTIFACT_DIR", "AUTOPEFT_CLIENT_TOKENS", "AUTOPEFT_WORKER_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``autopeft serve ARGV`` in this process; it must exit 2 with one line."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv])
    captured = capsys.readouterr()
    assert exited.value.code == 2, captured
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured
    assert captured.err.startswith("autopeft: error: ")
    return captured.err.strip().removeprefix("autopeft: error: ")


def test_every_bad_flag_names_itself(clean_env: Path, taken_port: int,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    database = clean_env / "never.db"
    db = ["--database-url", f"sqlite:///{database}"]
    assert _refused(capsys, "--port", "-1", *db) == (
        "--port: Input should be greater than or equal to 0, got -1")
    assert _refused(capsys, "--database-url", "garbage").startswith(
        "--database-url: not a database URL (e.g. sqlite:///")
    assert _refused(capsys, "--database-url", "mysql://user:secret@host/db") == (
        "--database-url: autopeft stores studies in SQLite or PostgreSQL, got 'mysql' (e.g. "
        "sqlite:///path/autopeft.db or postgresql+psycopg://user:password@host/db)")
    assert "secret" not in _refused(capsys, "--database-url", "nosuch://user:secret@host/db")
    assert _refused(capsys, "--host", "", *db).startswith("--host: must not be empty")
    assert _refused(capsys, "--host", "no-such-host.invalid", *db).startswith(
        "--host: cannot resolve 'no-such-host.invalid'")
    assert _refused(capsys, "--port", str(taken_port), *db) == (
        f"--port: cannot listen on 127.0.0.1:{taken_port}: Address already in use (another "
        "server there? choose another --port)")
    (clean_env / "a-file").write_text("")
    assert _refused(capsys, "--artifact-dir", str(clean_env / "a-file"), *db).startswith(
        f"--artifact-dir: cannot create the artefact folder {clean_env / 'a-file'}")
    # a variable behind a flag is named as such
    monkeypatch.setenv("AUTOPEFT_PORT", "eighty")
    assert _refused(capsys, *db).startswith("AUTOPEFT_PORT: Input should be a valid integer")
    assert not database.exists()  # every one refused before migrating


def test_demo_flag_errors(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _refused(capsys, "--demo", str(clean_env)) == (
        f"--demo: {clean_env} holds no demo (no autopeft.db in it or in a demo-* folder in it)")
    assert _refused(capsys, "--demo", str(clean_env), "--database-url", "sqlite:///x.db") == (
        "--demo: serves the demo's own database and artefacts; leave out --database-url")


def test_an_unreachable_database_is_one_line_without_its_password(
        clean_env: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)  # no handler left behind
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "0", "--database-url",
              f"postgresql+psycopg://user:secret@127.0.0.1:{port}/db"])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"autopeft: error: --database-url: cannot open the database "
                          f"postgresql+psycopg://user:***@127.0.0.1:{port}/db: ")
    assert "secret" not in err


def test_the_start_line_masks_a_password_and_names_every_interface() -> None:
    shown = checked_database_url("postgresql+psycopg://me:s3cret@db:5432/autopeft", "--x")
    assert shown == "postgresql+psycopg://me:***@db:5432/autopeft"
    line = start_line(Settings(host="0.0.0.0", port=8000, artifact_dir="/srv/a"), shown, 2)
    assert line == ("autopeft serve: listening on 0.0.0.0:8000 (2 processes), dashboard "
                    "http://127.0.0.1:8000/ui, database postgresql+psycopg://me:***@db:5432/"
                    "autopeft, artefacts /srv/a")
    assert start_line(Settings(host="::1", port=1), "sqlite://", 1).startswith(
        "autopeft serve: listening on [::1]:1, dashboard http://[::1]:1/ui")


def _serve(*argv: str) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start ``autopeft serve ARGV`` and read its start line."""
    process = subprocess.Popen([sys.executable, "-m", "autopeft_service.cli", "serve", *argv],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    line = process.stdout.readline().rstrip("\n")
    match = re.match(START_LINE, line)
    if not match:
        process.kill()
        pytest.fail(f"start line {line!r}; stderr: {process.communicate(timeout=30)[1]}")
    return process, match


def test_serve_prints_its_start_line(tmp_path: Path) -> None:
    """On a free port (``--port 0``), a SQLite file and ``--artifact-dir``: the line is
    printed once the database is migrated and the port listens, at the address it names."""
    database, artifacts = tmp_path / "db" / "autopeft.db", tmp_path / "artefacts"
    process, match = _serve("--port", "0", "--database-url", f"sqlite:///{database}",
                            "--artifact-dir", str(artifacts))
    try:
        port, dashboard_port, shown, shown_artifacts, rest = match.groups()
        assert port == dashboard_port and port != "0" and rest == ""
        assert shown == f"sqlite:///{database}" and shown_artifacts == str(artifacts)
        assert database.is_file() and artifacts.is_dir()  # migrated and created at start
        # listening when the line shows: no wait for the first request
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=30).status_code == 200
        dashboard = httpx.get(f"http://127.0.0.1:{port}/ui", follow_redirects=True)
        assert dashboard.status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_serve_demo_uses_the_demo_folder_and_its_tokens(tmp_path: Path) -> None:
    """A folder of demos: the newest is served, with the token saved in it."""
    older, newer = (DemoFolder(tmp_path / name) for name in ("demo-20260101-000000",
                                                              "demo-20260102-000000"))
    for demo, token in ((older, "old-token"), (newer, "new-token")):
        demo.path.mkdir()
        demo.database.write_bytes(b"")  # an empty SQLite file: migrated at start
        demo.save_tokens(token, f"{token}-worker")
    assert DemoFolder.find(tmp_path) == DemoFolder.find(newer.path) == newer
    assert newer.tokens_file.stat().st_mode & 0o077 == 0  # the owner's only
    process, match = _serve("--demo", str(tmp_path), "--port", "0")
    process.terminate()
    process.communicate(timeout=30)
    assert match.group(3, 4, 5) == (f"sqlite:///{newer.database}", str(newer.artifact_dir),
                                    ", client token new-token")
    assert newer.database.stat().st_size > 0 and older.database.stat().st_size == 0

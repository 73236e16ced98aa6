"""``autopeft admin``: tenants and tokens on the server's database, as a subprocess; the
token it prints works against a real server at once, and revoking it there is a 401."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from autopeft_service.cli.main import main
from autopeft_service.testing.server import ServerThread, fast_settings
from tests.cli.test_studies import autopeft


def test_create_tenant_and_token_then_use_and_revoke_it(database_url: str,
                                                        tmp_path: Path) -> None:
    with ServerThread(fast_settings(database_url, tmp_path / "artifacts",
                                    token_cache_seconds=0)) as server:
        _create_use_and_revoke(server)


def _create_use_and_revoke(server: ServerThread) -> None:
    url = ["admin", "--database-url", server.settings.database_url]
    made = autopeft(*url, "tenant", "create", "team-a")
    assert made.returncode == 0 and "team-a created" in made.stdout, made.stderr
    created = autopeft(*url, "token", "create", "--tenant", "team-a", "--role", "member",
                       "--name", "alice")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and token.startswith("apt_") and len(token) >= 40
    with httpx.Client(base_url=server.base_url) as http:
        headers = {"Authorization": f"Bearer {token}"}
        assert http.get("/v1/studies", headers=headers).status_code == 200
        listed = autopeft(*url, "token", "list", "--tenant", "team-a")
        assert "alice" in listed.stdout and token not in listed.stdout
        token_id = listed.stdout.splitlines()[1].split()[0]
        assert autopeft(*url, "token", "revoke", token_id).returncode == 0
        assert http.get("/v1/studies", headers=headers).status_code == 401
    assert "revoked" in autopeft(*url, "token", "list").stdout
    # the CLI's changes are in the audit log, by the CLI's user and host
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    database = Database(server.settings.database_url)
    try:
        with database.session() as session:
            entries = [(row.action, row.target) for row in repo.list_audit(session)][:3]
            actors = {row.actor for row in repo.list_audit(session)[:3]}
    finally:
        database.dispose()
    target = f"token {token_id} (member of team-a): alice"
    assert entries == [("revoke_token", target), ("create_token", target),
                       ("create_tenant", "team-a (weight 1)")]
    assert len(actors) == 1 and actors.pop().startswith("admin CLI (")


def test_bad_admin_input_is_one_line_and_a_usage_exit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (``cli.main``): the same parser and handlers as the command, without a
    Python start-up per case."""
    url = ["admin", "--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    assert main([*url, "tenant", "create", "t1"]) == 0
    capsys.readouterr()
    for args, fragment in [
            (["tenant", "create", "t1"], "tenant 't1' exists already"),
            (["tenant", "create", "Bad Name"], "a tenant name is"),
            (["token", "create", "--tenant", "nobody", "--role", "member"],
             "tenant 'nobody' does not exist"),
            (["token", "create", "--tenant", "t1", "--role", "owner"], "--role"),
            (["token", "create", "--tenant", "t1", "--role", "reader", "--shared-pool"],
             "shared_pool is for worker tokens only"),
            (["token", "create", "--tenant", "t1", "--role", "reader",
              "--expires-in-days", "-1"], "--expires-in-days"),
            (["token", "revoke", "99"], "token 99 does not exist"),
            (["tenant", "set", "t1"], "nothing to change"),
            (["tenant", "set", "t1", "--max-parallel-trials", "lots"],
             "--max-parallel-trials")]:
        with pytest.raises(SystemExit) as exit_:
            main([*url, *args])
        out, err = capsys.readouterr()
        assert exit_.value.code == 2, (args, err)
        assert err.count("\n") == 1 and fragment in err, (args, err)
        assert "Traceback" not in err and out == ""


def test_tenant_set_changes_quotas_and_usage_shows_them(database_url: str,
                                                        tmp_path: Path) -> None:
    with ServerThread(fast_settings(database_url, tmp_path / "artifacts")) as server:
        url = ["admin", "--database-url", server.settings.database_url]
        assert autopeft(*url, "tenant", "create", "team-b").returncode == 0
        changed = autopeft(*url, "tenant", "set", "team-b", "--weight", "2",
                           "--max-running-studies", "3", "--max-queued-trials", "none")
        assert changed.returncode == 0, changed.stderr
        listed = autopeft(*url, "tenant", "list").stdout.splitlines()
        assert listed[-1].split() == ["2", "team-b", "2", "3", "-", "-"]
        token = autopeft(*url, "token", "create", "--tenant", "team-b", "--role",
                         "reader").stdout.strip()
        shown = autopeft("usage", "--server", server.base_url, "--token", token)
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if "team-b" in line)
        assert row.split() == ["team-b", "2", "0/3", "0/-", "0/-"]

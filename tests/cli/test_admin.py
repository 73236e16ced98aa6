"""``autopeft admin``: tenants and tokens on the server's database, as a subprocess; the
token it prints works against a real server at once, and revoking it there is a 401."""

from __future__ import annotations

from pathlib import Path

import httpx

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


def test_bad_admin_input_is_one_line_and_a_usage_exit(tmp_path: Path) -> None:
    url = ["admin", "--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    assert autopeft(*url, "tenant", "create", "t1").returncode == 0
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
            (["token", "revoke", "99"], "token 99 does not exist")]:
        result = autopeft(*url, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and fragment in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""


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
        nothing = autopeft(*url, "tenant", "set", "team-b")
        assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
        bad = autopeft(*url, "tenant", "set", "team-b", "--max-parallel-trials", "lots")
        assert bad.returncode == 2 and "--max-parallel-trials" in bad.stderr
        token = autopeft(*url, "token", "create", "--tenant", "team-b", "--role",
                         "reader").stdout.strip()
        shown = autopeft("usage", "--server", server.base_url, "--token", token)
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if "team-b" in line)
        assert row.split() == ["team-b", "2", "0/3", "0/-", "0/-"]

"""``autopeft admin``: tenants and tokens, on the server's database directly.

Whoever can open the database is its administrator, so this is how the first ``admin``
token is made (after that, ``/v1/admin/...`` does the same over HTTP). The database is the
server's (``--database-url``, else ``AUTOPEFT_DATABASE_URL``, else the SQLite default) and
is migrated to Alembic's head first, as ``autopeft serve`` does.

``token create`` prints the token alone on stdout (``TOKEN=$(autopeft admin token create
...)``); it is shown this once: the database keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from autopeft_service.cli.parser import USAGE_ERROR, fail
from autopeft_service.domain.tenancy import Role, check_tenant_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``autopeft admin`` and its sub-commands."""
    parser = subparsers.add_parser("admin", help="manage tenants and tokens (on the "
                                   "server's database)")
    parser.add_argument("--database-url", help="default: AUTOPEFT_DATABASE_URL or the SQLite "
                        "file under .autopeft/")
    groups = parser.add_subparsers(dest="admin_group", required=True,
                                   parser_class=type(parser))
    tenant = groups.add_parser("tenant", help="tenants").add_subparsers(
        dest="admin_command", required=True, parser_class=type(parser))
    create = tenant.add_parser("create", help="add a tenant")
    create.add_argument("name", type=_tenant_name)
    create.add_argument("--weight", type=_positive, default=1.0,
                        help="share of the shared worker pool (default 1)")
    create.set_defaults(handler=_run(_create_tenant))
    tenant.add_parser("list", help="list tenants with their weights and quotas").set_defaults(
        handler=_run(_list_tenants))
    limits = tenant.add_parser("set", help="change a tenant's weight or quotas ('none' "
                               "clears a quota)")
    limits.add_argument("name", type=_tenant_name)
    limits.add_argument("--weight", type=_positive)
    for quota, meaning in QUOTAS.items():
        limits.add_argument(f"--{quota.replace('_', '-')}", dest=quota, type=_quota,
                            default=_UNSET, metavar="N|none", help=meaning)
    limits.set_defaults(handler=_run(_set_limits))

    token = groups.add_parser("token", help="tokens").add_subparsers(
        dest="admin_command", required=True, parser_class=type(parser))
    make = token.add_parser("create", help="make a token; prints it alone on stdout")
    make.add_argument("--tenant", required=True, type=_tenant_name)
    make.add_argument("--role", required=True, choices=[r.value for r in Role])
    make.add_argument("--name", default="", help="a label: who or what holds it")
    make.add_argument("--expires-in-days", type=_positive, help="default: never expires")
    make.add_argument("--shared-pool", action="store_true",
                      help="worker tokens: serve every tenant (the shared pool)")
    make.set_defaults(handler=_run(_create_token))
    revoke = token.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=_run(_revoke_token))
    listing = token.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--tenant", type=_tenant_name)
    listing.set_defaults(handler=_run(_list_tokens))


#: The quotas ``tenant set`` changes, with what each bounds.
QUOTAS = {"max_running_studies": "studies running at once (one more: HTTP 429)",
          "max_parallel_trials": "trials leased at once",
          "max_queued_trials": "trials queued ready at once"}
#: A quota flag not given (``none`` clears one: None).
_UNSET = object()


def _quota(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number or 'none'") from None
    if not 0 <= number <= 10_000_000:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 10,000,000")
    return number


def _tenant_name(value: str) -> str:
    try:
        return check_tenant_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < number < 1e6:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number below 1e6")
    return number


def _run(action: Callable[..., None]) -> Callable[[argparse.Namespace], int]:
    """A handler: open and migrate the database, run ``action(session, args)`` in one
    transaction; a known error is one line and exit 1 (bad input: 2)."""

    def handler(args: argparse.Namespace) -> int:
        from autopeft_service.core.config import Settings
        from autopeft_service.storage import repository as repo
        from autopeft_service.storage.database import Database
        from autopeft_service.storage.migrate import upgrade_to_head

        url = args.database_url or Settings().database_url
        try:
            upgrade_to_head(url)
            database = Database(url)
        except Exception as error:  # noqa: BLE001 - any driver error: one line, exit 1
            fail(f"admin: --database-url: cannot open {url}: {type(error).__name__}: "
                 f"{error}")
        try:
            with database.session() as session:
                action(session, args)
        except repo.NotFound as error:
            fail(f"admin: {error}", USAGE_ERROR)
        except (repo.TenantExists, ValueError) as error:
            fail(f"admin: {error}", USAGE_ERROR)
        finally:
            database.dispose()
        return 0

    return handler


def cli_actor() -> str:
    """How the audit log names the admin CLI: whoever could open the database, as
    ``admin CLI (user@host)``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a bare container)
        user = "unknown"
    return f"admin CLI ({user}@{socket.gethostname()})"


def _create_tenant(session: Session, args: argparse.Namespace) -> None:
    from autopeft_service.storage import repository as repo

    row = repo.create_tenant(session, args.name, args.weight)
    repo.audit_admin(session, cli_actor(), None, row.id, "create_tenant",
                     f"{row.name} (weight {row.weight:g})")
    print(f"tenant {row.name} created (id {row.id}, weight {row.weight:g})")


def _list_tenants(session: Session, _args: argparse.Namespace) -> None:
    from autopeft_service.storage import repository as repo

    def shown(limit: int | None) -> str:
        return "-" if limit is None else str(limit)

    print(f"{'id':>4}  {'name':<24} {'weight':>6} {'studies':>8} {'parallel':>9} "
          f"{'queued':>8}")
    for row in repo.list_tenants(session):
        print(f"{row.id:>4}  {row.name:<24} {row.weight:>6g} "
              f"{shown(row.max_running_studies):>8} {shown(row.max_parallel_trials):>9} "
              f"{shown(row.max_queued_trials):>8}")


def _set_limits(session: Session, args: argparse.Namespace) -> None:
    from autopeft_service.storage import repository as repo

    changes: dict[str, float | int | None] = {
        quota: getattr(args, quota) for quota in QUOTAS if getattr(args, quota) is not _UNSET}
    if args.weight is not None:
        changes["weight"] = args.weight
    if not changes:
        raise ValueError("nothing to change: give --weight or a quota flag")
    row = repo.set_tenant_limits(session, args.name, changes)
    repo.audit_admin(session, cli_actor(), None, row.id, "set_tenant",
                     repo.limits_target(row.name, changes))
    print(f"tenant {row.name}: " + ", ".join(f"{key} {value}" for key, value in changes.items()))


def _create_token(session: Session, args: argparse.Namespace) -> None:
    from autopeft_service.storage import repository as repo

    row, secret = repo.create_token(session, args.tenant, Role(args.role),
                                    args.name, args.expires_in_days, args.shared_pool)
    session.flush()  # the token's id, for the audit
    repo.audit_admin(session, cli_actor(), None, row.tenant_id, "create_token",
                     repo.token_target(row, args.tenant))
    print(f"token {row.id} created for {args.tenant} ({args.role}); it is shown once",
          file=sys.stderr)
    print(secret)


def _revoke_token(session: Session, args: argparse.Namespace) -> None:
    from autopeft_service.storage import repository as repo

    row = repo.revoke_token(session, args.id)
    if repo.token_revoked_now(session, row.id):  # a second revoke changes nothing
        repo.audit_admin(session, cli_actor(), None, row.tenant_id, "revoke_token",
                         repo.token_target(row, repo.tenant_names(session)[row.tenant_id]))
    print(f"token {row.id} revoked (other server processes refuse it within seconds)")


def _list_tokens(session: Session, args: argparse.Namespace) -> None:
    from autopeft_service.storage import repository as repo

    names = repo.tenant_names(session)
    print(f"{'id':>4}  {'tenant':<16} {'role':<7} {'state':<8} {'expires':<10} name")
    for row in repo.list_tokens(session, args.tenant):
        state = ("revoked" if row.revoked_at is not None else
                 "expired" if row.expires_at is not None and row.expires_at <= time.time()
                 else "active")
        pool = " (shared pool)" if row.shared_pool else ""
        expires = ("never" if row.expires_at is None else
                   time.strftime("%Y-%m-%d", time.gmtime(row.expires_at)))
        print(f"{row.id:>4}  {names[row.tenant_id]:<16} {row.role:<7} {state:<8} "
              f"{expires:<10} {row.name}{pool}")

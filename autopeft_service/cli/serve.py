"""``autopeft serve``: check the flags, migrate the database to Alembic's head, print one
start line (address, dashboard, database, artefacts), then run the API server.

A bad value of a flag (or of the ``AUTOPEFT_*`` variable behind it) is one
``autopeft: error: <flag>: ...`` line on stderr: exit 2 for a value that cannot work (a port
out of range or taken, a host that does not resolve, a URL of no supported database, a demo
folder without a demo), exit 1 when a valid database cannot be opened (PostgreSQL down).
``--demo DIR`` serves a finished ``autopeft demo`` again: its SQLite file, artefacts and
tokens (``autopeft_service.local.DemoFolder``).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, fail

if TYPE_CHECKING:
    from autopeft_service.core.config import Settings

#: The flag that sets each Settings field (the others come from ``AUTOPEFT_<FIELD>``).
FLAGS: dict[str, str] = {"host": "--host", "port": "--port", "database_url": "--database-url",
                         "artifact_dir": "--artifact-dir"}
#: SQLAlchemy backends the store supports.
DATABASES = ("sqlite", "postgresql")
#: Connections the listening socket queues.
BACKLOG = 2048
#: uvicorn's exit status when the app failed to start (e.g. its lifespan startup).
STARTUP_FAILURE = 3
#: Hosts that mean "every interface": the dashboard URL printed names this machine instead.
WILDCARD_HOSTS = ("0.0.0.0", "::")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the search server (migrates first)")
    parser.add_argument("--host", help="default: AUTOPEFT_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: AUTOPEFT_PORT or 8000 (0: any "
                        "free port, printed at start)")
    parser.add_argument("--database-url", help="default: AUTOPEFT_DATABASE_URL or a SQLite "
                        "file under .autopeft/")
    parser.add_argument("--artifact-dir", metavar="DIR", help="folder of uploaded adapter "
                        "artefacts (default: AUTOPEFT_ARTIFACT_DIR or .autopeft/artifacts)")
    parser.add_argument("--demo", type=Path, metavar="DIR", help="serve a finished `autopeft "
                        "demo` again (its database, artefacts and tokens): DIR is its "
                        ".autopeft/demo-<time> folder, or .autopeft for the newest")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes sharing the port (default 1); all serve the "
                        "API, one at a time runs the proposer (leader election)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from autopeft_service.api.app import create_app
    from autopeft_service.api.metrics import shared_metrics_dir

    if args.processes < 1:
        fail(f"--processes: must be at least 1, got {args.processes}", USAGE_ERROR)
    overrides = flag_overrides(args)
    settings = load_settings(overrides)
    database = checked_database_url(settings.database_url, overrides.origin("database_url"))
    listener = listening_socket(settings.host, settings.port, overrides)
    port = int(listener.getsockname()[1])
    if port != settings.port:  # --port 0: the free port found is the one announced and used
        overrides.set("port", port, overrides.origin("port"))
        settings = settings.model_copy(update={"port": port})
    with listener:
        prepare_artifact_dir(settings.artifact_dir, overrides.origin("artifact_dir"))
        logging.basicConfig(level=args.log_level.upper())
        migrate(settings.database_url, database, overrides.origin("database_url"))
        token = settings.client_tokens[0] if args.demo is not None else None
        app = create_app(settings) if args.processes == 1 else None
        if app is None:
            # uvicorn binds the port again in the parent of its processes (a moment after
            # this line); with one process the port listens already when the line shows
            listener.close()
        print(start_line(settings, database, args.processes, token), flush=True)
        # Workers keep one connection for leases, heartbeats and reports: keep it open
        # longer than uvicorn's 5 s default so that a long-poll or a heartbeat period does
        # not race a server-side close (seen as read errors under load).
        options = {"host": settings.host, "port": settings.port, "log_level": args.log_level,
                   "timeout_graceful_shutdown": 5, "timeout_keep_alive": 75, "backlog": BACKLOG}
        if app is not None:
            server = uvicorn.Server(uvicorn.Config(app, **options))
            server.run(sockets=[listener])
            return 0 if server.started else STARTUP_FAILURE
    # Several processes: uvicorn imports the app in each; they read their settings from
    # the environment, so the command-line overrides travel there, and so does the shared
    # directory in which prometheus-client sums their histograms (GET /metrics).
    for name, value in overrides.values.items():
        os.environ[f"AUTOPEFT_{name.upper()}"] = (
            ",".join(value) if isinstance(value, list) else str(value))
    with shared_metrics_dir(args.processes):
        uvicorn.run("autopeft_service.api.app:create_app", factory=True,
                    workers=args.processes, **options)
    return 0


@dataclass
class Overrides:
    """The Settings fields the command line sets, and the flag that set each (for errors)."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, value: Any, origin: str) -> None:
        self.values[name] = value
        self.origins[name] = origin

    def origin(self, name: str) -> str:
        """The flag that set ``name``, else the variable it is read from."""
        return self.origins.get(name, f"AUTOPEFT_{name.upper()}")


def flag_overrides(args: argparse.Namespace) -> Overrides:
    """The Settings fields the flags set (``--demo``: database, artefacts and tokens).

    Raises:
        SystemExit: 2, ``--demo`` beside ``--database-url``/``--artifact-dir``, or ``--demo``
        names no demo.
    """
    overrides = Overrides()
    for name, flag in FLAGS.items():
        if getattr(args, name) is not None:
            overrides.set(name, getattr(args, name), flag)
    if args.demo is not None:
        for name, value in demo_settings(args.demo, overrides).items():
            overrides.set(name, value, "--demo")
    return overrides


def demo_settings(path: Path, given: Overrides) -> dict[str, Any]:
    """Settings serving the demo at ``path`` (``DemoFolder.find``) with its own tokens.

    Raises:
        SystemExit: 2, with a flag that the demo sets, or no demo at ``path``.
    """
    from autopeft_service.local import DemoFolder

    clash = [FLAGS[name] for name in ("database_url", "artifact_dir") if name in given.values]
    if clash:
        fail(f"--demo: serves the demo's own database and artefacts; leave out "
             f"{' and '.join(clash)}", USAGE_ERROR)
    try:
        demo = DemoFolder.find(path)
        client_token, worker_token = demo.tokens()
    except (OSError, ValueError) as error:
        fail(f"--demo: {error}", USAGE_ERROR)
    return {"database_url": demo.database_url, "artifact_dir": str(demo.artifact_dir),
            "client_tokens": [client_token], "worker_tokens": [worker_token]}


def load_settings(overrides: Overrides) -> Settings:
    """Settings from the environment with ``overrides`` on top.

    Raises:
        SystemExit: 2, a value is invalid (names its flag or variable and the value).
    """
    from pydantic import ValidationError

    from autopeft_service.core.config import Settings

    try:
        return Settings(**overrides.values)
    except ValidationError as error:
        item = error.errors()[0]
        field = str(item["loc"][0]) if item["loc"] else "settings"
        fail(f"{overrides.origin(field)}: {item['msg']}, got {item.get('input')!r}",
             USAGE_ERROR)


def checked_database_url(url: str, origin: str) -> str:
    """Check that ``url`` names a SQLite or PostgreSQL database SQLAlchemy can load.

    Args:
        url: the SQLAlchemy URL.
        origin: the flag or variable it came from (for the error).

    Returns:
        The URL as it may be shown: its password masked as ``***``.

    Raises:
        SystemExit: 2, not a URL, an unknown dialect or driver, or another database.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "e.g. sqlite:///path/autopeft.db or postgresql+psycopg://user:password@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(f"{origin}: not a database URL ({example})", USAGE_ERROR)
    masked = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        fail(f"{origin}: unknown database {parsed.drivername!r} in {masked} ({example})",
             USAGE_ERROR)
    if parsed.get_backend_name() not in DATABASES:
        fail(f"{origin}: autopeft stores studies in SQLite or PostgreSQL, got "
             f"{parsed.get_backend_name()!r} ({example})", USAGE_ERROR)
    return masked


def listening_socket(host: str, port: int, overrides: Overrides) -> socket.socket:
    """Bind ``host:port`` and listen, so that connections wait in the backlog from the start
    line on (one process serves from this socket; several let uvicorn bind again).

    Returns:
        The listening socket; for port 0 bound to a free port the system chose.

    Raises:
        SystemExit: 2, the host does not resolve or is not this machine's, or the port is
        taken (or reserved).
    """
    host_flag, port_flag = overrides.origin("host"), overrides.origin("port")
    if not host.strip():
        fail(f"{host_flag}: must not be empty (127.0.0.1: this machine; 0.0.0.0: every "
             "interface)", USAGE_ERROR)
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        fail(f"{host_flag}: cannot resolve {host!r}: {getattr(error, 'strerror', error)}",
             USAGE_ERROR)
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        flag = host_flag if error.errno == errno.EADDRNOTAVAIL else port_flag
        hint = (" (another server there? choose another --port)"
                if error.errno == errno.EADDRINUSE else "")
        fail(f"{flag}: cannot listen on {_authority(host, port)}: {error.strerror}{hint}",
             USAGE_ERROR)
    return listener


def prepare_artifact_dir(path: str, origin: str) -> None:
    """Create the artefact folder now, so that a bad one fails at start, not at an upload.

    Raises:
        SystemExit: 2, the folder cannot be created (a file is there, no permission).
    """
    try:
        Path(path).expanduser().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"{origin}: cannot create the artefact folder {path}: {error.strerror}",
             USAGE_ERROR)


def migrate(url: str, shown: str, origin: str) -> None:
    """Bring the database to Alembic's head.

    Raises:
        SystemExit: 1, the database cannot be opened or migrated (the first line of why).
    """
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from autopeft_service.storage.migrate import upgrade_to_head

    try:
        upgrade_to_head(url)
    except (SQLAlchemyError, CommandError, OSError, ImportError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        fail(f"{origin}: cannot open the database {shown}: {reason}", RUNTIME_ERROR)


def start_line(settings: Settings, database: str, processes: int,
               client_token: str | None = None) -> str:
    """The line ``serve`` prints once the database is ready.

    Args:
        settings: the server's settings (host, port, artefact folder).
        database: the database URL to show (password masked).
        processes: server processes.
        client_token: a token to show (``--demo``: the demo's own).
    """
    browse = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    parts = [f"autopeft serve: listening on {_authority(settings.host, settings.port)}"
             + (f" ({processes} processes)" if processes > 1 else ""),
             f"dashboard http://{_authority(browse, settings.port)}/ui",
             f"database {database}", f"artefacts {settings.artifact_dir}"]
    if client_token:
        parts.append(f"client token {client_token}")
    return ", ".join(parts)


def _authority(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

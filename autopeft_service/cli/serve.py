"""``autopeft serve``: migrate the database to Alembic's head, then run the API server."""

from __future__ import annotations

import argparse
import logging


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the search server (migrates first)")
    parser.add_argument("--host", help="default: AUTOPEFT_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: AUTOPEFT_PORT or 8000")
    parser.add_argument("--database-url", help="default: AUTOPEFT_DATABASE_URL or a SQLite "
                        "file under .autopeft/")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes sharing the port (default 1); all serve the "
                        "API, one at a time runs the proposer (leader election)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from autopeft_service.api.app import create_app
    from autopeft_service.api.metrics import shared_metrics_dir
    from autopeft_service.core.config import Settings
    from autopeft_service.storage.migrate import upgrade_to_head

    overrides = {k: v for k, v in {"host": args.host, "port": args.port,
                                   "database_url": args.database_url}.items() if v is not None}
    if args.processes < 1:
        from autopeft_service.cli.parser import USAGE_ERROR, fail

        fail(f"--processes: must be at least 1, got {args.processes}", USAGE_ERROR)
    settings = Settings(**overrides)
    logging.basicConfig(level=args.log_level.upper())
    upgrade_to_head(settings.database_url)
    # Workers keep one connection for leases, heartbeats and reports: keep it open longer
    # than uvicorn's 5 s default so that a long-poll or a heartbeat period does not race a
    # server-side close (seen as read errors under load).
    options = {"host": settings.host, "port": settings.port, "log_level": args.log_level,
               "timeout_graceful_shutdown": 5, "timeout_keep_alive": 75, "backlog": 2048}
    if args.processes == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Several processes: uvicorn imports the app in each; they read their settings from
    # the environment, so the command-line overrides travel there, and so does the shared
    # directory in which prometheus-client sums their histograms (GET /metrics).
    for name, value in overrides.items():
        os.environ[f"AUTOPEFT_{name.upper()}"] = str(value)
    with shared_metrics_dir(args.processes):
        uvicorn.run("autopeft_service.api.app:create_app", factory=True,
                    workers=args.processes, **options)
    return 0

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
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from autopeft_service.api.app import create_app
    from autopeft_service.core.config import Settings
    from autopeft_service.storage.migrate import upgrade_to_head

    overrides = {k: v for k, v in {"host": args.host, "port": args.port,
                                   "database_url": args.database_url}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=args.log_level.upper())
    upgrade_to_head(settings.database_url)
    # Workers keep one connection for leases, heartbeats and reports: keep it open longer
    # than uvicorn's 5 s default so that a long-poll or a heartbeat period does not race a
    # server-side close (seen as read errors under load).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=args.log_level, timeout_graceful_shutdown=5, timeout_keep_alive=75,
                backlog=2048)
    return 0

"""``autopeft worker``: pull trials from a server and train them (one per GPU or machine)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autopeft_service.cli.arguments import non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from workers.client import ServerClient
    from workers.worker import WorkerStats


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="train trials leased from a server")
    parser.add_argument("--server", default=os.environ.get("AUTOPEFT_SERVER"),
                        help="server URL (default: AUTOPEFT_SERVER)")
    parser.add_argument("--token", default=os.environ.get("AUTOPEFT_WORKER_TOKEN"),
                        help="worker token (default: AUTOPEFT_WORKER_TOKEN)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:N, mps or xpu; checked before the first lease")
    parser.add_argument("--name", help="worker name (default: host:device)")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--max-trials", type=positive_int, help="exit after this many trials")
    parser.add_argument("--exit-when-idle", type=positive_float, metavar="SECONDS",
                        help="exit when no trial came for this long")
    parser.add_argument("--trial-timeout", type=positive_float, metavar="SECONDS",
                        help="stop and fail a trial that trains longer than this")
    parser.add_argument("--connect-timeout", type=non_negative_float, default=60.0, metavar="SECONDS",
                        help="at start, wait this long for the server to answer (default 60); "
                        "later outages are waited out without limit")
    parser.add_argument("--artifact-dir", metavar="DIR",
                        help="where this worker keeps artefacts until the server has them "
                        "(default: $AUTOPEFT_CACHE_DIR or ~/.cache/autopeft, then "
                        "worker-artifacts/NAME)")
    parser.add_argument("--no-artifacts", action="store_true",
                        help="do not save or upload trained adapters (results only)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="info (default): each trial's phases and progress, at most "
                        "a line per 30 s; warning: problems only")
    parser.set_defaults(handler=run)


def main(argv: Sequence[str]) -> int:
    """Run ``autopeft worker ...`` in this process (``argv`` starts with ``worker``): what a
    task launched by ``autopeft launch slurm`` runs. Exits like the command (SystemExit)."""
    from autopeft_service.cli.parser import OneLineParser

    parser = OneLineParser(prog="autopeft")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser))
    args = parser.parse_args(list(argv))
    return int(args.handler(args) or 0)


def run(args: argparse.Namespace) -> int:
    """Check the server, then lease and train until stopped. Exit 1 with one line when
    the server cannot be reached within ``--connect-timeout`` or refuses the token."""
    from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, fail
    from autopeft_service.domain.errors import ConfigError
    from workers.device import check_device_name

    if not args.server or not args.token:
        fail("worker: --server and --token are required (or AUTOPEFT_SERVER and "
             "AUTOPEFT_WORKER_TOKEN)", USAGE_ERROR)
    try:
        check_device_name(args.device)  # cheap: before connecting
    except ConfigError as error:
        fail(f"worker: {error}", USAGE_ERROR)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":  # httpx logs every request at INFO: a line per heartbeat
        logging.getLogger("httpx").setLevel(logging.WARNING)
    from workers.client import (
        Interrupted,
        ProtocolError,
        ServerClient,
        ServerUnavailable,
        default_worker_name,
    )

    name = args.name or default_worker_name(args.device)
    try:
        client = ServerClient(args.server, args.token, name)
    except ConfigError as error:
        fail(f"worker: {error}", USAGE_ERROR)
    with client:
        try:
            # Before torch is imported (seconds): a wrong address is said at once.
            client.wait_until_reachable(args.connect_timeout)
            stats = _work(client, args)
        except ConfigError as error:  # the device is missing here: no trial is leased
            fail(f"worker: {error}", USAGE_ERROR)
        except Interrupted:
            return 130
        except ServerUnavailable as error:
            fail(f"worker: {error} (is `autopeft serve` running there? --server)",
                 RUNTIME_ERROR)
        except ProtocolError as error:
            hint = " (give a worker token: --token or AUTOPEFT_WORKER_TOKEN)" \
                if " 401" in str(error) or " 403" in str(error) else ""
            fail(f"worker: the server refused: {error}{hint}", RUNTIME_ERROR)
    print(f"worker {name}: {stats.completed} completed, {stats.failed} failed, "
          f"{stats.preempted} preempted, {stats.stopped} stopped")
    return 0


def _work(client: ServerClient, args: argparse.Namespace) -> WorkerStats:
    """Build the trial runner and run the worker loop; returns its WorkerStats."""
    import torch

    from workers.commands.trial import quiet_libraries
    from workers.device import check_device
    from workers.trial import TrialRunner
    from workers.uploads import PendingUploads
    from workers.worker import Worker

    device = check_device(args.device)  # ConfigError before the first lease
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    uploads = None if args.no_artifacts else PendingUploads(
        _artifact_dir(args, client.worker), client)
    worker = Worker(client, TrialRunner(device=device),
                    trial_timeout=args.trial_timeout, uploads=uploads)
    worker.install_signal_handlers()
    return worker.run(max_trials=args.max_trials, idle_exit=args.exit_when_idle)


def _artifact_dir(args: argparse.Namespace, name: str) -> Path:
    """``--artifact-dir``, else ``<cache>/worker-artifacts/<name>`` (one folder per worker
    name: two workers never share one)."""
    if args.artifact_dir:
        return Path(args.artifact_dir).expanduser()
    root = os.environ.get("AUTOPEFT_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "autopeft"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return base / "worker-artifacts" / safe

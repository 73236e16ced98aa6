"""``autopeft worker``: pull trials from a server and train them (one per GPU or machine)."""

from __future__ import annotations

import argparse
import logging
import os


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="train trials leased from a server")
    parser.add_argument("--server", default=os.environ.get("AUTOPEFT_SERVER"),
                        help="server URL (default: AUTOPEFT_SERVER)")
    parser.add_argument("--token", default=os.environ.get("AUTOPEFT_WORKER_TOKEN"),
                        help="worker token (default: AUTOPEFT_WORKER_TOKEN)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, ...")
    parser.add_argument("--name", help="worker name (default: host:device)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--max-trials", type=int, help="exit after this many trials")
    parser.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                        help="exit when no trial came for this long")
    parser.add_argument("--trial-timeout", type=float, metavar="SECONDS",
                        help="stop and fail a trial that trains longer than this")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft_service.cli.parser import USAGE_ERROR, fail

    if not args.server or not args.token:
        fail("worker: --server and --token are required (or AUTOPEFT_SERVER and "
             "AUTOPEFT_WORKER_TOKEN)", USAGE_ERROR)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from autopeft_service.cli.trial import quiet_libraries
    from workers.client import ServerClient
    from workers.trial import TrialRunner
    from workers.worker import Worker, default_worker_name

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or default_worker_name(args.device)
    with ServerClient(args.server, args.token, name) as client:
        worker = Worker(client, TrialRunner(device=args.device),
                        trial_timeout=args.trial_timeout)
        worker.install_signal_handlers()
        stats = worker.run(max_trials=args.max_trials, idle_exit=args.exit_when_idle)
    print(f"worker {name}: {stats.completed} completed, {stats.failed} failed, "
          f"{stats.preempted} preempted, {stats.stopped} stopped")
    return 0

"""Entry point of the ``autopeft`` command."""

from __future__ import annotations

import os
from collections.abc import Sequence

from autopeft_service.cli import demo, export, launch, retrain, serve, studies, trial, worker
from autopeft_service.cli.parser import RUNTIME_ERROR, OneLineParser, fail


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="autopeft", description=(
        "Search parameter-efficient fine-tuning configurations by multi-objective "
        "Bayesian optimisation."))
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    trial.add_parser(subparsers)
    demo.add_parser(subparsers)
    serve.add_parser(subparsers)
    studies.add_parser(subparsers)
    retrain.add_parser(subparsers)
    worker.add_parser(subparsers)
    launch.add_parser(subparsers)
    export.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns its exit status.

    Every error a user can cause is caught where it arises and said in one line with its
    flag. This last net keeps a bug's traceback off the terminal too: one line naming the
    error, exit 1, and the traceback only with ``AUTOPEFT_DEBUG=1``.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - the last net; see the docstring
        if os.environ.get("AUTOPEFT_DEBUG"):
            raise
        fail(f"{args.command}: unexpected {type(error).__name__}: {error} (this is a bug; "
             "AUTOPEFT_DEBUG=1 shows the traceback)", RUNTIME_ERROR)

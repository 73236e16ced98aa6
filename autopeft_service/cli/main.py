"""Entry point of the ``autopeft`` command."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType

from autopeft_service.cli import admin, serve, studies
from autopeft_service.cli.parser import RUNTIME_ERROR, OneLineParser, fail

#: Entry-point group of the commands other packages add (the workers' ``trial``, ``worker``,
#: ``retrain``, ``launch``, ``export`` and ``demo``, declared in pyproject.toml): the server
#: package names no worker module, and a new command needs no line here.
COMMAND_GROUP = "autopeft.commands"


def build_parser() -> OneLineParser:
    """The ``autopeft`` parser: the server side's commands, then every registered one.

    Raises:
        ImportError: a registered command's module cannot be imported (a broken install).
    """
    parser = OneLineParser(prog="autopeft", description=(
        "Search parameter-efficient fine-tuning configurations by multi-objective "
        "Bayesian optimisation."))
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    serve.add_parser(subparsers)
    admin.add_parser(subparsers)
    studies.add_parser(subparsers)
    for command in registered_commands():
        command.add_parser(subparsers)
    return parser


def registered_commands() -> list[ModuleType]:
    """The modules registered under ``COMMAND_GROUP``, in the order their names sort."""
    found = sorted(entry_points(group=COMMAND_GROUP), key=lambda point: point.name)
    return [point.load() for point in found]


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

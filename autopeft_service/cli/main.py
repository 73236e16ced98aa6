"""Entry point of the ``autopeft`` command."""

from __future__ import annotations

from collections.abc import Sequence

from autopeft_service.cli import demo, export, launch, retrain, serve, studies, trial, worker
from autopeft_service.cli.parser import OneLineParser


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
    """Parse ``argv`` and run the chosen sub-command; returns its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)

"""``autopeft submit | status | watch | pareto | cancel | studies | usage | download``: use a
running server.

Each sub-command talks to the server through ``autopeft_service.client`` (``--server``,
default ``$AUTOPEFT_SERVER`` or http://127.0.0.1:8000; ``--token``, default
``$AUTOPEFT_TOKEN``, a client token). Failures print one ``autopeft: error: ...`` line:
exit 2 for usage and spec errors (a missing or invalid spec file, a spec the server
rejects with 422, no token), 1 for server and runtime errors (unknown study, bad token,
server unreachable).

This module registers the commands; their parts live beside it: ``arguments`` (argparse
types), ``connection`` (server, token, the runner), ``tables`` (formatting),
``study_commands`` and ``download`` (the handlers).
"""

from __future__ import annotations

import argparse

from autopeft_service.cli import study_commands
from autopeft_service.cli.arguments import positive_seconds, study_id, trial_number
from autopeft_service.cli.connection import (
    INTERRUPTED,
    SERVER_ENV,
    TOKEN_ENV,
    Handler,
    common_arguments,
    connection,
    explain,
    runner,
)
from autopeft_service.cli.download import download
from autopeft_service.cli.study_commands import watch_study

__all__ = ["INTERRUPTED", "SERVER_ENV", "TOKEN_ENV", "add_parser", "common_arguments",
           "connection", "explain", "positive_seconds", "study_id", "trial_number",
           "watch_study"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register submit, status, watch, pareto, cancel, studies, usage and download."""
    common = common_arguments()

    def command(name: str, help_text: str, handler: Handler, with_id: bool = True,
                study_goes_on: bool = False) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                       parents=[common])
        if with_id:
            parser.add_argument("id", type=study_id, metavar="ID", help="study id")
        parser.set_defaults(handler=runner(handler, study_goes_on=study_goes_on))
        return parser

    submit = command("submit", "start a study from a YAML or JSON spec file",
                     study_commands.submit, with_id=False)
    submit.add_argument("spec", metavar="SPEC", help="StudySpec file (.yaml, .yml or .json)")
    submit.add_argument("--json", action="store_true", help="print the created study as JSON")
    submit.add_argument("--warm-start", type=study_id, metavar="ID", action="append",
                        dest="warm_start",
                        help="learn from an earlier study of the same family (repeatable); "
                        "sets the spec's warm_start.from_studies")
    submit.add_argument("--warm-start-mode", choices=("seed", "model"), default=None,
                        help="with --warm-start: seed (default: its Pareto configurations "
                        "as the first trials) or model (its observations in the saasbo "
                        "model as another task)")

    status = command("status", "show a study's progress, best trial and Pareto size",
                     study_commands.status)
    status.add_argument("--json", action="store_true", help="print the study as JSON")

    watch = command("watch", "follow a study live until it ends, then print its Pareto front",
                    study_commands.watch, study_goes_on=True)
    watch.add_argument("--interval", type=positive_seconds, default=2.0, metavar="S",
                       help="seconds between polls (default: 2)")

    pareto = command("pareto", "print the Pareto front: held-out score vs. parameter share",
                     study_commands.pareto)
    pareto.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    pareto.add_argument("--front", choices=("observed", "model"), default="observed",
                        help="observed (default): completed trials' observed scores; model: "
                        "the model's predicted full-training scores with 90 %% intervals")

    cancel = command("cancel", "stop a study (queued and running trials are cancelled)",
                     study_commands.cancel)
    cancel.add_argument("--json", action="store_true", help="print the study as JSON")

    studies = command("studies", "list the studies", study_commands.studies, with_id=False)
    studies.add_argument("--json", action="store_true", help="print the studies as JSON")

    usage = command("usage", "show your tenant's running studies, leased and ready trials "
                    "against its quotas", study_commands.usage, with_id=False)
    usage.add_argument("--json", action="store_true", help="print the API's JSON")

    fetch = command("download", "download a trial's trained adapter (artefact folder)",
                    download)
    fetch.add_argument("trial", type=trial_number, metavar="TRIAL",
                       help="trial number (the # column of `autopeft pareto`)")
    fetch.add_argument("-o", "--output", required=True, metavar="DIR",
                       help="folder to write the artefact into (created; must be empty)")

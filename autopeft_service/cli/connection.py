"""How a command reaches the server: ``--server``, ``--token``, ``--timeout``, and the runner
that builds the client and turns every expected failure into one ``autopeft: error:`` line.

Exit codes: 2 for usage and spec errors (a missing or invalid spec, a spec the server
rejects with 422, no token), 1 for server and runtime errors (unknown study, bad token,
server unreachable), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from autopeft_service.cli.arguments import positive_seconds
from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, OneLineParser, fail
from autopeft_service.domain.errors import ConfigError

if TYPE_CHECKING:
    from autopeft_service.client import AutopeftClient, ClientError

SERVER_ENV = "AUTOPEFT_SERVER"
TOKEN_ENV = "AUTOPEFT_TOKEN"
INTERRUPTED = 130

#: A command's body: given the connected client and the parsed flags, its exit status.
Handler = Callable[["AutopeftClient", argparse.Namespace], int]


def common_arguments() -> argparse.ArgumentParser:
    """A parent parser with ``--server``, ``--token`` and ``--timeout``, shared by every
    command that talks to a server."""
    common = OneLineParser(add_help=False)
    common.add_argument("--server", metavar="URL",
                        help=f"server URL (default: ${SERVER_ENV} or http://127.0.0.1:8000)")
    common.add_argument("--token", metavar="T",
                        help=f"client bearer token (default: ${TOKEN_ENV})")
    common.add_argument("--timeout", type=positive_seconds, default=30.0, metavar="S",
                        help="seconds per HTTP request (default: 30)")
    return common


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """The server URL and the token, from the flags or else the environment.

    Exits (status 2) with one line when the URL is not http(s) or no token is given.
    """
    server = (args.server or os.environ.get(SERVER_ENV) or "").strip()
    if not server:
        from autopeft_service.client import DEFAULT_SERVER

        server = DEFAULT_SERVER
    if not server.startswith(("http://", "https://")):
        fail(f"--server: must be an http:// or https:// URL, got {server!r}", USAGE_ERROR)
    token = (args.token or os.environ.get(TOKEN_ENV) or "").strip()
    if not token:
        fail(f"no token: pass --token or set {TOKEN_ENV} (a client token of the server)",
             USAGE_ERROR)
    return server, token


def explain(error: ClientError) -> str:
    """The client error with a hint at the flag that fixes it."""
    message = str(error)
    if error.status_code in (401, 403):
        return f"{message} (give a client token: --token or ${TOKEN_ENV})"
    if error.status_code is None and message.startswith("cannot reach"):
        return f"{message} (is `autopeft serve` running there? --server or ${SERVER_ENV})"
    return message


def runner(handler: Handler, study_goes_on: bool = False
           ) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: build the client, turn every expected failure into one line.

    Args:
        handler: the command's body.
        study_goes_on: on Ctrl-C, say that the study (``args.id``) goes on and how to
            cancel it (``watch``: interrupting it stops the watching only).
    """

    def run(args: argparse.Namespace) -> int:
        from autopeft_service.client import AutopeftClient, ClientError

        server, token = connection(args)
        try:
            with AutopeftClient(server, token, timeout=args.timeout) as client:
                return handler(client, args)
        except ConfigError as error:
            fail(str(error), USAGE_ERROR)
        except ClientError as error:
            fail(explain(error), USAGE_ERROR if error.status_code == 422 else RUNTIME_ERROR)
        except KeyboardInterrupt:
            study = getattr(args, "id", None)
            fail("interrupted" + (f"; study {study} goes on (autopeft cancel {study} stops it)"
                                  if study and study_goes_on else ""), INTERRUPTED)

    return run

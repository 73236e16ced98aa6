"""mkdocs hook: pages generated from the code at build time, offline, so they cannot drift.

- ``api/routes.md`` and ``api/openapi.json``: the server's OpenAPI document, from
  ``create_app`` on a throwaway SQLite URL (the app is built, never started: nothing is
  connected or migrated).
- ``cli/help.md``: every ``autopeft`` command's ``--help``, from the CLI's own parser.
- ``contributing.md``: the repository's ``CONTRIBUTING.md`` (outside docs/), with its
  ``docs/...`` links made relative to the site, added to the nav when the file exists.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from mkdocs.structure.files import File, Files

CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"


def openapi_document() -> dict:
    from autopeft_service.api.app import create_app
    from autopeft_service.core.config import Settings

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=f"sqlite:///{folder}/unused.db",
                            client_tokens=["docs-client"], worker_tokens=["docs-worker"])
        return create_app(settings).openapi()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def routes_page(document: dict) -> str:
    rows = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            role = "token" if operation.get("security") else "none"
            summary = (operation.get("description") or operation.get("summary") or "")
            summary = summary.split("\n\n")[0]
            codes = ", ".join(sorted(operation.get("responses", {})))
            rows.append(f"| `{method.upper()} {path}` | {role} | {codes} | {_cell(summary)} |")
    return "\n".join([
        "# Routes (generated from the OpenAPI document)",
        "",
        f"{document['info']['title']} {document['info']['version']}: every route the server's "
        "OpenAPI document lists, with the status codes it documents. Written by "
        "`docs/hooks/generated.py` at each `mkdocs build` from `create_app()`; the whole "
        "document is [openapi.json](openapi.json) (a running server also serves it at "
        "`/openapi.json`, and Swagger UI at `/docs`). Which role (client or worker token) "
        "each route needs: [the route table](../api.md).",
        "",
        "| route | auth | documented codes | what |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prefix, parser)]
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prefix} {name}")
    return found


def cli_page() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width
    from autopeft_service.cli.main import build_parser

    parts = ["# Every command's `--help` (generated)", "",
             "Written by `docs/hooks/generated.py` at each `mkdocs build` from the CLI's own "
             "parser (`autopeft_service/cli/main.py`), so it is what `autopeft <command> --help` "
             "prints. How the commands fit together: [the CLI reference](../cli.md).", ""]
    for name, parser in _commands(build_parser(), "autopeft"):
        parts += [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_config(config):
    if CONTRIBUTING.exists():
        config["nav"].append({"Contributing": "contributing.md"})
    return config


def on_files(files: Files, config) -> Files:
    document = openapi_document()
    files.append(File.generated(config, "api/openapi.json", content=json.dumps(document, indent=1)))
    files.append(File.generated(config, "api/routes.md", content=routes_page(document)))
    files.append(File.generated(config, "cli/help.md", content=cli_page()))
    if CONTRIBUTING.exists():
        text = CONTRIBUTING.read_text().replace("](docs/", "](")
        files.append(File.generated(config, "contributing.md", content=text))
    return files

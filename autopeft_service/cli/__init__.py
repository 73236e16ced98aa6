"""The ``autopeft`` command line: one sub-command per module in this package."""

from autopeft_service.cli.main import main

__all__ = ["main"]

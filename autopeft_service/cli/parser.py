"""An argparse parser whose errors are one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

USAGE_ERROR = 2
RUNTIME_ERROR = 1


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser that reports a bad argument as ``autopeft: error: ...`` and exits 2.

    argparse's default prints the whole usage block first; one line is easier to read in
    scripts and logs (``--help`` still shows the usage).
    """

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog.split()[-1] if ' ' in self.prog else self.prog}: {message}",
             USAGE_ERROR)


def fail(message: str, code: int = RUNTIME_ERROR) -> NoReturn:
    """Print ``autopeft: error: <message>`` (first line only) to stderr and exit."""
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"autopeft: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


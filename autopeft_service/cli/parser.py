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


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (the error names the value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (the error names the value)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def seed_value(text: str) -> int:
    """argparse type: a seed from 0 to ``domain.trial.MAX_SEED``."""
    from autopeft_service.domain.trial import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value

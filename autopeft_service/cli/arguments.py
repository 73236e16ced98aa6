"""argparse types of the commands that talk to a server: study ids, trial numbers, seconds.

Each raises ``argparse.ArgumentTypeError`` with a one-line reason, which the parser prints
as ``autopeft: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse

#: The largest id or number the API accepts (a 32-bit signed integer).
MAX_ID = 2**31 - 1


def study_id(text: str) -> int:
    """argparse type of a study id: a positive integer the API accepts."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"invalid study id {text!r}: must be a positive integer")
    return value


def trial_number(text: str) -> int:
    """argparse type of a trial number within its study (0, 1, ...)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"invalid trial number {text!r}: must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """argparse type of a duration in seconds: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value

"""argparse types of the commands: study ids, trial numbers, seconds, counts, seeds.

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


def positive_seconds(text: str) -> float:
    """argparse type of a duration in seconds: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (the error names the value)."""
    value = _whole_number(text)
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

    value = _whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None

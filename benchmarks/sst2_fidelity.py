"""The SST-2 fidelity of issue 13 in one place: the probe (``sst2_probe.py``) that chose it
and the table (``real_table.py``) that uses it take the same flags with the same defaults,
so the two can never drift apart (see docs/real_table_sst2.md for why these values)."""

from __future__ import annotations

import argparse


def add_fidelity_arguments(parser: argparse.ArgumentParser) -> None:
    """The training settings of one trial at the table's fidelity: one epoch of 1,000
    sentences at max length 32, batch 16, learning rate 1e-3, 500 held-out sentences."""
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per worker)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--max-train-examples", type=int, default=1000)
    parser.add_argument("--max-held-out", type=int, default=500)
    parser.add_argument("--max-dev-examples", type=int, default=None)

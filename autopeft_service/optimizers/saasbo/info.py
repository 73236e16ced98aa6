"""Diagnostics of a ``saasbo`` proposal (its own module: the optimiser and fleet mode both
fill it, and neither imports the other's module for it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autopeft_service.optimizers.base import TransferReport
from autopeft_service.optimizers.saasbo.nuts import NutsStats

__all__ = ["ProposalInfo"]


@dataclass
class ProposalInfo:
    """Diagnostics of the last model-based batch (for benchmarks and logs)."""

    fit_seconds: float = 0.0
    acquisition_seconds: float = 0.0
    nuts: NutsStats | None = None
    exact_share: bool = False
    evaluated: int = 0
    baseline: int = 0
    #: per greedy step: (pool points scored, points scored while climbing, rounds)
    search: list[tuple[int, int, int]] = field(default_factory=list)
    #: fleet mode (Thompson sampling, ``saasbo/fleet.py``) chose this batch
    fleet: bool = False
    #: fleet mode: the kept NUTS samples were reused (no NUTS run)
    reused_fit: bool = False
    #: a warm start's model: the learned task correlations, whether the sources were used
    transfer: TransferReport | None = None

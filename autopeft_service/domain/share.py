"""The parameter-share objective, computed by the server before training.

The share is analytic (``param_count``) from the configuration and the backbone's
dimensions, so it is known for every candidate the optimiser considers and never modelled.
``StudySpec.param_share`` picks the count: ``deployed`` (default; AutoPEFT and He et al.
count what is stored per task after training, the prefix MLP folded away) or
``trainable`` (what trains: training memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig


@dataclass(frozen=True)
class PlannedCounts:
    """What the server expects a trial to report.

    Attributes:
        share: the share objective, percent of the backbone.
        trainable: trainable parameters without the task head.
        deployed: parameters stored per task after training.
    """

    share: float
    trainable: int
    deployed: int


def share_percent(config: PeftConfig, dims: BackboneDims, count: str = "deployed") -> float:
    """The share objective of ``config``: ``count`` parameters (``deployed`` or ``trainable``)
    in percent of the backbone's."""
    counts = count_parameters(config, dims)
    return counts.deployed_percent if count == "deployed" else counts.trainable_percent


def planned_counts(config: PeftConfig, dims: BackboneDims, count: str = "deployed") -> PlannedCounts:
    """The share and both counts of ``config`` on ``dims``."""
    counts = count_parameters(config, dims)
    share = counts.deployed_percent if count == "deployed" else counts.trainable_percent
    return PlannedCounts(share=share, trainable=counts.trainable, deployed=counts.deployed)

"""What the optimiser benchmarks share: the synthetic problem on the AutoPEFT encoding, the
service optimisers behind one ``propose`` call, and quieting Ax and Optuna.

Imported by ``proposer_speed.py`` and ``search_quality.py`` (scripts run from this folder,
so it is on ``sys.path``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.search_space import AutoPeftSpace
from autopeft_service.optimizers.base import History, Observation
from autopeft_service.optimizers.sobol import SobolOptimizer
from workers.fake_worker import synthetic_score

#: Hypervolume reference of the synthetic problems: score 0.5, share 10 %.
REFERENCE = (0.5, 10.0)

Point = dict[str, int]


def wide_backbone(num_layers: int) -> BackboneDims:
    """BERT-base widths (hidden 768) with ``num_layers`` layers."""
    return BackboneDims.from_hf_config({
        "model_type": "bert", "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": num_layers, "num_attention_heads": 12, "vocab_size": 30522,
        "max_position_embeddings": 512})


class SyntheticProblem:
    """The fake worker's score on a 12- or 24-layer, hidden-768 backbone (15 or 27
    dimensions); the parameter share is the engine's exact count."""

    reference = REFERENCE

    def __init__(self, dimension: int) -> None:
        self.name = f"synthetic-{dimension}"
        self.dims = wide_backbone(dimension - 3)
        self.space = AutoPeftSpace.for_backbone(self.dims)

    def observe(self, point: Point) -> Observation | None:
        """The fake worker's result, or None for an invalid point (a failed trial)."""
        if not self.space.is_valid(point):
            return None
        config = self.space.decode(point)
        return Observation(params=dict(point), score=synthetic_score(config),
                           param_share=count_parameters(config, self.dims).trainable_percent)

    def sobol(self, count: int, seed: int) -> list[Point]:
        return [s.params for s in SobolOptimizer(self.space, seed=seed).suggest(count, History())]


class ServiceOptimizer:
    """One of the service's own optimisers behind ``propose(n, completed, pending, failed)``."""

    def __init__(self, name: str, optimizer: Any) -> None:
        self.name = name
        self.optimizer = optimizer

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point] = ()) -> list[Point]:
        history = History(completed=completed, pending=pending, failed=failed)
        return [s.params for s in self.optimizer.suggest(n, history)]

    def details(self) -> dict[str, Any]:
        return {}


def quiet_libraries() -> None:
    """Ax sets INFO on each of its loggers as they are imported; Optuna logs every trial."""
    logging.getLogger("ax").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ax."):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import optuna
    except ImportError:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)

"""What the optimiser benchmarks share: the synthetic problems (the fake worker's score on
the AutoPEFT encoding; a noisy task model on every space family), the service optimisers
behind one ``propose`` call, and quieting Ax and Optuna.

Imported by ``proposer_speed.py`` and ``search_quality.py`` (scripts run from this folder,
so it is on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import LoraTarget, PeftConfig, Position
from autopeft_service.domain.share import share_percent
from autopeft_service.domain.spaces import AutoPeftSpace, SearchSpaceBase, point_key, space_for_backbone
from autopeft_service.optimizers.base import History, Observation
from autopeft_service.optimizers.sobol import SobolOptimizer
from workers.fake_worker import synthetic_score

#: Hypervolume reference of the synthetic problems: score 0.5, share 10 %.
REFERENCE = (0.5, 10.0)

Point = dict[str, Any]


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

    def share(self, point: Mapping[str, Any]) -> float:
        """The exact share objective of a valid point (as ``observe`` reports it)."""
        return count_parameters(self.space.decode(point), self.dims).trainable_percent

    def sobol(self, count: int, seed: int) -> list[Point]:
        return [s.params for s in SobolOptimizer(self.space, seed=seed).suggest(count, History())]


# ----------------------------------------------------------------------------- task model
#
# A synthetic task for every space family, on MiniLM-L6 dimensions (6 layers, hidden 384),
# built to look like a real fine-tuning task rather than like a test function:
#
# * few relevant dimensions: only modules in the top third of the layers (layers 4 and 5)
#   help, and among LoRA's projections only query, value and the FFN output; the lower
#   layers, the other projections, the learned-scale flag, BitFit's placement outside the
#   top layers ... only cost parameters;
# * not monotone in size: the score is a peaked function of the top layers' capacity C,
#   the weighted bits log2(1 + size) of their modules; it peaks at ``CAPACITY_PEAK`` (a
#   serial adapter of 32 at the FFN of both top layers, or LoRA of rank 8-16 on query and
#   value there) and falls beyond: a module too large loses, as an over-parameterised
#   adapter overfits a small task;
# * a scale that matters as He et al. (2022) and Hu et al. (2022) report it: a parallel
#   adapter's scale s = 4 beats s = 1; LoRA's alpha/r = 2 is best;
# * noisy: Gaussian noise of sd ``NOISE_SD`` (one accuracy point: the seed-to-seed spread of
#   fine-tuning on a small GLUE task) on every evaluation, drawn from a seed that is a hash
#   of (problem, run seed, point, how many times the run has evaluated that point before):
#   reproducible, different for a repeated evaluation, the same for every method at a seed.
#
# Score = 0.55 + 0.38 g(C) + noise with g(C) = ((C/C*) e^(1 - C/C*))^2, which is 0 at C = 0,
# 0.68 at C*/2, 1 at C = C* and 0.54 at 2 C*: in 0.55 .. 0.93 (accuracy-like) before noise.
# With the space's sizes: a serial adapter at the FFN of both top layers scores 0.87 at
# bottleneck 8, 0.93 at 32 and 0.84 at 256; LoRA on query and value there 0.89 at rank 4,
# 0.93 at 8 and 0.80 at 64.

#: Sd of the Gaussian noise on each evaluation's score.
NOISE_SD = 0.01
#: Capacity (weighted bits in the top layers) at which the score peaks.
CAPACITY_PEAK = 10.0
#: Weight of one bit of each module kind, per position or LoRA projection.
SERIAL_WEIGHT = {Position.FFN: 1.0, Position.ATTENTION: 0.7}
PARALLEL_WEIGHT = {Position.FFN: 1.0, Position.ATTENTION: 0.7}
LORA_WEIGHT = {LoraTarget.QUERY: 0.75, LoraTarget.VALUE: 0.75, LoraTarget.FFN_OUT: 0.5}
PREFIX_WEIGHT = 0.3
#: Bits of BitFit in a top layer (its size is fixed).
BITFIT_BITS = 0.5


def top_layers(num_layers: int) -> range:
    """The layers whose modules count: the top third (at least one)."""
    return range(num_layers - max(1, num_layers // 3), num_layers)


def parallel_scale_factor(scale: float) -> float:
    """A parallel adapter's scale: 0.8 at s = 1, 0.925 at 2, 1.05 at 4 (capped there)."""
    return 0.8 + 0.125 * min(max(math.log2(scale), 0.0), 2.0)


def lora_scale_factor(alpha_per_rank: float) -> float:
    """LoRA's alpha/r: 1 at 2, 0.9 at 1 and 4, 0.6 at 0.5 (at least 0.2)."""
    return max(0.2, 1.0 - 0.1 * (math.log2(alpha_per_rank) - 1.0) ** 2)


def capacity(config: PeftConfig) -> float:
    """Weighted bits (log2(1 + size)) of the modules in the top layers (module notes)."""
    total = 0.0
    for i in top_layers(config.num_layers):
        for adapter in config.serial_adapters:
            total += SERIAL_WEIGHT[adapter.position] * math.log2(1 + adapter.sizes[i])
        for parallel in config.parallel_adapters:
            total += (PARALLEL_WEIGHT[parallel.position] * parallel_scale_factor(parallel.scale)
                      * math.log2(1 + parallel.sizes[i]))
        for lora in config.lora:
            rank = lora.ranks[i]
            if rank:
                weight = sum(LORA_WEIGHT.get(t, 0.0) for t in lora.targets)
                total += weight * lora_scale_factor(lora.scaling(rank)) * math.log2(1 + rank)
        if config.prefix is not None:
            total += PREFIX_WEIGHT * math.log2(1 + config.prefix.lengths[i])
        if config.bitfit is not None and config.bitfit.layers[i]:
            total += BITFIT_BITS
    return total


def task_score(config: PeftConfig) -> float:
    """The noise-free score of a configuration (module notes): 0.55 .. 0.93."""
    ratio = capacity(config) / CAPACITY_PEAK
    return 0.55 + 0.38 * (ratio * math.exp(1.0 - ratio)) ** 2


#: Problem name -> space family of the noisy task-model problems.
FAMILY_PROBLEMS = {"synthetic-unified": "unified", "synthetic-design": "design_space",
                   "synthetic-lora": "lora"}
#: Overrides of the default space per family (``lora``: one rank per layer).
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {"lora": {"granularity": "layer"}}
#: Hypervolume reference of the family problems: score 0.5, deployed share 1 % (the fronts
#: reach the peak score at 0.1-0.5 %; 10 % would make the hypervolume almost only the best
#: score found).
FAMILY_REFERENCE = (0.5, 1.0)


def family_space(kind: str, dims: BackboneDims = MINILM_DIMS) -> SearchSpaceBase:
    """The default space of a family on ``dims`` (``FAMILY_OVERRIDES`` applied)."""
    return space_for_backbone(kind, dims, **FAMILY_OVERRIDES.get(kind, {}))


class FamilyProblem:
    """The noisy task model (module notes) on one space family on MiniLM-L6 dimensions.

    The share objective is the exact deployed share of the decoded configuration, as the
    server computes it. ``observe`` adds noise; ``noiseless`` is the score without it (the
    benchmark's hypervolume is computed on it: the true quality of what a method found).

    Args:
        kind: the family (``unified``, ``design_space``, ``lora`` or ``autopeft``).
        seed: the run's seed (enters every noise seed).
        noise: sd of the noise (0: deterministic).
    """

    reference = FAMILY_REFERENCE

    def __init__(self, kind: str, seed: int = 0, noise: float = NOISE_SD,
                 name: str | None = None) -> None:
        self.kind = kind
        self.name = name or next((n for n, k in FAMILY_PROBLEMS.items() if k == kind),
                                 f"synthetic-{kind}")
        self.dims = MINILM_DIMS
        self.space = family_space(kind, self.dims)
        self.seed = seed
        self.noise = noise
        self._evaluations: dict[tuple[tuple[str, Any], ...], int] = {}

    def share(self, point: Mapping[str, Any]) -> float:
        """The exact deployed share (percent) of a valid point."""
        return share_percent(self.space.decode(point), self.dims, "deployed")

    def noiseless(self, point: Mapping[str, Any]) -> float:
        """The score of a valid point without noise."""
        return task_score(self.space.decode(point))

    def noise_seed(self, point: Mapping[str, Any], repeat: int) -> int:
        """Seed of the noise of the ``repeat``-th evaluation (from 0) of ``point`` in this run."""
        text = repr((self.name, self.seed, point_key(point), repeat)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")

    def observe(self, point: Mapping[str, Any]) -> Observation | None:
        """A noisy result, or None for an invalid (or non-canonical) point: a failed trial."""
        if not self.space.is_valid(point):
            return None
        key = point_key(point)
        repeat = self._evaluations.get(key, 0)
        self._evaluations[key] = repeat + 1
        noise = self.noise * float(np.random.default_rng(self.noise_seed(point, repeat))
                                   .standard_normal()) if self.noise else 0.0
        return Observation(params=dict(point), score=self.noiseless(point) + noise,
                           param_share=self.share(point))

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

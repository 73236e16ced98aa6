"""Fleet mode: large batches with many points pending, chosen by Thompson sampling from the
SAAS posterior, with NUTS hyperparameters reused until the data grew enough.

Why: the greedy qLogNEHVI batch (``optimizer._optimize``) scores every candidate jointly
with every pending point, so its cost grows with the batch and the pending set; a fleet of
256 workers keeps about 256 points pending and needs about one proposal a second. Here:

- **Hyperparameters** (NUTS) are sampled on at most ``fit_rows`` completed trials (the
  Pareto front first, then a seeded random subset) and kept in this process (``_CACHE``)
  until the study's completed trials grew by ``refit_growth`` percent; in between, the GP is
  re-conditioned on every completed trial with the kept samples (one Cholesky per sample:
  milliseconds), so new results shape the posterior at once.
- **Selection**: one candidate pool (random valid points and the neighbours of the front
  and best points, never a point already in the study), one joint posterior draw of the
  score over the pool per batch slot, cycling through the MCMC samples; each slot takes the
  unchosen candidate whose drawn score adds the most hypervolume to the observed front at
  its exact share (the share is known before training), or, when no draw improves on the
  front, the one closest to it. Thompson sampling needs no pending points: the draws
  differ, so the batch spreads (Kandasamy et al., 2018; the TS-HVI baseline of Daulton et
  al., 2020).

The price: proposals are not repeatable across a restart as the greedy path's are (the
kept hyperparameters depend on when the process last sampled them), and a pending point
only keeps its own configuration out of the batch, not its neighbourhood.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from autopeft_service.domain.spaces import SearchSpaceBase
from autopeft_service.optimizers.base import History, OptimizerError, Point, seen_configs
from autopeft_service.optimizers.saasbo.encoding import Encoding, _keys
from autopeft_service.optimizers.saasbo.info import ProposalInfo
from autopeft_service.optimizers.saasbo.nuts import load_samples, nuts_samples
from autopeft_service.optimizers.saasbo.settings import SaasboSettings


class FleetHost(Protocol):
    """What fleet mode reads of the optimiser it serves (``SaasboOptimizer``): typed here so
    that this module never imports the optimiser's, which imports this one."""

    seed: int
    settings: SaasboSettings
    encoding: Encoding
    space: SearchSpaceBase
    reference_point: tuple[float, float]
    share: Callable[[Point], float] | None

    def _anchors(self, history: History) -> Tensor: ...

    def _exact_shares(self, index: Tensor) -> Tensor: ...


@dataclass
class KeptFit:
    """Hyperparameter samples and the number of completed trials when they were drawn."""

    completed: int
    samples: dict[str, Tensor]


#: Per process: a study's last NUTS samples (keyed by ``_study_key``).
_CACHE: dict[tuple[Any, ...], KeptFit] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 64


def uses_fleet_mode(optimizer: FleetHost, n: int, history: History) -> bool:
    """Fleet mode for a batch of ``n`` when ``n`` plus the pending points exceed the
    threshold (and the share is exact: the hypervolume gain of a draw needs it)."""
    return optimizer.share is not None and \
        n + len(history.pending) > optimizer.settings.fleet_threshold


def _study_key(optimizer: FleetHost, history: History) -> tuple[Any, ...]:
    """Identifies a study across calls in one process (a pool child builds a fresh
    optimiser per call): its seed, settings, space and first completed points."""
    first = tuple(tuple(sorted(o.params.items())) for o in history.completed[:4])
    return (optimizer.seed, optimizer.settings, optimizer.encoding.dimension,
            type(optimizer.space).__name__, first)


def _fit_rows(scores: Tensor, shares: Tensor, limit: int, seed: int) -> Tensor:
    """Indices of at most ``limit`` rows for NUTS: the Pareto front, then a seeded random
    subset of the rest."""
    from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices

    n = scores.shape[0]
    if n <= limit:
        return torch.arange(n)
    front = pareto_indices([ObjectivePoint(score=float(a), share=float(b))
                            for a, b in zip(scores.tolist(), shares.tolist(), strict=True)])
    front = front[:limit]
    rest = torch.tensor(sorted(set(range(n)) - set(front)), dtype=torch.long)
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.tensor(front, dtype=torch.long), rest[order[:limit - len(front)]]])


def hypervolume_gain(scores: Tensor, shares: Tensor, front_scores: Tensor,
                     front_shares: Tensor, reference: tuple[float, float]) -> Tensor:
    """Hypervolume each candidate (score max, share min) would add to a front, alone.

    Args:
        scores, shares: ``... x M`` candidates.
        front_scores, front_shares: the current non-dominated points (any order).
        reference: (score floor, share ceiling).

    Returns:
        ``... x M`` gains (0 for a dominated candidate).
    """
    floor, ceiling = reference
    order = torch.argsort(front_shares)
    edges = torch.cat([front_shares[order].clamp(max=ceiling),
                       torch.tensor([ceiling], dtype=shares.dtype)])
    # the best front score reachable at share x is a staircase: level i on [edge_i, edge_i+1)
    levels = torch.cummax(front_scores[order].clamp(min=floor), dim=0).values
    levels = torch.cat([torch.tensor([floor], dtype=scores.dtype), levels])
    edges = torch.cat([torch.tensor([-math.inf], dtype=shares.dtype), edges])
    lo, hi = edges[:-1], edges[1:]  # segment i: [lo_i, hi_i) at level levels_i
    width = (hi - torch.maximum(lo, shares.unsqueeze(-1))).clamp(min=0)
    height = (scores.unsqueeze(-1) - levels).clamp(min=0)
    inside = (shares < ceiling) & (scores > floor)
    return (width * height).sum(-1) * inside


def gap_to_front(scores: Tensor, shares: Tensor, front_scores: Tensor,
                 front_shares: Tensor, floor: float) -> Tensor:
    """Score above the best front score at a share no larger, or above the floor when
    that is higher (negative when dominated)."""
    reachable = torch.where(front_shares.unsqueeze(0) <= shares.reshape(-1, 1),
                            front_scores.unsqueeze(0),
                            torch.tensor(-math.inf, dtype=scores.dtype))
    best = reachable.max(dim=-1).values.clamp(min=floor)
    return scores - best.reshape(scores.shape)


def thompson_batch(optimizer: FleetHost, n: int, history: History, seed: int,
                   info: ProposalInfo) -> list[Tensor]:
    """``n`` new index vectors by Thompson sampling (module docstring).

    Raises:
        OptimizerError: the model could not be built.
    """
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices

    settings = optimizer.settings
    encoding = optimizer.encoding
    completed = history.completed
    X = encoding.to_unit(encoding.to_index([o.params for o in completed]))
    scores = torch.tensor([o.score for o in completed], dtype=torch.float64)
    shares = torch.tensor([o.param_share for o in completed], dtype=torch.float64)
    if not (torch.isfinite(scores).all() and torch.isfinite(shares).all()):
        raise OptimizerError("saasbo: a completed trial has a non-finite score or share")

    start = time.perf_counter()
    key = _study_key(optimizer, history)
    with _CACHE_LOCK:
        kept = _CACHE.get(key)
    grown = kept is None or len(completed) >= kept.completed * (1 + settings.refit_growth / 100)
    if grown:
        rows = _fit_rows(scores, shares, settings.fit_rows, seed)
        sub = SaasFullyBayesianSingleTaskGP(X[rows], scores[rows].unsqueeze(-1),
                                            outcome_transform=Standardize(m=1))
        samples, info.nuts = nuts_samples(sub.pyro_model.train_X, sub.pyro_model.train_Y,
                                          settings, seed)
        kept = KeptFit(len(completed), samples)
        with _CACHE_LOCK:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = kept
    assert kept is not None
    info.reused_fit = not grown
    gp = SaasFullyBayesianSingleTaskGP(X, scores.unsqueeze(-1), outcome_transform=Standardize(m=1))
    load_samples(gp, kept.samples)
    info.fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    excluded = set(_keys(encoding.to_index(history.points())))
    pool = torch.cat([encoding.random_valid(settings.ts_candidates, generator),
                      encoding.neighbours(optimizer._anchors(history))])
    fresh: list[tuple[int, ...]] = []
    seen_now: set[tuple[int, ...]] = set()
    for key in _keys(pool):
        if key not in excluded and key not in seen_now:
            seen_now.add(key)
            fresh.append(key)
    if len(fresh) > settings.ts_candidates:  # keep every neighbour, thin the random points
        order = torch.randperm(len(fresh), generator=generator)[:settings.ts_candidates]
        fresh = [fresh[i] for i in sorted(order.tolist())]
    if not fresh:
        return []
    candidates = torch.tensor(fresh, dtype=torch.long)
    candidate_shares = optimizer._exact_shares(candidates)
    front = pareto_indices([ObjectivePoint(score=float(a), share=float(b))
                            for a, b in zip(scores.tolist(), shares.tolist(), strict=True)])
    front_scores, front_shares = scores[front], shares[front]
    reference = optimizer.reference_point

    mcmc = int(kept.samples["outputscale"].shape[0])
    draws_per_sample = math.ceil(n / mcmc)
    with torch.no_grad():
        posterior = gp.posterior(encoding.to_unit(candidates))
        draws = posterior.rsample(torch.Size([draws_per_sample]))  # k x MCMC x M x 1
    draws = draws.squeeze(-1).reshape(-1, candidates.shape[0])  # (k * MCMC) x M
    gains = hypervolume_gain(draws, candidate_shares.expand_as(draws), front_scores,
                             front_shares, reference)
    gaps = gap_to_front(draws, candidate_shares.expand_as(draws), front_scores, front_shares,
                        reference[0])
    configs = seen_configs(optimizer.space, history)
    taken = torch.zeros(candidates.shape[0], dtype=torch.bool)
    chosen: list[Tensor] = []
    for slot in range(n):
        # slot j uses MCMC sample j mod S (draws are ordered draw-major, sample-minor)
        row = (slot % mcmc) + mcmc * (slot // mcmc)
        value = torch.where(gains[row] > 0, gains[row], gaps[row] - 1e9)
        value = value.masked_fill(taken, -math.inf)
        while True:
            best = int(torch.argmax(value))
            if not math.isfinite(float(value[best])):
                info.acquisition_seconds = time.perf_counter() - start
                return chosen  # the pool is used up
            taken[best] = True
            if configs is not None:  # a non-injective space: a new configuration only
                config = optimizer.space.config_key(encoding.to_point(candidates[best]))
                if config in configs:
                    value[best] = -math.inf
                    continue
                configs.add(config)
            break
        chosen.append(candidates[best])
    info.evaluated = int(candidates.shape[0]) * draws.shape[0]
    info.acquisition_seconds = time.perf_counter() - start
    return chosen


def clear_cache() -> None:
    """Forget every kept fit (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()

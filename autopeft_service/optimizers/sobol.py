"""Quasi-random (scrambled Sobol) proposals over any discrete search space.

Each dimension of a Sobol point in [0, 1)^D picks one of its parameter's values (equal
bins, whatever the parameter's kind); the point is put in the space's canonical form
(parameters without effect at their first value). The sequence is regenerated from its
start on every call and points already in the study's history (or invalid: e.g. no layer
or no module on) are skipped, so the position in the sequence is a function of the
history: a restarted server continues the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterator

from scipy.stats import qmc

from autopeft_service.domain.spaces import ParamValue, SearchSpaceBase
from autopeft_service.optimizers.base import (
    History,
    OptimizerError,
    Suggestion,
    point_key,
    seen_configs,
)

#: Sobol points drawn per batch while looking for new valid points.
_BATCH = 64


class SobolOptimizer:
    """Scrambled Sobol sequence (scipy) mapped onto the space's discrete values."""

    name = "sobol"

    def __init__(self, space: SearchSpaceBase, seed: int = 0, max_draws: int = 100_000) -> None:
        self.space = space
        self.seed = seed
        self.max_draws = max_draws
        self._parameters = space.parameters()

    def points(self) -> Iterator[dict[str, ParamValue]]:
        """Yield the space points of the Sobol sequence in order (valid ones only)."""
        sampler = qmc.Sobol(d=len(self._parameters), scramble=True, seed=self.seed)
        drawn = 0
        while drawn < self.max_draws:
            for row in sampler.random(_BATCH):
                point = self.space.canonical({
                    p.name: p.values[min(int(u * len(p.values)), len(p.values) - 1)]
                    for p, u in zip(self._parameters, row, strict=True)})
                if self.space.rule_error(point) is None:
                    yield point
            drawn += _BATCH

    def suggest(self, n: int, history: History) -> list[Suggestion]:
        """The next ``n`` valid Sobol points not in ``history``.

        Raises:
            OptimizerError: fewer than ``n`` new points within ``max_draws`` draws.
        """
        seen = history.seen()
        configs = seen_configs(self.space, history)  # None: points are configurations
        out: list[Suggestion] = []
        for point in self.points():
            if len(out) == n:
                break
            key = point_key(point)
            if key in seen:
                continue
            seen.add(key)
            if configs is not None:
                config = self.space.config_key(point)
                if config in configs:
                    continue
                configs.add(config)
            out.append(Suggestion(params=point, generator=self.name))
        if len(out) < n:
            raise OptimizerError(f"sobol: only {len(out)} new points of {n} found in "
                                 f"{self.max_draws} draws (space nearly exhausted)")
        return out

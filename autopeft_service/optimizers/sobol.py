"""Quasi-random (scrambled Sobol) proposals over any discrete search space.

Each dimension of a Sobol point in [0, 1)^D picks one of its parameter's values (equal
bins, whatever the parameter's kind); the point is put in the space's canonical form
(parameters without effect at their first value). Points already in the study's history
(or invalid: e.g. no layer or no module on) are skipped, so the position in the sequence is
a function of the history: a restarted server continues the same sequence.

Bounded work (no study may hold the proposer, issue 31):

* **Draws.** The sampler is *exhausted* at ``max_draws`` draws from the sequence's start,
  or once ``stall_draws`` draws in a row gave no point the sequence had not given before
  (a space whose valid points the sampler cannot reach: Chen et al.'s design space on 256
  layers yields about 1,200 distinct configurations in 100,000 draws). Both are properties
  of the sequence alone, not of the history, so a restart finds the same end. Exhaustion
  raises ``SamplerExhausted`` carrying the new points found before it.
* **Time.** ``suggest_within`` stops at a deadline and returns what it found; the next call
  resumes where the scan stopped instead of redrawing from the start (which would redo
  the previous calls' draws and never get further). A resumed scan is used only while
  every point it returned last time is in the history (they were queued); otherwise the
  scan restarts from the sequence's start, which gives the same points (the history only
  grows), only slower.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from scipy.stats import qmc

from autopeft_service.domain.spaces import ParamValue, SearchSpaceBase
from autopeft_service.optimizers.base import (
    History,
    SamplerExhausted,
    Suggestion,
    point_key,
    seen_configs,
)

#: Sobol points drawn per batch from scipy (a power of two keeps the sequence balanced).
_BATCH = 64
#: Default draw limit: 2.6 draws per trial of the largest budget a study may ask for
#: (``Budget.total_trials`` <= 100,000); a few minutes of CPU in all on a 256-layer space,
#: spread over the proposer's time slices.
MAX_DRAWS = 262_144
#: Default draws in a row without a point new to the sequence after which it is exhausted.
STALL_DRAWS = 32_768

Key = tuple[tuple[str, ParamValue], ...]


@dataclass
class _Scan:
    """Where a scan of the sequence stands (kept between calls to resume it).

    Attributes:
        stream: the sequence's valid points (None for an invalid draw), in order.
        position: draws consumed so far.
        productive: position after the last draw that gave a point new to the sequence.
        met: hashes of the points the sequence has given (telling a first occurrence from
            a repeat; hashes, not keys: a 256-layer point's key is ~17 KB).
        returned: keys of the points the last call returned.
        history_size: points in the history the last call saw, plus those it returned.
        exhausted: why the sequence is exhausted, once it is.
    """

    stream: Iterator[dict[str, ParamValue] | None]
    position: int = 0
    productive: int = 0
    met: set[int] = field(default_factory=set)
    returned: list[Key] = field(default_factory=list)
    history_size: int = 0
    exhausted: str | None = None


class SobolOptimizer:
    """Scrambled Sobol sequence (scipy) mapped onto the space's discrete values.

    Args:
        space: the search space.
        seed: the scramble's seed.
        max_draws: draws from the start after which the sampler is exhausted.
        stall_draws: draws in a row without a point new to the sequence after which it is
            exhausted.
    """

    name = "sobol"

    def __init__(self, space: SearchSpaceBase, seed: int = 0, max_draws: int = MAX_DRAWS,
                 stall_draws: int = STALL_DRAWS) -> None:
        self.space = space
        self.seed = seed
        self.max_draws = max_draws
        self.stall_draws = stall_draws
        self._parameters = space.parameters()
        self._scan: _Scan | None = None

    def _draws(self) -> Iterator[dict[str, ParamValue] | None]:
        """Each draw of the sequence in order, up to ``max_draws``: its canonical point
        when valid, else None."""
        sampler = qmc.Sobol(d=len(self._parameters), scramble=True, seed=self.seed)
        drawn = 0
        while drawn < self.max_draws:
            for row in sampler.random(_BATCH)[:self.max_draws - drawn]:
                point = self.space.canonical({
                    p.name: p.values[min(int(u * len(p.values)), len(p.values) - 1)]
                    for p, u in zip(self._parameters, row, strict=True)})
                yield point if self.space.rule_error(point) is None else None
            drawn += _BATCH

    def points(self) -> Iterator[dict[str, ParamValue]]:
        """Yield the space points of the Sobol sequence in order (valid ones only)."""
        return (point for point in self._draws() if point is not None)

    def suggest(self, n: int, history: History) -> list[Suggestion]:
        """The next ``n`` valid Sobol points not in ``history``.

        Raises:
            SamplerExhausted: fewer than ``n`` new points before the sequence's end.
        """
        return self._collect(n, history, deadline=None)

    def suggest_within(self, n: int, history: History, seconds: float) -> list[Suggestion]:
        """Up to ``n`` new points found within ``seconds``; fewer when time ran out (the
        next call resumes the scan).

        Raises:
            SamplerExhausted: the sequence ended first (its ``found`` holds the new points).
        """
        return self._collect(n, history, deadline=time.monotonic() + seconds)

    def _resume(self, seen: set[Key]) -> _Scan:
        """The scan to continue: the kept one when every point it returned last is in the
        history, else a new one from the sequence's start."""
        scan = self._scan
        # A study's history only grows; a smaller one, or one without the points returned
        # last (not queued: a budget race), is not the continuation of the kept scan.
        if scan is None or len(seen) < scan.history_size \
                or not all(key in seen for key in scan.returned):
            scan = self._scan = _Scan(stream=self._draws())
        return scan

    def _collect(self, n: int, history: History, deadline: float | None) -> list[Suggestion]:
        """Scan on for up to ``n`` new points, until ``deadline`` (monotonic) if given.

        Raises:
            SamplerExhausted: the sequence ended before ``n`` were found.
        """
        seen = history.seen()
        configs = seen_configs(self.space, history)  # None: points are configurations
        scan = self._resume(seen)
        out: list[Suggestion] = []
        while len(out) < n and scan.exhausted is None:
            if deadline is not None and time.monotonic() >= deadline:
                break  # out of time: the next call resumes here
            try:
                point = next(scan.stream)
            except StopIteration:
                scan.exhausted = f"its draw limit, {self.max_draws} draws"
                break
            scan.position += 1
            if point is not None and self._first_occurrence(scan, point):
                suggestion = self._new(point, seen, configs)
                if suggestion is not None:
                    out.append(suggestion)
            if scan.position - scan.productive >= self.stall_draws:
                scan.exhausted = (f"no point new to the sequence in its last "
                                  f"{self.stall_draws} draws")
        scan.returned = [point_key(s.params) for s in out]
        scan.history_size = len(seen)  # the returned points included
        if scan.exhausted is not None and len(out) < n:
            raise SamplerExhausted(
                f"sobol: only {len(out)} new points of {n} found in {scan.position} draws: "
                f"the sequence is exhausted ({scan.exhausted}); the space has no other "
                "configuration this sampler reaches", found=out, draws=scan.position)
        return out

    @staticmethod
    def _first_occurrence(scan: _Scan, point: dict[str, ParamValue]) -> bool:
        """Record a valid draw; True when the sequence gives it for the first time."""
        digest = hash(point_key(point))
        if digest in scan.met:
            return False
        scan.met.add(digest)
        scan.productive = scan.position
        return True

    def _new(self, point: dict[str, ParamValue], seen: set[Key],
             configs: set[str] | None) -> Suggestion | None:
        """The suggestion of a point not yet in the study (nor its configuration), else
        None; records it as seen."""
        key = point_key(point)
        if key in seen:
            return None
        seen.add(key)
        if configs is not None:
            config = self.space.config_key(point)
            if config in configs:
                return None
            configs.add(config)
        return Suggestion(params=point, generator=self.name)

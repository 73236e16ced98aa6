"""Settings of the ``saasbo`` optimiser and the limits that keep one study from stalling the
proposer (which serves every study in turn)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from autopeft_service.domain.errors import ConfigError

#: Largest model input (columns of the encoding: flags, ordinals, one column per category)
#: the model takes. One proposer thread serves every study in turn and a pass's cost grows
#: with the dimension: four proposals at 20 trials took 35 / 41 / 72 s at 27 / 35 / 67
#: dimensions with one torch thread, and no proposal within 900 s at 259 (this 2-core
#: machine, another trial training beside it; benchmarks/proposer_bounds.py), so a larger
#: space would stall every other study.
MAX_DIMENSION = 67
#: Completed trials needed before the model is used (below it, Sobol continues).
MIN_COMPLETED = 2
#: Training rows are padded to a multiple of this (one compiled NUTS program per size).
PAD_ROWS = 16
#: Candidates scored per acquisition call (bounds memory: batch x MCMC x MC samples).
EVAL_CHUNK = 256
#: Rounds of the local search at most.
MAX_ROUNDS = 12

#: Upper bounds of the settings: every one of them scales the cost of a fit or of the
#: acquisition, and the proposer serves every study in turn, so an unbounded value from
#: one study would stall the others (16x the defaults, or more).
_SETTING_MAXIMA = {"warmup_steps": 4096, "num_samples": 4096, "thinning": 4096,
                   "max_tree_depth": 12, "mc_samples": 1024, "candidates": 8192,
                   "restarts": 128, "seed": 2**32 - 1, "fleet_threshold": 4096,
                   "fit_rows": 4096, "refit_growth": 1000, "ts_candidates": 8192}


@dataclass(frozen=True)
class SaasboSettings:
    """Settings of the ``saasbo`` optimiser (see the module docstring for their meaning)."""

    warmup_steps: int = 256
    num_samples: int = 128
    thinning: int = 16
    max_tree_depth: int = 6
    mc_samples: int = 64
    candidates: int = 512
    restarts: int = 8
    seed: int | None = None
    #: Fleet mode (``saasbo/fleet.py``): when proposals asked for plus pending points exceed
    #: this, the batch is chosen by Thompson sampling instead of greedy qLogNEHVI.
    fleet_threshold: int = 16
    #: Fleet mode: NUTS sees at most this many completed trials (the front first).
    fit_rows: int = 128
    #: Fleet mode: hyperparameters are re-sampled once the completed trials grew by this
    #: many percent since the last NUTS run (otherwise the GP is re-conditioned on all data
    #: with the previous samples).
    refit_growth: int = 25
    #: Fleet mode: candidates each Thompson sample is drawn on.
    ts_candidates: int = 1024

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> SaasboSettings:
        """Validated settings from a study's ``optimizer.settings``.

        Raises:
            ConfigError: unknown name, or a value that is not a positive integer (``seed``:
                a non-negative integer), or ``thinning`` above ``num_samples``.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"optimizer.settings: saasbo does not take {unknown}; known: "
                              f"{sorted(known)}")
        for name, value in settings.items():
            if name == "seed" and value is None:
                continue
            least = 0 if name == "seed" else 1
            most = _SETTING_MAXIMA[name]
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not least <= value <= most:
                raise ConfigError(f"optimizer.settings.{name}: must be an integer from {least} "
                                  f"to {most}, got {value!r}")
        result = cls(**settings)
        if result.thinning > result.num_samples:
            raise ConfigError(f"optimizer.settings.thinning: {result.thinning} exceeds "
                              f"num_samples {result.num_samples} (no sample would be kept)")
        return result

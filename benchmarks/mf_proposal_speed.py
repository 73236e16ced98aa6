"""Seconds the fidelity rule ``model`` (and the MOMF planner) take to plan 4 actions at
100 observations with 4 trials pending (issue 29's target: at most 30 s): 64 configurations
of the autopeft space on MiniLM-L6, 60 seen at 1/9, 25 at 1/3, 15 at full training, 45
paused, 4 pending; 256 candidate new points. Replicates of the 15 are actions too.

Run: ``.venv/bin/python benchmarks/mf_proposal_speed.py`` (prints and writes
``benchmarks/results/mf_proposal_speed.json``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from pathlib import Path

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint
from autopeft_service.domain.spaces.autopeft import AutoPeftSpace
from autopeft_service.optimizers.base import History, PausedTrial, Point, ScoreObservation
from autopeft_service.optimizers.momf import plan_momf
from autopeft_service.optimizers.multi_fidelity import plan_actions
from autopeft_service.optimizers.sobol import SobolOptimizer

OUTPUT = Path(__file__).parent / "results" / "mf_proposal_speed.json"


def main() -> None:
    space = AutoPeftSpace.for_backbone(MINILM_DIMS)
    fidelity = Fidelity(levels=(1 / 9, 1 / 3, 2 / 3, 1.0))
    points = [s.params for s in SobolOptimizer(space, seed=0).suggest(64, History())]
    pending = points[60:]
    points = points[:60]

    def share(point: Point) -> float:
        return count_parameters(space.decode(point), MINILM_DIMS).deployed_percent

    rng = random.Random(0)
    observations, paused = [], []
    for i, point in enumerate(points):
        observations.append(ScoreObservation(i, point, 1 / 9, 0.6 + 0.1 * rng.random()))
        if i < 25:
            observations.append(ScoreObservation(i, point, 1 / 3, 0.65 + 0.1 * rng.random()))
        if i < 15:
            observations.append(ScoreObservation(i, point, 1.0, 0.7 + 0.1 * rng.random()))
        else:
            paused.append(PausedTrial(i, point, 1 / 3 if i < 25 else 1 / 9))
    reference = ObjectivePoint(score=0.0, share=10.0)
    seconds, momf_seconds = [], []
    for _ in range(3):
        began = time.perf_counter()
        actions = plan_actions(space, fidelity, observations, paused, [*points, *pending],
                               share, 4, 10.0, reference, candidates=256, pending=pending)
        seconds.append(time.perf_counter() - began)
        began = time.perf_counter()
        momf = plan_momf(space, fidelity, observations, paused, [*points, *pending], share, 4,
                         10.0, reference, candidates=256)
        momf_seconds.append(time.perf_counter() - began)
    result = {"command": "python benchmarks/mf_proposal_speed.py",
              "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
              "observations": len(observations), "paused": len(paused), "pending": len(pending),
              "actions": 4, "seconds": seconds, "momf_seconds": momf_seconds,
              "chosen": [[a.continue_trial, a.level, a.replicate] for a in actions],
              "momf_chosen": [[a.continue_trial, a.level] for a in momf]}
    OUTPUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

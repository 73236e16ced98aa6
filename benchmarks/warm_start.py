"""Warm start on synthetic task pairs (issue 32): does a study warmed from a related study
reach a cold study's hypervolume sooner, and does an unrelated source do no harm?

Problems (LoRA per layer on MiniLM-L6 dimensions, the deployed share exact):
  * the source task f is the family task model of ``synthetic_problem`` (top layers, query,
    value and FFN output matter);
  * a second task g of the same shape on other modules (bottom layers; key, FFN input and
    attention output; a lower capacity peak);
  * a target at task correlation rho is ``w f + (1 - w) g`` with ``w`` set by bisection so
    that the correlation of target and f over 1,024 Sobol points is rho (0.95, 0.7, 0.3);
    the unrelated target is g itself (its measured correlation with f is reported).
  Scores carry Gaussian noise of sd ``--noise``; hypervolumes are of the noise-free
  target scores of every evaluated point (reference: score 0.5, deployed share 1 %).

Arms, 4 workers as synchronous batches of 4, ``saasbo`` with the service's settings:
  * ``cold``: 40 evaluations, Sobol start of 8;
  * ``warm-model``: the service's ``warm_start.mode: model`` path (``History.transfer``):
    the source's 60 evaluations in the multi-task model, the guard on;
  * ``warm-seed``: ``mode: seed``: the source's observed front first, then ``saasbo``.
  The source study per seed is a ``saasbo`` search of 60 evaluations on f.

Reported per pair: the median over seeds of cold's hypervolume at 40; per warm arm the
median over seeds of the evaluations it needs to reach it (never: counted as above 40) and
its median hypervolume at 40 as a fraction of cold's. Targets (issue 32): related pairs
within 15 evaluations; the unrelated pair at 40 at least 97 % of cold.

    .venv/bin/python benchmarks/warm_start.py --seeds 5 --jobs 2     # resumable
    .venv/bin/python benchmarks/warm_start.py --smoke                # a minute
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import synthetic_problem
from synthetic_problem import FamilyProblem, lora_scale_factor

from autopeft_service.domain.pareto import ObjectivePoint, hypervolume, pareto_indices
from autopeft_service.domain.peft_config import LoraTarget, PeftConfig
from autopeft_service.optimizers.base import History, Observation, TransferObservation
from autopeft_service.optimizers.saasbo import SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS / "warm_start.json"
VERSION = 1
#: Target pairs: name -> task correlation with the source (None: the unrelated task g).
PAIRS: dict[str, float | None] = {"rho-0.95": 0.95, "rho-0.7": 0.7, "rho-0.3": 0.3,
                                  "unrelated": None}
ARMS = ("cold", "warm-model", "warm-seed")
#: The second task: bottom layers, other projections, a lower peak.
OTHER_LAYERS = range(0, 2)
OTHER_WEIGHT = {LoraTarget.KEY: 0.75, LoraTarget.FFN_IN: 0.75,
                LoraTarget.ATTENTION_OUTPUT: 0.5}
OTHER_PEAK = 6.0


def other_task_score(config: PeftConfig) -> float:
    """The second task g (module docstring): 0.55 .. 0.93 like the first."""
    total = 0.0
    for lora in config.lora:
        weight = sum(OTHER_WEIGHT.get(t, 0.0) for t in lora.targets)
        for i in OTHER_LAYERS:
            rank = lora.ranks[i]
            if rank:
                total += weight * lora_scale_factor(lora.scaling(rank)) * math.log2(1 + rank)
    ratio = total / OTHER_PEAK
    return 0.55 + 0.38 * (ratio * math.exp(1.0 - ratio)) ** 2


class TaskPair:
    """The source task and one target of a pair, on one run seed's noise.

    Args:
        rho: the target's correlation with the source (None: the unrelated task).
        seed: the run's seed (noise).
        noise: sd of the noise on every evaluation.
    """

    def __init__(self, rho: float | None, seed: int, noise: float) -> None:
        self.base = FamilyProblem("lora", seed=seed, noise=0.0)
        self.space = self.base.space
        self.noise = noise
        self.seed = seed
        self.weight = 0.0 if rho is None else calibrate(self.base, rho)
        self._rng = np.random.default_rng(seed)

    def source_score(self, point: Mapping[str, Any]) -> float:
        return self.base.noiseless(point)

    def target_score(self, point: Mapping[str, Any]) -> float:
        other = other_task_score(self.space.decode(point))
        return self.weight * self.base.noiseless(point) + (1.0 - self.weight) * other

    def share(self, point: Mapping[str, Any]) -> float:
        return self.base.share(point)

    def observe(self, point: Mapping[str, Any], truth: Callable[[Mapping[str, Any]], float]
                ) -> Observation:
        noisy = truth(point) + self.noise * float(self._rng.standard_normal())
        return Observation(params=dict(point), score=noisy, param_share=self.share(point))


def calibrate(base: FamilyProblem, rho: float) -> float:
    """The weight w of ``w f + (1 - w) g`` whose correlation with f is ``rho`` over 1,024
    Sobol points (bisection; the correlation grows with w)."""
    points = [s.params for s in SobolOptimizer(base.space, seed=123).suggest(1024, History())]
    f = np.array([base.noiseless(p) for p in points])
    g = np.array([other_task_score(base.space.decode(p)) for p in points])
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if np.corrcoef(middle * f + (1 - middle) * g, f)[0, 1] < rho:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def measured_correlation(pair: TaskPair) -> float:
    """The target's correlation with the source over 1,024 Sobol points."""
    points = [s.params for s in SobolOptimizer(pair.space, seed=123).suggest(1024, History())]
    return float(np.corrcoef([pair.target_score(p) for p in points],
                             [pair.source_score(p) for p in points])[0, 1])


def search(pair: TaskPair, truth: Callable[[Mapping[str, Any]], float], evaluations: int,
           seed: int, settings: SaasboSettings, workers: int,
           transfer: Sequence[TransferObservation] = (),
           first: Sequence[Mapping[str, Any]] = ()) -> list[Observation]:
    """A ``saasbo`` search in synchronous batches of ``workers``; ``transfer`` is the model
    warm start's ``History.transfer``, ``first`` the points a seed warm start queues."""
    optimizer = SaasboOptimizer(pair.space, seed=seed, initial_trials=8,
                                reference_point=synthetic_problem.FAMILY_REFERENCE,
                                settings=settings, share=pair.share)
    done: list[Observation] = [pair.observe(p, truth) for p in first[:evaluations]]
    while len(done) < evaluations:
        n = min(workers, evaluations - len(done))
        suggestions = optimizer.suggest(n, History(completed=done, transfer=transfer))
        done += [pair.observe(s.params, truth) for s in suggestions]
    return done


def true_hypervolumes(pair: TaskPair, done: Sequence[Observation]) -> list[float]:
    """After each evaluation: the hypervolume of the noise-free target scores so far."""
    score, share = synthetic_problem.FAMILY_REFERENCE
    reference = ObjectivePoint(score=score, share=share)
    points: list[ObjectivePoint] = []
    out = []
    for observation in done:
        points.append(ObjectivePoint(score=pair.target_score(observation.params),
                                     share=observation.param_share))
        out.append(hypervolume(points, reference))
    return out


def source_search(seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The source study of a seed: ``saasbo`` on f, ``args.source`` evaluations (shared by
    every pair and arm of the seed)."""
    synthetic_problem.quiet_libraries()
    pair = TaskPair(None, 10_000 + seed, args.noise)  # its own noise stream
    done = search(pair, pair.source_score, args.source, seed + 500,
                  SaasboSettings(**args.saasbo), args.workers)
    return [{"params": o.params, "score": o.score, "share": o.param_share} for o in done]


def one_run(pair_name: str, arm: str, seed: int, source: Sequence[Mapping[str, Any]],
            args: argparse.Namespace) -> dict[str, Any]:
    """One (pair, arm, seed) target search, warmed from ``source`` (the seed's source
    study's evaluations) or cold."""
    synthetic_problem.quiet_libraries()
    began = time.perf_counter()
    pair = TaskPair(PAIRS[pair_name], seed, args.noise)
    transfer: list[TransferObservation] = []
    first: list[Mapping[str, Any]] = []
    if arm == "warm-model":
        transfer = [TransferObservation(source=1, number=i, params=o["params"],
                                        score=o["score"], share=o["share"])
                    for i, o in enumerate(source)]
    elif arm == "warm-seed":
        front = pareto_indices([ObjectivePoint(score=o["score"], share=o["share"])
                                for o in source])
        first = [source[i]["params"] for i in sorted(front, key=lambda i: source[i]["share"])]
    done = search(pair, pair.target_score, args.evaluations, seed,
                  SaasboSettings(**args.saasbo), args.workers, transfer=transfer, first=first)
    return {"pair": pair_name, "arm": arm, "seed": seed, "weight": pair.weight,
            "correlation": measured_correlation(pair),
            "hypervolume": true_hypervolumes(pair, done),
            "seconds": time.perf_counter() - began}


def evaluations_to_reach(curve: Sequence[float], target: float) -> float:
    """The first evaluation count whose hypervolume reaches ``target`` (inf: never)."""
    return next((i + 1.0 for i, value in enumerate(curve) if value >= target - 1e-12),
                math.inf)


#: Evaluation counts at which warm and cold are compared seed by seed (the issue's 15, and
#: the end).
PAIRED_AT = (15, 40)


def paired_difference(warm: Sequence[Mapping[str, Any]], cold: Mapping[int, Mapping[str, Any]],
                      at: int) -> dict[str, Any] | None:
    """Warm minus cold hypervolume after ``at`` evaluations, paired by seed: the mean, its
    95 % percentile-bootstrap interval (the project's comparison protocol,
    ``domain.comparison``) and the verdict (better / worse only when the interval excludes
    zero, else not distinguishable)."""
    from autopeft_service.domain.comparison import bootstrap_ci

    differences = [r["hypervolume"][at - 1] - cold[r["seed"]]["hypervolume"][at - 1]
                   for r in warm if r["seed"] in cold and len(r["hypervolume"]) >= at
                   and len(cold[r["seed"]]["hypervolume"]) >= at]
    if not differences:
        return None
    low, high = bootstrap_ci(differences)
    verdict = ("better" if low > 0 else "worse" if high < 0 else "not distinguishable")
    return {"seeds": len(differences), "mean": statistics.fmean(differences),
            "ci95": [low, high], "verdict": verdict}


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per pair: cold's median hypervolume at the end, and per warm arm the median
    evaluations to reach it and the median ratio of its final hypervolume to cold's."""
    out: dict[str, Any] = {}
    for pair in PAIRS:
        of_pair = [r for r in runs if r["pair"] == pair]
        cold = {r["seed"]: r for r in of_pair if r["arm"] == "cold"}
        if not cold:
            continue
        target = statistics.median(r["hypervolume"][-1] for r in cold.values())
        entry: dict[str, Any] = {"correlation": of_pair[0]["correlation"],
                                 "cold_median_hv": target, "cold_seeds": len(cold)}
        for arm in ARMS[1:]:
            warm = [r for r in of_pair if r["arm"] == arm]
            if not warm:
                continue
            reach = [evaluations_to_reach(r["hypervolume"], target) for r in warm]
            ratios = [r["hypervolume"][-1] / cold[r["seed"]]["hypervolume"][-1]
                      for r in warm if r["seed"] in cold]
            entry[arm] = {
                "seeds": len(warm),
                "median_evaluations_to_cold_median": statistics.median(reach),
                "evaluations_to_cold_median": reach,
                "median_final_ratio_to_cold": statistics.median(ratios) if ratios else None,
                "median_final_hv": statistics.median(r["hypervolume"][-1] for r in warm),
                **{f"paired_hv_difference_at_{at}": paired_difference(warm, cold, at)
                   for at in PAIRED_AT}}
        out[pair] = entry
    return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--source", type=int, default=60, help="the source's evaluations")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, one process and one torch thread each")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, no output file")
    args = parser.parse_args(argv)
    args.saasbo = {}
    if args.smoke:
        args.seeds, args.evaluations, args.source = 1, 10, 12
        args.pairs = ["rho-0.95"]
        args.saasbo = {"warmup_steps": 32, "num_samples": 16, "thinning": 8,
                       "mc_samples": 16, "candidates": 128, "restarts": 2}
    settings = {"version": VERSION, "evaluations": args.evaluations, "source": args.source,
                "workers": args.workers, "noise": args.noise, "saasbo": args.saasbo}
    done: list[dict[str, Any]] = []
    sources: dict[str, list[dict[str, Any]]] = {}
    if args.output.exists() and not args.smoke:
        stored = json.loads(args.output.read_text())
        if stored.get("settings") == settings:
            done, sources = stored["runs"], stored["sources"]
    todo = [(pair, arm, seed) for seed in range(args.seeds) for pair in args.pairs
            for arm in args.arms
            if not any(r["pair"] == pair and r["arm"] == arm and r["seed"] == seed
                       for r in done)]

    def save() -> None:
        """Rewrite the results (this process is the only writer)."""
        if args.smoke:
            return
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "command": "python benchmarks/warm_start.py " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "machine": {"platform": platform.platform()}, "settings": settings,
            "summary": summarise(done), "runs": done, "sources": sources}, indent=1) + "\n")

    def finished(run: dict[str, Any]) -> None:
        done.append(run)
        print(f"{run['pair']} {run['arm']} seed {run['seed']}: HV at "
              f"{len(run['hypervolume'])} {run['hypervolume'][-1]:.4f} "
              f"({run['seconds']:.0f} s)", file=sys.stderr, flush=True)
        save()

    needed = sorted({seed for _, arm, seed in todo if arm != "cold"} - {int(k) for k in sources})
    if args.jobs <= 1:
        for seed in needed:
            sources[str(seed)] = source_search(seed, args)
            save()
        for pair, arm, seed in todo:
            finished(one_run(pair, arm, seed, sources.get(str(seed), []), args))
    else:  # one run per process at a time, one torch thread each (spawned: torch and fork)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            searched = {pool.submit(source_search, seed, args): seed for seed in needed}
            for future in as_completed(searched):
                sources[str(searched[future])] = future.result()
                save()
            futures = [pool.submit(one_run, pair, arm, seed, sources.get(str(seed), []), args)
                       for pair, arm, seed in todo]
            for future in as_completed(futures):
                finished(future.result())
    save()  # the summary of every stored run, also when nothing was left to run
    print(json.dumps(summarise(done), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

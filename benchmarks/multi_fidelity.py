"""Multi-fidelity search against full-fidelity ``saasbo`` and MO-ASHA (issue 29), on the
synthetic learning-curve problem of ``early_stopping.py`` (curves that cross; noise sd
``--noise``), simulated with asynchronous workers.

Arms (5 seeds each by default, ``--workers`` 4):

* ``saasbo-full``: every trial trains in full (``--trials`` of them);
* ``moasha-saasbo``, ``moasha-random``: MO-ASHA stops trials at a rung at 1/eta, new
  points from ``saasbo`` or Sobol, until the same compute is spent;
* ``mf-asha``: a fidelity study, rule ``asha`` (levels ``--levels``): paused trials
  continue when they rank in the best 1/eta at their level
  (``proposer_fidelity``'s rule), new points from Sobol;
* ``mf-model``: rule ``model`` (``optimizers.multi_fidelity.plan_actions``: a
  multi-fidelity GP values each continuation, each new start and each replicate of a
  configuration trained in full, a fresh noise draw);
* ``mf-model-norep``: the same without replicates (what replicates buy);
* ``mf-momf``: MOMF (``optimizers.momf.plan_momf``: expected hypervolume improvement in
  (score, -share, level) per unit of cost, BoTorch's ``MOMF`` criterion in closed form) on
  the same GP, the alternative the issue names.

Every arm gets the compute of ``--trials`` full trainings. A level's cost is its share of a
full trial's seconds (a continuation pays only its new steps); a worker is busy for it.
Reported per arm (median over seeds, all seeds in the JSON):

* ``hv_observed_front``: the hypervolume of the **true** (noise-free) scores of the
  configurations on the observed front (completed trials by their observed score);
* ``hv_model_front`` (``mf-model*``): the same for the model-predicted front
  (``optimizers.prediction``) of every evaluated configuration;
* ``compute``: the full-training equivalents spent;
* ``compute_to_reach``: the compute at which the observed front's true hypervolume first
  reaches ``saasbo-full``'s median final one, and its ratio to ``saasbo-full``'s compute;
* ``coverage_90`` (``mf-model*``): how often the 90 % intervals of the model front hold the
  true score.

* ``gp-full``: the same GP and value as ``mf-model``, every configuration trained in full
  at once (a full-fidelity model baseline); ``random-full``: random configurations in full.

**The SST-2 replay** (``--replay TABLE --family F``): a table recorded with rungs
(``real_table.py --rungs 0.111,0.333,0.667``) and a second training seed per row
(``sst2_replicates.py``) is the problem: its configurations are the only ones, a level's
score is the one recorded, a replicate gets the second seed's score, and the truth is the
two seeds' mean. Arms: ``REPLAY_ARMS`` (no SAAS arm: it searches the whole space, not the
recorded pool; ``gp-full`` is the full-fidelity model baseline there). Results:
``benchmarks/results/multi_fidelity_replay_<table stem>.json``.

Results go to ``benchmarks/results/multi_fidelity.json`` as each run ends; a rerun skips
the runs there with the same settings.

Run (heavy: the saasbo arms fit a SAAS GP per batch, the model arms a GP per decision;
hours; ``--jobs 2`` runs two at once on the two cores):
    .venv/bin/python benchmarks/multi_fidelity.py --seeds 5 --noise 0.01 0.02 --jobs 2
Smoke (seconds): ``--smoke``.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import early_stopping as es
import numpy as np
import synthetic_problem

from autopeft_service.domain.early_stopping import RungEntry, moasha_decision
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.pareto import ObjectivePoint, hypervolume, pareto_indices
from autopeft_service.domain.spaces import point_key
from autopeft_service.optimizers.base import History, PausedTrial, ScoreObservation
from autopeft_service.optimizers.momf import plan_momf
from autopeft_service.optimizers.multi_fidelity import plan_actions
from autopeft_service.optimizers.prediction import predict_scores
from autopeft_service.optimizers.sobol import SobolOptimizer

RESULTS = Path(__file__).parent / "results"
DEFAULT_OUTPUT = RESULTS / "multi_fidelity.json"
ARMS = ("saasbo-full", "moasha-saasbo", "moasha-random", "mf-asha", "mf-model",
        "mf-model-norep", "mf-momf", "gp-full", "random-full")
#: The arms a replay of a recorded table runs (the others search the whole space).
REPLAY_ARMS = ("gp-full", "random-full", "mf-asha", "mf-model", "mf-model-norep", "mf-momf")
VERSION = 2
#: Replicate draws enter the model as trials numbered from here.
REPLICATE_IDS = 10**6


@dataclass
class Config:
    """A configuration in a fidelity search: its observations by level."""

    number: int
    point: dict[str, Any]
    share: float
    truth: float
    level: float = 0.0  # the level reached
    observed: dict[float, float] = field(default_factory=dict)
    replicates: list[float] = field(default_factory=list)  # more full-training draws

    def full_mean(self) -> float:
        """The mean of its full-training draws (first and replicates)."""
        draws = [self.observed[1.0], *self.replicates]
        return sum(draws) / len(draws)

    def observations(self) -> list[ScoreObservation]:
        """Every draw, as the model sees them (a replicate is another trial)."""
        out = [ScoreObservation(self.number, self.point, lvl, score)
               for lvl, score in self.observed.items()]
        out += [ScoreObservation(REPLICATE_IDS + self.number * 100 + k, self.point, 1.0, score)
                for k, score in enumerate(self.replicates, start=1)]
        return out


class NoisyCurves:
    """``early_stopping.CurveProblem``'s curves, with noise sd ``noise`` at every level
    (a fresh draw per configuration and level, seeded)."""

    def __init__(self, family: str, seed: int, noise: float) -> None:
        self.curves = es.CurveProblem(family, seed, (), 1.0, 0.0)
        self.space = self.curves.space
        self.reference = self.curves.reference
        self.noise = noise
        self.seed = seed

    #: New configurations come from the whole space; replicates up to the rule's cap.
    pool: list[dict[str, Any]] | None = None
    max_full_draws = 4

    def share(self, point: Mapping[str, Any]) -> float:
        return self.curves.family.share(point)

    def config(self, number: int, point: Mapping[str, Any]) -> Config:
        share = self.curves.family.share(point)
        return Config(number, dict(point), share, self.curves.curve(point, 1.0))

    def observe(self, config: Config, level: float, replicate: int = 0) -> float:
        """A draw at ``level``; a replicate (k > 0) draws fresh noise at full training."""
        salt = f"noise@{level:.6f}" + (f"#{replicate}" if replicate else "")
        draw = self.curves._uniform(config.point, salt)
        z = float(np.random.default_rng(int(draw * 2**63)).standard_normal())
        return self.curves.curve(config.point, level) + self.noise * z


class ReplayProblem:
    """A recorded real table (``real_table.py --rungs``) as the problem: its configurations
    are the only ones (the pool), a level's score is the one recorded at that rung, full
    training gives the recorded score and one replicate the second seed's
    (``sst2_replicates.py``); the truth is the mean of the two seeds. Levels are the table's
    rungs and 1.

    Args:
        table: the CSV; ``<stem>.fidelity.json`` and ``<stem>.seed1.jsonl`` beside it.
        family: the table's space family (``real_table.FAMILY_SPACES``).
    """

    max_full_draws = 2  # the recorded seed and the second one

    def __init__(self, table: Path, family: str) -> None:
        from real_table import read_rows, table_space

        from autopeft_service.domain.peft_config import PeftConfig
        from workers.commands.demo import default_model_path

        fidelity = json.loads(table.with_name(f"{table.stem}.fidelity.json").read_text())
        self.levels = (*(float(r) for r in fidelity["rungs"]), 1.0)
        second = {}
        path = table.with_name(f"{table.stem}.seed1.jsonl")
        for line in path.read_text().splitlines() if path.exists() else []:
            run = json.loads(line)
            second[(int(run["part"]), int(run["trial"]))] = float(run["score"])
        self.space = table_space(default_model_path(), family)
        self.rows: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        for row in read_rows(table):
            key = (int(row["part"]), int(row["trial"]))
            if row["state"] != "completed" or key not in second:
                continue
            point = self.space.encode(PeftConfig.model_validate_json(row["config"]))
            self.rows[point_key(point)] = {
                "point": point, "share": float(row["deployed_percent"]),
                "scores": [float(row[f"rung_{i}_score"]) for i in range(len(self.levels) - 1)],
                "full": [float(row["score"]), second[key]]}
        if len(self.rows) < 8:
            raise SystemExit(f"{table}: {len(self.rows)} rows with rungs and a second seed; "
                             "record them first (real_table.py --rungs, sst2_replicates.py)")
        self.pool = [r["point"] for r in self.rows.values()]
        shares = [r["share"] for r in self.rows.values()]
        self.reference = (min(min(r["full"]) for r in self.rows.values()) - 0.01,
                          max(shares) * 1.1)

    def share(self, point: Mapping[str, Any]) -> float:
        return self.rows[point_key(point)]["share"]

    def config(self, number: int, point: Mapping[str, Any]) -> Config:
        row = self.rows[point_key(point)]
        return Config(number, dict(point), row["share"], sum(row["full"]) / len(row["full"]))

    def observe(self, config: Config, level: float, replicate: int = 0) -> float:
        row = self.rows[point_key(config.point)]
        if level >= 1.0:
            return row["full"][replicate]
        return row["scores"][self.levels.index(level)]


def observed_front_truth(configs: Sequence[Config], reference: tuple[float, float]) -> float:
    """True hypervolume of the observed front of the fully trained configurations (each
    by the mean of its full-training draws)."""
    done = [c for c in configs if 1.0 in c.observed]
    if not done:
        return 0.0
    points = [ObjectivePoint(c.full_mean(), c.share) for c in done]
    front = [done[i] for i in pareto_indices(points)]
    return hypervolume([ObjectivePoint(c.truth, c.share) for c in front],
                       ObjectivePoint(*reference))


def fidelity_search(arm: str, problem: NoisyCurves, fidelity: Fidelity, workers: int,
                    budget: float, seed: int) -> dict[str, Any]:
    """One fidelity search (``mf-asha``, ``mf-model`` or ``mf-model-norep``) of ``budget``
    full trainings."""
    replicates = arm == "mf-model"
    # gp-full: the same model and value, every configuration trained in full at once
    full_only = Fidelity.model_construct(levels=(1.0,), rule="model", eta=3.0)
    sobol = SobolOptimizer(problem.space, seed=seed)
    pool_order = list(problem.pool or [])
    random.Random(seed).shuffle(pool_order)  # mf-asha's and random-full's new points
    configs: list[Config] = []
    # (time, order, config index, level, replicate?)
    events: list[tuple[float, int, int, float, bool]] = []
    spent = committed = 0.0
    clock = 0.0
    order = 0
    busy = 0
    curve: list[tuple[float, float]] = []
    reference = problem.reference
    ref_point = ObjectivePoint(*reference)

    def new_point() -> dict[str, Any] | None:
        if problem.pool is not None:  # a replay: the next recorded configuration
            seen = {point_key(c.point) for c in configs}
            return next((dict(p) for p in pool_order if point_key(p) not in seen), None)
        history = History(completed=[], pending=[c.point for c in configs])
        return dict(sobol.suggest(1, history)[0].params)

    def next_action() -> tuple[int, float, bool] | None:
        left = budget - spent - committed
        paused = [i for i, c in enumerate(configs) if c.level < 1.0 and c.level in c.observed
                  and not c.__dict__.get("running")]
        if arm == "random-full":
            point = new_point() if 1.0 <= left + 1e-9 else None
            if point is None:
                return None
            configs.append(problem.config(len(configs), point))
            return len(configs) - 1, 1.0, False
        if arm == "mf-asha":
            for i in paused:
                c = configs[i]
                after = fidelity.next_level(c.level)
                if after is None or after - c.level > left + 1e-9:
                    continue
                entries = [RungEntry(j, d.observed[c.level], d.share)
                           for j, d in enumerate(configs) if c.level in d.observed]
                if moasha_decision(i, entries, fidelity.eta).proceed:
                    return i, after, False
            point = new_point() if fidelity.levels[0] <= left + 1e-9 else None
            if point is None:
                return None
            configs.append(problem.config(len(configs), point))
            return len(configs) - 1, fidelity.levels[0], False
        observations = [o for c in configs for o in c.observations()]
        if arm == "mf-momf":
            actions = plan_momf(problem.space, fidelity, observations,
                                [PausedTrial(i, configs[i].point, configs[i].level)
                                 for i in paused],
                                [c.point for c in configs], problem.share, 1,
                                left, ref_point, seed=seed + len(observations), candidates=128,
                                pool=pool_order or None)
        else:
            actions = plan_actions(
                problem.space, full_only if arm == "gp-full" else fidelity, observations,
                [PausedTrial(i, configs[i].point, configs[i].level) for i in paused],
                [c.point for c in configs], problem.share, 1, left, ref_point,
                seed=seed + len(observations), candidates=128,
                pending=[c.point for c in configs if c.__dict__.get("running")],
                replicates=replicates, pool=pool_order or None,
                max_full_draws=problem.max_full_draws)
        if not actions:
            return None
        action = actions[0]
        if action.continue_trial is not None:
            return action.continue_trial, action.level, False
        if action.replicate:
            index = next(i for i, c in enumerate(configs) if c.point == action.params)
            return index, 1.0, True
        configs.append(problem.config(len(configs), action.params))
        return len(configs) - 1, action.level, False

    def start() -> None:
        nonlocal committed, order, busy
        while busy < workers:
            action = next_action()
            if action is None:
                return
            index, level, replicate = action
            config = configs[index]
            cost = 1.0 if replicate else level - config.level
            config.__dict__["running"] = True
            committed += cost
            busy += 1
            heapq.heappush(events, (clock + cost, order, index, level, replicate))
            order += 1

    start()
    while events:
        clock, _, index, level, replicate = heapq.heappop(events)
        config = configs[index]
        cost = 1.0 if replicate else level - config.level
        committed -= cost
        spent += cost
        busy -= 1
        if replicate:
            config.replicates.append(problem.observe(config, 1.0, len(config.replicates) + 1))
        else:
            config.observed[level] = problem.observe(config, level)
            config.level = level
        config.__dict__["running"] = False
        curve.append((spent, observed_front_truth(configs, reference)))
        start()
    out: dict[str, Any] = {"compute": [c for c, _ in curve], "hypervolume": [v for _, v in curve],
                           "configurations": len(configs),
                           "completed": sum(1.0 in c.observed for c in configs),
                           "replicates": sum(len(c.replicates) for c in configs)}
    if arm.startswith(("mf-model", "mf-momf")):
        observations = [o for c in configs for o in c.observations()]
        predicted = predict_scores(problem.space, observations)
        ids = [c.number for c in configs if c.number in predicted]
        points = [ObjectivePoint(predicted[i].mean, configs[i].share) for i in ids]
        front = [configs[ids[k]] for k in pareto_indices(points)] if points else []
        out["hv_model_front"] = hypervolume(
            [ObjectivePoint(c.truth, c.share) for c in front], ref_point)
        inside = [predicted[c.number].low <= c.truth <= predicted[c.number].high for c in front]
        out["coverage_90"] = sum(inside) / len(inside) if inside else None
    return out


def plain_search(arm: str, problem_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """``saasbo-full`` and the MO-ASHA arms (``early_stopping.synthetic_search``, with this
    benchmark's noise and the observed front's true hypervolume)."""
    # the family task model's final-score noise and the rung noise, at this run's level
    es.FamilyProblem = functools.partial(synthetic_problem.FamilyProblem, noise=args.noise_now)
    es.NOISE_SD = args.noise_now
    options = argparse.Namespace(
        family=args.family, rungs=(1 / args.eta,), trial_seconds=1.0, rung_cost=0.0,
        optimizer="random" if arm == "moasha-random" else "saasbo", initial=args.initial,
        trials=args.trials, workers=args.workers, eta=args.eta)
    run = es.synthetic_search(options, problem_seed, early=arm != "saasbo-full")
    return {"compute": run["compute"], "hypervolume": run["hypervolume"],
            "completed": run["completed"], "trials": run["trials"]}


def reach(run: Mapping[str, Any], target: float) -> float | None:
    for compute, volume in zip(run["compute"], run["hypervolume"], strict=True):
        if volume >= target - 1e-12:
            return compute
    return None


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per noise and arm: medians, and compute to reach saasbo-full's median final HV."""
    out: dict[str, Any] = {}
    for noise in sorted({r["noise"] for r in runs}):
        group = [r for r in runs if r["noise"] == noise]
        baseline = ("saasbo-full" if any(r["arm"] == "saasbo-full" for r in group)
                    else "gp-full")
        base = [r["result"]["hypervolume"][-1] for r in group if r["arm"] == baseline
                and r["result"]["hypervolume"]]
        target = statistics.median(base) if base else None
        rows = {}
        for arm in ARMS:
            mine = [r["result"] for r in group if r["arm"] == arm]
            if not mine:
                continue
            finals = [m["hypervolume"][-1] if m["hypervolume"] else 0.0 for m in mine]
            used = [m["compute"][-1] if m["compute"] else 0.0 for m in mine]
            reached = [reach(m, target) for m in mine] if target is not None else []
            row: dict[str, Any] = {"seeds": len(mine), "hv_observed_front": statistics.median(finals),
                                   "compute": statistics.median(used)}
            if reached and all(v is not None for v in reached):
                row["compute_to_reach"] = statistics.median(v for v in reached if v is not None)
            if "hv_model_front" in mine[0]:
                row["hv_model_front"] = statistics.median(m["hv_model_front"] for m in mine)
                row["model_front_beats_observed"] = sum(
                    m["hv_model_front"] > f for m, f in zip(mine, finals, strict=True))
                covered = [m["coverage_90"] for m in mine if m["coverage_90"] is not None]
                row["coverage_90"] = statistics.median(covered) if covered else None
            rows[arm] = row
        full = rows.get(baseline, {}).get("compute")
        for row in rows.values():
            if full and "compute_to_reach" in row:
                row["compute_ratio_to_reach"] = row["compute_to_reach"] / full
        out[f"noise {noise:g}"] = {"target_hv": target, "target_arm": baseline, "arms": rows}
    return out


def one_run(args: argparse.Namespace, fidelity: Fidelity, replay: ReplayProblem | None,
            noise: float, arm: str, seed: int) -> dict[str, Any]:
    """One (arm, seed, noise) search; runs in the main process or a pool process."""
    synthetic_problem.quiet_libraries()
    began = time.perf_counter()
    args.noise_now = noise
    if arm.startswith("mf-") or arm in ("gp-full", "random-full"):
        problem = replay or NoisyCurves(args.family, seed, noise)
        result = fidelity_search(arm, problem, fidelity, args.workers, float(args.trials), seed)
    else:
        result = plain_search(arm, seed, args)
    return {"arm": arm, "seed": seed, "noise": noise,
            "seconds": time.perf_counter() - began, "result": result}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.02])
    parser.add_argument("--trials", type=int, default=40, help="compute: full trainings")
    parser.add_argument("--initial", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eta", type=float, default=3.0)
    parser.add_argument("--levels", type=float, nargs="+", default=[1 / 9, 1 / 3, 2 / 3, 1.0])
    parser.add_argument("--family", default="lora")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--smoke", action="store_true", help="tiny settings, no output file")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, one process and one torch thread each")
    parser.add_argument("--replay", type=Path, default=None,
                        help="a recorded rung table (with its seed1 journal) as the problem; "
                        "--family names its space; levels are its rungs and 1")
    args = parser.parse_args(argv)
    replay = None
    if args.replay is not None:
        replay = ReplayProblem(args.replay, args.family)
        args.levels, args.noise = list(replay.levels), [0.0]
        args.arms = [a for a in args.arms if a in REPLAY_ARMS]
        if args.output == DEFAULT_OUTPUT:
            args.output = RESULTS / f"multi_fidelity_replay_{args.replay.stem}.json"
    if args.smoke:
        args.seeds, args.trials, args.initial, args.noise = 1, 4, 2, [0.02]
        args.arms = [a for a in args.arms
                     if a in ("mf-asha", "mf-model", "mf-model-norep", "mf-momf",
                              "moasha-random")]
    synthetic_problem.quiet_libraries()
    fidelity = Fidelity(levels=tuple(args.levels), eta=args.eta)
    settings = {"version": VERSION, "trials": args.trials, "initial": args.initial,
                "workers": args.workers, "eta": args.eta, "levels": args.levels,
                "family": args.family,
                "replay": None if args.replay is None else args.replay.name}
    done: list[dict[str, Any]] = []
    if args.output.exists() and not args.smoke:
        done = [r for r in json.loads(args.output.read_text())["runs"]
                if r["settings"] == settings]
    todo = [(noise, arm, seed) for noise in args.noise for arm in args.arms
            for seed in range(args.seeds)
            if not any(r["arm"] == arm and r["seed"] == seed and r["noise"] == noise
                       for r in done)]

    def finished(run: dict[str, Any]) -> None:
        """Keep a run and rewrite the results (this process is the only writer)."""
        done.append({**run, "settings": settings})
        result = run["result"]
        print(f"{run['arm']} noise {run['noise']:g} seed {run['seed']}: final HV "
              f"{result['hypervolume'][-1] if result['hypervolume'] else 0:.4f} in "
              f"{run['seconds']:.0f} s", file=sys.stderr, flush=True)
        if not args.smoke:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps({
                "command": "python benchmarks/multi_fidelity.py " + " ".join(
                    sys.argv[1:] if argv is None else argv),
                "machine": {"platform": platform.platform()},
                "summary": summarise(done), "runs": done}, indent=1) + "\n")

    if args.jobs <= 1:
        for noise, arm, seed in todo:
            finished(one_run(args, fidelity, replay, noise, arm, seed))
    else:  # one run per process at a time, one torch thread each (spawned: torch and fork)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            futures = [pool.submit(one_run, args, fidelity, replay, noise, arm, seed)
                       for noise, arm, seed in todo]
            for future in as_completed(futures):
                finished(future.result())
    print(json.dumps(summarise(done), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

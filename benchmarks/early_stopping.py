"""Multi-objective early stopping: hypervolume against training compute, with and without
the asynchronous MO-ASHA rule (``autopeft_service.domain.early_stopping``).

Two problems, each searched by asynchronous workers simulated by an event queue (each
trial reaches its rungs and its end at times set by its training cost; the rule decides
at a rung from the rung scores recorded so far, as the server does):

``synthetic`` (``saasbo``, the service's optimiser with its default settings): the noisy
task model of ``synthetic_problem.FamilyProblem`` on a space family (default ``lora``, one
rank per layer, on MiniLM-L6 dimensions) with learning curves. The score at a fraction f
of training is ``0.5 + (final - 0.5) * (1 - exp(-f / tau)) / (1 - exp(-1 / tau))`` plus
noise (sd ``NOISE_SD``, one accuracy point), where ``final`` is the configuration's
noise-free final score and ``tau`` its learning speed, drawn per configuration from a hash
in [0.08, 0.58]: slow learners start below fast ones and some end above them (curves
cross). Each trial trains ``--trial-seconds``; a rung costs ``--rung-cost`` of that.
Without early stopping a search runs ``--trials`` trials; with it, up to three times as many
until it has spent the same training compute. The hypervolume is that of the completed
trials' noise-free scores (the true quality of what was found).

``real`` and ``real-free-rungs`` (uniform draws, as the real table was drawn): the SST-2 table of one family
recorded with rungs (``benchmarks/real_table.py --rungs``) replayed in a random order per
seed, each row taking its measured training seconds, its measured rung-scoring seconds at
the rungs it reaches and its recorded rung scores. Without early stopping every row
completes; with it, rows stop where the rule says. Hypervolume of the completed rows'
held-out scores (what a search would report). ``real-free-rungs`` is the same with rung
scoring at no cost: at the table's fidelity a rung scores 500 held-out sentences against
1,000 trained on, which a full-data fidelity would not.

Reported per problem and arm (median over seeds, quartiles in the JSON): the final
hypervolume; the training compute at which the early-stopping arm's median curve first
reaches the final median hypervolume without early stopping, as a share of the compute
that took without it (the target: at most 50 %); the fraction of trials stopped; how
often a stopped trial would have been on the final front of its search had it completed
(its final score known to the simulation).

Run (the synthetic problem: 5 seeds x 2 arms of ``saasbo``, about 40 minutes with two jobs
here; the replays take seconds; results are written as searches end and a rerun skips
those done with the same settings):
    .venv/bin/python benchmarks/early_stopping.py --problems synthetic --rungs 0.3333 --eta 3 --jobs 2
    .venv/bin/python benchmarks/early_stopping.py --problems real real-free-rungs --rungs 0.3333 --eta 3 --real-rungs 1 --jobs 2
Numbers: ``benchmarks/results/early_stopping.json``; docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import multiprocessing
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from synthetic_problem import NOISE_SD, FamilyProblem, quiet_libraries

from autopeft_service.domain.early_stopping import RungEntry, moasha_decision
from autopeft_service.domain.pareto import ObjectivePoint, hypervolume, pareto_indices
from autopeft_service.domain.spaces import point_key
from autopeft_service.optimizers.base import History, Observation
from autopeft_service.optimizers.sobol import SobolOptimizer

RESULTS = Path(__file__).parent / "results"
DEFAULT_OUTPUT = RESULTS / "early_stopping.json"
DEFAULT_TABLE = RESULTS / "real_table_sst2_lora.csv"
#: Chance accuracy of the synthetic task (where every curve starts).
CHANCE = 0.5
#: Range of the per-configuration learning speed tau (fraction of training).
TAU_RANGE = (0.08, 0.58)
#: Version of each problem's simulation: results of another version are run again.
VERSION = 1
#: ``real-free-rungs``: the real table with rung scoring at no cost (the saving where the
#: rung's held-out examples are few beside the training data, e.g. a full-data epoch).
PROBLEMS = ("synthetic", "real", "real-free-rungs")


# ----------------------------------------------------------------------------- trials


@dataclass
class SimTrial:
    """One trial of a simulated search.

    Attributes:
        number: order of start.
        point: its configuration.
        share: its parameter share (known before training).
        rung_scores: its score at each rung, as it would be measured.
        final: its final score as measured (what a completed trial reports).
        truth: its final score without noise (what the hypervolume counts; = final for the
            real table).
        seconds: training seconds of the whole trial.
        rung_seconds: seconds of scoring each rung.
    """

    number: int
    point: Mapping[str, Any]
    share: float
    rung_scores: Sequence[float]
    final: float
    truth: float
    seconds: float
    rung_seconds: Sequence[float]
    state: str = "running"
    began: float = 0.0
    spent: float = 0.0
    ended_at: float = 0.0


@dataclass
class SearchLog:
    """What one simulated search did: its trials in order of ending, and the hypervolume
    after each ending against the training compute spent by the trials ended so far."""

    trials: list[SimTrial] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    hypervolume: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- problems


class CurveProblem:
    """The family task model with learning curves (module notes).

    Args:
        kind: the space family.
        seed: the run's seed (noise).
        rungs: the rung fractions.
        trial_seconds: training seconds of a full trial.
        rung_cost: seconds of scoring one rung, as a fraction of ``trial_seconds``.
    """

    def __init__(self, kind: str, seed: int, rungs: Sequence[float], trial_seconds: float,
                 rung_cost: float) -> None:
        self.family = FamilyProblem(kind, seed=seed)
        self.space = self.family.space
        self.reference = self.family.reference
        self.rungs = tuple(rungs)
        self.trial_seconds = trial_seconds
        self.rung_cost = rung_cost
        self.seed = seed

    def _uniform(self, point: Mapping[str, Any], what: str) -> float:
        text = repr((self.family.name, self.seed, point_key(point), what)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") / 2**64

    def tau(self, point: Mapping[str, Any]) -> float:
        """The configuration's learning speed (fraction of training; hash of the point)."""
        low, high = TAU_RANGE
        return low + (high - low) * self._uniform(point, "tau")

    def curve(self, point: Mapping[str, Any], fraction: float) -> float:
        """Noise-free score after ``fraction`` of training (1: the final score)."""
        tau = self.tau(point)
        final = self.family.noiseless(point)
        progress = (1 - math.exp(-fraction / tau)) / (1 - math.exp(-1 / tau))
        return CHANCE + (final - CHANCE) * progress

    def trial(self, number: int, point: Mapping[str, Any]) -> SimTrial:
        """The trial of ``point`` as a worker would measure it."""
        rungs = []
        for index, fraction in enumerate(self.rungs):
            noise = NOISE_SD * float(np.random.default_rng(
                int(self._uniform(point, f"rung{index}") * 2**63)).standard_normal())
            rungs.append(self.curve(point, fraction) + noise)
        observed = self.family.observe(point)
        assert observed is not None, "the optimiser proposed an invalid point"
        return SimTrial(number=number, point=dict(point), share=observed.param_share,
                        rung_scores=rungs, final=observed.score,
                        truth=self.family.noiseless(point), seconds=self.trial_seconds,
                        rung_seconds=[self.rung_cost * self.trial_seconds] * len(self.rungs))


def read_real_table(path: Path) -> tuple[list[dict[str, Any]], list[float]]:
    """Completed rows of a real table recorded with rungs, and the rung fractions (from its
    fidelity file). Raises SystemExit when it has no rung columns."""
    import csv

    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["state"] == "completed"]
    fidelity = json.loads(path.with_name(path.stem + ".fidelity.json").read_text())
    rungs = fidelity.get("rungs") or []
    if not rows or "rung_0_score" not in rows[0] or not rungs:
        raise SystemExit(f"{path}: no rung columns (record it with real_table.py --rungs)")
    return rows, [float(f) for f in rungs]


def real_trials(rows: Sequence[Mapping[str, Any]], rungs: Sequence[float],
                use: Sequence[int] | None = None) -> list[SimTrial]:
    """The table's rows as trials: measured scores and seconds (a rung's seconds are the
    row's rung-scoring seconds over the rungs it recorded: each scored the same examples).
    ``use``: indices of the recorded rungs to stop at (default all)."""
    use = list(range(len(rungs))) if use is None else list(use)
    trials = []
    for number, row in enumerate(rows):
        scores = [float(row[f"rung_{i}_score"]) for i in use]
        per_rung = float(row["rung_eval_seconds"] or 0) / len(rungs)
        trials.append(SimTrial(number=number, point={"row": number},
                               share=float(row["deployed_percent"] or row["param_share"]),
                               rung_scores=scores, final=float(row["score"]),
                               truth=float(row["score"]), seconds=float(row["train_seconds"]),
                               rung_seconds=[per_rung] * len(use)))
    return trials


# ----------------------------------------------------------------------------- simulation


def simulate(next_trial: Callable[[list[SimTrial], list[SimTrial], list[SimTrial]],
                                  SimTrial | None],
             workers: int, rungs: Sequence[float], eta: float | None,
             reference: tuple[float, float], compute_budget: float = math.inf) -> SearchLog:
    """Run trials on ``workers`` asynchronous workers until ``next_trial`` gives none or
    ``compute_budget`` training seconds were spent by started trials.

    Args:
        next_trial: called with (completed, running, pruned) when a worker is free; returns
            the next trial to train, or None.
        rungs: the rung fractions.
        eta: MO-ASHA's reduction factor; None: no early stopping (rungs are not scored).
        reference: hypervolume reference (score floor, share ceiling).
        compute_budget: no trial starts once this much was spent (ended trials' compute
            plus the started ones' full cost so far).

    Returns:
        The log: hypervolume of the completed trials' ``truth`` after each ending.
    """
    events: list[tuple[float, int, int, SimTrial]] = []  # (time, order, rung or -1, trial)
    order = 0
    completed: list[SimTrial] = []
    pruned: list[SimTrial] = []
    running: list[SimTrial] = []
    at_rung: list[list[RungEntry]] = [[] for _ in rungs]
    log = SearchLog()
    spent = 0.0
    committed = 0.0  # compute of running trials, counted in full when they start
    clock = 0.0
    reference_point = ObjectivePoint(*reference)

    def cost(trial: SimTrial) -> float:
        """Seconds of a trial run to its end (its rungs scored only with early stopping)."""
        return trial.seconds + (sum(trial.rung_seconds) if eta is not None else 0.0)

    def schedule(trial: SimTrial, rung: int) -> None:
        """Queue the trial's next event: rung ``rung``'s decision (after that rung was
        scored) or, with ``rung`` -1, its end."""
        nonlocal order
        if rung < 0:
            at = trial.began + cost(trial)
        else:
            at = trial.began + rungs[rung] * trial.seconds + sum(trial.rung_seconds[:rung + 1])
        heapq.heappush(events, (at, order, rung, trial))
        order += 1

    def start_trials() -> None:
        nonlocal committed
        while len(running) < workers and spent + committed < compute_budget:
            trial = next_trial(completed, running, pruned)
            if trial is None:
                return
            running.append(trial)
            trial.began = clock
            committed += cost(trial)
            schedule(trial, 0 if eta is not None and rungs else -1)

    def end(trial: SimTrial, state: str, seconds: float) -> None:
        nonlocal spent, committed
        running.remove(trial)
        committed -= cost(trial)
        trial.state, trial.spent, trial.ended_at = state, seconds, clock
        spent += seconds
        (completed if state == "completed" else pruned).append(trial)
        log.trials.append(trial)
        log.compute.append(spent)
        log.hypervolume.append(hypervolume(
            [ObjectivePoint(t.truth, t.share) for t in completed], reference_point))

    start_trials()
    while events:
        clock, _, rung, trial = heapq.heappop(events)
        if rung < 0:
            end(trial, "completed", cost(trial))
        else:
            assert eta is not None
            at_rung[rung].append(RungEntry(trial.number, trial.rung_scores[rung], trial.share))
            if moasha_decision(trial.number, at_rung[rung], eta).proceed:
                schedule(trial, rung + 1 if rung + 1 < len(rungs) else -1)
            else:
                end(trial, "pruned", rungs[rung] * trial.seconds
                    + sum(trial.rung_seconds[:rung + 1]))
        start_trials()
    return log


def would_reach_front(log: SearchLog) -> tuple[int, int]:
    """(stopped trials whose full final score would be on the search's final front, stopped
    trials): the front of the completed trials' measured scores plus that one trial."""
    done = [t for t in log.trials if t.state == "completed"]
    stopped = [t for t in log.trials if t.state == "pruned"]
    hits = 0
    for trial in stopped:
        points = [ObjectivePoint(t.final, t.share) for t in done]
        points.append(ObjectivePoint(trial.final, trial.share))
        hits += len(points) - 1 in pareto_indices(points)
    return hits, len(stopped)


# ----------------------------------------------------------------------------- searches


def synthetic_search(args: argparse.Namespace, seed: int, early: bool) -> dict[str, Any]:
    """One search (``args.optimizer``) on the curve problem, with or without MO-ASHA."""
    from autopeft_service.optimizers.saasbo import SaasboOptimizer, SaasboSettings

    problem = CurveProblem(args.family, seed, args.rungs, args.trial_seconds, args.rung_cost)
    if args.optimizer == "saasbo":
        optimizer: Any = SaasboOptimizer(
            problem.space, seed=seed, initial_trials=args.initial,
            reference_point=problem.reference, settings=SaasboSettings(),
            share=problem.family.share)
    else:  # random: the quasi-random baseline (cheap: for trying rung settings)
        optimizer = SobolOptimizer(problem.space, seed=seed)
    ready: list[Mapping[str, Any]] = []
    started = [0]
    limit = 3 * args.trials if early else args.trials
    propose_seconds: list[float] = []

    def next_trial(completed: list[SimTrial], running: list[SimTrial],
                   pruned: list[SimTrial]) -> SimTrial | None:
        if started[0] >= limit:
            return None
        if not ready:  # the server keeps a batch of max_parallel ready (proposer.py)
            history = History(
                completed=[Observation(t.point, t.final, t.share) for t in completed],
                pending=[t.point for t in running], pruned=[t.point for t in pruned])
            begin = time.perf_counter()
            batch = optimizer.suggest(min(args.workers, limit - started[0]), history)
            propose_seconds.append(time.perf_counter() - begin)
            ready.extend(s.params for s in batch)
        trial = problem.trial(started[0], ready.pop(0))
        started[0] += 1
        return trial

    budget = args.trials * args.trial_seconds if early else math.inf
    log = simulate(next_trial, args.workers, args.rungs, args.eta if early else None,
                   problem.reference, budget)
    return _summary(log, propose_seconds=propose_seconds)


def real_search(trials: Sequence[SimTrial], rungs: Sequence[float], args: argparse.Namespace,
                seed: int, early: bool) -> dict[str, Any]:
    """The real table's rows in a random order (seeded), with or without MO-ASHA."""
    order = list(trials)
    random.Random(seed).shuffle(order)
    queue = [SimTrial(**{**t.__dict__, "number": i}) for i, t in enumerate(order)]

    def next_trial(*_: object) -> SimTrial | None:
        return queue.pop(0) if queue else None

    log = simulate(next_trial, args.real_workers, rungs, args.eta if early else None,
                   (0.5, args.real_reference_share))
    return _summary(log)


def _summary(log: SearchLog, **extra: Any) -> dict[str, Any]:
    hits, stopped = would_reach_front(log)
    return {"compute": log.compute, "hypervolume": log.hypervolume,
            "trials": len(log.trials), "stopped": stopped,
            "stopped_would_reach_front": hits,
            "completed": sum(t.state == "completed" for t in log.trials), **extra}


# ----------------------------------------------------------------------------- summary


def compute_to_reach(run: Mapping[str, Any], target: float) -> float | None:
    """Training compute at which a run's hypervolume first reaches ``target``."""
    for compute, volume in zip(run["compute"], run["hypervolume"], strict=True):
        if volume >= target - 1e-12:
            return compute
    return None


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per problem: median final hypervolumes, compute shares and stop statistics."""
    rows = []
    for problem in sorted({r["problem"] for r in runs}):
        plain = [r for r in runs if r["problem"] == problem and not r["early"]]
        early = [r for r in runs if r["problem"] == problem and r["early"]]
        if not plain or not early:
            continue
        target = float(np.median([r["hypervolume"][-1] for r in plain]))
        plain_compute = float(np.median([r["compute"][-1] for r in plain]))
        reach = [compute_to_reach(r, target) for r in early]
        reached = sorted(c for c in reach if c is not None)
        median_reach = (float(np.median([c if c is not None else math.inf for c in reach]))
                        if reach else math.inf)
        stopped = sum(r["stopped"] for r in early)
        rows.append({
            "problem": problem, "seeds": len(early),
            "final_hv_without": target,
            "final_hv_with": float(np.median([r["hypervolume"][-1] for r in early])),
            "compute_without": plain_compute,
            "compute_with": float(np.median([r["compute"][-1] for r in early])),
            "seeds_reaching_target": len(reached),
            "median_compute_to_reach": median_reach,
            "compute_share_to_reach": median_reach / plain_compute,
            "trials_with": float(np.median([r["trials"] for r in early])),
            "stopped_fraction": stopped / max(1, sum(r["trials"] for r in early)),
            "stopped_would_reach_front": (sum(r["stopped_would_reach_front"] for r in early)
                                          / max(1, stopped))})
    return rows


def print_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| problem | seeds | median final HV without | with (ratio) | compute used with "
             "(share of without) | compute to reach the HV without | trials with | stopped "
             "| stopped that would reach the front |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        share = row["compute_share_to_reach"]
        lines.append(
            f"| {row['problem']} | {row['seeds']} | {row['final_hv_without']:.4f} | "
            f"{row['final_hv_with']:.4f} ({row['final_hv_with'] / row['final_hv_without']:.1%})"
            f" | {row['compute_with'] / row['compute_without']:.0%} | "
            + (f"{share:.0%}" if math.isfinite(share) else "not reached")
            + f" ({row['seeds_reaching_target']} of {row['seeds']} seeds) | "
            f"{row['trials_with']:.0f} | {row['stopped_fraction']:.0%} | "
            f"{row['stopped_would_reach_front']:.0%} |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# ----------------------------------------------------------------------------- main


def run_one(task: tuple[str, int, bool, dict[str, Any]]) -> dict[str, Any]:
    """One search (a worker process)."""
    problem, seed, early, options = task
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    quiet_libraries()
    args = argparse.Namespace(**options)
    start = time.perf_counter()
    if problem.startswith("real"):
        rows, recorded = read_real_table(Path(args.table))
        use = args.real_rungs if args.real_rungs is not None else list(range(len(recorded)))
        rungs = [recorded[i] for i in use]
        trials = real_trials(rows, recorded, use)
        if problem == "real-free-rungs":
            for trial in trials:
                trial.rung_seconds = [0.0] * len(rungs)
        result = real_search(trials, rungs, args, seed, early)
    else:
        result = synthetic_search(args, seed, early)
    result.update(problem=problem, seed=seed, early=early, version=VERSION,
                  seconds=time.perf_counter() - start)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--family", default="lora", help="space family of the synthetic problem")
    parser.add_argument("--trials", type=int, default=40,
                        help="trials of a synthetic search without early stopping")
    parser.add_argument("--initial", type=int, default=10, help="saasbo's Sobol trials")
    parser.add_argument("--optimizer", choices=("saasbo", "random"), default="saasbo",
                        help="optimiser of the synthetic problem")
    parser.add_argument("--workers", type=int, default=4, help="simulated workers (synthetic)")
    parser.add_argument("--rungs", type=lambda s: [float(x) for x in s.split(",")],
                        default=[1 / 3], help="rung fractions of the synthetic problem")
    parser.add_argument("--eta", type=float, default=3.0)
    parser.add_argument("--trial-seconds", type=float, default=45.0)
    parser.add_argument("--rung-cost", type=float, default=0.05,
                        help="seconds of a rung's scoring as a fraction of a trial's training")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--real-rungs", type=lambda s: [int(x) for x in s.split(",")],
                        default=None, help="indices of the table's recorded rungs to stop at "
                        "(default all)")
    parser.add_argument("--real-workers", type=int, default=2)
    parser.add_argument("--real-reference-share", type=float, default=10.0,
                        help="share ceiling of the real table's hypervolume (%%)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--report", action="store_true", help="only summarise --output")
    args = parser.parse_args(argv)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results: dict[str, Any] = (json.loads(args.output.read_text()) if args.output.exists()
                               else {"runs": [], "commands": []})
    for run in results["runs"]:  # runs written before settings were kept per run
        run.setdefault("settings", settings_of(run["problem"], results.get("options", {})))
    current = {problem: settings_of(problem, options) for problem in PROBLEMS}
    if not args.report:
        command = " ".join([".venv/bin/python", "benchmarks/early_stopping.py",
                            *(sys.argv[1:] if argv is None else argv)])
        if command not in results["commands"]:
            results["commands"].append(command)
        results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "python": platform.python_version()}
        done = {(r["problem"], r["seed"], r["early"]) for r in results["runs"]
                if r.get("version") == VERSION and r["settings"] == current[r["problem"]]}
        tasks = [(p, s, e, options) for p in args.problems for s in args.seeds
                 for e in (False, True) if (p, s, e) not in done]
        print(f"{len(tasks)} searches to run ({len(done)} done in {args.output})", flush=True)
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.jobs, maxtasksperchild=1) as pool:
            for result in pool.imap_unordered(run_one, tasks):
                result["settings"] = current[result["problem"]]
                results["runs"].append(result)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps(results, indent=1))
                print(f"  {result['problem']:9} seed {result['seed']} "
                      f"{'MO-ASHA' if result['early'] else 'none   '}: trials "
                      f"{result['trials']} stopped {result['stopped']} final HV "
                      f"{result['hypervolume'][-1]:.4f} compute {result['compute'][-1]:.0f} s"
                      f"  ({result['seconds']:.0f} s)", flush=True)
    # The summary is of the runs made with this invocation's settings (others stay stored).
    rows = summarise([r for r in results["runs"] if r.get("version") == VERSION
                      and r["settings"] == current[r["problem"]]])
    results["summary"] = rows
    results["summary_settings"] = {p: current[p] for p in {row["problem"] for row in rows}}
    results["summary_markdown"] = print_summary(rows)
    args.output.write_text(json.dumps(results, indent=1))


#: The options each problem's runs depend on (runs with other values are run again).
PROBLEM_OPTIONS = {
    "synthetic": ("family", "trials", "initial", "optimizer", "workers", "rungs", "eta",
                  "trial_seconds", "rung_cost"),
    "real": ("table", "real_rungs", "real_workers", "real_reference_share", "eta")}


def settings_of(problem: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a run of ``problem`` depends on."""
    names = PROBLEM_OPTIONS["synthetic" if problem == "synthetic" else "real"]
    return {name: options.get(name) for name in names}


if __name__ == "__main__":
    main()

"""Proposal speed and quality: our ``saasbo`` optimiser against stock Ax SAASBO.

Two measurements, on the AutoPEFT space of a hidden-768 backbone with 12 or 24 layers (15 or
27 dimensions), the synthetic objective of the fake worker (``synthetic_score``: only the
top third of the layers, the serial adapter and the prefix matter) and the exact analytic
parameter share:

1. Speed. A history of N completed Sobol trials (seed 1, synthetic results); then the
   seconds for one proposal (nothing pending) and for four proposals with four more Sobol
   points pending, for N in ``--trials`` and each space in ``--dims``.
   * ``ours``: ``SaasboOptimizer`` with its default settings. A process compiles its NUTS
     program once per (16-row size bucket, dimension); ``cold`` is the first call of a
     shape in the process (compilation included), ``warm`` a second call with the same
     history (the steady state of a server whose study stays in a bucket for 16 trials).
   * ``ax``: Ax 1.3.1 ``ax.api.Client`` with one generation node ``Generators.SAASBO``
     (BoTorch's SAAS GP, Ax's defaults: NUTS 512 warmup / 256 samples / thinning 16,
     qLogNEHVI, discrete local search); each parameter an ordered integer choice; the
     history attached as completed trials, the pending points as running trials; the
     objective "score, -param_share" with thresholds score >= 0.5, param_share <= 10.
2. Quality. A closed loop from the same ``--loop-initial`` Sobol points (seeds
   ``--loop-seeds``), then ``--loop-batches`` batches of four proposals, each evaluated
   at once; the hypervolume (reference: score 0.5, share 10 %) after each batch. Ax may
   propose an invalid point (no layer or no module on: the space's validity rule is not
   expressible as an Ax constraint on choice parameters); it is marked failed and still
   counts as an evaluation.

Stock Ax takes minutes per proposal here (docs/performance.md), so choose sizes with the
flags. Reproduce (ours, full grid, and the closed loop; a few minutes):
    .venv/bin/python benchmarks/proposer_speed.py --methods ours
The full comparison with stock Ax (about an hour or more on 2 cores):
    .venv/bin/python benchmarks/proposer_speed.py --methods ours ax
``--quick``: 20 and 50 trials, 15 dimensions, one closed-loop seed of two batches.

Prints a table and writes JSON to ``--output`` (default benchmarks/results/proposer_speed.json).

3. Per space family (``--spaces``, instead of 1 and 2): on MiniLM-L6 dimensions, the
   default space of each family named (``autopeft``, ``unified``, ``design_space``,
   ``lora`` with one rank per layer), 100 completed trials (the family's first 104 Sobol
   points, seed 1, with the noisy synthetic scores of ``synthetic_problem.FamilyProblem``
   and their exact deployed share), then the seconds of ``suggest(4, ...)`` of
   ``SaasboOptimizer`` (default settings, the exact share function as the server passes
   it) with the next four Sobol points pending, one torch thread. ``seconds``: the first
   call of the family in the process (NUTS compilation included); ``warm``: the same call
   again by ``--repeats`` fresh optimisers. Writes ``--spaces-output`` (default
   benchmarks/results/proposer_speed_spaces.json):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \
        intra_op_parallelism_threads=1" .venv/bin/python benchmarks/proposer_speed.py \
        --spaces autopeft unified design_space lora --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synthetic_problem import (
    REFERENCE,
    FamilyProblem,
    ServiceOptimizer,
    SyntheticProblem,
    quiet_libraries,
)

from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.optimizers.base import History, Observation, point_key
from autopeft_service.optimizers.saasbo import SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

PENDING = 4
#: Families of ``--spaces`` and the completed trials they are timed at.
SPACE_FAMILIES = ("autopeft", "unified", "design_space", "lora")
SPACE_TRIALS = 100
#: The issue's bound on four proposals with four pending at 100 trials.
SPACE_TARGET_SECONDS = 30.0


def area(observations: Sequence[Observation]) -> float:
    return hypervolume([ObjectivePoint(o.score, o.param_share) for o in observations],
                       ObjectivePoint(*REFERENCE))


# ----------------------------------------------------------------------------- methods


class Ours(ServiceOptimizer):
    """``SaasboOptimizer`` with its default settings."""

    def __init__(self, problem: SyntheticProblem, seed: int = 0) -> None:
        super().__init__("ours", SaasboOptimizer(
            problem.space, seed=seed, initial_trials=0, reference_point=REFERENCE,
            settings=SaasboSettings()))

    def details(self) -> dict[str, Any]:
        return proposal_details(self.optimizer)


def proposal_details(optimizer: SaasboOptimizer) -> dict[str, Any]:
    """The split of a ``SaasboOptimizer``'s last model-based proposal."""
    info = optimizer.last_info
    if info is None:
        return {}
    return {"fit_s": round(info.fit_seconds, 2),
            "acquisition_s": round(info.acquisition_seconds, 2),
            "leapfrog_steps": info.nuts.leapfrog_steps if info.nuts else None,
            "evaluated": info.evaluated, "baseline": info.baseline}


class StockAx:
    """Ax 1.3.1 Client with a single ``Generators.SAASBO`` node (Ax's defaults)."""

    name = "ax"

    def __init__(self, problem: SyntheticProblem, seed: int = 0) -> None:
        self.problem = problem
        self.seed = seed
        self.client: Any = None
        self.known: dict[tuple[tuple[str, int], ...], int] = {}

    def _new_client(self) -> Any:
        from ax.adapter.registry import Generators
        from ax.api.client import Client
        from ax.api.configs import ChoiceParameterConfig
        from ax.generation_strategy.generation_node import GenerationNode
        from ax.generation_strategy.generation_strategy import GenerationStrategy
        from ax.generation_strategy.generator_spec import GeneratorSpec

        quiet_libraries()
        client = Client(random_seed=self.seed)
        client.configure_experiment(parameters=[
            ChoiceParameterConfig(name=p.name, values=list(p.values), parameter_type="int",
                                  is_ordered=True)
            for p in self.problem.space.parameters()])
        client.configure_optimization(
            objective="score, -param_share",
            outcome_constraints=[f"score >= {REFERENCE[0]}", f"param_share <= {REFERENCE[1]}"])
        client.set_generation_strategy(GenerationStrategy(name="SAASBO", nodes=[GenerationNode(
            name="SAASBO", generator_specs=[GeneratorSpec(generator_enum=Generators.SAASBO)])]))
        return client

    def propose(self, n: int, completed: Sequence[Observation],
                pending: Sequence[dict[str, int]],
                failed: Sequence[dict[str, int]] = ()) -> list[dict[str, int]]:
        """Brings the client's experiment up to this history (attaching what is new), then
        asks for ``n`` trials. Pending points already attached stay running."""
        if self.client is None:
            self.client = self._new_client()
        client = self.client
        for observation in completed:
            key = point_key(observation.params)
            index = self.known.get(key)
            if index is None:
                index = self.known[key] = client.attach_trial(dict(observation.params))
            if client._experiment.trials[index].status.is_running:
                client.complete_trial(index, raw_data={"score": observation.score,
                                                       "param_share": observation.param_share})
        for point in failed:
            key = point_key(point)
            index = self.known.get(key)
            if index is None:
                index = self.known[key] = client.attach_trial(dict(point))
            if client._experiment.trials[index].status.is_running:
                client.mark_trial_failed(index)
        for point in pending:
            key = point_key(point)
            if key not in self.known:
                self.known[key] = client.attach_trial(dict(point))
        trials = client.get_next_trials(max_trials=n)
        out = []
        for index, parameters in trials.items():
            point = {k: int(v) for k, v in parameters.items()}
            self.known[point_key(point)] = index
            out.append(point)
        return out

    def details(self) -> dict[str, Any]:
        return {}


class Sobol(ServiceOptimizer):
    """The quasi-random baseline (``SobolOptimizer``, the closed loop's initial design)."""

    def __init__(self, problem: SyntheticProblem, seed: int = 0) -> None:
        super().__init__("sobol", SobolOptimizer(problem.space, seed=seed))


METHODS: dict[str, Callable[[SyntheticProblem, int], Any]] = {"ours": Ours, "ax": StockAx,
                                                     "sobol": Sobol}


# ----------------------------------------------------------------------------- runs


def timed(method: Any, n: int, completed: Sequence[Observation],
          pending: Sequence[dict[str, int]],
          failed: Sequence[dict[str, int]] = ()) -> tuple[float, list[dict[str, int]]]:
    start = time.perf_counter()
    points = method.propose(n, completed, pending, failed)
    return time.perf_counter() - start, points


def speed(methods: Sequence[str], dims: Sequence[int], trials: Sequence[int],
          proposals: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """One row per (method, space, trials, batch size). ``seconds``: the first call (for
    ours: compilation included if the shape is new to the process); ``warm_seconds``: the
    same call repeated ``repeats`` times by fresh optimisers (ours only: stock Ax does the
    same work every call), with the load average around each, since this machine is shared
    (report the minimum; the median shows the noise)."""
    rows: list[dict[str, Any]] = []
    for dimension in dims:
        problem = SyntheticProblem(dimension)
        points = problem.sobol(max(trials) + PENDING, seed=1)
        for count in trials:
            completed = [problem.observe(p) for p in points[:count]]
            assert all(o is not None for o in completed)
            for name in methods:
                for n in proposals:
                    pending = points[count:count + PENDING] if n > 1 else []
                    row: dict[str, Any] = {"method": name, "dims": dimension, "trials": count,
                                           "proposals": n, "pending": len(pending),
                                           "load_before": os.getloadavg()[0]}
                    method = METHODS[name](problem, 0)
                    cpu = time.process_time()
                    row["seconds"], got = timed(method, n, completed, pending)
                    row["cpu_seconds"] = time.process_time() - cpu
                    row.update(method.details())
                    if name != "ax":
                        warm, loads, same = [], [], True
                        for _ in range(repeats):
                            again_method = METHODS[name](problem, 0)
                            seconds, again = timed(again_method, n, completed, pending)
                            warm.append(seconds)
                            loads.append(os.getloadavg()[0])
                            same = same and again == got
                        row["warm_seconds"] = warm
                        row["warm_min"] = min(warm)
                        row["warm_median"] = statistics.median(warm)
                        row["load_after_warm"] = loads
                        row["repeatable"] = same
                        row["warm"] = again_method.details()
                    row["valid"] = all(problem.space.is_valid(p) for p in got)
                    row["new"] = len({point_key(p) for p in got} - {
                        point_key(p) for p in points[:count + len(pending)]}) == len(got)
                    rows.append(row)
                    print(f"  {name:5} dims {dimension} trials {count:3} proposals {n} "
                          f"(pending {len(pending)}): {row['seconds']:7.1f} s"
                          + (f", warm min {row['warm_min']:.1f} s median "
                             f"{row['warm_median']:.1f} s" if "warm_min" in row else "")
                          + f"  (load {row['load_before']:.1f})", flush=True)
    return rows


def closed_loop(method_name: str, dimension: int, seed: int, initial: int,
                batches: int) -> dict[str, Any]:
    problem = SyntheticProblem(dimension)
    method = METHODS[method_name](problem, seed)
    completed: list[Observation] = []
    failed: list[dict[str, int]] = []
    for point in problem.sobol(initial, seed=seed):
        observation = problem.observe(point)
        assert observation is not None
        completed.append(observation)
    curve = [area(completed)]
    seconds = []
    for _ in range(batches):
        took, points = timed(method, 4, completed, [], failed)
        seconds.append(took)
        for point in points:
            observation = problem.observe(point)
            if observation is None:
                failed.append(point)
            else:
                completed.append(observation)
        curve.append(area(completed))
    return {"method": method_name, "dims": dimension, "seed": seed, "initial": initial,
            "batches": batches, "hypervolume": curve, "invalid": len(failed),
            "seconds_per_batch": seconds}


def space_speed(families: Sequence[str], repeats: int, trials: int = SPACE_TRIALS
                ) -> list[dict[str, Any]]:
    """One row per family: seconds of ``suggest(4)`` with four pending at ``trials``
    completed (module docstring, 3)."""
    import torch

    rows = []
    for kind in families:
        problem = FamilyProblem(kind, seed=1)
        points = problem.sobol(trials + PENDING, seed=1)
        completed = [problem.observe(p) for p in points[:trials]]
        assert all(o is not None for o in completed)
        history = History(completed=completed, pending=points[trials:])

        def optimizer(problem: Any = problem) -> SaasboOptimizer:
            return SaasboOptimizer(problem.space, seed=0, initial_trials=10,
                                   reference_point=problem.reference,
                                   settings=SaasboSettings(), share=problem.share)

        first = optimizer()
        row: dict[str, Any] = {
            "family": kind, "problem": problem.name, "parameters": problem.space.dimension,
            "model_dimension": first.encoding.model_dimension, "trials": trials,
            "proposals": PENDING, "pending": PENDING, "torch_threads": torch.get_num_threads(),
            "load_before": os.getloadavg()[0]}
        cpu = time.process_time()
        start = time.perf_counter()
        got = [s.params for s in first.suggest(PENDING, history)]
        row["seconds"] = time.perf_counter() - start
        row["cpu_seconds"] = time.process_time() - cpu
        row["first"] = proposal_details(first)
        warm, loads, same = [], [], True
        for _ in range(repeats):
            again = optimizer()
            start = time.perf_counter()
            points_again = [s.params for s in again.suggest(PENDING, history)]
            warm.append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
            same = same and points_again == got
            row["warm"] = proposal_details(again)
        if warm:
            row.update(warm_seconds=warm, warm_min=min(warm), warm_median=statistics.median(warm),
                       load_after_warm=loads, repeatable=same)
        row["within_target"] = row["seconds"] <= SPACE_TARGET_SECONDS
        row["valid"] = all(problem.space.is_valid(p) for p in got)
        row["new"] = len({point_key(p) for p in got} - {point_key(p) for p in points}) == len(got)
        row["proposed"] = got
        rows.append(row)
        print(f"  {kind:12} {row['parameters']:3} parameters ({row['model_dimension']} model "
              f"columns), {trials} trials, 4 proposals with 4 pending: first "
              f"{row['seconds']:5.1f} s (fit {row['first'].get('fit_s')} s, acquisition "
              f"{row['first'].get('acquisition_s')} s)"
              + (f", warm min {row['warm_min']:.1f} s median {row['warm_median']:.1f} s"
                 if warm else "") + f"  (load {row['load_before']:.1f})", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["ours"])
    parser.add_argument("--dims", nargs="+", type=int, choices=[15, 27], default=[15, 27])
    parser.add_argument("--trials", nargs="+", type=int, default=[20, 50, 100])
    parser.add_argument("--proposals", nargs="+", type=int, default=[1, 4],
                        help="batch sizes to time (4: with four points pending)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="warm repetitions of each of our calls (minimum reported)")
    parser.add_argument("--loop-dims", nargs="*", type=int, default=[15])
    parser.add_argument("--loop-seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--loop-initial", type=int, default=20)
    parser.add_argument("--loop-batches", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true", help="only the closed loop")
    parser.add_argument("--quick", action="store_true",
                        help="20 and 50 trials, 15 dims, one loop seed of two batches")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "proposer_speed.json")
    parser.add_argument("--spaces", nargs="+", choices=SPACE_FAMILIES,
                        help="only time saasbo's suggest(4) with 4 pending at 100 trials on "
                        "these space families (MiniLM dims), one torch thread")
    parser.add_argument("--spaces-output", type=Path,
                        default=Path(__file__).parent / "results" / "proposer_speed_spaces.json")
    parser.add_argument("--fleet", action="store_true",
                        help="only the fleet measurement: sustained proposals/s with "
                        "--fleet-pending points pending from 100 to --fleet-until completed")
    parser.add_argument("--fleet-pending", type=int, default=256)
    parser.add_argument("--fleet-batch", type=int, default=64)
    parser.add_argument("--fleet-start", type=int, default=100)
    parser.add_argument("--fleet-until", type=int, default=500)
    parser.add_argument("--fleet-output", type=Path,
                        default=Path(__file__).parent / "results" / "proposer_speed_fleet.json")
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.fleet:
        fleet_main(args, argv)
        return
    if args.spaces:
        spaces_main(args, argv)
        return
    if args.quick:
        args.trials, args.dims, args.loop_seeds, args.loop_batches = [20, 50], [15], [0], 2
    command = " ".join([".venv/bin/python", "benchmarks/proposer_speed.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    rows: list[dict[str, Any]] = []
    if not args.no_speed:
        print(f"speed: methods {args.methods}, dims {args.dims}, trials {args.trials}, "
              f"proposals {args.proposals}", flush=True)
        rows = speed(args.methods, args.dims, args.trials, args.proposals, args.repeats)
    loops = []
    for dimension in args.loop_dims:
        for seed in args.loop_seeds:
            for name in args.methods:
                loop = closed_loop(name, dimension, seed, args.loop_initial, args.loop_batches)
                loops.append(loop)
                print(f"  loop {name:5} dims {dimension} seed {seed}: hypervolume "
                      f"{' -> '.join(f'{v:.3f}' for v in loop['hypervolume'])}, "
                      f"{sum(loop['seconds_per_batch']):.0f} s, invalid {loop['invalid']}",
                      flush=True)
    print_tables(rows, loops)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "command": command, "machine": {"platform": platform.platform(),
                                        "python": platform.python_version(),
                                        "cpus": os.cpu_count()},
        "reference_point": {"score": REFERENCE[0], "param_share": REFERENCE[1]},
        "speed": rows, "closed_loop": loops}, indent=2))
    print(f"\nwrote {args.output}\nreproduce: {command}")


def fleet_main(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """The ``--fleet`` mode: a fleet's steady state, in one process, one torch thread.

    On the 27-dimension problem, ``--fleet-start`` completed Sobol trials and
    ``--fleet-pending`` pending ones; then rounds of: ``suggest(--fleet-batch)`` by a fresh
    ``SaasboOptimizer`` (default settings, the exact share: a pool child builds one per
    call; fits kept between calls are per process, as in the pool), then the oldest
    ``--fleet-batch`` pending points complete (their synthetic scores) and the proposals
    join the pending ones, until ``--fleet-until`` trials completed. Sustained rate: all
    proposals over all seconds, NUTS runs included.
    """
    import torch

    torch.set_num_threads(1)
    problem = SyntheticProblem(27)
    points = problem.sobol(args.fleet_start + args.fleet_pending, seed=1)
    completed = [problem.observe(p) for p in points[:args.fleet_start]]
    pending = list(points[args.fleet_start:])
    rounds = []
    while len(completed) < args.fleet_until:
        optimizer = SaasboOptimizer(problem.space, seed=0, initial_trials=0,
                                    reference_point=REFERENCE, settings=SaasboSettings(),
                                    share=problem.share)
        start = time.perf_counter()
        got = [s.params for s in optimizer.suggest(
            args.fleet_batch, History(completed=completed, pending=pending))]
        seconds = time.perf_counter() - start
        info = optimizer.last_info
        assert info is not None and info.fleet
        seen = {point_key(p) for p in points} | {point_key(o.params) for o in completed}
        rounds.append({"completed": len(completed), "pending": len(pending),
                       "proposals": len(got), "seconds": seconds,
                       "fit_seconds": info.fit_seconds, "nuts": not info.reused_fit,
                       "selection_seconds": info.acquisition_seconds,
                       "valid": all(problem.space.is_valid(p) for p in got),
                       "new": len({point_key(p) for p in got} - seen) == len(got),
                       "hypervolume": area(completed)})
        print(f"  completed {len(completed)} pending {len(pending)}: {len(got)} proposals "
              f"in {seconds:.1f} s (NUTS {'yes' if not info.reused_fit else 'no'})", flush=True)
        done, pending = pending[:len(got)], pending[len(got):] + got
        completed += [o for o in (problem.observe(p) for p in done) if o is not None]
        points = points + got
    total = sum(r["proposals"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    summary = {"proposals": total, "seconds": seconds, "proposals_per_second": total / seconds,
               "nuts_runs": sum(r["nuts"] for r in rounds)}
    print(f"sustained: {total} proposals in {seconds:.0f} s = "
          f"{summary['proposals_per_second']:.2f} proposals/s "
          f"({summary['nuts_runs']} NUTS runs of {len(rounds)} rounds)")
    command = " ".join([".venv/bin/python", "benchmarks/proposer_speed.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    args.fleet_output.write_text(json.dumps({
        "command": command, "machine": {"platform": platform.platform(),
                                        "cpus": os.cpu_count()},
        "summary": summary, "rounds": rounds}, indent=2))


def spaces_main(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """The ``--spaces`` mode: time, print and write ``--spaces-output``."""
    import torch

    torch.set_num_threads(1)
    environment = [f"{name}={shlex.quote(os.environ[name])}" for name in
                   ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS") if name in os.environ]
    command = " ".join([*environment, ".venv/bin/python", "benchmarks/proposer_speed.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    print(f"saasbo suggest(4) with 4 pending at {SPACE_TRIALS} trials per family: "
          f"{args.spaces}, {args.repeats} warm repeats", flush=True)
    rows = space_speed(args.spaces, args.repeats)
    print(f"\n{'family':12} {'params':>6} {'columns':>7} {'first s':>8} {'fit s':>6} "
          f"{'acqf s':>6} {'warm min':>8} {'median':>7} {'<= 30 s':>7}")
    nan = float("nan")
    for r in rows:
        print(f"{r['family']:12} {r['parameters']:6} {r['model_dimension']:7} "
              f"{r['seconds']:8.1f} {r['first'].get('fit_s', nan):6.1f} "
              f"{r['first'].get('acquisition_s', nan):6.1f} {r.get('warm_min', nan):8.1f} "
              f"{r.get('warm_median', nan):7.1f} {'yes' if r['within_target'] else 'no':>7}")
    args.spaces_output.parent.mkdir(parents=True, exist_ok=True)
    args.spaces_output.write_text(json.dumps({
        "command": command, "machine": {"platform": platform.platform(),
                                        "python": platform.python_version(),
                                        "cpus": os.cpu_count()},
        "torch_threads": torch.get_num_threads(), "target_seconds": SPACE_TARGET_SECONDS,
        "rows": rows}, indent=2))
    print(f"\nwrote {args.spaces_output}\nreproduce: {command}")


def print_tables(rows: Sequence[dict[str, Any]], loops: Sequence[dict[str, Any]]) -> None:
    print("\nseconds per call: first = first call (ours: compilation included when the shape "
          "is new to the process); warm = ours again, compiled (min / median of repeats); "
          "fit and acqf: split of the last warm call")
    print(f"{'method':6} {'dims':>4} {'trials':>6} {'proposals':>9} {'first s':>8} "
          f"{'warm min':>8} {'median':>7} {'fit s':>6} {'acqf s':>6} {'load':>5}")
    nan = float("nan")
    for r in rows:
        warm = r.get("warm", {})
        print(f"{r['method']:6} {r['dims']:4} {r['trials']:6} {r['proposals']:9} "
              f"{r['seconds']:8.1f} {r.get('warm_min', nan):8.1f} {r.get('warm_median', nan):7.1f} "
              f"{warm.get('fit_s', nan):6.1f} {warm.get('acquisition_s', nan):6.1f} "
              f"{r['load_before']:5.1f}")
    if loops:
        print("\nclosed loop: hypervolume after the initial points and after each batch of 4")
        for loop in loops:
            print(f"{loop['method']:6} dims {loop['dims']} seed {loop['seed']}: "
                  + " ".join(f"{v:.3f}" for v in loop["hypervolume"])
                  + f"  ({sum(loop['seconds_per_batch']):.0f} s, invalid {loop['invalid']})")


if __name__ == "__main__":
    main()

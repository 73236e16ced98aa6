"""Evidence v2 (issue 30, items 4-6): the SST-2 headline and the papers' findings, each a
paired comparison (``autopeft compare``'s engine) at a higher fidelity, resumable.

Phases (``--phase``; default ``all`` = plan, then run, then report):

1. ``plan``: writes the comparison plans under ``--out`` (default
   ``benchmarks/results/evidence_v2/``) **before their runs**: ``plans/*.yaml`` and
   ``selection.json``, the rule that chose the headline candidates and what it chose. An
   existing plan is never rewritten (``--replan`` forces it), so the candidates stay the
   ones chosen before the results were seen; a plan that cannot be built yet is skipped
   with its reason and written by a later call.
   * ``headline``: at most 6 configurations from the committed SST-2 searches
     (``real_search_sst2/trials_<family>.csv``) against the 7 catalogue baselines. The
     rule (``HEADLINE_RULE``) reads the searches' own held-out score, never dev.
   * the findings of He et al. (2022) and Chen et al. (2023), each at two shares:
     ``parallel-vs-serial`` (equal share: same bottleneck, both after the FFN sublayer),
     ``ffn-vs-attention`` (a parallel adapter of one size beside the FFN or beside the
     attention block: equal share), ``scale-4-vs-1`` (the FFN parallel adapter with s = 4
     or 1), and ``grouping`` (3 groups with different strategies, uniform allocation, at
     one budget, grouped spindle against uniform and increasing: ``GROUPING_STRATEGIES``).
2. ``run``: every plan's arms with every seed, **seed-major across all plans** (seed 0 of
   every plan, then seed 1, ...), so that a stopped run leaves every comparison with the
   same complete seeds, in ``--workers`` processes of one torch thread each (default: one
   per core; each takes every n-th run). One journal (``runs.jsonl``) serves all plans: an arm shared by two
   plans at the same fidelity (the FFN parallel adapter 64 appears in three) trains once.
   Each run is appended as it finishes; a rerun resumes. ``--commit`` commits the results
   folder after every run (``git commit -- <out>``; the shards take turns on a file lock,
   ``results_lock``, so one commits at a time), ``--hours H`` stops starting new runs
   after H hours.
3. ``report``: ``reports/<plan>.json`` (``autopeft compare``'s report) and ``summary.json``:
   every comparison with its arms, fidelity, seeds, mean difference, CIs and verdict, and
   per finding the paper's claim and whether it is reproduced, refuted or not
   distinguishable; the measured cost per run and the projected total.

The fidelity (``FIDELITY``) is the smallest the issue allows: 4,000 training sentences per
seed (each seed draws its own), 2 epochs, 64 tokens, the full 872-sentence dev set, 5 seeds.
Measured on this 2-core machine it already takes longer than the 6 CPU hours the issue
budgets (``summary.json``'s ``cost``), so no larger one fits.

Run (detached; resumable):
    cd /work/main && nohup setsid .venv/bin/python benchmarks/evidence_v2.py --commit \\
        > /tmp/evidence_v2.log 2>&1 &
Report only: ``--phase report``.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.comparison_plan import ComparisonPlan
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import (
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    SerialAdapterConfig,
)
from autopeft_service.domain.spaces.design_space import DesignSpace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SEARCHES = RESULTS / "real_search_sst2"
FAMILIES = ("autopeft", "unified", "design_space", "lora")
SEEDS = 5
FIDELITY: dict[str, Any] = {"epochs": 2.0, "max_train_examples": 4000, "max_length": 64,
                            "batch_size": 16, "learning_rate": 1e-3, "max_dev_examples": None}
#: Two shares per finding: bottleneck 8 (0.17 % of MiniLM-L6) and 64 (1.31 %).
ADAPTER_SIZES = (8, 64)
#: Two budgets (percent of the backbone) for the grouping finding.
GROUPING_BUDGETS = (0.2, 1.0)
#: The small-share regime of the headline rule: deployed share at most this (percent).
SMALL_SHARE = 0.1

HEADLINE_RULE = (
    "Written before any evidence-v2 run. From each family's committed SST-2 search "
    "(benchmarks/results/real_search_sst2/trials_<family>.csv; families autopeft, unified, "
    "design_space, lora), take the completed trial with the highest held-out score (the "
    "search's own objective, column `score`; dev never used), ties broken by the smaller "
    "deployed share, then the lower trial number: 4 configurations. Then, for the "
    f"small-share claim, the 2 not yet chosen trials with the highest held-out score among "
    f"all families' completed trials with deployed share <= {SMALL_SHARE} %, same ties: "
    "6 in all. Each is compared with the 7 catalogue baselines.")

#: The papers' claims, as the candidate's expected direction against each baseline.
FINDINGS: dict[str, str] = {
    "parallel-vs-serial": "He et al. 2022, Sec. 4.3 / Fig. 5: a parallel adapter beats a "
                          "sequential (serial) one at the same insertion and budget",
    "ffn-vs-attention": "He et al. 2022, Sec. 4.4: modifying the FFN uses the added "
                        "parameters better than modifying attention (at larger budgets)",
    "scale-4-vs-1": "He et al. 2022, Sec. 4.5 / Table 4: the scaled parallel adapter at the "
                    "FFN does better with s = 4 than with s = 1",
    "grouping": "Chen et al. 2023, Sec. 4.1: the spindle grouping pattern beats uniform and "
                "increasing grouping at an equal budget",
}


# ---------------------------------------------------------------------------- plans


def _completed(family: str) -> list[dict[str, str]]:
    path = SEARCHES / f"trials_{family}.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return [r for r in csv.DictReader(handle) if r["state"] == "completed"]


def _rank(row: Mapping[str, str]) -> tuple[float, float, int]:
    return (-float(row["score"]), float(row["deployed_percent"]), int(row["trial"]))


def select_headline() -> list[dict[str, Any]]:
    """The headline candidates by ``HEADLINE_RULE``."""
    chosen: list[dict[str, str]] = []
    everything: list[dict[str, str]] = []
    for family in FAMILIES:
        rows = sorted(_completed(family), key=_rank)
        chosen.append(rows[0])
        everything += rows
    picked = {(r["family"], r["trial"]) for r in chosen}
    small = sorted((r for r in everything if float(r["deployed_percent"]) <= SMALL_SHARE
                    and (r["family"], r["trial"]) not in picked), key=_rank)
    chosen += small[:2]
    return [{"name": f"{r['family']}-{r['trial']}", "family": r["family"],
             "trial": int(r["trial"]), "held_out_score": float(r["score"]),
             "deployed_percent": float(r["deployed_percent"]),
             "trainable_percent": float(r["trainable_percent"]),
             "config_description": r["config_description"],
             "config": json.loads(r["config"])} for r in chosen]


def _config(config: PeftConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def _parallel(size: int, position: Position = Position.FFN, scale: float = 4.0) -> dict[str, Any]:
    layers = MINILM_DIMS.num_layers
    return _config(PeftConfig(num_layers=layers, parallel_adapters=(
        ParallelAdapterConfig(sizes=(size,) * layers, position=position, scale=scale),)))


def _serial(size: int) -> dict[str, Any]:
    layers = MINILM_DIMS.num_layers
    return _config(PeftConfig(num_layers=layers, serial_adapters=(
        SerialAdapterConfig(sizes=(size,) * layers, position=Position.FFN),)))


#: The grouping finding's per-group strategies at 3 groups (MiniLM-L6's 6 layers hold the
#: three patterns distinct only at 3 groups: spindle [2, 3, 1], uniform [2, 2, 2],
#: increasing [1, 2, 3]): Chen et al.'s discovered design's first, second and last
#: groups, so that the groups differ and the pattern decides which layers get what.
GROUPING_STRATEGIES = (("adapter", "lora"), ("adapter", "prefix"), ("prefix", "bitfit", "lora"))


def _grouped(pattern: str, budget: float) -> tuple[dict[str, Any], str]:
    from autopeft_service.domain.spaces.design_space import STRATEGIES, group_parameter

    space = DesignSpace.for_backbone(MINILM_DIMS, budgets=GROUPING_BUDGETS)
    point: dict[str, Any] = {"groups": len(GROUPING_STRATEGIES), "pattern": pattern,
                             "allocation": "uniform", "budget": budget}
    for g in range(space.max_groups):
        chosen = GROUPING_STRATEGIES[g] if g < len(GROUPING_STRATEGIES) else ()
        point[group_parameter(g, "tuned")] = int(bool(chosen))
        point.update({group_parameter(g, s): int(s in chosen) for s in STRATEGIES})
    config = space.decode(space.canonical(point))
    return _config(config), config.describe()


def _plan(candidates: list[dict[str, Any]], baselines: list[Any]) -> dict[str, Any]:
    return {"model": "minilm", "task": "glue:sst2", "data_dir": "../shared/data/glue",
            "seeds": SEEDS, "training": dict(FIDELITY), "candidates": candidates,
            "baselines": baselines}


def build_plans() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every plan (name -> plan document) and the headline selection record."""
    headline = select_headline()
    plans = {"headline": _plan(
        [{"name": c["name"], "config": c["config"]} for c in headline], list(BASELINES))}
    for size in ADAPTER_SIZES:
        plans[f"parallel-vs-serial-{size}"] = _plan(
            [{"name": f"parallel-ffn-{size}-s4", "config": _parallel(size)}],
            [{"name": f"serial-ffn-{size}", "config": _serial(size)}])
        plans[f"ffn-vs-attention-{size}"] = _plan(
            [{"name": f"parallel-ffn-{size}-s4", "config": _parallel(size)}],
            [{"name": f"parallel-attention-{size}-s4",
              "config": _parallel(size, Position.ATTENTION)}])
        plans[f"scale-4-vs-1-{size}"] = _plan(
            [{"name": f"parallel-ffn-{size}-s4", "config": _parallel(size)}],
            [{"name": f"parallel-ffn-{size}-s1", "config": _parallel(size, scale=1.0)}])
    for budget in GROUPING_BUDGETS:
        try:
            arms = {p: _grouped(p, budget) for p in ("spindle", "uniform", "increasing")}
        except ConfigError as error:
            print(f"plan: no grouping plan at budget {budget:g}: {error}", file=sys.stderr)
            continue
        plans[f"grouping-{budget:g}"] = _plan(
            [{"name": f"spindle-{budget:g}", "config": arms["spindle"][0]}],
            [{"name": f"{p}-{budget:g}", "config": arms[p][0]} for p in ("uniform", "increasing")])
    for plan in plans.values():
        ComparisonPlan.from_dict(plan)  # every plan validates before it is written
    return plans, {"rule": HEADLINE_RULE, "chosen": headline}


def write_plans(out: Path, replan: bool) -> None:
    """Write the plans and the selection once (``--replan`` rewrites them)."""
    folder = out / "plans"
    plans, selection = build_plans()
    folder.mkdir(parents=True, exist_ok=True)
    for name, plan in plans.items():
        path = folder / f"{name}.yaml"
        if path.exists() and not replan:
            continue  # chosen before the run: kept
        path.write_text(yaml.safe_dump(plan, sort_keys=False), "utf-8")
        print(f"plan: wrote {path}", file=sys.stderr)
    if (out / "selection.json").exists() and not replan:
        return
    selection["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "selection.json").write_text(json.dumps(selection, indent=2) + "\n", "utf-8")


def read_plans(out: Path) -> dict[str, ComparisonPlan]:
    """The plans under ``out/plans``, by name, headline first."""
    paths = sorted((out / "plans").glob("*.yaml"), key=lambda p: (p.stem != "headline", p.stem))
    return {p.stem: ComparisonPlan.from_dict(yaml.safe_load(p.read_text("utf-8"))) for p in paths}


# ---------------------------------------------------------------------------- run


def lock_path(out: Path) -> Path:
    """The lock file the shards of one results folder take turns on (in the temporary
    folder, not in ``out``: it must not be committed).

    Args:
        out: the results folder.

    Returns:
        ``<tmp>/autopeft-evidence_v2-<hash of out's absolute path>.lock``.
    """
    key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"autopeft-evidence_v2-{key}.lock"


@contextmanager
def results_lock(out: Path) -> Iterator[None]:
    """Hold the results folder's lock (``fcntl.flock``, exclusive, waiting for it): one shard
    at a time rewrites the reports and commits, so the shards never race for git's index
    and never commit a report another is half-way through writing.

    Args:
        out: the results folder.

    Yields:
        Nothing; the lock is held inside the block and released after it (also when the
        process dies).
    """
    with lock_path(out).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _commit(out: Path, message: str) -> None:
    """Commit the results folder (``git commit -- <out>``). Call it holding ``results_lock``:
    the shards then commit one at a time. A commit that still fails (a git process outside
    this benchmark holding the index) is reported and skipped; the next run's commit takes
    in its files, as it commits the whole folder.

    Args:
        out: the results folder.
        message: the commit message.
    """
    subprocess.run(["git", "add", "--", str(out)], cwd=ROOT, capture_output=True, check=False)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", str(out)], cwd=ROOT,
                            capture_output=True, check=False)
    if staged.returncode == 0:
        return  # nothing to commit
    done = subprocess.run(["git", "commit", "-q", "-m", message, "--", str(out)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 and "nothing to commit" not in done.stdout + done.stderr:
        print(f"run: could not commit ({done.stderr.strip()[:200]}); the next run's commit "
              "takes it in", file=sys.stderr)


def planned_runs(plans: Mapping[str, ComparisonPlan], num_layers: int) -> list[tuple[str, int, Any]]:
    """Every distinct run (plan name, seed, arm), seed-major across the plans; an arm two
    plans share at one seed (same run key) appears once, under the first plan."""
    from autopeft_service.domain.comparison_plan import seed_settings
    from workers.compare import plan_arms, run_key

    out, seen = [], set()
    seeds = max(len(p.seed_list()) for p in plans.values())
    for seed in range(seeds):
        for name, plan in plans.items():
            if seed not in plan.seed_list():
                continue
            for arm in plan_arms(plan, num_layers):
                key = run_key(plan.model, plan.task, plan.data_dir, plan.task_options,
                              arm.config, seed_settings(arm.settings, seed), seed)
                if key not in seen:
                    seen.add(key)
                    out.append((name, seed, arm))
    return out


def run(out: Path, threads: int, device: str, hours: float | None, commit: bool,
        shard: tuple[int, int] = (0, 1)) -> None:
    """The runs of shard ``i`` of ``n`` (every n-th planned run from the i-th), into the
    journal that all shards share (one line per run, appended in one write)."""
    import torch

    from workers.commands.trial import quiet_libraries
    from workers.compare import ComparisonTarget, Journal, run_arms
    from workers.trial import TrialRunner

    quiet_libraries()
    torch.set_num_threads(threads)
    plans = read_plans(out)
    runner = TrialRunner(device=device)
    journal = Journal(out / "runs.jsonl")
    started = time.monotonic()
    index, count = shard

    def stop() -> bool:
        return hours is not None and time.monotonic() - started > hours * 3600

    def progress(arm: Any, seed: int, record: dict[str, Any], cached: bool, done: int,
                 total: int) -> None:
        if cached:
            return
        print(f"run [{index}/{count}]: seed {seed} {arm.name}: dev {record['dev_score']:.4f} "
              f"in {record['train_seconds']:.0f} s train + {record['eval_seconds']:.0f} s eval "
              f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        with results_lock(out):  # one shard at a time: reports, then the commit
            summary = report(out, quiet=True)
            if commit:
                _commit(out, f"evidence_v2: seed {seed} {arm.name} (dev "
                        f"{record['dev_score']:.4f}); {summary['cost'].get('runs', 0)} of "
                        f"{summary['cost'].get('runs_needed', '?')} runs journalled")

    runs = planned_runs(plans, MINILM_DIMS.num_layers)
    for position, (name, seed, arm) in enumerate(runs):
        if position % count != index:
            continue
        if stop():
            print(f"run: stopped after {hours} h; rerun to resume", file=sys.stderr)
            return
        plan = plans[name]
        target = ComparisonTarget(plan.model, plan.task, plan.data_dir, plan.task_options)
        run_arms(runner, target, [arm], [seed], journal, on_run=progress, should_stop=stop)


def run_shards(out: Path, workers: int, device: str, hours: float | None,
               commit: bool) -> None:
    """``workers`` processes with one torch thread each, shard i running every
    ``workers``-th run: on this 2-core machine two one-thread runs do more per hour than
    one two-thread run (batches of short sentences scale poorly across threads)."""
    if workers == 1:
        run(out, os.cpu_count() or 1, device, hours, commit)
        return
    command = [sys.executable, __file__, "--phase", "run", "--out", str(out), "--threads", "1",
               "--device", device, *(["--hours", str(hours)] if hours else []),
               *(["--commit"] if commit else [])]
    children = [subprocess.Popen([*command, "--shard", f"{i}/{workers}"])
                for i in range(workers)]
    try:
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
        raise


# ---------------------------------------------------------------------------- report


def _finding(name: str) -> str | None:
    return next((f for f in FINDINGS if name.startswith(f)), None)


def _call(verdicts: Sequence[str]) -> str:
    """A finding's call from its comparisons' verdicts (candidate in the paper's favoured
    role): reproduced when all say better, refuted when any says worse, else not
    distinguishable."""
    if verdicts and all(v == "better" for v in verdicts):
        return "reproduced"
    if any(v == "worse" for v in verdicts):
        return "refuted"
    return "not distinguishable"


def _cost(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not records:
        return {}
    seconds = [r["train_seconds"] + r["eval_seconds"] for r in records]
    by_device: dict[str, int] = {}
    for r in records:
        key = f"{r['device']} x{r.get('threads', '?')} threads on {r.get('host', '?')}"
        by_device[key] = by_device.get(key, 0) + 1
    return {"runs": len(records), "seconds_total": sum(seconds),
            "seconds_per_run_mean": sum(seconds) / len(seconds),
            "hardware": by_device}


def report(out: Path, quiet: bool = False) -> dict[str, Any]:
    """Reports per plan and ``summary.json`` from the journal (partial runs allowed)."""
    from autopeft_service.domain.comparison_plan import seed_settings
    from workers.compare import Journal, comparison_report, ordered_runs, plan_arms, run_key

    journal = Journal(out / "runs.jsonl")
    plans = read_plans(out)
    comparisons, findings, runs_needed = [], {}, set()
    (out / "reports").mkdir(parents=True, exist_ok=True)
    for name, plan in plans.items():
        arms = plan_arms(plan, MINILM_DIMS.num_layers)
        seeds = plan.seed_list()
        records: dict[str, dict[int, dict[str, Any]]] = {a.name: {} for a in arms}
        for seed, arm in ordered_runs(arms, seeds):
            key = run_key(plan.model, plan.task, plan.data_dir, plan.task_options, arm.config,
                          seed_settings(arm.settings, seed), seed)
            runs_needed.add(key)
            if (record := journal.get(key)) is not None:
                records[arm.name][seed] = record
        doc = comparison_report(arms, seeds, records, alpha=plan.alpha, resamples=plan.resamples,
                                context={"plan": name, "model": plan.model, "task": plan.task,
                                         "training": plan.shared_settings().model_dump(
                                             mode="json", exclude={"data_seed"})})
        (out / "reports" / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        shares = {a["name"]: (a["deployed_share"], a["trainable_share"], a["mean"], a["sd"])
                  for a in doc["arms"]}
        for c in doc["comparisons"]:
            row = {"plan": name, **c, "complete": doc["complete"],
                   "candidate_deployed_share": shares[c["candidate"]][0],
                   "candidate_trainable_share": shares[c["candidate"]][1],
                   "baseline_deployed_share": shares[c["baseline"]][0],
                   "baseline_trainable_share": shares[c["baseline"]][1],
                   "candidate_mean": shares[c["candidate"]][2],
                   "baseline_mean": shares[c["baseline"]][2],
                   "fidelity": doc["context"]["training"]}
            comparisons.append(row)
        finding = _finding(name)
        if finding is not None:
            verdicts = [c["verdict"] for c in doc["comparisons"]]
            findings[name] = {"finding": finding, "claim": FINDINGS[finding],
                              "complete": doc["complete"],
                              "seeds": sorted({s for c in doc["comparisons"] for s in c["seeds"]}),
                              "verdicts": verdicts,
                              # no call before every planned seed ran: a stopped run
                              # must not read as a verdict
                              "call": _call(verdicts) if doc["complete"] else "pending",
                              "provisional_call": _call(verdicts)}
    done = [r for k, r in journal.records.items() if k in runs_needed]
    cost = _cost(done)
    if cost:
        cost["runs_needed"] = len(runs_needed)
        cost["projected_hours_at_this_cost"] = (
            cost["seconds_per_run_mean"] * len(runs_needed) / 3600)
    summary = {"fidelity": {**FIDELITY, "seeds": SEEDS, "train_split": "train, data seed = seed",
                            "eval_split": "dev (872 sentences)", "model": "MiniLM-L6"},
               "selection": json.loads((out / "selection.json").read_text("utf-8")),
               "cost": cost, "complete": all(c["complete"] for c in comparisons),
               "findings": findings, "comparisons": comparisons,
               "command": "python benchmarks/evidence_v2.py --commit (resumable); "
                          "--phase report redraws this file"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    (out / "summary.md").write_text(markdown(summary), "utf-8")
    if not quiet:
        for name, f in findings.items():
            print(f"{name}: {f['call']} ({', '.join(f['verdicts'])}; seeds {f['seeds']})")
        for c in comparisons:
            if c["plan"] == "headline":
                diff = c["mean_difference"]
                print(f"headline {c['candidate']} vs {c['baseline']}: "
                      f"{'-' if diff is None else f'{100 * diff:+.2f}'} points, {c['verdict']}")
        print(f"cost: {json.dumps(cost)}")
    return summary


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: the findings' calls and every comparison, as tables."""
    fid = summary["fidelity"]
    cost = summary.get("cost") or {}
    lines = [
        "# Evidence v2: paired comparisons on SST-2 (generated by benchmarks/evidence_v2.py)",
        "",
        f"MiniLM-L6, {fid['max_train_examples']} training sentences per seed (data seed = "
        f"seed), {fid['epochs']:g} epochs, {fid['max_length']} tokens, batch "
        f"{fid['batch_size']}, learning rate {fid['learning_rate']:g} (full fine-tuning 1e-4), "
        f"scored on the full dev split (872); {fid['seeds']} seeds planned. "
        f"{'Complete.' if summary['complete'] else '**Incomplete: runs are still missing.**'}",
        "",
        f"Runs done: {cost.get('runs', 0)} of {cost.get('runs_needed', '?')}; "
        f"{cost.get('seconds_per_run_mean', 0):.0f} s per run on average; hardware: "
        f"{', '.join(f'{k}: {v}' for k, v in (cost.get('hardware') or {}).items()) or '-'}.",
        "",
        "Differences are candidate minus baseline, in accuracy points; CI: 95 % percentile "
        "bootstrap over seeds; p: Holm-adjusted (bootstrap / paired t); a verdict needs both.",
        "",
        "## The papers' findings",
        "",
        "| comparison | claim | seeds | verdicts | call |",
        "|---|---|---|---|---|",
    ]
    for name, f in summary["findings"].items():
        lines.append(f"| {name} | {f['claim']} | {len(f['seeds'])} | {', '.join(f['verdicts'])} "
                     f"| **{f['call']}** |")
    lines += ["", "## Every comparison", "",
              "| plan | candidate | deployed / trainable % | baseline | deployed / trainable % "
              "| candidate mean | baseline mean | diff | 95 % CI | p (Holm) boot / t | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        ci = ("-" if c["ci95"][0] is None else f"[{_pts(c['ci95'][0])}, {_pts(c['ci95'][1])}]")
        mean = (lambda v: "-" if v is None else f"{100 * v:.2f}")  # noqa: E731
        lines.append(
            f"| {c['plan']} | {c['candidate']} | {_share(c['candidate_deployed_share'])} / "
            f"{_share(c['candidate_trainable_share'])} | {c['baseline']} | "
            f"{_share(c['baseline_deployed_share'])} / {_share(c['baseline_trainable_share'])} | "
            f"{mean(c['candidate_mean'])} | {mean(c['baseline_mean'])} | "
            f"{_pts(c['mean_difference'])} | {ci} | {c['p_bootstrap_holm']:.3f} / "
            f"{c['p_t_holm']:.3f} | {c['verdict']} ({len(c['seeds'])} seeds) |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("plan", "run", "report", "all"), default="all")
    parser.add_argument("--out", type=Path, default=RESULTS / "evidence_v2")
    parser.add_argument("--replan", action="store_true", help="rewrite existing plans")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads with --workers 1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hours", type=float, help="stop starting runs after H hours")
    parser.add_argument("--commit", action="store_true", help="git commit results per run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="run processes, one torch thread each (default: the cores)")
    parser.add_argument("--shard", help=argparse.SUPPRESS)  # i/n: one worker process
    args = parser.parse_args(argv)
    print(f"evidence_v2 on {platform.node()} ({os.cpu_count()} cores)", file=sys.stderr)
    if args.phase in ("plan", "all"):
        write_plans(args.out, args.replan)
    if args.shard:
        index, count = (int(x) for x in args.shard.split("/"))
        run(args.out, args.threads, args.device, args.hours, args.commit, (index, count))
        return 0
    if args.phase in ("run", "all"):
        run_shards(args.out, args.workers, args.device, args.hours, args.commit)
    if args.phase in ("report", "all"):
        report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a paired comparison: every arm once per seed, resumable, then the statistics.

Seed k trains **every** arm with training seed k on the subset of data seed k
(``seed_settings``), so the arms of a seed share their training examples and their
random stream, and differ only in configuration: the scores of one seed are a pair.
Runs go seed-major (all arms of seed 0, then seed 1, ...), so a comparison stopped early
still has complete pairs. Each finished run is appended to a **journal** (JSON lines,
flushed and fsynced), keyed by everything that determines it (model, task, data, config,
settings, seed): a rerun skips what the journal holds, and plans that share an arm at the
same fidelity share its runs. The report (``comparison_report``) is computed from whatever
the journal holds, and says whether the plan is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft_service.domain.comparison import ArmScores, compare_candidate
from autopeft_service.domain.comparison_plan import ComparisonPlan, seed_settings
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings
from workers.data import Example
from workers.trial import TrialRequest, TrialRunner

CANDIDATE = "candidate"
BASELINE = "baseline"


@dataclass(frozen=True)
class Arm:
    """One arm, built for the backbone.

    Attributes:
        name: how reports call it.
        role: ``candidate`` or ``baseline``.
        config: the configuration.
        settings: its training settings (before the per-seed data seed).
        source: where it came from, copied into reports.
    """

    name: str
    role: str
    config: PeftConfig
    settings: TrainingSettings
    source: Mapping[str, Any] = field(default_factory=dict)


def plan_arms(plan: ComparisonPlan, num_layers: int) -> list[Arm]:
    """The plan's arms for a backbone of ``num_layers`` layers, candidates first.

    Raises:
        ConfigError: a configuration for another depth, or bad training overrides.
    """
    shared = plan.shared_settings()
    arms = []
    for role, specs in ((CANDIDATE, plan.candidates), (BASELINE, plan.baselines)):
        for spec in specs:
            source = ({"kind": "baseline", "baseline": spec.baseline} if spec.baseline
                      else {"kind": "config"})
            arms.append(Arm(spec.label, role, spec.build(num_layers), spec.settings(shared),
                            source))
    return arms


def train_fingerprint(examples: Sequence[Example]) -> str:
    """SHA-256 (hex, 16 characters) of a training set's texts and labels, in order: equal
    fingerprints, equal training data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([list(example.texts), example.label]).encode())
    return digest.hexdigest()[:16]


def run_key(model: str, task: str, data_dir: str | None, task_options: Mapping[str, Any],
            config: PeftConfig, settings: TrainingSettings, seed: int) -> str:
    """What determines a run, hashed: equal keys, the same run (the journal's key). The
    hardware is not part of it (a run resumed elsewhere counts); each record names its
    device, threads and host."""
    document = {"model": model, "task": task, "data_dir": data_dir,
                "task_options": dict(task_options), "config": config.model_dump(mode="json"),
                "settings": settings.model_dump(mode="json"), "seed": seed}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class Journal:
    """Finished runs as JSON lines, one per run, keyed by ``run_key``.

    Args:
        path: the file (created with its folder on the first record); None keeps the
            records in memory only.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    # a line cut by a kill mid-write: the run is simply done again
                    continue

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record`` (it has a ``key``) and append it to the file, durably."""
        self.records[record["key"]] = record
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # after a line cut by a kill, start a new line, or this record would join it
        torn = self.path.exists() and self.path.stat().st_size > 0 and \
            not self.path.read_bytes().endswith(b"\n")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(("\n" if torn else "") + json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


#: Called after each run with the arm, the seed, its record, whether it came from the
#: journal, and (done, total).
RunCallback = Callable[[Arm, int, dict[str, Any], bool, int, int], None]


@dataclass(frozen=True)
class ComparisonTarget:
    """Where the arms run: backbone, task and data."""

    model: str
    task: str
    data_dir: str | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)


def ordered_runs(arms: Sequence[Arm], seeds: Sequence[int]) -> Iterator[tuple[int, Arm]]:
    """(seed, arm) in run order."""
    for seed in seeds:  # seed-major: a stopped comparison has complete pairs
        for arm in arms:
            yield seed, arm


def run_arms(runner: TrialRunner, target: ComparisonTarget, arms: Sequence[Arm],
             seeds: Sequence[int], journal: Journal, *, on_run: RunCallback | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict[str, dict[int, dict[str, Any]]]:
    """Train every arm with every seed that the journal lacks; score dev.

    Args:
        runner: the trial runner (keeps the backbone and tokenised data between runs).
        target: backbone, task and data.
        arms: the arms.
        seeds: the seeds, in run order.
        journal: finished runs (read and appended).
        on_run: progress callback.
        should_stop: asked before each new run; True ends the loop early (the journal keeps
            what finished).

    Returns:
        arm name -> seed -> run record, for the runs that exist.

    Raises:
        DataError / ModelError / ConfigError: bad task, model or configuration.
        TrialError: a run's loss became NaN or infinite.
    """
    records: dict[str, dict[int, dict[str, Any]]] = {arm.name: {} for arm in arms}
    total = len(arms) * len(seeds)
    for done, (seed, arm) in enumerate(ordered_runs(arms, seeds), 1):
        settings = seed_settings(arm.settings, seed)
        key = run_key(target.model, target.task, target.data_dir, target.task_options,
                      arm.config, settings, seed)
        record = journal.get(key)
        cached = record is not None
        if record is None:
            if should_stop is not None and should_stop():
                break
            request = TrialRequest(model=target.model, task=target.task, config=arm.config,
                                   settings=settings, seed=seed, data_dir=target.data_dir,
                                   task_options=dict(target.task_options), hold_out=False)
            fit, _, _ = runner.splits(request)
            started = time.time()
            result = runner.run(request)
            record = {
                "key": key, "arm": arm.name, "seed": seed, "data_seed": settings.data_seed,
                "train_fingerprint": train_fingerprint(fit), "metric": result.metric,
                "dev_score": result.dev_score, "dev": result.dev,
                "trainable_percent": result.trainable_percent,
                "deployed_percent": result.deployed_percent,
                "trainable_parameters": result.trainable_parameters,
                "deployed_parameters": result.deployed_parameters,
                "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
                "train_examples": result.train_examples, "steps": result.steps,
                "device": result.device, "threads": _threads(),
                "host": platform.node(), "finished_at": time.time(),
                "wall_seconds": time.time() - started,
                "config_description": arm.config.describe(),
            }
            journal.add(record)
        records[arm.name][seed] = record
        if on_run is not None:
            on_run(arm, seed, record, cached, done, total)
    return records


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def comparison_report(arms: Sequence[Arm], seeds: Sequence[int],
                      records: Mapping[str, Mapping[int, Mapping[str, Any]]], *,
                      alpha: float, resamples: int,
                      context: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison as a JSON document: per arm its scores and both shares, per candidate
    and baseline the paired difference, its intervals, p-values and verdict.

    Args:
        arms: the arms (roles say which are compared with which).
        seeds: the plan's seeds.
        records: ``run_arms``'s output (may be partial).
        alpha: the verdicts' family-wise error rate.
        resamples: bootstrap resamples.
        context: model, task, fidelity ... copied under ``context``.

    Returns:
        ``{"context", "complete", "arms": [...], "comparisons": [...]}``.
    """
    arm_rows, scores = [], {}
    for arm in arms:
        runs = records.get(arm.name, {})
        by_seed = {seed: float(runs[seed]["dev_score"]) for seed in seeds if seed in runs}
        scores[arm.name] = ArmScores(arm.name, by_seed)
        first = next(iter(runs.values()), None)
        arm_rows.append({
            "name": arm.name, "role": arm.role, "source": dict(arm.source),
            "config": arm.config.model_dump(mode="json"),
            "config_description": arm.config.describe(),
            "settings": arm.settings.model_dump(mode="json", exclude={"data_seed"}),
            "deployed_share": None if first is None else first["deployed_percent"],
            "trainable_share": None if first is None else first["trainable_percent"],
            "seeds": sorted(by_seed), "scores": [by_seed[s] for s in sorted(by_seed)],
            "mean": scores[arm.name].mean if by_seed else None,
            "sd": scores[arm.name].sd if by_seed else None,
            "train_seconds_mean": (sum(r["train_seconds"] for r in runs.values()) / len(runs)
                                   if runs else None),
            "train_fingerprints": {str(s): runs[s]["train_fingerprint"] for s in sorted(runs)},
        })
    baselines = [scores[a.name] for a in arms if a.role == BASELINE]
    comparisons = []
    for arm in arms:
        if arm.role != CANDIDATE:
            continue
        for c in compare_candidate(scores[arm.name], baselines, alpha=alpha,
                                   resamples=resamples):
            comparisons.append({
                "candidate": c.candidate, "baseline": c.baseline, "seeds": list(c.seeds),
                "differences": list(c.differences), "mean_difference": _finite(c.mean_difference),
                "ci95": [_finite(v) for v in c.ci95], "ci_holm": [_finite(v) for v in c.ci_holm],
                "ci_holm_level": c.ci_level, "p_bootstrap": c.p_bootstrap,
                "p_bootstrap_holm": c.p_bootstrap_holm, "p_t": c.p_t, "p_t_holm": c.p_t_holm,
                "verdict": c.verdict})
    complete = all(len(records.get(a.name, {})) == len(seeds) for a in arms)
    return {"context": dict(context), "alpha": alpha, "resamples": resamples,
            "seeds": list(seeds), "complete": complete, "arms": arm_rows,
            "comparisons": comparisons}


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN (no pairs) -> null in JSON


def check_depth(arms: Sequence[Arm], num_layers: int) -> None:
    """Raises ConfigError when an arm's configuration is for another depth."""
    for arm in arms:
        if arm.config.num_layers != num_layers:
            raise ConfigError(f"arm {arm.name!r}: configured for {arm.config.num_layers} layers "
                              f"but the backbone has {num_layers}")

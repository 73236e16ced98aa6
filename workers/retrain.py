"""Re-train chosen configurations with several seeds on the whole train split, score dev.

The fair comparison of a search's Pareto configurations with hand-crafted baselines: each
configuration is trained once per seed on the **full** train split (no held-out part is
taken out: ``TrialRequest.hold_out`` False) and scored on the dev split, which the search
never selected on. Runs are sequential in one ``TrialRunner``, so the backbone and the
tokenised data are loaded once. ``autopeft retrain`` is the command line of this module.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings, TrialResult
from workers.trial import TrialRequest, TrialRunner


@dataclass(frozen=True)
class RetrainCase:
    """One configuration to re-train.

    Attributes:
        name: how reports call it (``trial #3``, ``lora-r8-qv``).
        config: the configuration, for the backbone being used.
        settings: the training settings of every seed.
        source: where it came from (trial id, number and recorded objectives, or the
            baseline), copied into reports.
    """

    name: str
    config: PeftConfig
    settings: TrainingSettings
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainOutcome:
    """A case's results over the seeds, in seed order.

    Attributes:
        case: the configuration re-trained.
        results: one trial result per seed (``held_out`` empty: see ``TrialRequest``).
    """

    case: RetrainCase
    results: tuple[TrialResult, ...]

    @property
    def dev_scores(self) -> list[float]:
        """The primary dev metric of each seed."""
        return [r.dev_score for r in self.results]

    @property
    def dev_mean(self) -> float:
        return statistics.fmean(self.dev_scores)

    @property
    def dev_std(self) -> float | None:
        """Sample standard deviation over the seeds (ddof=1); None for a single seed."""
        scores = self.dev_scores
        return statistics.stdev(scores) if len(scores) > 1 else None

    @property
    def train_seconds_mean(self) -> float:
        return statistics.fmean(r.train_seconds for r in self.results)


#: Called after each run with the case, the seed, its result and (done, total) runs.
RunCallback = Callable[[RetrainCase, int, TrialResult, int, int], None]


def artifact_folder_name(name: str) -> str:
    """A case name as a folder name (letters, digits, ``-_.``; the rest become ``_``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "case"


def retrain(runner: TrialRunner, cases: Sequence[RetrainCase], seeds: Sequence[int], *,
            model: str | Path, task: str, data_dir: str | Path | None = None,
            task_options: Mapping[str, object] | None = None,
            on_run: RunCallback | None = None,
            save_dir: str | Path | None = None) -> list[RetrainOutcome]:
    """Train every case with every seed on the whole train split; score dev.

    Args:
        runner: the runner (keeps the backbone and tokenised data between runs).
        cases: the configurations, each built for ``model``'s number of layers.
        seeds: training seeds (initialisation, dropout, batch order) of every case.
        model: backbone folder or hub name.
        task: task string (``glue:mrpc``, ``synthetic``, ...).
        data_dir: folder of GLUE task folders.
        task_options: extra ``load_task`` keywords.
        on_run: called after each run (progress reports).
        save_dir: when given, each run's trained adapter is written there as an artefact,
            ``<save_dir>/<case name>/seed-<seed>`` (``workers.artifact``).

    Returns:
        One outcome per case, in the order given.

    Raises:
        DataError / ModelError / ConfigError: bad task, model or configuration.
        TrialError: a run's loss became NaN or infinite.
    """
    outcomes = []
    total, done = len(cases) * len(seeds), 0
    for case in cases:
        results = []
        for seed in seeds:
            request = TrialRequest(model=model, task=task, config=case.config,
                                   settings=case.settings, seed=seed, data_dir=data_dir,
                                   task_options=dict(task_options or {}), hold_out=False)
            artifact = None if save_dir is None else (
                Path(save_dir) / artifact_folder_name(case.name) / f"seed-{seed}")
            result = runner.run(request, artifact_dir=artifact)
            results.append(result)
            done += 1
            if on_run is not None:
                on_run(case, seed, result, done, total)
        outcomes.append(RetrainOutcome(case, tuple(results)))
    return outcomes

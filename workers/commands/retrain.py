"""``autopeft retrain``: re-train chosen configurations with K seeds; report dev mean ± std.

Compares a search's Pareto configurations fairly with hand-crafted baselines: every
configuration is trained with seeds 0..K-1 on the **whole train split** (no held-out part
is taken out) and scored on the **dev split**, which the search never selected on.

    autopeft retrain STUDY_ID [--trials N ...] [--baselines NAME ... | all] [--seeds K]
    autopeft retrain --baselines NAME ... --model PATH --task TASK [--data-dir DIR]
    autopeft retrain STUDY_ID --compare --baselines NAME ... [--seeds K] [--journal FILE]

``--compare`` makes it a paired comparison (``autopeft compare``'s engine and report): seed
k trains every configuration on the subset of data seed k, and each trial is compared with
each baseline (mean paired difference, bootstrap CI, Holm across the baselines, verdict).

With a study (read through the server: ``--server``/``--token`` as ``autopeft pareto``),
the trials are its Pareto front unless ``--trials`` names them (numbers as the ``#``
column of ``autopeft pareto`` shows); model, task, data folder and training settings are
the study's (``--model``, ``--data-dir`` and the training flags override them). Without a
study no server is needed: ``--model``, ``--task`` and ``--baselines`` say what to train,
with the default TrainingSettings. Runs are sequential in this process with one
``TrialRunner`` (the backbone and tokenised data load once); a progress line per run goes
to stderr; the result is a table, or JSON (``--json``; ``--output FILE`` writes it too).

Failures print one ``autopeft: error: ...`` line: exit 2 for arguments (unknown trial or
baseline, a trial not completed, no model folder, bad settings), 1 for the server or a
failed run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft_service.cli.arguments import positive_int, study_id, trial_number
from autopeft_service.cli.connection import INTERRUPTED, common_arguments, connection, explain
from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, fail
from autopeft_service.domain.baselines import ALL, BASELINES, Baseline, select_baselines
from autopeft_service.domain.comparison import DEFAULT_ALPHA, DEFAULT_RESAMPLES
from autopeft_service.domain.errors import AutopeftError, ConfigError, TrialError
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.study import StudySpec
from autopeft_service.domain.trial import TrainingSettings
from workers.commands.trial import add_task_arguments, quiet_libraries, task_options

if TYPE_CHECKING:
    from rich.table import Table

    from autopeft_service.client import AutopeftClient
    from autopeft_service.domain.trial import TrialResult
    from autopeft_service.domain.views import ParetoOut, StudyOut, TrialSummary
    from workers.retrain import RetrainCase, RetrainOutcome

DEFAULT_SEEDS = 3
#: ``--max-*-examples all``: lift the study's cap.
NO_CAP = "all"


# ---------------------------------------------------------------------------- arguments


def _number(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def seed_count(text: str) -> int:
    """argparse type of ``--seeds``: at least one seed."""
    return _number(text, 1, "a whole number of seeds of at least 1")


def example_limit(text: str) -> int | str:
    """argparse type of ``--max-train-examples``/``--max-dev-examples``: N or ``all``."""
    return NO_CAP if text == NO_CAP else _number(text, 1, f"a positive integer or {NO_CAP!r}")


#: Training flags (flag name == TrainingSettings field) that override the study's settings:
#: name -> (argparse type, metavar, help).
SETTING_FLAGS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "epochs": (float, "E", "passes over the train split"),
    "batch_size": (positive_int, "B", "examples per step"),
    "learning_rate": (float, "LR", "learning rate (full-ft keeps its own 1e-4)"),
    "max_length": (positive_int, "N", "tokens per example"),
    "max_train_examples": (example_limit, "N", f"train on N examples at most ({NO_CAP}: no cap)"),
    "max_dev_examples": (example_limit, "N", f"score N dev examples at most ({NO_CAP}: no cap)"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``retrain``."""
    text = "re-train Pareto trials and baselines with K seeds on the full train split"
    parser = subparsers.add_parser("retrain", help=text, description=text, parents=[common_arguments()])
    parser.add_argument("study", nargs="?", type=study_id, metavar="STUDY_ID",
                        help="the study whose trials to re-train (omit for baselines alone)")
    parser.add_argument("--trials", nargs="+", type=trial_number, metavar="N",
                        help="trial numbers (the # of `autopeft pareto`; default: the Pareto front)")
    parser.add_argument("--front", choices=("observed", "model"), default="observed",
                        help="without --trials: the observed front (default) or the "
                        "model-predicted one (`autopeft pareto --front model`)")
    parser.add_argument("--baselines", nargs="+", metavar="NAME",
                        help=f"baselines: {', '.join(BASELINES)}, or {ALL}")
    parser.add_argument("--seeds", type=seed_count, default=DEFAULT_SEEDS, metavar="K",
                        help=f"train each configuration with seeds 0..K-1 (default {DEFAULT_SEEDS})")
    parser.add_argument("--model", metavar="MODEL",
                        help="minilm | smollm2 | a backbone folder (default: the study's "
                        "backbone)")
    add_task_arguments(parser)
    parser.set_defaults(task=None)  # the study's task, or required without a study
    for name, (kind, metavar, help_text) in SETTING_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, metavar=metavar,
                            help=help_text)
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, ...")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="also write every run's result as JSON to FILE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--compare", action="store_true",
                        help="paired comparison (as `autopeft compare`): seed k trains every "
                        "configuration on the subset of data seed k; each trial against each "
                        "baseline with a bootstrap CI, Holm and a verdict (needs --baselines)")
    parser.add_argument("--journal", type=Path, metavar="FILE",
                        help="with --compare: finished runs as JSON lines, read to resume")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="write each run's trained adapter as an artefact: "
                        "DIR/<configuration>/seed-<k>")
    parser.set_defaults(handler=run)


# ---------------------------------------------------------------------------- what to train


def _settings(base: TrainingSettings, args: argparse.Namespace) -> TrainingSettings:
    """``base`` with the training flags that were given (``all`` lifts a cap).

    Raises:
        ConfigError: a value is out of range (names the field).
    """
    flags = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    flags = {name: None if value == NO_CAP else value for name, value in flags.items()}
    return TrainingSettings.from_dict({**base.model_dump(), **flags})


def _front(client: AutopeftClient, study: int, front: str, wait_seconds: float = 300,
           poll_seconds: float = 2.0) -> ParetoOut:
    """The study's front; for the model front, the one fitted on every observation (the
    server fits in the background: while it does, this asks again).

    Raises:
        ConfigError: the model front is unavailable or its fit failed (the server's note),
            or no fresh one came within ``wait_seconds``.
    """
    import time

    end = time.monotonic() + wait_seconds
    while True:
        answer = client.pareto(study, front=front)
        if front != "model" or answer.model_status in (None, "fresh"):
            return answer
        if answer.model_status in ("failed", "unavailable"):
            raise ConfigError(f"study {study} has no model front to retrain: {answer.note}")
        if time.monotonic() >= end:
            raise ConfigError(f"study {study}'s model front was not fitted on every "
                              f"observation within {wait_seconds:g} s: {answer.note}")
        time.sleep(poll_seconds)


def _study_trials(client: AutopeftClient, study: int, numbers: list[int] | None,
                  front: str = "observed") -> list[TrialSummary]:
    """The trials to re-train: those numbered, else the study's Pareto front.

    Raises:
        ConfigError: a number is not a trial of the study, or the trial is not completed.
    """
    if numbers is None:
        return list(_front(client, study, front).trials)
    by_number = {t.number: t for t in client.trials(study)}
    chosen = []
    for number in dict.fromkeys(numbers):
        trial = by_number.get(number)
        if trial is None:
            known = f"its trials are #0-#{max(by_number)}" if by_number else "it has no trials yet"
            raise ConfigError(f"--trials: study {study} has no trial #{number} ({known})")
        if trial.state != "completed":
            raise ConfigError(f"--trials: trial #{number} of study {study} is {trial.state}, "
                              "not completed")
        chosen.append(trial)
    return chosen


def _trial_case(trial: TrialSummary, num_layers: int, settings: TrainingSettings,
                model: str) -> RetrainCase:
    """A RetrainCase for a study trial.

    Raises:
        ConfigError: the trial's configuration does not fit the backbone's layers.
    """
    from workers.retrain import RetrainCase

    config = PeftConfig.from_dict(trial.config)
    if config.num_layers != num_layers:
        raise ConfigError(f"trial #{trial.number} is configured for {config.num_layers} layers "
                          f"but {model} has {num_layers}; pass the study's backbone with --model")
    source = {"kind": "trial", "trial_id": trial.id, "number": trial.number,
              "study_held_out_score": trial.objective, "study_dev_score": trial.dev_score,
              "study_param_share": trial.param_share}
    return RetrainCase(f"trial #{trial.number}", config, settings, source)


def _baseline_case(baseline: Baseline, num_layers: int,
                   settings: TrainingSettings) -> RetrainCase:
    """A RetrainCase for a catalogue baseline (its own settings overrides applied)."""
    from workers.retrain import RetrainCase

    return RetrainCase(baseline.name, baseline.config(num_layers), baseline.settings(settings),
                       {"kind": "baseline", "baseline": baseline.name,
                        "summary": baseline.summary})


# ---------------------------------------------------------------------------- reports


def _report(outcomes: list[RetrainOutcome], context: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: the context (study, model, task, seeds, settings) and, per
    configuration, its summary and every seed's result (``held_out``/``objective`` left out:
    there is no held-out split)."""
    configurations = []
    for outcome in outcomes:
        case, first = outcome.case, outcome.results[0]
        configurations.append({
            "name": case.name, "source": dict(case.source),
            "config": case.config.model_dump(mode="json"),
            "config_description": case.config.describe(),
            "settings": case.settings.model_dump(mode="json"),
            "trainable_parameters": first.trainable_parameters,
            "trainable_percent": first.trainable_percent,
            "deployed_parameters": first.deployed_parameters,
            "deployed_percent": first.deployed_percent,
            "dev_scores": outcome.dev_scores, "dev_mean": outcome.dev_mean,
            "dev_std": outcome.dev_std, "train_seconds_mean": outcome.train_seconds_mean,
            "runs": [r.model_dump(mode="json", exclude={"objective", "held_out"})
                     for r in outcome.results],
        })
    metric = outcomes[0].results[0].metric if outcomes else None
    return {**context, "metric": metric, "configurations": configurations}


def _table(report: dict[str, Any], title: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    seeds = report["seeds"]
    rows = report["configurations"]
    train_examples = sorted({r["runs"][0]["train_examples"] for r in rows})
    table = Table(title=Text(title, style="bold"), caption=(
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); trained on the whole train split "
        f"({'/'.join(map(str, train_examples))} examples), scored on dev; std over seeds (ddof=1)"))
    table.add_column("configuration", overflow="fold")
    table.add_column("deployed %", justify="right")
    table.add_column("trainable %", justify="right")
    table.add_column(f"dev {report['metric']} mean ± std", justify="right")
    table.add_column("per seed", overflow="fold")
    table.add_column("train s (mean)", justify="right")
    for row in rows:
        score = f"{row['dev_mean']:.4f}"
        if row["dev_std"] is not None:
            score += f" ± {row['dev_std']:.4f}"
        name = row["name"]
        if row["source"].get("kind") == "trial":
            name += f": {row['config_description']}"
        table.add_row(Text(name), f"{row['deployed_percent']:.3f}",
                      f"{row['trainable_percent']:.3f}", score,
                      " ".join(f"{s:.4f}" for s in row["dev_scores"]),
                      f"{row['train_seconds_mean']:.2f}")
    return table


def _progress(case: RetrainCase, seed: int, result: TrialResult, done: int, total: int) -> None:
    print(f"retrain: [{done}/{total}] {case.name} seed {seed}: dev {result.metric} "
          f"{result.dev_score:.4f}, {result.train_seconds:.1f} s on {result.train_examples} "
          "train examples", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- handler


@dataclass(frozen=True)
class _Target:
    """What to re-train on: the study (None for baselines alone) and its trials, the
    model, the task and the training settings before the flags."""

    study: StudyOut | None
    trials: list[TrialSummary]
    model: str
    task: str
    data_dir: str | Path | None
    task_options: dict[str, Any]
    settings: TrainingSettings


def _standalone_target(args: argparse.Namespace, baselines: list[Baseline]) -> _Target:
    """Baselines alone: model, task and baselines come from the flags; no server.

    Raises:
        ConfigError: neither a study nor a task, or a flag the mode needs is missing.
    """
    if args.task is None:
        raise ConfigError("retrain: give a STUDY_ID, or --task with --model and --baselines "
                          "to train baselines alone")
    if args.trials is not None:
        raise ConfigError("--trials: needs a STUDY_ID (trials belong to a study)")
    if not args.model:
        raise ConfigError("--model: required without a STUDY_ID")
    if not baselines:
        raise ConfigError("--baselines: required without a STUDY_ID (nothing else to train)")
    return _Target(None, [], args.model, args.task, args.data_dir, task_options(args),
                   TrainingSettings())


def _study_target(args: argparse.Namespace, baselines: list[Baseline]) -> _Target:
    """A study's trials, read from the server, with its backbone, task and settings.

    Raises:
        ConfigError: ``--task`` given, a bad trial number, nothing to train, or a study
            whose stored spec no longer validates (its settings cannot be read).
        ClientError: the server refused or could not be reached.
    """
    from autopeft_service.client import AutopeftClient

    if args.task is not None:
        raise ConfigError("--task: a study is re-trained on its own task; drop --task or the "
                          "STUDY_ID")
    server, token = connection(args)
    with AutopeftClient(server, token, timeout=args.timeout) as client:
        study = client.status(args.study)
        trials = _study_trials(client, args.study, args.trials, args.front)
    if not trials and not baselines:
        raise ConfigError(f"study {args.study} has no completed trials, so no Pareto front to "
                          "re-train; give --baselines, or wait for results")
    spec = study.spec
    if not isinstance(spec, StudySpec):
        raise ConfigError(f"study {args.study}: its stored spec no longer validates, so its "
                          "backbone, task and training settings cannot be read")
    return _Target(study, trials, args.model or spec.backbone, spec.task,
                   args.data_dir or spec.data_dir,
                   {**spec.task_options, **task_options(args)}, spec.training)


def run(args: argparse.Namespace) -> int:
    """Run ``autopeft retrain``; every expected failure becomes one line and an exit code."""
    from autopeft_service.client import ClientError

    try:
        return _run(args)
    except ClientError as error:
        fail(explain(error), USAGE_ERROR if error.status_code == 422 else RUNTIME_ERROR)
    except TrialError as error:
        fail(f"a run failed: {error}")
    except AutopeftError as error:
        fail(str(error), USAGE_ERROR)
    except KeyboardInterrupt:
        fail("interrupted", INTERRUPTED)


def _run(args: argparse.Namespace) -> int:
    """Gather the configurations, train them with every seed, print or write the report."""
    try:
        baselines = select_baselines(args.baselines or [])
    except ConfigError as error:
        raise ConfigError(f"--baselines: {error}") from None
    _check_compare(args, baselines)
    target = (_standalone_target(args, baselines) if args.study is None
              else _study_target(args, baselines))
    settings = _settings(target.settings, args)
    seeds = list(range(args.seeds))

    import torch

    from workers.retrain import retrain
    from workers.trial import TrialRunner

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = TrialRunner(device=args.device)
    num_layers = runner.backbone(target.model).dims.num_layers  # a bad model fails first
    cases = ([_trial_case(t, num_layers, settings, target.model) for t in target.trials]
             + [_baseline_case(b, num_layers, settings) for b in baselines])
    if args.compare:
        return _compare(args, target, cases, seeds)
    print(f"retrain: {len(cases)} configuration(s) x {len(seeds)} seed(s) on {target.model}, "
          f"task {target.task}: whole train split, scored on dev", file=sys.stderr, flush=True)
    outcomes = retrain(runner, cases, seeds, model=target.model, task=target.task,
                       data_dir=target.data_dir, task_options=target.task_options,
                       on_run=_progress, save_dir=args.save)

    study = target.study
    report = _report(outcomes, {
        "study": None if study is None else {
            "id": study.id, "name": study.name, "task": target.task,
            "backbone": _spec_backbone(study)},
        "model": target.model, "task": target.task,
        "data_dir": None if target.data_dir is None else str(target.data_dir),
        "task_options": target.task_options, "train_split": "full", "eval_split": "dev",
        "seeds": seeds, "device": args.device, "threads": torch.get_num_threads(),
        "settings": settings.model_dump(mode="json"),
    })
    _emit(report, args, study.id if study else None,
          study.name if study else f"{target.task} on {Path(target.model).name}")
    return 0


def _check_compare(args: argparse.Namespace, baselines: list[Baseline]) -> None:
    """``--compare`` needs baselines and trials; ``--journal`` needs ``--compare``.

    Raises:
        ConfigError: naming the flag.
    """
    if args.journal is not None and not args.compare:
        raise ConfigError("--journal: only with --compare")
    if not args.compare:
        return
    if not baselines:
        raise ConfigError("--compare: needs --baselines (what the trials are compared with)")
    if args.study is None:
        raise ConfigError("--compare: needs a STUDY_ID (its trials are the candidates); "
                          "compare baselines alone with `autopeft compare PLAN`")
    if args.save is not None:
        raise ConfigError("--save: not with --compare (compare keeps scores, not adapters)")


def _compare(args: argparse.Namespace, target: _Target, cases: list[RetrainCase],
             seeds: list[int]) -> int:
    """The paired comparison of the study's trials (candidates) with the baselines."""
    import torch

    from workers.commands.compare import emit, print_progress
    from workers.compare import (
        BASELINE,
        CANDIDATE,
        Arm,
        ComparisonTarget,
        Journal,
        comparison_report,
        run_arms,
    )

    arms = [Arm(c.name, BASELINE if c.source.get("kind") == "baseline" else CANDIDATE,
                c.config, c.settings, c.source) for c in cases]
    print(f"retrain --compare: {len(arms)} arm(s) x {len(seeds)} paired seed(s) on "
          f"{target.model}, task {target.task}: train split (data seed = seed), scored on dev",
          file=sys.stderr, flush=True)
    from workers.trial import TrialRunner

    runner = TrialRunner(device=args.device)
    records = run_arms(runner, ComparisonTarget(
        target.model, target.task, None if target.data_dir is None else str(target.data_dir),
        target.task_options), arms, seeds, Journal(args.journal), on_run=print_progress)
    study = target.study
    report = comparison_report(arms, seeds, records, alpha=DEFAULT_ALPHA,
                               resamples=DEFAULT_RESAMPLES, context={
                                   "study": None if study is None else study.id,
                                   "model": target.model, "task": target.task,
                                   "device": args.device, "threads": torch.get_num_threads()})
    emit(report, args.output, args.json,
         f"study {args.study}" + ("" if study is None else f" ({study.name})"))
    return 0


def _spec_backbone(study: StudyOut) -> str:
    """The backbone the study searched on (its spec validated in ``_study_target``)."""
    return study.spec.backbone if isinstance(study.spec, StudySpec) else "-"


def _emit(report: dict[str, Any], args: argparse.Namespace, study: int | None,
          name: str) -> None:
    """Write ``--output``; print the JSON (``--json``) or the table."""
    text = json.dumps(report, indent=2)
    if args.output:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            fail(f"--output: cannot write {args.output}: {error}")
        print(f"retrain: wrote {args.output}", file=sys.stderr)
    if args.json:
        print(text)
        return
    from rich.console import Console

    label = f"study {study} ({name})" if study is not None else name
    title = f"{label}: re-trained with {len(report['seeds'])} seed(s)"
    Console(highlight=False).print(_table(report, title))

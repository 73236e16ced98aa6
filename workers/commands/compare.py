"""``autopeft compare PLAN``: a paired comparison of configurations against baselines.

    autopeft compare PLAN.yaml [--journal FILE] [--output FILE] [--json] [--report-only]

The plan (``autopeft_service.domain.comparison_plan``) names the backbone, the task, the
fidelity, the seeds, the candidates and the baselines. Seed k trains every arm on the
subset of data seed k with training seed k, so the arms of a seed are paired; every run
trains on the (subsampled) train split and scores the dev split. The report has per arm
the mean and sd of the dev score with the deployed and the trainable share side by side,
and per candidate and baseline the mean paired difference with its 95 % bootstrap CI,
Holm's interval and p-values, and a verdict: better, not distinguishable or worse
(``autopeft_service.domain.comparison``).

``--journal FILE`` keeps every finished run (JSON lines): a rerun with the same journal
skips them, so an interrupted comparison resumes; ``--report-only`` reports from the
journal without training. Failures print one ``autopeft: error: ...`` line: exit 2 for a
bad plan or argument, 1 for a failed run, 130 when interrupted (the journal keeps what
finished).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft_service.cli.arguments import positive_int
from autopeft_service.cli.connection import INTERRUPTED
from autopeft_service.cli.parser import USAGE_ERROR, fail
from autopeft_service.domain.comparison_plan import ComparisonPlan
from autopeft_service.domain.errors import AutopeftError, ConfigError, TrialError
from workers.commands.trial import quiet_libraries

if TYPE_CHECKING:
    from rich.table import Table

    from workers.compare import Arm


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare``."""
    text = "paired comparison of configurations against baselines over K seeds"
    parser = subparsers.add_parser("compare", help=text, description=text)
    parser.add_argument("plan", type=Path, metavar="PLAN",
                        help="the comparison plan (YAML or JSON; see docs/evidence.md)")
    parser.add_argument("--journal", type=Path, metavar="FILE",
                        help="finished runs as JSON lines: read to resume, appended as runs end")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    parser.add_argument("--report-only", action="store_true",
                        help="report from the journal without training (needs --journal)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, ...")
    parser.set_defaults(handler=run)


def read_plan(path: Path) -> ComparisonPlan:
    """Read and validate a plan file (YAML, of which JSON is a subset).

    Raises:
        ConfigError: unreadable file, bad YAML or an invalid plan (names the field).
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"PLAN: cannot read {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"PLAN: {path} is not YAML/JSON: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"PLAN: {path} must hold a mapping (model, task, candidates, ...)")
    try:
        return ComparisonPlan.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"PLAN {path}: {error}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``autopeft compare``; every expected failure becomes one line and an exit code."""
    try:
        return _run(args)
    except TrialError as error:
        fail(f"a run failed: {error}")
    except AutopeftError as error:
        fail(str(error), USAGE_ERROR)
    except KeyboardInterrupt:
        fail("interrupted (the journal keeps the finished runs)", INTERRUPTED)


def print_progress(arm: Arm, seed: int, record: dict[str, Any], cached: bool, done: int,
              total: int) -> None:
    """One stderr line per run (``workers.compare.RunCallback``)."""
    how = "from the journal" if cached else f"{record['train_seconds']:.1f} s"
    print(f"compare: [{done}/{total}] seed {seed} {arm.name}: dev {record['metric']} "
          f"{record['dev_score']:.4f} ({how})", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    if args.report_only and args.journal is None:
        raise ConfigError("--report-only: needs --journal (the runs to report)")
    plan = read_plan(args.plan)

    import torch

    from workers.compare import (
        ComparisonTarget,
        Journal,
        comparison_report,
        plan_arms,
        run_arms,
    )
    from workers.trial import TrialRunner

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = TrialRunner(device=args.device)
    num_layers = runner.backbone(plan.model).dims.num_layers  # a bad model fails first
    arms = plan_arms(plan, num_layers)
    seeds = plan.seed_list()
    target = ComparisonTarget(plan.model, plan.task, plan.data_dir, plan.task_options)
    journal = Journal(args.journal)
    print(f"compare: {len(arms)} arm(s) x {len(seeds)} seed(s) on {plan.model}, task "
          f"{plan.task}: train split (data seed = seed), scored on dev", file=sys.stderr,
          flush=True)
    records = run_arms(runner, target, arms, seeds, journal, on_run=print_progress,
                       should_stop=(lambda: True) if args.report_only else None)
    report = comparison_report(arms, seeds, records, alpha=plan.alpha,
                               resamples=plan.resamples, context={
                                   "plan": str(args.plan), "model": plan.model,
                                   "task": plan.task, "data_dir": plan.data_dir,
                                   "training": plan.shared_settings().model_dump(
                                       mode="json", exclude={"data_seed"}),
                                   "device": args.device,
                                   "threads": torch.get_num_threads()})
    emit(report, args.output, args.json, f"{plan.task} on {Path(plan.model).name}")
    return 0


def emit(report: dict[str, Any], output: Path | None, as_json: bool, title: str) -> None:
    """Write ``output``; print the JSON or the two tables.

    Raises:
        ConfigError: ``output`` cannot be written.
    """
    text = json.dumps(report, indent=2)
    if output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"--output: cannot write {output}: {error.strerror or error}") from None
        print(f"compare: wrote {output}", file=sys.stderr)
    if as_json:
        print(text)
        return
    from rich.console import Console

    console = Console(highlight=False)
    state = "" if report["complete"] else " (incomplete: some runs missing)"
    console.print(arms_table(report, f"{title}: {len(report['seeds'])} paired seed(s){state}"))
    console.print(comparisons_table(report))


def _points(value: float | None) -> str:
    """A score difference in points (x100), signed; ``-`` for none."""
    return "-" if value is None else f"{100 * value:+.2f}"


def arms_table(report: dict[str, Any], title: str) -> Table:
    """Per arm: role, deployed and trainable share, dev mean ± sd, seeds."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("arm", "role", "deployed %", "trainable %", "dev mean ± sd", "seeds"):
        table.add_column(column, justify="left" if column in ("arm", "role") else "right")
    for row in report["arms"]:
        share = ("-" if row["deployed_share"] is None else f"{row['deployed_share']:.3f}",
                 "-" if row["trainable_share"] is None else f"{row['trainable_share']:.3f}")
        score = ("-" if row["mean"] is None else
                 f"{100 * row['mean']:.2f}" + ("" if row["sd"] is None else f" ± {100 * row['sd']:.2f}"))
        table.add_row(row["name"], row["role"], *share, score, str(len(row["seeds"])))
    return table


def comparisons_table(report: dict[str, Any]) -> Table:
    """Per candidate and baseline: mean paired difference, CIs, Holm p-values, verdict."""
    from rich.table import Table

    table = Table(title=f"paired differences (points), Holm across baselines, "
                  f"alpha {report['alpha']:g}")
    for column in ("candidate", "baseline", "mean diff", "95 % CI", "Holm CI", "p boot (Holm)",
                   "p t (Holm)", "verdict"):
        table.add_column(column, justify="left" if column in ("candidate", "baseline",
                                                               "verdict") else "right")
    for c in report["comparisons"]:
        ci = "-" if c["ci95"][0] is None else f"[{_points(c['ci95'][0])}, {_points(c['ci95'][1])}]"
        holm = ("-" if c["ci_holm"][0] is None else
                f"[{_points(c['ci_holm'][0])}, {_points(c['ci_holm'][1])}] "
                f"@{100 * c['ci_holm_level']:.1f}%")
        table.add_row(c["candidate"], c["baseline"], _points(c["mean_difference"]), ci, holm,
                      f"{c['p_bootstrap_holm']:.3f}", f"{c['p_t_holm']:.3f}", c["verdict"])
    return table

"""How the study commands show what the client returns: progress lines, the Pareto table,
the studies table and ``--json`` output (rich is imported only when a table is drawn)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from autopeft_service.domain.study import StudySpec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from autopeft_service.domain.tenancy import UsageOut
    from autopeft_service.domain.views import ParetoOut, StudyOut, TrialSummary

#: Widest the studies table's name and task columns grow on a wide terminal.
NAME_WIDTH, TASK_WIDTH = 40, 16


def print_json(data: BaseModel | Sequence[BaseModel]) -> None:
    """Print a view model (or a list of them) as the API's JSON, indented."""
    if isinstance(data, BaseModel):
        print(json.dumps(data.model_dump(mode="json"), indent=2))
    else:
        print(json.dumps([item.model_dump(mode="json") for item in data], indent=2))


def console() -> Console:
    """A console for tables and the progress bar (no syntax highlighting)."""
    from rich.console import Console

    return Console(highlight=False)


def spec_field(study: StudyOut, name: str, default: str = "-") -> str:
    """A field of the study's spec as text; ``default`` when an older spec, shown as
    stored, lacks it. ``optimizer`` gives the optimiser's name."""
    spec = study.spec
    if isinstance(spec, StudySpec):
        return spec.optimizer.name if name == "optimizer" else str(getattr(spec, name))
    value: Any = spec.get(name)
    if name == "optimizer":
        value = (value if isinstance(value, dict) else {}).get("name", "saasbo")
    return default if value is None else str(value)


def clipped(text: str) -> Text:
    """A cell that stays on one line, cut with an ellipsis when its column is narrower.

    The column itself stays wrappable (``no_wrap`` off) so that rich narrows it, and not the
    short columns beside it, when the table is wider than the terminal; the cell's own
    ``no_wrap`` then truncates instead of folding the text over several lines.
    """
    from rich.text import Text

    return Text(text, no_wrap=True, overflow="ellipsis")


def score(value: float | None, digits: int = 4) -> str:
    """A score to ``digits`` places; ``-`` for none."""
    return "-" if value is None else f"{value:.{digits}f}"


def share(value: float | None) -> str:
    """A parameter share (percent) to three places; ``-`` for none."""
    return "-" if value is None else f"{value:.3f}"


def duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def metric(trials: list[TrialSummary]) -> str:
    """The name of the score the trials report (``accuracy``, ...); ``score`` if none says."""
    for trial in trials:
        name = (trial.result or {}).get("metric")
        if name:
            return str(name)
    return "score"


def progress_line(study: StudyOut) -> str:
    """``done/total trials done, running, queued[, failed, stopped early, cancelled],
    best, Pareto size`` on one line."""
    from autopeft_service.client import ended_trials

    counts = study.counts
    best = study.best
    parts = [f"{ended_trials(study)}/{study.total_trials} trials done",
             f"{counts.get('leased', 0)} running", f"{counts.get('ready', 0)} queued"]
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed")
    if counts.get("pruned"):
        parts.append(f"{counts['pruned']} stopped early")
    if counts.get("cancelled"):
        parts.append(f"{counts['cancelled']} cancelled")
    parts.append(f"best {score(best.objective) if best else '-'}")
    parts.append(f"Pareto {study.pareto_size}")
    return ", ".join(parts)


def share_headers(objective: str) -> tuple[str, str]:
    """The deployed and trainable share columns' headers, the objective one (the study's
    ``param_share_count``) marked ``*``; on two lines (as the score's), so that the
    configuration keeps its width on 80 columns."""
    if objective == "trainable":
        return "deployed\n%", "trainable\n%*"
    return "deployed\n%*", "trainable\n%"


def trial_shares(trial: TrialSummary, objective: str) -> tuple[float | None, float | None]:
    """A trial's (deployed, trainable) share; from a server too old to send them, its
    objective share in the objective's column."""
    deployed, trainable = trial.deployed_share, trial.trainable_share
    if deployed is None and trainable is None:
        return ((None, trial.param_share) if objective == "trainable"
                else (trial.param_share, None))
    return deployed, trainable


def pareto_table(pareto: ParetoOut, title: str) -> Table:
    """The front as a table: one row a trial, both shares (deployed and trainable, the
    objective marked ``*``), the configuration the one column that narrows (cut with an
    ellipsis) on a small terminal."""
    from rich.table import Table
    from rich.text import Text

    trials = pareto.trials
    reference = pareto.reference_point
    table = Table(title=Text(title, style="bold"), caption=(
        f"hypervolume {pareto.hypervolume:.4f} (reference: score "
        f"{reference.get('score', 0):g}, share {reference.get('param_share', 0):g} %); "
        "*: the objective"))
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("configuration", overflow="ellipsis")  # the one column that narrows
    table.add_column(f"held-out\n{metric(trials)}", justify="right", no_wrap=True)
    if pareto.front == "model":
        table.add_column("model\n90 % interval", justify="right", no_wrap=True)
    table.add_column("dev", justify="right", no_wrap=True)
    for header in share_headers(pareto.param_share_count):
        table.add_column(header, justify="right", no_wrap=True)
    for trial in trials:
        deployed, trainable = trial_shares(trial, pareto.param_share_count)
        predicted = [] if pareto.front != "model" else [
            "-" if trial.predicted is None else
            f"{score(trial.predicted.mean)} [{score(trial.predicted.low)}, "
            f"{score(trial.predicted.high)}]"]
        table.add_row(str(trial.number), clipped(trial.config_description),
                      score(trial.objective), *predicted, score(trial.dev_score),
                      share(deployed), share(trainable))
    return table


def show_pareto(out: Console, pareto: ParetoOut, name: str | None = None) -> None:
    """Print the front's table, or one line when it is empty."""
    label = f"study {pareto.study_id}" + (f" ({name})" if name else "")
    if not pareto.trials:
        out.print(f"{label}: no completed trials yet, so no Pareto front", markup=False)
        return
    kind = "model-predicted Pareto front" if pareto.front == "model" else "Pareto front"
    out.print(pareto_table(pareto, f"{label}: {kind}, {len(pareto.trials)} "
                           f"trials (score max, parameter share min)"))
    if pareto.note:
        out.print(f"note: {pareto.note}", markup=False)


def studies_table(studies: list[StudyOut]) -> Table:
    """The studies, one line each: two spaces between columns, none at the edges, so the
    name keeps what 80 columns leave (cut with an ellipsis beyond ``NAME_WIDTH``)."""
    from rich import box
    from rich.table import Table

    from autopeft_service.client import ended_trials

    table = Table(title=f"{len(studies)} studies", box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True, pad_edge=False)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("name", overflow="ellipsis", max_width=NAME_WIDTH)
    table.add_column("state", no_wrap=True)
    table.add_column("task", overflow="ellipsis", max_width=TASK_WIDTH)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("best", justify="right", no_wrap=True)
    table.add_column("Pareto", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for study in studies:
        best = study.best
        table.add_row(str(study.id), clipped(study.name), study.state,
                      clipped(spec_field(study, "task")),
                      f"{ended_trials(study)}/{study.total_trials}",
                      score(best.objective) if best else "-", str(study.pareto_size),
                      datetime.fromtimestamp(study.created_at).strftime("%m-%d %H:%M"))
    return table


def usage_table(usage: list[UsageOut]) -> Table:
    """Each tenant's use now against its quota (``used/quota``; ``-`` no limit)."""
    from rich import box
    from rich.table import Table

    def against(used: int, limit: int | None) -> str:
        return f"{used}/{'-' if limit is None else limit}"

    table = Table(title="usage against quota", box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True, pad_edge=False)
    for name in ("tenant", "weight", "running studies", "leased trials", "ready trials"):
        table.add_column(name, justify="left" if name == "tenant" else "right", no_wrap=True)
    for tenant in usage:
        table.add_row(tenant.tenant, f"{tenant.weight:g}",
                      against(tenant.running_studies, tenant.max_running_studies),
                      against(tenant.leased_trials, tenant.max_parallel_trials),
                      against(tenant.ready_trials, tenant.max_queued_trials))
    return table

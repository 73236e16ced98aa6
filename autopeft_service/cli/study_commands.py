"""``autopeft submit | status | watch | pareto | cancel | studies``: the handlers, each
given a connected ``AutopeftClient`` and the parsed flags (see ``connection.runner``),
returning the exit status. ``--json`` prints the API's JSON of what the client returned."""

from __future__ import annotations

import argparse
import threading
import time
from typing import TYPE_CHECKING, Any

from autopeft_service.cli.tables import (
    console,
    duration,
    print_json,
    progress_line,
    score,
    share,
    show_pareto,
    spec_field,
    studies_table,
    usage_table,
)

if TYPE_CHECKING:
    from autopeft_service.client import AutopeftClient
    from autopeft_service.domain.views import StudyOut, TrialSummary


def _shares(trial: TrialSummary) -> str:
    """``deployed 0.203 %, trainable 4.166 %`` (the objective's alone from an older server)."""
    if trial.deployed_share is None or trial.trainable_share is None:
        return f"{share(trial.param_share)} % of parameters"
    return (f"deployed {share(trial.deployed_share)} %, trainable "
            f"{share(trial.trainable_share)} %")


def submit(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Start a study from ``args.spec``; say how to follow it."""
    from autopeft_service.client import load_spec

    spec = load_spec(args.spec)
    if args.warm_start or args.warm_start_mode:
        from autopeft_service.domain.warm_start import with_warm_start

        spec = with_warm_start(spec, args.warm_start, args.warm_start_mode)
    study = client.submit(spec)
    if args.json:
        print_json(study)
        return 0
    print(f"study {study.id} submitted: {spec.name!r}, {spec.budget.total_trials} trials of "
          f"{spec.task} on {spec.backbone} (optimizer {spec.optimizer.name}, "
          f"{spec.budget.max_parallel} in parallel)")
    print(f"follow it with: autopeft watch {study.id}")
    return 0


def status(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Print a study's state, spec summary, progress, best trial and front size."""
    study = client.status(args.id)
    if args.json:
        print_json(study)
        return 0
    best = study.best
    print(f"study {study.id}: {study.name} [{study.state}]")
    if study.reason:
        print(f"  reason: {study.reason}")
    print(f"  task {spec_field(study, 'task', 'None')}, backbone "
          f"{spec_field(study, 'backbone', 'None')}, optimizer {spec_field(study, 'optimizer')}")
    print(f"  progress: {progress_line(study)}")
    if best:
        print(f"  best: trial {best.number}, held-out {score(best.objective)}, "
              f"dev {score(best.dev_score)}, {_shares(best)}: {best.config_description}")
    else:
        print("  best: no completed trial yet")
    print(f"  Pareto front: {study.pareto_size} trials, "
          f"hypervolume {study.hypervolume:.4f}")
    return 0


class Eta:
    """Time left from the completion rate seen since watching began."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> float | None:
        """Seconds left (0 when done; None before any trial ended while watching)."""
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done)
        start_time, start_done = self.start
        if done >= total:
            return 0.0
        if done <= start_done or now <= start_time:
            return None
        rate = (done - start_done) / (now - start_time)
        return (total - done) / rate


def watch(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Ctrl-C sets a flag that the watch loop turns into KeyboardInterrupt between
    requests (see ``AutopeftClient.watch``), so it never lands inside the HTTP client."""
    import signal

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _signal, _frame: stop.set())
    try:
        watch_study(client, args.id, args.interval, stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def watch_study(client: AutopeftClient, study: int, interval: float = 2.0,
                stop: threading.Event | None = None) -> StudyOut:
    """Follow a study to its end, then print the Pareto table; returns the final study.

    On a terminal a live progress bar (done/total, best score, Pareto size, running, ETA);
    otherwise (a log, a pipe) one line per change.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from autopeft_service.client import ended_trials

    out = console()
    eta = Eta()
    bar: dict[str, Any] = {}  # the Progress and its task, made at the first reading
    last_line: list[str] = []

    def update(study: StudyOut) -> None:
        done, total = ended_trials(study), study.total_trials
        best = study.best
        fields = {"running": study.counts.get("leased", 0), "pareto": study.pareto_size,
                  "best": score(best.objective) if best else "-",
                  "eta": duration(eta(done, total))}
        if not out.is_interactive:
            line = f"study {study.id} [{study.state}]: {progress_line(study)}"
            if line != (last_line[0] if last_line else None):
                last_line[:] = [line]
                print(f"{line}, ETA {fields['eta']}", flush=True)
            return
        if not bar:
            out.print(f"watching study {study.id} ({study.name}): "
                      f"{spec_field(study, 'task')} on {spec_field(study, 'backbone')}, "
                      f"{total} trials (Ctrl-C stops watching, not the study)", markup=False)
            bar["progress"] = Progress(
                SpinnerColumn(), TextColumn(f"study {study.id}"), BarColumn(bar_width=16),
                MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                TextColumn("Pareto {task.fields[pareto]}"),
                TextColumn("running {task.fields[running]}"),
                TextColumn("ETA {task.fields[eta]}"), console=out)
            bar["task"] = bar["progress"].add_task("trials", total=total, completed=done,
                                                   **fields)
            bar["progress"].start()
        bar["progress"].update(bar["task"], completed=done, total=total, **fields)

    try:
        final = client.watch(study, update, interval=interval, stop=stop)
    finally:
        if bar:
            bar["progress"].stop()
    print(f"study {final.id} {final.state}: {progress_line(final)}")
    if final.reason:
        print(f"  reason: {final.reason}")
    show_pareto(out, client.pareto(study), final.name)
    return final


def pareto(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Print the study's Pareto front (table, or the API's JSON)."""
    front = client.pareto(args.id, front=args.front)
    if args.json:
        print_json(front)
        return 0
    show_pareto(console(), front)
    return 0


def cancel(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Cancel a study; say how many trials had completed and how many were cancelled."""
    study = client.cancel(args.id)
    if args.json:
        print_json(study)
        return 0
    counts = study.counts
    print(f"study {study.id} ({study.name}) is {study.state}: "
          f"{counts.get('completed', 0)} trials completed, "
          f"{counts.get('cancelled', 0)} cancelled")
    return 0


def studies(client: AutopeftClient, args: argparse.Namespace) -> int:
    """List every study (a table, or the API's JSON)."""
    found = client.list_studies()
    if args.json:
        print_json(found)
        return 0
    if not found:
        print("no studies yet (start one with: autopeft submit SPEC.yaml)")
        return 0
    console().print(studies_table(found))
    return 0


def usage(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Print the caller's tenant's usage against its quotas (an admin: every tenant's)."""
    found = client.usage()
    if args.json:
        print_json(found)
        return 0
    console().print(usage_table(found))
    return 0

"""``autopeft submit | status | watch | pareto | cancel | studies | download``: use a
running server.

Each sub-command talks to the server through ``autopeft_service.client`` (``--server``,
default ``$AUTOPEFT_SERVER`` or http://127.0.0.1:8000; ``--token``, default
``$AUTOPEFT_TOKEN``, a client token). Failures print one ``autopeft: error: ...`` line:
exit 2 for usage and spec errors (a missing or invalid spec file, a spec the server
rejects with 422, no token), 1 for server and runtime errors (unknown study, bad token,
server unreachable).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, OneLineParser, fail
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.study import StudySpec

if TYPE_CHECKING:
    from autopeft_service.client import AutopeftClient
    from autopeft_service.domain.views import ParetoOut, StudyOut, TrialSummary

SERVER_ENV = "AUTOPEFT_SERVER"
TOKEN_ENV = "AUTOPEFT_TOKEN"
INTERRUPTED = 130

Handler = Callable[["AutopeftClient", argparse.Namespace], int]


# ---------------------------------------------------------------------------- arguments


def study_id(text: str) -> int:
    """argparse type of a study id: a positive integer the API accepts."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"invalid study id {text!r}: must be a positive integer")
    return value


def trial_number(text: str) -> int:
    """argparse type of a trial number within its study (0, 1, ...)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"invalid trial number {text!r}: must be 0 or more")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _common() -> argparse.ArgumentParser:
    """``--server`` and ``--token``, shared by every sub-command here."""
    common = OneLineParser(add_help=False)
    common.add_argument("--server", metavar="URL",
                        help=f"server URL (default: ${SERVER_ENV} or http://127.0.0.1:8000)")
    common.add_argument("--token", metavar="T",
                        help=f"client bearer token (default: ${TOKEN_ENV})")
    common.add_argument("--timeout", type=positive_float, default=30.0, metavar="S",
                        help="seconds per HTTP request (default: 30)")
    return common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register submit, status, watch, pareto, cancel and studies."""
    common = _common()

    def command(name: str, help_text: str, handler: Handler,
                with_id: bool = True) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                       parents=[common])
        if with_id:
            parser.add_argument("id", type=study_id, metavar="ID", help="study id")
        parser.set_defaults(handler=_runner(handler))
        return parser

    submit = command("submit", "start a study from a YAML or JSON spec file", _submit,
                     with_id=False)
    submit.add_argument("spec", metavar="SPEC", help="StudySpec file (.yaml, .yml or .json)")
    submit.add_argument("--json", action="store_true", help="print the created study as JSON")

    status = command("status", "show a study's progress, best trial and Pareto size", _status)
    status.add_argument("--json", action="store_true", help="print the study as JSON")

    watch = command("watch", "follow a study live until it ends, then print its Pareto front",
                    _watch)
    watch.add_argument("--interval", type=positive_float, default=2.0, metavar="S",
                       help="seconds between polls (default: 2)")

    pareto = command("pareto", "print the Pareto front: held-out score vs. parameter share",
                     _pareto)
    pareto.add_argument("--json", action="store_true", help="print the API's JSON as it is")

    cancel = command("cancel", "stop a study (queued and running trials are cancelled)",
                     _cancel)
    cancel.add_argument("--json", action="store_true", help="print the study as JSON")

    studies = command("studies", "list the studies", _studies, with_id=False)
    studies.add_argument("--json", action="store_true", help="print the studies as JSON")

    download = command("download", "download a trial's trained adapter (artefact folder)",
                       _download)
    download.add_argument("trial", type=trial_number, metavar="TRIAL",
                          help="trial number (the # column of `autopeft pareto`)")
    download.add_argument("-o", "--output", required=True, metavar="DIR",
                          help="folder to write the artefact into (created; must be empty)")


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    server = (args.server or os.environ.get(SERVER_ENV) or "").strip()
    if not server:
        from autopeft_service.client import DEFAULT_SERVER

        server = DEFAULT_SERVER
    if not server.startswith(("http://", "https://")):
        fail(f"--server: must be an http:// or https:// URL, got {server!r}", USAGE_ERROR)
    token = (args.token or os.environ.get(TOKEN_ENV) or "").strip()
    if not token:
        fail(f"no token: pass --token or set {TOKEN_ENV} (a client token of the server)",
             USAGE_ERROR)
    return server, token


def _runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: build the client, turn every expected failure into one line."""

    def run(args: argparse.Namespace) -> int:
        from autopeft_service.client import AutopeftClient, ClientError

        server, token = _connection(args)
        try:
            with AutopeftClient(server, token, timeout=args.timeout) as client:
                return handler(client, args)
        except ConfigError as error:
            fail(str(error), USAGE_ERROR)
        except ClientError as error:
            fail(_explain(error), USAGE_ERROR if error.status_code == 422
                 else RUNTIME_ERROR)
        except KeyboardInterrupt:
            study = getattr(args, "id", None)
            fail("interrupted" + (f"; study {study} goes on (autopeft cancel {study} stops it)"
                                  if study and handler is _watch else ""), INTERRUPTED)

    return run


def _explain(error: Any) -> str:
    """The client error with a hint at the flag that fixes it."""
    message = str(error)
    if error.status_code in (401, 403):
        return f"{message} (give a client token: --token or ${TOKEN_ENV})"
    if error.status_code is None and message.startswith("cannot reach"):
        return f"{message} (is `autopeft serve` running there? --server or ${SERVER_ENV})"
    return message


def _print_json(data: BaseModel | list[BaseModel]) -> None:
    """Print a view model (or a list of them) as the API's JSON, indented."""
    if isinstance(data, list):
        print(json.dumps([item.model_dump(mode="json") for item in data], indent=2))
    else:
        print(json.dumps(data.model_dump(mode="json"), indent=2))


def spec_field(study: StudyOut, name: str, default: str = "-") -> str:
    """A field of the study's spec as text; ``default`` when an older spec, shown as
    stored, lacks it. ``optimizer`` gives the optimiser's name."""
    spec = study.spec
    if isinstance(spec, StudySpec):
        return spec.optimizer.name if name == "optimizer" else str(getattr(spec, name))
    value = spec.get(name)
    if name == "optimizer":
        value = (value if isinstance(value, dict) else {}).get("name", "saasbo")
    return default if value is None else str(value)


# ---------------------------------------------------------------------------- formatting


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False)


#: Widest the studies table's name and task columns grow on a wide terminal.
NAME_WIDTH, TASK_WIDTH = 40, 16


def _clipped(text: str):  # type: ignore[no-untyped-def]
    """A cell that stays on one line, cut with an ellipsis when its column is narrower.

    The column itself stays wrappable (``no_wrap`` off) so that rich narrows it, and not the
    short columns beside it, when the table is wider than the terminal; the cell's own
    ``no_wrap`` then truncates instead of folding the text over several lines.
    """
    from rich.text import Text

    return Text(text, no_wrap=True, overflow="ellipsis")


def _score(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _metric(trials: list[TrialSummary]) -> str:
    for trial in trials:
        metric = (trial.result or {}).get("metric")
        if metric:
            return str(metric)
    return "score"


def _progress_line(study: StudyOut) -> str:
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
    parts.append(f"best {_score(best.objective) if best else '-'}")
    parts.append(f"Pareto {study.pareto_size}")
    return ", ".join(parts)


def _pareto_table(pareto: ParetoOut, title: str):  # type: ignore[no-untyped-def]
    from rich.table import Table
    from rich.text import Text

    trials = pareto.trials
    reference = pareto.reference_point
    table = Table(title=Text(title, style="bold"), caption=(
        f"hypervolume {pareto.hypervolume:.4f} (reference: score "
        f"{reference.get('score', 0):g}, share {reference.get('param_share', 0):g} %)"))
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("configuration", overflow="ellipsis")  # the one column that narrows
    table.add_column(f"held-out {_metric(trials)}", justify="right", no_wrap=True)
    table.add_column("dev", justify="right", no_wrap=True)
    table.add_column("params %", justify="right", no_wrap=True)
    for trial in trials:
        table.add_row(str(trial.number), _clipped(trial.config_description),
                      _score(trial.objective), _score(trial.dev_score),
                      _share(trial.param_share))
    return table


def _show_pareto(console: Any, pareto: ParetoOut, name: str | None = None) -> None:
    label = f"study {pareto.study_id}" + (f" ({name})" if name else "")
    if not pareto.trials:
        console.print(f"{label}: no completed trials yet, so no Pareto front", markup=False)
        return
    console.print(_pareto_table(pareto, f"{label}: Pareto front, {len(pareto.trials)} "
                                f"trials (score max, parameter share min)"))


# ---------------------------------------------------------------------------- handlers


def _submit(client: AutopeftClient, args: argparse.Namespace) -> int:
    from autopeft_service.client import load_spec

    spec = load_spec(args.spec)
    study = client.submit(spec)
    if args.json:
        _print_json(study)
        return 0
    print(f"study {study.id} submitted: {spec.name!r}, {spec.budget.total_trials} trials of "
          f"{spec.task} on {spec.backbone} (optimizer {spec.optimizer.name}, "
          f"{spec.budget.max_parallel} in parallel)")
    print(f"follow it with: autopeft watch {study.id}")
    return 0


def _status(client: AutopeftClient, args: argparse.Namespace) -> int:
    study = client.status(args.id)
    if args.json:
        _print_json(study)
        return 0
    best = study.best
    print(f"study {study.id}: {study.name} [{study.state}]")
    if study.reason:
        print(f"  reason: {study.reason}")
    print(f"  task {spec_field(study, 'task', 'None')}, backbone "
          f"{spec_field(study, 'backbone', 'None')}, optimizer {spec_field(study, 'optimizer')}")
    print(f"  progress: {_progress_line(study)}")
    if best:
        print(f"  best: trial {best.number}, held-out {_score(best.objective)}, "
              f"dev {_score(best.dev_score)}, {_share(best.param_share)} % of parameters: "
              f"{best.config_description}")
    else:
        print("  best: no completed trial yet")
    print(f"  Pareto front: {study.pareto_size} trials, "
          f"hypervolume {study.hypervolume:.4f}")
    return 0


class _Eta:
    """Time left from the completion rate seen since watching began."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> float | None:
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


def _watch(client: AutopeftClient, args: argparse.Namespace) -> int:
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

    console = _console()
    eta = _Eta()
    bar: dict[str, Any] = {}  # the Progress and its task, made at the first reading
    last_line: list[str] = []

    def update(study: StudyOut) -> None:
        done, total = ended_trials(study), study.total_trials
        best = study.best
        fields = {"running": study.counts.get("leased", 0), "pareto": study.pareto_size,
                  "best": _score(best.objective) if best else "-",
                  "eta": _duration(eta(done, total))}
        if not console.is_interactive:
            line = f"study {study.id} [{study.state}]: {_progress_line(study)}"
            if line != (last_line[0] if last_line else None):
                last_line[:] = [line]
                print(f"{line}, ETA {fields['eta']}", flush=True)
            return
        if not bar:
            console.print(f"watching study {study.id} ({study.name}): "
                          f"{spec_field(study, 'task')} on {spec_field(study, 'backbone')}, "
                          f"{total} trials (Ctrl-C stops watching, not the study)",
                          markup=False)
            bar["progress"] = Progress(
                SpinnerColumn(), TextColumn(f"study {study.id}"), BarColumn(bar_width=16),
                MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                TextColumn("Pareto {task.fields[pareto]}"),
                TextColumn("running {task.fields[running]}"),
                TextColumn("ETA {task.fields[eta]}"), console=console)
            bar["task"] = bar["progress"].add_task("trials", total=total, completed=done,
                                                   **fields)
            bar["progress"].start()
        bar["progress"].update(bar["task"], completed=done, total=total, **fields)

    try:
        final = client.watch(study, update, interval=interval, stop=stop)
    finally:
        if bar:
            bar["progress"].stop()
    print(f"study {final.id} {final.state}: {_progress_line(final)}")
    if final.reason:
        print(f"  reason: {final.reason}")
    _show_pareto(console, client.pareto(study), final.name)
    return final


def _pareto(client: AutopeftClient, args: argparse.Namespace) -> int:
    pareto = client.pareto(args.id)
    if args.json:
        _print_json(pareto)
        return 0
    _show_pareto(_console(), pareto)
    return 0


def _cancel(client: AutopeftClient, args: argparse.Namespace) -> int:
    study = client.cancel(args.id)
    if args.json:
        _print_json(study)
        return 0
    counts = study.counts
    print(f"study {study.id} ({study.name}) is {study.state}: "
          f"{counts.get('completed', 0)} trials completed, "
          f"{counts.get('cancelled', 0)} cancelled")
    return 0


def _download(client: AutopeftClient, args: argparse.Namespace) -> int:
    from autopeft_service.domain.artifact import ArtifactError

    try:
        manifest = client.download_artifact(args.id, args.trial, args.output)
    except ArtifactError as error:
        fail(f"--output: {error}" if "not an empty folder" in str(error) else str(error),
             USAGE_ERROR if "not an empty folder" in str(error) else RUNTIME_ERROR)
    metrics = manifest.metrics
    print(f"study {args.id} trial {args.trial}: {manifest.peft_config.describe()}; "
          f"{metrics['metric']} held-out {metrics['objective']:.4f}, dev "
          f"{metrics['dev_score']:.4f}; {manifest.deployed_parameters:,} deployed parameters "
          f"-> {args.output}")
    print(f"load it: from workers.artifact import load_classifier; "
          f"load_classifier({manifest.backbone.name!r}, {str(args.output)!r})")
    return 0


def _studies(client: AutopeftClient, args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from autopeft_service.client import ended_trials

    studies = client.list_studies()
    if args.json:
        _print_json(studies)
        return 0
    if not studies:
        print("no studies yet (start one with: autopeft submit SPEC.yaml)")
        return 0
    # two spaces between columns, none at the edges: the name keeps what 80 columns leave
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
        table.add_row(str(study.id), _clipped(study.name), study.state,
                      _clipped(spec_field(study, "task")),
                      f"{ended_trials(study)}/{study.total_trials}",
                      _score(best.objective) if best else "-", str(study.pareto_size),
                      datetime.fromtimestamp(study.created_at).strftime("%m-%d %H:%M"))
    _console().print(table)
    return 0

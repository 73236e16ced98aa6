"""``autopeft launch slurm``: start N workers as a SLURM job array (through submitit).

    autopeft launch slurm --workers 8 --gpus-per-worker 1 --server http://login1:8000 \\
        --token "$AUTOPEFT_WORKER_TOKEN" --partition gpu --time 12:00:00 --cpus-per-worker 8 \\
        --mem 64G --name rte

Each array task runs one ``autopeft worker`` named ``NAME-<index>`` (``workers/launch.py``).
The server is checked (``GET /v1/health``) before anything is submitted. The command prints
the job id and one line per worker, then returns (``--wait``: waits for every worker to end
and says how each did). ``--executor local`` runs the same tasks as local processes
(submitit's LocalExecutor): one machine, tests. Bad input is one ``autopeft: error:`` line
and exit 2; an unreachable server, a missing SLURM or a refused submission exit 1.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
from pathlib import Path
from typing import NoReturn

from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, OneLineParser, fail

EXTRA = "--extra-worker-args"


class _LaunchParser(OneLineParser):
    """Takes the word after ``--extra-worker-args`` as its value even when it looks like an
    option (``--extra-worker-args --no-artifacts``), which argparse would refuse."""

    def parse_known_args(self, args=None, namespace=None):
        if args is not None:
            args = list(args)
            for i, arg in enumerate(args[:-1]):
                if arg == EXTRA:
                    args[i:i + 2] = [f"{EXTRA}={args[i + 1]}"]
                    break
        return super().parse_known_args(args, namespace)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    launch = subparsers.add_parser("launch", help="start workers on a cluster scheduler (SLURM)")
    kinds = launch.add_subparsers(dest="scheduler", required=True, parser_class=_LaunchParser)
    parser = kinds.add_parser(
        "slurm", help="a SLURM job array of workers, one per array task",
        description="Submit a SLURM job array of N autopeft workers (one per array task) "
        "through submitit. Each is named NAME-<index>; SIGTERM, preemption and the time "
        "limit's warning signal stop it gracefully (its trial is requeued at once).")
    parser.add_argument("--workers", type=int, required=True, help="how many workers (tasks)")
    parser.add_argument("--gpus-per-worker", type=int, default=1,
                        help="1 (default; the worker trains on cuda) or 0 (CPU workers)")
    parser.add_argument("--server", default=os.environ.get("AUTOPEFT_SERVER"),
                        help="server URL as the compute nodes see it (default: AUTOPEFT_SERVER)")
    parser.add_argument("--token", default=os.environ.get("AUTOPEFT_WORKER_TOKEN"),
                        help="worker token (default: AUTOPEFT_WORKER_TOKEN)")
    parser.add_argument("--name", help="job name; worker i is NAME-i (default: autopeft-<6 "
                        "random hex digits>, so that two launches never share worker names)")
    parser.add_argument("--partition", help="sbatch --partition (default: the cluster's)")
    parser.add_argument("--time", help="time limit per worker, HH:MM:SS or D-HH:MM:SS "
                        "(default: the partition's)")
    parser.add_argument("--cpus-per-worker", type=int, help="sbatch --cpus-per-task")
    parser.add_argument("--mem", help="memory per worker, sbatch --mem (e.g. 64G)")
    parser.add_argument(EXTRA, default="", metavar='"ARGS"',
                        help='more `autopeft worker` arguments, one quoted string '
                        '(e.g. "--trial-timeout 3600 --threads 4")')
    parser.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="another sbatch option (repeatable): account=proj1, qos=high, "
                        "constraint=a100, gres=gpu:a100:1")
    parser.add_argument("--setup", action="append", default=[], metavar="COMMAND",
                        help="shell line run before each worker (repeatable), e.g. "
                        "'module load cuda'")
    parser.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                        help="seconds before the time limit at which workers are told to stop "
                        "(sbatch --signal=USR2@N; default 120)")
    parser.add_argument("--folder", default="autopeft-jobs", metavar="DIR",
                        help="submitit's folder: job pickles and logs, on a file system the "
                        "nodes share (default ./autopeft-jobs; created private: the pickles "
                        "hold the token)")
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm",
                        help="slurm (default), or local: the same tasks as processes on this "
                        "machine")
    parser.add_argument("--no-check", action="store_true",
                        help="do not check the server's /v1/health before submitting (when "
                        "only the compute nodes can reach it)")
    parser.add_argument("--wait", action="store_true",
                        help="wait until every worker has ended; exit 1 if any failed")
    parser.set_defaults(handler=run)


def _usage(message: str) -> NoReturn:
    fail(f"launch slurm: {message}", USAGE_ERROR)


def _worker_args(text: str) -> tuple[str, ...]:
    """Split ``--extra-worker-args`` and check them with ``autopeft worker``'s own parser,
    so that a typo is said now, not in N job logs."""
    from workers.commands import worker

    try:
        args = tuple(shlex.split(text))
    except ValueError as error:
        _usage(f"--extra-worker-args: {error}")

    class Refuse(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            _usage(f"--extra-worker-args: {message}")

    holder = Refuse(prog="autopeft", add_help=False)
    worker.add_parser(holder.add_subparsers(parser_class=Refuse))
    holder.parse_args(["worker", "--server", "http://x", "--token", "x", *args])
    return args


def _check_server(url: str) -> None:
    import httpx

    target = f"{url.rstrip('/')}/v1/health"
    try:
        response = httpx.get(target, timeout=10.0)
    except httpx.HTTPError as error:
        problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        if response.status_code == 200:
            return
        problem = f"HTTP {response.status_code}"
    fail(f"launch slurm: cannot reach the server at {url} ({problem}); the workers could not "
         "either: start `autopeft serve` there or fix --server (--no-check skips this check)",
         RUNTIME_ERROR)


def run(args: argparse.Namespace) -> int:
    """Check the input and the server, submit, print the job and its workers."""
    from workers.commands import worker
    from workers.launch import LaunchError, LaunchPlan, parse_slurm_option, parse_time, stop, submit
    from workers.launch import wait as wait_for

    worker_args = _worker_args(args.extra_worker_args)
    try:
        plan = LaunchPlan(
            workers=args.workers, server=(args.server or "").rstrip("/"), token=args.token or "",
            name=args.name or f"autopeft-{secrets.token_hex(3)}",
            folder=Path(args.folder).expanduser().resolve(), executor=args.executor,
            gpus_per_worker=args.gpus_per_worker, partition=args.partition,
            time_minutes=parse_time(args.time) if args.time else None,
            cpus_per_worker=args.cpus_per_worker, mem=args.mem, worker_args=worker_args,
            setup=tuple(args.setup),
            slurm_options=dict(parse_slurm_option(o) for o in args.slurm_option),
            signal_delay_s=args.signal_delay)
        plan.check()
    except LaunchError as error:
        _usage(str(error))
    if not args.no_check:
        _check_server(plan.server)
    try:
        launched = submit(plan, worker.main)
    except LaunchError as error:
        fail(f"launch slurm: {error}", RUNTIME_ERROR)
    except Exception as error:  # noqa: BLE001 - sbatch's refusal, as one line
        text = " ".join(str(error).split())
        fail(f"launch slurm: the submission failed: {type(error).__name__}: {text[:400]}",
             RUNTIME_ERROR)
    ids = sorted({w.job_id.split("_")[0] for w in launched}, key=lambda i: (len(i), i))
    where = "SLURM job" if plan.executor == "slurm" else "local job"
    print(f"launched {len(launched)} worker{'s' if len(launched) != 1 else ''}: "
          f"{where}{'s' if len(ids) > 1 else ''} {' '.join(ids)} (folder {plan.folder})",
          flush=True)
    for launched_worker in launched:
        print(f"{launched_worker.name}\tjob {launched_worker.job_id}\t"
              f"log {launched_worker.stdout}", flush=True)
    if not args.wait:
        return 0
    try:
        outcomes = wait_for(launched, on_done=lambda o: print(
            f"{o.worker.name}\t{o.detail}", flush=True))
    except KeyboardInterrupt:
        stop(launched)  # running trials are preempted and requeued
        print("interrupted: the workers were told to stop", flush=True)
        return 130
    return 0 if all(o.ok for o in outcomes) else RUNTIME_ERROR

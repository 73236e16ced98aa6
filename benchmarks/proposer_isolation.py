"""Isolation and fairness of the proposer: what a study sees while another study's SAAS-GP
fit runs, with fits in the proposer's process pool or in the server process.

The server (``autopeft serve``, SQLite) runs as a child process with
``AUTOPEFT_PROPOSER_PROCESSES`` = 1 (fits in a child process) or 0 (fits in the proposer
thread of the server process, the old behaviour). Study A (``saasbo``, the AutoPEFT space on
MiniLM-L6 dimensions, 27 dimensions) gets its 10 Sobol trials completed at once through the
worker protocol, so its next proposal is a real SAAS-GP fit (NUTS + qLogNEHVI), which
takes tens of seconds here. Then study B (``sobol``, 5,000-trial budget, 8 in parallel)
is submitted and two loops run on B through HTTP while A's fit runs:

- leases: lease (``wait_seconds`` 0), report at once, repeat (a fleet of workers whose
  trials finish instantly, the worst case for the queue): latency of every lease and
  report, and how many B trials completed;
- the time from B's submission to its first ready trial (fairness: the target is 2 s).

Reproduce (about 2 minutes; both modes):
    .venv/bin/python benchmarks/proposer_isolation.py
Numbers: ``benchmarks/results/proposer_isolation.json``; README "Fleet scale".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopeft_service.domain.backbone import MINILM_DIMS  # noqa: E402
from autopeft_service.local import LocalServer  # noqa: E402
from tests.api.conftest import lease_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "proposer_isolation.json"


def _spec(name: str, optimizer: str, total: int, initial: int, parallel: int) -> dict[str, Any]:
    return {"name": name, "backbone": "minilm", "task": "synthetic",
            "backbone_dims": MINILM_DIMS.model_dump(),
            "search_space": {"kind": "autopeft", "num_layers": 6, "hidden_size": 384},
            "budget": {"total_trials": total, "initial_trials": initial,
                       "max_parallel": parallel, "max_attempts": 2},
            "optimizer": {"name": optimizer}}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_mode(processes: int, fit_wait: float) -> dict[str, Any]:
    """One server with ``proposer_processes`` = ``processes``; returns the measurements."""
    with tempfile.TemporaryDirectory() as folder:
        server = LocalServer(f"sqlite:///{folder}/a.db", log=Path(folder) / "server.log",
                             proposer_processes=str(processes), long_poll_seconds="1",
                             proposer_poll_seconds="0.2")
        server.start()
        client = {"Authorization": f"Bearer {server.client_token}"}
        worker = {"Authorization": f"Bearer {server.worker_token}"}
        try:
            with httpx.Client(base_url=server.base_url, timeout=120) as http:
                a = http.post("/v1/studies", headers=client,
                              json=_spec("A-saasbo", "saasbo", 40, 10, 10)).json()["id"]
                done = 0
                while done < 10:  # A's Sobol trials, completed at once
                    answer = http.post("/v1/leases", headers=worker,
                                       json={"worker": "a", "wait_seconds": 2})
                    if answer.status_code != 200:
                        continue
                    lease = answer.json()
                    http.post(f"/v1/trials/{lease['trial_id']}/result", headers=worker,
                              json={"token": lease["token"],
                                    "result": lease_result(lease, 0.6 + 0.03 * done)})
                    done += 1
                time.sleep(fit_wait)  # the fit has started
                submitted = time.monotonic()
                b = http.post("/v1/studies", headers=client,
                              json=_spec("B-sobol", "sobol", 5000, 5000, 8)).json()["id"]
                first_ready = None
                lease_ms: list[float] = []
                report_ms: list[float] = []
                empty = 0
                fit_done_at = None
                while True:
                    now = time.monotonic()
                    study_a = http.get(f"/v1/studies/{a}", headers=client).json()
                    if study_a["counts"]["ready"] > 0 and fit_done_at is None:
                        fit_done_at = now
                    if fit_done_at is not None or now - submitted > 300:
                        break
                    started = time.perf_counter()
                    answer = http.post("/v1/leases", headers=worker,
                                       json={"worker": "b", "wait_seconds": 0})
                    lease_ms.append(1000 * (time.perf_counter() - started))
                    if answer.status_code != 200:
                        empty += 1
                        continue
                    lease = answer.json()
                    if lease["study_id"] == b and first_ready is None:
                        first_ready = time.monotonic() - submitted
                    started = time.perf_counter()
                    http.post(f"/v1/trials/{lease['trial_id']}/result", headers=worker,
                              json={"token": lease["token"], "result": lease_result(lease)})
                    report_ms.append(1000 * (time.perf_counter() - started))
                counts_b = http.get(f"/v1/studies/{b}", headers=client).json()["counts"]
        finally:
            server.stop()
    return {"proposer_processes": processes,
            "b_first_trial_seconds": first_ready,
            "a_fit_seconds_after_b": None if fit_done_at is None else fit_done_at - submitted,
            "b_completed_during_a_fit": counts_b["completed"],
            "leases": len(lease_ms), "empty_leases": empty,
            "lease_ms_p50": statistics.median(lease_ms) if lease_ms else None,
            "lease_ms_p99": _percentile(lease_ms, 0.99),
            "report_ms_p50": statistics.median(report_ms) if report_ms else None,
            "report_ms_p99": _percentile(report_ms, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", type=int, nargs="+", default=[1, 0],
                        help="proposer_processes values to measure")
    parser.add_argument("--fit-wait", type=float, default=3.0,
                        help="seconds after A's last report before B is submitted")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for processes in args.modes:
        row = run_mode(processes, args.fit_wait)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| fits run in | B's first trial after | B trials completed during A's fit | "
          "lease p50 / p99 | report p50 / p99 |")
    print("|---|---|---|---|---|")
    for row in rows:
        where = "a child process (pool)" if row["proposer_processes"] else "the server process"
        first = row["b_first_trial_seconds"]
        print(f"| {where} | {'never' if first is None else f'{first:.2f} s'} | "
              f"{row['b_completed_during_a_fit']} | {row['lease_ms_p50']:.1f} / "
              f"{row['lease_ms_p99']:.1f} ms | "
              + (f"{row['report_ms_p50']:.1f} / {row['report_ms_p99']:.1f} ms |"
                 if row["report_ms_p50"] is not None else "- |"))
    args.output.write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "rows": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}, indent=1))


if __name__ == "__main__":
    main()

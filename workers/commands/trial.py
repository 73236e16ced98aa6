"""``autopeft trial``: run one real fine-tuning trial and print its result as JSON.

The JSON result alone goes to stdout; progress (phase, steps, examples scored, ETA) goes
to stderr: live bars on a terminal, a few plain lines otherwise, nothing with ``--quiet``
(``workers.progress``). Imports the worker engine lazily: the server process never loads
transformers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autopeft_service.cli.arguments import seed_value
from autopeft_service.cli.parser import USAGE_ERROR, fail
from autopeft_service.domain.errors import AutopeftError, ConfigError, DataError, TrialError
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings


def _flag(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) for boolean setting flags."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _default(name: str) -> str:
    """The ``TrainingSettings`` default of field ``name`` as help text shows it."""
    value = TrainingSettings.model_fields[name].default
    if value is None:
        return "no cap"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _help(name: str, text: str) -> str:
    """``text`` followed by the field's default (``%`` escaped for argparse)."""
    return f"{text} (default: {_default(name)})".replace("%", "%%")


#: CLI flags that override TrainingSettings fields (flag name == field name):
#: name -> (argparse type, metavar, help).
SETTING_FLAGS: dict[str, tuple[Any, str, str]] = {
    "epochs": (float, "E", _help("epochs", "passes over the training split")),
    "batch_size": (int, "B", _help("batch_size", "examples per training step")),
    "learning_rate": (float, "LR", _help("learning_rate", "AdamW learning rate")),
    "max_length": (int, "N", _help("max_length", "tokens per example (longer ones are "
                                   "truncated)")),
    "max_train_examples": (int, "N", _help(
        "max_train_examples", "train on at most N examples (a fixed random subsample of the "
        "train split minus the held-out part)")),
    "max_held_out_examples": (int, "N", _help(
        "max_held_out_examples", "score at most N held-out examples (the search objective's "
        "split, held out of train)")),
    "max_dev_examples": (int, "N", _help(
        "max_dev_examples", "score at most N dev examples (a fixed random subsample; "
        "reported, never selected on)")),
    "held_out_fraction": (float, "F", _help(
        "held_out_fraction", "share of the train split held out for the objective (then "
        "capped at max-held-out-examples)")),
    "pooling": (str, "{auto,mean,cls,last}", _help(
        "pooling", "sentence vector for the head: mean, cls (first token), last (last real "
        "token), auto (last on a decoder, mean on an encoder)")),
    "gradient_checkpointing": (_flag, "BOOL", _help(
        "gradient_checkpointing", "true: recompute activations in the backward pass (less "
        "memory, about a third more compute)")),
}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The task flags shared by ``trial`` and ``demo``."""
    parser.add_argument("--task", default="synthetic",
                        help="glue:<name> | synthetic | csv:DIR | jsonl:DIR | hf:NAME[/CONFIG] | "
                        "lm:DIR (prompt/response JSONL, decoders) | synthetic-lm")
    parser.add_argument("--data-dir", type=Path, help="folder of GLUE task folders")
    parser.add_argument("--text-columns", help="comma-separated text columns (csv/jsonl/hf)")
    parser.add_argument("--label-column", help="label column (csv/jsonl/hf)")
    parser.add_argument("--task-type", choices=["classification", "regression"])


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """load_task keywords from the task flags."""
    options: dict[str, Any] = {}
    if args.text_columns:
        options["text_columns"] = tuple(c.strip() for c in args.text_columns.split(","))
    if args.label_column:
        options["label_column"] = args.label_column
    if args.task_type:
        options["task_type"] = args.task_type
    return options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("trial", help="run one fine-tuning trial, print JSON")
    parser.add_argument("--model", required=True,
                        help="minilm | smollm2 (packaged models) | a model folder | a hub name")
    add_task_arguments(parser)
    parser.add_argument("--config", required=True, type=Path, help="PeftConfig JSON file")
    parser.add_argument("--settings", type=Path, help="TrainingSettings JSON file")
    parser.add_argument("--seed", type=seed_value, default=0, help="training seed (default 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="write the trained adapter and head as an artefact folder")
    for name, (kind, metavar, help_text) in SETTING_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind,
                            metavar=metavar, help=help_text)
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (stdout is the JSON result either way)")
    parser.set_defaults(handler=run)


def quiet_libraries() -> None:
    """Silence transformers' progress bars and warnings: the CLI prints its own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file; ConfigError naming the file on failure."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{what}: {path} is not valid JSON ({error})") from None


def settings_from_args(args: argparse.Namespace) -> TrainingSettings:
    """TrainingSettings from ``--settings`` and the per-field flags (flags win)."""
    values: dict[str, Any] = read_json_file(args.settings, "--settings") if args.settings else {}
    if not isinstance(values, dict):
        raise ConfigError("--settings: must be a JSON object")
    values.update({k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None})
    return TrainingSettings.from_dict(values)


def check_before_loading(args: argparse.Namespace, config: PeftConfig) -> None:
    """What can be checked in a moment, before the seconds of loading torch, the model and
    the data: the task string, the data folder, the device name, and the configuration
    against the backbone's dimensions where they are known without loading it (a packaged
    model, or a folder's config.json).

    Raises:
        ConfigError, DataError: the argument at fault, named.
    """
    from autopeft_service.domain.backbone import BackboneDims, packaged_dims
    from autopeft_service.domain.param_count import count_parameters
    from autopeft_service.domain.task_name import parse_task
    from workers.device import check_device_name

    try:
        parse_task(args.task)
    except DataError as error:
        raise ConfigError(f"--task: {error}") from None
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise ConfigError(f"--data-dir: {args.data_dir} is not a folder")
    check_device_name(args.device)
    dims = packaged_dims(args.model)
    folder = Path(args.model).expanduser()
    written_as_path = args.model.startswith(("/", "./", "../", "~")) or folder.is_absolute()
    if dims is None and written_as_path and not (folder / "config.json").is_file():
        raise ConfigError(f"--model: {args.model} is not a model folder (no config.json)")
    config_json = folder / "config.json"
    if dims is None and config_json.is_file():
        dims = BackboneDims.from_hf_config(read_json_file(config_json, "--model"))
    if dims is not None:
        try:
            count_parameters(config, dims)
        except ConfigError as error:
            raise ConfigError(f"--config: {error} (--model {args.model})") from None


def run(args: argparse.Namespace) -> int:
    """Run the trial with progress on stderr; print the result as JSON on stdout."""
    try:
        config = PeftConfig.from_dict(read_json_file(args.config, "--config"))
        settings = settings_from_args(args)
        check_before_loading(args, config)
    except AutopeftError as error:
        fail(str(error), USAGE_ERROR)
    from workers.device import check_device
    from workers.progress import stderr_observer
    from workers.trial import TrialRequest, TrialRunner  # lazy: loads torch/transformers

    try:
        device = check_device(args.device)
    except ConfigError as error:
        fail(str(error), USAGE_ERROR)

    quiet_libraries()
    request = TrialRequest(model=args.model, task=args.task, config=config, settings=settings,
                           seed=args.seed, data_dir=args.data_dir, task_options=task_options(args))
    try:
        with stderr_observer(quiet=args.quiet) as observer:
            result = TrialRunner(device=device).run(request, artifact_dir=args.save,
                                                         observer=observer)
    except TrialError as error:
        fail(f"trial failed: {error}")
    except AutopeftError as error:
        fail(str(error), USAGE_ERROR)
    text = result.model_dump_json(indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0

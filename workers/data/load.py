"""One entry point that loads any task from its task string.

Task strings:

========================  ===========================================================
``glue:<name>``           a GLUE task (``glue:rte``, ``glue:SST-2``); ``data_dir`` (or
                          ``$AUTOPEFT_GLUE_DIR``) is the folder holding the task folders
``synthetic``             the generated sentiment task (:mod:`workers.data.synthetic`)
``csv:<dir>``             ``<dir>/train.csv`` + ``<dir>/dev.csv``
``jsonl:<dir>``           ``<dir>/train.jsonl`` + ``<dir>/dev.jsonl``
``lm:<dir>``              causal LM: ``<dir>/train.jsonl`` + ``<dir>/dev.jsonl`` of
                          ``{"prompt": ..., "response": ...}`` lines
                          (:mod:`workers.data.lm`)
``synthetic-lm``          the generated causal-LM task (:mod:`workers.data.synthetic_lm`)
``hf:<name>``             a HuggingFace hub dataset (``hf:imdb``)
``hf:<name>/<config>``    with a configuration (``hf:glue/rte``); for a namespaced
                          dataset write ``hf:<owner>/<name>/<config>`` or
                          ``hf:<owner>/<name>:<config>`` (``hf:nyu-mll/glue:rte``), and
                          ``hf:<owner>/<name>:`` for none
========================  ===========================================================

A relative ``<dir>`` (csv, jsonl, lm) is resolved against ``data_dir`` when given, else the
working directory. ``text_columns``, ``label_column`` and ``task_type`` apply to csv, jsonl
and hf tasks only; GLUE, synthetic, lm and synthetic-lm tasks fix them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from autopeft_service.domain.errors import DataError
from workers.data.files import load_files
from workers.data.glue import load_glue
from workers.data.hub import load_hub
from workers.data.lm import load_lm
from workers.data.synthetic import load_synthetic
from workers.data.synthetic_lm import load_synthetic_lm
from workers.data.task import TaskData

__all__ = ["TASK_FORMS", "load_task", "parse_hub_name"]

TASK_FORMS = (
    "glue:<name>",
    "synthetic",
    "csv:<dir>",
    "jsonl:<dir>",
    "hf:<name>",
    "hf:<name>/<config>",
    "lm:<dir>",
    "synthetic-lm",
)


def parse_hub_name(spec: str) -> tuple[str, str | None]:
    """Split the part after ``hf:`` into dataset name and configuration.

    Args:
        spec: ``name``, ``name/config``, ``owner/name/config`` or ``owner/name:config``.

    Returns:
        ``(name, config)``; ``config`` is ``None`` when absent or empty.

    Raises:
        DataError: If the name is empty or has more than three ``/``-separated parts.
    """
    if ":" in spec:
        name, _, config = spec.partition(":")
    else:
        parts = spec.split("/")
        if len(parts) > 3:
            raise DataError(
                f"task 'hf:{spec}': expected hf:<name>, hf:<name>/<config> or "
                "hf:<owner>/<name>/<config>"
            )
        name, config = ("/".join(parts[:-1]), parts[-1]) if len(parts) > 1 else (spec, "")
    name, config = name.strip(), config.strip()
    if not name or "" in name.split("/"):
        raise DataError(f"task 'hf:{spec}': the dataset name is empty")
    return name, config or None


def _reject_column_options(task: str, **options: object) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise DataError(
            f"task {task!r}: {', '.join(given)} only apply to csv:, jsonl: and hf: tasks"
        )


def load_task(
    task: str,
    data_dir: str | Path | None = None,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    task_type: str | None = None,
) -> TaskData:
    """Load a task from its task string.

    Args:
        task: The task string (see the module docstring for the forms).
        data_dir: GLUE: the folder holding the GLUE task folders (default
            ``$AUTOPEFT_GLUE_DIR``). csv/jsonl/lm: base folder of a relative ``<dir>``.
        text_columns: csv/jsonl/hf: one or two text columns (default: guessed).
        label_column: csv/jsonl/hf: the label column (default ``label``).
        task_type: csv/jsonl/hf: ``classification`` (default) or ``regression``.

    Returns:
        The task.

    Raises:
        DataError: On an unknown form (the message lists the forms), a missing data
            directory, or any problem of the underlying loader.
    """
    text = task.strip()
    prefix, sep, rest = text.partition(":")
    prefix = prefix.lower()
    columns = {"text_columns": text_columns, "label_column": label_column,
               "task_type": task_type}
    if text.lower() == "synthetic":
        _reject_column_options(text, **columns)
        return load_synthetic()
    if text.lower() == "synthetic-lm":
        _reject_column_options(text, **columns)
        return load_synthetic_lm()
    if sep and prefix == "glue":
        _reject_column_options(text, **columns)
        glue_dir = data_dir if data_dir is not None else os.environ.get("AUTOPEFT_GLUE_DIR")
        if not glue_dir:
            raise DataError(
                f"task {text!r}: give data_dir (the folder holding the GLUE task folders) "
                "or set AUTOPEFT_GLUE_DIR"
            )
        return load_glue(rest.strip(), glue_dir)
    if sep and prefix in ("csv", "jsonl", "lm"):
        if not rest.strip():
            raise DataError(f"task {text!r}: give the directory, e.g. {prefix}:path/to/dir")
        folder = Path(rest.strip()).expanduser()
        if not folder.is_absolute() and data_dir is not None:
            folder = Path(data_dir).expanduser() / folder
        if prefix == "lm":
            _reject_column_options(text, **columns)
            return load_lm(folder)
        return load_files(folder, prefix, text_columns=text_columns,  # type: ignore[arg-type]
                          label_column=label_column, task_type=task_type)
    if sep and prefix == "hf":
        name, config = parse_hub_name(rest)
        return load_hub(name, config, text_columns=text_columns, label_column=label_column,
                        task_type=task_type)
    raise DataError(f"unknown task {task!r}; use one of: {', '.join(TASK_FORMS)}")

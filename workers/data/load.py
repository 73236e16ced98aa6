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
from autopeft_service.domain.task_name import TASK_FORMS, parse_hub_name, parse_task
from workers.data.files import load_files
from workers.data.glue import load_glue
from workers.data.hub import load_hub
from workers.data.lm import load_lm
from workers.data.synthetic import load_synthetic
from workers.data.synthetic_lm import load_synthetic_lm
from workers.data.task import TaskData

__all__ = ["TASK_FORMS", "load_task", "parse_hub_name"]

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
    parsed = parse_task(task)  # DataError: unknown form, GLUE name or bad hub name
    text = task.strip()
    columns = {"text_columns": text_columns, "label_column": label_column,
               "task_type": task_type}
    if parsed.kind == "synthetic":
        _reject_column_options(text, **columns)
        return load_synthetic()
    if parsed.kind == "synthetic-lm":
        _reject_column_options(text, **columns)
        return load_synthetic_lm()
    if parsed.kind == "glue":
        _reject_column_options(text, **columns)
        glue_dir = data_dir if data_dir is not None else os.environ.get("AUTOPEFT_GLUE_DIR")
        if not glue_dir:
            raise DataError(
                f"task {text!r}: give data_dir (the folder holding the GLUE task folders) "
                "or set AUTOPEFT_GLUE_DIR"
            )
        return load_glue(parsed.argument, glue_dir)
    if parsed.kind in ("csv", "jsonl", "lm"):
        folder = Path(parsed.argument).expanduser()
        if not folder.is_absolute() and data_dir is not None:
            folder = Path(data_dir).expanduser() / folder
        if parsed.kind == "lm":
            _reject_column_options(text, **columns)
            return load_lm(folder)
        return load_files(folder, parsed.kind, text_columns=text_columns,
                          label_column=label_column, task_type=task_type)
    name, config = parse_hub_name(parsed.argument)
    return load_hub(name, config, text_columns=text_columns, label_column=label_column,
                    task_type=task_type)


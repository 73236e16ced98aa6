"""Causal-LM tasks from files: a directory with ``train.jsonl`` + ``dev.jsonl`` of prompt/response pairs.

Task string ``lm:<dir>``. Each file holds one JSON object per line (UTF-8, a byte-order
mark is accepted, blank lines are skipped) with two string fields::

    {"prompt": "Translate to French: cheese", "response": " fromage"}

``prompt`` may be empty; ``response`` must contain a non-blank character. Other fields
are ignored. The texts are kept verbatim: nothing is inserted between prompt and response
when they are tokenised (see :func:`workers.data.tokenized.tokenize_examples`), so put any
separator (a space, a newline, a chat template) in the texts themselves.

The task has type :attr:`~workers.data.task.TaskType.CAUSAL_LM`, no label names, metrics
:data:`~workers.data.task.CAUSAL_LM_METRICS`, and examples
``Example((prompt, response), 0)``. Every problem raises a :class:`DataError` whose one-line
message names the file, the line number and the reason.
"""

from __future__ import annotations

from pathlib import Path

from autopeft_service.domain.errors import DataError
from workers.data.files import read_jsonl_split
from workers.data.task import CAUSAL_LM_METRICS, Example, TaskData, TaskType

__all__ = ["LM_FIELDS", "load_lm", "read_lm_split"]

LM_FIELDS: tuple[str, str] = ("prompt", "response")
"""The two fields every line of an ``lm:`` file has, in example order."""


def read_lm_split(path: str | Path) -> tuple[Example, ...]:
    """Read one prompt/response JSONL file.

    Args:
        path: The JSONL file.

    Returns:
        One ``Example((prompt, response), 0)`` per non-blank line, in file order.

    Raises:
        DataError: If the file is missing, not UTF-8 or has no examples, or a line is not
            a JSON object, lacks ``prompt`` or ``response``, has a non-string one, or has a
            blank response (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"data file {path} does not exist (an lm: task needs train.jsonl and dev.jsonl)"
        )
    split = read_jsonl_split(path)  # missing / not UTF-8 / empty file / bad JSON / not an object
    examples: list[Example] = []
    for line, record in split.rows:
        texts: list[str] = []
        for field in LM_FIELDS:
            if field not in record:
                raise DataError(f"{path}, line {line}: missing field {field!r}")
            value = record[field]
            if not isinstance(value, str):
                raise DataError(
                    f"{path}, line {line}: field {field!r} must be a string, got "
                    f"{type(value).__name__}"
                )
            texts.append(value)
        if not texts[1].strip():
            raise DataError(f"{path}, line {line}: field 'response' is empty")
        examples.append(Example((texts[0], texts[1]), 0))
    if not examples:  # pragma: no cover - read_jsonl_split refuses blank-only files
        raise DataError(f"{path}: no examples")
    return tuple(examples)


def load_lm(directory: str | Path) -> TaskData:
    """Load a causal-LM task from ``train.jsonl`` and ``dev.jsonl`` in a directory.

    Args:
        directory: The folder holding the two files.

    Returns:
        The task, named ``"lm:<absolute directory>"``, of type ``causal_lm`` with metrics
        ``("log_likelihood", "perplexity")``.

    Raises:
        DataError: If the directory or a file is missing, or a file is malformed (see
            :func:`read_lm_split`).
    """
    folder = Path(directory).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist or is not a directory")
    train = read_lm_split(folder / "train.jsonl")
    dev = read_lm_split(folder / "dev.jsonl")
    return TaskData(
        name=f"lm:{folder}",
        task_type=TaskType.CAUSAL_LM,
        label_names=(),
        metrics=CAUSAL_LM_METRICS,
        train=train,
        dev=dev,
    )

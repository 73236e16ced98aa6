"""Turn rows of named columns (CSV, JSONL, hub datasets) into a :class:`TaskData`.

One job: pick the text and label columns, parse the labels for the task type, build the
label set, and report every problem as a :class:`DataError` that names the source (file),
the line or row, the column and the reason. Reading the rows is the callers' job
(``files.py``, ``hub.py``).

Rules:

* ``text_columns``: one or two column names. When not given, the first present of
  ``(sentence1, sentence2)``, ``(premise, hypothesis)``, ``(question1, question2)``,
  ``(text_a, text_b)``, ``(text,)``, ``(sentence,)`` is used.
* ``label_column``: default ``label``.
* Classification labels are compared as strings (JSON ``1`` and CSV ``"1"`` are the same
  class). The label set is the distinct train labels, sorted numerically when every label
  is an integer and as strings otherwise; a dev label outside it is an error. A source may
  instead fix the label set (a hub ``ClassLabel``), with integer labels as indices.
* Regression labels are finite floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autopeft_service.domain.errors import DataError
from workers.data.task import Example, TaskData, TaskType

__all__ = [
    "DEFAULT_LABEL_COLUMN",
    "DEFAULT_METRICS",
    "DEFAULT_TEXT_COLUMNS",
    "RawSplit",
    "build_task",
    "parse_task_type",
]

DEFAULT_LABEL_COLUMN = "label"
DEFAULT_TEXT_COLUMNS: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("text_a", "text_b"),
    ("text",),
    ("sentence",),
)
DEFAULT_METRICS: dict[TaskType, tuple[str, ...]] = {
    TaskType.CLASSIFICATION: ("accuracy",),
    TaskType.REGRESSION: ("pearson", "spearman"),
}


@dataclass(frozen=True)
class RawSplit:
    """The rows of one split as read from a source, before interpretation.

    Attributes:
        source: What to call the source in messages (a file path, a hub split).
        unit: What a row position is called in messages: ``"line"`` or ``"row"``.
        columns: The columns the source has (a header, or the keys seen), in order.
        rows: ``(position, record)`` pairs; ``record`` maps column name to value.
    """

    source: str
    unit: str
    columns: tuple[str, ...]
    rows: Iterable[tuple[int, Mapping[str, Any]]]


def parse_task_type(task_type: str | TaskType | None) -> TaskType:
    """Parse a task type name; ``None`` means classification.

    Args:
        task_type: ``"classification"``, ``"regression"`` (any case), a :class:`TaskType`
            or ``None``.

    Returns:
        The task type.

    Raises:
        DataError: If the name is not ``classification`` or ``regression`` (``causal_lm``
            included: a causal-LM task has no label column; load it with ``lm:<dir>``).
    """
    if task_type is None:
        return TaskType.CLASSIFICATION
    kind: TaskType | None
    try:
        kind = TaskType(str(task_type).strip().lower())
    except ValueError:
        kind = None
    if kind is None or kind not in DEFAULT_METRICS:
        raise DataError(
            f"task_type: unknown value {task_type!r}; use one of "
            f"{', '.join(t.value for t in DEFAULT_METRICS)} (causal-LM tasks are "
            "prompt/response files: lm:<dir>)"
        )
    return kind


def _choose_text_columns(
    split: RawSplit, text_columns: Sequence[str] | None, label_column: str
) -> tuple[str, ...]:
    if text_columns is None:
        for candidate in DEFAULT_TEXT_COLUMNS:
            if all(name in split.columns for name in candidate):
                return candidate
        raise DataError(
            f"{split.source}: cannot guess the text columns; give text_columns "
            f"(available columns: {', '.join(split.columns)})"
        )
    if isinstance(text_columns, str):
        text_columns = (text_columns,)
    chosen = tuple(text_columns)
    if not 1 <= len(chosen) <= 2:
        raise DataError(f"text_columns: give 1 or 2 column names, got {list(chosen)}")
    if len(set(chosen)) != len(chosen):
        raise DataError(f"text_columns: a column is named twice in {list(chosen)}")
    if label_column in chosen:
        raise DataError(f"text_columns: {label_column!r} is also the label column")
    return chosen


def _check_columns(split: RawSplit, wanted: Sequence[str], option: str) -> None:
    for name in wanted:
        if name not in split.columns:
            raise DataError(
                f"{split.source}: unknown column {name!r} ({option}); "
                f"available columns: {', '.join(split.columns) or '(none)'}"
            )


def _label_string(value: Any, where: str, column: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: column {column!r}: label {value!r} is not finite")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: column {column!r}: empty label")
        return value
    raise DataError(
        f"{where}: column {column!r}: label {value!r} must be a string or a number"
    )


def _regression_value(value: Any, where: str, column: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: column {column!r}: value {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: column {column!r}: value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: column {column!r}: value {value!r} is not finite")
    return number


def _read_split(
    split: RawSplit, text_columns: tuple[str, ...], label_column: str
) -> list[tuple[str, tuple[str, ...], Any]]:
    """Return ``(where, texts, raw label)`` per row, checking fields are present and text."""
    out = []
    for position, record in split.rows:
        where = f"{split.source}, {split.unit} {position}"
        texts = []
        for name in (*text_columns, label_column):
            if name not in record:
                raise DataError(
                    f"{where}: missing field {name!r}; the {split.unit} has "
                    f"{', '.join(map(str, record)) or 'no fields'}"
                )
        for name in text_columns:
            value = record[name]
            if not isinstance(value, str):
                raise DataError(
                    f"{where}: column {name!r}: text must be a string, got {value!r}"
                )
            texts.append(value)
        out.append((where, tuple(texts), record[label_column]))
    if not out:
        raise DataError(f"{split.source}: no examples")
    return out


def _sort_labels(labels: set[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted(labels, key=int))
    except ValueError:
        return tuple(sorted(labels))


def build_task(
    name: str,
    train: RawSplit,
    dev: RawSplit,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    task_type: str | TaskType | None = None,
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """Build a task from the raw rows of its train and dev splits.

    Args:
        name: Canonical task name (``"csv:/abs/dir"``, ``"hf:glue/rte"``).
        train: Rows of the train split.
        dev: Rows of the dev split.
        text_columns: One or two text columns (``None``: guess, see the module docstring).
        label_column: Label column (``None``: ``"label"``).
        task_type: ``"classification"`` (default) or ``"regression"``.
        label_names: A fixed label set (classification only); integer labels are then
            indices into it and string labels must be among its names.

    Returns:
        The task, with metrics ``("accuracy",)`` for classification and
        ``("pearson", "spearman")`` for regression.

    Raises:
        DataError: On an unknown column, a row without a field, a non-string text, an
            unparsable label, a dev label unseen in train, or an empty split.
    """
    kind = parse_task_type(task_type)
    label_column = label_column or DEFAULT_LABEL_COLUMN
    texts = _choose_text_columns(train, text_columns, label_column)
    for split in (train, dev):
        _check_columns(split, texts, "text_columns")
        _check_columns(split, (label_column,), "label_column")
    train_rows = _read_split(train, texts, label_column)
    dev_rows = _read_split(dev, texts, label_column)

    if kind is TaskType.REGRESSION:
        if label_names:
            raise DataError(f"task {name!r}: a regression task cannot have label names")

        def convert(rows: list[tuple[str, tuple[str, ...], Any]]) -> tuple[Example, ...]:
            return tuple(
                Example(t, _regression_value(raw, where, label_column)) for where, t, raw in rows
            )

        return TaskData(name, kind, (), DEFAULT_METRICS[kind], convert(train_rows),
                        convert(dev_rows))

    if label_names is not None:
        names = tuple(str(n) for n in label_names)
    else:
        names = _sort_labels(
            {_label_string(raw, where, label_column) for where, _, raw in train_rows}
        )
        if len(names) < 2:
            raise DataError(
                f"{train.source}: column {label_column!r}: a classification task needs at "
                f"least 2 distinct labels in train, found {list(names)}"
            )
    index = {label: i for i, label in enumerate(names)}
    set_name = "label set" if label_names is not None else "label set of train"

    def encode(raw: Any, where: str) -> int:
        if label_names is not None and isinstance(raw, int) and not isinstance(raw, bool):
            if 0 <= raw < len(names):
                return raw
            raise DataError(
                f"{where}: column {label_column!r}: label index {raw} is outside "
                f"0..{len(names) - 1}"
            )
        label = _label_string(raw, where, label_column)
        if label not in index:
            raise DataError(
                f"{where}: column {label_column!r}: label {label!r} is not in the "
                f"{set_name} {list(names)}"
            )
        return index[label]

    def convert_cls(rows: list[tuple[str, tuple[str, ...], Any]]) -> tuple[Example, ...]:
        return tuple(Example(t, encode(raw, where)) for where, t, raw in rows)

    return TaskData(name, kind, names, DEFAULT_METRICS[kind], convert_cls(train_rows),
                    convert_cls(dev_rows))

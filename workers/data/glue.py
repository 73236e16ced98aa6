"""The nine GLUE tasks, read from their distributed TSV files.

Layout (as produced by the GLUE download script): ``<data_dir>/<TASKDIR>/train.tsv`` and
``dev.tsv`` (MNLI: ``dev_matched.tsv``, or ``dev_mismatched.tsv`` for ``mnli-mm``).
Files are read with the ``csv`` module, tab-delimited, ``quoting=csv.QUOTE_NONE`` (some
sentences contain quote characters that would otherwise merge rows) and ``utf-8-sig``
(MRPC's header starts with a byte-order mark). CoLA has no header; the others are read by
header name, so extra columns (MNLI's parses, STS-B's genre) are ignored.

Each task has a fixed label set in a fixed order, so label indices are stable across
machines and runs: ``0``/``1`` tasks keep their digit, NLI tasks follow the HuggingFace
``glue`` order (``entailment`` first). Reference: Wang et al., "GLUE: A Multi-Task
Benchmark and Analysis Platform for Natural Language Understanding", ICLR 2019.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from autopeft_service.domain.errors import DataError
from autopeft_service.domain.task_name import canonical_glue_name
from workers.data.task import Example, TaskData, TaskType

__all__ = ["GLUE_TASKS", "GlueTaskSpec", "glue_task_names", "load_glue", "resolve_glue_task"]

# A field limit well above any GLUE sentence; csv's default (128 KiB) is fine but explicit.
_FIELD_LIMIT = 1 << 20


@dataclass(frozen=True)
class GlueTaskSpec:
    """How one GLUE task is stored and scored.

    Attributes:
        name: Canonical lower-case name (``"rte"``, ``"sst2"``, ``"mnli-mm"``, ...).
        directory: Task folder under the GLUE data directory (``"RTE"``).
        dev_file: File name of the dev split in that folder.
        columns: Column names of a headerless file (CoLA), or ``None`` when the file has a
            header row that names the columns.
        text_columns: One or two columns holding the text segments.
        label_column: Column holding the label (class string or STS-B score).
        task_type: Classification or regression.
        label_names: Label strings in index order (``()`` for regression).
        metrics: Metrics to report; the first is the primary one.
    """

    name: str
    directory: str
    dev_file: str
    columns: tuple[str, ...] | None
    text_columns: tuple[str, ...]
    label_column: str
    task_type: TaskType
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_CLS = TaskType.CLASSIFICATION


GLUE_TASKS: dict[str, GlueTaskSpec] = {
    spec.name: spec
    for spec in (
        GlueTaskSpec("cola", "CoLA", "dev.tsv", ("source", "label", "notation", "sentence"),
                     ("sentence",), "label", _CLS, _BINARY, ("matthews",)),
        GlueTaskSpec("sst2", "SST-2", "dev.tsv", None, ("sentence",), "label", _CLS, _BINARY,
                     ("accuracy",)),
        GlueTaskSpec("mrpc", "MRPC", "dev.tsv", None, ("#1 String", "#2 String"), "Quality",
                     _CLS, _BINARY, ("f1", "accuracy")),
        GlueTaskSpec("stsb", "STS-B", "dev.tsv", None, ("sentence1", "sentence2"), "score",
                     TaskType.REGRESSION, (), ("pearson", "spearman")),
        GlueTaskSpec("qqp", "QQP", "dev.tsv", None, ("question1", "question2"), "is_duplicate",
                     _CLS, _BINARY, ("f1", "accuracy")),
        GlueTaskSpec("mnli", "MNLI", "dev_matched.tsv", None, ("sentence1", "sentence2"),
                     "gold_label", _CLS, ("entailment", "neutral", "contradiction"),
                     ("accuracy",)),
        GlueTaskSpec("mnli-mm", "MNLI", "dev_mismatched.tsv", None, ("sentence1", "sentence2"),
                     "gold_label", _CLS, ("entailment", "neutral", "contradiction"),
                     ("accuracy",)),
        GlueTaskSpec("qnli", "QNLI", "dev.tsv", None, ("question", "sentence"), "label", _CLS,
                     _NLI2, ("accuracy",)),
        GlueTaskSpec("rte", "RTE", "dev.tsv", None, ("sentence1", "sentence2"), "label", _CLS,
                     _NLI2, ("accuracy",)),
        GlueTaskSpec("wnli", "WNLI", "dev.tsv", None, ("sentence1", "sentence2"), "label", _CLS,
                     _BINARY, ("accuracy",)),
    )
}
"""Canonical GLUE task name -> its storage and scoring spec."""

STSB_RANGE = (0.0, 5.0)


def glue_task_names() -> tuple[str, ...]:
    """Canonical names of the known GLUE tasks (plus ``mnli-mm``), in GLUE order."""
    return tuple(GLUE_TASKS)


def resolve_glue_task(task: str) -> GlueTaskSpec:
    """Find a GLUE task by name, case-insensitively, accepting common spellings.

    ``"SST-2"``, ``"sst2"``, ``"sst_2"`` all name SST-2; ``"sts-b"``/``"stsb"`` STS-B;
    ``"mnli"``/``"mnli-m"`` MNLI with the matched dev set; ``"mnli-mm"`` the mismatched one.

    Args:
        task: A task name.

    Returns:
        The task's spec.

    Raises:
        DataError: If the name is not a GLUE task; the message lists the known ones.
    """
    return GLUE_TASKS[canonical_glue_name(task)]


def _task_dir(spec: GlueTaskSpec, data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise DataError(f"GLUE data directory {data_dir} does not exist or is not a directory")
    task_dir = data_dir / spec.directory
    if task_dir.is_dir():
        return task_dir
    # Also accept the task folder itself (``.../glue/RTE``) as data_dir.
    if data_dir.name.lower() == spec.directory.lower() and (data_dir / "train.tsv").is_file():
        return data_dir
    raise DataError(
        f"GLUE task folder {task_dir} does not exist (data_dir must hold the {spec.directory}/ "
        "folder of the GLUE download)"
    )


def _parse_label(spec: GlueTaskSpec, raw: str, where: str) -> int | float:
    if spec.task_type is TaskType.REGRESSION:
        try:
            value = float(raw)
        except ValueError:
            raise DataError(
                f"{where}: column {spec.label_column!r}: score {raw!r} is not a number"
            ) from None
        low, high = STSB_RANGE
        if not math.isfinite(value) or not low <= value <= high:
            raise DataError(
                f"{where}: column {spec.label_column!r}: score {raw!r} is outside [{low:g}, {high:g}]"
            )
        return value
    try:
        return spec.label_names.index(raw)
    except ValueError:
        raise DataError(
            f"{where}: column {spec.label_column!r}: label {raw!r} is not one of "
            f"{list(spec.label_names)}"
        ) from None


def read_glue_split(spec: GlueTaskSpec, path: Path) -> tuple[Example, ...]:
    """Read one split file of a GLUE task.

    Args:
        spec: The task's spec.
        path: The TSV file.

    Returns:
        The file's examples, in file order.

    Raises:
        DataError: If the file is missing, empty, not UTF-8, lacks a column, has a row with
            the wrong number of fields, a label outside the label set, or a bad score. The
            message names the file and line.
    """
    if not path.is_file():
        raise DataError(f"GLUE file {path} does not exist")
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    examples: list[Example] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            if spec.columns is None:
                header = next(reader, None)
                if header is None:
                    raise DataError(f"{path}: empty file (expected a header row)")
                header = [name.strip() for name in header]
            else:
                header = list(spec.columns)
            wanted = (*spec.text_columns, spec.label_column)
            missing = [name for name in wanted if name not in header]
            if missing:
                raise DataError(
                    f"{path}, line 1 (header): missing column(s) {missing}; "
                    f"the header has {header}"
                )
            text_idx = [header.index(name) for name in spec.text_columns]
            label_idx = header.index(spec.label_column)
            n_fields = len(header)
            for row in reader:
                if len(row) != n_fields:
                    if not row or row == [""]:
                        continue  # a blank line (e.g. at the end of the file)
                    raise DataError(
                        f"{path}, line {reader.line_num}: expected {n_fields} tab-separated "
                        f"fields ({', '.join(header)}), found {len(row)}"
                    )
                label = _parse_label(spec, row[label_idx], f"{path}, line {reader.line_num}")
                examples.append(Example(tuple(row[i] for i in text_idx), label))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}, after line {reader.line_num}: not valid UTF-8 ({exc.reason})"
            ) from None
    if not examples:
        raise DataError(f"{path}: no examples (the file has no data rows)")
    return tuple(examples)


def load_glue(task: str, data_dir: str | Path) -> TaskData:
    """Load a GLUE task's train and dev splits from the distributed TSV files.

    Args:
        task: Task name (case-insensitive; ``"rte"``, ``"SST-2"``, ``"sts-b"``, ...).
        data_dir: Folder holding the GLUE task folders (``CoLA/``, ``SST-2/``, ...), or the
            task folder itself.

    Returns:
        The task, named ``"glue:<canonical name>"``.

    Raises:
        DataError: If the task is unknown, a folder or file is missing, or a file is
            malformed (see :func:`read_glue_split`).
    """
    spec = resolve_glue_task(task)
    task_dir = _task_dir(spec, Path(data_dir).expanduser())
    train = read_glue_split(spec, task_dir / "train.tsv")
    dev = read_glue_split(spec, task_dir / spec.dev_file)
    return TaskData(
        name=f"glue:{spec.name}",
        task_type=spec.task_type,
        label_names=spec.label_names,
        metrics=spec.metrics,
        train=train,
        dev=dev,
    )

"""User tasks from files: a directory with ``train.csv`` + ``dev.csv`` or ``train.jsonl`` + ``dev.jsonl``.

CSV: a header row naming the columns, comma-separated, standard CSV quoting, UTF-8 (a
byte-order mark is accepted). JSONL: one JSON object per line; blank lines are skipped.
Columns and labels are interpreted by :func:`workers.data.tabular.build_task` (one or two
text columns, a label column, classification or regression).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from autopeft_service.domain.errors import DataError
from workers.data.tabular import RawSplit, build_task
from workers.data.task import TaskData, TaskType

__all__ = ["FILE_FORMATS", "load_files", "read_csv_split", "read_jsonl_split"]

FileFormat = Literal["csv", "jsonl"]
FILE_FORMATS: tuple[FileFormat, ...] = ("csv", "jsonl")


def read_csv_split(path: Path) -> RawSplit:
    """Read a CSV file with a header row.

    Args:
        path: The CSV file.

    Returns:
        Its rows, positioned by line number (the header is line 1).

    Raises:
        DataError: If the file is missing, empty, not UTF-8, has a duplicate or empty
            column name, or a row whose number of fields differs from the header's.
    """
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start} ({exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path}: empty file (expected a header row)")
        header = [h.strip() for h in header]
        if "" in header:
            raise DataError(
                f"{path}, line 1 (header): column {header.index('') + 1} has no name"
            )
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates:
            raise DataError(f"{path}, line 1 (header): duplicate column(s) {duplicates}")
        rows: list[tuple[int, Mapping[str, Any]]] = []
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != len(header):
                raise DataError(
                    f"{path}, line {reader.line_num}: expected {len(header)} fields "
                    f"({', '.join(header)}), found {len(row)}"
                )
            rows.append((reader.line_num, dict(zip(header, row, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    return RawSplit(str(path), "line", tuple(header), rows)


def _jsonl_records(path: Path, lines: list[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: malformed JSON at column {exc.colno} ({exc.msg})"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}, line {number}: expected a JSON object, got {type(record).__name__}"
            )
        yield number, record


def read_jsonl_split(path: Path) -> RawSplit:
    """Read a JSON-lines file (one object per line).

    Args:
        path: The JSONL file.

    Returns:
        Its records, positioned by line number; the columns are the keys in order of
        first appearance.

    Raises:
        DataError: If the file is missing, empty, not UTF-8, or a line is not a JSON
            object (the message gives the line and column).
    """
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start} ({exc.reason})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    rows = list(_jsonl_records(path, text.split("\n")))
    columns: dict[str, None] = {}
    for _, record in rows:
        columns.update(dict.fromkeys(record))
    return RawSplit(str(path), "line", tuple(columns), rows)


def _detect_format(directory: Path) -> FileFormat:
    present = [fmt for fmt in FILE_FORMATS if (directory / f"train.{fmt}").is_file()]
    if len(present) == 1:
        return present[0]
    if not present:
        raise DataError(
            f"{directory}: no train.csv or train.jsonl (a file task needs train + dev files)"
        )
    raise DataError(f"{directory}: both train.csv and train.jsonl exist; say which (csv: or jsonl:)")


def load_files(
    directory: str | Path,
    fmt: FileFormat | None = None,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    task_type: str | TaskType | None = None,
) -> TaskData:
    """Load a task from ``train.<fmt>`` and ``dev.<fmt>`` in a directory.

    Args:
        directory: The folder holding the two files.
        fmt: ``"csv"`` or ``"jsonl"``; ``None`` detects it from the train file present.
        text_columns: One or two text columns (``None``: guessed, see
            :mod:`workers.data.tabular`).
        label_column: The label column (``None``: ``"label"``).
        task_type: ``"classification"`` (default) or ``"regression"``.

    Returns:
        The task, named ``"<fmt>:<absolute directory>"``.

    Raises:
        DataError: If the directory or a file is missing or malformed, a column is unknown
            (the message lists the available ones), or a label is invalid.
    """
    folder = Path(directory).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist or is not a directory")
    if fmt is None:
        fmt = _detect_format(folder)
    if fmt not in FILE_FORMATS:
        raise DataError(f"file format {fmt!r} is not one of {', '.join(FILE_FORMATS)}")
    reader = read_csv_split if fmt == "csv" else read_jsonl_split
    train = reader(folder / f"train.{fmt}")
    dev = reader(folder / f"dev.{fmt}")
    return build_task(
        f"{fmt}:{folder}",
        train,
        dev,
        text_columns=text_columns,
        label_column=label_column,
        task_type=task_type,
    )

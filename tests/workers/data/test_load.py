"""load_task: every task-string form, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft_service.domain.errors import DataError
from workers.data import load_task
from workers.data.load import parse_hub_name
from workers.data.task import TaskType


def test_glue_with_data_dir_and_from_environment(glue_dir: Path, monkeypatch) -> None:
    data = load_task("glue:RTE", glue_dir)
    assert data.name == "glue:rte" and len(data.train) == 2490
    monkeypatch.setenv("AUTOPEFT_GLUE_DIR", str(glue_dir))
    again = load_task("glue:rte")
    assert again.fingerprint == data.fingerprint
    monkeypatch.delenv("AUTOPEFT_GLUE_DIR")
    with pytest.raises(DataError, match="give data_dir .* or set AUTOPEFT_GLUE_DIR"):
        load_task("glue:rte")
    with pytest.raises(DataError, match="unknown GLUE task 'foo'"):
        load_task("glue:foo", glue_dir)


def test_synthetic() -> None:
    data = load_task("synthetic")
    assert data.name == "synthetic" and len(data.train) == 2000
    assert load_task(" Synthetic ").fingerprint == data.fingerprint


def test_csv_relative_to_data_dir_and_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.csv").write_text("q,a,y\nhi,there,1\nbye,now,0\n")
    (folder / "dev.csv").write_text("q,a,y\nhey,you,1\n")
    data = load_task("csv:mine", tmp_path, text_columns=["q", "a"], label_column="y")
    assert data.name == f"csv:{folder.resolve()}"
    assert data.train[0].texts == ("hi", "there") and data.label_names == ("0", "1")
    (folder / "train.jsonl").write_text('{"text": "a", "score": 1.5}\n{"text": "b", "score": 2}\n')
    (folder / "dev.jsonl").write_text('{"text": "c", "score": 0}\n')
    reg = load_task(f"jsonl:{folder}", label_column="score", task_type="regression")
    assert reg.task_type is TaskType.REGRESSION and reg.name == f"jsonl:{folder.resolve()}"
    with pytest.raises(DataError, match="give the directory"):
        load_task("csv:")


def test_unknown_form_lists_the_forms() -> None:
    with pytest.raises(DataError, match=r"unknown task 'tsv:/x'; use one of: glue:<name>, "
                                        r"synthetic, csv:<dir>, jsonl:<dir>, hf:<name>"):
        load_task("tsv:/x")
    with pytest.raises(DataError, match="unknown task 'rte'"):
        load_task("rte")


def test_column_options_are_refused_where_fixed(glue_dir: Path) -> None:
    with pytest.raises(DataError, match="label_column only apply to csv:, jsonl: and hf:"):
        load_task("glue:rte", glue_dir, label_column="label")
    with pytest.raises(DataError, match="task_type only apply"):
        load_task("synthetic", task_type="regression")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("imdb", ("imdb", None)),
        ("glue/rte", ("glue", "rte")),
        ("nyu-mll/glue/rte", ("nyu-mll/glue", "rte")),
        ("nyu-mll/glue:rte", ("nyu-mll/glue", "rte")),
        ("stanfordnlp/imdb:", ("stanfordnlp/imdb", None)),
    ],
)
def test_hub_names(spec: str, expected) -> None:
    assert parse_hub_name(spec) == expected


@pytest.mark.parametrize("spec", ["", "/rte", "a/b/c/d", ":rte"])
def test_bad_hub_names(spec: str) -> None:
    with pytest.raises(DataError, match=f"task 'hf:{spec}'"):
        parse_hub_name(spec)

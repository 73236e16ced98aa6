"""CSV and JSONL user tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopeft_service.domain.errors import DataError
from workers.data.files import load_files
from workers.data.task import TaskType


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_csv_classification_with_two_text_columns(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv",
           'premise,hypothesis,label\n"A man, tall",He is tall,yes\nIt rains,It is dry,no\n'
           '"Say ""hi""",A greeting,yes\n')
    _write(tmp_path, "dev.csv", "premise,hypothesis,label\nx,y,no\n")
    data = load_files(tmp_path, "csv", text_columns=["premise", "hypothesis"])
    assert data.name == f"csv:{tmp_path.resolve()}"
    assert data.task_type is TaskType.CLASSIFICATION
    assert data.label_names == ("no", "yes")  # sorted distinct train labels
    assert data.metrics == ("accuracy",)
    assert [ex.label for ex in data.train] == [1, 0, 1]
    assert data.train[0].texts == ("A man, tall", "He is tall")
    assert data.train[2].texts == ('Say "hi"', "A greeting")
    assert data.dev[0].label == 0


def test_integer_labels_sort_numerically_and_defaults_guess_columns(tmp_path: Path) -> None:
    rows = "".join(f"sentence {i},{i % 11}\n" for i in range(22))
    _write(tmp_path, "train.csv", "sentence,label\n" + rows)
    _write(tmp_path, "dev.csv", "sentence,label\nfoo,10\n")
    data = load_files(tmp_path)  # format detected, text column guessed, label column default
    assert data.label_names == tuple(str(i) for i in range(11))
    assert data.dev[0].label == 10
    assert data.train[3].texts == ("sentence 3",)


def test_jsonl_regression(tmp_path: Path) -> None:
    _write(tmp_path, "train.jsonl", _jsonl([
        {"a": "one", "b": "two", "score": 0.5, "extra": 1},
        {"a": "three", "b": "four", "score": "4"},
    ]))
    _write(tmp_path, "dev.jsonl", _jsonl([{"a": "x", "b": "y", "score": 2}]) + "\n\n")
    data = load_files(tmp_path, "jsonl", text_columns=("a", "b"), label_column="score",
                      task_type="regression")
    assert data.task_type is TaskType.REGRESSION
    assert data.label_names == () and data.num_labels == 1
    assert data.metrics == ("pearson", "spearman")
    assert [ex.label for ex in data.train] == [0.5, 4.0]
    assert data.dev[0].texts == ("x", "y") and data.dev[0].label == 2.0


def test_jsonl_numbers_and_strings_are_the_same_class(tmp_path: Path) -> None:
    _write(tmp_path, "train.jsonl", _jsonl([{"text": "a", "label": 1}, {"text": "b", "label": 0}]))
    _write(tmp_path, "dev.jsonl", _jsonl([{"text": "c", "label": "1"}, {"text": "d", "label": 0.0}]))
    data = load_files(tmp_path, "jsonl")
    assert data.label_names == ("0", "1")
    assert [ex.label for ex in data.dev] == [1, 0]


def test_unknown_column_lists_available_columns(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "text,label,source\na,1,x\nb,0,y\n")
    _write(tmp_path, "dev.csv", "text,label,source\na,1,x\n")
    with pytest.raises(DataError, match=r"train\.csv: unknown column 'sentence' \(text_columns\); "
                                        r"available columns: text, label, source"):
        load_files(tmp_path, "csv", text_columns=["sentence"])
    with pytest.raises(DataError, match=r"unknown column 'gold' \(label_column\); available "
                                        r"columns: text, label, source"):
        load_files(tmp_path, "csv", label_column="gold")


def test_no_guessable_text_column(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "review,label\na,1\n")
    _write(tmp_path, "dev.csv", "review,label\na,1\n")
    with pytest.raises(DataError, match=r"cannot guess the text columns; give text_columns "
                                        r"\(available columns: review, label\)"):
        load_files(tmp_path, "csv")


def test_malformed_json_line_names_line_and_column(tmp_path: Path) -> None:
    _write(tmp_path, "train.jsonl",
           '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": "c", "label": }\n')
    _write(tmp_path, "dev.jsonl", '{"text": "a", "label": 1}\n')
    with pytest.raises(DataError, match=r"train\.jsonl, line 3: malformed JSON at column 24 \(Expecting value\)"):
        load_files(tmp_path, "jsonl")


def test_jsonl_line_that_is_not_an_object_or_lacks_a_field(tmp_path: Path) -> None:
    _write(tmp_path, "dev.jsonl", '{"text": "a", "label": 1}\n')
    _write(tmp_path, "train.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: expected a JSON object, got list"):
        load_files(tmp_path, "jsonl")
    _write(tmp_path, "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: missing field 'label'"):
        load_files(tmp_path, "jsonl")
    _write(tmp_path, "train.jsonl", '{"text": "a", "label": 1}\n{"text": null, "label": 0}\n')
    with pytest.raises(DataError, match=r"line 2: column 'text': text must be a string"):
        load_files(tmp_path, "jsonl")


def test_empty_files(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "")
    _write(tmp_path, "dev.csv", "text,label\na,1\n")
    with pytest.raises(DataError, match=r"train\.csv: empty file"):
        load_files(tmp_path, "csv")
    _write(tmp_path / "j", "train.jsonl", "\n  \n")
    _write(tmp_path / "j", "dev.jsonl", '{"text": "a", "label": 1}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: empty file"):
        load_files(tmp_path / "j", "jsonl")
    _write(tmp_path, "train.csv", "text,label\n")
    with pytest.raises(DataError, match=r"train\.csv: no examples"):
        load_files(tmp_path, "csv")


def test_csv_row_with_wrong_number_of_fields(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "text,label\na,1\nb,0\nc\n")
    _write(tmp_path, "dev.csv", "text,label\na,1\n")
    with pytest.raises(DataError, match=r"train\.csv, line 4: expected 2 fields \(text, label\), "
                                        r"found 1"):
        load_files(tmp_path, "csv")


def test_dev_label_outside_train_labels(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\n")
    _write(tmp_path, "dev.csv", "text,label\na,pos\nb,neutral\n")
    with pytest.raises(DataError, match=r"dev\.csv, line 3: column 'label': label 'neutral' is not "
                                        r"in the label set of train \['neg', 'pos'\]"):
        load_files(tmp_path, "csv")


def test_single_class_and_bad_regression_value(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "text,label\na,pos\nb,pos\n")
    _write(tmp_path, "dev.csv", "text,label\na,pos\n")
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        load_files(tmp_path, "csv")
    _write(tmp_path, "train.csv", "text,label\na,0.5\nb,n/a\n")
    with pytest.raises(DataError, match=r"train\.csv, line 3: column 'label': value 'n/a' is not "
                                        r"a number"):
        load_files(tmp_path, "csv", task_type="regression")
    with pytest.raises(DataError, match="task_type: unknown value 'ranking'"):
        load_files(tmp_path, "csv", task_type="ranking")


def test_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_files(tmp_path / "nope", "csv")
    with pytest.raises(DataError, match="no train.csv or train.jsonl"):
        load_files(tmp_path)
    _write(tmp_path, "train.csv", "text,label\na,1\nb,0\n")
    with pytest.raises(DataError, match=r"data file .*dev\.csv does not exist"):
        load_files(tmp_path)
    _write(tmp_path, "train.jsonl", "")
    with pytest.raises(DataError, match="both train.csv and train.jsonl exist"):
        load_files(tmp_path)


def test_text_columns_validation(tmp_path: Path) -> None:
    _write(tmp_path, "train.csv", "a,b,c,label\n1,2,3,x\n4,5,6,y\n")
    _write(tmp_path, "dev.csv", "a,b,c,label\n1,2,3,x\n")
    with pytest.raises(DataError, match="give 1 or 2 column names"):
        load_files(tmp_path, "csv", text_columns=["a", "b", "c"])
    with pytest.raises(DataError, match="'label' is also the label column"):
        load_files(tmp_path, "csv", text_columns=["label"])
    assert load_files(tmp_path, "csv", text_columns="c").train[1].texts == ("6",)

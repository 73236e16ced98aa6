"""Causal-LM tasks: the TaskData invariants, the lm:<dir> prompt/response loader and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopeft_service.domain.errors import DataError
from workers.data import load_task
from workers.data.files import load_files
from workers.data.lm import load_lm, read_lm_split
from workers.data.task import CAUSAL_LM_METRICS, Example, TaskData, TaskType

TRAIN = [
    {"prompt": "copy a b", "response": "a b"},
    {"prompt": "", "response": "hello", "source": "ignored"},
    {"prompt": "Q: 2+2?\nA:", "response": " 4"},
]
DEV = [{"prompt": "copy c", "response": "c"}]


def _write(path: Path, lines: list[object] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(lines, str):
        path.write_text(lines, encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def lm_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "lmdata"
    _write(folder / "train.jsonl", TRAIN)
    _write(folder / "dev.jsonl", DEV)
    return folder


def _lm_task(**changes) -> TaskData:
    fields = {"name": "lm:/x", "task_type": TaskType.CAUSAL_LM, "label_names": (),
              "metrics": CAUSAL_LM_METRICS, "train": (Example(("p", "r"), 0),),
              "dev": (Example(("", "r"), 0),)}
    fields.update(changes)
    return TaskData(**fields)


def test_causal_lm_task_type_invariants() -> None:
    task = _lm_task(task_type="causal_lm")
    assert task.task_type is TaskType.CAUSAL_LM and TaskType.CAUSAL_LM.value == "causal_lm"
    assert task.num_labels == 0 and task.label_names == ()
    assert CAUSAL_LM_METRICS == ("log_likelihood", "perplexity")
    with pytest.raises(DataError, match="a causal_lm task has no label names"):
        _lm_task(label_names=("a", "b"))
    with pytest.raises(DataError, match=r"train example 0: a causal_lm example has 2 texts "
                                        r"\(prompt, response\), got 1"):
        _lm_task(train=(Example(("only",), 0),))
    with pytest.raises(DataError, match="dev example 1: the response is empty"):
        _lm_task(dev=(Example(("p", "r"), 0), Example(("p", "  "), 0)))
    with pytest.raises(DataError, match="has label 0, got 1"):
        _lm_task(train=(Example(("p", "r"), 1),))
    with pytest.raises(DataError, match="prompt and response must be strings"):
        _lm_task(train=(Example(("p", 3), 0),))  # type: ignore[arg-type]


def test_load_lm_reads_prompt_response_pairs(lm_dir: Path) -> None:
    task = load_lm(lm_dir)
    assert task.name == f"lm:{lm_dir.resolve()}"
    assert task.task_type is TaskType.CAUSAL_LM
    assert task.label_names == () and task.metrics == ("log_likelihood", "perplexity")
    assert task.train == (
        Example(("copy a b", "a b"), 0),
        Example(("", "hello"), 0),
        Example(("Q: 2+2?\nA:", " 4"), 0),  # texts verbatim, extra fields ignored
    )
    assert task.dev == (Example(("copy c", "c"), 0),)
    assert load_lm(lm_dir).fingerprint == task.fingerprint


def test_load_task_lm_forms(lm_dir: Path, tmp_path: Path, monkeypatch) -> None:
    task = load_task(f"lm:{lm_dir}")
    assert task.name == f"lm:{lm_dir.resolve()}" and len(task.train) == 3
    assert load_task("lm:lmdata", tmp_path).fingerprint == task.fingerprint  # relative to data_dir
    monkeypatch.chdir(tmp_path)
    assert load_task(" LM:lmdata ").fingerprint == task.fingerprint  # relative to the cwd
    with pytest.raises(DataError, match="give the directory, e.g. lm:path/to/dir"):
        load_task("lm:")
    with pytest.raises(DataError, match="text_columns only apply to csv:, jsonl: and hf:"):
        load_task(f"lm:{lm_dir}", text_columns=["prompt"])
    with pytest.raises(DataError, match="task_type only apply"):
        load_task(f"lm:{lm_dir}", task_type="causal_lm")
    with pytest.raises(DataError, match=r"unknown task 'llm:/x'; use one of: .*lm:<dir>, "
                                        r"synthetic-lm"):
        load_task("llm:/x")


def test_causal_lm_is_not_a_column_task_type(lm_dir: Path) -> None:
    with pytest.raises(DataError, match=r"task_type: unknown value 'causal_lm'; use one of "
                                        r"classification, regression \(causal-LM tasks are "
                                        r"prompt/response files: lm:<dir>\)"):
        load_files(lm_dir, "jsonl", text_columns=["prompt"], label_column="response",
                   task_type="causal_lm")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "b"\n',
         r"train\.jsonl, line 2: malformed JSON at column \d+"),
        ('["a", "b"]\n', r"train\.jsonl, line 1: expected a JSON object, got list"),
        ('{"prompt": "a", "response": "b"}\n\n{"response": "b"}\n',
         r"train\.jsonl, line 3: missing field 'prompt'"),
        ('{"prompt": "a"}\n', r"train\.jsonl, line 1: missing field 'response'"),
        ('{"prompt": 3, "response": "b"}\n',
         r"train\.jsonl, line 1: field 'prompt' must be a string, got int"),
        ('{"prompt": "a", "response": null}\n',
         r"train\.jsonl, line 1: field 'response' must be a string, got NoneType"),
        ('{"prompt": "a", "response": " \\n "}\n', r"train\.jsonl, line 1: field 'response' is empty"),
        ('{"prompt": "a", "response": ""}\n', r"train\.jsonl, line 1: field 'response' is empty"),
        ("\n  \n", r"train\.jsonl: empty file"),
        ("", r"train\.jsonl: empty file"),
    ],
)
def test_bad_lines_name_file_line_and_reason(lm_dir: Path, content: str, message: str) -> None:
    _write(lm_dir / "train.jsonl", content)
    with pytest.raises(DataError, match=message) as info:
        load_task(f"lm:{lm_dir}")
    text = str(info.value)
    assert "\n" not in text.strip() and str(lm_dir.resolve() / "train.jsonl") in text


def test_missing_directory_or_file(lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data directory .*nowhere does not exist"):
        load_lm(tmp_path / "nowhere")
    (lm_dir / "dev.jsonl").unlink()
    with pytest.raises(DataError, match=r"data file .*dev\.jsonl does not exist \(an lm: task "
                                        r"needs train\.jsonl and dev\.jsonl\)"):
        load_task(f"lm:{lm_dir}")
    with pytest.raises(DataError, match=r"data file .*other\.jsonl does not exist"):
        read_lm_split(lm_dir / "other.jsonl")


def test_bad_dev_file_is_named(lm_dir: Path) -> None:
    _write(lm_dir / "dev.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "a", "response": 1}])
    with pytest.raises(DataError, match=r"dev\.jsonl, line 2: field 'response' must be a string"):
        load_lm(lm_dir)

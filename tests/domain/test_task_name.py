"""The task-string grammar the server checks at submit and the workers load with."""

from __future__ import annotations

import pytest

from autopeft_service.domain.errors import DataError
from autopeft_service.domain.task_name import (
    GLUE_TASK_NAMES,
    TaskName,
    canonical_glue_name,
    parse_task,
)
from workers.data.glue import GLUE_TASKS


@pytest.mark.parametrize("text, expected", [
    ("synthetic", TaskName("synthetic")), (" Synthetic-LM ", TaskName("synthetic-lm")),
    ("glue:SST-2", TaskName("glue", "sst2")), ("GLUE: sts-b", TaskName("glue", "stsb")),
    ("glue:mnli_mismatched", TaskName("glue", "mnli-mm")),
    ("csv:data/x", TaskName("csv", "data/x")), ("jsonl: /abs ", TaskName("jsonl", "/abs")),
    ("lm:examples/lm_arithmetic", TaskName("lm", "examples/lm_arithmetic")),
    ("hf:imdb", TaskName("hf", "imdb")), ("hf:nyu-mll/glue:rte", TaskName("hf", "nyu-mll/glue:rte")),
])
def test_well_formed_task_strings_parse(text: str, expected: TaskName) -> None:
    assert parse_task(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("synthetc", "unknown task"), ("", "unknown task"), ("glue", "unknown task"),
    ("glue:sst3", "unknown GLUE task 'sst3'"), ("glue:", "unknown GLUE task"),
    ("csv:", "give the directory"), ("lm:  ", "give the directory"),
    ("hf:", "the dataset name is empty"), ("hf:a/b/c/d", "expected hf:"),
    ("hf:/x", "the dataset name is empty"), ("synthetic:x", "unknown task"),
])
def test_malformed_task_strings_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(DataError, match=reason):
        parse_task(text)


def test_the_server_knows_exactly_the_glue_tasks_the_workers_read() -> None:
    assert set(GLUE_TASK_NAMES) == set(GLUE_TASKS)
    for name in GLUE_TASKS:
        assert canonical_glue_name(name.upper()) == name

"""benchmarks/sst2_replicates.py: its journal resumes (a torn line from a killed process
is skipped) and it refuses a seed the table already used (the runs themselves are the
benchmark; ``--check`` proves on the real table that a run here reproduces a service
trial's score exactly)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BENCHMARKS, load_benchmark

replicates = load_benchmark("sst2_replicates")


def test_the_journal_keeps_complete_lines_and_appends(tmp_path: Path) -> None:
    path = replicates.journal_path(tmp_path / "table.csv", 1)
    assert path.name == "table.seed1.jsonl"
    assert replicates.read_journal(path) == {}
    replicates.append(path, {"part": 0, "trial": 3, "seed": 1, "score": 0.8})
    with path.open("a") as handle:
        handle.write('{"part": 0, "trial": 4, "se')  # a process killed mid-write
    replicates.append(path, {"part": 1, "trial": 0, "seed": 1, "score": 0.7})
    runs = replicates.read_journal(path)
    assert set(runs) == {(0, 3), (1, 0)} and runs[(1, 0)]["score"] == 0.7


def test_a_seed_the_table_used_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "real_table_sst2_lora.csv"
    shutil.copy(BENCHMARKS / "results" / "real_table_sst2_lora.csv", table)
    with pytest.raises(SystemExit) as stopped:
        replicates.main(["--table", str(table), "--seed", "0"])
    assert stopped.value.code == 2
    assert "--seed 0 is a seed the table already used" in capsys.readouterr().err
    assert json.loads((BENCHMARKS / "results" / "real_table_sst2_lora.fidelity.json")
                      .read_text())["task"] == "glue:sst2"

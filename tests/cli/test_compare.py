"""``autopeft compare PLAN`` on the tiny random BERT: the report, resuming from the
journal, and one-line errors for bad plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autopeft_service.cli.main import main
from tests.cli.test_studies import assert_one_line_error, autopeft

TRAINING = {"epochs": 0.5, "batch_size": 32, "learning_rate": 0.003, "max_length": 24,
            "max_train_examples": 128, "max_dev_examples": 64}


def _write_plan(path: Path, model: Path, **changes: object) -> Path:
    plan = {"model": str(model), "task": "synthetic", "seeds": 2, "training": TRAINING,
            "candidates": [{"name": "lora-4", "config": {"num_layers": 2,
                                                         "lora": {"ranks": [4, 4]}}}],
            "baselines": ["head-only", "lora-r8-qv"], "resamples": 500, **changes}
    path.write_text(yaml.safe_dump(plan))
    return path


def test_compare_reports_arms_and_verdicts_and_resumes(
        tiny_bert_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    plan = _write_plan(tmp_path / "plan.yaml", tiny_bert_path)
    journal, output = tmp_path / "runs.jsonl", tmp_path / "report.json"
    assert main(["compare", str(plan), "--journal", str(journal), "--output", str(output)]) == 0
    printed = capsys.readouterr()
    assert "deployed %" in printed.out and "trainable %" in printed.out
    assert "verdict" in printed.out and "[6/6]" in printed.err
    report = json.loads(output.read_text())
    assert report["complete"] and report["seeds"] == [0, 1]
    assert [c["baseline"] for c in report["comparisons"]] == ["head-only", "lora-r8-qv"]
    assert len(journal.read_text().splitlines()) == 6
    # the same command again trains nothing: every run comes from the journal
    assert main(["compare", str(plan), "--journal", str(journal), "--json"]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("from the journal") == 6
    assert json.loads(printed.out)["comparisons"] == report["comparisons"]


def test_report_only_reports_a_partial_journal(tiny_bert_path: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "runs.jsonl"
    one_seed = _write_plan(tmp_path / "one.yaml", tiny_bert_path, seeds=[0])
    assert main(["compare", str(one_seed), "--journal", str(journal), "--json"]) == 0
    capsys.readouterr()
    two_seeds = _write_plan(tmp_path / "two.yaml", tiny_bert_path)
    assert main(["compare", str(two_seeds), "--journal", str(journal), "--report-only",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["complete"]
    assert all(r["seeds"] == [0] for r in report["arms"])
    assert all(c["verdict"] == "not distinguishable" for c in report["comparisons"])


@pytest.mark.parametrize(("plan_text", "expected"), [
    ("model: x\ntask: synthetic\ncandidates: []\nbaselines: [mam]\n", "candidates"),
    ("model: x\ntask: synthetic\ncandidates: [mam]\nbaselines: [nope]\n", "unknown baseline 'nope'"),
    ("[1, 2", "is not YAML/JSON"),
    ("- a list\n", "must hold a mapping"),
])
def test_bad_plans_are_one_line_and_exit_2(tmp_path: Path, plan_text: str,
                                           expected: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text)
    assert_one_line_error(autopeft("compare", str(plan)), 2, expected)


def test_missing_plan_and_report_only_without_journal(tmp_path: Path) -> None:
    assert_one_line_error(autopeft("compare", str(tmp_path / "none.yaml")), 2, "cannot read")
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: x\ntask: synthetic\ncandidates: [mam]\nbaselines: [full-ft]\n")
    assert_one_line_error(autopeft("compare", str(plan), "--report-only"), 2, "--journal")

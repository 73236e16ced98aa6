"""Paired runs on the tiny random BERT and the synthetic task: every arm of a seed trains
on the same subset, seeds differ, the journal resumes, the report pairs the scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopeft_service.domain.comparison_plan import ComparisonPlan
from workers.compare import (
    ComparisonTarget,
    Journal,
    comparison_report,
    plan_arms,
    run_arms,
    train_fingerprint,
)
from workers.data import TokenizedCache
from workers.trial import TrialRunner

TRAINING = {"epochs": 0.5, "batch_size": 32, "learning_rate": 0.003, "max_length": 24,
            "max_train_examples": 160, "max_dev_examples": 64, "warmup_ratio": 0.0}


def _plan(model: Path, seeds: int = 2) -> ComparisonPlan:
    return ComparisonPlan.from_dict({
        "model": str(model), "task": "synthetic", "seeds": seeds, "training": TRAINING,
        "candidates": [{"name": "lora-4", "config": {"num_layers": 2, "lora": {"ranks": [4, 4]}}}],
        "baselines": ["head-only", {"name": "adapter-8", "config": {
            "num_layers": 2, "serial_adapters": [{"sizes": [8, 8]}]}}],
        "resamples": 1000})


@pytest.fixture
def runner(tmp_path: Path) -> TrialRunner:
    return TrialRunner(cache=TokenizedCache(tmp_path / "cache"))


def test_arms_of_a_seed_share_their_subset_and_seeds_differ(
        runner: TrialRunner, tiny_bert_path: Path, tmp_path: Path) -> None:
    plan = _plan(tiny_bert_path)
    arms = plan_arms(plan, 2)
    journal = Journal(tmp_path / "runs.jsonl")
    target = ComparisonTarget(plan.model, plan.task)
    records = run_arms(runner, target, arms, plan.seed_list(), journal)
    for seed in (0, 1):
        prints = {records[a.name][seed]["train_fingerprint"] for a in arms}
        assert len(prints) == 1, f"seed {seed}: arms trained on different subsets"
        assert all(records[a.name][seed]["data_seed"] == seed for a in arms)
        assert all(records[a.name][seed]["train_examples"] == 160 for a in arms)
    assert records["lora-4"][0]["train_fingerprint"] != records["lora-4"][1]["train_fingerprint"]
    # the fingerprint is of what the runner trains on: recompute it from the data
    from workers.data import load_synthetic, subsample

    drawn = subsample(load_synthetic().train, 160, 1)
    assert records["head-only"][1]["train_fingerprint"] == train_fingerprint(drawn)
    # the journal holds one line per run
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == len(arms) * 2 and len({json.loads(x)["key"] for x in lines}) == 6


def test_a_rerun_resumes_from_the_journal(runner: TrialRunner, tiny_bert_path: Path,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(tiny_bert_path)
    arms = plan_arms(plan, 2)
    target = ComparisonTarget(plan.model, plan.task)
    path = tmp_path / "runs.jsonl"
    stop_after = iter([False, False, True])  # two runs, then "interrupted"
    partial = run_arms(runner, target, arms, [0, 1], Journal(path),
                       should_stop=lambda: next(stop_after))
    assert sum(len(v) for v in partial.values()) == 2
    with path.open("a") as handle:
        handle.write('{"key": "cut mid-wri')  # a line cut by a kill is ignored
    trained = []
    original = runner.run
    monkeypatch.setattr(runner, "run", lambda request, **kw: trained.append(request) or
                        original(request, **kw))
    records = run_arms(runner, target, arms, [0, 1], Journal(path))
    assert len(trained) == 4  # the two journalled runs were not trained again
    assert records["lora-4"][0]["dev_score"] == partial["lora-4"][0]["dev_score"]
    report = comparison_report(arms, [0, 1], records, alpha=0.05, resamples=1000, context={})
    assert report["complete"]
    assert {(c["candidate"], c["baseline"]) for c in report["comparisons"]} == {
        ("lora-4", "head-only"), ("lora-4", "adapter-8")}
    for comparison in report["comparisons"]:
        diffs = [records["lora-4"][s]["dev_score"] - records[comparison["baseline"]][s]["dev_score"]
                 for s in (0, 1)]
        assert comparison["differences"] == pytest.approx(diffs)
        assert comparison["verdict"] in {"better", "not distinguishable", "worse"}
    rows = {r["name"]: r for r in report["arms"]}
    assert rows["head-only"]["deployed_share"] == 0.0
    assert rows["lora-4"]["trainable_share"] == rows["lora-4"]["deployed_share"] > 0


def test_a_record_after_a_line_cut_by_a_kill_is_kept(tmp_path: Path) -> None:
    """A process killed mid-write leaves a line without its newline: the next record
    starts a line of its own, so a reload keeps it (and drops only the cut one)."""
    path = tmp_path / "runs.jsonl"
    Journal(path).add({"key": "a", "score": 1})
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "b", "sco')
    Journal(path).add({"key": "c", "score": 3})
    assert set(Journal(path).records) == {"a", "c"}

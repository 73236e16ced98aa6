"""benchmarks/evidence_v2.py: the headline rule, the plans, the finding calls and a report
from a journal (the runs themselves are the benchmark, hours long)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.comparison_plan import ComparisonPlan, seed_settings
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from tests.benchmarks.conftest import load_benchmark

ev = load_benchmark("evidence_v2")


def test_headline_rule_picks_each_familys_best_held_out_and_two_small_ones() -> None:
    chosen = ev.select_headline()
    assert len(chosen) == 6 and len({c["name"] for c in chosen}) == 6
    assert [c["family"] for c in chosen[:4]] == list(ev.FAMILIES)
    for pick in chosen[:4]:  # nothing in its family has a higher held-out score
        rows = ev._completed(pick["family"])
        assert pick["held_out_score"] == max(float(r["score"]) for r in rows)
    for pick in chosen[4:]:
        assert pick["deployed_percent"] <= ev.SMALL_SHARE


def test_plans_validate_and_findings_compare_equal_shares() -> None:
    plans, selection = ev.build_plans()
    assert "rule" in selection and "headline" in plans
    assert ComparisonPlan.from_dict(plans["headline"]).baselines[-1].label == "full-ft"
    assert [b for b in plans["headline"]["baselines"]] == list(BASELINES)
    for name, plan in plans.items():
        parsed = ComparisonPlan.from_dict(plan)
        assert parsed.seed_list() == list(range(ev.SEEDS))
        assert parsed.shared_settings().max_train_examples >= 4000
        assert parsed.shared_settings().epochs >= 2 and parsed.shared_settings().max_length >= 64
        if name.startswith(("parallel-vs-serial", "ffn-vs-attention", "scale-4-vs-1")):
            arms = [*parsed.candidates, *parsed.baselines]
            shares = {count_parameters(PeftConfig.from_dict(a.config), MINILM_DIMS).deployed
                      for a in arms}
            assert len(shares) == 1, f"{name}: the arms' shares differ"


@pytest.mark.parametrize(("verdicts", "call"), [
    (["better"], "reproduced"), (["better", "better"], "reproduced"),
    (["better", "not distinguishable"], "not distinguishable"),
    (["worse"], "refuted"), (["better", "worse"], "refuted"), ([], "not distinguishable")])
def test_finding_calls(verdicts: list[str], call: str) -> None:
    assert ev._call(verdicts) == call


def test_report_from_a_journal(tmp_path: Path) -> None:
    """Plans written, a journal with two seeds of one finding's arms: the report pairs
    them, the finding gets its call, the rest is marked incomplete."""
    ev.write_plans(tmp_path, replan=False)
    plan = ComparisonPlan.from_dict(yaml.safe_load(
        (tmp_path / "plans" / "scale-4-vs-1-8.yaml").read_text()))
    from workers.compare import plan_arms, run_key

    rng = random.Random(0)
    with (tmp_path / "runs.jsonl").open("w") as handle:
        for seed in (0, 1, 2):
            for arm in plan_arms(plan, 6):
                settings = seed_settings(arm.settings, seed)
                key = run_key(plan.model, plan.task, plan.data_dir, plan.task_options,
                              arm.config, settings, seed)
                score = 0.85 if arm.name.endswith("s4") else 0.80
                handle.write(json.dumps({
                    "key": key, "arm": arm.name, "seed": seed, "data_seed": seed,
                    "train_fingerprint": f"fp{seed}", "metric": "accuracy",
                    "dev_score": score + rng.uniform(-0.002, 0.002), "train_seconds": 100.0,
                    "eval_seconds": 5.0, "deployed_percent": 0.17, "trainable_percent": 0.17,
                    "device": "cpu", "threads": 2, "host": "test"}) + "\n")
    summary = ev.report(tmp_path, quiet=True)
    finding = summary["findings"]["scale-4-vs-1-8"]
    assert finding["seeds"] == [0, 1, 2] and finding["complete"] is False  # 5 planned
    assert finding["verdicts"] == ["better"] and finding["call"] == "pending"
    assert finding["provisional_call"] == "reproduced"
    assert summary["cost"]["runs"] == 6 and summary["cost"]["seconds_per_run_mean"] == 105.0
    assert not summary["complete"]
    assert "scale-4-vs-1-8" in (tmp_path / "summary.md").read_text()


def test_the_results_lock_is_exclusive_and_outside_the_results(tmp_path: Path) -> None:
    """One shard at a time holds it (flock on another open of the file fails meanwhile)."""
    import fcntl

    out = tmp_path / "evidence_v2"
    path = ev.lock_path(out)
    assert not path.is_relative_to(out) and path == ev.lock_path(tmp_path / "." / "evidence_v2")
    with ev.results_lock(out), path.open("a") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with path.open("a") as other:  # released after the block
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_commit_commits_the_results_folder_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout

    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
                       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}.items():
        monkeypatch.setenv(key, value)
    git("init", "-q")
    monkeypatch.setattr(ev, "ROOT", tmp_path)
    out = tmp_path / "results"
    out.mkdir()
    (out / "runs.jsonl").write_text("{}\n")
    (tmp_path / "other.txt").write_text("not the benchmark's")
    with ev.results_lock(out):
        ev._commit(out, "evidence_v2: one run")
        ev._commit(out, "evidence_v2: nothing new")  # nothing to commit: silent
    assert git("log", "--format=%s").splitlines() == ["evidence_v2: one run"]
    assert git("show", "--name-only", "--format=").split() == ["results/runs.jsonl"]
    assert "could not commit" not in capsys.readouterr().err

"""The real-evaluation table (benchmarks/real_table.py): its rows, its CSV written as trials
end, and resuming, both from the workdir's database and from the CSV alone."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopeft_service.client import with_backbone_dims
from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.study import StudySpec, parse_search_space
from autopeft_service.domain.views import StudyOut, TrialSummary
from tests.benchmarks.conftest import load_benchmark

rt = load_benchmark("real_table")

DIMS = BackboneDims(num_layers=2, hidden_size=8, num_heads=2, ffn_size=16, total_parameters=5000)


def _space():
    return parse_search_space({"num_layers": 2, "hidden_size": 8})


def _trial(number: int, state: str, point: dict[str, int], **extra: object) -> TrialSummary:
    return TrialSummary.model_validate({
        "id": 100 + number, "number": number, "state": state, "generator": "sobol",
        "attempt": 1, "params": point, "config": _space().decode(point).model_dump(mode="json"),
        "config_description": "desc", "objective": None, "dev_score": None,
        "param_share": None, "worker": None, "result": None, "finished_at": None,
        "failure_reason": None, "progress": None, "created_at": 0.0, "leased_at": None,
        **extra})


def _study(name: str) -> StudyOut:
    return StudyOut(id=1, name=name, state="completed", created_at=0.0, updated_at=0.0,
                    counts={}, total_trials=1, best=None, hypervolume=0.0, pareto_size=0,
                    spec={})


POINT = {"layer_0": 1, "layer_1": 0, "serial_adapter_size": 4, "parallel_adapter_size": 0,
         "prefix_length": 2}


def test_rows_carry_point_config_scores_both_shares_seconds_and_seed() -> None:
    space = _space()
    assert space.is_valid(POINT)
    config = space.decode(POINT)
    counts = count_parameters(config, DIMS)
    assert counts.deployed != counts.trainable  # the prefix MLP is folded away when deployed
    result = {"trainable_parameters": counts.trainable,
              "trainable_percent": counts.trainable_percent,
              "deployed_parameters": counts.deployed, "train_seconds": 2.0,
              "eval_seconds": 0.5, "load_seconds": 1.0, "seed": 3}
    trials = [
        _trial(2, "failed", POINT, failure_reason="loss became nan"),
        _trial(1, "completed", POINT, objective=0.75, dev_score=0.7,
               param_share=counts.trainable_percent, worker="w0", result=result,
               finished_at=1.7e9),
        _trial(3, "leased", POINT),
        _trial(4, "ready", POINT),
    ]
    rows = rt.table_rows(trials, space, backbone_total=123, part=1, seed=9)
    assert [r["trial"] for r in rows] == [1, 2]  # ended trials only, by number
    done, failed = rows
    assert list(done) == rt.columns(space)
    assert {k: done[k] for k in POINT} == POINT
    assert json.loads(done["config"]) == config.model_dump(mode="json")
    assert done["score"] == 0.75 and done["dev_score"] == 0.7 and done["part"] == 1
    assert done["trainable_percent"] == pytest.approx(counts.trainable_percent)
    # deployed share over the same backbone total as the trainable share (not the fallback)
    assert done["deployed_percent"] == pytest.approx(counts.deployed_percent)
    assert done["seconds"] == 2.5 and done["seed"] == 3 and done["worker"] == "w0"
    assert failed["state"] == "failed" and failed["score"] == "" and failed["seed"] == 9
    assert failed["deployed_percent"] == "" and failed["failure_reason"] == "loss became nan"


def test_rungs_add_learning_curve_columns_and_record_them_in_the_spec() -> None:
    space = _space()
    rungs = (0.25, 0.5)
    result = {"rungs": [{"rung": 0, "step": 4, "score": 0.6, "examples": 10},
                        {"rung": 1, "step": 8, "score": 0.7, "examples": 10}],
              "rung_eval_seconds": 0.4}
    [row] = rt.table_rows([_trial(0, "completed", POINT, objective=0.8, result=result)],
                          space, backbone_total=123, rungs=rungs)
    assert list(row) == rt.columns(space, rungs) and list(row)[-5:] == [
        "rung_0_step", "rung_0_score", "rung_1_step", "rung_1_score", "rung_eval_seconds"]
    assert (row["rung_0_step"], row["rung_0_score"], row["rung_1_score"]) == (4, 0.6, 0.7)
    assert row["rung_eval_seconds"] == 0.4
    [failed] = rt.table_rows([_trial(1, "failed", POINT)], space, 123, rungs=rungs)
    assert failed["rung_0_score"] == "" and failed["rung_eval_seconds"] == ""
    assert rt.columns(space) == rt.columns(space, ())  # no rungs: the columns as before
    args = argparse.Namespace(name="t", task="synthetic", data_dir=".", workers=1,
                              trials=4, seed=0, training_seed=0, epochs=1, batch_size=16,
                              learning_rate=1e-3, max_length=32, max_train_examples=10,
                              max_held_out=10, max_dev_examples=None, rungs=rungs,
                              rung_examples=7)
    spec = rt.study_spec(args, "model", {"num_layers": 2, "hidden_size": 8})
    assert spec["early_stopping"] == {"rule": "none", "rungs": [0.25, 0.5], "rung_examples": 7}
    assert rt._fractions("0.1, 0.5") == (0.1, 0.5)


def test_deployed_share_falls_back_to_the_backbone_total_when_nothing_trains() -> None:
    result = {"trainable_parameters": 0, "trainable_percent": 0.0, "deployed_parameters": 0}
    assert rt.deployed_percent(result, 1000) == 0.0
    assert rt.deployed_percent({}, 1000) == ""


def test_csv_merge_keeps_old_parts_and_updates_rows_of_the_running_part(tmp_path) -> None:
    space = _space()
    names = rt.columns(space)
    base = {name: "" for name in names}
    old = [{**base, "part": "0", "trial": "1", "state": "completed", "score": "0.5"},
           {**base, "part": "0", "trial": "2", "state": "failed"}]
    path = tmp_path / "table.csv"
    rt.write_rows(path, old, names)
    kept = rt.read_rows(path)
    assert kept == old and not (tmp_path / "table.csv.partial").exists()
    fresh = [{**base, "part": 1, "trial": 1, "state": "completed", "score": 0.9}]
    merged = rt.merge_rows(kept, fresh)
    assert [(int(r["part"]), int(r["trial"])) for r in merged] == [(0, 1), (0, 2), (1, 1)]
    assert rt.completed_count(merged) == 2
    studies = [_study("t part 3"), _study("other part 7")]
    assert rt.next_part(merged, studies, "t") == 4
    assert rt.next_part([], [], "t") == 0


def test_the_study_is_a_valid_uniform_study_of_the_requested_size(tmp_path, minilm_path) -> None:
    args = argparse.Namespace(
        name="t", task="glue:sst2", data_dir=str(tmp_path), trials=200, workers=1, epochs=1.0,
        batch_size=32, learning_rate=1e-3, max_length=64, max_train_examples=2000,
        max_held_out=500, max_dev_examples=None, seed=0, training_seed=0)
    model = str(minilm_path)
    spec = StudySpec.model_validate(
        rt.study_spec(args, model, rt.model_search_space(model), trials=150, part=2))
    assert spec.name == "t part 2"
    assert spec.optimizer.name == "random" and spec.optimizer.seed == 2
    assert spec.budget.total_trials == spec.budget.initial_trials == 150
    assert spec.budget.max_parallel == 1
    assert spec.search_space.num_layers == 6
    assert spec.training.max_train_examples == 2000
    assert spec.training.max_held_out_examples == 500
    assert rt.backbone_parameters(model) == 22_713_216


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_real_service_run_writes_rows_and_resumes_from_the_workdir_or_the_csv(
        tmp_path, tiny_bert_path, monkeypatch) -> None:
    """Server + one worker for real on the tiny BERT and the synthetic task (seconds)."""
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path / "cache"))
    workdir, output = tmp_path / "work", tmp_path / "table.csv"
    argv = ["--model", str(tiny_bert_path), "--task", "synthetic", "--data-dir",
            str(tmp_path), "--workers", "1", "--max-train-examples", "64",
            "--max-length", "24", "--max-held-out", "50", "--max-dev-examples", "50",
            "--workdir", str(workdir), "--output", str(output), "--poll", "0.5"]
    rt.main([*argv, "--trials", "3"])
    rows = _table(output)
    assert [(r["part"], r["trial"], r["state"]) for r in rows] == [
        ("0", "0", "completed"), ("0", "1", "completed"), ("0", "2", "completed")]
    for row in rows:
        assert 0 <= float(row["score"]) <= 1 and 0 <= float(row["dev_score"]) <= 1
        assert float(row["trainable_percent"]) > 0 and float(row["deployed_percent"]) > 0
        assert float(row["seconds"]) > 0 and row["seed"] == "0"
        assert json.loads(row["config"])["num_layers"] == 2
    assert not (workdir / "pids.json").exists()
    fidelity = json.loads((tmp_path / "table.fidelity.json").read_text())
    assert fidelity["training"]["max_length"] == 24 and fidelity["workers"] == 1
    assert fidelity["parts"] == [{"part": 0, "trials": 3, "sobol_seed": 0}]

    rt.main([*argv, "--trials", "3"])  # resumed from the workdir: nothing more to do
    assert _table(output) == rows

    shutil.rmtree(workdir)  # the database is gone; the CSV is all that is left
    rt.main([*argv, "--trials", "5"])
    more = _table(output)
    assert more[:3] == rows
    assert [(r["part"], r["trial"]) for r in more[3:]] == [("1", "0"), ("1", "1")]
    assert rt.completed_count(more) == 5
    assert json.loads((tmp_path / "table.fidelity.json").read_text())["parts"] == [
        {"part": 0, "trials": 3, "sobol_seed": 0}, {"part": 1, "trials": 2, "sobol_seed": 1}]

    with pytest.raises(SystemExit, match="other training settings"):
        rt.main([*argv, "--trials", "5", "--max-length", "32"])


def _wait_for_command_line(pid: int, marker: bytes) -> None:
    """Until a just-started process shows its arguments (right after exec it may not)."""
    end = time.monotonic() + 10
    while marker not in rt._command_line(pid):
        assert time.monotonic() < end, f"process {pid} never showed {marker!r}"
        time.sleep(0.05)


def test_a_second_run_on_a_busy_workdir_stops_and_stale_children_are_ended(tmp_path) -> None:
    pid_file = tmp_path / "pids.json"
    # a live process whose command line names the script stands for a run still going
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "real_table.py"])
    _wait_for_command_line(running.pid, b"real_table.py")
    try:
        pid_file.write_text(json.dumps({"main": running.pid, "children": []}))
        with pytest.raises(SystemExit, match=f"another run \\(process {running.pid}\\)"):
            rt.stop_stale_processes(pid_file)
        assert pid_file.exists()
    finally:
        running.kill()
        running.wait(10)
    # the run is gone: its recorded children are ended if they run this project's CLI only
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "autopeft_service.cli"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _wait_for_command_line(child.pid, b"autopeft_service.cli")
    try:
        pid_file.write_text(json.dumps({"main": running.pid,
                                        "children": [child.pid, other.pid]}))
        rt.stop_stale_processes(pid_file)
        assert child.wait(10) == -signal.SIGTERM
        assert other.poll() is None and not pid_file.exists()
    finally:
        for process in (child, other):
            process.kill()
            process.wait(10)


@pytest.mark.parametrize("family", ["unified", "design_space", "lora"])
def test_the_other_families_tables_draw_from_their_default_space(family, minilm_path) -> None:
    args = argparse.Namespace(
        name="t", task="glue:sst2", data_dir="/data", trials=60, workers=1, epochs=1.0,
        batch_size=16, learning_rate=1e-3, max_length=32, max_train_examples=1000,
        max_held_out=500, max_dev_examples=None, seed=0, training_seed=0)
    search_space = rt.model_search_space(str(minilm_path), family)
    spec = StudySpec.model_validate(with_backbone_dims(
        rt.study_spec(args, str(minilm_path), search_space)))
    assert spec.search_space.kind == family and spec.optimizer.name == "random"
    space = rt.table_space(str(minilm_path), family)
    assert space.kind == family
    assert rt.columns(space)[3:3 + len(space.parameters())] == [
        p.name for p in space.parameters()]
    if family == "lora":
        assert spec.search_space.granularity == "layer"

"""The real-evaluation table's rows (benchmarks/real_table.py)."""

from __future__ import annotations

import argparse

from autopeft_service.domain.study import SearchSpaceSpec, StudySpec
from tests.benchmarks.conftest import load_benchmark

rt = load_benchmark("real_table")


def test_rows_carry_every_parameter_and_blank_results_for_failed_trials() -> None:
    space = SearchSpaceSpec.model_validate({"num_layers": 2, "hidden_size": 8}).to_space()
    point = {"layer_0": 1, "layer_1": 0, "serial_adapter_size": 4, "parallel_adapter_size": 0,
             "prefix_length": 1}
    assert space.is_valid(point)
    trials = [
        {"id": 7, "state": "failed", "params": point, "config_description": "serial@ffn[4x1]",
         "objective": None, "dev_score": None, "param_share": None, "worker": None,
         "result": None},
        {"id": 3, "state": "completed", "params": point, "config_description": "serial@ffn[4x1]",
         "objective": 0.75, "dev_score": 0.7, "param_share": 1.5, "worker": "w0",
         "result": {"trainable_parameters": 99, "train_seconds": 2.0, "eval_seconds": 0.5}},
    ]
    rows = rt.table_rows(trials, space)
    assert [r["trial"] for r in rows] == [3, 7]
    assert [k for k in rows[0] if k in point] == [p.name for p in space.parameters()]
    assert rows[0]["score"] == 0.75 and rows[0]["param_share"] == 1.5
    assert rows[0]["trainable_parameters"] == 99 and rows[0]["worker"] == "w0"
    assert rows[1]["score"] == "" and rows[1]["dev_score"] == "" and rows[1]["state"] == "failed"


def test_the_study_is_a_valid_uniform_study_of_the_requested_size(tmp_path, minilm_path) -> None:
    args = argparse.Namespace(
        name="t", task="glue:mrpc", data_dir=str(tmp_path), trials=300, workers=2, epochs=1.0,
        batch_size=16, learning_rate=1e-3, max_length=64, max_train_examples=2000,
        max_held_out=300, max_dev_examples=None, seed=0)
    model = str(minilm_path)
    spec = StudySpec.model_validate(rt.study_spec(args, model, rt.model_search_space(model)))
    assert spec.optimizer.name == "random"
    assert spec.budget.total_trials == spec.budget.initial_trials == 300
    assert spec.search_space.num_layers == 6
    assert spec.training.max_train_examples == 2000

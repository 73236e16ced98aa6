"""``autopeft demo``: its study on every search-space family, and a whole run on one."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from autopeft_service.cli.demo import demo_spec
from autopeft_service.client import backbone_dims_of
from autopeft_service.domain.spaces import FAMILIES
from autopeft_service.domain.study import StudySpec, check_new_study
from tests.cli.test_studies import autopeft


def _args(space: str, **overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "space": space, "task": "synthetic", "data_dir": None, "text_columns": None,
        "label_column": None, "task_type": None, "trials": 4, "initial_trials": 2,
        "workers": 1, "optimizer": "sobol", "epochs": 0.25, "learning_rate": 3e-3,
        "max_train_examples": 64, "max_length": 24, "batch_size": None, "seed": 0}
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.mark.parametrize("space", sorted(FAMILIES))
def test_the_demo_study_is_the_family_default_on_the_model(tiny_bert_path: Path,
                                                           space: str) -> None:
    spec = StudySpec.model_validate(demo_spec(_args(space), str(tiny_bert_path)))
    check_new_study(spec)
    assert spec.space.kind == space
    assert spec.backbone_dims == backbone_dims_of(tiny_bert_path)


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_demo_runs_a_search_on_another_family(backbone: str, tiny_bert_path: Path,
                                              tmp_path: Path) -> None:
    """The lora family end to end through the server and a worker, on a tiny encoder and on
    a tiny decoder."""
    from workers.data import synthetic_vocabulary
    from workers.tiny_model import write_tiny_decoder

    model = tiny_bert_path if backbone == "bert" else write_tiny_decoder(
        tmp_path / "llama", synthetic_vocabulary(), model_type="llama")
    done = autopeft("demo", "--space", "lora", "--model", str(model), "--trials", "3",
                    "--initial-trials", "3", "--workers", "1", "--optimizer", "sobol",
                    "--epochs", "0.25", "--max-train-examples", "64", "--max-length", "24",
                    "--workdir", str(tmp_path), env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "c")},
                    timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "3 trials completed" in done.stdout
    assert "lora[" in done.stdout  # the Pareto table names LoRA configurations


SMOLLM2_CONFIG = {  # SmolLM2-135M-Instruct's config.json as workers.models converts it
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "vocab_size": 49152, "attention_bias": False, "mlp_bias": False,
    "tie_word_embeddings": True}


def test_the_smollm2_demo_searches_all_seven_projections_at_its_fidelity(
        tmp_path: Path) -> None:
    import json

    from autopeft_service.domain.backbone import SMOLLM2_DIMS

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    args = _args("lora", max_train_examples=None, max_length=None, batch_size=None)
    spec = StudySpec.model_validate(demo_spec(args, "smollm2", tmp_path))
    check_new_study(spec)
    assert spec.backbone_dims == SMOLLM2_DIMS  # the packaged table equals the config's count
    assert len(spec.space.targets) == 7
    assert (spec.training.max_train_examples, spec.training.batch_size,
            spec.training.max_length) == (512, 16, 48)
    # a spec naming the packaged model needs no dimensions
    bare = StudySpec.model_validate({"name": "x", "backbone": "SmolLM2", "task": "synthetic",
                                     "search_space": {"kind": "lora"}})
    check_new_study(bare)
    assert bare.backbone_dims == SMOLLM2_DIMS and bare.space.num_layers == 30

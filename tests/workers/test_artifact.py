"""Adapter artefacts (workers/artifact.py): a trial writes one, a loaded one predicts what
the worker predicted, and damaged or mismatched ones are refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autopeft_service.domain import PeftConfig, TrainingSettings
from autopeft_service.domain.artifact import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    pack,
    read_manifest,
    unpack,
)
from workers.artifact import load_classifier
from workers.data import TokenizedCache, compute_metrics
from workers.trial import TrialRequest, TrialRunner

SETTINGS = TrainingSettings(epochs=1, batch_size=32, learning_rate=3e-3, max_length=24,
                            max_train_examples=200, max_held_out_examples=64,
                            max_dev_examples=96, eval_batch_size=32, warmup_ratio=0.0)
#: Every PEFT method family at once: LoRA per-layer ranks, both adapters, prefix, (IA)^3.
MIXED = PeftConfig.from_dict({
    "num_layers": 2, "serial_adapters": [{"sizes": [8, 0]}],
    "parallel_adapters": [{"sizes": [0, 4]}], "lora": {"ranks": [2, 4]},
    "prefix": {"lengths": [3, 3]}, "ia3": {"layers": [True, False]}})


def _trained(tmp_path: Path, model: Path, config: PeftConfig, predictions: list[torch.Tensor],
             monkeypatch: pytest.MonkeyPatch, **settings: object):
    """Run one trial writing an artefact; ``predictions`` receives the worker's (held-out,
    then dev) predictions."""
    runner = TrialRunner(cache=TokenizedCache(tmp_path / "cache"))
    original = runner.predict

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(*args, **kwargs)
        predictions.append(out.clone())
        return out

    monkeypatch.setattr(runner, "predict", spy)
    request = TrialRequest(model=model, task="synthetic", config=config, seed=3,
                           settings=SETTINGS.model_copy(update=settings))
    artifact = tmp_path / "artifact"
    result = runner.run(request, artifact_dir=artifact, trial_info={"study": 1, "trial": 7})
    return runner, request, result, artifact


def test_a_trial_writes_an_artifact_whose_classifier_reproduces_the_dev_predictions(
        tmp_path, tiny_bert_path, monkeypatch) -> None:
    predictions: list[torch.Tensor] = []
    runner, request, result, artifact = _trained(tmp_path, tiny_bert_path, MIXED, predictions,
                                                 monkeypatch)
    assert sorted(p.name for p in artifact.iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]
    manifest = read_manifest(artifact)
    assert manifest.peft_config == MIXED and manifest.seed == 3
    assert manifest.metrics["dev_score"] == result.dev_score
    assert manifest.trainable_parameters == result.trainable_parameters
    assert manifest.task.label_names and manifest.trial == {"study": 1, "trial": 7}
    assert manifest.backbone.dims.num_layers == 2

    classifier = load_classifier(tiny_bert_path, artifact)
    task = runner.task(request)
    dev = runner._prepare(request, runner.backbone(tiny_bert_path)).dev
    logits = classifier.outputs(dev)
    worker_dev = predictions[-1]
    assert torch.equal(logits.argmax(-1), worker_dev)  # exactly the worker's predictions
    assert compute_metrics(task.metrics, logits.argmax(-1).numpy(),
                           dev.labels.numpy()) == result.dev
    names = classifier.predict(["a b c", "d e"])
    assert len(names) == 2 and set(names) <= set(manifest.task.label_names)


def test_full_finetuning_and_head_only_round_trip(tmp_path, tiny_bert_path, monkeypatch) -> None:
    for name, config in (("full", {"num_layers": 2, "full_finetuning": True}),
                         ("head", {"num_layers": 2})):
        predictions: list[torch.Tensor] = []
        _runner, _request, _result, artifact = _trained(
            tmp_path / name, tiny_bert_path, PeftConfig.from_dict(config), predictions,
            monkeypatch)
        classifier = load_classifier(tiny_bert_path, artifact)
        manifest = classifier.manifest
        stored = load_file(str(artifact / WEIGHTS_FILE))
        assert len(stored) == manifest.tensors
        assert sum(t.numel() for t in stored.values()) == (
            manifest.trainable_parameters + manifest.head_parameters)
        if name == "head":
            assert sorted(stored) == ["head.bias", "head.weight"]
        else:  # the whole encoder trained: every backbone tensor is stored
            assert len(stored) == 2 + len(list(classifier.model.backbone.parameters()))


def test_a_backbone_with_another_config_is_refused_naming_both_hashes(
        tmp_path, tiny_bert_path, monkeypatch) -> None:
    _r, _q, _res, artifact = _trained(tmp_path, tiny_bert_path, MIXED, [], monkeypatch)
    other = tmp_path / "other-bert"
    shutil.copytree(tiny_bert_path, other)
    config = json.loads((other / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as error:
        load_classifier(other, artifact)
    manifest = read_manifest(artifact)
    assert manifest.backbone.config_sha256 in str(error.value)
    assert "differs from the artefact's" in str(error.value)
    # a copy with the same config but another path is the same backbone
    same = tmp_path / "same-bert"
    shutil.copytree(tiny_bert_path, same)
    assert load_classifier(same, artifact).manifest == manifest


def test_damaged_or_foreign_artifacts_are_refused(tmp_path, tiny_bert_path, monkeypatch) -> None:
    _r, _q, _res, artifact = _trained(tmp_path, tiny_bert_path, MIXED, [], monkeypatch)
    packed = pack(artifact)
    copy = tmp_path / "copy"
    assert unpack(packed, copy) == read_manifest(artifact)
    with pytest.raises(ArtifactError, match="not an empty folder"):
        unpack(packed, copy)
    with pytest.raises(ArtifactError, match="not a zip"):
        unpack(b"hello", tmp_path / "x")

    weights = copy / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged or was changed"):
        load_classifier(tiny_bert_path, copy)

    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    newer = tmp_path / "newer"
    shutil.copytree(artifact, newer)
    (newer / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99 is not supported"):
        read_manifest(newer)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(tmp_path)

    # a manifest whose configuration does not match the stored tensors
    mismatched = tmp_path / "mismatched"
    shutil.copytree(artifact, mismatched)
    config = {**manifest["peft_config"], "lora": [{**manifest["peft_config"]["lora"][0],
                                                   "ranks": [2, 0]}]}
    (mismatched / MANIFEST_FILE).write_text(json.dumps({**manifest, "peft_config": config}))
    with pytest.raises(ArtifactError, match="do not fit the configuration"):
        load_classifier(tiny_bert_path, mismatched)


def test_a_decoder_classifier_round_trips_and_a_causal_lm_adapter_is_stored(
        tmp_path, monkeypatch) -> None:
    from workers.data import synthetic_vocabulary
    from workers.data.synthetic_lm import synthetic_lm_vocabulary
    from workers.export import ExportRefused, export_peft
    from workers.tiny_model import write_tiny_decoder

    llama = write_tiny_decoder(tmp_path / "llama",
                               synthetic_vocabulary() + synthetic_lm_vocabulary())
    config = PeftConfig.from_dict({"num_layers": 2, "lora": {"ranks": [2, 4],
                                                             "targets": ["query", "ffn_gate"]},
                                   "prefix": {"lengths": [2, 0]}})
    predictions: list[torch.Tensor] = []
    runner, request, _result, artifact = _trained(tmp_path, llama, config, predictions,
                                                  monkeypatch)
    manifest = read_manifest(artifact)
    assert manifest.pooling == "last"  # "auto" resolved for the decoder
    dev = runner._prepare(request, runner.backbone(llama)).dev
    assert torch.equal(load_classifier(llama, artifact).outputs(dev).argmax(-1), predictions[-1])
    with pytest.raises(ExportRefused, match="decoder"):
        export_peft(artifact, tmp_path / "exported")

    lm_artifact = tmp_path / "lm-artifact"
    lm = TrialRunner(cache=TokenizedCache(tmp_path / "cache")).run(
        TrialRequest(model=llama, task="synthetic-lm", config=config, settings=SETTINGS),
        artifact_dir=lm_artifact)
    lm_manifest = read_manifest(lm_artifact)
    assert lm_manifest.task.task_type == "causal_lm" and lm_manifest.task.num_outputs == 0
    assert lm_manifest.metrics["dev"] == lm.dev
    tensors = load_file(str(lm_artifact / WEIGHTS_FILE))
    assert sum(t.numel() for t in tensors.values()) == lm.trainable_parameters
    with pytest.raises(ArtifactError, match="causal-LM adapter"):
        load_classifier(llama, lm_artifact)

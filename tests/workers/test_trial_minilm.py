"""A real pretrained backbone (MiniLM-L6): a PEFT module beats the head alone."""

from pathlib import Path

import pytest

from autopeft_service.domain import PeftConfig, TrainingSettings
from workers.data import TokenizedCache
from workers.trial import TrialRequest, TrialRunner

SETTINGS = TrainingSettings(epochs=2, batch_size=32, learning_rate=1e-3, max_length=32,
                            max_train_examples=1500, max_held_out_examples=300,
                            max_dev_examples=300)


@pytest.mark.slow
def test_adapter_scores_measurably_above_the_head_alone(minilm_path: Path,
                                                        tmp_path: Path) -> None:
    runner = TrialRunner(cache=TokenizedCache(tmp_path))
    head = PeftConfig(num_layers=6)
    adapter = PeftConfig(num_layers=6, serial_adapters=[{"sizes": [16] * 6}])
    results = {name: runner.run(TrialRequest(model=minilm_path, task="synthetic", config=config,
                                             settings=SETTINGS, seed=0))
               for name, config in (("head", head), ("adapter", adapter))}
    assert results["head"].trainable_parameters == 0
    assert results["adapter"].trainable_percent < 0.5
    assert results["adapter"].dev_score >= results["head"].dev_score + 0.1, results
    assert results["adapter"].objective >= results["head"].objective + 0.1, results


@pytest.mark.slow
def test_a_minilm_artifact_reproduces_the_workers_dev_predictions(minilm_path: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch) -> None:
    """Save after training, load on the backbone folder: the dev predictions are the
    worker's, exactly (LoRA and a parallel adapter with a learned scale, mean pooling)."""
    import torch

    from workers.artifact import load_classifier

    runner = TrialRunner(cache=TokenizedCache(tmp_path / "cache"))
    worker_predictions: list[torch.Tensor] = []
    original = runner.predict

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        worker_predictions.append(original(*args, **kwargs).clone())
        return worker_predictions[-1]

    monkeypatch.setattr(runner, "predict", spy)
    config = PeftConfig.from_dict({"num_layers": 6, "lora": {"ranks": [4] * 6},
                                   "parallel_adapters": [{"sizes": [8] * 6,
                                                          "learned_scale": True}]})
    settings = SETTINGS.model_copy(update={"epochs": 1, "max_train_examples": 300})
    request = TrialRequest(model=minilm_path, task="synthetic", config=config,
                           settings=settings, seed=0)
    result = runner.run(request, artifact_dir=tmp_path / "artifact")
    classifier = load_classifier(minilm_path, tmp_path / "artifact")
    dev = runner._prepare(request, runner.backbone(minilm_path)).dev
    assert torch.equal(classifier.outputs(dev).argmax(-1), worker_predictions[-1])
    assert classifier.manifest.metrics["dev_score"] == result.dev_score

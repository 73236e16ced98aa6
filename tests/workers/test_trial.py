"""The trial runner on a tiny random BERT and the synthetic task."""

from dataclasses import replace
from pathlib import Path

import pytest

from autopeft_service.domain import PeftConfig, TrainingSettings, count_parameters
from workers.data import TokenizedCache, load_synthetic
from workers.trial import TrialProgress, TrialRequest, TrialRunner, TrialStopped

SETTINGS = TrainingSettings(epochs=3, batch_size=32, learning_rate=3e-3, max_length=24,
                            max_train_examples=600, max_held_out_examples=200,
                            max_dev_examples=200, warmup_ratio=0.0, head_dropout=0.0)
ADAPTERS = PeftConfig.from_dict({"num_layers": 2, "serial_adapters": [{"sizes": [16, 16]}],
                                 "lora": {"ranks": [4, 4]}})


@pytest.fixture
def runner(tmp_path: Path) -> TrialRunner:
    return TrialRunner(cache=TokenizedCache(tmp_path / "cache"))


def _request(model: Path, config: PeftConfig = ADAPTERS, seed: int = 0, **settings) -> TrialRequest:
    return TrialRequest(model=model, task="synthetic", config=config, seed=seed,
                        settings=SETTINGS.model_copy(update=settings))


def test_tiny_bert_learns_the_synthetic_task(runner: TrialRunner, tiny_bert_path: Path) -> None:
    """Full fine-tuning of a random 2-layer BERT: its frozen random features alone carry
    too little for the compositional task, so the whole tiny model trains here (PEFT
    learning on a real pretrained backbone is tested with MiniLM)."""
    losses: list[float] = []

    def record(progress: TrialProgress) -> bool:
        losses.append(progress.loss)
        return True

    full = PeftConfig(num_layers=2, full_finetuning=True)
    settings = {"learning_rate": 5e-3, "max_train_examples": 1800}
    untrained = runner.run(_request(tiny_bert_path, config=full, epochs=0.02, **settings))
    result = runner.run(_request(tiny_bert_path, config=full, epochs=5, **settings),
                        progress=record, progress_every=1)
    assert result.steps == len(losses) == 5 * 57  # ceil(1800 / 32) = 57 batches per epoch
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    assert result.objective >= untrained.objective + 0.25
    assert result.objective > 0.8 and result.dev_score > 0.8
    assert result.metric == "accuracy" and set(result.dev) == {"accuracy"}


def test_result_record_is_complete_and_counts_are_exact(runner: TrialRunner,
                                                        tiny_bert_path: Path) -> None:
    result = runner.run(_request(tiny_bert_path, epochs=0.2))
    dims = runner.backbone(tiny_bert_path).dims
    expected = count_parameters(ADAPTERS, dims)
    assert result.trainable_parameters == expected.trainable
    assert result.trainable_percent == pytest.approx(expected.trainable_percent)
    assert result.head_parameters == 32 * 2 + 2
    assert result.train_examples == 600 and result.steps == 4
    assert result.train_seconds > 0 and result.eval_seconds > 0 and result.peak_memory_mb > 0
    assert result.examples_per_second > 0 and result.config_description == ADAPTERS.describe()


def test_same_seed_same_result_and_other_seed_differs(tiny_bert_path: Path,
                                                      tmp_path: Path) -> None:
    def run(seed: int) -> tuple[float, float, dict]:
        runner = TrialRunner(cache=TokenizedCache(tmp_path / "cache"))
        result = runner.run(_request(tiny_bert_path, seed=seed, epochs=1))
        return result.final_loss, result.objective, result.dev

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert other[0] != first[0]


def test_progress_callback_can_stop_a_trial(runner: TrialRunner, tiny_bert_path: Path) -> None:
    with pytest.raises(TrialStopped, match="stopped at step 2"):
        runner.run(_request(tiny_bert_path), progress=lambda p: p.step < 2, progress_every=1)


def test_backbone_and_tokenised_data_are_reused(tiny_bert_path: Path, tmp_path: Path) -> None:
    cache = TokenizedCache(tmp_path / "cache")
    runner = TrialRunner(cache=cache)
    runner.run(_request(tiny_bert_path, epochs=0.1))
    misses = cache.misses
    backbone = runner.backbone(tiny_bert_path)
    runner.run(_request(tiny_bert_path, config=PeftConfig(num_layers=2), epochs=0.1))
    assert cache.misses == misses and runner.backbone(tiny_bert_path) is backbone
    # the pristine backbone stays frozen and unmodified by the trials built from it
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert type(backbone.model.encoder.layer[0].output).__name__ == "BertOutput"


def test_without_hold_out_the_whole_train_split_trains_and_only_dev_is_scored(
        runner: TrialRunner, tiny_bert_path: Path) -> None:
    request = _request(tiny_bert_path, epochs=0.05, max_train_examples=None)
    search = runner.run(request)
    retrained = runner.run(replace(request, hold_out=False))
    assert len(load_synthetic().train) == 2000
    assert search.train_examples == 1800 and set(search.held_out) == {"accuracy"}
    assert retrained.train_examples == 2000
    assert retrained.held_out == {} and retrained.objective == retrained.dev_score
    capped = runner.run(replace(request, hold_out=False,
                                settings=SETTINGS.model_copy(update={"epochs": 0.05})))
    assert capped.train_examples == 600  # max_train_examples still subsamples

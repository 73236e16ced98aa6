"""The trial runner on tiny random decoders: causal-LM fine-tuning on responses and
classification by last-token pooling."""

from pathlib import Path

import pytest

from autopeft_service.domain import ModelError, PeftConfig, TrainingSettings, count_parameters
from workers.data import TokenizedCache, synthetic_vocabulary
from workers.data.synthetic_lm import synthetic_lm_vocabulary
from workers.tiny_model import write_tiny_decoder
from workers.trial import TrialProgress, TrialRequest, TrialRunner

LM_SETTINGS = TrainingSettings(epochs=3, batch_size=16, learning_rate=1e-2, max_length=16,
                               max_train_examples=320, max_held_out_examples=64,
                               max_dev_examples=64, warmup_ratio=0.0)
LORA = PeftConfig.from_dict({"num_layers": 2, "lora": {
    "ranks": [8, 8], "targets": ["query", "key", "value", "attention_output", "ffn_in",
                                 "ffn_gate", "ffn_out"]}})


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_decoder(tmp_path_factory.mktemp("llama"),
                              synthetic_lm_vocabulary() + synthetic_vocabulary(),
                              model_type="llama", hidden_size=64, ffn_size=128,
                              initializer_range=0.1)


@pytest.fixture
def runner(tmp_path: Path) -> TrialRunner:
    return TrialRunner(cache=TokenizedCache(tmp_path / "cache"))


def test_tiny_llama_learns_a_causal_lm_task_deterministically(runner: TrialRunner,
                                                              tiny_llama: Path) -> None:
    losses: list[float] = []

    def record(progress: TrialProgress) -> bool:
        losses.append(progress.loss)
        return True

    request = TrialRequest(model=tiny_llama, task="synthetic-lm", config=LORA, seed=3,
                           settings=LM_SETTINGS)
    untrained = runner.run(TrialRequest(model=tiny_llama, task="synthetic-lm", config=LORA,
                                        seed=3, settings=LM_SETTINGS.model_copy(
                                            update={"epochs": 0.05})))
    result = runner.run(request, progress=record, progress_every=1)
    assert result.steps == len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5  # the loss falls
    assert result.metric == "log_likelihood" and set(result.dev) == {"log_likelihood",
                                                                      "perplexity"}
    assert result.objective > untrained.objective + 0.5  # nats per response token
    assert result.dev["perplexity"] == pytest.approx(2.718281828 ** -result.dev_score)
    assert result.head_parameters == 0  # the LM head stays frozen
    dims = runner.backbone(tiny_llama).dims
    assert result.trainable_parameters == count_parameters(LORA, dims).trainable
    again = TrialRunner(cache=runner.cache).run(request)
    assert (again.objective, again.final_loss) == (result.objective, result.final_loss)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_decoder_classifies_by_last_token(tmp_path: Path, runner: TrialRunner,
                                          model_type: str) -> None:
    model = write_tiny_decoder(tmp_path / model_type, synthetic_vocabulary(),
                               model_type=model_type)
    config = PeftConfig.from_dict({"num_layers": 2, "prefix": {"lengths": [2, 2]},
                                   "parallel_adapters": [{"sizes": [8, 8]}]})
    settings = LM_SETTINGS.model_copy(update={"max_length": 24, "epochs": 0.1})
    result = runner.run(TrialRequest(model=model, task="synthetic", config=config,
                                     settings=settings))
    assert result.metric == "accuracy" and 0 <= result.objective <= 1
    assert result.head_parameters == 32 * 2 + 2


def test_causal_lm_task_on_an_encoder_is_refused(runner: TrialRunner,
                                                 tiny_bert_path: Path) -> None:
    config = PeftConfig.from_dict({"num_layers": 2, "lora": {"ranks": [2, 2]}})
    with pytest.raises(ModelError, match="causal-LM task needs a decoder"):
        runner.run(TrialRequest(model=tiny_bert_path, task="synthetic-lm", config=config,
                                settings=LM_SETTINGS))


def test_bitfit_on_a_llama_fails_the_trial_with_a_clear_error(runner: TrialRunner,
                                                             tiny_llama: Path) -> None:
    from autopeft_service.domain import ConfigError

    config = PeftConfig.from_dict({"num_layers": 2, "bitfit": {"layers": [True, True]}})
    with pytest.raises(ConfigError, match="no bias terms"):
        runner.run(TrialRequest(model=tiny_llama, task="synthetic-lm", config=config,
                                settings=LM_SETTINGS))


def test_a_causal_lm_task_with_nothing_to_train_is_refused(runner: TrialRunner,
                                                            tiny_llama: Path) -> None:
    from autopeft_service.domain import ConfigError

    with pytest.raises(ConfigError, match="nothing to train"):
        runner.run(TrialRequest(model=tiny_llama, task="synthetic-lm",
                                config=PeftConfig(num_layers=2), settings=LM_SETTINGS))

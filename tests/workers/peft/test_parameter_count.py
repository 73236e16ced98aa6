"""The analytic count equals the built model's trainable elements (head excluded)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from autopeft_service.domain import PeftConfig, count_parameters
from tests.strategies import peft_configs
from tests.workers.peft.conftest import NUM_LAYERS, make_encoder
from workers.peft import apply_peft, trainable_parameter_count

L = NUM_LAYERS
ONE_METHOD_EACH = {
    "serial_ffn": {"serial_adapters": [{"sizes": [4, 0, 2]}]},
    "serial_attention": {"serial_adapters": [{"sizes": [1, 1, 1], "position": "attention"}]},
    "parallel_ffn": {"parallel_adapters": [{"sizes": [0, 3, 3]}]},
    "parallel_attention": {"parallel_adapters": [{"sizes": [2, 0, 0], "position": "attention"}]},
    "prefix_mlp": {"prefix": {"lengths": [5, 0, 2], "mlp_width": 16}},
    "prefix_direct": {"prefix": {"lengths": [1, 2, 3], "reparameterize": False}},
    "lora_qv": {"lora": {"ranks": [2, 0, 4]}},
    "lora_all": {"lora": {"ranks": [1, 2, 3], "targets": ["query", "key", "value",
                                                           "attention_output", "ffn_in",
                                                           "ffn_out"]}},
    "bitfit": {"bitfit": {"layers": [True, False, True]}},
    "ia3": {"ia3": {"layers": [False, True, True]}},
    "ia3_ffn": {"ia3": {"layers": [True, True, True], "targets": ["ffn"]}},
    "full": {"full_finetuning": True},
    "head_only": {},
}


@pytest.mark.parametrize("method", sorted(ONE_METHOD_EACH))
def test_each_method_count_matches_built_model(encoder_factory, method: str) -> None:
    model, dims = encoder_factory()
    config = PeftConfig.from_dict({"num_layers": L, **ONE_METHOD_EACH[method]})
    apply_peft(model, config, dims)
    assert trainable_parameter_count(model) == count_parameters(config, dims).trainable
    if method != "head_only":
        assert trainable_parameter_count(model) > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=peft_configs(num_layers=L))
def test_random_configurations_count_matches(config: PeftConfig) -> None:
    for family in ("bert", "roberta"):
        model, dims = make_encoder(family)
        apply_peft(model, config, dims)
        assert trainable_parameter_count(model) == count_parameters(config, dims).trainable


def test_deployed_count_matches_folded_prefix() -> None:
    model, dims = make_encoder("bert")
    config = PeftConfig.from_dict({"num_layers": L, "prefix": {"lengths": [5, 0, 2],
                                                               "mlp_width": 16},
                                   "lora": {"ranks": [1, 1, 1]}})
    apply_peft(model, config, dims)
    ids = torch.randint(5, 60, (2, 7))
    before = model(input_ids=ids).last_hidden_state
    model.prefix_encoder.fold()
    assert trainable_parameter_count(model) == count_parameters(config, dims).deployed
    torch.testing.assert_close(model(input_ids=ids).last_hidden_state, before)


@pytest.mark.parametrize("method", ["serial_ffn", "parallel_ffn", "prefix_mlp", "lora_qv",
                                    "bitfit", "ia3"])
def test_size_zero_or_no_layers_builds_nothing(method: str) -> None:
    spec = ONE_METHOD_EACH[method]
    key = next(iter(spec))
    value = spec[key]
    empty = ([{**value[0], "sizes": [0] * L}] if isinstance(value, list)
             else {**value, **{k: ([0] * L if k != "layers" else [False] * L)
                               for k in ("sizes", "lengths", "ranks", "layers") if k in value}})
    config = PeftConfig.from_dict({"num_layers": L, key: empty})
    model, dims = make_encoder("bert")
    pristine = [name for name, _ in model.named_modules()]
    apply_peft(model, config, dims)
    assert [name for name, _ in model.named_modules()] == pristine
    assert trainable_parameter_count(model) == 0 == count_parameters(config, dims).trainable


def test_modules_are_absent_from_layers_with_size_zero() -> None:
    model, dims = make_encoder("bert")
    config = PeftConfig.from_dict({"num_layers": L, "serial_adapters": [{"sizes": [0, 4, 0]}],
                                   "lora": {"ranks": [0, 0, 2]},
                                   "prefix": {"lengths": [3, 0, 0]}})
    apply_peft(model, config, dims)
    names = [name for name, _ in model.named_modules()]
    assert any(n.startswith("encoder.layer.1.output.serial") for n in names)
    assert not any(n.startswith(("encoder.layer.0.output.", "encoder.layer.2.output."))
                   and ".base" in n for n in names)
    assert type(model.encoder.layer[2].attention.self.query).__name__ == "LoraLinear"
    assert type(model.encoder.layer[1].attention.self.query).__name__ == "Linear"
    assert type(model.encoder.layer[0].attention.self.base.query).__name__ == "Linear"
    assert type(model.encoder.layer[0].attention.self).__name__ == "PrefixSelfAttention"
    assert type(model.encoder.layer[1].attention.self).__name__ == "BertSelfAttention"

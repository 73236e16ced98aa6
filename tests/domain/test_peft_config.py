import json

import pytest
from hypothesis import given, settings

from autopeft_service.domain import ConfigError, PeftConfig
from tests.strategies import peft_configs


@settings(max_examples=60, deadline=None)
@given(peft_configs(num_layers=3))
def test_json_round_trip_is_exact(config: PeftConfig) -> None:
    assert PeftConfig.from_json(config.to_json()) == config
    assert PeftConfig.from_dict(json.loads(config.to_json())) == config


def _base(**overrides: object) -> dict:
    data: dict = {"num_layers": 2}
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (_base(serial_adapters=[{"sizes": [4]}]), "serial_adapters.0.sizes", "expected one per layer"),
        (_base(serial_adapters=[{"sizes": [4, -1]}]), "serial_adapters.0.sizes", ">= 0"),
        (_base(parallel_adapters=[{"sizes": [1, 1], "scale": 0}]), "parallel_adapters.0.scale",
         "greater than 0"),
        (_base(lora={"ranks": [1, 1], "targets": ["query", "nope"]}), "lora.0.targets.1", "query"),
        (_base(lora={"ranks": [1, 1], "targets": ["query", "query"]}), "lora.0.targets", "repeat"),
        (_base(lora=[{"ranks": [1, 1], "targets": ["query"]},
                     {"ranks": [2, 2], "targets": ["query", "key"]}]), "lora.1.targets", "repeat"),
        (_base(prefix={"lengths": [1, 2], "mlp_width": 0}), "prefix.mlp_width", "greater than 0"),
        (_base(ia3={"layers": [True]}), "ia3.layers", "expected one per layer"),
        (_base(colour="red"), "colour", "Extra inputs"),
        (_base(num_layers=0), "num_layers", "greater than 0"),
        (_base(full_finetuning=True, bitfit={"layers": [True, False]}), "full_finetuning",
         "excludes"),
        (_base(serial_adapters=[{"sizes": [1, 1]}, {"sizes": [2, 2]}]), "serial_adapters",
         "one adapter per position"),
    ],
)
def test_invalid_configs_name_the_field_and_reason(data: dict, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        PeftConfig.from_dict(data)
    message = str(error.value)
    assert message.startswith(f"{field}:") or f"; {field}:" in message, message
    assert reason in message


def test_malformed_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Invalid JSON"):
        PeftConfig.from_json("{not json")


def test_head_only_and_describe() -> None:
    empty = PeftConfig(num_layers=2, serial_adapters=[{"sizes": (0, 0)}], lora={"ranks": (0, 0)})
    assert empty.is_head_only and not empty.has_modules
    assert empty.describe() == "head only"
    config = PeftConfig.from_dict(_base(serial_adapters=[{"sizes": [64, 64]}],
                                        lora={"ranks": [8, 0]}))
    assert config.describe() == "serial@ffn[64x2] + lora[8x1:query,value]"
    assert PeftConfig(num_layers=2, full_finetuning=True).describe() == "full fine-tuning"


def test_stored_single_lora_object_reads_as_a_one_element_list() -> None:
    """Configurations stored before LoRA took a list (one object or null) still load."""
    old = PeftConfig.from_json('{"num_layers": 2, "lora": {"ranks": [8, 8]}}')
    assert len(old.lora) == 1 and old.lora[0].ranks == (8, 8)
    assert PeftConfig.from_json('{"num_layers": 2, "lora": null}').lora == ()
    assert PeftConfig.from_json(old.to_json()) == old


def test_alpha_per_rank_has_one_form() -> None:
    """Equal ranks: alpha_per_rank becomes alpha = ratio x r (so r=8, alpha 16 is one config);
    unequal ranks keep the ratio, and the update's scale follows it in every layer."""
    from autopeft_service.domain.peft_config import LoraConfig

    uniform = LoraConfig(ranks=(8, 0, 8), alpha_per_rank=2.0)
    assert uniform == LoraConfig(ranks=(8, 0, 8), alpha=16.0)
    assert uniform.scaling(8) == 2.0
    mixed = LoraConfig(ranks=(8, 2), alpha_per_rank=2.0)
    assert mixed.alpha_per_rank == 2.0 and mixed.scaling(8) == mixed.scaling(2) == 2.0
    assert LoraConfig(ranks=(8, 2), alpha=16.0).scaling(2) == 8.0

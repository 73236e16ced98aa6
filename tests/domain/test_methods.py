"""Every PeftConfig method field has exactly one descriptor, and descriptors drive counts,
layer checks and descriptions."""

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.methods import METHODS, method_counts
from autopeft_service.domain.peft_config import PeftConfig


def test_every_method_field_has_one_descriptor() -> None:
    fields = set(PeftConfig.model_fields) - {"num_layers", "full_finetuning"}
    described = [m.field for m in METHODS]
    assert sorted(described) == sorted(fields) and len(set(described)) == len(described)


def test_descriptors_count_each_module_by_name() -> None:
    config = PeftConfig.from_dict({
        "num_layers": 6, "serial_adapters": [{"sizes": [8] * 6}],
        "lora": [{"ranks": [4] * 6}, {"ranks": [2] * 6, "targets": ["ffn_in"]}],
        "prefix": {"lengths": [3] * 6}})
    counts = method_counts(config, MINILM_DIMS)
    assert set(counts) == {"serial_adapter@ffn", "lora", "prefix"}
    d, f = 384, 1536
    assert counts["lora"] == (2 * 6 * 4 * 2 * d + 6 * 2 * (d + f),) * 2
    assert counts["prefix"][1] == 2 * 18 * d < counts["prefix"][0]

"""The hand-crafted baseline catalogue: configurations, counts, settings and name lookup."""

from pathlib import Path

import pytest

from autopeft_service.domain import BackboneDims, PeftConfig, TrainingSettings, count_parameters
from autopeft_service.domain.baselines import BASELINES, select_baselines
from autopeft_service.domain.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINILM = BackboneDims(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536,
                      total_parameters=22_713_216)


def test_catalogue_names_and_order() -> None:
    assert list(BASELINES) == ["lora-r8-qv", "serial-adapter-64", "parallel-adapter",
                               "prefix-30", "mam", "head-only", "full-ft"]


@pytest.mark.parametrize("num_layers", [2, 6, 12])
def test_every_baseline_builds_for_any_depth_in_every_layer(num_layers: int) -> None:
    described = {name: b.config(num_layers).describe() for name, b in BASELINES.items()}
    n = num_layers
    assert described == {
        "lora-r8-qv": f"lora[8x{n}:query,value]", "serial-adapter-64": f"serial@ffn[64x{n}]",
        "parallel-adapter": f"parallel@ffn[64x{n}]", "prefix-30": f"prefix[30x{n}]",
        "mam": f"parallel@ffn[16x{n}] + prefix[16x{n}]", "head-only": "head only",
        "full-ft": "full fine-tuning"}
    for baseline in BASELINES.values():
        config = baseline.config(num_layers)
        assert config.num_layers == num_layers
        assert PeftConfig.from_json(config.to_json()) == config


def test_forms_positions_and_scales() -> None:
    parallel = BASELINES["parallel-adapter"].config(6).parallel_adapters[0]
    assert (parallel.position.value, parallel.scale, parallel.sizes) == ("ffn", 4.0, (64,) * 6)
    serial = BASELINES["serial-adapter-64"].config(6).serial_adapters[0]
    assert (serial.position.value, serial.activation) == ("ffn", "relu")
    prefix = BASELINES["prefix-30"].config(6).prefix
    assert prefix is not None and prefix.reparameterize and prefix.mlp_width == 800
    assert BASELINES["head-only"].config(6).is_head_only
    assert BASELINES["full-ft"].config(6).full_finetuning


@pytest.mark.parametrize(("name", "example"), [("lora-r8-qv", "lora_config.json"),
                                               ("mam", "mam_adapter_config.json")])
def test_baselines_equal_the_example_files(name: str, example: str) -> None:
    assert BASELINES[name].config(6) == PeftConfig.from_json((EXAMPLES / example).read_text())


def test_parameter_shares_on_minilm() -> None:
    share = {name: count_parameters(b.config(6), MINILM) for name, b in BASELINES.items()}
    assert share["head-only"].trainable == 0
    assert share["full-ft"].trainable_percent == pytest.approx(100.0)
    assert share["lora-r8-qv"].trainable == 6 * 8 * 2 * (384 + 384)
    assert share["serial-adapter-64"].trainable == share["parallel-adapter"].trainable == (
        6 * (2 * 384 * 64 + 64 + 384))
    mlp = 384 * 800 + 800 + 800 * 768 + 768
    assert share["prefix-30"].trainable == 6 * 30 * 384 + mlp


def test_mam_is_he_et_al_glue_setting_and_its_counts_match_a_hand_count_on_minilm() -> None:
    """He et al.'s exps/run_glue.sh: attn_mode=prefix, attn_bn=16, --mid_dim 800,
    ffn_option=parallel, ffn_bn=16, ffn_adapter_scalar=2 (not the XSum 30 / 512 / 4)."""
    config = BASELINES["mam"].config(6)
    assert config.prefix is not None
    assert (config.prefix.lengths, config.prefix.reparameterize, config.prefix.mlp_width) == (
        (16,) * 6, True, 800)
    (adapter,) = config.parallel_adapters
    assert (adapter.sizes, adapter.position.value, adapter.scale, adapter.learned_scale) == (
        (16,) * 6, "ffn", 2.0, False)
    assert not config.serial_adapters and not config.lora and config.bitfit is None
    # MiniLM-L6: d = 384, 6 layers, prefix length l = 16, MLP width 800, bottleneck r = 16.
    d, layers, length, width, r = 384, 6, 16, 800, 16
    prefix_embedding_per_layer = length * d                      # 16 x 384 = 6,144
    prefix_mlp = (d * width + width) + (width * 2 * d + 2 * d)   # 307,200 + 800 + 614,400 + 768
    prefix_deployed_per_layer = 2 * length * d                   # keys and values: 12,288
    adapter_per_layer = d * r + r + r * d + d                    # down + bias + up + bias: 12,688
    assert prefix_mlp == 923_168 and adapter_per_layer == 12_688
    trainable = layers * prefix_embedding_per_layer + prefix_mlp + layers * adapter_per_layer
    deployed = layers * prefix_deployed_per_layer + layers * adapter_per_layer
    assert (trainable, deployed) == (1_036_160, 149_856)
    count = count_parameters(config, MINILM)
    assert (count.trainable, count.deployed) == (trainable, deployed)
    # 0.660 % of MiniLM deployed (4.56 % trainable), against the XSum setting's 11.02 %.
    assert round(count.deployed_percent, 3) == 0.660
    assert round(count.trainable_percent, 2) == 4.56


def test_only_full_finetuning_overrides_the_settings() -> None:
    base = TrainingSettings(learning_rate=3e-3, epochs=2, max_train_examples=500)
    for name, baseline in BASELINES.items():
        if name != "full-ft":
            assert baseline.settings(base) is base
    full = BASELINES["full-ft"].settings(base)
    assert full == base.model_copy(update={"learning_rate": 1e-4})


def test_select_keeps_order_drops_repeats_and_expands_all() -> None:
    assert [b.name for b in select_baselines(["mam", "head-only", "mam"])] == ["mam", "head-only"]
    assert [b.name for b in select_baselines(["full-ft", "all"])] == (
        ["full-ft"] + [n for n in BASELINES if n != "full-ft"])
    assert select_baselines([]) == []


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown baseline 'lora'; known: lora-r8-qv, "
                                          r"serial-adapter-64, .*, full-ft \(or all\)"):
        select_baselines(["head-only", "lora"])

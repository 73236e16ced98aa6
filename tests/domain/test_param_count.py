import pytest

from autopeft_service.domain import BackboneDims, PeftConfig, count_parameters

MINILM = BackboneDims(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536,
                      total_parameters=22_713_216)


def test_hand_computed_counts_on_minilm_dims() -> None:
    serial = PeftConfig(num_layers=6, serial_adapters=[{"sizes": [64] * 6}])
    assert count_parameters(serial, MINILM).trainable == 6 * (2 * 384 * 64 + 64 + 384)
    lora = PeftConfig(num_layers=6, lora={"ranks": [8] * 6})
    assert count_parameters(lora, MINILM).trainable == 6 * 2 * 8 * (384 + 384)
    ffn_lora = PeftConfig(num_layers=6, lora={"ranks": [0, 0, 0, 0, 0, 2],
                                              "targets": ["ffn_in", "ffn_out"]})
    assert count_parameters(ffn_lora, MINILM).trainable == 2 * 2 * (384 + 1536)
    bitfit = PeftConfig(num_layers=6, bitfit={"layers": [True] + [False] * 5})
    assert count_parameters(bitfit, MINILM).trainable == 7 * 384 + 1536
    ia3 = PeftConfig(num_layers=6, ia3={"layers": [True] * 6})
    assert count_parameters(ia3, MINILM).trainable == 6 * (384 + 384 + 1536)
    full = PeftConfig(num_layers=6, full_finetuning=True)
    assert count_parameters(full, MINILM).trainable_percent == pytest.approx(100.0)


def test_prefix_counts_mlp_once_and_deploys_without_it() -> None:
    config = PeftConfig(num_layers=6, prefix={"lengths": [30, 0, 30, 0, 0, 10], "mlp_width": 800})
    count = count_parameters(config, MINILM)
    mlp = 384 * 800 + 800 + 800 * 768 + 768
    assert count.trainable == 70 * 384 + mlp
    assert count.deployed == 2 * 70 * 384
    direct = PeftConfig(num_layers=6, prefix={"lengths": [30, 0, 30, 0, 0, 10],
                                              "reparameterize": False})
    assert count_parameters(direct, MINILM).trainable == 2 * 70 * 384


def test_absent_methods_count_zero_and_layer_mismatch_raises() -> None:
    empty = PeftConfig(num_layers=6, serial_adapters=[{"sizes": [0] * 6}],
                       prefix={"lengths": [0] * 6})
    count = count_parameters(empty, MINILM)
    assert (count.trainable, count.deployed, count.by_method) == (0, 0, {})
    with pytest.raises(ValueError, match="12 layers"):
        count_parameters(PeftConfig(num_layers=12), MINILM)

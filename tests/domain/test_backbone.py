import json

import pytest

from autopeft_service.domain import BackboneDims, ConfigError


def test_minilm_dimensions_from_its_config(minilm_path) -> None:
    config = json.loads((minilm_path / "config.json").read_text())
    dims = BackboneDims.from_hf_config(config)
    assert (dims.num_layers, dims.hidden_size, dims.num_heads, dims.ffn_size) == (6, 384, 12, 1536)
    assert dims.total_parameters == 22_713_216
    assert (dims.kv_size, dims.query_size, dims.layer_bias_parameters) == (384, 384, 7 * 384 + 1536)
    assert not dims.is_decoder and not dims.gated_ffn


def test_dimensions_stored_before_decoders_equal_fresh_ones(minilm_path) -> None:
    """Dims written before the decoder fields existed parse to the same value."""
    config = json.loads((minilm_path / "config.json").read_text())
    stored = {"num_layers": 6, "hidden_size": 384, "num_heads": 12, "ffn_size": 1536,
              "total_parameters": 22_713_216}
    assert BackboneDims.model_validate(stored) == BackboneDims.from_hf_config(config)


def test_llama_dimensions_with_grouped_query_attention() -> None:
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
              "vocab_size": 100}
    dims = BackboneDims.from_hf_config(config)
    assert (dims.head_dim, dims.kv_size, dims.query_size) == (8, 16, 64)
    assert dims.gated_ffn and dims.is_decoder and dims.layer_bias_parameters == 0
    layer = 64 * 64 + 2 * 64 * 16 + 64 * 64 + 3 * 64 * 96 + 2 * 64
    assert dims.total_parameters == 100 * 64 + 2 * layer + 64


def test_unknown_model_type_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match="model_type: 't5' is not supported"):
        BackboneDims.from_hf_config({"model_type": "t5"})
    with pytest.raises(ConfigError, match="config.hidden_size: missing"):
        BackboneDims.from_hf_config({"model_type": "bert"})
    with pytest.raises(ConfigError, match="config.n_embd: missing"):
        BackboneDims.from_hf_config({"model_type": "gpt2"})


def test_heads_must_divide() -> None:
    with pytest.raises(ValueError, match="num_kv_heads"):
        BackboneDims(num_layers=1, hidden_size=32, num_heads=4, num_kv_heads=3, ffn_size=8,
                     total_parameters=10)

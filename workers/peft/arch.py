"""Where attention and the FFN live in each supported architecture.

Adding an architecture is one ``ArchitectureMapping`` entry: dotted paths, relative to one
transformer layer, of the modules every PEFT method attaches to. Two layer styles exist:

* **post-norm** (BERT, RoBERTa): each sublayer ends in an output module ``dense`` ->
  ``dropout`` -> ``LayerNorm(h + input)``; adapters go inside it, before the residual and
  the LayerNorm (``sublayer.AdaptedSublayerOutput``).
* **pre-norm** (Llama family, GPT-2): ``h + sublayer(norm(h))`` with no norm after the
  sublayer; adapters wrap the sublayer module itself (``self_attn``/``mlp``, ``attn``/``mlp``),
  so a serial adapter follows ``o_proj``/``down_proj`` and a parallel one reads the normed
  input, both before the residual add (``sublayer.AdaptedPreNormSublayer``).

Projections are named by ``LoraTarget`` value. A fused projection (GPT-2's ``c_attn``,
``Conv1D`` computing q, k and v at once) is named with the part of its output a target is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from autopeft_service.domain.errors import ModelError


@dataclass(frozen=True)
class Projection:
    """One linear projection of a layer.

    Attributes:
        path: the module's path within a layer (an ``nn.Linear`` or a GPT-2 ``Conv1D``).
        part: for a fused projection, which of its ``parts`` equal output slices this is.
        parts: number of equal output slices of a fused projection (1: not fused).
    """

    path: str
    part: int = 0
    parts: int = 1

    def out_slice(self, width: int) -> tuple[int, int] | None:
        """``(start, end)`` of this part in the fused output, each part ``width`` wide;
        None when the projection is not fused (the whole output)."""
        return (self.part * width, (self.part + 1) * width) if self.parts > 1 else None


@dataclass(frozen=True)
class ArchitectureMapping:
    """Attribute paths of one architecture's transformer layers.

    Attributes:
        layers: path from the backbone to the list of layers.
        style: ``post_norm`` or ``pre_norm`` (see the module docstring).
        self_attention: path in a layer to the self-attention module (prefix tuning wraps it).
        prefix_kind: how that module computes attention: ``bert``, ``llama`` or ``gpt2``.
        attention_output: post-norm: the attention output module (dense, dropout,
            LayerNorm); pre-norm: the attention sublayer whose output meets the residual.
        ffn_output: the same for the FFN.
        ffn_intermediate: post-norm: the FFN's first projection + activation module, whose
            output (IA)^3 rescales. Pre-norm: unused (it rescales ``ffn_out``'s input).
        projections: ``LoraTarget`` value -> the projection.
    """

    layers: str = "encoder.layer"
    style: Literal["post_norm", "pre_norm"] = "post_norm"
    self_attention: str = "attention.self"
    prefix_kind: Literal["bert", "llama", "gpt2"] = "bert"
    attention_output: str = "attention.output"
    ffn_intermediate: str = "intermediate"
    ffn_output: str = "output"
    projections: dict[str, Projection] = field(default_factory=lambda: {
        "query": Projection("attention.self.query"),
        "key": Projection("attention.self.key"),
        "value": Projection("attention.self.value"),
        "attention_output": Projection("attention.output.dense"),
        "ffn_in": Projection("intermediate.dense"),
        "ffn_out": Projection("output.dense"),
    })

    @property
    def pre_norm(self) -> bool:
        """Whether sublayers are pre-norm (no norm after the residual add)."""
        return self.style == "pre_norm"

    def projection(self, target: str) -> Projection:
        """The projection named ``target`` (a ``LoraTarget`` value).

        Raises:
            ModelError: the architecture has no such projection (``ffn_gate`` on BERT).
        """
        if target not in self.projections:
            raise ModelError(f"{target}: this architecture has no such projection; it has "
                             f"{sorted(self.projections)}")
        return self.projections[target]

    def layer_modules(self, backbone: nn.Module) -> list[nn.Module]:
        """The backbone's transformer layers, in order."""
        layers = get_submodule(backbone, self.layers)
        if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
            raise TypeError(f"{self.layers}: {type(layers).__name__} is not a list of layers")
        return list(layers)


_LLAMA = ArchitectureMapping(
    layers="layers", style="pre_norm", self_attention="self_attn", prefix_kind="llama",
    attention_output="self_attn", ffn_intermediate="mlp", ffn_output="mlp",
    projections={
        "query": Projection("self_attn.q_proj"),
        "key": Projection("self_attn.k_proj"),
        "value": Projection("self_attn.v_proj"),
        "attention_output": Projection("self_attn.o_proj"),
        "ffn_in": Projection("mlp.up_proj"),
        "ffn_gate": Projection("mlp.gate_proj"),
        "ffn_out": Projection("mlp.down_proj"),
    })

_GPT2 = ArchitectureMapping(
    layers="h", style="pre_norm", self_attention="attn", prefix_kind="gpt2",
    attention_output="attn", ffn_intermediate="mlp", ffn_output="mlp",
    projections={
        "query": Projection("attn.c_attn", part=0, parts=3),
        "key": Projection("attn.c_attn", part=1, parts=3),
        "value": Projection("attn.c_attn", part=2, parts=3),
        "attention_output": Projection("attn.c_proj"),
        "ffn_in": Projection("mlp.c_fc"),
        "ffn_out": Projection("mlp.c_proj"),
    })

#: model_type -> mapping. BERT and RoBERTa share one post-norm layout in transformers 5.x;
#: Llama, Mistral, Qwen2 and Qwen3 one pre-norm layout.
ARCHITECTURES: dict[str, ArchitectureMapping] = {
    "bert": ArchitectureMapping(),
    "roberta": ArchitectureMapping(),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gpt2": _GPT2,
}


def mapping_for(backbone: nn.Module) -> ArchitectureMapping:
    """The mapping for a loaded HuggingFace backbone.

    Raises:
        ModelError: the model type has no mapping.
    """
    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelError(f"model_type {model_type!r} is not supported; known: "
                         f"{sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.a.b.c`` for path ``"a.b.c"``."""
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at ``path`` with ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(root, parent_path) if parent_path else root
    setattr(parent, name, module)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an ``nn.Linear`` or a GPT-2 ``Conv1D``, looking
    through PEFT wrappers (anything with a ``base``) to the projection inside.

    Raises:
        TypeError: neither.
    """
    while not isinstance(module, nn.Linear):
        inner = getattr(module, "base", None)
        if not isinstance(inner, nn.Module):
            break
        module = inner
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor):
        # transformers.pytorch_utils.Conv1D: weight (in, out), an nn.Parameter
        return int(weight.shape[0]), int(weight.shape[1])
    raise TypeError(f"{type(module).__name__} is not a linear projection")


def replace_part(out: torch.Tensor, out_slice: tuple[int, int],
                 part: torch.Tensor) -> torch.Tensor:
    """``out`` with its last dimension's ``[start, end)`` replaced by ``part`` (one part of a
    fused projection's output modified, the rest passed through)."""
    start, end = out_slice
    return torch.cat([out[..., :start], part, out[..., end:]], -1)

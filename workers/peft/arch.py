"""Where attention and FFN live in each supported architecture.

Adding an architecture is one ``ArchitectureMapping`` entry: the dotted paths, relative to
one transformer layer, of its self-attention module (with ``query``/``key``/``value``
linears), its two post-LN sublayer output modules (``dense`` -> ``dropout`` ->
``LayerNorm(h + input)``), and its FFN intermediate module (``dense`` + activation).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autopeft_service.domain.errors import ModelError


@dataclass(frozen=True)
class ArchitectureMapping:
    """Attribute paths of one architecture's encoder layers.

    Attributes:
        layers: path from the backbone to the list of layers.
        self_attention: path in a layer to the self-attention module (query/key/value).
        attention_output: path to the attention sublayer output (dense, dropout, LayerNorm).
        ffn_intermediate: path to the FFN's first projection + activation module.
        ffn_output: path to the FFN sublayer output (dense, dropout, LayerNorm).
    """

    layers: str = "encoder.layer"
    self_attention: str = "attention.self"
    attention_output: str = "attention.output"
    ffn_intermediate: str = "intermediate"
    ffn_output: str = "output"

    def layer_modules(self, backbone: nn.Module) -> list[nn.Module]:
        """The backbone's transformer layers, in order."""
        return list(get_submodule(backbone, self.layers))


#: model_type -> mapping. BERT and RoBERTa share one post-LN layout in transformers 5.x.
ARCHITECTURES: dict[str, ArchitectureMapping] = {
    "bert": ArchitectureMapping(),
    "roberta": ArchitectureMapping(),
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

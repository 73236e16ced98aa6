"""Search spaces as plug-ins: the contract (``base``), one module per family, this registry.

A new family is one module here (a ``SearchSpaceBase`` subclass with a ``kind`` literal and
a ``for_backbone`` constructor) plus its entry in ``FAMILIES`` and in ``SearchSpace``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.spaces.autopeft import AutoPeftSpace, default_sizes
from autopeft_service.domain.spaces.base import (
    MAX_CHOICES,
    MAX_LAYERS,
    MAX_SIZE,
    ParameterKind,
    ParamValue,
    Point,
    SearchParameter,
    SearchSpaceBase,
    layer_parameter,
    point_key,
)
from autopeft_service.domain.spaces.design_space import DesignSpace
from autopeft_service.domain.spaces.lora import LoraSpace
from autopeft_service.domain.spaces.unified import UnifiedSpace
from autopeft_service.domain.validation import DISCRIMINATOR_TAGS

#: kind -> family class.
FAMILIES: dict[str, type[SearchSpaceBase]] = {
    "autopeft": AutoPeftSpace, "unified": UnifiedSpace, "design_space": DesignSpace,
    "lora": LoraSpace}

DISCRIMINATOR_TAGS.update(FAMILIES)

#: Any search space, told apart by its ``kind``.
SearchSpace = Annotated[AutoPeftSpace | UnifiedSpace | DesignSpace | LoraSpace,
                        Field(discriminator="kind")]


def space_for_backbone(kind: str, dims: BackboneDims, **overrides: object) -> SearchSpaceBase:
    """The default space of family ``kind`` for a backbone.

    Raises:
        ConfigError: unknown kind, or an invalid override.
    """
    family = FAMILIES.get(kind)
    if family is None:
        raise ConfigError(f"search_space.kind: unknown family {kind!r}; known: "
                          f"{sorted(FAMILIES)}")
    return family.for_backbone(dims, **overrides)


__all__ = ["FAMILIES", "MAX_CHOICES", "MAX_LAYERS", "MAX_SIZE", "AutoPeftSpace",
           "DesignSpace", "LoraSpace", "ParamValue", "ParameterKind", "Point",
           "SearchParameter", "SearchSpace", "SearchSpaceBase", "UnifiedSpace",
           "default_sizes", "layer_parameter", "point_key", "space_for_backbone"]

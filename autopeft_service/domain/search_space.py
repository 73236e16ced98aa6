"""Where the AutoPEFT space used to live; it is now one family of ``domain.spaces``.

Kept so that imports of the old path keep working: new code imports from
``autopeft_service.domain.spaces``.
"""

from autopeft_service.domain.spaces import (
    MAX_CHOICES,
    MAX_LAYERS,
    MAX_SIZE,
    AutoPeftSpace,
    ParameterKind,
    SearchParameter,
    SearchSpace,
    default_sizes,
    layer_parameter,
    point_key,
)
from autopeft_service.domain.spaces.autopeft import (
    PARALLEL_ADAPTER_SIZE,
    PREFIX_LENGTH,
    SERIAL_ADAPTER_SIZE,
)

__all__ = ["MAX_CHOICES", "MAX_LAYERS", "MAX_SIZE", "PARALLEL_ADAPTER_SIZE", "PREFIX_LENGTH",
           "SERIAL_ADAPTER_SIZE", "AutoPeftSpace", "ParameterKind", "SearchParameter",
           "SearchSpace", "default_sizes", "layer_parameter", "point_key"]

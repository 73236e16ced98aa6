"""Pure domain types: configurations, search spaces, parameter counts. No torch, SQL or HTTP."""

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import (
    AutopeftError,
    ConfigError,
    DataError,
    ModelError,
    TrialError,
)
from autopeft_service.domain.param_count import ParameterCount, count_parameters
from autopeft_service.domain.peft_config import (
    BitFitConfig,
    IA3Config,
    IA3Target,
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)
from autopeft_service.domain.spaces import AutoPeftSpace, SearchParameter, SearchSpace

__all__ = [
    "AutoPeftSpace", "AutopeftError", "BackboneDims", "BitFitConfig", "ConfigError", "DataError",
    "IA3Config", "IA3Target", "LoraConfig", "LoraTarget", "ModelError", "ParallelAdapterConfig",
    "ParameterCount", "PeftConfig", "Position", "PrefixConfig", "SearchParameter", "SearchSpace",
    "SerialAdapterConfig", "TrialError", "count_parameters",
]

from autopeft_service.domain.trial import TrainingSettings, TrialResult  # noqa: E402

__all__ += ["TrainingSettings", "TrialResult"]

"""Choose an optimiser by name; implementations are imported only when chosen."""

from __future__ import annotations

from collections.abc import Callable

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import Optimizer


def _sobol(spec: StudySpec) -> Optimizer:
    from autopeft_service.optimizers.sobol import SobolOptimizer

    unknown = set(spec.optimizer.settings)
    if unknown:
        raise ConfigError(f"optimizer.settings: sobol takes no settings, got {sorted(unknown)}")
    return SobolOptimizer(spec.search_space.to_space(), seed=spec.optimizer.seed)


def _saasbo(spec: StudySpec) -> Optimizer:
    from autopeft_service.optimizers.saasbo import MAX_DIMENSION, SaasboOptimizer, SaasboSettings

    dimension = spec.search_space.dimension
    if dimension > MAX_DIMENSION:
        raise ConfigError(
            f"search_space.num_layers: saasbo models at most {MAX_DIMENSION} dimensions "
            f"(num_layers + 3), this space has {dimension}; a model pass that large would hold "
            "the proposer for minutes: use optimizer sobol or random, or fewer layers")
    return SaasboOptimizer(
        spec.search_space.to_space(), seed=spec.optimizer.seed,
        initial_trials=spec.budget.initial_trials,
        reference_point=(spec.reference_point.score, spec.reference_point.param_share),
        settings=SaasboSettings.from_mapping(spec.optimizer.settings))


#: name -> builder. ``random`` is the Sobol sequence too (the quasi-random baseline);
#: ``saasbo``: Sobol start, then a SAAS GP and qLogNEHVI (optimizers/saasbo.py).
OPTIMIZERS: dict[str, Callable[[StudySpec], Optimizer]] = {
    "sobol": _sobol, "random": _sobol, "saasbo": _saasbo}


def make_optimizer(spec: StudySpec) -> Optimizer:
    """The optimiser a study asks for.

    Raises:
        ConfigError: unknown name or bad settings (names ``optimizer.name`` / ``.settings``).
    """
    builder = OPTIMIZERS.get(spec.optimizer.name)
    if builder is None:
        raise ConfigError(f"optimizer.name: unknown optimiser {spec.optimizer.name!r}; known: "
                          f"{sorted(OPTIMIZERS)}")
    return builder(spec)

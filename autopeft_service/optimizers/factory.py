"""Choose an optimiser by name; implementations are imported only when chosen.

Every optimiser works on every space family (``domain.spaces``): they see only the
space's contract. A space/optimiser pair that cannot work (a space too large for the
model) is refused here, at submission, with a ``ConfigError`` naming the field (422).
"""

from __future__ import annotations

from collections.abc import Callable

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.share import share_percent
from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import Optimizer, Point


def _sobol(spec: StudySpec) -> Optimizer:
    from autopeft_service.optimizers.sobol import SobolOptimizer

    unknown = set(spec.optimizer.settings)
    if unknown:
        raise ConfigError(f"optimizer.settings: sobol takes no settings, got {sorted(unknown)}")
    return SobolOptimizer(spec.space, seed=spec.optimizer.seed)


def exact_share(spec: StudySpec) -> Callable[[Point], float] | None:
    """The study's share objective of a point, computed from its backbone dimensions
    (None for a study stored without them)."""
    dims, space, count = spec.backbone_dims, spec.space, spec.param_share
    if dims is None:
        return None
    return lambda point: share_percent(space.decode(point), dims, count)


def _saasbo(spec: StudySpec) -> Optimizer:
    from autopeft_service.optimizers.saasbo import (
        MAX_DIMENSION,
        Encoding,
        SaasboOptimizer,
        SaasboSettings,
    )

    space = spec.space
    dimension = Encoding(space).model_dimension
    if dimension > MAX_DIMENSION:
        raise ConfigError(
            f"search_space.{space.dimension_field}: saasbo models at most {MAX_DIMENSION} "
            f"input dimensions, this {space.kind} space has {dimension} (categorical "
            "parameters count one per category); a model pass that large would hold the "
            "proposer for minutes: use optimizer sobol or random, or a smaller space")
    return SaasboOptimizer(
        space, seed=spec.optimizer.seed, initial_trials=spec.budget.initial_trials,
        reference_point=(spec.reference_point.score, spec.reference_point.param_share),
        settings=SaasboSettings.from_mapping(spec.optimizer.settings),
        share=exact_share(spec))


#: name -> builder. ``random`` is the Sobol sequence too (the quasi-random baseline);
#: ``saasbo``: Sobol start, then a SAAS GP and qLogNEHVI (optimizers/saasbo/).
OPTIMIZERS: dict[str, Callable[[StudySpec], Optimizer]] = {
    "sobol": _sobol, "random": _sobol, "saasbo": _saasbo}


def _multi_fidelity(spec: StudySpec) -> Optimizer:
    """A fidelity study with rule ``model``: the multi-fidelity optimiser decides every
    proposal (new points and continuations) whatever ``optimizer.name`` says."""
    from autopeft_service.domain.pareto import ObjectivePoint
    from autopeft_service.optimizers.multi_fidelity import MultiFidelityOptimizer

    assert spec.fidelity is not None
    share = exact_share(spec) or (lambda _point: 0.0)
    return MultiFidelityOptimizer(spec.space, spec.fidelity, share, ObjectivePoint(
        score=spec.reference_point.score, share=spec.reference_point.param_share),
        seed=spec.optimizer.seed)


def make_optimizer(spec: StudySpec) -> Optimizer:
    """The optimiser a study asks for (a fidelity study with rule ``model``: the
    multi-fidelity optimiser).

    Raises:
        ConfigError: unknown name, bad settings, or a space the optimiser cannot take
            (names ``optimizer.name``, ``optimizer.settings`` or the space's field).
    """
    builder = OPTIMIZERS.get(spec.optimizer.name)
    if builder is None:
        raise ConfigError(f"optimizer.name: unknown optimiser {spec.optimizer.name!r}; known: "
                          f"{sorted(OPTIMIZERS)}")
    if spec.fidelity is not None and spec.fidelity.rule == "model":
        return _multi_fidelity(spec)
    return builder(spec)

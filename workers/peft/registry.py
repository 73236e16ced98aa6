"""Injectors: how each PEFT method is built into a backbone, registered by its module.

Each method module (``workers/peft/<method>.py``) decorates one function with
``@injector(field, order)``; ``apply_peft`` imports every module of this package and runs
the injectors in ``order``. Order matters because methods wrap modules: BitFit only flips
``requires_grad`` on existing biases (before anything is wrapped); LoRA and (IA)^3 wrap
linears; adapters wrap sublayer outputs; prefix tuning wraps the self-attention module
last (it calls the possibly wrapped query/key/value linears).

The methods themselves are registered once, in the domain (``domain.methods``); this is
the worker half of each. ``injectors`` refuses to run while a registered method has no
injector, so a method is never silently left out of the model.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.methods import methods

#: (backbone, architecture mapping, the PeftConfig field's value, dims) -> None
Inject = Callable[[nn.Module, Any, Any, BackboneDims], None]


@dataclass(frozen=True)
class Injector:
    """The builder of one ``PeftConfig`` field."""

    field: str
    order: int
    build: Inject


_INJECTORS: dict[str, Injector] = {}


def injector(field: str, order: int) -> Callable[[Inject], Inject]:
    """Register ``build`` as the injector of ``PeftConfig.<field>``, run at ``order``."""
    def register(build: Inject) -> Inject:
        if field in _INJECTORS and _INJECTORS[field].build is not build:
            raise RuntimeError(f"two injectors for PeftConfig.{field}")
        _INJECTORS[field] = Injector(field=field, order=order, build=build)
        return build

    return register


def injectors() -> list[Injector]:
    """Every registered injector, in build order (importing every method module first).

    Raises:
        RuntimeError: a method of the domain registry (``domain.methods.methods()``) has
            no injector: its module ``workers/peft/<method>.py`` is missing.
    """
    # The package's modules by folder and name: importing the package object here would
    # close a loop (workers.peft imports inject, which imports this module).
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")
    missing = [method.field for method in methods() if method.field not in _INJECTORS]
    if missing:
        raise RuntimeError(f"PeftConfig.{missing[0]}: a registered PEFT method has no "
                           "injector (add workers/peft/<method>.py with @injector)")
    return sorted(_INJECTORS.values(), key=lambda i: i.order)

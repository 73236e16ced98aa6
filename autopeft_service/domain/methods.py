"""PEFT methods, each described once (``MethodDescriptor``): where its configuration lives
in a ``PeftConfig``, how many parameters it trains and deploys, its per-layer entries, how
it reads, which search-space families may produce it, and whether (and as which peft form)
it exports to HuggingFace peft.

Everything that asks about methods walks this registry (``methods()``): ``PeftConfig``
(layer checks, ``has_modules``, ``describe``), ``count_parameters``, the search spaces'
``encode`` (``family_refusal``) and the peft export (``export_refusal``; the worker keeps
the tensor conversion per peft form). The worker's ``apply_peft`` walks its own registry
of injectors (``workers/peft/registry.py``), filled by each method's module.

A new method is three files (CONTRIBUTING.md, "Adding a PEFT method"):

1. ``domain/peft_config.py``: its config class and its ``PeftConfig`` field;
2. ``domain/methods.py``: its ``MethodDescriptor`` in ``METHODS`` (counts, description,
   ``families``, ``export``);
3. ``workers/peft/<method>.py``: its module with an ``@injector(field, order)``.

Spaces and export need no edit: a method no family lists is refused by every space's
``encode`` naming it, and a method without ``export`` is refused by the export naming it.
``register_method`` / ``registered`` add a method at run time (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.method_configs import IA3Target, LoraTarget

if TYPE_CHECKING:  # a type only: peft_config imports this module at run time
    from autopeft_service.domain.peft_config import PeftConfig

#: name -> (trainable, deployed) parameters of one method module (e.g. ``lora``).
Counts = dict[str, tuple[int, int]]

#: The search-space families (``domain.spaces.FAMILIES`` kinds) a descriptor may name.
AUTOPEFT, UNIFIED, DESIGN_SPACE, LORA = "autopeft", "unified", "design_space", "lora"

#: The export refusal of a descriptor that declares no peft form.
NO_PEFT_FORM = "no peft form declared for this method (MethodDescriptor.export)"


def _always_exportable(value: Any) -> str | None:
    """No condition: every configuration of the method has the peft form."""
    return None


@dataclass(frozen=True)
class PeftForm:
    """How a method exports to HuggingFace peft (the worker converts its tensors).

    Attributes:
        peft_type: peft's name of the form (its ``PeftType``: ``LORA``, ``IA3``,
            ``PREFIX_TUNING``); the worker's converter for it is keyed by this name.
        condition: why one configuration of the method has no peft form (one line, without
            the method's label), or None when it has one.
    """

    peft_type: str
    condition: Callable[[Any], str | None] = _always_exportable


@dataclass(frozen=True)
class MethodDescriptor:
    """One PEFT method as the domain sees it.

    Attributes:
        field: the ``PeftConfig`` attribute holding its configuration (an object, None, or
            a tuple of objects for methods that may appear more than once).
        label: its name in messages (``LoRA``, ``serial adapters``).
        summary: one line for humans (paper, form, position).
        per_layer: ``(path, entries)`` of every per-layer tuple in the configuration (the
            path relative to ``field``, e.g. ``0.sizes``), checked against ``num_layers``.
        present: whether the configuration builds a module somewhere.
        count: trainable and deployed parameters per reported name.
        describe: short readable parts, e.g. ``serial@ffn[64x6]``.
        families: the search-space families (kinds) whose points may hold it; every other
            family's ``encode`` refuses a configuration with it, naming it. Empty: none.
        export: its ``PeftForm``, or why peft cannot hold it (one line): the export refuses
            a configuration with it, naming it. The default refuses.
    """

    field: str
    label: str
    summary: str
    per_layer: Callable[[Any], list[tuple[str, tuple[Any, ...]]]]
    present: Callable[[Any], bool]
    count: Callable[[Any, BackboneDims], Counts]
    describe: Callable[[Any], list[str]]
    families: frozenset[str] = frozenset()
    export: PeftForm | str = NO_PEFT_FORM

    def value(self, config: PeftConfig) -> Any:
        """The method's configuration in ``config``; None where ``config``'s class has no
        such field (a method registered at run time for a subclass of ``PeftConfig``)."""
        return getattr(config, self.field, None)

    def is_present(self, config: PeftConfig) -> bool:
        """Whether ``config`` builds a module of this method somewhere."""
        return self.present(self.value(config))


def _items(value: Any) -> list[Any]:
    """The configuration objects of a field: none, one, or a tuple of them."""
    if value is None:
        return []
    return list(value) if isinstance(value, tuple) else [value]


def sizes_label(values: Iterable[int]) -> str:
    """``64x6`` (one size, six layers) or ``8/16x4`` (sizes differ across the four layers)."""
    used = [v for v in values if v]
    distinct = sorted(set(used))
    core = f"{distinct[0]}" if len(distinct) == 1 else "/".join(map(str, distinct))
    return f"{core}x{len(used)}"


def adapter_parameters(hidden: int, bottleneck: int) -> int:
    """Down (d x r + r) plus up (r x d + d) projection; 0 for an absent adapter."""
    return 0 if bottleneck == 0 else 2 * hidden * bottleneck + bottleneck + hidden


def prefix_mlp_parameters(hidden: int, width: int, kv_size: int | None = None) -> int:
    """The shared reparameterising MLP: d -> width -> 2 * kv (kv = d without grouped-query
    attention), with biases."""
    kv = hidden if kv_size is None else kv_size
    return hidden * width + width + width * 2 * kv + 2 * kv


def lora_target_shape(target: LoraTarget, dims: BackboneDims) -> tuple[int, int]:
    """(in_features, out_features) of the projection a LoRA target adapts.

    Raises:
        ConfigError: ``ffn_gate`` on a backbone whose FFN has no gate projection.
    """
    d, f = dims.hidden_size, dims.ffn_size
    if target is LoraTarget.FFN_GATE and not dims.gated_ffn:
        raise ConfigError(f"lora.targets: ffn_gate: the {dims.model_type} backbone's FFN has no "
                          "gate projection (only Llama-family FFNs do)")
    return {
        LoraTarget.QUERY: (d, dims.query_size),
        LoraTarget.KEY: (d, dims.kv_size),
        LoraTarget.VALUE: (d, dims.kv_size),
        LoraTarget.ATTENTION_OUTPUT: (dims.query_size, d),
        LoraTarget.FFN_IN: (d, f),
        LoraTarget.FFN_GATE: (d, f),
        LoraTarget.FFN_OUT: (f, d),
    }[target]


def ia3_target_width(target: IA3Target, dims: BackboneDims) -> int:
    """Elements of the (IA)^3 vector of ``target``: key/value width, or the FFN width."""
    return dims.ffn_size if target is IA3Target.FFN else dims.kv_size


# ----------------------------------------------------------------------------- counts


def _serial_count(adapters: Any, dims: BackboneDims) -> Counts:
    out = {}
    for a in _items(adapters):
        n = sum(adapter_parameters(dims.hidden_size, r) for r in a.sizes)
        out[f"serial_adapter@{a.position.value}"] = (n, n)
    return out


def _parallel_count(adapters: Any, dims: BackboneDims) -> Counts:
    out = {}
    for a in _items(adapters):
        n = sum(adapter_parameters(dims.hidden_size, r) + int(a.learned_scale)
                for r in a.sizes if r)
        out[f"parallel_adapter@{a.position.value}"] = (n, n)
    return out


def _prefix_count(prefix: Any, dims: BackboneDims) -> Counts:
    if prefix is None or not any(prefix.lengths):
        return {}
    # keys and values per token (the key/value heads' width: d, or less under grouped-query
    # attention): what remains after training. The reparameterising MLP maps a d-wide
    # embedding to both.
    tokens, d, kv = sum(prefix.lengths), dims.hidden_size, dims.kv_size
    deployed = 2 * tokens * kv
    trained = (tokens * d + prefix_mlp_parameters(d, prefix.mlp_width, kv)
               if prefix.reparameterize else deployed)
    return {"prefix": (trained, deployed)}


def _lora_count(modules: Any, dims: BackboneDims) -> Counts:
    total = 0
    for lora in _items(modules):
        per_rank = sum(sum(lora_target_shape(t, dims)) for t in lora.targets)
        total += per_rank * sum(lora.ranks)
    return {"lora": (total, total)} if modules else {}


def _bitfit_count(bitfit: Any, dims: BackboneDims) -> Counts:
    if bitfit is None or not any(bitfit.layers):
        return {}
    if not dims.layer_bias_parameters:
        raise ConfigError(f"bitfit: the {dims.model_type} backbone's layers have no bias terms, "
                          "so BitFit has nothing to train; choose another method")
    n = dims.layer_bias_parameters * sum(bitfit.layers)
    return {"bitfit": (n, n)}


def _ia3_count(ia3: Any, dims: BackboneDims) -> Counts:
    if ia3 is None:
        return {}
    n = sum(ia3_target_width(t, dims) for t in ia3.targets) * sum(ia3.layers)
    return {"ia3": (n, n)}


# ----------------------------------------------------------------------------- export


def _prefix_export(prefix: Any) -> str | None:
    """peft's prefix tuning has one length for every layer."""
    if len(set(prefix.lengths)) > 1:
        return (f"per-layer lengths {list(prefix.lengths)}: peft prefix tuning has one "
                "length for every layer")
    return None


def _lora_export(modules: Any) -> str | None:
    """peft holds one LoRA per projection."""
    seen: set[str] = set()
    for module in _items(modules):
        for target in module.targets:
            if target.value in seen:
                return f"two modules adapt {target.value}: peft holds one LoRA per projection"
            seen.add(target.value)
    return None


# ----------------------------------------------------------------------------- registry


def _indexed(attribute: str) -> Callable[[Any], list[tuple[str, tuple[Any, ...]]]]:
    """Per-layer entries of every object of a tuple-valued field (``0.sizes`` ...)."""
    return lambda value: [(f"{i}.{attribute}", getattr(item, attribute))
                          for i, item in enumerate(_items(value))]


def _single(attribute: str) -> Callable[[Any], list[tuple[str, tuple[Any, ...]]]]:
    return lambda value: [] if value is None else [(attribute, getattr(value, attribute))]


#: The built-in methods, in the order ``describe`` lists them (``methods()``: these and any
#: added by ``register_method``).
METHODS: tuple[MethodDescriptor, ...] = (
    MethodDescriptor(
        field="serial_adapters", label="serial adapters",
        summary="bottleneck adapter, sequential form, Houlsby placement",
        families=frozenset({AUTOPEFT, UNIFIED, DESIGN_SPACE}),
        export="bottleneck adapters have no peft form",
        per_layer=_indexed("sizes"),
        present=lambda v: any(any(a.sizes) for a in _items(v)), count=_serial_count,
        describe=lambda v: [f"serial@{a.position.value}[{sizes_label(a.sizes)}]"
                            for a in _items(v) if any(a.sizes)]),
    MethodDescriptor(
        field="parallel_adapters", label="parallel adapters",
        summary="He et al.'s scaled parallel adapter",
        families=frozenset({AUTOPEFT, UNIFIED}),
        export="bottleneck adapters have no peft form",
        per_layer=_indexed("sizes"),
        present=lambda v: any(any(a.sizes) for a in _items(v)), count=_parallel_count,
        describe=lambda v: [f"parallel@{a.position.value}[{sizes_label(a.sizes)}]"
                            for a in _items(v) if any(a.sizes)]),
    MethodDescriptor(
        field="prefix", label="prefix",
        summary="Li & Liang's prefix tuning, gated parallel form at attention",
        families=frozenset({AUTOPEFT, UNIFIED, DESIGN_SPACE}),
        export=PeftForm("PREFIX_TUNING", condition=_prefix_export),
        per_layer=_single("lengths"),
        present=lambda v: v is not None and any(v.lengths), count=_prefix_count,
        describe=lambda v: [f"prefix[{sizes_label(v.lengths)}]"]
        if v is not None and any(v.lengths) else []),
    MethodDescriptor(
        field="lora", label="LoRA",
        summary="Hu et al.'s LoRA, linear parallel form on projections",
        families=frozenset({UNIFIED, DESIGN_SPACE, LORA}),
        export=PeftForm("LORA", condition=_lora_export),
        per_layer=_indexed("ranks"),
        present=lambda v: any(any(m.ranks) for m in _items(v)), count=_lora_count,
        describe=lambda v: [
            f"lora[{sizes_label(m.ranks)}:{','.join(t.value for t in m.targets)}]"
            for m in _items(v) if any(m.ranks)]),
    MethodDescriptor(
        field="bitfit", label="BitFit",
        summary="Ben Zaken et al.'s BitFit: the layers' biases",
        families=frozenset({DESIGN_SPACE}),
        export="peft has no bias-only method",
        per_layer=_single("layers"),
        present=lambda v: v is not None and any(v.layers), count=_bitfit_count,
        describe=lambda v: [f"bitfit[{sum(v.layers)} layers]"]
        if v is not None and any(v.layers) else []),
    MethodDescriptor(
        field="ia3", label="(IA)^3",
        summary="Liu et al.'s (IA)^3: learned rescaling of keys, values, FFN",
        export=PeftForm("IA3"),
        per_layer=_single("layers"),
        present=lambda v: v is not None and any(v.layers), count=_ia3_count,
        describe=lambda v: [f"ia3[{sum(v.layers)} layers]"]
        if v is not None and any(v.layers) else []),
)


_REGISTRY: dict[str, MethodDescriptor] = {method.field: method for method in METHODS}


def methods() -> tuple[MethodDescriptor, ...]:
    """Every registered method: the built-in ones in ``METHODS`` order, then any added."""
    return tuple(_REGISTRY.values())


def register_method(descriptor: MethodDescriptor) -> None:
    """Add a method to the registry (after the built-in ones).

    Raises:
        ValueError: a method with the same ``field`` is registered.
    """
    if descriptor.field in _REGISTRY:
        raise ValueError(f"{descriptor.field}: a method is already registered for this field")
    _REGISTRY[descriptor.field] = descriptor


def unregister_method(field_name: str) -> MethodDescriptor:
    """Remove a method added by ``register_method`` and return it.

    Raises:
        ValueError: ``field_name`` is a built-in method (in ``METHODS``) or not registered.
    """
    if any(method.field == field_name for method in METHODS):
        raise ValueError(f"{field_name}: a built-in method cannot be unregistered")
    if field_name not in _REGISTRY:
        raise ValueError(f"{field_name}: no method is registered for this field")
    return _REGISTRY.pop(field_name)


@contextmanager
def registered(descriptor: MethodDescriptor) -> Iterator[MethodDescriptor]:
    """``descriptor`` registered inside the block, removed after it (even on error).

    Raises:
        ValueError: a method with the same ``field`` is registered.
    """
    register_method(descriptor)
    try:
        yield descriptor
    finally:
        unregister_method(descriptor.field)


def present_methods(config: PeftConfig) -> list[MethodDescriptor]:
    """The registered methods that build a module somewhere in ``config``, in registry order."""
    return [method for method in methods() if method.is_present(config)]


def family_refusal(config: PeftConfig, kind: str) -> str | None:
    """Why the search-space family ``kind`` cannot hold ``config``'s methods (one line
    naming the first method whose descriptor does not list ``kind``), or None."""
    if config.full_finetuning:
        return (f"full_finetuning: full fine-tuning is outside the {kind} space (a baseline, "
                "no search space produces it)")
    for method in present_methods(config):
        if kind not in method.families:
            users = (f"the {', '.join(sorted(method.families))} space(s) use it"
                     if method.families else "no search space uses it")
            return (f"{method.field}: config uses {method.label}, a method outside the {kind} "
                    f"space ({users})")
    return None


def check_family(config: PeftConfig, kind: str) -> None:
    """Pass when every method of ``config`` lists the family ``kind``.

    Raises:
        ConfigError: ``family_refusal``'s line.
    """
    reason = family_refusal(config, kind)
    if reason is not None:
        raise ConfigError(reason)


def export_refusal(config: PeftConfig) -> str | None:
    """Why HuggingFace peft cannot hold ``config`` (one line naming the part), or None.

    Read from the descriptors: a present method whose ``export`` is a reason is refused by
    its label; peft holds one method per adapter, so a mixture is refused; the one method
    left is refused when its ``PeftForm.condition`` says so.
    """
    if config.full_finetuning:
        return ("full fine-tuning: not an adapter (every backbone weight changed); use the "
                "artefact's weights directly")
    present = present_methods(config)
    for method in present:
        if isinstance(method.export, str):
            return f"{method.label}: {method.export}"
    if not present:
        return ("no PEFT module (head only): nothing for peft to hold; the head is in the "
                "artefact")
    if len(present) > 1:
        labels = sorted((method.label for method in present), key=str.lower)
        return (f"a mixture ({' + '.join(labels)}): peft holds one method per adapter; "
                "export a configuration with one method")
    return _condition_refusal(present[0], config)


def _condition_refusal(method: MethodDescriptor, config: PeftConfig) -> str | None:
    """The refusal of an exportable method's condition, labelled, or None."""
    assert isinstance(method.export, PeftForm)
    problem = method.export.condition(method.value(config))
    return None if problem is None else f"{method.label}: {problem}"


def export_method(config: PeftConfig) -> tuple[MethodDescriptor, PeftForm]:
    """The one method (and its peft form) an exportable ``config`` holds.

    Raises:
        ConfigError: ``export_refusal(config)`` is not None (its line).
    """
    reason = export_refusal(config)
    if reason is not None:
        raise ConfigError(reason)
    method = present_methods(config)[0]
    assert isinstance(method.export, PeftForm)
    return method, method.export


def method_counts(config: PeftConfig, dims: BackboneDims) -> Counts:
    """Trainable and deployed parameters of every method module of ``config``."""
    out: Counts = {}
    for method in methods():
        for name, (trainable, deployed) in method.count(method.value(config), dims).items():
            before = out.get(name, (0, 0))
            out[name] = (before[0] + trainable, before[1] + deployed)
    return out

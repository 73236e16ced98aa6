"""Turn pydantic validation errors into one readable ConfigError.

pydantic already validates and locates each error; this only formats its
`errors()` list as ``field.path: reason`` lines so callers get one message.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError, model_validator

from autopeft_service.domain.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


class FieldError(ValueError):
    """Raised by a model-level validator to blame one field (dotted path) of the model.

    pydantic locates model-level errors at the model's root; ``format_validation_error``
    uses ``field`` instead, so the message names the field that is wrong.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


#: Tags of discriminated unions (search-space kinds): pydantic puts the tag in an error's
#: location (``search_space.unified.ffn_sizes``); messages leave it out.
DISCRIMINATOR_TAGS: set[str] = set()


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "__root__"]
    kept = [p for i, p in enumerate(parts)
            if not (i and parts[i - 1] == "search_space" and p in DISCRIMINATOR_TAGS)]
    return ".".join(kept)


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """Format a pydantic ValidationError as ``path: reason`` joined by ``; ``.

    Args:
        error: the error pydantic raised.
        prefix: a dotted path prepended to each location (e.g. ``"spec"``).

    Returns:
        One line naming every invalid field and why.
    """
    parts = []
    for item in error.errors():
        loc = _location(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            loc = ".".join(p for p in (loc, cause.field) if p)
            message = str(cause)
        path = ".".join(p for p in (prefix, loc) if p) or "(root)"
        parts.append(f"{path}: {message}")
    return "; ".join(parts)


def parse_model(model: type[ModelT], data: Any, prefix: str = "") -> ModelT:
    """Validate ``data`` (a mapping) as ``model``; raise ConfigError naming the fields.

    Raises:
        ConfigError: when validation fails.
    """
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix)) from None


def parse_model_with(adapter: Any, data: Any, prefix: str = "") -> Any:
    """Validate ``data`` with a pydantic ``TypeAdapter``; raise ConfigError naming the fields.

    Raises:
        ConfigError: when validation fails.
    """
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix)) from None


def parse_model_json(model: type[ModelT], text: str | bytes, prefix: str = "") -> ModelT:
    """Validate a JSON document as ``model``; raise ConfigError naming the fields.

    Raises:
        ConfigError: when the JSON is malformed or validation fails.
    """
    try:
        return model.model_validate_json(text)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix)) from None


#: Deepest nesting of free-form JSON (task options, optimiser settings, progress) accepted.
MAX_JSON_DEPTH = 16


def find_unstorable(value: Any, path: str = "") -> FieldError | None:
    """The first value that JSON columns on both databases cannot store, or None.

    JSON has no NaN or infinity (SQLite would store invalid JSON, PostgreSQL refuses it),
    and PostgreSQL text cannot hold a NUL character. Walks dicts (keys and values), lists
    and tuples; nesting deeper than ``MAX_JSON_DEPTH`` is refused as well.

    Args:
        value: a decoded JSON value (or a model's raw input).
        path: the dotted location of ``value`` (for the error).

    Returns:
        A FieldError naming the location and the reason, or None when all is storable.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return FieldError(where or "(root)", f"must be a finite number, got {item!r}")
        elif isinstance(item, str):
            if "\x00" in item:
                return FieldError(where or "(root)", "must not contain a NUL character")
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                return FieldError(where or "(root)",
                                  f"nested deeper than {MAX_JSON_DEPTH} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return FieldError(where or "(root)", "a key contains a NUL character")
                stack.append((child, child_path, depth + 1))
    return None


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (how it is stored and sent)."""
    import json

    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


JsonT = TypeVar("JsonT")


def bounded_json(value: JsonT, max_bytes: int) -> JsonT:
    """``value`` unchanged when it is storable and at most ``max_bytes`` as JSON (for a
    field validator: pydantic locates the error at the field).

    Raises:
        FieldError: a non-finite number or NUL character, located inside the value.
        ValueError: the value is larger than ``max_bytes`` as JSON.
    """
    problem = find_unstorable(value)
    if problem is not None:
        raise problem
    size = json_size(value)
    if size > max_bytes:
        raise ValueError(f"is {size} bytes as JSON; at most {max_bytes} are accepted")
    return value


class StorableInput(BaseModel):
    """Base of pydantic models that are request bodies: before any field is validated,
    refuse non-finite numbers, NUL characters and over-deep nesting anywhere in the input,
    naming where (422 ``loc``: the field's path)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unstorable(cls, data: Any) -> Any:
        problem = find_unstorable(data)
        if problem is not None:
            raise problem
        return data

"""Turn pydantic validation errors into one readable ConfigError.

pydantic already validates and locates each error; this only formats its
`errors()` list as ``field.path: reason`` lines so callers get one message.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

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
        loc = ".".join(str(p) for p in item["loc"] if p != "__root__")
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


def parse_model_json(model: type[ModelT], text: str | bytes, prefix: str = "") -> ModelT:
    """Validate a JSON document as ``model``; raise ConfigError naming the fields.

    Raises:
        ConfigError: when the JSON is malformed or validation fails.
    """
    try:
        return model.model_validate_json(text)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix)) from None

"""The project's exception hierarchy: one root, one subclass per kind of failure.

Every error a user can cause carries a message that names the offending field and
says why it is wrong, so the CLI can print it as one line and the API as a 4xx.
"""


class AutopeftError(Exception):
    """Root of every error raised on purpose by autopeft."""


class ConfigError(AutopeftError, ValueError):
    """A configuration, specification or argument is invalid.

    The message names the field (dotted path) and the reason.
    """


class DataError(AutopeftError, ValueError):
    """A data file or task specification cannot be read as asked."""


class ModelError(AutopeftError, ValueError):
    """A backbone cannot be loaded or does not fit the configuration."""


class TrialError(AutopeftError, RuntimeError):
    """A trial failed while training or evaluating (NaN loss, out of memory, ...)."""

"""Check a ``--device`` before any work starts.

A worker on a device that this machine lacks would lease trials and fail every one of them
("Torch not compiled with CUDA enabled"); it must refuse to start instead. torch's own
errors for a malformed name are tracebacks, so the names are checked here first.
"""

from __future__ import annotations

import re

from autopeft_service.domain.errors import ConfigError

__all__ = ["check_device", "check_device_name"]

#: Device types a trial can train on, with an optional index (``cuda:1``).
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(?::(\d{1,4}))?$")


def check_device_name(name: str) -> tuple[str, int | None]:
    """Parse a device name without importing torch (cheap: run it before connecting).

    Args:
        name: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu[:N]``.

    Returns:
        ``(type, index)``; index is None when not given.

    Raises:
        ConfigError: not such a name (the message lists the forms).
    """
    match = _DEVICE.match(name.strip().lower())
    if match is None:
        raise ConfigError(f"--device: {name!r} is not a device; use cpu, cuda, cuda:N, mps "
                          "or xpu")
    kind, index = match.group(1), match.group(2)
    return kind, None if index is None else int(index)


def check_device(name: str) -> str:
    """Check that this machine has the device, so that no trial is leased to fail on it.

    Args:
        name: the ``--device`` value.

    Returns:
        The canonical device string (``cuda:0``, ``cpu``).

    Raises:
        ConfigError: a malformed name, a device type this torch build or machine lacks, or
            an index beyond the devices present.
    """
    kind, index = check_device_name(name)
    if kind == "cpu":
        return "cpu"
    available, count, why = _availability(kind)
    if not available:
        raise ConfigError(f"--device {name}: this machine has no {kind} device ({why})")
    if index is not None and index >= count:
        raise ConfigError(f"--device {name}: this machine has {count} {kind} device(s), "
                          f"numbered from 0")
    return kind if index is None else f"{kind}:{index}"


def _availability(kind: str) -> tuple[bool, int, str]:
    """Whether torch can use ``kind`` here, how many devices, and why not."""
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None
            return False, 0, ("no GPU visible to CUDA" if built
                              else "this torch build has no CUDA support")
        return True, torch.cuda.device_count(), ""
    if kind == "mps":
        available = torch.backends.mps.is_available()
        return available, int(available), "MPS is only on Apple silicon"
    available = torch.xpu.is_available()
    return available, torch.xpu.device_count() if available else 0, "no Intel GPU visible"

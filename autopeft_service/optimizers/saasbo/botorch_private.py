"""Every access to BoTorch's private attributes, behind one version check.

The proposer's speed-ups (``acquisition.SingleCandidateNehvi``, the fused kernel loader in
``optimizers.fused_kernel``) read attributes that BoTorch does not promise to keep:
the baseline points and the cached Cholesky root of qLogNEHVI, the fused C++ kernel
module of ``logei`` and its loader flag, and the internal log-qEHVI computation. They were
written against ``TESTED_VERSION``; another installed version makes ``check_version``
raise, so the proposer records a clear failure instead of computing something else
silently (the tests pin the values to BoTorch's own ``acquisition(X)`` to 1e-6).
"""

from __future__ import annotations

from typing import Any

from autopeft_service.optimizers.base import OptimizerError

#: The BoTorch release these accessors were written and tested against (pyproject pins it).
TESTED_VERSION = "0.18.1"

_checked = False


def check_version() -> None:
    """Raise unless the installed BoTorch is ``TESTED_VERSION``.

    Raises:
        OptimizerError: another BoTorch version is installed.
    """
    global _checked
    if _checked:
        return
    import botorch

    if botorch.__version__ != TESTED_VERSION:
        raise OptimizerError(
            f"saasbo: BoTorch {botorch.__version__} is installed; the proposer reads BoTorch "
            f"internals written for {TESTED_VERSION} (optimizers/saasbo/botorch_private.py): "
            f"install botorch=={TESTED_VERSION} or check those accessors against the new "
            "release")
    _checked = True


def baseline_points(acquisition: Any) -> Any:
    """The (pruned) baseline points of a qLogNEHVI: ``nB x D``."""
    check_version()
    return acquisition._X_baseline


def baseline_cholesky(acquisition: Any) -> Any:
    """The cached Cholesky root of the baseline posterior (``cache_root=True``)."""
    check_version()
    return acquisition._baseline_L


def compute_log_qehvi(acquisition: Any, samples: Any, X: Any) -> Any:
    """BoTorch's log-qEHVI of posterior ``samples`` at ``X`` (its general path)."""
    check_version()
    return acquisition._compute_log_qehvi(samples=samples, X=X)


def fused_kernel() -> Any | None:
    """BoTorch's fused log-area kernel module, or None when it is not loaded."""
    check_version()
    from botorch.acquisition.multi_objective import logei

    return logei._C


def fused_log_areas() -> Any:
    """The autograd function that calls the fused kernel (``logei._FusedLogAreas``)."""
    check_version()
    from botorch.acquisition.multi_objective import logei

    return logei._FusedLogAreas


def kernel_load_attempted() -> bool:
    """Whether BoTorch already tried to load (or build) its fused kernel."""
    check_version()
    from botorch.acquisition.multi_objective import logei

    return bool(logei._load_attempted)


def install_fused_kernel(module: Any | None) -> None:
    """Mark the kernel load as done and install ``module`` (None: BoTorch's Python path), so
    that BoTorch never compiles it itself behind a lock file."""
    check_version()
    from botorch.acquisition.multi_objective import logei

    logei._load_attempted = True
    if module is not None:
        logei._C = module

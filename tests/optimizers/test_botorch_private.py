"""BoTorch internals are read only under the BoTorch version they were written for."""

import botorch
import pytest

from autopeft_service.optimizers.base import OptimizerError
from autopeft_service.optimizers.saasbo import botorch_private


def test_the_pinned_botorch_passes_and_another_version_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    botorch_private.check_version()  # the installed, pinned release
    monkeypatch.setattr(botorch_private, "_checked", False)
    monkeypatch.setattr(botorch, "__version__", "0.99.0")
    with pytest.raises(OptimizerError, match=r"BoTorch 0\.99\.0 is installed.*0\.18\.1"):
        botorch_private.check_version()
    with pytest.raises(OptimizerError):
        botorch_private.fused_kernel()

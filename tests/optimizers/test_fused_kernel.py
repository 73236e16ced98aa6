"""The fused qLogNEHVI kernel is loaded when built and never compiled or waited for."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch.utils.cpp_extension
from botorch.acquisition.multi_objective import logei

from autopeft_service.optimizers import fused_kernel


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """BoTorch's loader state reset (restored afterwards), an empty extensions folder, and
    torch's compiler entry point replaced by one that fails the test."""
    monkeypatch.setattr(logei, "_load_attempted", False)
    monkeypatch.setattr(logei, "_C", None)

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("the kernel must not be compiled at run time")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiling)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    return tmp_path / fused_kernel.EXTENSION


def _call_with_deadline(seconds: float) -> bool:
    box: dict[str, bool] = {}
    thread = threading.Thread(target=lambda: box.setdefault("used", fused_kernel.use_prebuilt()),
                              daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "use_prebuilt() blocked"
    return box["used"]


def test_a_stale_lock_and_no_library_fall_back_at_once(fresh_loader: Path) -> None:
    fresh_loader.mkdir(parents=True, exist_ok=True)
    (fresh_loader / "lock").touch()  # left by a process killed while compiling
    assert _call_with_deadline(10) is False
    assert logei._load_attempted is True and logei._C is None  # BoTorch will not try again


def test_a_built_library_is_loaded_despite_a_stale_lock(fresh_loader: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    built = fused_kernel.build_directory() / f"{fused_kernel.EXTENSION}.so"
    assert built.is_file(), "`make install` builds the kernel (python -m ...fused_kernel)"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(fresh_loader.parent))
    fresh_loader.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, fresh_loader / built.name)
    (fresh_loader / "lock").touch()
    assert _call_with_deadline(10) is True
    assert hasattr(logei._C, "forward") and hasattr(logei._C, "backward")
    assert fused_kernel.use_prebuilt() is True  # idempotent

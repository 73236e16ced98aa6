"""BoTorch's fused qLogNEHVI kernel: built once at install time, never inside a server.

BoTorch 0.18 compiles a small C++ extension (``logei_fused_ext``, the log cell areas of
qLogNEHVI, about 5x faster than its Python path here) the first time an acquisition
function is built, with ``torch.utils.cpp_extension.load``. That call guards the shared
build folder with a lock *file* and every other process waits, without a time limit, for
the file to disappear. A process killed while it holds the lock (a server SIGKILLed while
it proposes; a test timed out) leaves the file behind and every later proposal on the
machine hangs; two checkouts with different virtualenvs rebuild the same folder in turn.
We saw both on this machine. So:

* ``build()`` compiles the extension exactly as BoTorch would (``make install`` and the
  Dockerfile run ``python -m autopeft_service.optimizers.fused_kernel``);
* ``use_prebuilt()`` (called before every acquisition function is made) marks BoTorch's
  loader as done, so it never compiles or waits on a lock, and imports the built library
  directly when it is there; without it, BoTorch's Python path is used (same values,
  slower) and a warning says how to build it.

Written by hand because neither BoTorch nor torch offers "load if built, never build".
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

EXTENSION = "logei_fused_ext"


def build_directory() -> Path:
    """The folder torch builds the extension in (``TORCH_EXTENSIONS_DIR`` or the user cache)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(EXTENSION, verbose=False))


def _source() -> Path:
    import botorch

    return Path(botorch.__file__).parent / "csrc" / "logei_fused.cpp"


def build() -> Path:
    """Compile the extension (BoTorch's source and flags). Returns the library's path.

    Raises:
        RuntimeError: no compiler or ``ninja``, or the build failed.
    """
    from torch.utils.cpp_extension import load

    load(name=EXTENSION, sources=[str(_source())], extra_cflags=["-O3", "-march=native"],
         verbose=False)
    return build_directory() / f"{EXTENSION}.so"


def use_prebuilt() -> bool:
    """Make BoTorch use the built kernel if there is one, and never build it.

    Returns:
        True when the fused kernel is in use.
    """
    from autopeft_service.optimizers.saasbo import botorch_private

    if botorch_private.kernel_load_attempted():
        return botorch_private.fused_kernel() is not None
    # BoTorch's own loader would compile and wait on a lock: mark it done.
    botorch_private.install_fused_kernel(None)
    library = build_directory() / f"{EXTENSION}.so"
    if not library.is_file():
        logger.warning("the fused qLogNEHVI kernel is not built (%s): using BoTorch's slower "
                       "Python path; build it with `python -m %s`", library, __name__)
        return False
    try:
        spec = importlib.util.spec_from_file_location(EXTENSION, library)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as error:
        logger.warning("the fused qLogNEHVI kernel at %s does not load (%s): using BoTorch's "
                       "Python path", library, error)
        return False
    sys.modules.setdefault(EXTENSION, module)
    botorch_private.install_fused_kernel(module)
    return True


def main() -> int:
    """Build the kernel; never fails the install (BoTorch's Python path still works)."""
    try:
        path = build()
    except Exception as error:  # noqa: BLE001 - any build failure only costs speed
        print(f"fused qLogNEHVI kernel not built ({error}); BoTorch's Python path will be "
              "used (slower proposals)")
        return 0
    print(f"fused qLogNEHVI kernel built: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

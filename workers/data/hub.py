"""Tasks from the HuggingFace hub via ``datasets.load_dataset(name, config)``.

Splits: ``train`` and the first present of ``validation``, ``validation_matched``,
``dev``, ``valid``. Columns are chosen as for files (:mod:`workers.data.tabular`); a
``ClassLabel`` label column keeps the dataset's own label order.

Failing fast without the network: ``datasets`` retries an unreachable hub for about half
a minute. So when offline mode is asked for (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``
set, read at call time) only the local cache is used, and otherwise the hub endpoint
(``HF_ENDPOINT`` or huggingface.co) is probed first with a short TCP connect
(``AUTOPEFT_HUB_TIMEOUT`` seconds, default 5); an unreachable hub is a :class:`DataError`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from autopeft_service.domain.errors import DataError
from workers.data.tabular import RawSplit, build_task
from workers.data.task import TaskData, TaskType

__all__ = ["DEV_SPLITS", "hub_endpoint", "hub_offline_requested", "load_hub"]

DEV_SPLITS = ("validation", "validation_matched", "dev", "valid")
DEFAULT_HUB_TIMEOUT_S = 5.0
_TRUE = {"1", "on", "yes", "true"}


def hub_offline_requested() -> bool:
    """Whether offline mode is asked for, by environment (read now) or by the hub library."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    with contextlib.suppress(Exception):
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return False


def hub_endpoint() -> str:
    """The hub URL in use: ``HF_ENDPOINT`` (read now) or the hub library's default."""
    endpoint = os.environ.get("HF_ENDPOINT")
    if not endpoint:
        try:
            from huggingface_hub import constants

            endpoint = constants.ENDPOINT
        except ImportError:  # pragma: no cover - huggingface_hub is a dependency of datasets
            endpoint = "https://huggingface.co"
    return endpoint.rstrip("/")


def _probe(endpoint: str, timeout: float) -> str | None:
    """Try a TCP connection to the endpoint; return why it failed, or None if it worked."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return f"endpoint {endpoint!r} has no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    # Name resolution ignores socket timeouts, so bound the whole attempt with a thread.
    thread = threading.Thread(target=connect, name="autopeft-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


@contextlib.contextmanager
def _offline_libraries() -> Iterator[None]:
    """Put huggingface_hub and datasets in offline mode for the duration of the block.

    Both read ``HF_HUB_OFFLINE`` once at import, so an environment variable set later
    would otherwise be ignored and every request retried against the network.
    """
    from datasets import config as ds_config
    from huggingface_hub import constants as hub_constants

    saved = (hub_constants.HF_HUB_OFFLINE, ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE)
    hub_constants.HF_HUB_OFFLINE = True
    ds_config.HF_HUB_OFFLINE = True
    ds_config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        (hub_constants.HF_HUB_OFFLINE, ds_config.HF_HUB_OFFLINE,
         ds_config.HF_DATASETS_OFFLINE) = saved


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _split(dataset: Any, split: str, described: str) -> RawSplit:
    columns = tuple(dataset.column_names)
    rows = ((i, record) for i, record in enumerate(dataset))
    return RawSplit(f"{described} split {split!r}", "row", columns, rows)


def load_hub(
    name: str,
    config: str | None = None,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    task_type: str | TaskType | None = None,
    timeout: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TaskData:
    """Load a task from a HuggingFace hub dataset.

    Args:
        name: Dataset name on the hub (``"nyu-mll/glue"``, ``"imdb"``).
        config: Configuration name (``"rte"``), or ``None``.
        text_columns: One or two text columns (``None``: guessed).
        label_column: The label column (``None``: ``"label"``).
        task_type: ``"classification"`` (default) or ``"regression"``.
        timeout: Seconds to wait for the hub to answer the reachability probe (``None``:
            ``AUTOPEFT_HUB_TIMEOUT`` or 5).
        cache_dir: Where ``datasets`` caches the data (``None``: its default,
            ``HF_DATASETS_CACHE``).

    Returns:
        The task, named ``"hf:<name>"`` or ``"hf:<name>/<config>"``.

    Raises:
        DataError: If the hub is unreachable (and the dataset not cached in offline mode),
            the dataset or config does not exist, it lacks a train or dev split, or its
            columns and labels do not fit (see :mod:`workers.data.tabular`).
    """
    described = f"hub dataset {name!r}" + (f" (config {config!r})" if config else "")
    offline = hub_offline_requested()
    if not offline:
        if timeout is None:
            try:
                timeout = float(os.environ.get("AUTOPEFT_HUB_TIMEOUT", DEFAULT_HUB_TIMEOUT_S))
            except ValueError:
                raise DataError(
                    "AUTOPEFT_HUB_TIMEOUT: must be a number of seconds, got "
                    f"{os.environ['AUTOPEFT_HUB_TIMEOUT']!r}"
                ) from None
        endpoint = hub_endpoint()
        failure = _probe(endpoint, timeout)
        if failure is not None:
            raise DataError(
                f"{described}: cannot reach the HuggingFace hub at {endpoint} ({failure}); "
                "set HF_HUB_OFFLINE=1 to use a locally cached copy"
            )
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{described}: the 'datasets' package is not installed") from exc

    guard = _offline_libraries() if offline else contextlib.nullcontext()
    try:
        with guard:
            loaded = datasets.load_dataset(
                name, config, cache_dir=str(cache_dir) if cache_dir else None
            )
    except Exception as exc:  # any failure of the library is a data problem here
        where = "in the local cache (offline mode)" if offline else "on the hub"
        raise DataError(f"{described}: cannot load it {where}: {_one_line(exc)}") from exc

    splits = list(loaded.keys())
    if "train" not in loaded:
        raise DataError(f"{described}: no 'train' split; splits are {splits}")
    dev_name = next((s for s in DEV_SPLITS if s in loaded), None)
    if dev_name is None:
        raise DataError(
            f"{described}: no dev split (looked for {', '.join(DEV_SPLITS)}); splits are {splits}"
        )
    label = label_column or "label"
    label_names = None
    feature = loaded["train"].features.get(label)
    if isinstance(feature, datasets.ClassLabel):
        label_names = tuple(feature.names)
    return build_task(
        f"hf:{name}" + (f"/{config}" if config else ""),
        _split(loaded["train"], "train", described),
        _split(loaded[dev_name], dev_name, described),
        text_columns=text_columns,
        label_column=label_column,
        task_type=task_type,
        label_names=label_names,
    )

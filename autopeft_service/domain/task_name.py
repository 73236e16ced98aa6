"""The grammar of task strings (``glue:sst2``, ``csv:DIR``, ``hf:owner/name:config``, ...).

One home for what a task string may say, so that the server refuses a misspelt task when a
study is submitted (422 on ``task``) instead of letting every worker fail it later, and the
workers' loaders (``workers.data.load``) parse the same grammar. Only the syntax and the
names are checked here: whether a folder or a hub dataset exists is for the workers to say,
since they see other file systems than the server.

========================  ===========================================================
``glue:<name>``           a GLUE task (``glue:rte``, ``glue:SST-2``)
``synthetic``             the generated sentiment task
``csv:<dir>``             ``<dir>/train.csv`` + ``<dir>/dev.csv``
``jsonl:<dir>``           ``<dir>/train.jsonl`` + ``<dir>/dev.jsonl``
``lm:<dir>``              causal LM prompt/response JSONL (decoders)
``synthetic-lm``          the generated causal-LM task
``hf:<name>``             a HuggingFace hub dataset (``hf:imdb``)
``hf:<name>/<config>``    with a configuration (``hf:glue/rte``); namespaced:
                          ``hf:<owner>/<name>/<config>`` or ``hf:<owner>/<name>:<config>``
========================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autopeft_service.domain.errors import DataError

__all__ = ["GLUE_TASK_NAMES", "TASK_FORMS", "TaskName", "canonical_glue_name",
           "parse_hub_name", "parse_task"]

TaskKind = Literal["glue", "synthetic", "csv", "jsonl", "lm", "synthetic-lm", "hf"]

TASK_FORMS = (
    "glue:<name>",
    "synthetic",
    "csv:<dir>",
    "jsonl:<dir>",
    "hf:<name>",
    "hf:<name>/<config>",
    "lm:<dir>",
    "synthetic-lm",
)

#: Canonical names of the GLUE tasks (``workers.data.glue`` holds how each is read).
GLUE_TASK_NAMES = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte",
                   "wnli")

# Extra spellings, compared after lower-casing and removing "-", "_" and spaces.
_GLUE_ALIASES = {
    "mnlim": "mnli",
    "mnlimatched": "mnli",
    "mnlimm": "mnli-mm",
    "mnlimismatched": "mnli-mm",
    "sst": "sst2",
    "sts": "stsb",
}


#: Forms without an argument, and forms whose argument is a folder.
_PLAIN: dict[str, TaskKind] = {"synthetic": "synthetic", "synthetic-lm": "synthetic-lm"}
_FOLDER: dict[str, TaskKind] = {"csv": "csv", "jsonl": "jsonl", "lm": "lm"}


@dataclass(frozen=True)
class TaskName:
    """A parsed task string.

    Attributes:
        kind: the form (``glue``, ``csv``, ``hf``, ...).
        argument: what follows the colon, stripped (a GLUE name made canonical; a folder;
            a hub name); empty for ``synthetic`` and ``synthetic-lm``.
    """

    kind: TaskKind
    argument: str = ""


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def canonical_glue_name(name: str) -> str:
    """The canonical GLUE name of ``name``, case-insensitively and with common spellings
    (``SST-2``, ``sst_2`` -> ``sst2``; ``sts-b`` -> ``stsb``; ``mnli-m`` -> ``mnli``).

    Raises:
        DataError: not a GLUE task (the message lists the known ones).
    """
    key = _normalise(name)
    by_key = {_normalise(known): known for known in GLUE_TASK_NAMES}
    canonical = by_key.get(key) or _GLUE_ALIASES.get(key)
    if canonical is None:
        raise DataError(f"unknown GLUE task {name!r}; known tasks: {', '.join(GLUE_TASK_NAMES)}")
    return canonical


def parse_hub_name(spec: str) -> tuple[str, str | None]:
    """Split the part after ``hf:`` into dataset name and configuration.

    Args:
        spec: ``name``, ``name/config``, ``owner/name/config`` or ``owner/name:config``.

    Returns:
        ``(name, config)``; ``config`` is ``None`` when absent or empty.

    Raises:
        DataError: If the name is empty or has more than three ``/``-separated parts.
    """
    if ":" in spec:
        name, _, config = spec.partition(":")
    else:
        parts = spec.split("/")
        if len(parts) > 3:
            raise DataError(
                f"task 'hf:{spec}': expected hf:<name>, hf:<name>/<config> or "
                "hf:<owner>/<name>/<config>"
            )
        name, config = ("/".join(parts[:-1]), parts[-1]) if len(parts) > 1 else (spec, "")
    name, config = name.strip(), config.strip()
    if not name or "" in name.split("/"):
        raise DataError(f"task 'hf:{spec}': the dataset name is empty")
    return name, config or None


def parse_task(task: str) -> TaskName:
    """Parse a task string (see the module docstring for the forms).

    Args:
        task: the task string.

    Returns:
        Its kind and argument.

    Raises:
        DataError: an unknown form (the message lists the forms), an unknown GLUE task, a
            form that needs a folder without one, or a malformed hub name.
    """
    text = task.strip()
    prefix, sep, rest = text.partition(":")
    prefix, rest = prefix.strip().lower(), rest.strip()
    if not sep and text.lower() in _PLAIN:
        return TaskName(_PLAIN[text.lower()])
    if sep and prefix == "glue":
        return TaskName("glue", canonical_glue_name(rest))
    if sep and prefix in _FOLDER:
        if not rest:
            raise DataError(f"task {text!r}: give the directory, e.g. {prefix}:path/to/dir")
        return TaskName(_FOLDER[prefix], rest)
    if sep and prefix == "hf":
        parse_hub_name(rest)
        return TaskName("hf", rest)
    raise DataError(f"unknown task {task!r}; use one of: {', '.join(TASK_FORMS)}")

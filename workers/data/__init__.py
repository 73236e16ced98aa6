"""Task data for trials: loaders (GLUE TSV, CSV/JSONL, hub, synthetic, causal LM), metrics, tokenisation.

Entry point: :func:`load_task` turns a task string (``glue:rte``, ``synthetic``,
``csv:<dir>``, ``jsonl:<dir>``, ``hf:<name>[/<config>]``, ``lm:<dir>``, ``synthetic-lm``)
into a :class:`TaskData`.
Every user-caused problem raises :class:`autopeft_service.domain.errors.DataError` with a
one-line message naming the file, line or column, and the reason.
"""

from workers.data.files import load_files
from workers.data.glue import GLUE_TASKS, GlueTaskSpec, glue_task_names, load_glue
from workers.data.hub import load_hub
from workers.data.lm import load_lm
from workers.data.load import TASK_FORMS, load_task
from workers.data.metrics import METRICS, compute_metrics
from workers.data.synthetic import load_synthetic, synthetic_vocabulary
from workers.data.synthetic_lm import load_synthetic_lm, synthetic_lm_vocabulary
from workers.data.task import (
    CAUSAL_LM_METRICS,
    Example,
    TaskData,
    TaskType,
    holdout_split,
    subsample,
)
from workers.data.tokenized import (
    TokenizedCache,
    TokenizedSplit,
    tokenize_examples,
    tokenizer_fingerprint,
)

__all__ = [
    "CAUSAL_LM_METRICS",
    "GLUE_TASKS",
    "METRICS",
    "TASK_FORMS",
    "Example",
    "GlueTaskSpec",
    "TaskData",
    "TaskType",
    "TokenizedCache",
    "TokenizedSplit",
    "compute_metrics",
    "glue_task_names",
    "holdout_split",
    "load_files",
    "load_glue",
    "load_hub",
    "load_lm",
    "load_synthetic",
    "load_synthetic_lm",
    "load_task",
    "subsample",
    "synthetic_lm_vocabulary",
    "synthetic_vocabulary",
    "tokenize_examples",
    "tokenizer_fingerprint",
]

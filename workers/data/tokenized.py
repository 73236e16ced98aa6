"""Tokenised splits, and a cache that reuses them across trials.

Every trial of a study tokenises the same examples with the same tokenizer and maximum
length, so :class:`TokenizedCache` keeps the result in memory (the same object is
returned) and on disk (``torch.save``, written atomically), keyed by a content key the
caller supplies (e.g. the task fingerprint and split name), a fingerprint of the
tokenizer, the maximum length and the task type.

Sequences are stored right-padded to ``max_length``; :meth:`TokenizedSplit.batch` trims a
batch to its longest sequence (dynamic padding), so short-sentence tasks cost little.

Causal-LM tasks (``(prompt, response)`` examples) are laid out as
``[bos] + prompt + response + [eos]`` and their ``labels`` give where the response starts;
see :func:`tokenize_examples`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from workers.data.task import Example, TaskType

__all__ = [
    "DEFAULT_DIRECTORY",
    "TokenizedCache",
    "TokenizedSplit",
    "default_cache_directory",
    "tokenize_examples",
    "tokenizer_fingerprint",
]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 2


class _DefaultDirectory:
    """Sentinel type: use :func:`default_cache_directory`."""

    def __repr__(self) -> str:
        return "DEFAULT_DIRECTORY"


DEFAULT_DIRECTORY: Final = _DefaultDirectory()


def default_cache_directory() -> Path:
    """``$AUTOPEFT_CACHE_DIR/tokenized`` if that variable is set, else ``~/.cache/autopeft/tokenized``."""
    root = os.environ.get("AUTOPEFT_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "autopeft"
    return base / "tokenized"


@dataclass
class TokenizedSplit:
    """A tokenised split: right-padded id tensors plus labels.

    Attributes:
        input_ids: ``(N, max_length)`` long, padded with the tokenizer's pad id (causal LM:
            its end-of-sequence id when it has no pad token).
        attention_mask: ``(N, max_length)`` long, 1 on real tokens.
        token_type_ids: ``(N, max_length)`` long segment ids, or ``None`` if the tokenizer
            does not produce them (always ``None`` for causal LM).
        labels: ``(N,)``; what it holds depends on the task type:

            * classification: long class indices;
            * regression: float32 targets;
            * causal LM: long index of the first response token in each row. The tokens
              to score (loss and metrics) are those at positions
              ``[labels[i], lengths[i])`` of row ``i``: the response and the
              end-of-sequence token, each predicted from the positions before it (logits
              at ``p - 1`` predict the token at ``p``). ``labels[i] >= 1`` whenever the
              tokenizer has a BOS token or the prompt is not empty; otherwise it can be 0,
              and the token at position 0, having nothing before it, cannot be scored.

        lengths: ``(N,)`` long number of real tokens per row.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.input_ids.shape[0])

    @property
    def max_length(self) -> int:
        """Padded width of the stored tensors."""
        return int(self.input_ids.shape[1])

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather rows into a batch trimmed to its longest sequence.

        Args:
            indices: ``(B,)`` long row indices.

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids`` (when present), each
            ``(B, L)`` with ``L`` the longest length among the rows, and ``labels`` ``(B,)``.
        """
        indices = torch.as_tensor(indices, dtype=torch.long)
        width = int(self.lengths[indices].max()) if indices.numel() else 0
        out = {
            "input_ids": self.input_ids[indices, :width],
            "attention_mask": self.attention_mask[indices, :width],
        }
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[indices, :width]
        out["labels"] = self.labels[indices]
        return out

    def to_state(self) -> dict[str, torch.Tensor]:
        """The tensors in compact form, as saved on disk.

        Ids are stored as int32 and segment ids as uint8; the attention mask is not stored
        (it is rebuilt from the lengths, the rows being right-padded). A fifth of the size
        of the long tensors: SST-2 train at length 64 takes about 20 MB.
        """
        state = {
            "input_ids": self.input_ids.to(torch.int32),
            "labels": self.labels,
            "lengths": self.lengths,
        }
        if self.token_type_ids is not None:
            state["token_type_ids"] = self.token_type_ids.to(torch.uint8)
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TokenizedSplit:
        """Rebuild a split from :meth:`to_state`'s dict."""
        input_ids = state["input_ids"].long()
        lengths = state["lengths"].long()
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        attention_mask = (positions < lengths.unsqueeze(1)).long()
        token_type_ids = state.get("token_type_ids")
        return cls(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids.long() if token_type_ids is not None else None,
            labels=state["labels"],
            lengths=lengths,
        )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable digest of what decides a tokenizer's output.

    Combines the class name, the vocabulary size (with added tokens), the pad, BOS and EOS
    ids (the last two decide a causal-LM layout), and a hash of the backend tokenizer's
    JSON (vocabulary, normaliser, pre-tokenizer, post-processor) without its mutable
    truncation/padding state; for a tokenizer without a backend, a hash of its vocabulary.

    Args:
        tokenizer: A HuggingFace tokenizer.

    Returns:
        A SHA-256 hex digest.
    """
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    digest.update(f"|{len(tokenizer)}|{tokenizer.pad_token_id}|".encode())
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    digest.update(f"bos={bos}|eos={eos}|".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        digest.update(json.dumps(state, sort_keys=True).encode("utf-8"))
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    digest.update(json.dumps(list(getattr(tokenizer, "model_input_names", []))).encode())
    return digest.hexdigest()


def _label_tensor(examples: Sequence[Example], task_type: TaskType) -> torch.Tensor:
    labels = [ex.label for ex in examples]
    if task_type is TaskType.REGRESSION:
        return torch.tensor(labels, dtype=torch.float32)
    return torch.tensor(labels, dtype=torch.long)


def _causal_lm_row(
    prompt_ids: list[int], response_ids: list[int], bos_id: int | None, eos_id: int | None,
    max_length: int,
) -> tuple[list[int], int]:
    """Lay out one causal-LM row: ``[bos] + prompt + response + [eos]``, truncated.

    Args:
        prompt_ids: The prompt's token ids (no special tokens).
        response_ids: The response's token ids (no special tokens).
        bos_id: The BOS id to put first, or ``None``.
        eos_id: The EOS id to put last, or ``None``.
        max_length: Maximum ids in the row (at least 2).

    Returns:
        ``(ids, start)``: at most ``max_length`` ids, and the index of the first response
        token (the first token to score).
    """
    head = ([bos_id] if bos_id is not None else []) + list(prompt_ids)
    targets = list(response_ids) + ([eos_id] if eos_id is not None else [])
    if len(head) >= max_length:
        # The prompt alone fills the row: keep the BOS, cut the prompt from the left so
        # that one target token still fits.
        keep = max_length - 1 - (1 if bos_id is not None else 0)
        kept_prompt = list(prompt_ids[len(prompt_ids) - keep:]) if keep > 0 else []
        head = ([bos_id] if bos_id is not None else []) + kept_prompt
    ids = (head + targets)[:max_length]
    return ids, len(head)


def _tokenize_causal_lm(
    tokenizer: Any, examples: Sequence[Example], max_length: int
) -> TokenizedSplit:
    """The causal-LM branch of :func:`tokenize_examples`."""
    for i, ex in enumerate(examples):
        if len(ex.texts) != 2:
            raise ValueError(
                f"example {i} has {len(ex.texts)} texts; a causal_lm example has 2 "
                "(prompt, response)"
            )
    bos_id = getattr(tokenizer, "bos_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    if pad_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has neither a pad nor an end-of-sequence "
            "token"
        )
    n = len(examples)
    ids_np = np.full((n, max_length), pad_id, dtype=np.int64)
    lengths_np = np.zeros(n, dtype=np.int64)
    starts_np = np.zeros(n, dtype=np.int64)
    if n:
        options = {"add_special_tokens": False, "truncation": False, "padding": False,
                   "return_attention_mask": False, "return_token_type_ids": False}
        prompts = tokenizer([ex.texts[0] for ex in examples], **options)["input_ids"]
        responses = tokenizer([ex.texts[1] for ex in examples], **options)["input_ids"]
        for row, (prompt_ids, response_ids) in enumerate(zip(prompts, responses, strict=True)):
            if not response_ids and eos_id is None:
                raise ValueError(
                    f"example {row}: the response has no tokens and the tokenizer no "
                    "end-of-sequence token: nothing to score"
                )
            ids, start = _causal_lm_row(prompt_ids, response_ids, bos_id, eos_id, max_length)
            ids_np[row, :len(ids)] = ids
            lengths_np[row] = len(ids)
            starts_np[row] = start
    lengths = torch.from_numpy(lengths_np)
    positions = torch.arange(max_length).unsqueeze(0)
    attention_mask = (positions < lengths.unsqueeze(1)).long()
    return TokenizedSplit(torch.from_numpy(ids_np), attention_mask, None,
                          torch.from_numpy(starts_np), lengths)


def tokenize_examples(
    tokenizer: Any, examples: Sequence[Example], *, max_length: int, task_type: TaskType | str
) -> TokenizedSplit:
    """Tokenise examples (pairs for two texts), truncate to ``max_length``, right-pad.

    Classification and regression: the tokenizer's own special tokens and pair layout
    (``[CLS] a [SEP] b [SEP]``), truncated by the tokenizer; ``labels`` are the examples'
    labels.

    Causal LM (``(prompt, response)`` examples): prompt and response are tokenised
    separately without special tokens, and each row is
    ``[bos] + prompt_ids + response_ids + [eos]``: ``bos`` when the tokenizer has a
    ``bos_token_id`` (its ``add_bos_token`` flag is not consulted), ``eos`` when it has an
    ``eos_token_id``. Nothing is inserted between the two texts. A row longer than
    ``max_length`` keeps its start (the end is cut), but always keeps at least one
    response token: when ``[bos] + prompt_ids`` alone fills ``max_length``, the prompt is
    cut from the left instead (the BOS stays first) so the row ends with the first
    response token. ``labels`` holds each row's index of the first response token (see
    :class:`TokenizedSplit`); ``token_type_ids`` is ``None``. Rows are padded with the
    pad id, or with the EOS id when the tokenizer has no pad token (the tokenizer itself
    is not changed); the attention mask and lengths say where the real tokens end.

    Args:
        tokenizer: A HuggingFace tokenizer with a pad token (causal LM: a pad or an EOS
            token).
        examples: The examples; each has one or two texts (causal LM: exactly two).
        max_length: Maximum tokens per example, special tokens included.
        task_type: Decides the layout and the labels (long class index, float32 target,
            or long response start).

    Returns:
        The tokenised split.

    Raises:
        ValueError: If ``max_length`` is below 2, the tokenizer has no pad token (causal
            LM: neither pad nor EOS), an example has no text or more than two (causal LM:
            not two), or (causal LM) a response has no tokens and there is no EOS token.
    """
    if max_length < 2:
        raise ValueError(f"max_length: must be at least 2, got {max_length}")
    kind = TaskType(task_type)
    if kind is TaskType.CAUSAL_LM:
        return _tokenize_causal_lm(tokenizer, examples, max_length)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token")
    for i, ex in enumerate(examples):
        if len(ex.texts) not in (1, 2):
            raise ValueError(f"example {i} has {len(ex.texts)} texts; need 1 or 2")
    n = len(examples)
    ids_np = np.full((n, max_length), pad_id, dtype=np.int64)
    mask_np = np.zeros((n, max_length), dtype=np.int64)
    wants_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    types_np = np.zeros((n, max_length), dtype=np.int64) if wants_types else None
    lengths_np = np.zeros(n, dtype=np.int64)
    # Singles and pairs are tokenised in separate calls, then scattered back in order.
    for n_texts in (1, 2):
        rows = [i for i, ex in enumerate(examples) if len(ex.texts) == n_texts]
        if not rows:
            continue
        firsts = [examples[i].texts[0] for i in rows]
        seconds = [examples[i].texts[1] for i in rows] if n_texts == 2 else None
        encoded = tokenizer(
            firsts,
            seconds,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_token_type_ids=wants_types,
            return_attention_mask=False,
        )
        types = encoded.get("token_type_ids") if wants_types else None
        for j, row in enumerate(rows):
            ids = encoded["input_ids"][j]
            size = len(ids)
            ids_np[row, :size] = ids
            mask_np[row, :size] = 1
            lengths_np[row] = size
            if types_np is not None and types is not None:
                types_np[row, :size] = types[j]
    input_ids = torch.from_numpy(ids_np)
    attention_mask = torch.from_numpy(mask_np)
    token_type_ids = torch.from_numpy(types_np) if types_np is not None else None
    lengths = torch.from_numpy(lengths_np)
    return TokenizedSplit(input_ids, attention_mask, token_type_ids,
                          _label_tensor(examples, kind), lengths)


class TokenizedCache:
    """Memory and disk cache of tokenised splits.

    Attributes:
        directory: Disk folder of the cache, or ``None`` for memory only.
        memory_hits: ``get`` calls answered from memory.
        disk_hits: ``get`` calls answered from disk.
        misses: ``get`` calls that tokenised.
    """

    def __init__(self, directory: str | Path | None | _DefaultDirectory = DEFAULT_DIRECTORY):
        """Create a cache.

        Args:
            directory: Disk folder (created on first write); ``DEFAULT_DIRECTORY`` (the
                default) for :func:`default_cache_directory`; ``None`` for memory only.
        """
        if isinstance(directory, _DefaultDirectory):
            directory = default_cache_directory()
        self.directory: Path | None = Path(directory).expanduser() if directory else None
        self._memory: dict[str, TokenizedSplit] = {}
        self.memory_hits = 0
        self.disk_hits = 0
        self.misses = 0

    @property
    def hits(self) -> int:
        """Memory plus disk hits."""
        return self.memory_hits + self.disk_hits

    @staticmethod
    def cache_key(tokenizer: Any, *, key: str, max_length: int, task_type: TaskType | str) -> str:
        """The digest under which a split is cached.

        Args:
            tokenizer: The tokenizer.
            key: The caller's content key (task fingerprint + split name).
            max_length: Maximum tokens per example.
            task_type: The task type (decides the layout and the labels).

        Returns:
            A SHA-256 hex digest.
        """
        parts = {
            "version": _FORMAT_VERSION,
            "key": key,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_length": int(max_length),
            "task_type": str(TaskType(task_type)),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(
        self,
        tokenizer: Any,
        examples: Sequence[Example],
        *,
        key: str,
        max_length: int,
        task_type: TaskType | str,
    ) -> TokenizedSplit:
        """Return the tokenised examples, from memory, disk, or by tokenising them.

        The caller promises that ``key`` identifies ``examples``' content (e.g.
        ``f"{task.fingerprint}:train"``); the examples are not re-hashed.

        Args:
            tokenizer: A HuggingFace tokenizer with a pad token (causal LM: or an EOS token).
            examples: The examples to tokenise on a miss.
            key: Content key of ``examples``.
            max_length: Maximum tokens per example.
            task_type: Classification, regression or causal LM (layout and labels).

        Returns:
            The split; the same object on a memory hit.

        Raises:
            ValueError: See :func:`tokenize_examples`.
        """
        digest = self.cache_key(tokenizer, key=key, max_length=max_length, task_type=task_type)
        cached = self._memory.get(digest)
        if cached is not None:
            self.memory_hits += 1
            return cached
        path = self.directory / f"{digest}.pt" if self.directory is not None else None
        if path is not None and path.is_file():
            split = self._load(path, len(examples))
            if split is not None:
                self.disk_hits += 1
                self._memory[digest] = split
                return split
        self.misses += 1
        split = tokenize_examples(tokenizer, examples, max_length=max_length, task_type=task_type)
        self._memory[digest] = split
        if path is not None:
            self._save(path, split)
        return split

    def clear_memory(self) -> None:
        """Drop the in-memory entries (disk entries stay)."""
        self._memory.clear()

    @staticmethod
    def _load(path: Path, expected_rows: int) -> TokenizedSplit | None:
        try:
            split = TokenizedSplit.from_state(torch.load(path, weights_only=True))
        except Exception as exc:  # noqa: BLE001 - a damaged entry is re-created, not fatal
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            logger.warning("tokenized cache: ignoring unreadable %s (%s: %s)", path,
                           type(exc).__name__, reason)
            return None
        if len(split) != expected_rows:
            logger.warning(
                "tokenized cache: ignoring %s: %d rows, expected %d", path, len(split),
                expected_rows,
            )
            return None
        return split

    @staticmethod
    def _save(path: Path, split: TokenizedSplit) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    torch.save(split.to_state(), handle)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            # A read-only or full disk costs speed only; the split is in memory.
            logger.warning("tokenized cache: cannot write %s (%s)", path, exc)


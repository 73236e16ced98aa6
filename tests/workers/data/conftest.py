"""Fixtures of the data tests: the shared GLUE folder, TSV writers, a tiny tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from workers.data.synthetic import synthetic_vocabulary

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE files beside the repository (``../shared/data/glue``), or $AUTOPEFT_GLUE_DIR."""
    override = os.environ.get("AUTOPEFT_GLUE_DIR")
    path = Path(override) if override else (
        Path(__file__).resolve().parents[3].parent / "shared" / "data" / "glue"
    )
    assert (path / "SST-2" / "train.tsv").is_file(), (
        f"GLUE data not found at {path}; set AUTOPEFT_GLUE_DIR to the folder holding SST-2/"
    )
    return path


@pytest.fixture
def write_tsv(tmp_path: Path) -> Callable[..., Path]:
    """Write rows (lists of fields) as a tab-separated file under tmp_path/glue/<task>/<name>."""

    def write(task_dir: str, name: str, rows: Sequence[Sequence[str]], bom: bool = False) -> Path:
        path = tmp_path / "glue" / task_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join("\t".join(row) + "\n" for row in rows)
        path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a WordPiece vocab.txt covering the synthetic task's words."""
    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    words = [*SPECIAL_TOKENS, *synthetic_vocabulary(), "a", "b", "c", "x", "y", "z"]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(words)) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir: Path):
    """A BERT WordPiece tokenizer over the tiny vocabulary (fresh per test)."""
    from transformers import BertTokenizerFast

    # Note: transformers 5 ignores BertTokenizerFast(vocab_file=...); load the folder instead.
    return BertTokenizerFast.from_pretrained(str(tiny_tokenizer_dir))

"""Hub loader: only the failure paths can be tested here (no network); they must be fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autopeft_service.domain.errors import DataError
from workers.data import load_task
from workers.data.hub import load_hub


def test_offline_mode_fails_fast_with_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: must still be honoured
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"hub dataset 'autopeft-test/no-such-dataset' \(config "
                                        r"'rte'\): cannot load it in the local cache \(offline"):
        load_task("hf:autopeft-test/no-such-dataset/rte")
    assert time.perf_counter() - start < 10.0


def test_unreachable_hub_fails_fast(monkeypatch) -> None:
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"hub dataset 'imdb': cannot reach the HuggingFace hub "
                                        r"at http://127.0.0.1:9 .*set HF_HUB_OFFLINE=1"):
        load_hub("imdb", timeout=2.0)
    assert time.perf_counter() - start < 5.0


def test_offline_local_dataset_folder_without_dev_split(tmp_path: Path, monkeypatch) -> None:
    """A local folder goes through the same code offline; a missing dev split is named."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("sentence,label\na b,pos\nc d,neg\n")
    (folder / "test.csv").write_text("sentence,label\ne f,pos\n")
    with pytest.raises(DataError, match=r"no dev split \(looked for validation, "
                                        r"validation_matched, dev, valid\); splits are "
                                        r"\['train', 'test'\]"):
        load_hub(str(folder), cache_dir=tmp_path / "cache")
    (folder / "validation.csv").write_text("sentence,label\ng h,neg\n")
    data = load_hub(str(folder), cache_dir=tmp_path / "cache2")
    assert data.name == f"hf:{folder}"
    assert data.label_names == ("neg", "pos")
    assert [ex.label for ex in data.train] == [1, 0] and data.dev[0].texts == ("g h",)

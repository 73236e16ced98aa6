"""workers.folders.replace_folder: a folder replaced whole, no staging folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.folders import replace_folder


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


def test_creates_the_folder_and_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "ckpt"
    with replace_folder(target) as staging:
        assert not target.exists()  # nothing visible until the block ends
        (staging / "x.txt").write_text("new")
    assert _tree(target) == {"x.txt": "new"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt"]


def test_replaces_an_old_folder_whole_and_leaves_no_temp_folder(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (target / "sub").mkdir()
    (target / "sub" / "deep.txt").write_text("old")
    with replace_folder(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".ckpt.")
        (staging / "x.txt").write_text("new")
        assert _tree(target) == {"old.txt": "old", "sub/deep.txt": "old"}  # old one intact
    assert _tree(target) == {"x.txt": "new"}  # no file of the old folder survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failed_write_keeps_the_old_folder_and_removes_the_staging_one(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="half written"):
        with replace_folder(target) as staging:
            (staging / "x.txt").write_text("new")
            raise RuntimeError("half written")
    assert _tree(target) == {"old.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failed_write_with_no_old_folder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with replace_folder(tmp_path / "ckpt"):
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []

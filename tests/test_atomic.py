"""vqa.atomic: outputs appear whole or not at all."""

import json

import pytest

from vqa import atomic


def test_text_and_json_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.json"
    atomic.write_text_atomically(path, "old")
    atomic.write_json_atomically(path, {"é": [1, 2]}, indent=1)
    assert json.loads(path.read_text(encoding="utf-8")) == {"é": [1, 2]}
    assert "é" in path.read_text(encoding="utf-8") and path.read_text(encoding="utf-8").endswith("\n")
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")

    def fail(temporary):
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.write_atomically(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_staging_folder_moves_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyError), atomic.staging_folder(out) as staging:
        (staging / "a.txt").write_text("a")
        raise KeyError
    assert not out.exists()
    with atomic.staging_folder(out, prefix=".prepare-") as staging:
        (staging / "a.txt").write_text("a")
        (staging / "b.txt").write_text("b")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]

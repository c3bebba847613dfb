"""A staged folder replaces its target only when complete."""

from __future__ import annotations

import pytest

from upocr_hf.file_utils import staged_folder


def test_a_failed_write_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "model"
    with staged_folder(target) as staging:
        (staging / "weights.bin").write_bytes(b"good")
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("disk full")
    assert (target / "weights.bin").read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_complete_write_replaces_the_folder_with_public_modes(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with staged_folder(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "config.json").write_text("{}")
        (staging / "run.sh").write_text("#!/bin/sh\n")
        (staging / "run.sh").chmod(0o700)
    assert sorted(p.name for p in target.rglob("*")) == ["config.json", "run.sh", "sub"]
    modes = {p.name: p.stat().st_mode & 0o777 for p in [target, *target.rglob("*")]}
    assert modes == {"model": 0o755, "sub": 0o755, "config.json": 0o644, "run.sh": 0o755}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

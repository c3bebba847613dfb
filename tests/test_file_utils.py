"""A staged folder or an atomically written file replaces its target only when complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from upocr_hf.file_utils import atomic_write, remove_stale_temporaries, staged_folder


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


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.png"

    def failing(file):
        file.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda file: file.write(b"done"))
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]
    old_umask = os.umask(0o022)
    try:
        atomic_write(target, lambda file: file.write(b"again"))
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o777 == 0o644  # the usual mode, not mkstemp's private 0600


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    import tempfile
    import time

    (tmp_path / "sub").mkdir()
    targets = [tmp_path / "a.png", tmp_path / "sub" / "a.png"]
    stale = [Path(tempfile.mkstemp(prefix=f".{t.name}.", suffix=".tmp", dir=t.parent)[1]) for t in targets]
    fresh = Path(tempfile.mkstemp(prefix=".a.png.", suffix=".tmp", dir=tmp_path)[1])
    others = [tmp_path / ".hidden.tmp", tmp_path / "notes.tmp", tmp_path / ".b.png.abcdefgh.tmp"]
    for path in others:
        path.write_text("not ours to delete")
    an_hour_ago = time.time() - 3600
    for path in [*stale, *others]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    removed = remove_stale_temporaries([*targets, tmp_path / "missing-folder" / "c.png"])
    assert sorted(removed) == sorted(stale)
    assert fresh.exists() and all(
        path.exists() for path in others
    )  # young ones, and other files' temporaries

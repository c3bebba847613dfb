"""Writing a folder so that a failure never leaves it half-written and never replaces a good one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside `target` to write into; when the block completes it replaces `target`.

    If the block raises, the staging folder is removed and `target` is left as it was. The finished folder gets
    the usual public modes (0755 folders and executables, 0644 files) instead of `mkdtemp`'s private 0700, so a
    folder installed with a package is readable by everyone.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        for path in [staging, *staging.rglob("*")]:
            executable = path.is_dir() or path.stat().st_mode & 0o100
            path.chmod(0o755 if executable else 0o644)
        if target.exists():
            previous = target.with_name(f".{target.name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            target.rename(previous)
            try:
                staging.rename(target)
            except BaseException:
                previous.rename(target)
                raise
            shutil.rmtree(previous, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

"""Writing files and folders so that a failure never leaves them half-written and never replaces a good one."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(targets: Iterable[str | os.PathLike], older_than: float = 600.0) -> list[Path]:
    """Delete the temporary files a killed `atomic_write` of one of `targets` left beside it (`.NAME.` + mkstemp's
    8 characters + `.tmp`), when older than `older_than` seconds (a younger one may belong to a run still
    writing). Other files are never touched. Returns what was deleted."""
    removed = []
    cutoff = time.time() - older_than
    for target in targets:
        target = Path(target)
        pattern = re.compile(rf"^\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
        try:
            candidates = [p for p in target.parent.iterdir() if pattern.match(p.name)]
        except OSError:  # the folder does not exist (yet): nothing to clean
            continue
        for path in candidates:
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except OSError:  # gone meanwhile, or not ours to delete
                continue
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], object], mode: str = "wb") -> Path:
    """Write `path` through `write(file_object)`: into a temporary file in the same folder, flushed to disk, then
    renamed over `path`. If `write` raises, the temporary file is removed and `path` is left as it was. The file
    gets the usual mode (0666 less the umask), not `mkstemp`'s private 0600. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


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


def error_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): long library messages stay out
    of one-line reports."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def free_space(folder: str | os.PathLike) -> str:
    """The free space on the disk that holds `folder`, as "N MiB free there", for messages about failed writes."""
    return f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free there"


def check_model_location(model: str | os.PathLike) -> None:
    """Refuse, with a plain reason, a model named by a local path that is not a folder. A name that looks like a
    Hub id (`name` or `owner/name`) is left for the Hub client to resolve."""
    name = os.fspath(model)
    looks_local = (
        os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or os.path.exists(name)
    )
    if looks_local and not os.path.isdir(os.path.expanduser(name)):
        reason = "is a file, not a model folder" if os.path.exists(name) else "no such model folder"
        raise FileNotFoundError(f"{name}: {reason}")

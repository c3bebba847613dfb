"""Crash-safe training checkpoints: one place for how a run's state is written, found and read back.

`CheckpointFolders` lays out `ROOT/step_<N>` folders, each written under a temporary name and renamed when
complete; `save_checkpoint` writes one with `accelerator.save_state` on every process plus the counters and the data
position as JSON (`TrainingProgress`, never a pickle); `load_checkpoint` reads one back, refusing any file that holds
more than tensors and plain data, so resuming from a folder of unknown origin cannot run code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import (
    load as load_tensors_only,  # torch.load(weights_only=True) with numpy's safe types
)

from .data import MultiTaskDataLoader
from .file_utils import error_line, free_space

#: Accelerate's logger: a line is written by the main process only.
logger = get_logger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint to resume from is unreadable, incomplete or holds more than data."""


_CHECKPOINT_NAME = re.compile(r"^step_(\d+)$")
_STAGING_PREFIX = ".tmp-step_"


class CheckpointFolders:
    """Crash-safe `save_state` folders: `ROOT/step_<N>`, written under a temporary name and renamed when complete.

    A crash while saving leaves at most a `.tmp-step_<N>` folder, which is never taken for a checkpoint and is
    removed by the next save; only the newest `keep` complete checkpoints are kept.
    """

    def __init__(self, root: str | os.PathLike, keep: int | None = 3):
        self.root = Path(root)
        self.keep = keep

    def completed(self) -> list[Path]:
        """Complete checkpoints, oldest first (read-only: call `recover` first after a crash)."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        done = self.completed()
        return done[-1] if done else None

    def staging_path(self, step: int) -> Path:
        """The temporary folder that `accelerator.save_state` writes step `step` into (never a checkpoint)."""
        return self.root / f"{_STAGING_PREFIX}{step}"

    def staging(self, step: int) -> Path:
        """`staging_path(step)`, emptied first."""
        path = self.staging_path(step)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def commit(self, step: int, extra: Mapping[str, Any] | None = None) -> Path:
        """Rename the staged folder into place (with `extra` as `trainer_state.json`) and prune old ones. A folder
        already at that step is moved aside first and deleted last, so a crash at any moment leaves one of them."""
        staged, final = self.staging_path(step), self.root / f"step_{step}"
        if extra is not None:
            (staged / "trainer_state.json").write_text(json.dumps(dict(extra), indent=2))
        aside = self.root / f".old-step_{step}"
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            final.rename(aside)
        staged.rename(final)
        shutil.rmtree(aside, ignore_errors=True)
        for stale in self.root.glob(f"{_STAGING_PREFIX}*"):  # left by interrupted saves
            shutil.rmtree(stale, ignore_errors=True)
        if self.keep:
            for old in self.completed()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def recover(self) -> None:
        """Undo what an interrupted save left (call on one process): a checkpoint moved aside goes back into place
        when its replacement never arrived, and is deleted otherwise."""
        if not self.root.is_dir():
            return
        for aside in self.root.glob(".old-step_*"):
            original = self.root / aside.name.removeprefix(".old-")
            if original.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.rename(original)

    def size_of_latest(self) -> int | None:
        """Bytes the newest complete checkpoint takes on disk (None without one)."""
        latest = self.latest()
        return None if latest is None else sum(p.stat().st_size for p in latest.rglob("*") if p.is_file())

    def resolve(self, spec: str) -> Path:
        """`latest` or a path → the checkpoint folder to resume from (clear error if there is none)."""
        if spec == "latest":
            latest = self.latest()
            if latest is None:
                raise FileNotFoundError(
                    f"--resume_from_checkpoint latest: no complete checkpoint under {self.root}"
                )
            return latest
        path = Path(spec)
        if not (path.is_dir() and (path / "trainer_state.json").is_file()):
            raise FileNotFoundError(f"--resume_from_checkpoint {spec}: not a complete checkpoint folder")
        return path


class TrainingProgress:
    """Counters saved with every checkpoint, as JSON in its `trainer_state.json` (never as a pickle: a checkpoint
    folder may come from anywhere, and unpickling runs code)."""

    #: Each counter and the JSON types it may hold.
    FIELDS: dict[str, tuple[type, ...]] = {
        "step": (int,),
        "skipped_nonfinite": (int,),
        "best_metric": (int, float, type(None)),
        "best_step": (int, type(None)),
    }

    def __init__(self) -> None:
        self.step = 0
        self.skipped_nonfinite = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters; `ValueError` naming the field when one is missing or of the wrong type."""
        for name, types in self.FIELDS.items():
            value = state.get(name)
            if name not in state or isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(
                    f"trainer state: {name!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"
                )
        for name in self.FIELDS:
            setattr(self, name, state[name])


def save_checkpoint(
    accelerator: Accelerator,
    checkpoints: CheckpointFolders,
    progress: TrainingProgress,
    loader: MultiTaskDataLoader,
) -> None:
    """`save_state` into a staging folder on every rank, then rename it into place on the main process with the
    counters and the data position as JSON (`trainer_state.json`; every rank's loader is at the same position)."""
    staging = checkpoints.staging_path(progress.step)
    if accelerator.is_main_process:
        checkpoints.staging(progress.step)
    accelerator.wait_for_everyone()
    failure = None
    try:
        accelerator.save_state(str(staging))
    except Exception as error:  # a full disk shows as OSError, SafetensorError or torch's RuntimeError alike
        failure = error
    # every rank learns whether any failed, so that all stop together instead of waiting for the failed one
    failed = accelerator.reduce(torch.tensor(float(failure is not None), device=accelerator.device), "sum")
    if failed.item() > 0:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        reason = failure or RuntimeError("another process could not write its part")
        raise CheckpointError(checkpoint_write_failure(checkpoints, progress.step, reason)) from failure
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {**progress.state_dict(), "data_loader": loader.state_dict()}
        final = checkpoints.commit(progress.step, extra=state)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()


def checkpoint_write_failure(checkpoints: CheckpointFolders, step: int, error: BaseException) -> str:
    """One line: which checkpoint could not be written, why, the free space and what a checkpoint needs."""
    free = free_space(checkpoints.root)
    needed = checkpoints.size_of_latest()
    kept = checkpoints.latest()
    return (
        f"cannot write checkpoint step_{step} in {checkpoints.root}: {error_line(error)}; {free}"
        + (f", a checkpoint needs about {needed / 2**20:,.0f} MiB" if needed else "")
        + (f"; the last complete checkpoint, {kept.name}, is intact" if kept else "")
    )


def load_checkpoint(
    accelerator: Accelerator, folder: Path, progress: TrainingProgress, loader: MultiTaskDataLoader
) -> None:
    """Continue from a checkpoint. Accelerate reads the weights (safetensors) and the optimizer, scheduler and RNG
    states (tensors only: `weights_only=True` refuses any pickled code); the counters and the data position come
    from the folder's JSON `trainer_state.json`. Nothing in the folder is unpickled beyond plain tensors."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{folder}: unreadable checkpoint ({error})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{folder}/trainer_state.json: expected an object, got {type(state).__name__}")
    # every pickle-format file is read as tensors and plain data first, with Accelerate's own reader (Accelerate
    # itself would skip an unreadable RNG state silently, and the resumed run would not repeat the original)
    pickled = sorted([*folder.rglob("*.bin"), *folder.rglob("*.pkl")])
    for path in pickled:  # read and dropped at once: Accelerate reads them again below
        _check_tensors_only(folder, path)
    if any(path.name.startswith("custom_checkpoint_") for path in pickled):
        raise CheckpointError(
            f"{folder}: written by an earlier version (custom_checkpoint_*.pkl), which kept its progress in pickles; "
            "this version keeps it in trainer_state.json and cannot continue it: finish that run with its version"
        )
    accelerator.load_state(str(folder))
    try:
        progress.load_state_dict(state)
        loader.load_state_dict(state["data_loader"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{folder}/trainer_state.json: {error!s}") from None
    logger.info("resumed from %s at step %d", folder, progress.step)


def _check_tensors_only(folder: Path, path: Path) -> None:
    try:
        load_tensors_only(path, map_location="cpu")
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{folder}: refused to load {path.name}: it holds more than tensors and plain data"
        ) from None
    except Exception as error:  # truncated or otherwise unreadable
        raise CheckpointError(f"{folder}: cannot read {path.name} ({error_line(error)})") from None


__all__ = [
    "CheckpointError",
    "CheckpointFolders",
    "TrainingProgress",
    "checkpoint_write_failure",
    "load_checkpoint",
    "save_checkpoint",
]

"""The paper's multi-task batching: every step takes one batch from each task and concatenates them.

:class:`MultiTaskDataLoader` wraps one ``torch.utils.data.DataLoader`` per task (workers optional) over a
map-style dataset (a ``datasets.Dataset`` with :class:`~upocr_hf.data.augment.UpocrAugment` set as its
transform, or any dataset returning the same sample dicts). Iterating it never ends: when a task's epoch is
used up, that task starts its next epoch, reshuffled with ``seed``, the task and the epoch number, while the
other tasks carry on. Each yielded batch is :func:`~upocr_hf.data.augment.upocr_collate`'s dict for the
concatenation, tasks in the order given::

    pixel_values (B, 3, S, S) float, labels (B, 3, S, S) float, text_mask (B, 1, S, S) float,
    ignore_mask (B, 1, S, S) bool, task (B,) long (task ids), tasks list[str], names list[str] (when present)

with ``B = sum(batch_size[task])``.

Several processes: with ``process_index`` / ``num_processes`` (or :meth:`MultiTaskDataLoader.from_accelerator`)
each rank takes a disjoint shard of every epoch's permutation (rank ``r`` takes positions ``r``,
``r + num_processes``, ...), after the permutation is cut to a whole number of global batches so that all
ranks make the same number of steps per epoch (``drop_last`` semantics; the cut samples differ per epoch).

Streams: a task's dataset may be a ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``), which has
no length. Each rank then reads its part of the stream (``datasets.distributed.split_dataset_by_node``), shuffled
through a buffer of ``shuffle_buffer_size`` samples with ``seed``, the task and the epoch (``set_epoch``), then
transformed by ``stream_transform`` (e.g. :meth:`~upocr_hf.data.augment.UpocrAugment.apply_to_stream`), in batches
of ``batch_size`` (an incomplete last batch dropped); an epoch ends when the stream does, so ranks may start their
next epochs at different steps. Resuming skips the samples already used in the epoch (``IterableDataset.skip``):
exact, at the cost of reading them again; the transform comes after the skip so that the skipped samples draw no
random augmentation.

Resuming: :meth:`state_dict` holds each task's epoch and the number of batches already *yielded* in it
(prefetched batches do not count); :meth:`load_state_dict` continues from there exactly in sample order,
without loading the skipped samples. All ranks are in the same state, so the main process's saved state is
valid for every rank: save it as JSON beside a checkpoint (``train.py`` keeps it in ``trainer_state.json``;
Accelerate's ``register_for_checkpointing`` would pickle it, and unpickling a checkpoint can run code). Random
augmentation uses
torch's RNG in each worker, seeded from ``seed``, the task and the rank when the workers start (it is not
part of the resumable state).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, Sampler

from .augment import upocr_collate

__all__ = ["MultiTaskDataLoader", "ShardedEpochBatchSampler"]


def _task_seed(seed: int, task: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % (2**63)


class ShardedEpochBatchSampler(Sampler[list[int]]):
    """Batches of indices of one rank's shard of one epoch.

    The epoch's permutation comes from ``torch.Generator().manual_seed(seed + epoch)``; it is cut to a
    multiple of ``batch_size * num_processes`` and rank ``process_index`` takes every ``num_processes``-th
    index from position ``process_index``. ``start_batch`` skips batches already consumed (resume).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
        shuffle: bool = True,
        start_batch: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index {process_index} out of range for {num_processes} processes")
        self.length, self.batch_size = length, batch_size
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.process_index, self.num_processes = process_index, num_processes
        self.start_batch = start_batch
        if self.num_batches == 0:
            raise ValueError(
                f"a dataset of {length} samples cannot fill one batch of {batch_size} on each of {num_processes} "
                "process(es)"
            )

    @property
    def num_batches(self) -> int:
        """Full batches per epoch on every rank."""
        return self.length // (self.batch_size * self.num_processes)

    def indices(self) -> list[int]:
        """This rank's indices for the whole epoch (before skipping ``start_batch``)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        used = order[: self.num_batches * self.batch_size * self.num_processes]
        return used[self.process_index :: self.num_processes]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.indices()
        for b in range(self.start_batch, self.num_batches):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)


class MultiTaskDataLoader:
    """Endless loader yielding, per step, one batch from every task concatenated.

    Args:
        datasets: ``{task: dataset}``; the iteration order of the mapping is the order within a batch.
        batch_size: per-task batch size per process (paper: 8), one int or ``{task: int}``.
        seed: base seed of the per-epoch shuffles (and of worker RNGs).
        process_index, num_processes: this rank and the world size (disjoint shards per rank).
        num_workers: DataLoader workers per task (0: load in the main process).
        collate_fn: merges a list of samples (default :func:`upocr_collate`).
        shuffle: reshuffle each epoch (``False``: dataset order, still sharded).
        device: move every tensor of a batch there (e.g. ``accelerator.device``); ``None`` leaves them on CPU.
        pin_memory, persistent_workers, prefetch_factor: passed to each DataLoader (workers persist across
            epochs by default: small datasets start a new epoch every few dozen steps; a stream's loader is made
            anew each epoch).
        shuffle_buffer_size: samples in the shuffle buffer of a stream (``IterableDataset.shuffle``).
        stream_transform: ``(stream, batch_size) -> stream``, applied to each stream after its sharding, shuffling
            and skipping (a ``Dataset``'s transform is its own ``set_transform``).
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        batch_size: int | Mapping[str, int],
        *,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
        num_workers: int = 0,
        collate_fn: Callable[[Sequence[Any]], dict[str, Any]] = upocr_collate,
        shuffle: bool = True,
        device: torch.device | str | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        shuffle_buffer_size: int = 1000,
        stream_transform: Callable[[IterableDataset, int], IterableDataset] | None = None,
    ) -> None:
        if not datasets:
            raise ValueError("datasets must name at least one task")
        self.datasets = dict(datasets)
        self.tasks = list(self.datasets)
        sizes = batch_size if isinstance(batch_size, Mapping) else dict.fromkeys(self.tasks, batch_size)
        missing = [t for t in self.tasks if t not in sizes]
        if missing:
            raise ValueError(f"no batch size for task(s) {missing}")
        self.batch_sizes = {t: int(sizes[t]) for t in self.tasks}
        self.seed = seed
        self.process_index, self.num_processes = process_index, num_processes
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.shuffle = shuffle
        self.device = torch.device(device) if device is not None else None
        self.pin_memory, self.persistent_workers, self.prefetch_factor = (
            pin_memory,
            persistent_workers,
            prefetch_factor,
        )
        self.shuffle_buffer_size = shuffle_buffer_size
        self.stream_transform = stream_transform
        self._epoch = dict.fromkeys(self.tasks, 0)
        self._position = dict.fromkeys(self.tasks, 0)  # batches yielded in the current epoch
        self._step = 0
        self._iters: dict[str, Iterator[Any]] = {}
        self._loaders: dict[str, DataLoader] = {}
        for task in self.tasks:  # validate sizes now rather than at the first step (a stream's is not known)
            if not self._is_stream(task):
                self._sampler(task, 0, 0)

    @classmethod
    def from_accelerator(
        cls, accelerator: Any, datasets: Mapping[str, Any], batch_size: int | Mapping[str, int], **kwargs: Any
    ) -> MultiTaskDataLoader:
        """Build for an ``accelerate.Accelerator``: its rank, world size and device. Save :meth:`state_dict` (plain
        data) as JSON with each checkpoint to continue from the same position."""
        kwargs.setdefault("device", accelerator.device)
        kwargs.setdefault("pin_memory", accelerator.device.type == "cuda")
        return cls(
            datasets,
            batch_size,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
            **kwargs,
        )

    # --- per-task plumbing ---------------------------------------------------------------------------------

    def _sampler(self, task: str, epoch: int, start: int) -> ShardedEpochBatchSampler:
        return ShardedEpochBatchSampler(
            len(self.datasets[task]),
            self.batch_sizes[task],
            seed=_task_seed(self.seed, task),
            epoch=epoch,
            process_index=self.process_index,
            num_processes=self.num_processes,
            shuffle=self.shuffle,
            start_batch=start,
        )

    def _is_stream(self, task: str) -> bool:
        return isinstance(self.datasets[task], IterableDataset)

    def _stream(self, task: str) -> IterableDataset:
        """This rank's part of ``task``'s stream in the current epoch, from the current position."""
        stream = split_dataset_by_node(
            self.datasets[task], rank=self.process_index, world_size=self.num_processes
        )
        if self.shuffle:
            stream = stream.shuffle(seed=_task_seed(self.seed, task), buffer_size=self.shuffle_buffer_size)
        # always skipped (if by nothing), so that a resumed stream is built exactly as the original one was
        stream = stream.skip(self._position[task] * self.batch_sizes[task])
        if self.stream_transform is not None:
            stream = self.stream_transform(stream, self.batch_sizes[task])
        stream.set_epoch(self._epoch[task])
        return stream

    def batches_per_epoch(self, task: str) -> int:
        """Steps after which ``task`` starts a new epoch (on every rank); not known for a stream."""
        if self._is_stream(task):
            raise ValueError(f"task {task!r} is a stream: its epoch length is not known before it ends")
        return self._sampler(task, 0, 0).num_batches

    def _loader(self, task: str) -> DataLoader:
        if task not in self._loaders:
            generator = torch.Generator().manual_seed(
                _task_seed(self.seed, task)
                + 7919 * self._epoch[task]
                + 104_729 * self.process_index
                + self._position[task]
            )
            kwargs: dict[str, Any] = {}
            if self.num_workers > 0:
                kwargs["persistent_workers"] = self.persistent_workers and not self._is_stream(task)
                if self.prefetch_factor is not None:
                    kwargs["prefetch_factor"] = self.prefetch_factor
            if self._is_stream(task):
                kwargs.update(batch_size=self.batch_sizes[task], drop_last=True)
                self._loaders[task] = DataLoader(
                    self._stream(task),
                    collate_fn=self.collate_fn,
                    num_workers=self.num_workers,
                    pin_memory=self.pin_memory,
                    generator=generator,
                    **kwargs,
                )
                return self._loaders[task]
            self._loaders[task] = DataLoader(
                self.datasets[task],
                batch_sampler=self._sampler(task, self._epoch[task], self._position[task]),
                collate_fn=self.collate_fn,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                generator=generator,
                **kwargs,
            )
        return self._loaders[task]

    def _new_iter(self, task: str) -> Iterator[Any]:
        if self._is_stream(task):  # a stream's loader is built for one epoch and position
            self._loaders.pop(task, None)
            return iter(self._loader(task))
        loader = self._loader(task)
        sampler = loader.batch_sampler
        assert isinstance(sampler, ShardedEpochBatchSampler)
        # the batch sampler runs in this process: point it at the current epoch and position; persistent
        # workers are reused (their RNG streams continue)
        sampler.epoch, sampler.start_batch = self._epoch[task], self._position[task]
        return iter(loader)

    def close(self) -> None:
        """Stop the workers (they also stop when the loader is garbage-collected)."""
        self._iters.clear()
        self._loaders.clear()

    def _next(self, task: str) -> dict[str, Any]:
        if task not in self._iters:
            self._iters[task] = self._new_iter(task)
        try:
            batch = next(self._iters[task])
        except StopIteration:
            self._epoch[task] += 1
            self._position[task] = 0
            self._iters[task] = self._new_iter(task)
            batch = next(self._iters[task], None)
            if batch is None:  # only a stream can end before its first batch
                raise ValueError(
                    f"task {task!r}: process {self.process_index}'s part of the stream holds less than one batch "
                    f"of {self.batch_sizes[task]}"
                ) from None
        self._position[task] += 1
        return batch

    # --- public ------------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> dict[str, Any]:
        """The next concatenated multi-task batch."""
        parts = [self._next(task) for task in self.tasks]
        self._step += 1
        batch = _concat(parts)
        if self.device is not None:
            batch = {
                k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
            }
        return batch

    @property
    def step(self) -> int:
        """Batches yielded so far (across resumes)."""
        return self._step

    @property
    def epochs(self) -> dict[str, int]:
        """Current epoch of each task."""
        return dict(self._epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state: seed, step, and each task's epoch and batches consumed in it."""
        return {
            "seed": self.seed,
            "step": self._step,
            "num_processes": self.num_processes,
            "batch_sizes": dict(self.batch_sizes),
            "tasks": {t: {"epoch": self._epoch[t], "position": self._position[t]} for t in self.tasks},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken (same datasets, batch sizes and world size)."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this loader uses {self.seed}")
        for key, mine in (("num_processes", self.num_processes), ("batch_sizes", self.batch_sizes)):
            if key in state and state[key] != mine:
                raise ValueError(f"state was saved with {key}={state[key]}, this loader has {mine}")
        unknown = set(state["tasks"]) - set(self.tasks)
        if unknown:
            raise ValueError(f"state has task(s) {sorted(unknown)} this loader does not know")
        for task, s in state["tasks"].items():
            epoch, position = int(s["epoch"]), int(s["position"])
            per_epoch = position if self._is_stream(task) else self.batches_per_epoch(task)
            if position > per_epoch:
                raise ValueError(
                    f"task {task!r}: position {position} beyond its {per_epoch} batches per epoch"
                )
            self._epoch[task], self._position[task] = epoch, position
        self._step = int(state.get("step", 0))
        self._iters.clear()  # restart the per-task DataLoaders at the restored positions


def _concat(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts if key in p]
        if len(values) != len(parts):
            continue  # e.g. names missing for one task
        if torch.is_tensor(values[0]):
            out[key] = torch.cat(values)
        elif isinstance(values[0], list):
            out[key] = [v for part in values for v in part]
        else:
            out[key] = values
    return out

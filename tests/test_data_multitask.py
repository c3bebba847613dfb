"""§4 multi-task batching: task mix and shapes, endless epochs, disjoint shards per process, exact resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset
from PIL import Image

from upocr_hf.data.augment import UpocrAugment
from upocr_hf.data.folders import SAMPLE_FEATURES
from upocr_hf.data.multitask import MultiTaskDataLoader, ShardedEpochBatchSampler
from upocr_hf.tasks import DEFAULT_TASKS, TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")
LENGTHS = {TEXT_REMOVAL: 10, TEXT_SEGMENTATION: 13, TAMPERED_TEXT_DETECTION: 7}


def _rows(task: str, n: int) -> Dataset:
    rng = np.random.default_rng(len(task))
    rows = {"image": [], "target": [], "mask": [], "task": [], "name": []}
    for i in range(n):
        rows["image"].append(Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)))
        rows["target"].append(Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)))
        rows["mask"].append(Image.new("L", (24, 20), 255) if task == TEXT_REMOVAL else None)
        rows["task"].append(task)
        rows["name"].append(f"{task}/{i}")
    return Dataset.from_dict(rows, features=SAMPLE_FEATURES)


def _dataset(task: str, n: int) -> Dataset:
    ds = _rows(task, n)
    ds.set_transform(UpocrAugment(SIZE))
    return ds


def _stream(task: str, n: int) -> IterableDataset:
    """The rows as a stream (what `load_dataset(..., streaming=True)` gives)."""
    return _rows(task, n).to_iterable_dataset(num_shards=1)


#: How train.py augments streams: as the loader reads them.
STREAMED = {"stream_transform": UpocrAugment(SIZE).apply_to_stream}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    return {task: _dataset(task, n) for task, n in LENGTHS.items()}


def _names(loader: MultiTaskDataLoader, steps: int) -> list[list[str]]:
    return [batch["names"] for _, batch in zip(range(steps), loader, strict=False)]


def test_batch_mix_and_shapes(datasets: dict[str, Dataset]) -> None:
    sizes = {TEXT_REMOVAL: 2, TEXT_SEGMENTATION: 3, TAMPERED_TEXT_DETECTION: 1}
    loader = MultiTaskDataLoader(datasets, sizes, seed=0)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (6, 3, SIZE, SIZE) and batch["labels"].shape == (6, 3, SIZE, SIZE)
    assert batch["text_mask"].shape == (6, 1, SIZE, SIZE) and batch["ignore_mask"].shape == (6, 1, SIZE, SIZE)
    assert batch["ignore_mask"].dtype == torch.bool and batch["task"].dtype == torch.long
    expected = [TEXT_REMOVAL] * 2 + [TEXT_SEGMENTATION] * 3 + [TAMPERED_TEXT_DETECTION]
    assert batch["tasks"] == expected
    assert batch["task"].tolist() == [DEFAULT_TASKS.index(t) for t in expected]
    assert all(n.startswith(t) for n, t in zip(batch["names"], expected, strict=True))
    assert batch["text_mask"][:2].sum() > 0 and batch["text_mask"][2:].sum() == 0


def test_endless_with_reshuffled_epochs(datasets: dict[str, Dataset]) -> None:
    loader = MultiTaskDataLoader({TAMPERED_TEXT_DETECTION: datasets[TAMPERED_TEXT_DETECTION]}, 2, seed=1)
    assert loader.batches_per_epoch(TAMPERED_TEXT_DETECTION) == 3  # 7 // 2, the last sample dropped
    names = _names(loader, 9)  # three epochs
    epochs = [sum(names[3 * e : 3 * e + 3], []) for e in range(3)]
    for epoch in epochs:
        assert len(set(epoch)) == 6
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled
    assert loader.epochs == {TAMPERED_TEXT_DETECTION: 2} and loader.step == 9


def test_two_processes_see_disjoint_samples(datasets: dict[str, Dataset]) -> None:
    ranks = [MultiTaskDataLoader(datasets, 2, seed=5, process_index=r, num_processes=2) for r in range(2)]
    for task, n in LENGTHS.items():
        steps = ranks[0].batches_per_epoch(task)
        assert steps == ranks[1].batches_per_epoch(task) == n // 4
    steps = min(r.batches_per_epoch(t) for r in ranks for t in LENGTHS)  # one full epoch for every task
    seen = [Counter(sum(_names(r, steps), [])) for r in ranks]
    assert not set(seen[0]) & set(seen[1])
    assert all(c == 1 for s in seen for c in s.values())  # no repeats inside an epoch either
    # both ranks cover every task
    for s in seen:
        assert {name.split("/")[0] for name in s} == set(LENGTHS)


def test_sampler_shards_partition_an_epoch() -> None:
    for world in (1, 2, 3):
        parts = [
            ShardedEpochBatchSampler(23, 3, seed=4, epoch=2, process_index=r, num_processes=world)
            for r in range(world)
        ]
        flat = [i for p in parts for batch in p for i in batch]
        assert len(flat) == len(set(flat)) == (23 // (3 * world)) * 3 * world
        assert len({len(list(p)) for p in parts}) == 1
    with pytest.raises(ValueError, match="cannot fill one batch"):
        ShardedEpochBatchSampler(5, 3, num_processes=2)


def test_resume_exactly(datasets: dict[str, Dataset]) -> None:
    reference = MultiTaskDataLoader(datasets, 2, seed=3)
    names = _names(reference, 11)
    first = MultiTaskDataLoader(datasets, 2, seed=3)
    head = _names(first, 6)
    state = first.state_dict()
    assert state["step"] == 6 and state["tasks"][TAMPERED_TEXT_DETECTION] == {"epoch": 1, "position": 3}
    resumed = MultiTaskDataLoader(datasets, 2, seed=3)
    resumed.load_state_dict(state)
    assert head + _names(resumed, 5) == names
    assert resumed.step == 11
    with pytest.raises(ValueError, match="seed"):
        MultiTaskDataLoader(datasets, 2, seed=4).load_state_dict(state)


def test_streams_shard_per_process_run_endless_and_resume_exactly() -> None:
    streams = {
        TEXT_REMOVAL: _stream(TEXT_REMOVAL, 10),
        TAMPERED_TEXT_DETECTION: _stream(TAMPERED_TEXT_DETECTION, 7),
    }
    ranks = [
        MultiTaskDataLoader(streams, 2, seed=5, process_index=r, num_processes=2, **STREAMED)
        for r in range(2)
    ]
    with pytest.raises(ValueError, match="is a stream"):
        ranks[0].batches_per_epoch(TEXT_REMOVAL)
    # an epoch of tampering: 7 samples, every other one per process (4 and 3), one batch of 2 each
    first = [_names(r, 1)[0] for r in ranks]
    assert not set(first[0]) & set(first[1]) and all(len(names) == 4 for names in first)
    assert {n.split("/")[0] for n in first[0]} == {TEXT_REMOVAL, TAMPERED_TEXT_DETECTION}
    reference = _names(MultiTaskDataLoader(streams, 2, seed=3, **STREAMED), 9)  # several epochs of both tasks
    removal = [names[:2] for names in reference]  # 5 batches an epoch
    assert sorted(sum(removal[:5], [])) == sorted(
        f"{TEXT_REMOVAL}/{i}" for i in range(10)
    )  # each sample once
    assert removal[5:9] != removal[:4]  # the next epoch is reshuffled
    interrupted = MultiTaskDataLoader(streams, 2, seed=3, **STREAMED)
    head = _names(interrupted, 4)
    state = interrupted.state_dict()
    assert state["tasks"][TAMPERED_TEXT_DETECTION] == {"epoch": 1, "position": 1}
    resumed = MultiTaskDataLoader(streams, 2, seed=3, **STREAMED)
    resumed.load_state_dict(state)
    assert head + _names(resumed, 5) == reference
    tiny = MultiTaskDataLoader({TEXT_REMOVAL: _stream(TEXT_REMOVAL, 1)}, 2, **STREAMED)
    with pytest.raises(ValueError, match="holds less than one batch of 2"):
        next(iter(tiny))


def test_workers_give_the_same_order(datasets: dict[str, Dataset]) -> None:
    subset = {TEXT_SEGMENTATION: datasets[TEXT_SEGMENTATION]}
    plain = _names(MultiTaskDataLoader(subset, 4, seed=2), 5)
    workers = _names(MultiTaskDataLoader(subset, 4, seed=2, num_workers=1), 5)
    assert plain == workers


def test_rewind_with_persistent_workers(datasets: dict[str, Dataset]) -> None:
    """Loading a state into a loader whose workers have already prefetched ahead drops the stale batches."""
    subset = {
        TAMPERED_TEXT_DETECTION: datasets[TAMPERED_TEXT_DETECTION],
        TEXT_REMOVAL: datasets[TEXT_REMOVAL],
    }
    loader = MultiTaskDataLoader(subset, 2, seed=6, num_workers=1)
    _names(loader, 2)
    state = loader.state_dict()
    ahead = _names(loader, 4)  # crosses an epoch boundary of the 7-sample task
    loader.load_state_dict(state)
    assert _names(loader, 4) == ahead
    loader.close()


def test_from_accelerator(datasets: dict[str, Dataset]) -> None:
    class FakeAccelerator:
        process_index, num_processes, device = 1, 2, torch.device("cpu")

    loader = MultiTaskDataLoader.from_accelerator(FakeAccelerator(), datasets, 2, seed=5)
    twin = MultiTaskDataLoader(datasets, 2, seed=5, process_index=1, num_processes=2)
    assert _names(loader, 2) == _names(twin, 2)
    assert next(iter(loader))["pixel_values"].device.type == "cpu"


def _rank_names(rank: int) -> list[str]:
    torch.set_num_threads(1)
    data = {task: _dataset(task, n) for task, n in LENGTHS.items()}
    loader = MultiTaskDataLoader(data, 2, seed=8, process_index=rank, num_processes=2)
    return sum(_names(loader, 1), [])


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_real_processes_see_disjoint_samples() -> None:
    import multiprocessing as mp

    with mp.get_context("fork").Pool(2) as pool:
        first, second = pool.map(_rank_names, [0, 1])
    assert len(first) == len(second) == 6 and not set(first) & set(second)


def test_accelerate_checkpointing(tmp_path, datasets: dict[str, Dataset]) -> None:
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)
    loader = MultiTaskDataLoader.from_accelerator(accelerator, datasets, 2, seed=9)
    accelerator.register_for_checkpointing(loader)
    head = _names(loader, 3)
    accelerator.save_state(str(tmp_path / "ckpt"))
    expected = _names(loader, 3)
    restarted = accelerate.Accelerator(cpu=True)  # as a new run would
    fresh = MultiTaskDataLoader.from_accelerator(restarted, datasets, 2, seed=9)
    restarted.register_for_checkpointing(fresh)
    restarted.load_state(str(tmp_path / "ckpt"))
    assert fresh.step == 3 and _names(fresh, 3) == expected and head != expected

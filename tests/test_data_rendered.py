"""Synthetic training data rendered as it is read (upocr_hf.data.rendered, train.py --data TASK=synthetic:...)."""

import re
import sys
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from conftest import fixed_synthetic_config
from test_training import run_train, tiny_run_args

from upocr_hf.data import MultiTaskDataLoader, UpocrAugment
from upocr_hf.data.rendered import RenderedTaskDataset, SyntheticSource
from upocr_hf.data.synthetic import LOOKS, generate_folders, load_synthetic_folders
from upocr_hf.tasks import DEFAULT_TASKS

SIZE = 64
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base():
    return fixed_synthetic_config(style="train", resave_prob=0.0)


def test_sources_parse_looks_and_weights_and_refuse_the_rest():
    assert SyntheticSource.parse("synthetic:photos").looks == (("photos", 1),)
    assert SyntheticSource.parse("synthetic:photos:3,signs").looks == (("photos", 3), ("signs", 1))
    assert SyntheticSource.names("synthetic:signs") and not SyntheticSource.names("runs/data/TextSeg")
    for bad in (
        "synthetic:",
        "synthetic:poster",
        "synthetic:photos:0",
        "synthetic:photos:x",
        "synthetic:photos,",
    ):
        with pytest.raises(ValueError, match="LOOK\\[:WEIGHT\\]"):
            SyntheticSource.parse(bad)
    with pytest.raises(ValueError, match="named twice"):
        SyntheticSource.parse("synthetic:photos,photos:2")


def test_looks_interleave_by_weight_and_each_counts_its_own_samples():
    source = SyntheticSource.parse("synthetic:photos:3,signs:1")
    assert [source.locate(i) for i in range(8)] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 1),
    ]
    seen = [source.locate(i) for i in range(400)]
    assert len(set(seen)) == 400 and sum(look == 1 for look, _ in seen) == 100


def test_rows_are_what_the_loaders_read_from_the_written_folders(tmp_path, base):
    """Sample j of a look is the generator's index j for that look and seed, row for row."""
    generate_folders(tmp_path, 3, size=SIZE, seed=5, config=replace(base, **LOOKS["photos"]))
    written = load_synthetic_folders(tmp_path, cache_dir=str(tmp_path / "cache"))
    source = SyntheticSource.parse("synthetic:photos")
    for task in DEFAULT_TASKS:
        rendered = RenderedTaskDataset(task, source, size=SIZE, seed=5, base=base)
        for i in range(3):
            row, loaded = rendered[i], written[task][i]
            assert row["task"] == task and row["name"] == f"photos-{loaded['name']}"
            for key in ("image", "target", "mask"):
                if loaded[key] is None:
                    assert row[key] is None, (task, key)
                else:
                    np.testing.assert_array_equal(row[key], np.asarray(loaded[key]), err_msg=f"{task} {key}")


def test_an_epoch_never_repeats_a_sample_and_resuming_continues_exactly(base):
    source = SyntheticSource.parse("synthetic:photos,signs")
    augment = UpocrAugment(SIZE, tasks=DEFAULT_TASKS)
    datasets = {}
    for task in DEFAULT_TASKS:
        datasets[task] = RenderedTaskDataset(task, source, size=SIZE, seed=2, base=base, length=40)
        datasets[task].set_transform(augment)
    assert tuple(datasets["text-removal"][0]["pixel_values"].shape) == (3, SIZE, SIZE)
    loader = MultiTaskDataLoader(datasets, 2, seed=7)
    first = [batch["names"] for batch in islice(iter(loader), 3)]
    state = loader.state_dict()
    following = [batch["names"] for batch in islice(iter(loader), 2)]
    again = MultiTaskDataLoader(datasets, 2, seed=7)
    again.load_state_dict(state)
    assert [batch["names"] for batch in islice(iter(again), 2)] == following
    removal = [name for names in first + following for name in names[:2]]
    assert len(set(removal)) == len(removal)


def test_a_task_the_generator_cannot_render_is_refused(base):
    with pytest.raises(ValueError, match="no data for task 'deblur'"):
        RenderedTaskDataset("deblur", SyntheticSource.parse("synthetic:photos"), size=SIZE, base=base)
    with pytest.raises(IndexError, match="outside"):
        RenderedTaskDataset(
            "text-removal", SyntheticSource.parse("synthetic:photos"), size=SIZE, base=base, length=2
        )[2]


def test_train_py_reads_rendered_sources_and_refuses_bad_ones():
    sys.path.insert(0, str(REPO))
    import train as train_script

    def sources(*data, splits=()):
        flags = ["--data", *data, *(["--train_splits", *splits] if splits else [])]
        return train_script.training_sources(train_script.parse_args(flags))

    read = sources("text-removal=synthetic:photos:3,signs", "text-segmentation=runs/TextSeg")
    assert read == {
        "text-removal": SyntheticSource((("photos", 3), ("signs", 1))),
        "text-segmentation": Path("runs/TextSeg"),
    }
    for data, splits, message in (
        (["text-removal=synthetic:poster"], [], "expected synthetic:LOOK[:WEIGHT]"),
        (["deblur=synthetic:photos"], [], "renders data for"),
        (["text-segmentation=synthetic:photos"], ["text-segmentation=train"], "has no splits"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            sources(*data, splits=splits)


@pytest.mark.slow
def test_train_py_trains_on_rendered_data_alone(tmp_path):
    """Three tasks, no folder: rendered in a DataLoader worker per task."""
    synthetic = [f"{task}=synthetic:photos:3,signs" for task in DEFAULT_TASKS]
    args = tiny_run_args(tmp_path, tmp_path / "run", 2, ["--num_workers", "1"])
    args[args.index("--data") + 1 : args.index("--output_dir")] = synthetic
    result = run_train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()

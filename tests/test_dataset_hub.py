"""`python -m upocr_hf.dataset_hub`: a benchmark folder converted to the uniform schema and pushed with `datasets`'
own `push_to_hub`, the Hub faked; what it uploads loads back as training data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from conftest import fixed_synthetic_config
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from upocr_hf.data import load_task_dataset
from upocr_hf.data.synthetic import generate_folders
from upocr_hf.dataset_hub import main
from upocr_hf.tasks import TEXT_REMOVAL, TEXT_SEGMENTATION

REPO = Path(__file__).resolve().parents[1]


class FakeDatasetHub:
    """Stands in for the Hub calls of `DatasetDict.push_to_hub`: a repository that does not exist yet, uploads
    recorded while their temporary files still exist, and an empty repository file system (no earlier card or
    shards)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import datasets.dataset_dict
        from fsspec.implementations.memory import MemoryFileSystem

        self.created: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.commits: list[dict] = []
        hub = self

        def repo_info(api, repo_id, **kwargs):
            if not hub.created:
                response = httpx.Response(
                    404, request=httpx.Request("GET", f"https://huggingface.co/{repo_id}")
                )
                raise RepositoryNotFoundError(f"{repo_id} not found", response=response)
            return SimpleNamespace(id=repo_id, sha="0" * 40)

        def create_repo(api, repo_id, **kwargs):
            hub.created.append({"repo_id": repo_id, **kwargs})
            return SimpleNamespace(repo_id=repo_id)

        def preupload_lfs_files(api, repo_id, additions, **kwargs):
            for addition in additions:
                hub.files[addition.path_in_repo] = Path(addition.path_or_fileobj).read_bytes()

        def create_commit(api, repo_id, operations, **kwargs):
            for operation in operations:
                if isinstance(operation.path_or_fileobj, bytes):
                    hub.files[operation.path_in_repo] = operation.path_or_fileobj
            hub.commits.append(
                {"repo_id": repo_id, "paths": [op.path_in_repo for op in operations], **kwargs}
            )
            return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/1", oid="1")

        def refuse(*args, **kwargs):
            raise AssertionError("unexpected network call")

        for name, fake in [
            ("repo_info", repo_info),
            ("create_repo", create_repo),
            ("preupload_lfs_files", preupload_lfs_files),
            ("create_commit", create_commit),
            ("create_branch", refuse),
            ("upload_folder", refuse),
        ]:
            monkeypatch.setattr(HfApi, name, fake)
        memory = MemoryFileSystem()
        memory.store.clear()
        monkeypatch.setattr(datasets.dataset_dict, "HfFileSystem", lambda **kwargs: memory)


def test_a_benchmark_folder_is_pushed_in_the_uniform_schema_and_loads_back(tmp_path, monkeypatch, capsys):
    generate_folders(tmp_path / "layouts", 3, size=64, seed=0, config=fixed_synthetic_config())
    folder = tmp_path / "layouts" / "SCUT-EnsText"
    hub = FakeDatasetHub(monkeypatch)
    status = main(["--data", f"{TEXT_REMOVAL}={folder}", "--repo-id", "you/scut-upocr", "--private"])
    assert status == 0, capsys.readouterr().err
    assert "pushed text-removal data" in capsys.readouterr().out
    assert [c["repo_id"] for c in hub.created] == ["you/scut-upocr"] and hub.created[0][
        "repo_type"
    ] == "dataset"
    assert hub.created[0]["private"] is True
    assert sorted(hub.files) == ["README.md", "data/train-00000-of-00001.parquet"]
    assert (
        "you/scut-upocr" == hub.commits[-1]["repo_id"]
        and "uniform schema" in hub.commits[-1]["commit_message"]
    )
    # the uploaded repository, cloned, loads as text-removal data with the rows the layout loader reads
    clone = tmp_path / "clone"
    for path, content in hub.files.items():
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_bytes(content)
    uploaded = load_task_dataset(TEXT_REMOVAL, clone)["train"]
    original = load_task_dataset(TEXT_REMOVAL, folder)["train"]
    assert uploaded.column_names == original.column_names == ["image", "target", "mask", "task", "name"]
    assert uploaded["name"] == original["name"] and set(uploaded["task"]) == {TEXT_REMOVAL}
    for column in ("image", "target", "mask"):
        assert [np.asarray(i).tolist() for i in uploaded[column]] == [
            np.asarray(i).tolist() for i in original[column]
        ], column


def test_a_folder_that_is_no_dataset_is_one_line_and_nothing_is_pushed(tmp_path, monkeypatch, capsys):
    hub = FakeDatasetHub(monkeypatch)
    status = main(["--data", f"{TEXT_REMOVAL}={tmp_path}", "--repo-id", "you/x"])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"upocr_hf.dataset_hub: error: {tmp_path}: missing folder")
    assert not hub.created and not hub.files


def cache_as_hub_dataset(dataset, cache, repo_id):
    """Leave `dataset` (a DatasetDict) in the `datasets` cache `cache` as an online `load_dataset(repo_id)` of a
    Parquet repository leaves it: `OWNER___NAME/default/0.0.0/HASH/`, which an offline `load_dataset(repo_id)`
    then reads."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo_id.split("/")
    shards = cache.parent / "parquet"
    shards.mkdir(parents=True, exist_ok=True)
    for split, rows in dataset.items():
        rows.to_parquet(str(shards / f"{split}.parquet"))
    data_files = {split: [str(shards / f"{split}.parquet")] for split in dataset}
    Parquet(
        cache_dir=str(cache), dataset_name=name, hash="0123456789abcdef", data_files=data_files
    ).download_and_prepare()
    (cache / f"{owner}___{name}").mkdir()
    shutil.move(next((cache / name).glob("default-*")), cache / f"{owner}___{name}" / "default")


def write_imagefolder(dataset, root):
    """`dataset` as an `imagefolder`: per split, PNG files and a `metadata.jsonl` with `X_file_name` columns."""
    for split, rows in dataset.items():
        lines = []
        for row in rows:
            entry = {"name": row["name"]}
            for column in ("image", "target", "mask"):
                path = root / split / column / f"{row['name']}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                row[column].save(path)
                entry[f"{column}_file_name"] = f"{column}/{row['name']}.png"
            lines.append(json.dumps(entry) + "\n")
        (root / split / "metadata.jsonl").write_text("".join(lines))
    return root


@pytest.mark.slow
def test_training_and_evaluation_read_hub_ids_offline_and_imagefolders(tmp_path):
    layouts = tmp_path / "layouts"
    generate_folders(layouts, 8, size=64, seed=0, config=fixed_synthetic_config())
    generate_folders(layouts, 2, size=64, seed=1, split="test", config=fixed_synthetic_config())
    cache = tmp_path / "datasets-cache"
    segmentation = load_task_dataset(TEXT_SEGMENTATION, layouts / "TextSeg", ["train", "test"])
    cache_as_hub_dataset(segmentation, cache, "you/textseg-upocr")
    removal = write_imagefolder(
        load_task_dataset(TEXT_REMOVAL, layouts / "SCUT-EnsText"), tmp_path / "folder"
    )
    loaded = load_task_dataset(TEXT_REMOVAL, removal, ["train"])["train"]
    assert set(loaded.column_names) == {"image", "target", "mask", "name", "task"} and len(loaded) == 8
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

    def run(*command):
        return subprocess.run(
            [sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )

    trained = run(
        "train.py", "--data", f"text-removal={removal}", "text-segmentation=you/textseg-upocr",
        "--train_splits", "text-segmentation=train", "--validation_data", "text-segmentation=you/textseg-upocr",
        "--eval_steps", "2", "--output_dir", str(tmp_path / "run"), "--config", "tiny", "--image_size", "64",
        "--max_steps", "2", "--batch_size_per_task", "2", "--perceptual_loss", "off", "--num_workers", "0",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "validation at step 2" in trained.stderr
    record = tmp_path / "eval.json"
    evaluated = run(
        "-m", "upocr_hf.evaluation", "--model", str(tmp_path / "run" / "final"), "--task", "text-segmentation",
        "--data", "you/textseg-upocr", "--split", "test", "--no-progress", "--output-json", str(record),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(record.read_text())["metrics"]["num_samples"] == 2
    absent = run(
        "-m", "upocr_hf.evaluation", "--baseline", "--task", "text-segmentation", "--data", "you/absent"
    )
    assert absent.returncode == 2
    assert "you/absent: no such folder; as a Hub dataset id: Couldn't reach 'you/absent'" in absent.stderr


@pytest.mark.slow
def test_streamed_training_resumes_exactly(tmp_path):
    """`--streaming`: what `load_dataset` reads (here an imagefolder) is trained from a stream, mixed with a task
    prepared as usual; a run resumed from a checkpoint mid-epoch ends with the weights of the run it continues."""
    from safetensors.torch import load_file

    layouts = tmp_path / "layouts"
    generate_folders(layouts, 8, size=64, seed=0, config=fixed_synthetic_config())
    removal = write_imagefolder(
        load_task_dataset(TEXT_REMOVAL, layouts / "SCUT-EnsText"), tmp_path / "folder"
    )

    def train(output_dir, *extra):
        command = [
            sys.executable, "train.py", "--data", f"text-removal={removal}",
            f"tampered-text-detection={layouts / 'Tampered-IC13'}", "--streaming", "true",
            "--output_dir", str(output_dir), "--config", "tiny", "--image_size", "64", "--max_steps", "6",
            "--batch_size_per_task", "2", "--perceptual_loss", "off", "--num_workers", "0", "--warmup_steps", "2",
            "--lr_block", "1", "--checkpointing_steps", "3", *extra,
        ]  # fmt: skip
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    straight = train(
        tmp_path / "straight"
    )  # 4 batches an epoch: step 3 is mid-epoch, steps 5-6 the next epoch
    assert "streamed: ['text-removal']; prepared first: ['tampered-text-detection']" in straight.stderr
    shutil.copytree(
        tmp_path / "straight" / "checkpoints" / "step_3", tmp_path / "resumed" / "checkpoints" / "step_3"
    )
    resumed = train(tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    assert "at step 3" in resumed.stderr
    expected = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    actual = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for key in expected:  # same ops in the same order on the same machine
        assert torch.allclose(expected[key], actual[key], atol=1e-6, rtol=0), key

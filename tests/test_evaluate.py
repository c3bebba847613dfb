"""The evaluation command: end to end on a tiny model and generated data, and its wiring with an oracle."""

import json

import numpy as np
import pytest
import torch
from conftest import fixed_synthetic_config
from PIL import Image
from transformers import pipeline

from upocr_hf import UpocrConfig, UpocrImageProcessor, UpocrModel
from upocr_hf.data import load_task_datasets
from upocr_hf.data.synthetic import generate_folders
from upocr_hf.evaluation import TrivialBaseline, evaluate_model, main
from upocr_hf.tasks import (
    DEFAULT_TASKS,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
    get_task,
)


@pytest.fixture(scope="module")
def test_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    generate_folders(root, 3, size=96, seed=3, split="test", config=fixed_synthetic_config())
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import tiny_config_kwargs

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)  # the same random model whichever tests ran before
    UpocrModel(UpocrConfig(**tiny_config_kwargs())).save_pretrained(folder)
    UpocrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("task", list(DEFAULT_TASKS))
def test_command_runs_end_to_end_and_writes_json(task, test_data, model_dir, tmp_path, capsys):
    output = tmp_path / "figures.json"
    predictions = tmp_path / "predictions"
    code = main([
        "--model", str(model_dir), "--task", task, "--data", str(test_data / get_task(task).dataset),
        "--output-json", str(output), "--save-predictions", str(predictions), "--no-progress", "--batch-size", "2",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "UPOCR (paper)" in printed and f"ours ({model_dir.name})" in printed
    record = json.loads(output.read_text())
    assert record["task"] == task and record["split"] == "test"
    assert record["metrics"]["num_samples"] == 3
    # the folder is the generator's: the record says so (the model card must not call it the real dataset)
    assert record["dataset"] == "synthetic (upocr_hf.data.synthetic): 3 images 96×96, all style, seed 3"
    expected_keys = {
        TEXT_REMOVAL: {"psnr", "mssim", "mse", "age", "peps", "pceps", "fid"},
        TEXT_SEGMENTATION: {"fg_iou", "precision", "recall", "f_score"},
        TAMPERED_TEXT_DETECTION: {"real_iou", "tampered_iou", "miou", "mf"},
    }[task]
    assert expected_keys <= record["metrics"].keys()
    saved = sorted(predictions.iterdir())
    assert len(saved) == 3 and all(p.suffix == ".png" for p in saved)
    with Image.open(saved[0]) as image:
        assert image.size == (96, 96)


class OraclePipeline:
    """Returns each sample's own target as the prediction, in the pipeline's result format."""

    def __init__(self, targets):
        self.targets = targets

    def __call__(self, images, task, **kwargs):
        results = []
        for image in images:
            target = np.asarray(self.targets[image.tobytes()].convert("RGB"))
            if task == TEXT_REMOVAL:
                results.append({"image": Image.fromarray(target)})
            elif task == TEXT_SEGMENTATION:
                results.append({"mask": target.mean(axis=2) > 200})
            else:
                classes = np.argmin(
                    [np.abs(target.astype(int) - np.array(c)).sum(axis=2) for c in TAMPER_CLASS_RGB], axis=0
                )
                results.append({"class_map": classes.astype(np.uint8)})
        return results


@pytest.mark.parametrize("task", list(DEFAULT_TASKS))
def test_a_perfect_prediction_scores_perfectly(task, test_data):
    dataset = load_task_datasets({task: test_data / get_task(task).dataset}, {task: ["test"]})[task]
    oracle = OraclePipeline(
        {dataset[i]["image"].convert("RGB").tobytes(): dataset[i]["target"] for i in range(3)}
    )
    figures = evaluate_model(oracle, dataset, task, progress=False, batch_size=2)
    if task == TEXT_REMOVAL:  # identical images are left out of every average, as the published script does
        assert figures["num_identical"] == 3 and figures["psnr"] is None
    elif task == TEXT_SEGMENTATION:
        assert figures["fg_iou"] == pytest.approx(1.0) and figures["f_score"] == pytest.approx(1.0)
    else:
        assert figures["miou"] == pytest.approx(1.0) and figures["mf"] == pytest.approx(1.0)


@pytest.mark.parametrize("task", list(DEFAULT_TASKS))
def test_trivial_baseline_scores(task, test_data, tmp_path):
    output = tmp_path / "baseline.json"
    assert main(["--baseline", "--task", task, "--data", str(test_data / get_task(task).dataset),
                 "--output-json", str(output), "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads(output.read_text())["metrics"]
    if task == TEXT_REMOVAL:  # the input itself: finite PSNR (text pixels differ), no identical pairs
        assert metrics["num_identical"] == 0 and 5 < metrics["psnr"] < 60
    elif task == TEXT_SEGMENTATION:
        assert metrics["fg_iou"] == 0.0 and metrics["recall"] == 0.0
    else:
        assert metrics["miou"] == 0.0 and metrics["mf"] == 0.0


def test_keep_background_removal_scores_the_composited_output(test_data, model_dir, tmp_path):
    data = str(test_data / get_task(TEXT_REMOVAL).dataset)
    output, predictions = tmp_path / "kept.json", tmp_path / "kept"
    assert main(["--model", str(model_dir), "--task", TEXT_REMOVAL, "--data", data, "--keep-background",
                 "--output-json", str(output), "--save-predictions", str(predictions), "--no-progress"]) == 0  # fmt: skip
    record = json.loads(output.read_text())
    assert record["keep_background"] is True and "keep background" in record["protocol"]
    dataset = load_task_datasets({TEXT_REMOVAL: data}, {TEXT_REMOVAL: ["test"]})[TEXT_REMOVAL]
    sample = dataset[0]
    with Image.open(predictions / f"{sample['name']}.png") as saved:
        kept, source = np.asarray(saved.convert("RGB")), np.asarray(sample["image"].convert("RGB"))
    pipe = pipeline("upocr", model=str(model_dir))
    region = pipe(sample["image"], task=TEXT_REMOVAL, keep_background=True)["text_mask"]
    plain = np.asarray(pipe(sample["image"], task=TEXT_REMOVAL)["image"])
    # a random-weight model changes (nearly) every pixel; keep-background copies the input outside the text region
    assert (kept[~region] == source[~region]).all() and not region.all()
    assert (plain[~region] != source[~region]).any(axis=-1).mean() > 0.5
    with pytest.raises(SystemExit):
        main(["--baseline", "--task", TEXT_REMOVAL, "--data", data, "--keep-background"])
    with pytest.raises(SystemExit):
        main(["--model", str(model_dir), "--task", TEXT_SEGMENTATION, "--data", data, "--keep-background"])


def _removal_rows(test_data):
    data = str(test_data / get_task(TEXT_REMOVAL).dataset)
    return load_task_datasets({TEXT_REMOVAL: data}, {TEXT_REMOVAL: ["test"]})[TEXT_REMOVAL]


def test_the_threshold_is_the_model_folders_unless_given_and_reads_the_keep_background_region(
    test_data, model_dir, tmp_path
):
    folder = tmp_path / "strict"
    UpocrModel.from_pretrained(model_dir).save_pretrained(folder)
    UpocrImageProcessor(size={"height": 64, "width": 64}, segmentation_threshold=0.95).save_pretrained(folder)

    def record(task, *flags):
        data, output = str(test_data / get_task(task).dataset), tmp_path / "record.json"
        main(["--model", str(folder), "--task", task, "--data", data, "--output-json", str(output), "--no-progress",
              *flags])  # fmt: skip
        return json.loads(output.read_text())

    # the random model's scores sit near 0.5: at the folder's 0.95 nothing is text, at 0.05 (nearly) everything
    strict, loose = record(TEXT_SEGMENTATION), record(TEXT_SEGMENTATION, "--threshold", "0.05")
    assert strict["protocol"].endswith("threshold 0.95") and loose["protocol"].endswith("threshold 0.05")
    assert strict["metrics"]["recall"] == 0 < loose["metrics"]["recall"]
    kept, changed = record(TEXT_REMOVAL, "--keep-background"), record(TEXT_REMOVAL, "--keep-background",
                                                                       "--threshold", "0.05")  # fmt: skip
    assert "threshold 0.95" in kept["protocol"] and "threshold 0.05" in changed["protocol"]
    rows = _removal_rows(test_data)
    identity = evaluate_model(TrivialBaseline(), rows, TEXT_REMOVAL, progress=False)["psnr"]
    # no text region at the folder's threshold: the input comes back
    assert kept["metrics"]["psnr"] == pytest.approx(identity, abs=1e-9)
    assert abs(changed["metrics"]["psnr"] - identity) > 0.01


def test_evaluation_defaults_to_the_shipped_model(test_data, tmp_path, monkeypatch, capsys):
    import upocr_hf

    output = tmp_path / "shipped.json"
    data = str(test_data / get_task(TEXT_SEGMENTATION).dataset)
    assert (
        main(["--task", TEXT_SEGMENTATION, "--data", data, "--output-json", str(output), "--no-progress"])
        == 0
    )
    assert json.loads(output.read_text())["model"] == upocr_hf.DEFAULT_MODEL
    monkeypatch.setattr(upocr_hf, "DEFAULT_MODEL", str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--task", TEXT_SEGMENTATION, "--data", data])
    assert exit_info.value.code == 2 and "--model is required" in capsys.readouterr().err

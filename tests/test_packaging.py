"""Packaging a trained model with its measured figures, and refusing one that does not beat the trivial baselines."""

from __future__ import annotations

import json

import pytest

from upocr_hf import UpocrImageProcessor, UpocrModel
from upocr_hf.packaging import (
    BaselineNotBeatenError,
    IncumbentNotBeatenError,
    compare_to_baselines,
    compare_to_incumbent,
    main,
    package_model,
)


def record(task: str, **metrics: float) -> dict:
    return {"model": "m", "task": task, "data": f"data/{task}", "split": "test", "protocol": "resize to 64x64",
            "metrics": {**metrics, "num_samples": 6}}  # fmt: skip


def write_records(folder, records: dict) -> list[str]:
    """Each record as `folder/KEY.json`, as `python -m upocr_hf.evaluation --output-json` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, rec in records.items():
        (folder / f"{key}.json").write_text(json.dumps(rec))
    return [str(folder / f"{key}.json") for key in records]


EVALUATIONS = {
    "text-removal": record("text-removal", psnr=29.5, mssim=0.95, mse=0.001),
    "text-segmentation": record("text-segmentation", fg_iou=0.61, f_score=0.75),
    "tampered-text-detection": record("tampered-text-detection", mf=0.42, miou=0.5),
}
BASELINES = {
    "text-removal": record("text-removal", psnr=25.4, mssim=0.9, mse=0.003),
    "text-segmentation": record("text-segmentation", fg_iou=0.0, f_score=0.0),
    "tampered-text-detection": record("tampered-text-detection", mf=0.0, miou=0.3),
}


def test_comparison_lists_each_task_against_its_baseline():
    table = compare_to_baselines(EVALUATIONS, BASELINES)
    assert table["text-removal"] == {
        "task": "text-removal", "metric": "psnr", "model": 29.5, "baseline": 25.4, "margin": 1.0, "beats": True,
    }  # fmt: skip
    assert table["tampered-text-detection"]["metric"] == "mf"


def test_a_model_within_the_margin_is_refused_naming_the_task():
    weak = {**EVALUATIONS, "text-removal": record("text-removal", psnr=26.0)}
    with pytest.raises(
        BaselineNotBeatenError, match=r"text-removal: psnr 26.0000 .* 25.4000 by the required 1.0"
    ):
        compare_to_baselines(weak, BASELINES)
    with pytest.raises(BaselineNotBeatenError, match="text-segmentation: no baseline record"):
        compare_to_baselines(EVALUATIONS, {k: v for k, v in BASELINES.items() if k != "text-segmentation"})


def test_a_task_passes_when_one_of_its_protocols_beats_the_baseline_and_the_card_says_which(
    trained_dir, tmp_path
):
    plain = record("text-removal", psnr=24.0)
    kept = {**record("text-removal", psnr=28.0), "keep_background": True}
    evaluations = {**EVALUATIONS, "text-removal": plain, "text-removal (keep background)": kept}
    table = compare_to_baselines(evaluations, BASELINES)
    assert (table["text-removal"]["beats"], table["text-removal (keep background)"]["beats"]) == (False, True)
    card = (package_model(trained_dir, tmp_path / "out", evaluations, BASELINES) / "README.md").read_text()
    assert "text-removal vs trivial baseline**: psnr 24.0000 vs 25.4000: does NOT beat it" in card
    assert "text-removal (keep background) vs trivial baseline**: psnr 28.0000 vs 25.4000: beats it" in card


@pytest.fixture
def trained_dir(tiny_model, tmp_path):
    folder = tmp_path / "final"
    tiny_model.save_pretrained(folder)
    UpocrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)  # as train.py saves it
    return folder


def test_package_writes_a_loadable_folder_with_the_figures_in_its_card(trained_dir, tmp_path, tiny_model):
    command = tmp_path / "train_default_model.sh"
    command.write_text("python train.py --config compact\n")
    output = package_model(
        trained_dir, tmp_path / "default_model", EVALUATIONS, BASELINES, {"steps": 2400}, "synthetic only",
        extra_files=[command], card_appendix="## Lineage\n\n![learning curve](learning_curve.png)\n",
    )  # fmt: skip
    card = (output / "README.md").read_text()
    assert "29.50" in card and "synthetic only" in card
    assert card.endswith("\n\n## Lineage\n\n![learning curve](learning_curve.png)\n")
    assert json.loads((output / "eval_results.json").read_text()) == EVALUATIONS
    assert "psnr 29.5000 vs 25.4000" in card
    assert (output / "train_default_model.sh").read_text() == command.read_text()
    assert (output / "preprocessor_config.json").exists()
    reloaded = UpocrModel.from_pretrained(output)
    assert all(
        (a == b).all() for a, b in zip(reloaded.state_dict().values(), tiny_model.state_dict().values())
    )
    assert not [p.name for p in output.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert (
        output.stat().st_mode & 0o777 == 0o755
        and (output / "model.safetensors").stat().st_mode & 0o777 == 0o644
    )


def test_a_refused_model_leaves_the_shipped_folder_untouched(trained_dir, tmp_path):
    output = package_model(trained_dir, tmp_path / "default_model", EVALUATIONS, BASELINES)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    weak = {**EVALUATIONS, "text-segmentation": record("text-segmentation", fg_iou=0.05)}
    paths = {
        "eval": write_records(tmp_path / "eval", weak),
        "base": write_records(tmp_path / "base", BASELINES),
    }
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(trained_dir), "--output", str(output), "--evaluations", *paths["eval"],
              "--baselines", *paths["base"]])  # fmt: skip
    assert exit_info.value.code == 1
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before


def test_a_full_disk_while_packaging_leaves_the_shipped_folder_untouched(
    trained_dir, tmp_path, monkeypatch, capsys
):
    import errno

    output = package_model(trained_dir, tmp_path / "default_model", EVALUATIONS, BASELINES)
    before = {p.name: p.read_bytes() for p in output.iterdir()}

    def full_disk(self, folder, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(UpocrModel, "save_pretrained", full_disk)
    paths = {
        "eval": write_records(tmp_path / "eval", EVALUATIONS),
        "base": write_records(tmp_path / "base", BASELINES),
    }
    listing = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(trained_dir), "--output", str(output), "--evaluations", *paths["eval"],
              "--baselines", *paths["base"]])  # fmt: skip
    assert exit_info.value.code == 2
    message = (
        capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    )  # after transformers' progress bar
    assert message.startswith(
        f"not packaged: {trained_dir} into {output}: [Errno 28] No space left on device ("
    )
    assert message.endswith("MiB free there)")
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no staging folder left behind


def test_a_folder_shipped_inside_the_package_leaves_the_code_out_and_still_loads(trained_dir, tmp_path):
    from transformers import AutoModel, pipeline

    output = package_model(
        trained_dir, tmp_path / "default_model", EVALUATIONS, BASELINES, include_code=False
    )
    assert not list(output.glob("*.py"))
    config = json.loads((output / "config.json").read_text())
    assert "auto_map" not in config and "custom_pipelines" not in config
    assert isinstance(AutoModel.from_pretrained(output), UpocrModel)
    pipe = pipeline("upocr", model=str(output))
    assert pipe.image_processor.size == {"height": 64, "width": 64}


def test_a_model_replaces_the_shipped_one_only_when_it_scores_higher(trained_dir, tmp_path):
    incumbent = {
        "text-removal": record("text-removal", psnr=30.0, mssim=0.96),
        "text-segmentation": record("text-segmentation", fg_iou=0.40),
        "tampered-text-detection": record("tampered-text-detection", mf=0.30),
        "not-shared": record("text-segmentation", fg_iou=0.0),
    }
    # the mean of MSSIM, fgIoU and mF over the shared records: (0.95 + 0.61 + 0.42) / 3 vs (0.96 + 0.40 + 0.30) / 3
    new, old = compare_to_incumbent(EVALUATIONS, incumbent)
    assert (round(new, 4), round(old, 4)) == (0.66, 0.5533)
    stronger = {**incumbent, "tampered-text-detection": record("tampered-text-detection", mf=0.9)}
    with pytest.raises(IncumbentNotBeatenError, match=r"0\.6600 does not beat the incumbent's 0\.7533"):
        compare_to_incumbent(EVALUATIONS, stronger)
    with pytest.raises(IncumbentNotBeatenError, match="share no evaluation record"):
        compare_to_incumbent(EVALUATIONS, {"other": record("other", x=1.0)})

    output = package_model(trained_dir, tmp_path / "default_model", EVALUATIONS, BASELINES)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    shipped = {
        key: rec for key, rec in stronger.items() if key != "not-shared"
    }  # one record per task on disk
    paths = {kind: write_records(tmp_path / kind, records)
             for kind, records in (("eval", EVALUATIONS), ("base", BASELINES), ("incumbent", shipped))}  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(trained_dir), "--output", str(output), "--evaluations", *paths["eval"],
              "--baselines", *paths["base"], "--incumbent", *paths["incumbent"]])  # fmt: skip
    assert exit_info.value.code == 1
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before


def test_a_higher_score_does_not_buy_a_lost_baseline_comparison(trained_dir, tmp_path):
    # the incumbent's whole-image removal beats the input by more than 1 dB; the new one's falls within the margin,
    # while its segmentation and tampering gains lift the selection score
    incumbent = {
        "text-removal": record("text-removal", psnr=27.0, mssim=0.95),
        "text-removal-keep-background": record("text-removal", psnr=33.0, mssim=0.97),
        "text-segmentation": record("text-segmentation", fg_iou=0.40),
        "tampered-text-detection": record("tampered-text-detection", mf=0.30),
    }
    new = {
        **incumbent,
        "text-removal": record("text-removal", psnr=26.2, mssim=0.95),
        "text-segmentation": record("text-segmentation", fg_iou=0.60),
    }
    new_score, old_score = compare_to_incumbent(new, incumbent)  # no baselines: the score alone passes
    assert new_score > old_score
    with pytest.raises(IncumbentNotBeatenError, match=(
        r"text-removal: psnr 26\.2000 no longer beats the trivial baseline's 25\.4000 by the required 1\.0, which "
        r"the incumbent's 27\.0000 does")):  # fmt: skip
        compare_to_incumbent(new, incumbent, BASELINES)
    # a comparison the incumbent lost too may stay lost; one the new model has no record of counts as lost
    weak_incumbent = {**incumbent, "text-removal": record("text-removal", psnr=26.0, mssim=0.95)}
    compare_to_incumbent(new, weak_incumbent, BASELINES)
    without_whole_image = {k: v for k, v in new.items() if k != "text-removal"}
    with pytest.raises(IncumbentNotBeatenError, match="text-removal: the new model has no record"):
        compare_to_incumbent(without_whole_image, incumbent, BASELINES)

    output = package_model(trained_dir, tmp_path / "default_model", incumbent, BASELINES)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    with pytest.raises(IncumbentNotBeatenError, match="no longer beats"):
        package_model(trained_dir, output, new, BASELINES, incumbent=incumbent)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before


def test_the_packaged_folder_keeps_the_trained_folders_inference_mode_and_the_card_says_it(
    trained_dir, tmp_path
):
    UpocrImageProcessor(size={"height": 64, "width": 64}, do_tile=True).save_pretrained(trained_dir)
    output = package_model(trained_dir, tmp_path / "default_model", EVALUATIONS, BASELINES)
    assert UpocrImageProcessor.from_pretrained(output).do_tile
    assert (
        "native-resolution tiles of 64×64 px, segmentation threshold 0.4"
        in (output / "README.md").read_text()
    )


def test_words_left_readable_count_against_a_removal_model_whatever_its_pixel_similarity():
    # the same MSSIM: the model whose outputs an OCR engine still reads 40 % of the words in loses to the one at 5 %
    legible = {"text-removal": record("text-removal", psnr=33.0, mssim=0.95, readable_words=40.0)}
    erased = {"text-removal": record("text-removal", psnr=33.0, mssim=0.95, readable_words=5.0)}
    new, old = compare_to_incumbent(erased, legible)
    assert (round(new, 4), round(old, 4)) == (0.95, 0.775)  # (0.95 + 0.95) / 2 vs (0.95 + 0.60) / 2
    # a slightly higher MSSIM does not buy 35 points more readable words
    sharper = {"text-removal": record("text-removal", psnr=34.0, mssim=0.97, readable_words=40.0)}
    with pytest.raises(IncumbentNotBeatenError, match=r"0\.7850 does not beat the incumbent's 0\.9500"):
        compare_to_incumbent(sharper, erased)

"""scripts/default_model_report.py: the learning curve read from a train.py log and the configuration study's table."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "default_model_report.py"


def load_report():
    return load_script(SCRIPT, "default_model_report")


def records(psnr: float, fg_iou: float, mf: float) -> dict[str, dict]:
    """Held-out records as the segment script's evaluations write them, keyed by file stem."""
    base = {"model": "m", "split": "test", "protocol": "resize to 512x512"}
    return {
        "text-removal": {**base, "task": "text-removal", "metrics": {"psnr": psnr, "mssim_x100": 88.0, "mssim": 0.88}},
        "text-removal-keep-background": {
            **base, "task": "text-removal", "keep_background": True,
            "metrics": {"psnr": psnr + 4, "mssim_x100": 90.0, "mssim": 0.9},
        },
        "text-segmentation": {**base, "task": "text-segmentation", "metrics": {"fg_iou": fg_iou, "f_score": 0.8}},
        "tampered-text-detection": {
            **base, "task": "tampered-text-detection", "metrics": {"mf": mf, "tampered_f_score": 0.37},
        },
    }  # fmt: skip


def write_run(root: Path, name: str, log: str, wall_seconds: list[int], evaluations: dict | None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "train.log").write_text(log)
    (run / "wall_seconds").write_text("".join(f"{s}\n" for s in wall_seconds))
    if evaluations is not None:
        folder = root / "eval" / name / "new"
        folder.mkdir(parents=True)
        for stem, record in evaluations.items():
            (folder / f"{stem}.json").write_text(json.dumps(record))
    return run


LOG = (
    'INFO step 25: {"loss": 1.5, "lr": 0.0003}\n'
    "INFO validation at step 25: score 0.6100\n"
    'INFO step 50: {"loss": 1.2, "lr": 0.0002}\n'
    'INFO step 25: {"loss": 1.4, "lr": 0.0003}\n'  # a resumed run logs step 25 again: the last one wins
)


def test_the_curve_is_read_from_the_log_and_a_resumed_step_keeps_its_last_value(tmp_path):
    (tmp_path / "train.log").write_text(LOG)
    curve = load_report().read_curve(tmp_path / "train.log")
    assert curve == {"loss": [(25, 1.4), (50, 1.2)], "validation_score": [(25, 0.61)]}


def test_the_study_table_has_a_row_per_configuration_with_its_steps_hours_and_gate_score(tmp_path):
    from upocr_hf.hub import load_evaluation_results
    from upocr_hf.packaging import selection_score

    report = load_report()
    evaluated = records(psnr=30.25, fg_iou=0.661, mf=0.472)
    small = write_run(tmp_path, "study-1200-256", LOG, [1000, 260], evaluated)
    large = write_run(tmp_path, "study-1200-512", LOG, [1260], None)  # stopped before its evaluation
    by_key = load_evaluation_results(sorted((tmp_path / "eval/study-1200-256/new").glob("*.json")))
    before = write_run(tmp_path, "start", LOG, [0], records(psnr=29.5, fg_iou=0.6, mf=0.41))
    start_records = load_evaluation_results(sorted((tmp_path / "eval/start/new").glob("*.json")))
    start = before / "eval_results.json"  # the starting folder's figures, keyed as its card keys them
    start.write_text(json.dumps(start_records))
    out = tmp_path / "study.md"
    report.main(["study", "--runs", f"256={small}", f"512={large}", "--evaluations-root", str(tmp_path / "eval"),
                 "--start", str(start), "--out", str(out)])  # fmt: skip
    header, rule, row_start, row_256, row_512 = out.read_text().splitlines()
    assert header.startswith("| training crop (px) | steps | hours |") and rule.startswith("| --- |")
    score, start_score = selection_score(by_key), selection_score(start_records)
    assert (
        row_start == f"| start | – | – | 29.50 / 88.00 | 33.50 | 0.600 | 0.410 / 0.370 | {start_score:.4f} |"
    )
    assert row_256 == (f"| 256 | 50 | 0.35 | 30.25 / 88.00 | 34.25 | 0.661 | 0.472 / 0.370 | {score:.4f} |")
    assert row_512.startswith("| 512 | – | – | not evaluated")


def test_a_segment_records_its_crop_and_validation_sizes_and_the_plot_shows_mixed_lineages(tmp_path):
    report = load_report()
    run = write_run(tmp_path, "s7", LOG, [900], None)
    (run / "train_args.json").write_text(
        json.dumps({"init_from": "shipped", "max_steps": 60, "seed": 3, "batch_size_per_task": 4,
                    "data": ["a", "b", "c"], "image_size": 384})
    )  # fmt: skip
    (run / "best").mkdir()
    (run / "best" / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 512, "width": 512}})
    )
    previous = tmp_path / "previous.json"  # an older segment that recorded neither size
    previous.write_text(json.dumps([{"segment": "s6", "init_from": "x", "steps": 50, "seed": 1,
                                     "images_per_step": 12, "wall_time_s": 60,
                                     "curve": {"loss": [[50, 1.3]], "validation_score": [[50, 0.6]]}}]))  # fmt: skip
    lineage = tmp_path / "lineage.json"
    report.main(["lineage", "--previous", str(previous), "--segment", "s7", "--run", str(run), "--command", "c",
                 "--wall-time", "900", "--out", str(lineage)])  # fmt: skip
    segments = json.loads(lineage.read_text())
    assert [s["segment"] for s in segments] == ["s6", "s7"]
    assert (segments[1]["steps"], segments[1]["planned_steps"]) == (50, 60)
    assert (segments[1]["image_size"], segments[1]["validation_size"]) == (384, 512)
    report.main(["plot", "--lineage", str(lineage), "--out", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_the_cards_held_out_score_is_that_of_the_weights_that_landed(tmp_path):
    report = load_report()
    curve = {"loss": [[500, 1.5], [750, 1.4]], "validation_score": [[500, 0.7042], [750, 0.7027]]}
    segment = {
        "init_from": "x",
        "steps": 750,
        "seed": 1,
        "images_per_step": 12,
        "wall_time_s": 3600,
        "curve": curve,
        "command": "c",
    }
    lineage = tmp_path / "lineage.json"
    lineage.write_text(json.dumps([{**segment, "segment": "best-run"},  # recorded before `weights`: the best
                                   {**segment, "segment": "final-run", "weights": "final"}]))  # fmt: skip
    report.main(["card", "--lineage", str(lineage), "--out", str(tmp_path / "card.md")])
    rows = {line.split(" | ")[0]: line for line in (tmp_path / "card.md").read_text().splitlines()}
    assert "| 0.7042 |" in rows["| best-run"] and "| 0.7027 |" in rows["| final-run"]


def test_the_contact_sheet_draws_a_folder_saved_with_its_code(tmp_path):
    """A training run's best/ folder carries the pipeline code, which transformers runs only as remote code: the
    sheet must use the package's pipeline and still draw every task's input, output and target."""
    import argparse

    from conftest import fixed_synthetic_config, randomised_tiny_model
    from PIL import Image

    from upocr_hf import UpocrImageProcessor
    from upocr_hf.data.synthetic import generate_folders
    from upocr_hf.hub import prepare_hub_folder

    folder = prepare_hub_folder(randomised_tiny_model(), UpocrImageProcessor(size=64), tmp_path / "best")
    assert (folder / "pipeline_upocr.py").is_file()
    generate_folders(tmp_path / "data", 2, size=64, split="test", config=fixed_synthetic_config())
    out = tmp_path / "sheet.png"
    args = argparse.Namespace(model=str(folder), data=str(tmp_path / "data"), per_task=1, out=str(out))
    load_report().contact_sheet(args)
    with Image.open(out) as sheet:
        assert sheet.size == (3 * 256 + 8, 3 * (256 + 4) + 20)

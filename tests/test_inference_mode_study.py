"""scripts/inference_mode_study.py: the mosaics it builds and a resumable run on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import fixed_synthetic_config, load_script, randomised_tiny_model
from PIL import Image

from upocr_hf import UpocrImageProcessor
from upocr_hf.data.synthetic import generate_folders

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "inference_mode_study.py"


def load_study():
    return load_script(SCRIPT, "inference_mode_study")


def test_mosaics_paste_each_row_in_reading_order_and_drop_leftovers():
    rows = [
        {"image": Image.new("RGB", (4, 2), (i, 0, 0)), "target": Image.new("L", (4, 2), i), "mask": None,
         "task": "text-segmentation"}
        for i in range(10)
    ]  # fmt: skip
    (mosaic,) = load_study().mosaics(rows, grid=3)
    assert mosaic["image"].size == (12, 6) and mosaic["mask"] is None
    target = np.asarray(mosaic["target"])
    assert [int(target[y * 2, x * 4]) for y in range(3) for x in range(3)] == list(range(9))


def test_a_run_scores_every_mode_and_resumes_without_recomputing(tmp_path, capsys):
    model_dir = tmp_path / "model"
    randomised_tiny_model().save_pretrained(model_dir)
    UpocrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(model_dir)
    generate_folders(tmp_path / "data", 9, size=64, seed=1, split="test", config=fixed_synthetic_config())
    argv = ["--model", str(model_dir), "--data", str(tmp_path / "data"), "--sizes", "64", "--tile-sizes", "64",
            "--thresholds", "0.3", "0.5", "--out", str(tmp_path / "study")]  # fmt: skip
    assert load_study().main(argv) == 0
    journal = tmp_path / "study" / "study.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    keys = {(r["set"], r["task"], r["mode"], r["variant"]) for r in records}
    # tiles are skipped where every image fits one tile (the held-out set), run on the 192-px mosaics
    assert ("held-out", "text-removal", "resize 64", "keep background") in keys
    assert ("mosaic", "text-segmentation", "tiles 64", "threshold 0.5") in keys
    assert not any(s == "held-out" and m == "tiles 64" for s, _, m, _ in keys)
    assert len(records) == 3 * (2 + 2 + 1)  # resize on both sets, tiles on the mosaics only
    before = journal.read_text()
    assert load_study().main(argv) == 0
    assert journal.read_text() == before
    assert "| mosaic | tampered-text-detection | tiles 64 |" in (tmp_path / "study" / "study.md").read_text()

"""The tampered-region rule chosen for a model: saved in its folder, applied by the pipeline and the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixed_synthetic_config, load_script, tiny_config_kwargs

from upocr_hf import UpocrConfig, UpocrModel
from upocr_hf.data.synthetic import generate_folders
from upocr_hf.evaluation import main as evaluate_main
from upocr_hf.hub import load_evaluation_results
from upocr_hf.image_processing_upocr import UpocrImageProcessor
from upocr_hf.pipeline_upocr import UpocrPipeline
from upocr_hf.tasks import TAMPERED_TEXT_DETECTION, get_task


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ruled-model")
    torch.manual_seed(0)
    UpocrModel(UpocrConfig(**tiny_config_kwargs())).save_pretrained(folder)
    UpocrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tamper_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rule-data")
    generate_folders(root, 3, size=64, seed=4, split="test", tasks=[TAMPERED_TEXT_DETECTION],
                     config=fixed_synthetic_config())  # fmt: skip
    return root / get_task(TAMPERED_TEXT_DETECTION).dataset


def _scores_with_two_regions() -> torch.Tensor:
    """A (1, 3, 40, 40) prediction: a confident 10x10 tampered block and a hesitant 2x2 one."""
    prediction = torch.zeros(1, 3, 40, 40)
    prediction[0, 0] = 1.0
    prediction[0, :, 5:15, 5:15] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    prediction[0, :, 30:32, 30:32] = torch.tensor([0.3, 0.3, 0.4]).view(3, 1, 1)
    return prediction


def test_share_and_score_minima_drop_small_and_hesitant_regions(model_dir) -> None:
    pipe = UpocrPipeline(model=UpocrModel.from_pretrained(model_dir), image_processor=UpocrImageProcessor())
    meta = {"task": pipe.resolve(TAMPERED_TEXT_DETECTION), "original_size": (40, 40)}
    read = lambda **rule: pipe.postprocess({"prediction": _scores_with_two_regions(), "meta": [meta]}, **rule)  # noqa: E731
    assert len(read()["regions"]) == 2
    assert [r["area"] for r in read(min_region_share=0.01)["regions"]] == [100]  # 16 px needed of 1,600
    assert [r["area"] for r in read(min_region_score=0.5)["regions"]] == [100]
    # region_rule=True takes the folder's rule; a call's own option still wins
    pipe.image_processor.tamper_region_rule = {"min_region_share": 0.01}
    _, _, postprocess = pipe._sanitize_parameters(region_rule=True)
    assert postprocess == {"min_region_share": 0.01}
    _, _, postprocess = pipe._sanitize_parameters(region_rule=True, min_region_share=0.0)
    assert postprocess == {"min_region_share": 0.0}


def test_rule_is_chosen_on_validation_data_saved_and_scored_under(
    model_dir, tamper_data, tmp_path, capsys
) -> None:
    # no rule saved yet: --region-rule refuses, naming the folder
    with pytest.raises(SystemExit, match="no tamper_region_rule"):
        evaluate_main(["--model", str(model_dir), "--task", TAMPERED_TEXT_DETECTION, "--data", str(tamper_data),
                       "--region-rule", "--no-progress"])  # fmt: skip
    chooser = load_script(
        Path(__file__).resolve().parents[1] / "scripts" / "choose_tamper_rule.py", "choose_tamper_rule"
    )
    assert chooser.main(["--model", str(model_dir), "--data", str(tamper_data), "--write"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == len(chooser.SCORES) * len(chooser.SHARES)
    best = max(row["tampered_f_score"] for row in rows)
    rule = UpocrImageProcessor.from_pretrained(model_dir).tamper_region_rule
    assert set(rule) == {"min_region_score", "min_region_share"}
    chosen = next(r for r in rows if (r["min_region_score"], r["min_region_share"]) == tuple(rule.values()))
    assert chosen["tampered_f_score"] == best
    out = tmp_path / "ruled.json"
    assert evaluate_main(["--model", str(model_dir), "--task", TAMPERED_TEXT_DETECTION, "--data", str(tamper_data),
                          "--region-rule", "--no-progress", "--output-json", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["region_rule"] is True and "region rule" in record["protocol"]
    assert set(load_evaluation_results([out])) == {f"{TAMPERED_TEXT_DETECTION} (region rule)"}
    assert record["metrics"]["tampered_f_score"] == pytest.approx(chosen["tampered_f_score"])
    with pytest.raises(SystemExit):
        evaluate_main(
            ["--baseline", "--task", TAMPERED_TEXT_DETECTION, "--data", str(tamper_data), "--region-rule"]
        )
    assert np.isfinite(record["metrics"]["mf"])

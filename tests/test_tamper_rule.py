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
def chooser():
    return load_script(
        Path(__file__).resolve().parents[1] / "scripts" / "choose_tamper_rule.py", "choose_tamper_rule"
    )


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


def _word_with_a_tampered_rim_and_a_forged_word() -> torch.Tensor:
    """A (1, 3, 40, 60) prediction: a real 10x10 word inside a 1-px ring read tampered, broken into 4 pieces by a
    gap in each side, and a forged 10x10 word read tampered on 60 % of its pixels, real on the rest."""
    prediction = torch.zeros(1, 3, 40, 60)
    prediction[0, 0] = 1.0
    real, tampered = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1), torch.tensor([0.0, 0.2, 0.8]).view(3, 1, 1)
    prediction[0, :, 4:16, 4:16] = tampered  # the rim...
    prediction[0, :, 5:15, 5:15] = real  # ...around the real word
    for side in (4, 15):
        prediction[0, :, side, 9:11] = real.view(3, 1)  # gaps: the rim is 4 tampered pieces
        prediction[0, :, 9:11, side] = real.view(3, 1)
    prediction[0, :, 20:30, 40:50] = real
    prediction[0, :, 20:26, 40:50] = tampered
    return prediction


def test_text_region_rule_judges_each_word_whole(model_dir) -> None:
    pipe = UpocrPipeline(model=UpocrModel.from_pretrained(model_dir), image_processor=UpocrImageProcessor())
    meta = {"task": pipe.resolve(TAMPERED_TEXT_DETECTION), "original_size": (40, 60)}
    read = lambda **rule: pipe.postprocess(  # noqa: E731
        {"prediction": _word_with_a_tampered_rim_and_a_forged_word(), "meta": [meta]}, **rule
    )
    assert len(read()["regions"]) == 5  # per tampered component: each rim piece counts
    words = read(min_tampered_share=0.0)
    assert [r["area"] for r in words["regions"]] == [144, 100]  # per text region: each word counts once
    assert (words["class_map"][4:16, 4:16] == 2).all()
    ruled = read(min_tampered_share=0.5)
    assert [(r["box"], r["area"]) for r in ruled["regions"]] == [([40, 20, 50, 30], 100)]
    assert (ruled["class_map"][20:30, 40:50] == 2).all()  # the forged word reads tampered whole...
    assert (ruled["class_map"][4:16, 4:16] < 2).all()  # ...the rim of the real word does not
    assert (ruled["class_map"][5:15, 5:15] == 1).all()
    assert read(min_tampered_share=0.7)["regions"] == []
    with pytest.raises(ValueError, match="min_tampered_share must be a number between 0.0 and 1.0"):
        pipe._sanitize_parameters(min_tampered_share=2)


def test_rule_is_chosen_on_validation_data_saved_and_scored_under(
    chooser, model_dir, tamper_data, tmp_path, capsys
) -> None:
    # no rule saved yet: --region-rule refuses, naming the folder
    with pytest.raises(SystemExit, match="no tamper_region_rule"):
        evaluate_main(["--model", str(model_dir), "--task", TAMPERED_TEXT_DETECTION, "--data", str(tamper_data),
                       "--region-rule", "--no-progress"])  # fmt: skip
    assert chooser.main(["--model", str(model_dir), "--data", str(tamper_data), "--write"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == len(chooser.SCORES) * len(chooser.SHARES) * len(chooser.TAMPERED_SHARES)
    best = max(row["mf"] for row in rows)
    rule = UpocrImageProcessor.from_pretrained(model_dir).tamper_region_rule
    assert set(rule) == {"min_region_score", "min_region_share", "min_tampered_share"}
    chosen = next(r for r in rows if all(r[key] == value for key, value in rule.items()))
    assert chosen["mf"] == best
    assert chosen["mf"] == pytest.approx((chosen["real_f_score"] + chosen["tampered_f_score"]) / 2)
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


def test_chooser_prefers_balance_over_calling_every_word_forged(chooser) -> None:
    row = lambda score, share, tampered_share, tampered_f, real_f: {  # noqa: E731
        "min_region_score": score, "min_region_share": share, "min_tampered_share": tampered_share,
        "tampered_f_score": tampered_f, "real_f_score": real_f, "mf": (tampered_f + real_f) / 2,
    }  # fmt: skip
    everything_forged = row(0.0, 1e-3, 0.25, 0.40, 0.50)  # the higher tampered F, bought with real text
    balanced, stricter_twin = row(0.4, 1e-3, 0.5, 0.36, 0.66), row(0.4, 2e-3, 0.5, 0.36, 0.66)
    assert chooser.choose([everything_forged, balanced]) is balanced
    assert chooser.choose([balanced, stricter_twin, everything_forged]) is stricter_twin

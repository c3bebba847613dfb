"""scripts/removal_loss_balance.py: the gradient each weighted removal term gives the model."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from conftest import fixed_synthetic_config, load_script, randomised_tiny_model

from upocr_hf.data.rendered import SyntheticSource
from upocr_hf.losses import UpocrLoss

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "removal_loss_balance.py"


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT, "removal_loss_balance")


def _batches(script, model):
    source = SyntheticSource.parse("synthetic:photos")
    return script.removal_batches(source, 64, 0, 1, 2, model.config.tasks, base=fixed_synthetic_config())


def test_each_terms_gradient_scales_with_its_weight(script, one_torch_thread):
    model = randomised_tiny_model().train()
    batches = _batches(script, model)
    paper = script.balance(model, UpocrLoss(model.config.tasks, perceptual="random"), batches)
    heavier = script.balance(
        model,
        UpocrLoss(model.config.tasks, perceptual="random", removal_term_weights={"perceptual": 0.05}),
        batches,
    )
    assert set(paper) == {"l1", "perceptual", "style"}
    assert paper["perceptual"]["weight"] == 0.01 and paper["style"]["weight"] == 120.0
    assert paper["perceptual"]["gradient_norm"] > 0 and paper["style"]["gradient_norm"] > 0
    # five times the weight, five times the pull; the other terms are untouched
    ratio = heavier["perceptual"]["gradient_norm"] / paper["perceptual"]["gradient_norm"]
    assert ratio == pytest.approx(5.0, rel=1e-4)
    assert heavier["style"]["gradient_norm"] == pytest.approx(paper["style"]["gradient_norm"], rel=1e-5)


def test_the_terms_gradients_add_up_to_the_training_loss(script, one_torch_thread):
    """The script measures the loss training back-propagates: its weighted terms' gradients sum to that loss's."""
    model = randomised_tiny_model().train()
    loss_fn = UpocrLoss(model.config.tasks, perceptual="random", removal_term_weights={"perceptual": 0.3})
    (batch,) = _batches(script, model)
    _, gradients = script.term_gradients(model, loss_fn, batch)
    outputs = model(batch["pixel_values"], task=batch["task"])
    loss = loss_fn(
        outputs,
        batch["pixel_values"],
        batch["labels"],
        batch["text_mask"],
        batch["ignore_mask"],
        batch["task"],
    ).loss
    parameters = [p for p in model.parameters() if p.requires_grad]
    total = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters)])
    torch.testing.assert_close(sum(gradients.values()), total, rtol=1e-4, atol=1e-6)


def test_the_command_writes_its_record_and_refuses_an_unknown_term(
    script, tmp_path, one_torch_thread, capsys, monkeypatch
):
    # the generator's fonts and photographs pinned, as every test pins them
    fixed = functools.partial(script.removal_batches, base=fixed_synthetic_config())
    monkeypatch.setattr(script, "removal_batches", fixed)
    folder = tmp_path / "model"
    randomised_tiny_model().save_pretrained(folder)
    out = tmp_path / "balance.json"
    common = [
        "--model",
        str(folder),
        "--perceptual_loss",
        "random",
        "--size",
        "64",
        "--perceptual-size",
        "32",
    ]
    assert script.main([*common, "--batches", "1", "--batch-size", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["terms"]) == {"l1", "perceptual", "style"}
    assert record["images"] == "1 rendered removal samples (looks photos:3,signs:1, seed 0), 64 px"
    with pytest.raises(SystemExit):
        script.main([*common, "--removal-term-weights", "gram=1"])
    assert "unknown removal term 'gram'" in capsys.readouterr().err

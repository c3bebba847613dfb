"""§4 augmentation: image and labels stay aligned through every transform; ignore filling where it belongs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from torch.utils.data import DataLoader

from upocr_hf.data.augment import UpocrAugment, build_task_transform, upocr_collate
from upocr_hf.data.folders import SAMPLE_FEATURES
from upocr_hf.tasks import (
    DEFAULT_TASKS,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
    Augmentation,
    get_task,
)

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")
ALWAYS = Augmentation(
    crop_prob=1.0,
    crop_min_ratio=0.5,
    crop_max_ratio=0.9,
    hflip_prob=1.0,
    rotate_prob=1.0,
    rotate_degrees=30.0,
)


def _blocks(seed: int, h: int = 96, w: int = 128, cell: int = 16) -> np.ndarray:
    """A random pattern of big constant cells: labels (0/1/2), asymmetric so a missed flip shows."""
    grid = np.random.default_rng(seed).integers(0, 3, (h // cell, w // cell))
    return np.kron(grid, np.ones((cell, cell), dtype=np.int64))


def _agree(pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> float:
    return float((pred == truth)[valid].float().mean())


def _run(aug: UpocrAugment, image, target, mask, task) -> dict:
    return aug.transform_sample(
        Image.fromarray(image), Image.fromarray(target), None if mask is None else Image.fromarray(mask), task
    )


@pytest.mark.parametrize("seed", range(4))
def test_removal_alignment(seed: int) -> None:
    torch.manual_seed(seed)
    cls = _blocks(seed) > 0
    image = np.where(cls[..., None], 230, 20).astype(np.uint8).repeat(3, -1)
    mask = np.where(cls, 255, 0).astype(np.uint8)
    aug = UpocrAugment(SIZE, overrides={TEXT_REMOVAL: ALWAYS})
    out = _run(aug, image, image.copy(), mask, TEXT_REMOVAL)
    assert out["pixel_values"].shape == (3, SIZE, SIZE) and out["labels"].shape == (3, SIZE, SIZE)
    assert out["text_mask"].shape == (1, SIZE, SIZE) and out["ignore_mask"].shape == (1, SIZE, SIZE)
    # input and text-free target get exactly the same operations (same interpolation, same fill)
    torch.testing.assert_close(out["pixel_values"], out["labels"], atol=0, rtol=0)
    assert set(out["text_mask"].unique().tolist()) <= {0.0, 1.0}
    assert not out["ignore_mask"].any()
    bright = out["pixel_values"].mean(0, keepdim=True) > 0.5
    assert _agree(bright, out["text_mask"] > 0.5, torch.ones_like(bright)) > 0.97
    # rotation opened black area: black in input and target, not text
    corner = (slice(None), slice(0, 2), slice(0, 2))
    assert out["pixel_values"][corner].max() < 0.1 and out["text_mask"][corner].max() == 0


@pytest.mark.parametrize("seed", range(4))
def test_segmentation_alignment_and_ignore_fill(seed: int) -> None:
    torch.manual_seed(seed)
    cls = _blocks(seed) == 2
    image = np.where(cls[..., None], 230, 20).astype(np.uint8).repeat(3, -1)
    target = np.where(cls[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    aug = UpocrAugment(SIZE, overrides={TEXT_SEGMENTATION: ALWAYS})  # colour jitter off: values stay readable
    out = _run(aug, image, target, None, TEXT_SEGMENTATION)
    labels = out["labels"]
    ignore = out["ignore_mask"][0]
    # nearest for labels: only the three exact values survive
    values = set((labels * 255).round().to(torch.int64).unique().tolist())
    assert values <= {0, 128, 255}
    # rotation opened new area in the corners: ignored, with a black image there
    assert ignore[0, 0] and ignore[-1, -1] and ignore[0, -1] and ignore[-1, 0]
    assert torch.equal(ignore, (labels == 128 / 255).all(0))
    assert out["pixel_values"][:, 0, 0].max() < 0.1
    text = labels[0] > 0.75
    bright = out["pixel_values"].mean(0) > 0.5
    assert _agree(bright, text, ~ignore) > 0.97
    assert ignore.float().mean() < 0.6


@pytest.mark.parametrize("seed", range(4))
def test_tampered_alignment(seed: int) -> None:
    torch.manual_seed(seed)
    cls = _blocks(seed)
    colours = np.array(TAMPER_CLASS_RGB, np.uint8)
    image = colours[cls]
    aug = UpocrAugment(SIZE)
    out = _run(aug, image, image.copy(), None, TAMPERED_TEXT_DETECTION)
    assert not out["ignore_mask"].any() and out["text_mask"].sum() == 0
    img_cls, lab_cls = out["pixel_values"].argmax(0), out["labels"].argmax(0)
    assert _agree(img_cls, lab_cls, torch.ones_like(img_cls, dtype=torch.bool)) > 0.97
    assert set((out["labels"] * 255).round().unique().tolist()) <= {0.0, 255.0}


def test_resize_keeps_labels_on_the_image_grid() -> None:
    """Labels are resized with nearest-exact: no half-pixel shift against the bicubic image."""
    cls = _blocks(7) == 1
    image = np.where(cls[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    for size in [(50, 70), (64, 64), (200, 300)]:
        out = UpocrAugment(size, train=False).transform_sample(
            Image.fromarray(image), Image.fromarray(image), None, TEXT_SEGMENTATION
        )
        agree = ((out["pixel_values"][0] > 0.5) == (out["labels"][0] > 0.5)).float().mean()
        assert agree > 0.995, size


def test_horizontal_flip_is_joint() -> None:
    torch.manual_seed(0)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :8] = 255  # bright left edge
    target = np.zeros((32, 32, 3), np.uint8)
    target[:, :8] = 255
    flip = Augmentation(hflip_prob=1.0)
    out = UpocrAugment(32, overrides={TEXT_SEGMENTATION: flip}).transform_sample(
        Image.fromarray(image), Image.fromarray(target), None, TEXT_SEGMENTATION
    )
    assert out["pixel_values"][:, :, -1].min() > 0.9 and out["labels"][:, :, -1].min() == 1.0
    assert out["pixel_values"][:, :, 0].max() < 0.1 and out["labels"][:, :, 0].max() == 0.0


def test_colour_jitter_touches_the_image_only() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    target = np.where(rng.random((40, 40, 1)) > 0.5, 255, 0).astype(np.uint8).repeat(3, -1)
    jitter = Augmentation(color_jitter_prob=1.0)
    aug = UpocrAugment(40, overrides={TEXT_SEGMENTATION: jitter})
    out = aug.transform_sample(Image.fromarray(image), Image.fromarray(target), None, TEXT_SEGMENTATION)
    np.testing.assert_array_equal((out["labels"] * 255).round().byte().permute(1, 2, 0).numpy(), target)
    assert not torch.allclose(out["pixel_values"], torch.from_numpy(image).permute(2, 0, 1) / 255)


def test_recipes_match_the_paper() -> None:
    rem, seg, tam = (
        get_task(t).augmentation for t in (TEXT_REMOVAL, TEXT_SEGMENTATION, TAMPERED_TEXT_DETECTION)
    )
    assert (rem.crop_prob, rem.hflip_prob, rem.rotate_prob, rem.rotate_degrees, rem.color_jitter_prob) == (
        0,
        0.3,
        0.5,
        30,
        0,
    )
    assert (seg.crop_min_ratio, seg.crop_max_ratio, seg.crop_prob, seg.hflip_prob) == (0.7, 1.0, 1.0, 0.3)
    assert (seg.color_jitter_prob, seg.brightness, seg.contrast, seg.saturation, seg.hue) == (
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
    )
    assert (seg.rotate_prob, seg.rotate_degrees) == (0.5, 30)
    assert (tam.crop_min_ratio, tam.crop_max_ratio, tam.crop_prob, tam.hflip_prob, tam.rotate_prob) == (
        0.5,
        1.0,
        1.0,
        0.5,
        0,
    )
    # eval pipelines only resize
    assert len(build_task_transform(TEXT_SEGMENTATION, 64, train=False).transforms) == 1


def test_probabilities_are_respected() -> None:
    """Rotation at p 0.5 for segmentation: about half of the samples get an ignored corner."""
    torch.manual_seed(0)
    image = np.full((48, 48, 3), 200, np.uint8)
    target = np.zeros((48, 48, 3), np.uint8)
    aug = UpocrAugment(32)
    hits = sum(
        bool(
            aug.transform_sample(Image.fromarray(image), Image.fromarray(target), None, TEXT_SEGMENTATION)[
                "ignore_mask"
            ].any()
        )
        for _ in range(200)
    )
    assert 70 < hits < 130


def test_set_transform_and_collate() -> None:
    rng = np.random.default_rng(0)
    rows = {"image": [], "target": [], "mask": [], "task": [], "name": []}
    for i, task in enumerate([TEXT_REMOVAL, TEXT_SEGMENTATION, TAMPERED_TEXT_DETECTION, TEXT_REMOVAL]):
        h, w = 40 + 8 * i, 56 - 4 * i
        rows["image"].append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        rows["target"].append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        rows["mask"].append(
            Image.fromarray((rng.random((h, w)) > 0.7).astype(np.uint8) * 255)
            if task == TEXT_REMOVAL
            else None
        )
        rows["task"].append(task)
        rows["name"].append(f"s{i}")
    ds = Dataset.from_dict(rows, features=SAMPLE_FEATURES)
    ds.set_transform(UpocrAugment(SIZE))
    sample = ds[1]
    assert sample["task"] == TEXT_SEGMENTATION and sample["task_id"] == DEFAULT_TASKS.index(TEXT_SEGMENTATION)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=upocr_collate)))
    assert batch["pixel_values"].shape == (4, 3, SIZE, SIZE) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].shape == (4, 3, SIZE, SIZE)
    assert batch["text_mask"].shape == (4, 1, SIZE, SIZE) and batch["ignore_mask"].dtype == torch.bool
    assert batch["task"].tolist() == [DEFAULT_TASKS.index(t) for t in rows["task"]]
    assert batch["tasks"] == rows["task"] and batch["names"] == rows["name"]
    assert batch["text_mask"][1:3].sum() == 0 and batch["text_mask"][0].sum() > 0
    assert 0 <= batch["pixel_values"].min() and batch["pixel_values"].max() <= 1
    # a custom task order (a model's config.tasks) changes the ids
    order = [TEXT_SEGMENTATION, TAMPERED_TEXT_DETECTION, TEXT_REMOVAL]
    ds.set_transform(UpocrAugment(SIZE, train=False, tasks=order))
    assert ds[0]["task_id"] == 2


def test_bad_inputs() -> None:
    aug = UpocrAugment(32)
    img = Image.new("RGB", (20, 20))
    with pytest.raises(ValueError, match="needs its text mask"):
        aug.transform_sample(img, img, None, TEXT_REMOVAL)
    with pytest.raises(ValueError, match="differs from image size"):
        aug.transform_sample(img, Image.new("RGB", (21, 20)), None, TEXT_SEGMENTATION)
    with pytest.raises(ValueError, match="'ocr' is not in the task order"):
        aug.transform_sample(img, img, None, "ocr")

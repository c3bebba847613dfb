"""Loaders of the three benchmark folder layouts (spec §5): columns, target values and validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upocr_hf.data.folders import (
    SAMPLE_FEATURES,
    DatasetFolderError,
    TamperBox,
    load_image_pairs,
    load_scut_enstext,
    load_tampered_ic13,
    load_textseg,
    parse_tampered_ic13_gt,
    tampered_boxes_to_target,
    textseg_label_to_target,
)
from upocr_hf.tasks import (
    IGNORE_VALUE_UINT8,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
)

RED, GREEN, BLUE = TAMPER_CLASS_RGB
GRAY = (IGNORE_VALUE_UINT8,) * 3


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _photo(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------
# tiny folders
# --------------------------------------------------------------------------------------------------------


def make_scut(
    root: Path, names=("a", "b"), split="train"
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    made = {}
    for k, name in enumerate(names):
        image, label = _photo(k), _photo(100 + k)
        mask = np.full((12, 16), 255, np.uint8)  # release convention: black text regions on white
        mask[2:6, 3:9] = 0
        _save(image, root / split / "image" / f"{name}.png")
        _save(label, root / split / "label" / f"{name}.png")
        _save(mask, root / split / "mask" / f"{name}.png")
        made[name] = (image, label, mask)
    return made


def make_textseg(root: Path) -> np.ndarray:
    label = np.zeros((12, 16), np.uint8)
    label[1:4, 1:5] = 100  # text
    label[5:7, 2:8] = 200  # word effect
    label[8:10, 10:14] = 255  # ignore
    for name in ("t1", "t2", "t3"):
        _save(_photo(len(name) + ord(name[-1])), root / "image" / f"{name}.jpg")
        _save(label, root / "semantic_label" / f"{name}_maskfg.png")
    (root / "split.json").write_text(json.dumps({"train": ["t1", "t2"], "val": [], "test": ["t3"]}))
    return label


def make_tampered(root: Path, split="train") -> None:
    _save(_photo(1, 10, 20), root / f"{split}_img" / "x.jpg")
    (root / f"{split}_gt").mkdir(parents=True, exist_ok=True)
    (root / f"{split}_gt" / "x.txt").write_text("1,1,4,3,1\n3,2,8,5,2\n15,7,40,40,1\n")
    _save(_photo(2, 10, 20), root / f"{split}_img" / "y.png")
    (root / f"{split}_gt" / "y.txt").write_text("")  # no text at all


def _arr(img) -> np.ndarray:
    return np.asarray(img)


# --------------------------------------------------------------------------------------------------------
# loading and conversion
# --------------------------------------------------------------------------------------------------------


def test_scut_enstext_columns_and_values(tmp_path: Path) -> None:
    made = make_scut(tmp_path / "scut")
    make_scut(tmp_path / "scut", names=("c",), split="test")
    dd = load_scut_enstext(tmp_path / "scut", cache_dir=str(tmp_path / "cache"))
    assert set(dd) == {"train", "test"}
    assert dd["train"].features == SAMPLE_FEATURES
    assert dd["train"]["name"] == ["a", "b"] and dd["test"]["name"] == ["c"]
    row = dd["train"][0]
    assert row["task"] == TEXT_REMOVAL
    image, label, mask = made["a"]
    np.testing.assert_array_equal(_arr(row["image"]), image)
    np.testing.assert_array_equal(_arr(row["target"]), label)
    expected_mask = np.where(mask == 0, 255, 0)  # m = 255 on text
    np.testing.assert_array_equal(_arr(row["mask"]), expected_mask)


def test_scut_enstext_white_text_masks(tmp_path: Path) -> None:
    made = make_scut(tmp_path / "scut", names=("a",))
    dd = load_scut_enstext(
        tmp_path / "scut", ["train"], mask_text_value="white", cache_dir=str(tmp_path / "c")
    )
    np.testing.assert_array_equal(_arr(dd["train"][0]["mask"]), np.where(made["a"][2] >= 128, 255, 0))


def test_textseg_value_mapping(tmp_path: Path) -> None:
    label = make_textseg(tmp_path / "ts")
    dd = load_textseg(tmp_path / "ts", cache_dir=str(tmp_path / "cache"))
    assert set(dd) == {"train", "val", "test"}
    assert len(dd["train"]) == 2 and len(dd["val"]) == 0 and dd["test"]["name"] == ["t3"]
    row = dd["train"][0]
    assert row["task"] == TEXT_SEGMENTATION and row["mask"] is None
    target = _arr(row["target"])
    assert target.shape == (12, 16, 3) and target.dtype == np.uint8
    np.testing.assert_array_equal(target[label == 100], np.full(((label == 100).sum(), 3), 255))
    np.testing.assert_array_equal(target[label == 200], np.zeros(((label == 200).sum(), 3)))
    np.testing.assert_array_equal(target[label == 0], np.zeros(((label == 0).sum(), 3)))
    np.testing.assert_array_equal(target[label == 255], np.full(((label == 255).sum(), 3), 128))


def test_textseg_label_function_strictness() -> None:
    bad = np.array([[0, 100], [7, 255]], np.uint8)
    with pytest.raises(DatasetFolderError, match=r"label values \[7\]"):
        textseg_label_to_target(bad, path="lab.png")
    lenient = textseg_label_to_target(bad, strict=False)
    assert tuple(lenient[1, 0]) == GRAY


def test_tampered_ic13_box_filling(tmp_path: Path) -> None:
    make_tampered(tmp_path / "tic")
    dd = load_tampered_ic13(tmp_path / "tic", cache_dir=str(tmp_path / "cache"))
    assert list(dd) == ["train"]
    x, y = dd["train"][0], dd["train"][1]
    assert x["name"] == "x" and x["task"] == TAMPERED_TEXT_DETECTION and x["mask"] is None
    t = _arr(x["target"])
    assert t.shape == (10, 20, 3)
    expected = np.empty((10, 20, 3), np.uint8)
    expected[...] = RED
    expected[1:4, 1:5] = GREEN  # corners inclusive
    expected[2:6, 3:9] = BLUE  # later boxes overwrite earlier ones
    expected[7:10, 15:20] = GREEN  # clipped to the image
    np.testing.assert_array_equal(t, expected)
    assert (_arr(y["target"]) == RED).all()


def test_tampered_gt_parsing() -> None:
    boxes = parse_tampered_ic13_gt("\ufeff 5,6,1,2,2\n\n1.0,2,3,4,1\n")
    assert boxes == [TamperBox(1, 2, 5, 6, 2), TamperBox(1, 2, 3, 4, 1)]
    target = tampered_boxes_to_target(4, 3, [TamperBox(-5, -5, 0, 0, 1), TamperBox(9, 9, 12, 12, 2)])
    assert tuple(target[0, 0]) == GREEN and (target.reshape(-1, 3)[1:] == RED).all()


# --------------------------------------------------------------------------------------------------------
# malformed folders
# --------------------------------------------------------------------------------------------------------


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetFolderError, match="missing folder"):
        load_scut_enstext(tmp_path / "nope")
    (tmp_path / "scut" / "train" / "image").mkdir(parents=True)
    (tmp_path / "scut" / "train" / "label").mkdir(parents=True)
    with pytest.raises(DatasetFolderError, match=r"train/mask: missing folder"):
        load_scut_enstext(tmp_path / "scut")
    (tmp_path / "ts" / "image").mkdir(parents=True)
    with pytest.raises(DatasetFolderError, match="semantic_label: missing folder"):
        load_textseg(tmp_path / "ts")
    (tmp_path / "ts" / "semantic_label").mkdir()
    with pytest.raises(DatasetFolderError, match="split.json: missing split file"):
        load_textseg(tmp_path / "ts")
    (tmp_path / "ts" / "split.json").write_text("{not json")
    with pytest.raises(DatasetFolderError, match="split.json: unreadable JSON"):
        load_textseg(tmp_path / "ts")
    (tmp_path / "tic" / "train_img").mkdir(parents=True)
    with pytest.raises(DatasetFolderError, match="train_gt: missing folder"):
        load_tampered_ic13(tmp_path / "tic")


def test_image_without_label(tmp_path: Path) -> None:
    make_scut(tmp_path / "scut")
    (tmp_path / "scut" / "train" / "label" / "b.png").unlink()
    with pytest.raises(DatasetFolderError, match=r"image/b\.png: image without its text-free label"):
        load_scut_enstext(tmp_path / "scut")
    make_textseg(tmp_path / "ts")
    (tmp_path / "ts" / "semantic_label" / "t2_maskfg.png").unlink()
    with pytest.raises(DatasetFolderError, match=r"image/t2\.jpg: image without its label"):
        load_textseg(tmp_path / "ts")
    make_tampered(tmp_path / "tic")
    (tmp_path / "tic" / "train_gt" / "y.txt").unlink()
    with pytest.raises(DatasetFolderError, match=r"train_img/y\.png: image without its gt file"):
        load_tampered_ic13(tmp_path / "tic")


def test_label_without_image(tmp_path: Path) -> None:
    make_scut(tmp_path / "scut")
    (tmp_path / "scut" / "train" / "image" / "a.png").unlink()
    with pytest.raises(DatasetFolderError, match=r"label/a\.png: label/mask without its image"):
        load_scut_enstext(tmp_path / "scut")
    make_textseg(tmp_path / "ts")
    (tmp_path / "ts" / "image" / "t1.jpg").unlink()
    with pytest.raises(DatasetFolderError, match=r"t1_maskfg\.png: label without its image"):
        load_textseg(tmp_path / "ts")
    make_tampered(tmp_path / "tic")
    (tmp_path / "tic" / "train_img" / "x.jpg").unlink()
    with pytest.raises(DatasetFolderError, match=r"train_gt/x\.txt: gt file without its image"):
        load_tampered_ic13(tmp_path / "tic")


def test_unreadable_files(tmp_path: Path) -> None:
    make_scut(tmp_path / "scut")
    (tmp_path / "scut" / "train" / "mask" / "a.png").write_bytes(b"definitely not a png")
    with pytest.raises(DatasetFolderError, match=r"mask/a\.png: unreadable image file"):
        load_scut_enstext(tmp_path / "scut")
    make_textseg(tmp_path / "ts")
    path = tmp_path / "ts" / "image" / "t2.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated JPEG: only a full decode notices
    with pytest.raises(DatasetFolderError, match=r"t2\.jpg: unreadable image file"):
        load_textseg(tmp_path / "ts")


def test_malformed_gt_lines(tmp_path: Path) -> None:
    make_tampered(tmp_path / "tic")
    gt = tmp_path / "tic" / "train_gt" / "x.txt"
    cases = {
        "1,1,4,3,1\n1,2,3,1\n": r"x\.txt, line 2: expected 5 comma-separated fields",
        "1,1,4,3,1\n\n1,a,3,4,1\n": r"x\.txt, line 3: field 'a' is not a number",
        "1,1,4,3,3\n": r"x\.txt, line 1: label must be 1 \(real text\) or 2 \(tampered text\), got 3",
        "1,1.5,4,3,1\n": r"x\.txt, line 1: field '1\.5' is not an integer",
    }
    for text, message in cases.items():
        gt.write_text(text)
        with pytest.raises(DatasetFolderError, match=message) as info:
            load_tampered_ic13(tmp_path / "tic")
        assert info.value.path == str(gt) and info.value.line is not None


def test_size_mismatch_and_bad_values(tmp_path: Path) -> None:
    make_scut(tmp_path / "scut")
    _save(_photo(5, 13, 16), tmp_path / "scut" / "train" / "label" / "a.png")
    with pytest.raises(DatasetFolderError, match=r"label/a\.png: size 16x13 differs from its image's 16x12"):
        load_scut_enstext(tmp_path / "scut")
    make_textseg(tmp_path / "ts")
    _save(np.full((12, 16), 50, np.uint8), tmp_path / "ts" / "semantic_label" / "t1_maskfg.png")
    with pytest.raises(DatasetFolderError, match=r"t1_maskfg\.png: label values \[50\]"):
        load_textseg(tmp_path / "ts")
    dd = load_textseg(tmp_path / "ts", ["train"], strict_label_values=False, cache_dir=str(tmp_path / "c"))
    assert (_arr(dd["train"][0]["target"]) == IGNORE_VALUE_UINT8).all()


def test_skip_counts_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_tampered(tmp_path / "tic")
    (tmp_path / "tic" / "train_gt" / "x.txt").write_text("1,1,4\n")
    (tmp_path / "tic" / "train_gt" / "orphan.txt").write_text("1,1,2,2,1\n")
    (tmp_path / "tic" / "train_img" / "notes.md").write_text("not an image")
    dd, reports = load_tampered_ic13(
        tmp_path / "tic", on_error="skip", return_report=True, cache_dir=str(tmp_path / "cache")
    )
    assert dd["train"]["name"] == ["y"]
    report = reports["train"]
    assert report.loaded == 1 and report.num_skipped == 2
    reasons = sorted(str(err) for err in report.skipped)
    assert "orphan.txt: gt file without its image" in reasons[0]
    assert "x.txt, line 1: expected 5" in reasons[1]
    assert report.ignored_files == [str(tmp_path / "tic" / "train_img" / "notes.md")]
    assert "skipped 2" in report.summary() and "skipped 2" in caplog.text

    make_scut(tmp_path / "scut", names=("a", "b", "c"))
    (tmp_path / "scut" / "train" / "mask" / "c.png").unlink()
    dd, reports = load_scut_enstext(
        tmp_path / "scut", on_error="skip", return_report=True, cache_dir=str(tmp_path / "cache")
    )
    assert dd["train"]["name"] == ["a", "b"] and reports["train"].num_skipped == 1


def test_reload_sees_changed_files(tmp_path: Path) -> None:
    """The datasets cache must not serve a stale conversion after a label file changed."""
    make_tampered(tmp_path / "tic")
    cache = str(tmp_path / "cache")
    first = load_tampered_ic13(tmp_path / "tic", cache_dir=cache)["train"][1]["target"]
    (tmp_path / "tic" / "train_gt" / "y.txt").write_text("0,0,19,9,2\n")
    second = load_tampered_ic13(tmp_path / "tic", cache_dir=cache)["train"][1]["target"]
    assert (_arr(first) == RED).all() and (_arr(second) == BLUE).all()


def test_image_pairs_of_a_new_task(tmp_path: Path) -> None:
    root = tmp_path / "deblur"
    image, target = _photo(1), _photo(2)
    _save(image, root / "train" / "image" / "p.png")
    _save(target, root / "train" / "target" / "p.png")
    ds = load_image_pairs(root, "deblur", ["train"])["train"]
    sample = ds[0]
    assert sample["task"] == "deblur" and sample["name"] == "p" and sample["mask"] is None
    assert np.array_equal(np.asarray(sample["target"]), target)
    _save(image, root / "train" / "image" / "q.png")
    with pytest.raises(
        DatasetFolderError, match=r"image/q\.png: image without its target image in 'target/'"
    ):
        load_image_pairs(root, "deblur", ["train"])
    ds, reports = load_image_pairs(root, "deblur", ["train"], on_error="skip", return_report=True)
    assert len(ds["train"]) == 1 and len(reports["train"].skipped) == 1

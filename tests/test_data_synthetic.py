"""Synthetic generator: deterministic, masks agree with images, real layouts that the real loaders read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import fixed_synthetic_config
from PIL import Image

from upocr_hf.data.folders import DatasetFolderError, tampered_boxes_to_target
from upocr_hf.data.resources import RESERVED_NAME_PARTS, font_group, photo_group, style_split
from upocr_hf.data.synthetic import (
    FORGERY_CHANGE_THRESHOLD,
    LOOKS,
    STYLE_FORGERY_METHODS,
    SyntheticConfig,
    _contrasting_colour,
    available_fonts,
    available_photos,
    describe_synthetic_split,
    generate_folders,
    load_synthetic_folders,
    main,
    render_sample,
)
from upocr_hf.tasks import (
    DEFAULT_TASKS,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
    get_task,
)

SIZE = (128, 96)


@pytest.fixture(scope="module")
def cfg() -> SyntheticConfig:
    # resave_prob 0: the forged image as forged, so every changed pixel must be labelled
    return fixed_synthetic_config(size=SIZE, font_size_range=(0.08, 0.2), resave_prob=0.0).resolved()


@pytest.fixture(scope="module")
def samples(cfg: SyntheticConfig) -> list:
    return [render_sample(i, 3, cfg) for i in range(12)]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resources_are_local_and_never_reserved() -> None:
    fonts = available_fonts()
    assert any("DejaVuSans.ttf" in f for f in fonts)
    assert len(fonts) >= 10
    photos = available_photos()
    assert photos and all(
        Path(p).is_file() for p in photos
    )  # local files: skimage's wheel, Debian's wallpapers
    for path in fonts + photos:
        assert not any(part in path.lower() for part in RESERVED_NAME_PARTS), path


def test_style_split_holds_out_whole_families() -> None:
    fonts = [f"/usr/share/fonts/truetype/family{i}/Face{j}.ttf" for i in range(30) for j in range(3)]
    train, held = style_split(fonts, "train", font_group), style_split(fonts, "held-out", font_group)
    assert set(train) | set(held) == set(fonts) and not set(train) & set(held)
    assert {font_group(f) for f in train}.isdisjoint({font_group(f) for f in held})
    assert 0.05 < len(held) / len(fonts) < 0.4
    assert style_split(fonts, "all", font_group) == tuple(fonts)
    # one family only (a bare machine): split file by file, both sides non-empty
    bare = [f"/fonts/dejavu/DejaVu{i}.ttf" for i in range(20)]
    assert style_split(bare, "train", font_group) and style_split(bare, "held-out", font_group)
    assert photo_group("/usr/share/wallpapers/Kite/contents/images/1920x1080.jpg") == "Kite"
    assert (
        photo_group("/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_768x1024_Portrait.png")
        == "Sway_Wallpaper_Blue"
    )
    with pytest.raises(ValueError, match="unknown style"):
        style_split(fonts, "test", font_group)


def test_styles_use_their_own_forgery_methods(cfg: SyntheticConfig) -> None:
    assert set(STYLE_FORGERY_METHODS["train"]).isdisjoint(STYLE_FORGERY_METHODS["held-out"])
    for style in ("train", "held-out"):
        styled = replace(cfg, style=style, forgery_methods=None).resolved()
        methods = {w["method"] for i in range(12) for w in render_sample(i, 5, styled).words if w["method"]}
        assert methods and methods <= set(STYLE_FORGERY_METHODS[style]), (style, methods)
    with pytest.raises(ValueError, match="unknown forgery method"):
        replace(cfg, forgery_methods=("blur",)).resolved()


def test_deterministic_for_a_seed(cfg: SyntheticConfig, samples: list) -> None:
    again = render_sample(5, 3, cfg)
    ref = samples[5]
    for field in ("image", "background", "text_mask", "stroke_label", "tampered"):
        np.testing.assert_array_equal(getattr(again, field), getattr(ref, field))
    assert again.tamper_boxes == ref.tamper_boxes and again.name == ref.name
    other = render_sample(5, 4, cfg)
    assert not np.array_equal(other.image, ref.image)


def test_removal_pairs_agree(samples: list) -> None:
    text_fraction = []
    for s in samples:
        assert s.image.shape == (SIZE[1], SIZE[0], 3) and s.image.dtype == np.uint8
        assert s.background.shape == s.image.shape and s.text_mask.shape == s.image.shape[:2]
        outside = ~s.text_mask
        # non-text pixels are byte-identical between the text image and the text-free background
        np.testing.assert_array_equal(s.image[outside], s.background[outside])
        # glyph pixels differ from the background
        glyph = s.stroke_label == 100
        assert (s.image[glyph] != s.background[glyph]).any(-1).all()
        text_fraction.append(s.text_mask.mean())
    assert max(text_fraction) > 0.01 and np.mean(text_fraction) < 0.6  # text present, not everywhere


def test_stroke_labels_agree(samples: list) -> None:
    for s in samples:
        assert set(np.unique(s.stroke_label).tolist()) <= {0, 100, 200, 255}
        changed = (s.image != s.background).any(-1)
        # labels mark only pixels the text changed, and every glyph pixel lies inside the removal mask
        assert not (s.stroke_label[~changed] > 0).any()
        assert s.text_mask[s.stroke_label == 100].all()
    assert any((s.stroke_label == 100).sum() > 20 for s in samples)


def test_tampered_regions_are_where_the_image_changed(samples: list) -> None:
    saw_tampered = saw_real = False
    for s in samples:
        h, w = s.image.shape[:2]
        target = tampered_boxes_to_target(w, h, s.tamper_boxes)
        blue = (target == TAMPER_CLASS_RGB[2]).all(-1)
        diff = np.abs(s.tampered.astype(int) - s.image.astype(int)).max(-1) > FORGERY_CHANGE_THRESHOLD
        text = (s.image != s.background).any(-1)
        # every visibly changed pixel is tampered text, and each tampered box is the tight box of changed pixels
        assert blue[diff].all()
        for b in s.tamper_boxes:
            inside = np.zeros_like(diff)
            inside[b.y1 : b.y2 + 1, b.x1 : b.x2 + 1] = True
            if b.label == 2:
                ys, xs = np.nonzero(diff & inside)
                assert (xs.min(), ys.min(), xs.max(), ys.max()) == (b.x1, b.y1, b.x2, b.y2)
                saw_tampered = True
            else:
                saw_real = True
                assert (text & inside).any()  # a real box holds text of the image
        forged = [w for w in s.words if w["replacement"]]
        assert len(forged) == sum(b.label == 2 for b in s.tamper_boxes)
        assert all(w["method"] in STYLE_FORGERY_METHODS["all"] for w in forged)
    assert saw_tampered and saw_real


def test_forgeries_leave_traces_beyond_the_new_letters(samples: list) -> None:
    """A forgery is more than new glyphs on the true background: inside tampered boxes, pixels that are background
    in both the original and the forged text still changed (inpainting, resampling, recompression, pasted
    surroundings)."""
    traced = 0
    for s in samples:
        h, w = s.image.shape[:2]
        text = (s.image != s.background).any(-1)
        for b in s.tamper_boxes:
            if b.label != 2:
                continue
            region = (slice(b.y1, b.y2 + 1), slice(b.x1, b.x2 + 1))
            plain = ~text[region] & (
                np.abs(s.tampered[region].astype(int) - s.background[region]).max(-1) > 0
            )
            traced += bool(plain.mean() > 0.2)
    assert traced >= 3


def test_folders_identical_for_any_worker_count(tmp_path: Path, cfg: SyntheticConfig) -> None:
    small = replace(cfg, size=(64, 48))
    generate_folders(tmp_path / "one", 6, size=(64, 48), seed=1, num_workers=1, config=small)
    generate_folders(tmp_path / "two", 6, size=(64, 48), seed=1, num_workers=2, config=small)
    one, two = _digest(tmp_path / "one"), _digest(tmp_path / "two")
    # 3 removal + 2 segmentation + 2 tampered files per sample, split.json, a synthetic.json per layout
    assert one == two and len(one) == 6 * 7 + 1 + 3


def test_real_loaders_read_the_synthetic_layouts(tmp_path: Path, cfg: SyntheticConfig) -> None:
    roots = generate_folders(tmp_path / "syn", 4, size=SIZE, seed=3, config=cfg)
    assert {t: r.name for t, r in roots.items()} == {t: get_task(t).dataset for t in DEFAULT_TASKS}
    split = json.loads((roots[TEXT_SEGMENTATION] / "split.json").read_text())
    assert split == {"train": [f"syn3_{i:07d}" for i in range(4)]}
    data = load_synthetic_folders(tmp_path / "syn", cache_dir=str(tmp_path / "cache"))
    assert set(data) == set(DEFAULT_TASKS) and all(len(ds) == 4 for ds in data.values())
    ref = render_sample(2, 3, cfg)
    rem, seg, tam = data[TEXT_REMOVAL][2], data[TEXT_SEGMENTATION][2], data[TAMPERED_TEXT_DETECTION][2]
    np.testing.assert_array_equal(np.asarray(rem["image"]), ref.image)
    np.testing.assert_array_equal(np.asarray(rem["target"]), ref.background)
    np.testing.assert_array_equal(np.asarray(rem["mask"]) > 0, ref.text_mask)
    seg_target = np.asarray(seg["target"])
    np.testing.assert_array_equal((seg_target == 255).all(-1), ref.stroke_label == 100)
    np.testing.assert_array_equal((seg_target == 128).all(-1), ref.stroke_label == 255)
    np.testing.assert_array_equal(np.asarray(tam["image"]), ref.tampered)
    np.testing.assert_array_equal(
        np.asarray(tam["target"]), tampered_boxes_to_target(*SIZE, ref.tamper_boxes)
    )
    # a second run with another seed extends the same folders
    generate_folders(tmp_path / "syn", 2, size=SIZE, seed=4, tasks=[TEXT_SEGMENTATION], config=cfg)
    assert len(json.loads((roots[TEXT_SEGMENTATION] / "split.json").read_text())["train"]) == 6


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "--num",
            "2",
            "--size",
            "64",
            "--out",
            str(out),
            "--seed",
            "9",
            "--tasks",
            "removal,tampered",
            "--save-to-disk",
            str(tmp_path / "hf"),
            "--no-photos",
        ]
    )
    assert code == 0
    assert "wrote 2 samples" in capsys.readouterr().out
    assert not (out / get_task(TEXT_SEGMENTATION).dataset).exists()
    img = Image.open(out / "SCUT-EnsText" / "train" / "image" / "syn9_0000001.png")
    assert img.size == (64, 64)
    from datasets import load_from_disk

    saved = load_from_disk(str(tmp_path / "hf" / TAMPERED_TEXT_DETECTION))
    assert len(saved["train"]) == 2 and saved["train"][0]["task"] == TAMPERED_TEXT_DETECTION
    with pytest.raises(SystemExit):
        main(["--num", "1", "--out", str(out), "--tasks", "ocr"])


def test_generated_folder_errors_are_caught(tmp_path: Path, cfg: SyntheticConfig) -> None:
    generate_folders(
        tmp_path / "syn",
        2,
        size=(64, 48),
        seed=0,
        tasks=[TAMPERED_TEXT_DETECTION],
        config=replace(cfg, size=(64, 48)),
    )
    gt = tmp_path / "syn" / "Tampered-IC13" / "train_gt" / "syn0_0000001.txt"
    gt.write_text(gt.read_text() + "oops\n")
    with pytest.raises(DatasetFolderError, match=r"syn0_0000001\.txt, line \d+: expected 5"):
        load_synthetic_folders(tmp_path / "syn", [TAMPERED_TEXT_DETECTION])


def test_save_to_disk_folders_train_and_evaluate_like_the_layouts(tmp_path):
    """`--data TASK=DIR` also takes a `datasets` `save_to_disk` folder in the uniform schema (what the generator's
    `--save-to-disk` writes): the same rows as the layout folder it came from."""
    from datasets import Dataset, DatasetDict

    from upocr_hf.data import load_task_dataset, load_task_datasets
    from upocr_hf.data.folders import DatasetFolderError

    out = tmp_path / "layouts"
    generate_folders(out, 3, size=64, seed=0, config=fixed_synthetic_config())
    for task in DEFAULT_TASKS:
        from_layout = load_task_dataset(task, out / get_task(task).dataset, ["train"])["train"]
        saved = tmp_path / "saved" / task
        from_layout.save_to_disk(str(saved))  # one Dataset: read back as the "train" split
        from_disk = load_task_datasets({task: saved}, {task: ["train"]})[task]
        assert from_disk["name"] == from_layout["name"] and set(from_disk["task"]) == {task}
        assert [np.asarray(i).tolist() for i in from_disk["target"]] == [
            np.asarray(i).tolist() for i in from_layout["target"]
        ]
    bare = DatasetDict({"test": Dataset.from_dict({"image": ["a.png"], "target": ["b.png"]})})
    bare.save_to_disk(str(tmp_path / "bare"))
    with pytest.raises(
        DatasetFolderError, match=r"no split 'train' in this saved dataset \(has \['test'\]\)"
    ):
        load_task_dataset(TEXT_SEGMENTATION, tmp_path / "bare", ["train"])
    with pytest.raises(
        DatasetFolderError, match=r"lacks the column\(s\) \['mask'\] of the text-removal schema"
    ):
        load_task_dataset(TEXT_REMOVAL, tmp_path / "bare", ["test"])
    assert load_task_dataset(TEXT_SEGMENTATION, tmp_path / "bare")["test"].column_names == [
        "image",
        "target",
        "task",
    ]


def test_photos_look_has_the_text_sizes_users_photograph(tmp_path: Path) -> None:
    # 20-120 px at 512 (4-23.5 % of the height), pages included; every look names SyntheticConfig fields only
    for look in LOOKS.values():
        SyntheticConfig(**look)
    cfg = fixed_synthetic_config(size=(256, 256), **LOOKS["photos"])
    sizes = [word["size"] for index in range(4) for word in render_sample(index, seed=2, config=cfg).words]
    assert sizes and min(sizes) >= 0.04 * 256 - 1 and max(sizes) <= 0.235 * 256 * 1.07 + 1
    training = [
        w["size"]
        for i in range(4)
        for w in render_sample(i, seed=2, config=fixed_synthetic_config(size=(256, 256))).words
    ]
    assert min(training) < min(sizes)  # the training look's small print is smaller
    assert (
        main(["--num", "1", "--size", "64", "--out", str(tmp_path), "--look", "photos", "--no-photos"]) == 0
    )
    with pytest.raises(SystemExit):
        main(["--num", "1", "--out", str(tmp_path), "--look", "poster"])


def test_text_colour_keeps_the_contrast_asked_for() -> None:
    rng = np.random.default_rng(0)
    luma = np.array([0.299, 0.587, 0.114])
    for background in rng.uniform(0, 255, (50, 3)):
        for contrast in (60.0, 90.0):
            colour = _contrasting_colour(rng, background, contrast)
            assert abs(float(colour @ luma) - float(background @ luma)) > contrast or colour.max() in (
                0.0,
                255.0,
            )


def test_each_layout_records_the_runs_written_into_it(tmp_path):
    config = fixed_synthetic_config()
    roots = generate_folders(tmp_path, 2, size=48, seed=5, split="test", config=config, look="photos")
    generate_folders(tmp_path, 1, size=48, seed=6, split="train", config=config)
    generate_folders(
        tmp_path, 2, size=48, seed=5, split="test", config=config, look="photos"
    )  # again: one run
    for root in roots.values():
        assert describe_synthetic_split(root, "test") == (
            "synthetic (upocr_hf.data.synthetic): 2 images 48×48, look photos, all style, seed 5"
        )
        assert describe_synthetic_split(root, "train").endswith(": 1 images 48×48, all style, seed 6")
    assert describe_synthetic_split(tmp_path, "test") is None  # not a folder the generator wrote

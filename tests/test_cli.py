"""The `upocr` command line on a tiny random model: all three commands, folders, bad files, atomic writes."""

import json
import os
import time

import numpy as np
import pytest
import torch
from conftest import tiny_config_kwargs
from PIL import Image

from upocr_hf import UpocrConfig, UpocrModel
from upocr_hf.cli import collect_jobs, main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-model")
    torch.manual_seed(0)
    UpocrModel(UpocrConfig(**tiny_config_kwargs())).save_pretrained(folder)
    return folder


def write_image(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "a.png", 40, 60, seed=1)
    write_image(folder / "sub" / "b.jpg", 70, 50, seed=2)
    write_image(folder / "sub" / "c.png", 64, 64, seed=3)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # a PNG signature, then nothing usable
    (folder / "fake.jpg").write_text("plain text with an image extension")
    (folder / "sub" / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, and not named like one: skipped")
    single = tmp_path / "single.png"
    write_image(single, 30, 45, seed=4)
    return folder, single


def no_temporary_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "command, extra",
    [("remove", ["--keep-background"]), ("segment", ["--threshold", "0.5"]), ("detect-tampering", [])],
)
def test_commands_walk_folders_and_skip_bad_files(model_dir, inputs, tmp_path, capsys, command, extra):
    folder, single = inputs
    out = tmp_path / "out"
    status = main(
        [
            command,
            str(folder),
            str(single),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--batch-size",
            "2",
            "-q",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "4 written" in captured.out and "3 failed" in captured.out
    assert "corrupt.png: truncated" in captured.err
    assert "empty.jpg: empty file" in captured.err
    assert "fake.jpg: not an image" in captured.err
    expected = {"a.png": (60, 40), "sub/b.png": (50, 70), "sub/c.png": (64, 64), "single.png": (45, 30)}
    for name, size in expected.items():
        with Image.open(out / name) as result:
            assert result.size == size
            assert result.mode == {"remove": "RGB", "segment": "L", "detect-tampering": "RGB"}[command]
    pngs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pngs == sorted(expected)
    if command == "segment":
        assert set(np.unique(np.asarray(Image.open(out / "a.png")))) <= {0, 255}
    if command == "detect-tampering":
        report = json.loads((out / "sub" / "b.json").read_text())
        assert (report["height"], report["width"]) == (70, 50)
        assert sum(report["pixels_per_class"].values()) == 70 * 50
        assert isinstance(report["tampered_regions"], list)
    assert no_temporary_files(out)


def test_all_good_inputs_exit_zero_and_tile_mode(model_dir, tmp_path, capsys):
    pixels = write_image(tmp_path / "in" / "big.png", 100, 140)
    out = tmp_path / "out"
    out.mkdir()
    killed_write = (
        out / ".big.png.k1ll3d0x.tmp"
    )  # what a run killed mid-write leaves; the next run removes it
    killed_write.write_bytes(b"half a PNG")
    os.utime(killed_write, (time.time() - 3600, time.time() - 3600))
    status = main(
        [
            "remove",
            str(tmp_path / "in"),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--tile",
            "--keep-background",
            "-q",
        ]
    )
    assert status == 0
    assert "1 written" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["big.png"]
    result = np.asarray(Image.open(out / "big.png"))
    assert result.shape == pixels.shape
    assert (result == pixels).any()  # keep-background kept some pixels exactly


def test_pixel_limit_and_missing_inputs_are_reported(model_dir, tmp_path, capsys):
    write_image(tmp_path / "in" / "large.png", 50, 50)
    write_image(tmp_path / "in" / "small.png", 10, 10)
    out = tmp_path / "out"
    status = main(
        [
            "segment",
            str(tmp_path / "in"),
            str(tmp_path / "missing.png"),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--max-pixels",
            "1000",
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "large.png: image too large" in captured.err and "--max-pixels raises it" in captured.err
    assert "missing.png: no such file or folder" in captured.err
    assert (out / "small.png").exists() and not (out / "large.png").exists()


def test_model_is_required_without_a_default(tmp_path, capsys, monkeypatch):
    import upocr_hf

    monkeypatch.setattr(upocr_hf, "DEFAULT_MODEL", str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exit_info:
        main(["remove", str(tmp_path), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--model is required" in capsys.readouterr().err


def test_unloadable_model_is_a_clear_error(tmp_path, capsys):
    write_image(tmp_path / "a.png", 10, 10)
    (tmp_path / "weights.bin").write_bytes(b"")
    (tmp_path / "empty-model").mkdir()  # a folder that holds no model: transformers' own reason
    for model, reason in [
        ("nope", f"upocr: error: {tmp_path / 'nope'}: no such model folder"),
        ("weights.bin", "weights.bin: is a file, not a model folder"),
        ("empty-model", "cannot load the model from"),
    ]:
        status = main(
            ["remove", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / model)]
        )
        assert status == 2 and reason in capsys.readouterr().err, model


def test_unknown_command_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        main(["erase", "x", "-o", "y"])
    assert "remove" in capsys.readouterr().err


def test_same_stem_inputs_do_not_collide(tmp_path):
    write_image(tmp_path / "in" / "x.png", 8, 8)
    write_image(tmp_path / "in" / "x.jpg", 8, 8)
    jobs, missing = collect_jobs([tmp_path / "in"], tmp_path / "out")
    assert not missing
    assert len({job.output for job in jobs}) == 2

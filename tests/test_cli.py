"""The `upocr` command line on a tiny random model: all three commands, folders, bad files, atomic writes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_config_kwargs
from PIL import Image

from upocr_hf import UpocrConfig, UpocrModel
from upocr_hf.cli import Summary, _report, collect_jobs, main
from upocr_hf.image_processing_upocr import UpocrImageProcessor

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_processes_started_by_accelerate_share_the_files_and_report_once(model_dir, tmp_path):
    """`accelerate launch -m upocr_hf.cli` on two CPU ranks (gloo): each file is processed by exactly one rank, the
    outputs are those of a single-process run byte for byte, and the main process reports all failures once."""
    folder = tmp_path / "in"
    for i in range(5):
        write_image(folder / f"img{i}.png", 40 + 4 * i, 50, seed=i)
    broken = folder / "zz_broken.png"  # sorted last: in the second process's share
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    command = ["-m", "upocr_hf.cli", "detect-tampering", str(folder), "-q", "--model", str(model_dir), "-o"]
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")

    def run(prefix, out):
        return subprocess.run(
            [*prefix, *command, str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )

    shared, single = run(launcher, tmp_path / "shared"), run([sys.executable], tmp_path / "single")
    assert single.returncode == 1, single.stderr[-3000:]
    assert shared.returncode != 0 and shared.stdout.count("upocr detect-tampering:") == 1, shared.stderr[
        -3000:
    ]
    assert f"5 written to {tmp_path / 'shared'} (2 processes: 3 + 2), 1 failed" in shared.stdout
    assert shared.stderr.count(f"failed: {broken}: truncated") == 1
    outputs = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert len(outputs) == 10 and sorted(p.name for p in (tmp_path / "shared").iterdir()) == outputs
    for name in outputs:
        assert (tmp_path / "shared" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name


def test_every_process_exits_with_the_status_of_the_whole_run(capsys):
    args = SimpleNamespace(command="segment", output_dir=Path("out"))
    jobs = [Path("a.png"), Path("b.png")]
    summaries = [Summary(done=[Path("a.png")]), Summary(failed=[(Path("b.png"), "truncated")])]
    main_process, other_process = (
        SimpleNamespace(is_main_process=True),
        SimpleNamespace(is_main_process=False),
    )
    assert (
        _report(args, other_process, summaries, jobs, []) == 1
    )  # its own share went well; another's did not
    assert capsys.readouterr() == ("", "")  # the main process alone reports
    assert _report(args, main_process, summaries, jobs, []) == 1
    captured = capsys.readouterr()
    assert "1 written to out (2 processes: 1 + 0), 1 failed" in captured.out
    assert "failed: b.png: truncated" in captured.err
    assert _report(args, other_process, [Summary(done=jobs), Summary()], jobs, []) == 0
    unloadable = [Summary(), Summary(error="cannot load the model from m: broken")]
    assert _report(args, other_process, unloadable, jobs, []) == 2
    assert _report(args, main_process, unloadable, jobs, []) == 2
    assert "upocr: error: cannot load the model from m: broken" in capsys.readouterr().err


def test_the_model_folders_mode_is_the_default_and_no_tile_overrides_it(model_dir, tmp_path, capsys):
    folder = tmp_path / "tiles-by-default"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    UpocrImageProcessor(size={"height": 64, "width": 64}, do_tile=True).save_pretrained(folder)
    write_image(tmp_path / "in" / "big.png", 100, 140)  # 2×3 tiles of 64, or one resize

    def remove(*flags):
        out = tmp_path / ("out" + "".join(flags))
        assert (
            main(["remove", str(tmp_path / "in"), "-o", str(out), "--model", str(folder), "-q", *flags]) == 0
        )
        return np.asarray(Image.open(out / "big.png"))

    by_default = remove()
    assert np.array_equal(by_default, remove("--tile"))
    assert not np.array_equal(by_default, remove("--no-tile"))
    capsys.readouterr()

"""The Gradio Space (space/app.py) served on localhost and called through gradio_client."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import load_script, tiny_config_kwargs
from PIL import Image

from upocr_hf import UpocrConfig, UpocrImageProcessor, UpocrModel

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "space"


def load_app() -> ModuleType:
    """Import space/app.py as a module (the Space folder is not a package)."""
    return load_script(SPACE / "app.py", "upocr_space_app")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(folder: Path, hub_ready: bool = False) -> Path:
    """A tiny randomly initialised UPOCR (64 px) with its processor, as a save_pretrained folder.

    `hub_ready`: written by `upocr_hf.hub.prepare_hub_folder` (pipeline code, `custom_pipelines`, model card).
    """
    torch.manual_seed(0)
    model = UpocrModel(UpocrConfig(**tiny_config_kwargs())).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("attention_norm.weight", "mlp_norm.weight")):
                param.uniform_(0.5, 1.5)
    processor = UpocrImageProcessor(size={"height": 64, "width": 64})
    if hub_ready:
        from upocr_hf.hub import prepare_hub_folder

        return prepare_hub_folder(model, processor, folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("space-model"), hub_ready=True)


@pytest.fixture(scope="module")
def served(tiny_model_dir) -> Iterator[tuple[str, object]]:
    """The app on 127.0.0.1 with a tiny (Hub-ready) model folder; yields its URL and the Blocks."""
    app = load_app()
    demo = app.build_demo(str(tiny_model_dir))
    _, url, _ = app.launch(
        demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        yield url, demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False, download_files=True)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A non-square 80×48 (width × height) RGB test image."""
    path = tmp_path_factory.mktemp("inputs") / "photo.png"
    array = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def size_of(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_removal_returns_the_input_size(client, photo):
    from gradio_client import handle_file

    slider, download, info = client.predict(handle_file(str(photo)), False, True, api_name="/remove")
    before, after = slider
    assert size_of(before) == size_of(after) == size_of(download) == (80, 48)
    assert Path(download).suffix == ".png" and "80×48" in info
    assert np.array_equal(np.asarray(Image.open(before).convert("RGB")), np.asarray(Image.open(photo)))


def test_removal_keeps_the_background_unless_asked_not_to(client, photo):
    from gradio_client import handle_file

    *_, default_info = client.predict(handle_file(str(photo)), api_name="/remove")
    *_, whole_info = client.predict(handle_file(str(photo)), False, False, api_name="/remove")
    assert "only the detected text region" in default_info and "only the detected" not in whole_info


def test_segmentation_returns_the_input_size(client, photo):
    from gradio_client import handle_file

    overlay, mask, info = client.predict(handle_file(str(photo)), 0.4, False, api_name="/segment")
    assert size_of(mask) == size_of(overlay) == (80, 48)
    assert "text on" in info


def test_tampering_returns_the_input_size_and_one_verdict(client, photo):
    from gradio_client import handle_file

    marked, class_map, verdict, info = client.predict(handle_file(str(photo)), False, api_name="/detect")
    assert size_of(class_map) == size_of(marked) == (80, 48)
    assert verdict.startswith("### ") and ("Tampered text found" in verdict or "No " in verdict)
    assert "80×48" in info


def test_run_without_an_image_is_refused_before_the_model_runs(served, client, monkeypatch):
    calls = []
    app = served[1].upocr
    monkeypatch.setattr(app, "_read", lambda *args: calls.append(args))  # the callback must not even start
    with pytest.raises(Exception, match="Upload an image first"):
        client.predict(None, 0.4, False, api_name="/segment")
    assert calls == []


def test_tiled_mode_keeps_the_size(client, photo):
    from gradio_client import handle_file

    _, mask, info = client.predict(handle_file(str(photo)), 0.4, True, api_name="/segment")
    assert size_of(mask) == (80, 48) and "tiles" in info


def test_bad_file_gives_a_clear_error_and_the_app_keeps_serving(client, photo, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "not-an-image.png"
    bad.write_text("this is a text file, not a PNG\n")
    with pytest.raises(AppError, match=r"not-an-image\.png.*not an image"):
        client.predict(handle_file(str(bad)), False, False, api_name="/remove")
    huge = tmp_path / "huge.png"
    Image.new("1", (5001, 5001)).save(huge)  # 25,010,001 pixels in a few kB: one past the demo's limit
    with pytest.raises(
        AppError,
        match=r"huge\.png.*has 25,010,001 pixels and this demo takes at most 25,000,000; resize it first",
    ):
        client.predict(handle_file(str(huge)), False, False, api_name="/remove")
    overlay, mask, _ = client.predict(handle_file(str(photo)), 0.4, False, api_name="/segment")
    assert size_of(mask) == size_of(overlay) == (80, 48)


def test_queue_and_upload_limits(served, client, photo, tmp_path):
    from gradio_client import handle_file

    _, demo = served
    assert demo._queue.max_size == 16 and demo._queue.default_concurrency_limit == 1
    assert demo.max_file_size == 10 * 1024 * 1024
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (demo.max_file_size + 1))
    with pytest.raises(Exception, match="maximum file size"):
        client.predict(handle_file(str(big)), 0.4, False, api_name="/segment")
    mask, _, _ = client.predict(handle_file(str(photo)), 0.4, False, api_name="/segment")
    assert size_of(mask) == (80, 48)


def test_default_model_prefers_the_environment(monkeypatch, tiny_model_dir):
    app = load_app()
    monkeypatch.setenv("UPOCR_MODEL", str(tiny_model_dir))
    assert app.default_model() == str(tiny_model_dir)
    monkeypatch.setenv("UPOCR_MODEL", "")
    monkeypatch.setattr(app, "LOCAL_MODEL_DIR", tiny_model_dir)
    assert app.default_model() == str(tiny_model_dir)


def test_missing_model_is_a_clear_startup_error(monkeypatch, tmp_path):
    import upocr_hf

    app = load_app()
    monkeypatch.delenv("UPOCR_MODEL", raising=False)
    monkeypatch.setattr(app, "LOCAL_MODEL_DIR", tmp_path / "absent")
    monkeypatch.setattr(upocr_hf, "DEFAULT_MODEL", str(tmp_path / "absent"), raising=False)
    with pytest.raises(RuntimeError, match="UPOCR_MODEL"):
        app.default_model()


def test_space_files():
    readme = (SPACE / "README.md").read_text()
    front = readme.split("---")[1]
    for key in ("sdk: gradio", "app_file: app.py", 'python_version: "3.11"', "sdk_version:"):
        assert key in front
    requirements = (SPACE / "requirements.txt").read_text()
    assert "transformers" in requirements and "torch" in requirements
    examples = sorted((SPACE / "examples").glob("*.png"))
    assert len(examples) >= 3
    for path in examples:
        assert path.stat().st_size < 150_000
        assert size_of(path) == (256, 256)


@pytest.mark.slow
def test_app_runs_without_the_package(tmp_path):
    """A bare Space: upocr_hf not importable, the model folder's own code serves all three tasks."""
    import json
    import os
    import subprocess
    import textwrap

    from upocr_hf.hub import prepare_hub_folder

    torch.manual_seed(0)
    model = UpocrModel(UpocrConfig(**tiny_config_kwargs())).eval()
    folder = prepare_hub_folder(
        model, UpocrImageProcessor(size={"height": 64, "width": 64}), tmp_path / "model"
    )
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 72, 3), dtype=np.uint8)).save(image)
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.modules["upocr_hf"] = None  # any import of the package now fails
        spec = importlib.util.spec_from_file_location("space_app", {str(SPACE / "app.py")!r})
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        demo = app.build_demo(app.default_model())
        callbacks = demo.upocr
        assert not type(callbacks.pipe).__module__.startswith("upocr_hf"), type(callbacks.pipe).__module__
        upload = {{"path": {str(image)!r}, "orig_name": "photo.png"}}
        (before, after), download, _ = callbacks.remove(upload, False, True)
        overlay, mask, _ = callbacks.segment(upload, 0.4, False)
        marked, class_map, verdict, _ = callbacks.detect(upload, False)
        print(json.dumps({{
            "sizes": [after.size, mask.size, overlay.size, class_map.size, marked.size],
            "verdict": verdict, "threshold": callbacks.threshold,
            "downloads": str(callbacks.downloads_dir), "downloaded": download, "delete_cache": demo.delete_cache,
        }}))
        """
    )
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", UPOCR_MODEL=str(folder), HF_MODULES_CACHE=str(tmp_path / "modules")
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(tuple(size) == (72, 40) for size in report["sizes"])
    assert report["verdict"].startswith("### ")
    assert report["threshold"] == 0.4
    # uploads and results do not stay on the disk: Gradio sweeps its cache, the app's own folder goes at exit
    assert report["downloaded"].startswith(report["downloads"]) and not Path(report["downloads"]).exists()
    assert report["delete_cache"] == [600, 3600]


@pytest.mark.parametrize("tampered_f, warned", [(0.07, True), (0.3, False), (None, False)])
def test_the_tampering_tab_says_plainly_when_detection_is_weak(tmp_path, tampered_f, warned):
    import json

    app = load_app()
    if tampered_f is not None:
        record = {"task": "tampered-text-detection", "metrics": {"mf": 0.4, "tampered_f_score": tampered_f}}
        (tmp_path / "eval_results.json").write_text(json.dumps({"tampered-text-detection": record}))
    warning = app.ModelFacts(str(tmp_path)).tamper_warning()
    assert bool(warning) == warned
    if warned:
        assert "weak" in warning and "0.07" in warning
    assert app.ModelFacts("some-user/some-hub-model").tamper_warning() == ""


def test_each_tab_names_the_model_its_figures_and_card(served, tmp_path):
    import json
    import urllib.request

    app = load_app()
    url, demo = served
    line = demo.upocr.facts.line("text-segmentation")
    assert line.startswith("Model `space-model") and "no test figures in its folder" in line
    card = line.split("[model card](")[1].rstrip(")")
    with urllib.request.urlopen(
        url.rstrip("/") + "/" + card
    ) as response:  # the card is served by the app itself
        assert b"UPOCR" in response.read()
    record = {"metrics": {"fg_iou": 0.812, "f_score": 0.9, "num_images": 120}}
    (tmp_path / "eval_results.json").write_text(json.dumps({"text-segmentation": record}))
    facts = app.ModelFacts(str(tmp_path))
    assert (
        facts.line("text-segmentation")
        == f"Model `{tmp_path.name}` · on its 120-image test split: fgIoU 81.2, F 90.0"
    )
    assert "no test figures" in facts.line("text-removal")
    hub = app.ModelFacts("someone/upocr").line("text-removal")
    assert hub.endswith("[model card](https://huggingface.co/someone/upocr)")
    assert app.ModelFacts("UpocrModel").card_url is None  # a ready pipeline's class name is no Hub id
    (tmp_path / "eval_results.json").write_text(json.dumps({"text-segmentation": {"metrics": [1, 2]}}))
    assert "no test figures" in app.ModelFacts(str(tmp_path)).line("text-segmentation")  # malformed: no crash


def test_examples_are_computed_at_start_up(served):
    _, demo = served
    cache = demo.upocr.examples_cache_dir
    logs = sorted(cache.glob("*/log.csv"))
    assert len(logs) == 3  # one table of cached outputs per tab
    assert all(len(log.read_text().strip().splitlines()) == 3 for log in logs)  # header + the two examples


def crafted_pipeline(tiny_model_dir: Path, prediction: torch.Tensor):
    """The Space's pipeline whose model always predicts `prediction` (1, 3, h, w): the real read-out follows."""
    app = load_app()
    pipe = app.load_pipeline(str(tiny_model_dir), device="cpu")
    pipe._forward = lambda inputs, **_: {"prediction": prediction, "text_prediction": None,
                                         "meta": inputs["meta"]}  # fmt: skip
    return pipe


def tamper_prediction(tampered: bool) -> torch.Tensor:
    """64×64 scores in the task's colours: red background, a green real word, a 1-pixel blue speck at the right
    border and a hesitant blue blob (mean tampered score < 0.5); with `tampered`, also a confident blue word."""
    prediction = torch.zeros(1, 3, 64, 64)
    prediction[:, 0] = 1.0
    prediction[:, :, 10:20, 5:30] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    prediction[:, :, 32, 63] = torch.tensor([0.0, 0.0, 1.0])
    prediction[:, :, 50:56, 5:15] = torch.tensor([0.5, 0.9, 1.0])[:, None, None]
    if tampered:
        prediction[:, :, 30:40, 20:50] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    return prediction


@pytest.mark.parametrize("tampered", [True, False])
def test_tamper_verdict_shares_and_regions_agree(tiny_model_dir, photo, tampered):
    app = load_app()
    demo = app.UpocrDemo(crafted_pipeline(tiny_model_dir, tamper_prediction(tampered)), app.ModelFacts("x"))
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = photo.parent / "crafted.png"
    Image.fromarray(image).save(path)
    marked, class_map, verdict, info = demo.detect(str(path))
    shown = np.asarray(class_map)
    shown_tampered = int((shown == app.CLASS_DISPLAY_RGB[2]).all(axis=-1).sum())
    shown_real = int((shown == app.CLASS_DISPLAY_RGB[1]).all(axis=-1).sum())
    if tampered:
        assert verdict == "### ⚠ Tampered text found: 1 region"
        assert shown_tampered == 300 and shown_real == 250 + 60  # the hesitant blob reads as real text
        assert "49.2% of it is marked tampered (300 px), 50.8% real" in info
    else:
        assert verdict == "### No tampered text found"
        assert shown_tampered == 0 and shown_real == 310  # the border speck went back to background
        assert "0.0% of it is marked tampered (0 px), 100.0% real" in info
    assert f"Text covers {(shown_tampered + shown_real) / 64**2:.1%} of the image" in info
    # the picture marks the pixels the map calls text (tinted, outlined, with a halo just outside) and no others
    from scipy import ndimage

    changed = np.abs(np.asarray(marked, dtype=int) - image).sum(axis=-1) > 0
    text = ~(shown == app.CLASS_DISPLAY_RGB[0]).all(axis=-1)
    assert changed[(shown == app.CLASS_DISPLAY_RGB[2]).all(axis=-1)].all()
    assert changed[(shown == app.CLASS_DISPLAY_RGB[1]).all(axis=-1)].all()
    assert not (changed & ~ndimage.binary_dilation(text, iterations=1)).any()
    assert not changed[32, 63]


def test_the_verdict_counts_forged_words_not_specks(tiny_model_dir, photo):
    """A real word inside a tampered rim broken into pieces, and a forged word read tampered in three pieces
    between real columns: without a rule of its own, the tab judges each text region whole."""
    prediction = torch.zeros(1, 3, 64, 64)
    prediction[:, 0] = 1.0
    real = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    tampered = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    prediction[:, :, 4:18, 4:34] = tampered
    prediction[:, :, 5:17, 5:33] = real
    prediction[:, :, 4:18, 12:14] = prediction[:, :, 4:18, 24:26] = real  # gaps: the rim is 4 pieces
    prediction[:, :, 30:42, 10:40] = tampered
    prediction[:, :, 30:42, 20:22] = prediction[:, :, 30:42, 30:32] = real  # the forged word: 3 pieces
    app = load_app()
    demo = app.UpocrDemo(crafted_pipeline(tiny_model_dir, prediction), app.ModelFacts("x"))
    path = photo.parent / "rimmed.png"
    Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)).save(path)
    _, class_map, verdict, _ = demo.detect(str(path))
    assert verdict == "### ⚠ Tampered text found: 1 region"
    shown = np.asarray(class_map)
    assert (shown[30:42, 10:40] == app.CLASS_DISPLAY_RGB[2]).all()  # the forged word, whole
    assert not (shown[:20] == app.CLASS_DISPLAY_RGB[2]).all(axis=-1).any()  # no rim left


def test_drawn_masks_stay_visible_on_their_own_colour():
    app = load_app()
    green = np.zeros((40, 40, 3), dtype=np.uint8)
    green[..., 1] = 204
    green[..., 0], green[..., 2] = 46, 113  # the real-text colour itself
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 10:30] = True
    drawn = np.asarray(app.draw_masks(green, [(mask, app.CLASS_DISPLAY_RGB[1], 0.25)]))
    assert drawn[9, 20].sum() < 0.5 * green[9, 20].sum()  # a dark halo just outside the mask
    assert (drawn[0, 0] == green[0, 0]).all() and (drawn[20, 20] == green[20, 20]).all()
    colour = app.contrasting_colour(green, mask)
    assert (
        np.linalg.norm(colour - green[0, 0]) > 200
    )  # a segmentation overlay picks a colour far from the photo


def test_tiled_runs_report_tile_progress(served, tmp_path):
    _, demo = served
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (100, 150, 3), dtype=np.uint8)).save(path)
    reports = []

    def progress(fraction, desc=None):
        reports.append((round(fraction, 4), desc))

    demo.upocr.segment(str(path), 0.4, True, progress=progress)  # 64-px tiles, overlap 16: 2 rows × 3 columns
    assert reports[-1] == (1.0, "tile 6 of 6") and len(reports) == 6
    reports.clear()
    demo.upocr.remove(str(path), True, True, progress=progress)  # keep-background: text first, then removal
    fractions = [fraction for fraction, _ in reports]
    assert reports[5][0] == 0.5 and reports[5][1].startswith("tile 6 of 12")  # the text pass: 6 of up to 12
    assert fractions == sorted(fractions) and reports[-1] == (1.0, f"tile {len(reports)} of {len(reports)}")
    assert 6 < len(reports) <= 12  # the random model sees text in some windows at least
    reports.clear()
    demo.upocr.remove(str(path), False, True, progress=progress)  # one model call: nothing to report
    assert reports == []


@pytest.mark.slow
def test_the_shipped_default_model_deploys_to_a_bare_space(tmp_path):
    """space/README.md's step 2 with the package's default model: `python -m upocr_hf.hub copy-with-code` writes
    the folder a Space without `upocr_hf` serves; the bare app loads it from `model/` next to app.py and runs."""
    import os
    import shutil
    import subprocess

    import upocr_hf

    space = tmp_path / "space"
    shutil.copytree(SPACE, space, ignore=shutil.ignore_patterns("__pycache__"))
    command = [
        sys.executable,
        "-m",
        "upocr_hf.hub",
        "copy-with-code",
        upocr_hf.DEFAULT_MODEL,
        str(space / "model"),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert (space / "model" / "pipeline_upocr.py").is_file() and (
        space / "model" / "eval_results.json"
    ).is_file()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr  # an existing folder is never replaced
    assert (space / "model").stat().st_mode & 0o777 == 0o755  # an ordinary folder, not mkdtemp's private one
    inside = subprocess.run(command[:-2] + [str(space / "model"), str(space / "model" / "copy")], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert inside.returncode == 2 and "inside" in inside.stderr
    script = (
        "import sys; sys.modules['upocr_hf'] = None\n"
        "import runpy; app = runpy.run_path('app.py', run_name='space')\n"
        "demo = app['build_demo']()\n"
        "marked, class_map, verdict, info = demo.upocr.detect('examples/tampered_1.png')\n"
        "print(type(demo.upocr.pipe).__module__, '|', demo.upocr.facts.line('tampered-text-detection'), '|', verdict)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), UPOCR_MODEL="")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=space, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, line, verdict = result.stdout.strip().splitlines()[-1].split(" | ")
    assert not module.startswith("upocr_hf")  # the folder's own code serves it
    assert line.startswith("Model `model` · on its 150-image test split: mF ") and "model card" in line
    assert verdict.startswith("### ")


def test_tile_progress_estimates_the_time_left_from_its_own_pace():
    app = load_app()
    now = iter([100.0, 104.0, 108.5])  # started; 2 tiles after 4 s; all 6 after 8.5 s
    reports = []
    report = app.tile_reporter(
        lambda fraction, desc: reports.append((fraction, desc)), clock=lambda: next(now)
    )
    report(2, 6)
    report(6, 6)
    assert reports == [(2 / 6, "tile 2 of 6 · about 8 s left"), (1.0, "tile 6 of 6")]


def test_a_folder_with_older_pipeline_code_still_serves_every_tab(tiny_model_dir, photo, monkeypatch):
    """Pipeline code saved before the region rule and tile progress refuses those options; the app leaves them
    out for such a folder instead of failing every tampering and tiled run."""
    app = load_app()
    pipe = app.load_pipeline(str(tiny_model_dir), device="cpu")
    newer = type(pipe)

    class OlderPipeline(newer):
        def _sanitize_parameters(
            self, task=None, tile=None, threshold=None, min_region_area=None, tile_batch_size=None, **kwargs
        ):
            if kwargs:
                raise TypeError(f"UpocrPipeline got unexpected options {sorted(kwargs)}")
            known = dict(task=task, tile=tile, threshold=threshold, min_region_area=min_region_area)
            return newer._sanitize_parameters(self, **known, tile_batch_size=tile_batch_size)

    pipe.__class__ = OlderPipeline
    demo = app.UpocrDemo(pipe, app.ModelFacts(str(tiny_model_dir)))
    assert demo.options == {"task", "tile", "threshold", "min_region_area", "tile_batch_size"}
    marked, _, verdict, _ = demo.detect(str(photo), True, progress=lambda *a, **k: None)
    overlay, _, _ = demo.segment(str(photo), 0.4, True, progress=lambda *a, **k: None)
    assert marked.size == overlay.size == (80, 48) and verdict.startswith("### ")


def test_the_model_folders_default_mode_and_threshold_are_the_apps(tmp_path, photo):
    folder = save_tiny_model(tmp_path / "tiles-by-default")
    UpocrImageProcessor(
        size={"height": 64, "width": 64}, do_tile=True, segmentation_threshold=0.65
    ).save_pretrained(folder)
    app = load_app()
    demo = app.build_demo(str(folder))
    boxes = [b for b in demo.blocks.values() if isinstance(b, gr.Checkbox) and "tiles" in (b.label or "")]
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Threshold"]
    assert len(boxes) == 3 and all(box.value is True for box in boxes)
    assert [slider.value for slider in sliders] == [0.65]
    _, _, info = demo.upocr.segment(str(photo), progress=lambda *a, **k: None)  # 80×48: two tiles of 64
    assert "tiles" in info
    _, _, info = demo.upocr.segment(str(photo), 0.65, False, progress=lambda *a, **k: None)
    assert "resized" in info
    demo.close()


def test_the_tab_applies_and_quotes_the_folders_own_region_rule(tmp_path, photo):
    import json

    folder = save_tiny_model(tmp_path / "ruled")
    UpocrImageProcessor(
        size={"height": 64, "width": 64},
        tamper_region_rule={"min_region_score": 0.99, "min_region_share": 0.5},
    ).save_pretrained(folder)
    argmax = {"task": "tampered-text-detection", "metrics": {"mf": 0.4, "tampered_f_score": 0.2}}
    ruled = {**argmax, "region_rule": True, "metrics": {"mf": 0.6, "tampered_f_score": 0.55}}
    records = {"tampered-text-detection": argmax, "tampered-text-detection (region rule)": ruled}
    (folder / "eval_results.json").write_text(json.dumps(records))
    app = load_app()
    facts = app.ModelFacts(str(folder))
    # the figures quoted (and the warning's) are those measured under the rule the tab applies
    assert facts.tamper_warning() == "" and "tampered-text F 55.0" in facts.line("tampered-text-detection")
    demo = app.UpocrDemo(app.load_pipeline(str(folder), device="cpu"), facts)
    calls = []
    original = demo.pipe._sanitize_parameters

    def recording(**options):
        calls.append(options)
        return original(**options)

    demo.pipe._sanitize_parameters = recording
    _, _, verdict, _ = demo.detect(str(photo), False, progress=lambda *a, **k: None)
    assert any(call.get("region_rule") for call in calls) and not any("min_region_score" in c for c in calls)
    assert verdict == "### No tampered text found"  # a rule no region of a random model passes

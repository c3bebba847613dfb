"""The package as users install it from a wheel (not the editable checkout): its package data is complete, so the
Hub folder's model card renders and the shipped default model loads from the installed files alone."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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

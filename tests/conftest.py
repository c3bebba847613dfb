import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path

import pytest

#: The read-only fixtures shared beside the repository (spec, reference outputs).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"

#: Tolerance between two float64 computations of the same model that may round differently (batch size, attention
#: implementation, recomputation, another process). Measured on the tiny model: at most 8.6e-13 (SDPA vs eager),
#: with avx2 and default kernels and 1 or 2 threads, so 1e-9 does not depend on the CPU, and it still sees a float32
#: rounding slipped into the computation (rounding the input alone moves the output by 3e-6), let alone a wrong
#: mask, buffer or prompt. In float32 the same comparisons differ by 1e-4..1e-3 depending on the CPU's kernels.
FLOAT64_ATOL = 1e-9

#: Fonts that exist on every machine (the DejaVu core family).
FIXED_FONTS = tuple(
    f"/usr/share/fonts/truetype/dejavu/DejaVu{name}.ttf"
    for name in ("Sans", "Sans-Bold", "Serif", "Serif-Bold", "SansMono", "SansMono-Bold")
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """With UPOCR_INSTALLED_AT (scripts/check_installs.sh), refuse to run unless upocr_hf is imported from there: a
    check of the installed package that quietly tested the checkout would prove nothing."""
    installed = os.environ.get("UPOCR_INSTALLED_AT")
    if installed:
        import upocr_hf

        if not Path(upocr_hf.__file__).resolve().is_relative_to(Path(installed).resolve()):
            raise pytest.UsageError(f"upocr_hf was imported from {upocr_hf.__file__}, not from {installed}")


def load_script(path: Path, name: str):
    """Import a script that is not in a package (scripts/*.py, space/app.py) as the module `name`, once."""
    import importlib.util
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look a module up by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def fixed_synthetic_config(**fields):
    """A `SyntheticConfig` on `FIXED_FONTS` and the photographs in scikit-image's wheel: left to itself the
    generator uses whatever fonts and wallpapers the machine has, and tests must not see different data elsewhere."""
    import importlib.util

    from upocr_hf.data.resources import SKIMAGE_PHOTOS
    from upocr_hf.data.synthetic import SyntheticConfig

    skimage_data = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
    photos = tuple(str(skimage_data / name) for name in SKIMAGE_PHOTOS)
    return SyntheticConfig(font_paths=FIXED_FONTS, photo_paths=photos, **fields)


def tiny_config_kwargs() -> dict:
    """A UPOCR small enough for fast tests that still has shifted blocks in both encoder and decoder at 64 px."""
    from upocr_hf.configuration_upocr import CONFIG_PRESETS

    return dict(CONFIG_PRESETS["tiny"])


@pytest.fixture
def tiny_config():
    from upocr_hf import UpocrConfig

    return UpocrConfig(**tiny_config_kwargs())


def randomised_tiny_model(dtype=None, **overrides):
    """A seeded tiny UPOCR (config overrides allowed) whose post-norms are randomised: zero-initialised ones would
    make every block an identity, and tests should see the real paths. The weights are drawn in float32 whatever
    `dtype` is, so a float64 copy holds exactly the float32 model's weights."""
    import torch

    from upocr_hf import UpocrConfig, UpocrModel

    torch.manual_seed(0)
    model = UpocrModel(UpocrConfig(**{**tiny_config_kwargs(), **overrides})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("attention_norm.weight", "mlp_norm.weight")):
                param.uniform_(0.5, 1.5)
    return model if dtype is None else model.to(dtype)


@pytest.fixture
def tiny_model():
    return randomised_tiny_model()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core machine: torch's intra-op threads only add contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

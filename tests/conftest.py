import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: The read-only fixtures shared beside the repository (spec, reference outputs).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def tiny_config_kwargs() -> dict:
    """A UPOCR small enough for fast tests that still has shifted blocks in both encoder and decoder at 64 px."""
    from upocr_hf.training import CONFIG_PRESETS

    return {**CONFIG_PRESETS["tiny"], "image_size": 64}


@pytest.fixture
def tiny_config():
    from upocr_hf import UpocrConfig

    return UpocrConfig(**tiny_config_kwargs())


def randomised_tiny_model(**overrides):
    """A seeded tiny UPOCR (config overrides allowed) whose post-norms are randomised: zero-initialised ones would
    make every block an identity, and tests should see the real paths."""
    import torch

    from upocr_hf import UpocrConfig, UpocrModel

    torch.manual_seed(0)
    model = UpocrModel(UpocrConfig(**{**tiny_config_kwargs(), **overrides})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("attention_norm.weight", "mlp_norm.weight")):
                param.uniform_(0.5, 1.5)
    return model


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

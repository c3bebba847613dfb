"""Optional FID for text removal: only with an Inception network whose weights are already on disk.

Nothing is ever downloaded. The protocol's FID is pytorch-fid's (``pip install pytorch-fid``) with
its FID Inception weights in torch hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``). When either is missing,
:func:`find_fid_extractor` returns ``None`` and a reason, and the removal metric reports
``{"fid": None, "fid_unavailable_reason": reason}``.

A feature extractor is any callable mapping an ``(N, H, W, 3)`` float32 batch in [0, 1] to an
``(N, D)`` array of features; FID is the Fréchet distance between the Gaussians fitted to the
prediction features and to the ground-truth features of the whole set.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import numpy as np

from upocr_hf.metrics.functional import frechet_distance

__all__ = ["PYTORCH_FID_WEIGHTS", "FeatureExtractor", "fid_from_features", "find_fid_extractor"]

#: File name pytorch-fid caches its FID Inception weights under (in torch hub's ``checkpoints``).
PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"

FeatureExtractor = Callable[[np.ndarray], np.ndarray]


def _torch_hub_checkpoints() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def find_fid_extractor() -> tuple[FeatureExtractor | None, str | None]:
    """The protocol's Inception feature extractor if it can run offline, else ``(None, reason)``."""
    if importlib.util.find_spec("pytorch_fid") is None:
        return None, (
            "FID needs pytorch-fid (the protocol's tool) and its Inception weights; pytorch-fid is not "
            "installed (torchmetrics' FID is not used: its torch-fidelity Inception is a different port)"
        )
    weights = os.path.join(_torch_hub_checkpoints(), PYTORCH_FID_WEIGHTS)
    if not os.path.isfile(weights):
        return None, f"FID Inception weights not found at {weights} (they are never downloaded here)"
    try:
        import torch
        from pytorch_fid.inception import InceptionV3

        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    except Exception as error:  # any failure means "unavailable", with the reason
        return None, f"could not build pytorch-fid's InceptionV3: {error!r}"

    @torch.no_grad()
    def extract(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        return model(batch)[0].flatten(1).double().numpy()

    return extract, None


def fid_from_features(
    prediction_features: np.ndarray, reference_features: np.ndarray
) -> tuple[float | None, str | None]:
    """FID between two ``(N, D)`` feature sets, or ``(None, reason)`` when fewer than 2 images."""
    prediction_features = np.asarray(prediction_features, dtype=np.float64)
    reference_features = np.asarray(reference_features, dtype=np.float64)
    if prediction_features.ndim != 2 or prediction_features.shape[0] < 2:
        return None, "FID needs features of at least 2 images"
    mu1, mu2 = prediction_features.mean(axis=0), reference_features.mean(axis=0)
    sigma1 = np.cov(prediction_features, rowvar=False)
    sigma2 = np.cov(reference_features, rowvar=False)
    return frechet_distance(mu1, sigma1, mu2, sigma2), None

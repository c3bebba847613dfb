"""The paper's evaluation protocols as plain, vectorised numpy functions.

This module is the single place where the numbers are computed; the ``evaluate`` modules in
:mod:`upocr_hf.metrics.modules` only reduce each (prediction, reference) pair to a small per-image
record with these functions and aggregate the records with :func:`aggregate_text_removal`,
:func:`segmentation_scores` and :func:`tamper_scores`.

Text removal (EraseNet-style script used by the paper's SCUT-EnsText table)
--------------------------------------------------------------------------
* Both images are loaded as RGB, their shorter side resized to 512 with PIL bicubic (a 512×512
  image is untouched), and scaled to [0, 1] (``uint8 / 255`` in float32, as ``ToTensor`` does).
* ``mse``: mean squared error over the RGB values in [0, 1]; ``psnr = 10·log10(1 / mse)`` in dB.
* Luminance ``Y = .299 R + .587 G + .114 B`` is computed in float32 on the [0, 1] values and
  multiplied by 255 (exactly the script's operation order, so rounding ties break the same way).
* ``age``: the per-pixel absolute difference ``|Y_pred − Y_gt|`` (float32) is rounded half-to-even
  to an integer, and those integers are averaged. ``peps`` = number of pixels whose *rounded*
  difference is > 20, divided by 512·512 (whatever the image size). ``pceps`` = number of those
  error pixels that survive a binary erosion with the 3×3 cross, divided by 512·512.
* ``mssim``: SSIM maps with an 11×11 Gaussian window (σ 1.5), K1 .01, K2 .03, L 255, "valid"
  convolution, on ``Y`` (float64). The published script never feeds the downsampled images back
  into its loop, so every level is computed at full resolution (``mssim_mode="protocol"``, the
  default): ``Π_{l<5} sign(cs_l)|cs_l|^{w_l} · sign(ssim_5)|ssim_5|^{w_5}`` with all terms from the
  same full-resolution maps. ``mssim_mode="multiscale"`` is the true multi-scale SSIM (2×2 mean
  filter, ``reflect`` border, keep every second pixel between levels).
* Identical images (``mse == 0``, infinite PSNR): the script skips them entirely — they are not
  counted, and none of their figures enters any average (their MSE of 0 is added to the MSE sum,
  which changes nothing). :func:`aggregate_text_removal` does the same by default and reports how
  many images were skipped; ``skip_identical=False`` instead averages every figure over all images
  except PSNR, which is then averaged over the images with ``mse > 0`` only.

Segmentation and tampered text
------------------------------
One confusion matrix over the whole set (ignored pixels excluded). Every ratio whose denominator
is 0 is defined as 0.0 (see :func:`safe_div`), so no result is ever NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from PIL import Image
from scipy import linalg, ndimage

from upocr_hf.tasks import (
    IGNORE_VALUE_UINT8,
    SEGMENTATION_BACKGROUND_RGB,
    SEGMENTATION_TEXT_RGB,
    SEGMENTATION_THRESHOLD,
    TAMPER_CLASS_RGB,
)

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "EPS_THRESHOLD",
    "MSSIM_WEIGHTS",
    "PROTOCOL_AREA",
    "PROTOCOL_SIZE",
    "aggregate_text_removal",
    "binary_confusion",
    "confusion_matrix",
    "erode_cross",
    "frechet_distance",
    "gaussian_window",
    "load_removal_image",
    "luminance",
    "mssim",
    "safe_div",
    "segmentation_prediction_to_mask",
    "segmentation_reference_to_mask",
    "segmentation_scores",
    "ssim_maps",
    "sum_confusion",
    "tamper_prediction_to_classes",
    "tamper_reference_to_classes",
    "tamper_scores",
    "text_removal_image_stats",
    "to_numpy_image",
]

#: Shorter side both removal images are resized to, and the side of the pEPs/pCEPs denominator.
PROTOCOL_SIZE: int = 512
#: Denominator of pEPs and pCEPs (512·512 whatever the image size, as the script does).
PROTOCOL_AREA: int = PROTOCOL_SIZE * PROTOCOL_SIZE
#: A pixel is an error pixel when its rounded luminance difference (0..255) is above this.
EPS_THRESHOLD: int = 20
#: Level weights of multi-scale SSIM (Wang et al. 2003).
MSSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW: int = 11
SSIM_SIGMA: float = 1.5
SSIM_K1: float = 0.01
SSIM_K2: float = 0.03
SSIM_L: float = 255.0
#: Default label value of ignored pixels in class-map references (TextSeg uses 255).
DEFAULT_IGNORE_INDEX: int = 255
#: 3×3 cross structuring element of the pCEPs erosion.
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)

MssimMode = Literal["protocol", "multiscale"]


# ----------------------------------------------------------------------------------------------
# generic helpers
# ----------------------------------------------------------------------------------------------
def safe_div(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is 0 (never NaN)."""
    return float(numerator) / float(denominator) if denominator else 0.0


def to_numpy_image(image: Any) -> np.ndarray:
    """Turn a PIL image, numpy array or torch tensor into a numpy array in HWC (or HW) layout.

    A 3-D array whose first dimension is 3 and whose last is not is taken as CHW and transposed.
    PIL images are converted with ``np.asarray`` (mode ``1`` gives booleans, ``P`` is converted to
    RGB). Torch tensors are detached and moved to the CPU.
    """
    if isinstance(image, Image.Image):
        if image.mode == "P":
            image = image.convert("RGB")
        return np.asarray(image)
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor without importing torch
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


# ----------------------------------------------------------------------------------------------
# text removal
# ----------------------------------------------------------------------------------------------
def _protocol_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """Output (width, height) of torchvision's ``Resize(shorter)``: shorter side to ``shorter``."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def load_removal_image(image: Any, size: int | None = PROTOCOL_SIZE) -> np.ndarray:
    """Load one text-removal image the way the protocol does: an ``(H, W, 3)`` float32 array in [0, 1].

    Args:
        image: a PIL image, a file path, or an ``(H, W, 3)`` / ``(3, H, W)`` / ``(H, W)`` array or
            tensor. ``uint8`` arrays are 0..255; float arrays are taken as [0, 1] and clipped to it
            (a model output). The published protocol evaluates 8-bit image files, so pass ``uint8``
            (e.g. ``round(clip(x, 0, 1) * 255)``) for numbers comparable with the paper.
        size: the shorter side is resized to this with PIL bicubic (as torchvision's
            ``Resize(size)`` on a PIL image); an image already at that size is untouched.
            ``None`` keeps the size.

    Returns:
        float32 array ``(H, W, 3)``, ``uint8 / 255`` for 8-bit inputs.
    """
    if isinstance(image, str | bytes) or hasattr(image, "__fspath__"):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if size is not None and min(image.size) != size:
            image = image.resize(_protocol_size(*image.size, size), Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
    array = to_numpy_image(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image, got an array of shape {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return load_removal_image(Image.fromarray(array), size)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"integer images must be uint8 (0..255), got {array.dtype}")
    array = np.clip(array.astype(np.float32), 0.0, 1.0)
    height, width = array.shape[:2]
    if size is not None and min(height, width) != size:
        new_size = _protocol_size(width, height, size)
        channels = [
            np.asarray(Image.fromarray(array[..., c], mode="F").resize(new_size, Image.Resampling.BICUBIC))
            for c in range(3)
        ]
        array = np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(array)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance ``(.299 R + .587 G + .114 B) · 255`` of an ``(H, W, 3)`` [0, 1] image, in float32.

    The operations are done in float32 in the script's order, so per-pixel rounding of the
    difference of two luminance maps (AGE, pEPs) breaks ties exactly as the published script.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    y = np.float32(0.299) * rgb[..., 0] + np.float32(0.587) * rgb[..., 1]
    y = y + np.float32(0.114) * rgb[..., 2]
    return y * np.float32(255)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """1-D normalised Gaussian of ``size`` taps (its outer product is MATLAB's ``fspecial``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 map with the 1-D window on both axes."""
    k = window.size
    lo, hi = k // 2, k - 1 - k // 2
    out = ndimage.correlate1d(image, window, axis=1, mode="constant")
    out = out[:, lo : out.shape[1] - hi]
    out = ndimage.correlate1d(out, window, axis=0, mode="constant")
    return out[lo : out.shape[0] - hi]


def ssim_maps(
    img1: np.ndarray,
    img2: np.ndarray,
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    data_range: float = SSIM_L,
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM map and contrast-structure map of two 2-D images ('valid' Gaussian filtering, float64).

    The window is ``min(window_size, H, W)`` taps, centred. (The script shrinks it to
    ``min(H, 11)`` and, for an even size, centres it off by half a pixel; both only matter for
    maps smaller than 11 pixels, never under the 512-pixel protocol.)
    Returns ``(ssim_map, cs_map)`` of shape ``(H − k + 1, W − k + 1)``.
    """
    img1 = np.asarray(img1, dtype=np.float64)
    img2 = np.asarray(img2, dtype=np.float64)
    if img1.shape != img2.shape or img1.ndim != 2:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, got {img1.shape} and {img2.shape}")
    window = gaussian_window(min(window_size, *img1.shape), sigma)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu1 = _filter_valid(img1, window)
    mu2 = _filter_valid(img2, window)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(img1 * img1, window) - mu1_sq
    sigma2_sq = _filter_valid(img2 * img2, window) - mu2_sq
    sigma12 = _filter_valid(img1 * img2, window) - mu1_mu2
    cs_map = (2.0 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = (2.0 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1) * cs_map
    return ssim_map, cs_map


def _downsample(image: np.ndarray) -> np.ndarray:
    """2×2 mean filter (``reflect`` border) then every second pixel, as the MS-SSIM reference code."""
    filtered = ndimage.convolve(image, np.full((2, 2), 0.25), mode="reflect")
    return filtered[::2, ::2]


def mssim(
    img1: np.ndarray,
    img2: np.ndarray,
    mode: MssimMode = "protocol",
    weights: Sequence[float] = MSSIM_WEIGHTS,
) -> float:
    """Multi-scale SSIM of two 2-D luminance maps in [0, 255] (float).

    Args:
        img1, img2: 2-D maps of the same shape (the protocol passes ``luminance()`` of GT and prediction).
        mode: ``"protocol"`` (default, the published script): every level uses the same full-resolution
            maps, so the value is ``cs^{w1+..+w4} · ssim^{w5}`` (signs carried as the script does).
            ``"multiscale"``: true MS-SSIM, downsampling by 2 between levels.
        weights: level weights, fine to coarse.

    Returns:
        MS-SSIM as a fraction (1.0 for identical images); the tables print it ×100.
    """
    if mode not in ("protocol", "multiscale"):
        raise ValueError(f"mode must be 'protocol' or 'multiscale', got {mode!r}")
    weights = np.asarray(weights, dtype=np.float64)
    levels = weights.size
    a = np.asarray(img1, dtype=np.float64)
    b = np.asarray(img2, dtype=np.float64)
    if mode == "protocol":
        ssim_map, cs_map = ssim_maps(a, b)
        mcs = np.full(levels - 1, cs_map.mean())
        last_ssim = ssim_map.mean()
    else:
        mcs_list = []
        for _ in range(levels - 1):
            _, cs_map = ssim_maps(a, b)
            mcs_list.append(cs_map.mean())
            a, b = _downsample(a), _downsample(b)
        mcs = np.asarray(mcs_list)
        last_ssim = ssim_maps(a, b)[0].mean()
    value = np.prod(np.sign(mcs) * np.abs(mcs) ** weights[:-1])
    value *= np.sign(last_ssim) * np.abs(last_ssim) ** weights[-1]
    return float(value)


def erode_cross(mask: np.ndarray) -> np.ndarray:
    """Binary erosion with the 3×3 cross (outside the image counts as background, as scipy does)."""
    return ndimage.binary_erosion(mask, structure=CROSS)


def text_removal_image_stats(
    prediction: Any,
    reference: Any,
    *,
    mssim_mode: MssimMode = "protocol",
    size: int | None = PROTOCOL_SIZE,
) -> dict[str, float]:
    """Per-image text-removal figures of one (prediction, ground truth) pair.

    Inputs are loaded with :func:`load_removal_image` (``size`` = the protocol's shorter side).

    Returns:
        ``mse`` (RGB, [0, 1] scale), ``psnr`` (dB; ``inf`` when ``mse == 0``), ``mssim`` (fraction),
        ``age`` (mean rounded |ΔY|, grey levels 0..255), ``peps`` and ``pceps`` (fractions of 512·512),
        ``eps`` and ``ceps`` (the raw pixel counts).
    """
    pred = load_removal_image(prediction, size)
    gt = load_removal_image(reference, size)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size after loading")
    diff = pred.astype(np.float64) - gt.astype(np.float64)
    mse = float(np.mean(diff * diff))
    psnr = 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf
    y_gt = luminance(gt)
    y_pred = luminance(pred)
    rounded = np.rint(np.abs(y_pred - y_gt))  # float32 difference, rounded half-to-even
    errors = rounded > EPS_THRESHOLD
    eps = int(np.count_nonzero(errors))
    ceps = int(np.count_nonzero(erode_cross(errors))) if eps else 0
    return {
        "mse": mse,
        "psnr": psnr,
        "mssim": mssim(y_gt, y_pred, mode=mssim_mode),
        "age": float(rounded.mean(dtype=np.float64)),
        "peps": eps / PROTOCOL_AREA,
        "pceps": ceps / PROTOCOL_AREA,
        "eps": float(eps),
        "ceps": float(ceps),
    }


def aggregate_text_removal(
    records: Mapping[str, Sequence[float] | np.ndarray], *, skip_identical: bool = True
) -> dict[str, Any]:
    """Average per-image removal figures (columns of :func:`text_removal_image_stats` records).

    Args:
        records: mapping with at least ``mse``, ``mssim``, ``age``, ``peps``, ``pceps`` columns
            (``psnr`` is recomputed from ``mse``).
        skip_identical: ``True`` (the protocol): images with ``mse == 0`` are dropped from every
            average. ``False``: they enter every average except PSNR's.

    Returns:
        ``psnr`` (dB), ``mssim`` and ``mse`` (fractions, as computed), ``mssim_x100`` and ``mse_x100``
        (the tables' units), ``age``, ``peps``, ``pceps``, ``num_images`` (all pairs seen),
        ``num_evaluated`` (pairs in the averages), ``num_identical`` (pairs with ``mse == 0``).
        A figure with no image to average is ``None``.
    """
    mse = np.asarray(records["mse"], dtype=np.float64)
    identical = mse == 0
    keep = ~identical if skip_identical else np.ones_like(identical)
    result: dict[str, Any] = {}
    psnr_values = 10.0 * np.log10(1.0 / mse[~identical])
    result["psnr"] = float(psnr_values.mean()) if psnr_values.size else None
    for key in ("mssim", "mse", "age", "peps", "pceps"):
        values = np.asarray(records[key], dtype=np.float64)[keep]
        result[key] = float(values.mean()) if values.size else None
    result["mssim_x100"] = None if result["mssim"] is None else 100.0 * result["mssim"]
    result["mse_x100"] = None if result["mse"] is None else 100.0 * result["mse"]
    result["num_images"] = int(mse.size)
    result["num_evaluated"] = int(np.count_nonzero(keep))
    result["num_identical"] = int(np.count_nonzero(identical))
    return result


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between two Gaussians (pytorch-fid's formula, same singular-matrix fallback)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# ----------------------------------------------------------------------------------------------
# segmentation / tampered text: decoding predictions and references
# ----------------------------------------------------------------------------------------------
def _channels_first(array: np.ndarray) -> Any:
    """An (H, W, C) float map as a (C, H, W) torch tensor (the form `upocr_hf.readout` reads)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D label map (PyTorch's ``nearest`` index rule)."""
    height, width = array.shape[:2]
    rows = np.minimum((np.arange(size[0]) * (height / size[0])).astype(np.int64), height - 1)
    cols = np.minimum((np.arange(size[1]) * (width / size[1])).astype(np.int64), width - 1)
    return array[rows[:, None], cols[None, :]]


def _as_unit_float(array: np.ndarray) -> np.ndarray:
    """uint8 → /255; floats clipped to [0, 1]; a new float32 array."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    out = array.astype(np.float32)  # always a copy
    return np.clip(out, 0.0, 1.0, out=out)


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """One int32 code per pixel of a uint8 (..., 3) array."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


def _nearest_palette(rgb: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Index of the nearest palette colour (0..255 RGB) for each pixel of an (H, W, 3) image.

    Float images are taken as [0, 1]; integer images as 0..255. Pixels that hold a palette colour
    exactly (the normal case for PNG targets) are matched by an integer code; only the others are
    compared by squared distance (ties go to the first colour).
    """
    colours = np.asarray(palette, dtype=np.int64)
    if rgb.dtype == np.uint8:
        codes = _pack_rgb(rgb)
        small_index = np.zeros(codes.shape, dtype=np.uint8)
        unmatched = np.ones(codes.shape, dtype=bool)
        for position, code in enumerate(_pack_rgb(colours).tolist()):
            equal = codes == code
            if position:  # palette colours are distinct: at most one is equal per pixel
                small_index += equal.view(np.uint8) * np.uint8(position)
            unmatched &= ~equal
        index = small_index.astype(np.int64)
        if not unmatched.any():
            return index
        values = rgb[unmatched].astype(np.float32)
    else:
        index = np.zeros(rgb.shape[:2], dtype=np.int64)
        unmatched = np.ones(rgb.shape[:2], dtype=bool)
        values = rgb.reshape(-1, 3).astype(np.float32)
        if np.issubdtype(rgb.dtype, np.floating):
            values *= np.float32(255)
    distances = ((values[:, None, :] - colours[None].astype(np.float32)) ** 2).sum(axis=-1)
    index[unmatched] = distances.argmin(axis=-1)
    return index


def segmentation_prediction_to_mask(
    prediction: Any, size: tuple[int, int] | None = None, threshold: float = SEGMENTATION_THRESHOLD
) -> np.ndarray:
    """Text mask (bool, ``(H, W)``) from a segmentation prediction (the segmentation readout).

    Accepted forms:
        * ``bool`` array / mode-``1`` PIL image: the mask itself;
        * integer label map other than ``uint8``: non-zero = text;
        * ``uint8`` 2-D map whose values are all 0/1: a 0/1 mask;
        * soft map: float (taken as [0, 1], clipped) or ``uint8`` (0..255, divided by 255), 2-D or
          RGB ``(H, W, 3)``; RGB maps are averaged over the channels; text = value ``> threshold``.

    If ``size`` (H, W) differs from the prediction's, soft maps are resized bilinearly before
    thresholding, masks with nearest neighbour.
    """
    array = to_numpy_image(prediction)
    is_mask = array.dtype == np.bool_ or (
        np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8 and array.ndim == 2
    )
    if array.dtype == np.uint8 and array.ndim == 2 and array.max(initial=0) <= 1:
        is_mask = True
    if is_mask:
        if array.ndim != 2:
            raise ValueError(f"a mask prediction must be 2-D, got shape {array.shape}")
        mask = array != 0
        if size is not None and mask.shape != tuple(size):
            mask = _resize_nearest(mask, size)
        return mask
    from upocr_hf.readout import read_mask

    soft = _as_unit_float(array)
    soft = soft[..., :3] if soft.ndim == 3 else soft[..., None]
    return read_mask(_channels_first(soft), size, threshold)[0].numpy()


def segmentation_reference_to_mask(
    reference: Any, ignore_index: int | None = DEFAULT_IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """``(text_mask, valid_mask)`` from a segmentation reference.

    Accepted forms:
        * 2-D label map (bool or integer): ``ignore_index`` (default 255, TextSeg's) = ignored, 0 =
          background, any other value = text. Give TextSeg labels as 0/1/255 (text 100 mapped to 1,
          word effect 200 to 0), not as 0/255 images;
        * RGB colour target ``(H, W, 3)`` (``uint8`` or [0, 1] float): each pixel takes the
          nearest of black (background), white (text) and gray 128 (ignored).
    """
    array = to_numpy_image(reference)
    if array.ndim == 3:
        index = _nearest_palette(
            array[..., :3], (SEGMENTATION_BACKGROUND_RGB, SEGMENTATION_TEXT_RGB, (IGNORE_VALUE_UINT8,) * 3)
        )
        return index == 1, index != 2
    if array.ndim != 2:
        raise ValueError(f"a segmentation reference must be (H, W) or (H, W, 3), got {array.shape}")
    if array.dtype == np.bool_:
        return array, np.ones(array.shape, dtype=bool)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"a 2-D segmentation reference must be bool or integer labels, got {array.dtype}")
    valid = np.ones(array.shape, dtype=bool) if ignore_index is None else array != ignore_index
    return (array != 0) & valid, valid


def tamper_prediction_to_classes(prediction: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """Class map (int64, ``(H, W)``: 0 background, 1 real text, 2 tampered text) from a prediction.

    Accepted forms: an integer class map (resized with nearest neighbour if ``size`` differs), or an
    RGB map ``(H, W, 3)`` (float [0, 1] model output or ``uint8`` colour image), which is clipped,
    resized bilinearly to ``size`` and read out by argmax over the channels.
    """
    array = to_numpy_image(prediction)
    if array.ndim == 2:
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise ValueError(f"a 2-D tampered-text prediction must be integer class ids, got {array.dtype}")
        classes = array.astype(np.int64)
        if size is not None and classes.shape != tuple(size):
            classes = _resize_nearest(classes, size)
        return classes
    if array.ndim != 3 or array.shape[-1] < 3:
        raise ValueError(f"a tampered-text prediction must be (H, W) or (H, W, 3), got {array.shape}")
    from upocr_hf.readout import read_class_map

    return read_class_map(_channels_first(_as_unit_float(array[..., :3])), size)[0].numpy()


def tamper_reference_to_classes(
    reference: Any, ignore_index: int | None = DEFAULT_IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, valid_mask)`` from a tampered-text reference.

    Accepted forms: a 2-D integer class map (0, 1, 2; ``ignore_index`` = ignored), or the RGB
    colour target (red background, green real text, blue tampered text, gray 128 ignored), decoded
    to the nearest of those colours.
    """
    array = to_numpy_image(reference)
    if array.ndim == 3:
        index = _nearest_palette(array[..., :3], (*TAMPER_CLASS_RGB, (IGNORE_VALUE_UINT8,) * 3))
        valid = index != len(TAMPER_CLASS_RGB)
        return np.where(valid, index, 0).astype(np.int64), valid
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"a tampered-text reference must be an integer (H, W) map or (H, W, 3), got {array.shape} {array.dtype}"
        )
    classes = array.astype(np.int64)
    valid = np.ones(classes.shape, dtype=bool) if ignore_index is None else classes != ignore_index
    if np.any((classes[valid] < 0) | (classes[valid] >= len(TAMPER_CLASS_RGB))):
        raise ValueError("tampered-text reference holds class ids outside 0..2 that are not ignore_index")
    return np.where(valid, classes, 0), valid


# ----------------------------------------------------------------------------------------------
# confusion matrices and scores
# ----------------------------------------------------------------------------------------------
def confusion_matrix(
    prediction: np.ndarray, reference: np.ndarray, num_classes: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 confusion matrix, rows = reference, columns = prediction.

    Pixels where ``valid`` is False are left out; predictions outside ``0..num_classes-1`` raise.
    """
    prediction = np.asarray(prediction, dtype=np.int64)
    reference = np.asarray(reference, dtype=np.int64)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    if valid is not None:
        prediction, reference = prediction[valid], reference[valid]
    else:
        prediction, reference = prediction.ravel(), reference.ravel()
    if prediction.size and (prediction.min() < 0 or prediction.max() >= num_classes):
        raise ValueError(f"prediction class ids must lie in 0..{num_classes - 1}")
    counts = np.bincount(reference * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def binary_confusion(
    prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` pixel counts of a boolean prediction against a boolean reference."""
    prediction = np.asarray(prediction, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    if valid is None:
        valid = np.ones(reference.shape, dtype=bool)
    positive, text = prediction & valid, reference & valid
    tp = int(np.count_nonzero(positive & text))
    fp = int(np.count_nonzero(positive)) - tp
    fn = int(np.count_nonzero(text)) - tp
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    return tp, fp, fn, tn


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float, float]:
    """IoU, precision, recall, F of one class (0.0 for every zero denominator)."""
    precision = safe_div(tp, tp + fp)
    recall = safe_div(tp, tp + fn)
    return safe_div(tp, tp + fp + fn), precision, recall, safe_div(2 * precision * recall, precision + recall)


def segmentation_scores(tp: int, fp: int, fn: int, tn: int = 0) -> dict[str, float]:
    """Text-segmentation scores from one binary confusion matrix over the set (fractions in [0, 1]).

    Returns ``fg_iou`` = TP/(TP+FP+FN), ``precision``, ``recall``, ``f_score`` = 2PR/(P+R); each is
    0.0 when its denominator is 0 (e.g. no text in the references and none predicted).
    """
    del tn  # not used by the paper's figures; kept for a symmetric signature
    fg_iou, precision, recall, f_score = _prf(tp, fp, fn)
    return {"fg_iou": fg_iou, "precision": precision, "recall": recall, "f_score": f_score}


def tamper_scores(matrix: np.ndarray) -> dict[str, float]:
    """Tampered-text scores from a 3×3 confusion matrix (rows reference, columns prediction).

    Returns ``{real,tampered}_{iou,precision,recall,f_score}`` (fractions) and ``miou`` / ``mf``,
    the plain means over real and tampered text (background excluded). A class absent from both
    references and predictions has IoU/P/R/F 0.0 and still counts in the means.
    """
    matrix = np.asarray(matrix, dtype=np.int64).reshape(3, 3)
    result: dict[str, float] = {}
    for class_id, name in ((1, "real"), (2, "tampered")):
        tp = matrix[class_id, class_id]
        fp = matrix[:, class_id].sum() - tp
        fn = matrix[class_id, :].sum() - tp
        iou, precision, recall, f_score = _prf(tp, fp, fn)
        result.update(
            {
                f"{name}_iou": iou,
                f"{name}_precision": precision,
                f"{name}_recall": recall,
                f"{name}_f_score": f_score,
            }
        )
    result["miou"] = (result["real_iou"] + result["tampered_iou"]) / 2.0
    result["mf"] = (result["real_f_score"] + result["tampered_f_score"]) / 2.0
    return result


def sum_confusion(matrices: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
    """Sum of per-image confusion matrices (flattened or square) into one square int64 matrix."""
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    for matrix in matrices:
        total += np.asarray(matrix, dtype=np.int64).reshape(num_classes, num_classes)
    return total

"""Image-level operations of text forgers, and the traces they leave.

Real tampered text (Tampered-IC13 was made with the SRNet text-editing network; later sets also use copy-move and
splicing) is found by its traces, not its content: an erased word's background is reconstructed smoothly or leaves
residue, the retyped strokes miss the photo's blur and noise, the edited region is resampled, and its JPEG history
differs from the rest of the image. These functions make those traces, each with a strength that goes down to
subtle; :mod:`upocr_hf.data.synthetic` decides which words are forged and labels them.

Arrays are (h, w, 3) uint8 images and (h, w) bool or float32 masks; every function is pure given its ``rng``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .camera import blur, jpeg

__all__ = ["FORGERY_METHODS", "TRACE_REACH", "dilate", "feather", "inpaint", "leave_traces", "paste"]

#: How a word is forged: retyped after inpainting (edit-network style), copied from elsewhere in the same image
#: (copy-move), or cut from another photograph (splicing).
FORGERY_METHODS: tuple[str, ...] = ("edit", "copy-move", "splice")
#: How far (px) beyond the region it is given :func:`leave_traces` may change pixels.
TRACE_REACH = 3


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool mask by a square of side ``2 * radius + 1``."""
    if radius <= 0:
        return mask.copy()
    return ndimage.maximum_filter(mask, size=2 * radius + 1)


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """A bool mask softened into float32 weights in [0, 1] (falling off over about ``radius`` px at its edge)."""
    weight = mask.astype(np.float32)
    return ndimage.gaussian_filter(weight, radius) if radius > 0 else weight


def inpaint(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill ``hole`` from its surroundings by normalised convolution, coarser where finer scales find nothing: the
    smooth, texture-less reconstruction that learned and classical inpainting leave behind."""
    if not hole.any():
        return image.copy()
    ys, xs = np.nonzero(hole)
    height = float(ys.max() - ys.min() + 1)
    pad = int(4 * height) + 4  # the context the coarsest scale draws on
    y0, y1 = max(0, ys.min() - pad), min(image.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(image.shape[1], xs.max() + pad + 1)
    crop, crop_hole = image[y0:y1, x0:x1].astype(np.float32), hole[y0:y1, x0:x1]
    known = (~crop_hole).astype(np.float32)
    source = crop * known[..., None]
    todo = crop_hole.copy()
    for sigma in (height * rng.uniform(0.25, 0.5), height, height * 3.0):
        weights = ndimage.gaussian_filter(known, sigma)
        estimate = ndimage.gaussian_filter(source, (sigma, sigma, 0)) / np.maximum(weights, 1e-6)[..., None]
        reached = todo & (weights > 1e-3)
        crop[reached] = estimate[reached]
        todo &= ~reached
    crop[todo] = crop[~crop_hole].mean(0) if (~crop_hole).any() else 128
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
    return out


def paste(base: np.ndarray, patch: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``base`` with ``patch`` (same shape) blended in by float ``weight`` (h, w)."""
    a = weight[..., None]
    out = base.astype(np.float32) * (1 - a) + patch.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _resample(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize(
        (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR
    )
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def leave_traces(
    rng: np.random.Generator, original: np.ndarray, edited: np.ndarray, region: np.ndarray, strength: float
) -> np.ndarray:
    """Blend ``edited`` into ``original`` over the bool ``region`` after the forger's post-processing, each trace
    drawn at random and scaled by ``strength`` in (0, 1]: resampling (the edit was made at another size), a blur or
    sharpening that misses the photo's, noise of another camera, and a JPEG save of the edited crop on its own."""
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        return original.copy()
    pad = 8  # whole JPEG blocks and resampling context around the edit
    y0, y1 = max(0, ys.min() - pad), min(original.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(original.shape[1], xs.max() + pad + 1)
    crop = edited[y0:y1, x0:x1]
    if rng.random() < 0.6:
        crop = _resample(crop, 1 - strength * rng.uniform(0.15, 0.55))
    r = rng.random()
    if r < 0.3:
        crop = blur(crop, strength * rng.uniform(0.4, 1.5))
    elif r < 0.45:
        crop = np.asarray(
            Image.fromarray(crop).filter(ImageFilter.UnsharpMask(2, int(60 + 120 * strength), 2))
        )
    if rng.random() < 0.4:  # noise of another sensor, or none where the photo has some
        noise = rng.normal(0, strength * rng.uniform(2, 8), crop.shape[:2] + (1,))
        crop = np.clip(np.rint(crop.astype(np.float32) + noise), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        crop = jpeg(crop, int(rng.integers(40, 96)))
    out = edited.copy()
    out[y0:y1, x0:x1] = crop
    # the soft edge stays within TRACE_REACH px of the region, so labels know where changes can be
    weight = feather(dilate(region, 1), rng.uniform(0, 1.5)) * dilate(region, TRACE_REACH)
    return paste(original, out, np.maximum(weight, region.astype(np.float32)))

"""What a camera, a scanner or a screenshot does to a rendered scene: light, shadow, defocus, sensor noise, colour
loss and JPEG, applied to a text image and its text-free background *together*, so that a removal pair stays a
pair (the same light, the same noise realisation) and only the text differs.

Every function takes a ``numpy.random.Generator`` and is a pure function of it and its inputs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CameraConfig", "blur", "jpeg", "photograph", "smooth_field", "to_gray"]


@dataclass(frozen=True)
class CameraConfig:
    """Probabilities and strengths of each effect (all effects are independent)."""

    lighting_prob: float = 0.5
    lighting_range: tuple[float, float] = (0.55, 1.15)
    shadow_prob: float = 0.15
    blur_prob: float = 0.35
    max_blur_sigma: float = 1.2
    noise_prob: float = 0.6
    max_noise_sigma: float = 7.0
    gray_prob: float = 0.08
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[int, int] = (45, 95)


def smooth_field(rng: np.random.Generator, w: int, h: int, cells: int = 3) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (h, w): bicubic-upsampled coarse noise."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / max(hi - lo, 1e-6)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (h, w, 3) uint8 image."""
    if sigma <= 0.05:
        return image
    return np.array(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def jpeg(image: np.ndarray, quality: int, *, subsampling: int = 2) -> np.ndarray:
    """The image after one JPEG save and load at ``quality`` (4:2:0 chroma unless ``subsampling`` says otherwise)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality), subsampling=subsampling)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"))


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601, as PIL computes it) repeated over three channels."""
    return np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, axis=-1)


def _shadow_mask(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A soft-edged polygon (a cast shadow) as float32 weights in [0, 1]."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    radius = rng.uniform(0.3, 0.9) * max(w, h)
    angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(3, 7))))
    points = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(2, 0.08 * max(w, h))))
    return np.asarray(mask, np.float32) / 255.0


def photograph(
    rng: np.random.Generator,
    images: Sequence[np.ndarray],
    cfg: CameraConfig = CameraConfig(),
    *,
    gray: bool | None = None,
) -> tuple[list[np.ndarray], bool]:
    """Apply one random camera to every image in ``images`` (same shape): identical light, shadow, blur and noise
    realisation, then JPEG at one quality. Returns the images and whether they were made grayscale."""
    h, w = images[0].shape[:2]
    gain = np.ones((h, w, 3), np.float32)
    if rng.random() < cfg.lighting_prob:
        lo, hi = cfg.lighting_range
        gain *= (lo + (hi - lo) * smooth_field(rng, w, h, int(rng.integers(1, 4))))[..., None]
        gain *= rng.uniform(0.9, 1.1, 3).astype(np.float32)  # colour of the light
    if rng.random() < cfg.shadow_prob:
        gain *= (1 - rng.uniform(0.2, 0.5) * _shadow_mask(rng, w, h))[..., None]
    sigma = rng.uniform(0.3, cfg.max_blur_sigma) if rng.random() < cfg.blur_prob else 0.0
    noise_sigma = rng.uniform(1.0, cfg.max_noise_sigma) if rng.random() < cfg.noise_prob else 0.0
    noise = (
        rng.normal(0, noise_sigma, (h, w, 1 if rng.random() < 0.5 else 3)).astype(np.float32)
        if noise_sigma
        else 0
    )
    if gray is None:
        gray = bool(rng.random() < cfg.gray_prob)
    quality = int(rng.integers(*cfg.jpeg_quality)) if rng.random() < cfg.jpeg_prob else None
    out = []
    for image in images:
        x = blur(image, sigma).astype(np.float32) * gain + noise
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if gray:
            x = to_gray(x)
        if quality is not None:
            x = jpeg(x, quality)
        out.append(x)
    return out, gray

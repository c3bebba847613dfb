"""Keep-background text removal: only the text region of an image may change; every other pixel is the input's.

The region is the model's own text segmentation of the image (or, for a model without that task, where its removal
differs from the input), dilated to cover stroke borders and effects (`dilate_mask`, `default_dilation`);
`compose_keep_background` copies the removal into the input there. In tile mode the segmentation runs first and the
removal only in the windows that hold some of the region (`tiled_keep_background_removal`), with tile progress
counted over both passes (`TwoPassProgress`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .tasks import TEXT_SEGMENTATION
from .tiling import tiled_predict_tasks


def dilate_mask(mask: torch.Tensor | np.ndarray, radius: int) -> torch.Tensor:
    """Square dilation of a boolean `(H, W)` mask by `radius` pixels (a `(2r+1)²` max filter) → `torch.BoolTensor`."""
    tensor = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).bool()
    if radius <= 0:
        return tensor
    size = 2 * radius + 1  # a square max filter is separable: rows, then columns
    pooled = F.max_pool2d(tensor[None, None].float(), kernel_size=(1, size), stride=1, padding=(0, radius))
    pooled = F.max_pool2d(pooled, kernel_size=(size, 1), stride=1, padding=(radius, 0))
    return pooled[0, 0] > 0


def default_dilation(height: int, width: int) -> int:
    """Default keep-background dilation: 3 px at the paper's 512 px scale, scaled with the image (at least 3)."""
    return max(3, math.ceil(3 * max(height, width) / 512))


def compose_keep_background(
    original: np.ndarray | Image.Image, prediction: np.ndarray, text_mask: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Copy `prediction` into `original` inside `text_mask` only.

    Args:
        original: the input, `(H, W, 3)` uint8 (or an RGB PIL image).
        prediction: the text-free prediction, `(H, W, 3)` uint8.
        text_mask: boolean `(H, W)`, True where pixels may change.

    Returns:
        `(H, W, 3)` uint8; outside the mask it is byte-identical to `original`.
    """
    original = np.asarray(original)
    mask = text_mask.cpu().numpy() if isinstance(text_mask, torch.Tensor) else np.asarray(text_mask)
    if original.shape != prediction.shape or original.dtype != np.uint8:
        raise ValueError(
            f"original {original.shape} {original.dtype} must be uint8 like prediction {prediction.shape}"
        )
    if mask.shape != original.shape[:2]:
        raise ValueError(f"text mask of shape {mask.shape} does not match the image {original.shape[:2]}")
    return np.where(mask.astype(bool)[..., None], prediction, original)


def difference_mask(original: np.ndarray, prediction: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Text region for models without a segmentation task: max channel `|prediction − original| / 255 > threshold`."""
    difference = np.abs(prediction.astype(np.int16) - np.asarray(original).astype(np.int16)).max(axis=-1)
    return difference > threshold * 255


class TwoPassProgress:
    """Tile progress of a pass over every window followed by a pass over some of them: the first counts against
    twice its windows (no more than as many follow), the second against the windows of both; `finish` reports
    the end when the second ran none."""

    def __init__(self, report: Callable[[int, int], None] | None) -> None:
        self.report, self.first_total, self.second_total = report, 0, 0

    def first(self, done: int, total: int) -> None:
        self.first_total = total
        if self.report is not None:
            self.report(done, 2 * total)

    def second(self, done: int, total: int) -> None:
        self.second_total = total
        if self.report is not None:
            self.report(self.first_total + done, self.first_total + total)

    def finish(self) -> None:
        if self.report is not None and not self.second_total:
            self.report(self.first_total, self.first_total)


def tiled_keep_background_removal(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    task: str,
    text_region: Callable[[torch.Tensor, int], torch.Tensor],
    tile_options: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-background removal in tile mode: the text segmentation first, then the removal (`task`) only in the
    windows that hold some of the region allowed to change (everywhere else the input is copied back anyway), so an
    image with little text costs little more than one tiled pass. Same result as removing everywhere (up to float
    rounding where fewer windows change which tiles share a model call).

    Args:
        model: the `UpocrModel`.
        pixel_values: `(n, 3, H, W)` at native resolution.
        task: the removal task's id.
        text_region: `(1, 3, H, W)` text prediction of image `i`, `i` → its region, bool `(H, W)`.
        tile_options: `tiled_predict_tasks`'s `tile_size`, `overlap`, `batch_size`.
        progress: called as `progress(tiles_done, tiles_total)` over both passes.
    Returns:
        The removal `(n, 3, H, W)` and the regions, bool `(n, H, W)`.
    """
    passes = TwoPassProgress(progress)
    text = tiled_predict_tasks(
        model, pixel_values, [TEXT_SEGMENTATION], progress=passes.first, **tile_options
    )
    text = text[0].float().cpu()
    regions = torch.stack([text_region(text[i : i + 1], i) for i in range(len(text))])
    removal = tiled_predict_tasks(
        model, pixel_values, [task], progress=passes.second, needed=regions, **tile_options
    )[0]
    passes.finish()
    return removal, regions

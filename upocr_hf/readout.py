"""Reading a prediction out: the one implementation that the image processor (and so the pipeline) and the metrics
share.

A prediction is the model's output for one image, a float tensor `(C, h, w)` (C = 3; 1 for a single-channel soft
map). Every readout clamps it to [0, 1] and resizes it with bilinear interpolation (`align_corners=False`, no
antialiasing) to the image's `(H, W)`, then reads it the way its task's `Task.readout` says:

- `"image"`: the RGB image itself (rounded to 8 bits by `image_io.to_uint8_rgb`);
- `"mask"`: text where the channel mean is strictly greater than the threshold;
- `"class-map"`: argmax over the channels (0 background, 1 real text, 2 tampered text; ties go to the lower class).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .tasks import SEGMENTATION_THRESHOLD


def clamped_resized(prediction: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """`(C, h, w)` → float `(C, H, W)` in [0, 1]: clamped, resized (bilinear) to `size` = (H, W) unless None."""
    prediction = prediction.clamp(0.0, 1.0)
    if size is None:
        return prediction
    height, width = (int(v) for v in size)
    if tuple(prediction.shape[-2:]) == (height, width):
        return prediction
    resized = F.interpolate(prediction[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return resized.clamp(0.0, 1.0)


def read_mask(
    prediction: torch.Tensor, size: Sequence[int] | None = None, threshold: float = SEGMENTATION_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mask, scores)`: the bool `(H, W)` text mask (channel mean `> threshold`) and the channel mean itself."""
    scores = clamped_resized(prediction, size).mean(dim=0)
    return scores > threshold, scores


def read_class_map(
    prediction: torch.Tensor, size: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(class_map, scores)`: the long `(H, W)` argmax over the channels, and the clamped channels divided by their
    sum (`(C, H, W)`, summing to 1 per pixel; equal shares where all are 0)."""
    clamped = clamped_resized(prediction, size)
    total = clamped.sum(dim=0, keepdim=True)
    equal = torch.full_like(clamped, 1 / clamped.shape[0])
    return clamped.argmax(dim=0), torch.where(total > 0, clamped / total.clamp_min(1e-12), equal)


__all__ = ["clamped_resized", "read_class_map", "read_mask"]

"""High-resolution inference: run overlapping model-size tiles at native resolution and blend them seamlessly.

The paper's protocol squeezes every image into 512×512 and stretches the answer back; fine text in a 4000×3000
photo does not survive that. Here the image is instead covered by `tile_size`×`tile_size` windows that overlap by
`overlap` pixels (default: a quarter of the tile, 128 px for 512), each window is predicted at native resolution
(tiles are batched), and the raw RGB predictions are blended before any post-processing:

- positions along each axis start at 0, step `tile_size - overlap` and the last window is aligned with the far
  border, so every pixel is covered and consecutive windows overlap by at least `overlap` pixels;
- each window is weighted by a separable raised-cosine (Hann) taper over its first/last `overlap` pixels on sides
  that face another window (sides on the image border keep weight 1); the weights are strictly positive;
- the blended value is `Σ weight·prediction / Σ weight` per pixel, so a constant prediction stays that constant (up
  to float rounding) and there are no seams.

An axis no longer than `tile_size` gets one window spanning it, so an image no larger than a tile is predicted by a
single model call on the whole image — exactly the untiled result (the model pads non-multiples of 32 itself).

A caller that needs predictions in part of the image only (keep-background removal: where the text is) passes that
part as `needed`: windows that hold none of it are not run, and pixels no run window covers keep the input's values.
Every needed pixel is blended from all the windows that cover it, as in a full run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of the windows covering `length` pixels (one window `[0, length)` when `length <= tile_size`)."""
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile_size {tile_size}")
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    count = math.ceil((length - tile_size) / stride) + 1
    starts = [min(i * stride, length - tile_size) for i in range(count)]
    return sorted(set(starts))


def _axis_weights(start: int, size: int, length: int, overlap: int, dtype: torch.dtype) -> torch.Tensor:
    """1-D blending weights of a window `[start, start + size)` on an axis of `length` pixels."""
    weights = torch.ones(size, dtype=dtype)
    ramp_length = min(overlap, size)
    if ramp_length == 0:
        return weights
    positions = torch.arange(1, ramp_length + 1, dtype=dtype)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * positions / (ramp_length + 1))  # in (0, 1), rising
    if start > 0:
        weights[:ramp_length] = torch.minimum(weights[:ramp_length], ramp)
    if start + size < length:
        weights[size - ramp_length :] = torch.minimum(weights[size - ramp_length :], ramp.flip(0))
    return weights


def predict_tasks(
    model: Callable[..., Any], images: torch.Tensor, tasks: Sequence[Any], dtype: torch.dtype | None = None
) -> list[torch.Tensor]:
    """`(n, 3, h, w)` → one `(n, 3, h, w)` raw prediction per task (in `dtype`, if given), from one model call."""
    if len(tasks) == 1:  # the task as given: one for all, or one per image
        prediction = model(images, task=tasks[0]).prediction
    else:
        prompts = [task for task in tasks for _ in range(len(images))]
        prediction = model(torch.cat([images] * len(tasks)), task=prompts).prediction
    prediction = prediction if dtype is None else prediction.to(dtype)
    return list(prediction.split(len(images)))


def tiled_predict(
    model: Callable[..., Any],
    pixel_values: torch.Tensor,
    task: Any,
    tile_size: int = 512,
    overlap: int | None = None,
    batch_size: int = 4,
    min_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    needed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predict a large image with overlapping tiles and blend them.

    Args:
        model: callable as `model(pixel_values, task=...)` returning an object with `.prediction` `(n, 3, h, w)`
            (a [`UpocrModel`]).
        pixel_values: `(B, 3, H, W)` float in [0, 1], at native resolution; images are tiled one after another.
        task: the task of every image (a name or id, passed to the model for each tile batch).
        tile_size: window side (the model size, 512 for the paper's model).
        overlap: overlap between neighbouring windows; default `tile_size // 4`.
        batch_size: tiles per model call.
        min_size: smallest side the model accepts (32 for UPOCR); smaller images are edge-padded up to it and the
            prediction is cropped back.
        progress: called as `progress(tiles_done, tiles_total)` after every model call (all images together).
        needed: `(B, H, W)` bool, where predictions are wanted (default: everywhere). Windows holding none of it
            are not run; pixels no run window covers come back as the input's own values.

    Returns:
        `(B, 3, H, W)` blended raw predictions on `pixel_values`' device (not clamped): float32, or float64 for
        float64 inputs.
    """
    options = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, min_size=min_size)
    return tiled_predict_tasks(model, pixel_values, [task], progress=progress, needed=needed, **options)[0]


def tiled_predict_tasks(
    model: Callable[..., Any],
    pixel_values: torch.Tensor,
    tasks: Sequence[Any],
    tile_size: int = 512,
    overlap: int | None = None,
    batch_size: int = 4,
    min_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    needed: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """[`tiled_predict`] for several tasks of the same images at once: each batch of tiles goes through the model
    once with every task's prompt, instead of one tiled pass per task. A call holds at most `batch_size` images
    (`batch_size // len(tasks)` tiles, at least one), so memory stays what `batch_size` allows. Returns one
    `(B, 3, H, W)` blended prediction per task, in the order of `tasks`.

    `needed` (`(B, H, W)` bool, optional) says where predictions are wanted: windows that hold none of it are not
    run, and pixels that no run window covers come back as the input's own values. A needed pixel gets the value
    a full run gives it, since every window covering it holds it and is run (bit-identical when its tiles share
    model calls as in the full run, as with `batch_size=1`). `needed` may live on any device.
    """
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    overlap = tile_size // 4 if overlap is None else overlap
    batch, _, height, width = pixel_values.shape
    if height < min_size or width < min_size:  # below the model's minimum: pad (edge values), predict, crop
        padding = (0, max(0, min_size - width), 0, max(0, min_size - height))
        padded = F.pad(pixel_values, padding, mode="replicate")
        needed = None if needed is None else F.pad(needed, padding, value=False)
        predictions = tiled_predict_tasks(
            model, padded, tasks, tile_size, overlap, batch_size, min_size, progress, needed
        )
        return [prediction[..., :height, :width] for prediction in predictions]
    rows, cols = tile_starts(height, tile_size, overlap), tile_starts(width, tile_size, overlap)
    tile_height, tile_width = min(tile_size, height), min(tile_size, width)
    windows = [(top, left) for top in rows for left in cols]
    runs = _windows_to_run(windows, needed, (batch, height, width), (tile_height, tile_width))
    # float64 stays float64 (a float64 model's tiles are not rounded to float32 before blending); anything
    # narrower is blended in float32
    dtype = torch.float64 if pixel_values.dtype == torch.float64 else torch.float32

    if len(windows) == 1 and all(runs):
        predictions = predict_tasks(model, pixel_values, tasks, dtype)
        if progress is not None:
            progress(batch, batch)
        return predictions

    weight_rows = {top: _axis_weights(top, tile_height, height, overlap, dtype) for top in rows}
    weight_cols = {left: _axis_weights(left, tile_width, width, overlap, dtype) for left in cols}
    done, total = 0, sum(map(len, runs))

    def predict_chunk(tiles: torch.Tensor) -> torch.Tensor:  # (tiles, tasks, 3, h, w)
        nonlocal done
        predictions = torch.stack(predict_tasks(model, tiles, tasks, dtype), dim=1)
        done += len(tiles)
        if progress is not None:
            progress(done, total)
        return predictions

    blend = dict(tiles_per_call=max(1, batch_size // len(tasks)), num_tasks=len(tasks), dtype=dtype)
    results = [
        _blend_windows(
            predict_chunk, image, image_windows, (tile_height, tile_width), weight_rows, weight_cols, **blend
        )
        for image, image_windows in zip(pixel_values, runs)
    ]
    return list(torch.stack(results, dim=1))


def _window(top: int, left: int, tile_shape: tuple[int, int]) -> tuple[slice, slice]:
    """The (rows, columns) slices of the window at `(top, left)`."""
    return slice(top, top + tile_shape[0]), slice(left, left + tile_shape[1])


def _windows_to_run(
    windows: list[tuple[int, int]],
    needed: torch.Tensor | None,
    shape: tuple[int, int, int],
    tile_shape: tuple[int, int],
) -> list[list[tuple[int, int]]]:
    """Per image, the windows `(top, left)` to run: all of them, or those holding a pixel of `needed`."""
    if needed is None:
        return [windows] * shape[0]
    if tuple(needed.shape) != shape:
        raise ValueError(f"needed must be (batch, height, width) = {shape}, got {tuple(needed.shape)}")
    return [
        [(top, left) for top, left in windows if mask[_window(top, left, tile_shape)].any()]
        for mask in needed
    ]


def _blend_windows(
    predict_chunk: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    windows: list[tuple[int, int]],
    tile_shape: tuple[int, int],
    weight_rows: dict[int, torch.Tensor],
    weight_cols: dict[int, torch.Tensor],
    tiles_per_call: int,
    num_tasks: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One `(3, H, W)` image's windows predicted `tiles_per_call` at a time and blended: `(tasks, 3, H, W)`.
    Pixels that none of `windows` covers keep the image's own values."""
    height, width = image.shape[-2:]
    accumulated = torch.zeros((num_tasks, 3, height, width), dtype=dtype, device=image.device)
    total_weight = torch.zeros((1, height, width), dtype=dtype, device=image.device)
    for start in range(0, len(windows), tiles_per_call):
        chunk = windows[start : start + tiles_per_call]
        slices = [_window(top, left, tile_shape) for top, left in chunk]
        tiles = torch.stack([image[:, rows, cols] for rows, cols in slices])
        for (top, left), (rows, cols), prediction in zip(chunk, slices, predict_chunk(tiles)):
            weight = (weight_rows[top][:, None] * weight_cols[left][None, :]).to(image.device)
            accumulated[..., rows, cols] += prediction * weight
            total_weight[:, rows, cols] += weight
    return torch.where(total_weight > 0, accumulated / total_weight, image.to(dtype))


__all__ = ["predict_tasks", "tile_starts", "tiled_predict", "tiled_predict_tasks"]

"""Reading images: local files with errors that say what is wrong, and any in-memory image as RGB in [0, 1].

- `load_image` reads and fully decodes a local file, refusing what is not an image, truncated, empty or larger than
  a pixel limit (a decompression-bomb guard), with an `ImageLoadError` naming the file and the reason.
- `to_unit_rgb` turns a PIL image of any mode, a NumPy array or a torch tensor into a float32 `(3, H, W)` tensor in
  [0, 1]: EXIF orientation applied; gray replicated; transparency composited on white; 8-bit scaled by 1/255 and
  16-bit by 1/65535, floats taken as [0, 1] (clamped), bools as {0, 1}, other integers as 8-bit values.
- `to_uint8_rgb` is the way back to 8-bit `(H, W, 3)`, rounding to the nearest value.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: Default decompression-bomb guard: images with more pixels than this are refused (about 16k × 16k).
DEFAULT_MAX_PIXELS: int = 256_000_000
#: Colour that transparent pixels are composited on (white).
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

PathLike = str | os.PathLike
ImageLike = Image.Image | np.ndarray | torch.Tensor | PathLike


class ImageLoadError(ValueError):
    """An input image cannot be used; the message names the file (or batch position) and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ImageTooLargeError(ImageLoadError):
    """An image with more pixels than allowed (the guard against decompression bombs); `pixels` and `limit` say by
    how much, so each surface can say how its own limit is raised."""

    def __init__(self, source: str, width: int, height: int, limit: int):
        self.pixels, self.limit = width * height, limit
        super().__init__(
            source, f"image too large: {width}×{height} = {width * height:,} pixels, the limit is {limit:,}"
        )


def _check_pixel_limit(source: str, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(source, f"zero-sized image ({width}×{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(source, width, height, max_pixels)


#: PIL's own decompression-bomb limit is process-wide. `load_image` checks the size against its own `max_pixels` from
#: the header (read with PIL's check off for that moment), then decodes with PIL's limit raised to `max_pixels` when
#: that is larger (never lowered), all under this lock.
_PIL_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pil_limit(limit: int | None) -> Iterator[None]:
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read and fully decode a local image file, with errors that name the file and the reason.

    Args:
        path: a local file (URLs are refused: nothing is downloaded).
        max_pixels: refuse images with more pixels than this before decoding them (`None`: no limit at all; PIL's
            own limit is replaced by this one).

    Returns:
        The decoded `PIL.Image.Image` in its own mode (EXIF orientation not yet applied; the processor applies it).

    Raises:
        ImageLoadError: missing file, empty file, not an image, truncated or corrupt data, too many pixels.
    """
    source = os.fspath(path)
    _check_file(source)
    with _PIL_LIMIT_LOCK:
        try:
            with _pil_limit(None):  # the header only: the size is checked against ours just below
                image = Image.open(source)
        except UnidentifiedImageError:
            raise ImageLoadError(source, "not an image (unrecognised file format)") from None
        except OSError as error:
            if "truncated" in str(error).lower():
                raise ImageLoadError(source, f"truncated image data ({error})") from None
            raise ImageLoadError(source, f"cannot open image: {error}") from None
        _check_pixel_limit(source, image.width, image.height, max_pixels)
        previous = Image.MAX_IMAGE_PIXELS  # None: PIL's check is off already
        raised = None if max_pixels is None or previous is None else max(max_pixels, previous)
        with _pil_limit(raised):
            _decode(image, source)
    if getattr(image, "n_frames", 1) > 1:
        logger.warning(
            "%s: an animated image of %d frames; only the first frame is used", source, image.n_frames
        )
    return image


def _check_file(source: str) -> None:
    """Refuse, with the reason, what is not a readable local file."""
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        raise ImageLoadError(source, "URLs are not supported; download the file and pass a local path")
    if os.path.islink(source) and not os.path.exists(source):
        raise ImageLoadError(source, "a symbolic link that leads nowhere (broken, or a loop)")
    if not os.path.exists(source):
        raise ImageLoadError(source, "no such file")
    if os.path.isdir(source):
        raise ImageLoadError(source, "is a directory, not an image file")
    if os.path.getsize(source) == 0:
        raise ImageLoadError(source, "empty file (0 bytes)")


def _decode(image: Image.Image, source: str) -> None:
    """Decode all pixel data now, refusing truncated files (PIL would otherwise fill them in grey)."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        message = str(error)
        reason = (
            "truncated image data" if "truncated" in message.lower() else f"corrupt image data ({message})"
        )
        raise ImageLoadError(source, reason) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _composite_on_white(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`rgb` (3, H, W) and `alpha` (1, H, W) in [0, 1] → (3, H, W) over a white background."""
    return rgb * alpha + (1.0 - alpha)


def _pil_to_unit_rgb(image: Image.Image, do_rescale: bool, rescale_factor: float) -> torch.Tensor:
    """A PIL image of any mode → float32 tensor `(3, H, W)` in [0, 1] (see the module docstring for the rules)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        image = image.convert("RGBA" if mode in ("RGBa", "La") else "RGB")
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image).astype(np.float32)
        scale = 1.0 / 65535.0 if do_rescale else 1.0
        gray = torch.from_numpy(np.clip(array * scale, 0.0, None if not do_rescale else 1.0))
        return gray[None].expand(3, -1, -1).contiguous()
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        return _array_to_unit_rgb(array, "PIL image (mode F)", do_rescale, rescale_factor, channels_last=True)
    if mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    array = np.asarray(image)
    return _array_to_unit_rgb(array, "PIL image", do_rescale, rescale_factor, channels_last=True)


def _as_cpu_tensor(array: np.ndarray | torch.Tensor, source: str) -> tuple[torch.Tensor, str]:
    """The image as a CPU tensor (16-bit widened to int32, which torch computes with) and its dtype's name."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        kind = str(tensor.dtype).removeprefix("torch.")
        return (tensor.to(torch.int32) if tensor.dtype == torch.uint16 else tensor), kind
    kind = str(array.dtype)
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    elif array.dtype.kind not in "biuf":
        raise ImageLoadError(source, f"unsupported dtype {array.dtype}")
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy()), kind


def _channels_first(
    tensor: torch.Tensor, source: str, channels_last: bool | None, prefer_first: bool
) -> torch.Tensor:
    """`(H, W)`, `(H, W, C)` or `(C, H, W)` → `(C, H, W)`; `channels_last=None` infers the layout."""
    if tensor.ndim == 2:
        return tensor[None]
    if tensor.ndim != 3:
        raise ImageLoadError(
            source, f"expected an image with 2 or 3 dimensions, got shape {tuple(tensor.shape)}"
        )
    if channels_last is None:
        first, last = tensor.shape[0] in (1, 2, 3, 4), tensor.shape[-1] in (1, 2, 3, 4)
        if not (first or last):
            raise ImageLoadError(source, f"cannot find the channel dimension of shape {tuple(tensor.shape)}")
        channels_last = last and not (prefer_first and first)
    return tensor.permute(2, 0, 1) if channels_last else tensor


def _rescaled(tensor: torch.Tensor, kind: str, source: str, rescale_factor: float) -> torch.Tensor:
    """Values scaled to [0, 1] by the dtype's range: 8-bit by `rescale_factor`, 16-bit by 1/65535, floats clamped,
    bools as they are, other integers read as 8-bit values."""
    values = tensor.float()
    if kind == "bool":
        return values
    if kind == "uint8":
        return values * rescale_factor
    if kind == "uint16":
        return values / 65535.0
    if tensor.dtype.is_floating_point:
        return values.clamp(0.0, 1.0)
    if values.numel() and (values.min() < 0 or values.max() > 255):
        raise ImageLoadError(
            source, f"{kind} values outside 0..255 (use uint16 for 16-bit images or floats in [0, 1])"
        )
    return values * rescale_factor


def _as_rgb(values: torch.Tensor) -> torch.Tensor:
    """1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels → 3, transparency composited on white."""
    channels = values.shape[0]
    if channels == 1:
        return values.expand(3, -1, -1)
    if channels == 2:
        return _composite_on_white(values[:1].expand(3, -1, -1), values[1:2].clamp(0, 1))
    if channels == 4:
        return _composite_on_white(values[:3], values[3:4].clamp(0, 1))
    return values


def _array_to_unit_rgb(
    array: np.ndarray | torch.Tensor,
    source: str,
    do_rescale: bool,
    rescale_factor: float,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """A single image array/tensor → float32 `(3, H, W)` in [0, 1].

    `channels_last=None` infers the layout: a trailing dimension of 1–4 means `(H, W, C)`, else a leading one means
    `(C, H, W)`; NumPy arrays prefer channels-last, tensors channels-first when both would fit.
    """
    tensor, kind = _as_cpu_tensor(array, source)
    tensor = _channels_first(tensor, source, channels_last, prefer_first=isinstance(array, torch.Tensor))
    if tensor.shape[0] not in (1, 2, 3, 4):
        raise ImageLoadError(
            source, f"expected 1, 2, 3 or 4 channels, got {tensor.shape[0]} (shape {tuple(tensor.shape)})"
        )
    if tensor.dtype.is_complex:
        raise ImageLoadError(source, f"unsupported dtype {kind}")
    values = _rescaled(tensor, kind, source, rescale_factor) if do_rescale else tensor.float()
    return _as_rgb(values).contiguous()


def to_uint8_rgb(image: torch.Tensor) -> np.ndarray:
    """`(3, H, W)` float in [0, 1] → `(H, W, 3)` uint8, rounding to the nearest value (not truncating)."""
    return image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def to_unit_rgb(
    image: Image.Image | np.ndarray | torch.Tensor,
    source: str,
    *,
    do_rescale: bool = True,
    rescale_factor: float = 1 / 255,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """One in-memory image → float32 tensor `(3, H, W)` in [0, 1] (rules in the module docstring).

    Raises `ImageLoadError` naming `source` and the reason.
    """
    if isinstance(image, Image.Image):
        _check_pixel_limit(source, image.width, image.height, max_pixels)
        try:
            return _pil_to_unit_rgb(image, do_rescale, rescale_factor)
        except ImageLoadError:
            raise
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageLoadError(source, f"cannot decode image ({error})") from None
    if isinstance(image, np.ndarray | torch.Tensor):
        if image.ndim not in (2, 3):
            raise ImageLoadError(source, f"expected one image with 2 or 3 dimensions, got {image.ndim}")
        values = _array_to_unit_rgb(image, source, do_rescale, rescale_factor)
        _check_pixel_limit(source, values.shape[-1], values.shape[-2], max_pixels)
        return values
    raise ImageLoadError(source, f"unsupported image type {type(image).__name__}")


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageLike",
    "ImageLoadError",
    "PathLike",
    "load_image",
    "to_uint8_rgb",
    "to_unit_rgb",
]

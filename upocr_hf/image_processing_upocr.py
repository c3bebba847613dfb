"""Image processor for UPOCR: any image in, `pixel_values` in [0, 1] out; model outputs back to each task's answer.

Pre-processing (spec §1): every input becomes an RGB float image in [0, 1] (no mean/std normalisation), resized to
the model size (512×512 for the paper's model, bilinear with antialiasing). The conversion handles the image kinds
met in practice:

- PIL images of any mode: EXIF orientation is applied; grayscale/bilevel is replicated to RGB; 16-bit (`I;16*`,
  `I`) is scaled by 1/65535; palette images with transparency, `RGBA` and `LA` are composited on white; `CMYK`,
  `YCbCr`, `LAB`, `HSV` are converted by PIL.
- NumPy arrays (`(H, W)`, `(H, W, C)` or `(C, H, W)`; a 4-D array is a batch `(B, H, W, C)` or `(B, C, H, W)`) and
  torch tensors (`(C, H, W)` preferred, `(H, W, C)` accepted, a 4-D tensor is a batch) with 1 (gray), 2 (gray +
  alpha), 3 (RGB) or 4 (RGBA) channels. `uint8` is scaled by `rescale_factor` (1/255), `uint16` by 1/65535, other
  integer types are read as 8-bit values, `bool` as {0, 1}; floating-point inputs are taken to be in [0, 1] already
  (they are clamped, not rescaled).
- Paths (`str` / `pathlib.Path`) to local files, read with [`load_image`] (clear errors for files that are not
  images, truncated, empty or larger than `max_pixels`).

Post-processing, one method per task, back at each image's original size (spec §1): clamp to [0, 1], resize with
bilinear interpolation (`align_corners=False`, no antialiasing), then

- text removal: round to 8 bits → RGB images, optionally keeping every pixel outside a text region byte-identical;
- text segmentation: channel mean `> threshold` (strictly greater; default `SEGMENTATION_THRESHOLD` = 0.4);
- tampered text detection: argmax over the channels (0 background, 1 real text, 2 tampered text; ties go to the
  lower class), probability-like scores and the connected regions of tampered text.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack

from .tasks import SEGMENTATION_THRESHOLD

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


def _check_pixel_limit(source: str, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(source, f"zero-sized image ({width}×{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            source,
            f"image too large: {width}×{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(decompression-bomb guard; raise max_pixels to allow it)",
        )


def load_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read and fully decode a local image file, with errors that name the file and the reason.

    Args:
        path: a local file (URLs are refused: nothing is downloaded).
        max_pixels: refuse images with more pixels than this before decoding them (`None`: no limit besides PIL's).

    Returns:
        The decoded `PIL.Image.Image` in its own mode (EXIF orientation not yet applied; the processor applies it).

    Raises:
        ImageLoadError: missing file, empty file, not an image, truncated or corrupt data, too many pixels.
    """
    source = os.fspath(path)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        raise ImageLoadError(source, "URLs are not supported; download the file and pass a local path")
    if not os.path.exists(source):
        raise ImageLoadError(source, "no such file")
    if os.path.isdir(source):
        raise ImageLoadError(source, "is a directory, not an image file")
    if os.path.getsize(source) == 0:
        raise ImageLoadError(source, "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as error:
            raise ImageLoadError(source, f"image too large (decompression-bomb guard): {error}") from None
        except UnidentifiedImageError:
            raise ImageLoadError(source, "not an image (unrecognised file format)") from None
        except OSError as error:
            if "truncated" in str(error).lower():
                raise ImageLoadError(source, f"truncated image data ({error})") from None
            raise ImageLoadError(source, f"cannot open image: {error}") from None
        _check_pixel_limit(source, image.width, image.height, max_pixels)
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        except Image.DecompressionBombError as error:
            raise ImageLoadError(source, f"image too large (decompression-bomb guard): {error}") from None
        except (OSError, SyntaxError, ValueError) as error:
            message = str(error)
            reason = (
                "truncated image data"
                if "truncated" in message.lower()
                else f"corrupt image data ({message})"
            )
            raise ImageLoadError(source, reason) from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return image


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
    is_tensor = isinstance(array, torch.Tensor)
    if is_tensor:
        tensor = array.detach().cpu()
        kind = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.uint16:
            tensor = tensor.to(torch.int32)
    else:
        kind = str(array.dtype)
        if array.dtype == np.uint16:
            array = array.astype(np.int32)
        elif array.dtype.kind not in "biuf":
            raise ImageLoadError(source, f"unsupported dtype {array.dtype}")
        array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        if channels_last is None:
            first, last = tensor.shape[0] in (1, 2, 3, 4), tensor.shape[-1] in (1, 2, 3, 4)
            if not (first or last):
                raise ImageLoadError(
                    source, f"cannot find the channel dimension of shape {tuple(tensor.shape)}"
                )
            channels_last = last and not (is_tensor and first)
        if channels_last:
            tensor = tensor.permute(2, 0, 1)
    else:
        raise ImageLoadError(
            source, f"expected an image with 2 or 3 dimensions, got shape {tuple(tensor.shape)}"
        )
    channels = tensor.shape[0]
    if channels not in (1, 2, 3, 4):
        raise ImageLoadError(
            source, f"expected 1, 2, 3 or 4 channels, got {channels} (shape {tuple(tensor.shape)})"
        )
    if tensor.dtype.is_complex:
        raise ImageLoadError(source, f"unsupported dtype {kind}")
    values = tensor.float()
    if do_rescale:
        if kind == "bool":
            pass
        elif kind == "uint8":
            values = values * rescale_factor
        elif kind == "uint16":
            values = values / 65535.0
        elif tensor.dtype.is_floating_point:
            values = values.clamp(0.0, 1.0)
        else:
            if values.numel() and (values.min() < 0 or values.max() > 255):
                raise ImageLoadError(
                    source, f"{kind} values outside 0..255 (use uint16 for 16-bit images or floats in [0, 1])"
                )
            values = values * rescale_factor
    if channels == 1:
        values = values.expand(3, -1, -1)
    elif channels == 2:
        values = _composite_on_white(values[:1].expand(3, -1, -1), values[1:2].clamp(0, 1))
    elif channels == 4:
        values = _composite_on_white(values[:3], values[3:4].clamp(0, 1))
    return values.contiguous()


def to_uint8_rgb(image: torch.Tensor) -> np.ndarray:
    """`(3, H, W)` float in [0, 1] → `(H, W, 3)` uint8, rounding to the nearest value (not truncating)."""
    return image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class UpocrImageProcessorKwargs(ImagesKwargs, total=False):
    """
    max_pixels (`int`, *optional*, defaults to `self.max_pixels`):
        Refuse images with more pixels than this (decompression-bomb guard); `None` disables the check.
    """

    max_pixels: int | None


class UpocrImageProcessor(TorchvisionBackend):
    r"""
    Image processor of [`UpocrModel`]: RGB in [0, 1] without mean/std normalisation, resized to `size`.

    Calling it returns a [`BatchFeature`] with
    - `pixel_values`: `torch.FloatTensor` of shape `(batch_size, 3, size["height"], size["width"])` (a list of
      `(3, H, W)` tensors instead when `do_resize=False` and the images differ in size);
    - `original_sizes`: `torch.LongTensor` of shape `(batch_size, 2)`, each image's `(height, width)` after EXIF
      orientation, which the `post_process_*` methods take as `target_sizes`.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): resize to `size` (the paper's protocol).
        size (`dict[str, int]`, *optional*, defaults to `{"height": 512, "width": 512}`): the model input size.
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`): interpolation of the resize.
        do_rescale (`bool`, *optional*, defaults to `True`): scale integer images to [0, 1] by their bit depth.
        rescale_factor (`float`, *optional*, defaults to `1/255`): scale of 8-bit images.
        max_pixels (`int`, *optional*, defaults to 256,000,000): decompression-bomb guard.
    """

    valid_kwargs = UpocrImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"height": 512, "width": 512}
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = False
    do_center_crop = False
    do_convert_rgb = True
    return_tensors = "pt"
    max_pixels = DEFAULT_MAX_PIXELS

    def __init__(self, **kwargs: Unpack[UpocrImageProcessorKwargs]):
        super().__init__(**kwargs)

    @classmethod
    def for_model(cls, config: Any, folder: str | os.PathLike | None = None) -> UpocrImageProcessor:
        """The processor of a model: the one saved in its `folder` when there is one, else the default processor
        at the model's input size (`config.image_size`, 512 when the config does not say)."""
        if folder is not None and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            return cls.from_pretrained(folder)
        size = getattr(config, "image_size", 512)
        return cls(size={"height": size, "width": size})

    # ----------------------------------------------------------------------------------------------- input side

    def convert_image(
        self,
        image: ImageLike,
        source: str | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        max_pixels: int | None | str = "default",
    ) -> torch.Tensor:
        """One input image (PIL, NumPy, tensor or local path) → float32 tensor `(3, H, W)` in [0, 1], full size.

        Raises `ImageLoadError` naming `source` (the file name when known) and the reason.
        """
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        max_pixels = self.max_pixels if max_pixels == "default" else max_pixels
        if isinstance(image, str | os.PathLike):
            source = os.fspath(image)
            image = load_image(image, max_pixels=max_pixels)
        if isinstance(image, Image.Image):
            source = source or getattr(image, "filename", None) or "PIL image"
            _check_pixel_limit(source, image.width, image.height, max_pixels)
            try:
                return _pil_to_unit_rgb(image, do_rescale, rescale_factor)
            except ImageLoadError:
                raise
            except (OSError, SyntaxError, ValueError) as error:
                raise ImageLoadError(source, f"cannot decode image ({error})") from None
        if isinstance(image, np.ndarray | torch.Tensor):
            source = source or f"{type(image).__name__} of shape {tuple(image.shape)}"
            if image.ndim not in (2, 3):
                raise ImageLoadError(source, f"expected one image with 2 or 3 dimensions, got {image.ndim}")
            values = _array_to_unit_rgb(image, source, do_rescale, rescale_factor)
            _check_pixel_limit(source, values.shape[-1], values.shape[-2], max_pixels)
            return values
        raise ImageLoadError(source or "input", f"unsupported image type {type(image).__name__}")

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> list[Any]:
        """Flatten a single image, a list of images or a 4-D batch array/tensor into a list of single images."""
        if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 4:
            return list(images)
        if isinstance(images, list | tuple):
            flat = []
            for item in images:
                flat.extend(self._prepare_images_structure(item))
            return flat
        return [images]

    def _prepare_image_like_inputs(self, images: Any, *args, **kwargs) -> list[torch.Tensor]:
        images = self._prepare_images_structure(images)
        if not images:
            raise ValueError("no images given")
        max_pixels = kwargs.get("max_pixels", self.max_pixels)
        return [
            self.convert_image(
                image,
                source=None,
                do_rescale=kwargs.get("do_rescale"),
                rescale_factor=kwargs.get("rescale_factor"),
                max_pixels=max_pixels,
            )
            for image in images
        ]

    def _preprocess_image_like_inputs(self, images: Any, *args, **kwargs) -> BatchFeature:
        prepared = self._prepare_image_like_inputs(images, **kwargs)
        return self._preprocess(prepared, *args, **kwargs)

    def _preprocess(
        self,
        images: list[torch.Tensor],
        do_resize: bool = True,
        size: SizeDict | None = None,
        resample: Any = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """`images`: list of `(3, H, W)` float tensors in [0, 1] → `pixel_values` and `original_sizes`."""
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        processed = []
        for image in images:
            if do_resize and tuple(image.shape[-2:]) != (size.height, size.width):
                image = self.resize(image, size=size, resample=resample)
            processed.append(image)
        if len({tuple(image.shape) for image in processed}) == 1:
            pixel_values: torch.Tensor | list[torch.Tensor] = torch.stack(processed)
        else:
            pixel_values = processed
        data = {
            "pixel_values": pixel_values,
            "original_sizes": torch.tensor(original_sizes, dtype=torch.long),
        }
        if return_tensors == "np":
            data = {
                "pixel_values": pixel_values.numpy()
                if isinstance(pixel_values, torch.Tensor)
                else [p.numpy() for p in pixel_values],
                "original_sizes": np.asarray(original_sizes, dtype=np.int64),
            }
        return BatchFeature(data=data)

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        size = kwargs.get("size")
        if kwargs.get("do_resize") and (size is None or not (size.height and size.width)):
            raise ValueError(f"size must give 'height' and 'width', got {size}")

    # ---------------------------------------------------------------------------------------------- output side

    @staticmethod
    def _predictions(outputs: Any) -> torch.Tensor:
        """Model output (a `UpocrModelOutput`, a dict with `prediction`, or a tensor) → float32 `(B, 3, h, w)`."""
        if isinstance(outputs, torch.Tensor):
            prediction = outputs
        elif isinstance(outputs, dict) or hasattr(outputs, "prediction"):
            prediction = outputs["prediction"] if isinstance(outputs, dict) else outputs.prediction
        else:
            raise TypeError(f"expected a UpocrModelOutput or a tensor, got {type(outputs).__name__}")
        if prediction.ndim == 3:
            prediction = prediction[None]
        if prediction.ndim != 4 or prediction.shape[1] != 3:
            raise ValueError(
                f"expected predictions of shape (batch, 3, height, width), got {tuple(prediction.shape)}"
            )
        return prediction.detach().float()

    @staticmethod
    def _resized(prediction: torch.Tensor, target_size: Sequence[int] | None) -> torch.Tensor:
        """Clamp one `(3, h, w)` prediction to [0, 1] and resize it (bilinear) to `target_size` = (H, W)."""
        prediction = prediction.clamp(0.0, 1.0)
        if target_size is None:
            return prediction
        height, width = (int(v) for v in target_size)
        if tuple(prediction.shape[-2:]) == (height, width):
            return prediction
        resized = F.interpolate(prediction[None], size=(height, width), mode="bilinear", align_corners=False)[
            0
        ]
        return resized.clamp(0.0, 1.0)

    @staticmethod
    def _target_sizes(target_sizes: Any, batch_size: int) -> list[Sequence[int] | None]:
        if target_sizes is None:
            return [None] * batch_size
        if isinstance(target_sizes, torch.Tensor | np.ndarray):
            target_sizes = target_sizes.tolist()
        target_sizes = list(target_sizes)
        if len(target_sizes) != batch_size:
            raise ValueError(f"got {len(target_sizes)} target sizes for {batch_size} predictions")
        return target_sizes

    def post_process_text_removal(
        self,
        outputs: Any,
        target_sizes: Any = None,
        original_images: Sequence[np.ndarray | Image.Image] | None = None,
        text_masks: Sequence[np.ndarray | torch.Tensor] | None = None,
    ) -> list[Image.Image]:
        """Text-removal predictions → RGB `PIL.Image`s at the original sizes.

        Args:
            outputs: `UpocrModelOutput` or tensor of shape `(B, 3, h, w)`.
            target_sizes: `(B, 2)` `(height, width)` per image (e.g. `original_sizes`); `None` keeps `(h, w)`.
            original_images: with `text_masks`, the inputs as `(H, W, 3)` uint8 arrays (or RGB PIL images).
            text_masks: boolean `(H, W)` text regions; pixels outside them are copied from `original_images` byte
                for byte, pixels inside come from the prediction ("keep background").

        Returns:
            One `PIL.Image` (mode RGB) per prediction; values are rounded to 8 bits.
        """
        predictions = self._predictions(outputs)
        sizes = self._target_sizes(target_sizes, len(predictions))
        if (original_images is None) != (text_masks is None):
            raise ValueError("keep-background needs both original_images and text_masks")
        results = []
        for i, (prediction, size) in enumerate(zip(predictions, sizes)):
            array = to_uint8_rgb(self._resized(prediction, size))
            if original_images is not None:
                array = compose_keep_background(original_images[i], array, text_masks[i])
            results.append(Image.fromarray(array, mode="RGB"))
        return results

    def post_process_text_segmentation(
        self, outputs: Any, target_sizes: Any = None, threshold: float = SEGMENTATION_THRESHOLD
    ) -> list[dict[str, torch.Tensor]]:
        """Text-segmentation predictions → text masks at the original sizes.

        Returns one dict per image with `mask`: `torch.BoolTensor (H, W)`, True where the channel mean of the
        clamped, resized prediction is **strictly greater** than `threshold`; and `scores`: `torch.FloatTensor
        (H, W)`, that channel mean (the soft map, in [0, 1]).
        """
        predictions = self._predictions(outputs)
        sizes = self._target_sizes(target_sizes, len(predictions))
        results = []
        for prediction, size in zip(predictions, sizes):
            scores = self._resized(prediction, size).mean(dim=0)
            results.append({"mask": scores > threshold, "scores": scores})
        return results

    def post_process_tampered_text_detection(
        self, outputs: Any, target_sizes: Any = None, min_region_area: int = 1
    ) -> list[dict[str, Any]]:
        """Tampered-text predictions → class maps at the original sizes.

        Returns one dict per image with
        - `class_map`: `torch.LongTensor (H, W)`, argmax over the clamped, resized RGB channels: 0 background (red),
          1 real text (green), 2 tampered text (blue); ties go to the lower class;
        - `scores`: `torch.FloatTensor (3, H, W)`, the clamped channels divided by their sum (1/3 each where all
          are 0): probability-like, summing to 1 per pixel;
        - `regions`: the 8-connected components of tampered-text pixels with at least `min_region_area` pixels,
          largest first, each `{"box": [x_min, y_min, x_max, y_max], "area": int, "score": float}` where the box
          is in pixels with exclusive maxima and `score` is the mean tampered score over the region.
        """
        predictions = self._predictions(outputs)
        sizes = self._target_sizes(target_sizes, len(predictions))
        results = []
        for prediction, size in zip(predictions, sizes):
            clamped = self._resized(prediction, size)
            class_map = clamped.argmax(dim=0)
            total = clamped.sum(dim=0, keepdim=True)
            scores = torch.where(total > 0, clamped / total.clamp_min(1e-12), torch.full_like(clamped, 1 / 3))
            regions = connected_regions(class_map == 2, scores[2], min_area=min_region_area)
            results.append({"class_map": class_map, "scores": scores, "regions": regions})
        return results


def connected_regions(
    mask: torch.Tensor | np.ndarray, scores: torch.Tensor | np.ndarray | None = None, min_area: int = 1
) -> list[dict[str, Any]]:
    """8-connected components of a boolean `(H, W)` mask, largest first.

    Each region is `{"box": [x_min, y_min, x_max, y_max] (exclusive maxima), "area": pixels, "score": mean of
    `scores` over the region (1.0 without scores)}`.
    """
    from scipy import ndimage

    mask_np = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    scores_np = (
        None if scores is None else scores.cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    )
    labels, count = ndimage.label(mask_np.astype(bool), structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    sums = (
        np.bincount(labels.ravel(), weights=scores_np.ravel(), minlength=count + 1)
        if scores_np is not None
        else None
    )
    regions = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None or areas[index] < min_area:
            continue
        rows, cols = slices
        score = float(sums[index] / areas[index]) if sums is not None else 1.0
        regions.append(
            {"box": [cols.start, rows.start, cols.stop, rows.stop], "area": int(areas[index]), "score": score}
        )
    regions.sort(key=lambda region: (-region["area"], region["box"][1], region["box"][0]))
    return regions


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


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageLoadError",
    "UpocrImageProcessor",
    "compose_keep_background",
    "connected_regions",
    "default_dilation",
    "difference_mask",
    "dilate_mask",
    "load_image",
    "to_uint8_rgb",
]

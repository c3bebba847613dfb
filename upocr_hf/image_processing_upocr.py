"""Image processor for UPOCR: any image in, `pixel_values` in [0, 1] out; model outputs back to each task's answer.

Pre-processing: every input becomes an RGB float image in [0, 1] (no mean/std normalisation), resized to the model
size (512×512 for the paper's model, bilinear with antialiasing). Inputs may be PIL images of any mode, NumPy arrays
and torch tensors (`(H, W)`, `(H, W, C)` or `(C, H, W)`; 4-D is a batch), or paths to local files; `image_io`
says how each is read and refuses unusable ones with an `ImageLoadError` naming the file and the reason.

Post-processing, one method per prediction readout, back at each image's original size: clamp to [0, 1], resize
with bilinear interpolation (`align_corners=False`, no antialiasing), then

- text removal: round to 8 bits → RGB images;
- text segmentation: channel mean `> threshold` (strictly greater; default `SEGMENTATION_THRESHOLD` = 0.4);
- tampered text detection: argmax over the channels (0 background, 1 real text, 2 tampered text; ties go to the
  lower class), probability-like scores and the connected regions of tampered text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack

from .image_io import DEFAULT_MAX_PIXELS, ImageLike, ImageLoadError, load_image, to_uint8_rgb, to_unit_rgb
from .readout import clamped_resized, read_class_map, read_mask
from .tasks import SEGMENTATION_THRESHOLD


class UpocrImageProcessorKwargs(ImagesKwargs, total=False):
    """
    max_pixels (`int`, *optional*, defaults to `self.max_pixels`):
        Refuse images with more pixels than this (decompression-bomb guard); `None` disables the check.
    do_tile (`bool`, *optional*, defaults to `self.do_tile`):
        The model's default inference mode in `UpocrPipeline`: overlapping native-resolution tiles of `size`
        instead of one resize to `size`.
    segmentation_threshold (`float`, *optional*, defaults to `self.segmentation_threshold`):
        Default threshold of the text-mask read-out.
    tamper_region_rule (`dict`, *optional*, defaults to `self.tamper_region_rule`):
        The tampered-region rule chosen for the model (`min_region_score`, `min_region_share`, `min_region_area`,
        `min_tampered_share`).
    """

    max_pixels: int | None
    do_tile: bool
    segmentation_threshold: float
    tamper_region_rule: dict | None


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
        do_tile (`bool`, *optional*, defaults to `False`): the inference mode `UpocrPipeline` uses when a call
            does not say: native-resolution tiles of `size` (`True`) or one resize to `size` (`False`, the
            paper's protocol). A model folder saves the mode that scored best for its model.
        segmentation_threshold (`float`, *optional*, defaults to 0.4, the paper's): the text-mask threshold used
            when a call does not give one.
        tamper_region_rule (`dict`, *optional*, defaults to `None`): the tampered-text region rule chosen for the
            model on validation data, `{"min_region_score", "min_region_share", "min_region_area",
            "min_tampered_share"}` (see
            `post_process_tampered_text_detection`); `UpocrPipeline(..., region_rule=True)` and the demo apply it.
            `None`: no rule was chosen (the paper's plain argmax).
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
    do_tile = False
    segmentation_threshold = SEGMENTATION_THRESHOLD
    tamper_region_rule = None

    def __init__(self, **kwargs: Unpack[UpocrImageProcessorKwargs]):
        super().__init__(**kwargs)

    @classmethod
    def for_model(
        cls, folder: str | os.PathLike | None = None, size: int | None = None
    ) -> UpocrImageProcessor:
        """The processor of a model: the one saved with it in `folder` (a local folder or a Hub id) when there is
        one, else the default processor, resizing to `size` when given (512, the paper's, when not). The size a
        model runs at is always its processor's `size`."""
        if folder is not None:
            try:
                return cls.from_pretrained(folder)
            except OSError:  # no preprocessor_config.json there
                pass
        return cls() if size is None else cls(size={"height": size, "width": size})

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
        if source is None:
            if isinstance(image, Image.Image):
                source = getattr(image, "filename", None) or "PIL image"
            elif isinstance(image, np.ndarray | torch.Tensor):
                source = f"{type(image).__name__} of shape {tuple(image.shape)}"
            else:
                source = "input"
        return to_unit_rgb(
            image, source, do_rescale=do_rescale, rescale_factor=rescale_factor, max_pixels=max_pixels
        )

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
    def _target_sizes(target_sizes: Any, batch_size: int) -> list[Sequence[int] | None]:
        if target_sizes is None:
            return [None] * batch_size
        if isinstance(target_sizes, torch.Tensor | np.ndarray):
            target_sizes = target_sizes.tolist()
        target_sizes = list(target_sizes)
        if len(target_sizes) != batch_size:
            raise ValueError(f"got {len(target_sizes)} target sizes for {batch_size} predictions")
        return target_sizes

    def post_process_text_removal(self, outputs: Any, target_sizes: Any = None) -> list[Image.Image]:
        """Text-removal predictions → RGB `PIL.Image`s at the original sizes.

        Args:
            outputs: `UpocrModelOutput` or tensor of shape `(B, 3, h, w)`.
            target_sizes: `(B, 2)` `(height, width)` per image (e.g. `original_sizes`); `None` keeps `(h, w)`.

        Returns:
            One `PIL.Image` (mode RGB) per prediction; values are rounded to 8 bits.
        """
        predictions = self._predictions(outputs)
        sizes = self._target_sizes(target_sizes, len(predictions))
        return [
            Image.fromarray(to_uint8_rgb(clamped_resized(prediction, size)), mode="RGB")
            for prediction, size in zip(predictions, sizes)
        ]

    def post_process_text_segmentation(
        self, outputs: Any, target_sizes: Any = None, threshold: float | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Text-segmentation predictions → text masks at the original sizes.

        Returns one dict per image with `mask`: `torch.BoolTensor (H, W)`, True where the channel mean of the
        clamped, resized prediction is **strictly greater** than `threshold` (default `self.segmentation_threshold`);
        and `scores`: `torch.FloatTensor (H, W)`, that channel mean (the soft map, in [0, 1]).
        """
        threshold = self.segmentation_threshold if threshold is None else threshold
        predictions = self._predictions(outputs)
        sizes = self._target_sizes(target_sizes, len(predictions))
        results = []
        for prediction, size in zip(predictions, sizes):
            mask, scores = read_mask(prediction, size, threshold)
            results.append({"mask": mask, "scores": scores})
        return results

    def post_process_tampered_text_detection(
        self,
        outputs: Any,
        target_sizes: Any = None,
        min_region_area: int = 1,
        min_region_score: float = 0.0,
        min_tampered_share: float | None = None,
    ) -> list[dict[str, Any]]:
        """Tampered-text predictions → class maps at the original sizes.

        Returns one dict per image with
        - `class_map`: `torch.LongTensor (H, W)`, argmax over the clamped, resized RGB channels: 0 background (red),
          1 real text (green), 2 tampered text (blue); ties go to the lower class. A tampered-text region (8-connected)
          with fewer than `min_region_area` pixels or a mean tampered score below `min_region_score` is not read as
          tampered: its pixels take the more likely of the other two classes, so the map and `regions` agree. With
          `min_tampered_share`, regions are whole text regions instead, tampered or not as a whole (a word is
          forged or not; see `confident_tampered_regions`);
        - `scores`: `torch.FloatTensor (3, H, W)`, the clamped channels divided by their sum (1/3 each where all
          are 0): probability-like, summing to 1 per pixel;
        - `regions`: the tampered-text regions that remain, largest first, each `{"box": [x_min, y_min, x_max,
          y_max], "area": int, "score": float}` where the box is in pixels with exclusive maxima and `score` is the
          mean tampered score over the region.
        """
        predictions = self._predictions(outputs)
        sizes = self._target_sizes(target_sizes, len(predictions))
        results = []
        for prediction, size in zip(predictions, sizes):
            class_map, scores = read_class_map(prediction, size)
            class_map, regions = confident_tampered_regions(
                class_map, scores, min_region_area, min_region_score, min_tampered_share
            )
            results.append({"class_map": class_map, "scores": scores, "regions": regions})
        return results


def _as_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _labelled_regions(mask: np.ndarray, scores: np.ndarray | None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The 8-connected components of a boolean mask: the label image (0 outside, 1.. inside) and one region dict
    per label, in label order, with the label under `"label"`."""
    from scipy import ndimage

    labels, count = ndimage.label(mask.astype(bool), structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    sums = (
        None if scores is None else np.bincount(labels.ravel(), weights=scores.ravel(), minlength=count + 1)
    )
    regions = []
    for label, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        score = float(sums[label] / areas[label]) if sums is not None else 1.0
        box = [cols.start, rows.start, cols.stop, rows.stop]
        regions.append({"box": box, "area": int(areas[label]), "score": score, "label": label})
    return labels, regions


def _passing(regions: list[dict[str, Any]], min_area: int, min_score: float) -> list[dict[str, Any]]:
    return [region for region in regions if region["area"] >= min_area and region["score"] >= min_score]


def _largest_first(regions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    regions = [{key: value for key, value in region.items() if key != "label"} for region in regions]
    return sorted(regions, key=lambda region: (-region["area"], region["box"][1], region["box"][0]))


def connected_regions(
    mask: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray | None = None,
    min_area: int = 1,
    min_score: float = 0.0,
) -> list[dict[str, Any]]:
    """8-connected components of a boolean `(H, W)` mask with at least `min_area` pixels and a mean score of at
    least `min_score`, largest first.

    Each region is `{"box": [x_min, y_min, x_max, y_max] (exclusive maxima), "area": pixels, "score": mean of
    `scores` over the region (1.0 without scores)}`.
    """
    _, regions = _labelled_regions(_as_numpy(mask), None if scores is None else _as_numpy(scores))
    return _largest_first(_passing(regions, min_area, min_score))


def confident_tampered_regions(
    class_map: torch.Tensor,
    scores: torch.Tensor,
    min_area: int = 1,
    min_score: float = 0.0,
    min_tampered_share: float | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Apply the tampered-region rule to an argmax class map `(H, W)` with its scores `(3, H, W)`.

    Without `min_tampered_share`, a region is an 8-connected tampered-text component (class 2): one smaller than
    `min_area` pixels or with a mean tampered score below `min_score` is not evidence of tampering (specks at
    resized borders, hesitant blobs). With it, a region is a text region (8-connected, real or tampered text),
    judged as a whole, as a word is forged or not: it is tampered when at least `min_tampered_share` of its pixels
    read tampered, it has at least `min_area` pixels and its mean tampered score is at least `min_score`; all its
    pixels then read tampered. A thin tampered rim around a real word is then not a forgery, and one forged word
    counts once however many pieces the argmax breaks it into. Pixels read tampered outside the regions that pass
    take the more likely of background and real text. Returns the class map after the rule and the regions that
    pass it (`connected_regions`' format, largest first).
    """
    tampered = class_map == 2
    region_mask = tampered if min_tampered_share is None else class_map > 0
    labels, regions = _labelled_regions(_as_numpy(region_mask), _as_numpy(scores[2]))
    kept = _passing(regions, min_area, min_score)
    if min_tampered_share is not None:
        tampered_pixels = np.bincount(labels[_as_numpy(tampered)], minlength=len(regions) + 1)
        kept = [r for r in kept if tampered_pixels[r["label"]] >= min_tampered_share * r["area"]]
    in_kept = torch.from_numpy(np.isin(labels, [region["label"] for region in kept])).to(class_map.device)
    # the argmax of background and real text (ties: background); Tensor.argmax over two channels is slow on CPU
    runner_up = (scores[1] > scores[0]).to(class_map.dtype)
    class_map = torch.where(tampered & ~in_kept, runner_up, class_map)
    if min_tampered_share is not None:
        class_map = torch.where(in_kept, torch.full_like(class_map, 2), class_map)
    return class_map, _largest_first(kept)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageLoadError",
    "UpocrImageProcessor",
    "confident_tampered_regions",
    "connected_regions",
    "load_image",
    "to_uint8_rgb",
]

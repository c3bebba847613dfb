"""`UpocrPipeline`: any image → a text-free image, a text mask or a tamper map, in one call.

transformers 5 removed the built-in "image-to-image" task, so UPOCR brings its own pipeline task, `"upocr"`,
registered with `PIPELINE_REGISTRY` when `upocr_hf` is imported:

>>> from transformers import pipeline
>>> pipe = pipeline("upocr", model="path/to/model")                     # in-process, with upocr_hf imported
>>> pipe("photo.jpg", task="text-removal")["image"]                     # PIL RGB image, original size
>>> pipe(["a.png", "b.png"], task="text-segmentation", batch_size=2)    # list of results

`pipe.save_pretrained(folder)` writes this code next to the model, so `pipeline(model=folder,
trust_remote_code=True)` works where `upocr_hf` is not installed. Such a Hub-ready folder (training's `final`
folder, `upocr-hub-folder`'s output) names its own code in `config.json`'s `custom_pipelines`, and transformers
then asks for `trust_remote_code=True` even with `upocr_hf` imported; `load_upocr_pipeline(folder)` runs any
folder with the installed package's code instead, without trusting the folder's.

Call options: `task` (a name from `model.config.tasks`, or another of its names in the task registry, like the
CLI's "remove", "segment", "detect-tampering"; resolved once per call into its registry `Task`); `upocr_task`, the
same for a default given at construction, where `task` is `pipeline()`'s own argument (`pipeline("upocr",
model=folder, upocr_task="segment")`); `tile` (high-resolution mode, see `tiling.py`), `tile_size`,
`tile_overlap`, `keep_background` (text removal only: pixels outside the text region stay byte-identical to the
input), `threshold` (segmentation and the
keep-background mask), `dilation`, `difference_threshold`, `min_region_area`, `min_region_share` (of the image's
pixels) and `min_region_score` (tampered-text regions smaller or less confident are read as the next most likely
class), `min_tampered_share` (regions are then whole text regions, tampered when at least that share of their pixels
is; `region_rule=True` takes all four from the model folder's `tamper_region_rule`, the rule chosen for its model on
validation data), `max_pixels`, `progress_callback`
(tile mode: called as `progress_callback(tiles_done, tiles_total)` after each model call); `batch_size` (images
per model call in resize mode, tiles per model call in tile mode). Device and dtype are the standard pipeline
arguments (`pipeline(..., device="cuda", dtype=torch.bfloat16)`). Where a call leaves `tile` or `threshold` out,
the model folder's image processor says (`do_tile`, `segmentation_threshold` in `preprocessor_config.json`: the
mode its model scored best in; resize and 0.4, the paper's protocol, when it does not say).

Results (one dict per image, all at the image's original size after EXIF orientation):
- `text-removal`: `{"task", "image": PIL RGB, "text_mask": bool (H, W) ndarray or None}` — `text_mask` is the
  region that was allowed to change when `keep_background=True`;
- `text-segmentation`: `{"task", "mask": bool (H, W), "scores": float32 (H, W), "image": PIL "L" (255 = text)}`;
- `tampered-text-detection`: `{"task", "class_map": uint8 (H, W) with 0 background / 1 real / 2 tampered,
  "scores": float32 (3, H, W), "regions": [{"box": [x0, y0, x1, y1], "area", "score"}], "image": PIL RGB in the
  task's colours}`.

Keep-background rule (text removal): the text region is the model's own text-segmentation mask of the same image
(same resize/tile mode, channel mean `> threshold`) when the model knows that task; otherwise the pixels whose
8-bit prediction differs from the input by more than `difference_threshold` (default 0.1, i.e. 25.5/255) in some
channel. The region is dilated (square) by `dilation` pixels (default: 3 px per 512 px of the longer side, at
least 3) to cover stroke borders and effects; pixels outside it are copied from the input byte for byte (the input
as the processor reads it: 8-bit RGB, transparency composited on white). In tile mode the segmentation runs first
and the removal only in the windows that hold some of the region, at the cost of one tiled pass plus the windows
with text: the same result (up to float rounding where fewer windows change which tiles share a model call). Tile
progress then counts the segmentation pass against twice its windows, and the total falls to the windows actually
run once the region is known. The rule's pieces live in `keep_background.py`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .image_io import to_uint8_rgb
from .image_processing_upocr import UpocrImageProcessor
from .keep_background import (
    compose_keep_background,
    default_dilation,
    difference_mask,
    dilate_mask,
    tiled_keep_background_removal,
)
from .tasks import TAMPER_CLASS_RGB, TEXT_SEGMENTATION, Task, get_task, resolve_task
from .tiling import predict_tasks, tiled_predict_tasks

#: Name of the pipeline task registered with transformers' `PIPELINE_REGISTRY`, and the one a saved folder's
#: `custom_pipelines` names: `pipeline("upocr", model=folder, trust_remote_code=True)` runs the folder's own code
#: (transformers asks for `trust_remote_code` whenever a folder names the task, even with this package installed).
PIPELINE_TASK = "upocr"


def tamper_color_map(class_map: np.ndarray) -> Image.Image:
    """`(H, W)` class ids → RGB PIL image in the task's colours (red background, green real, blue tampered)."""
    palette = np.asarray(TAMPER_CLASS_RGB, dtype=np.uint8)
    return Image.fromarray(palette[np.asarray(class_map, dtype=np.int64)], mode="RGB")


class UpocrPipeline(Pipeline):
    """UPOCR inference: image(s) in, the chosen task's post-processed answer out (see the module docstring)."""

    _load_processor = False
    _load_image_processor = (
        None  # optional: a folder without preprocessor_config.json gets the default processor
    )
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            self.image_processor = UpocrImageProcessor.for_model()
        self.model.eval()

    # ------------------------------------------------------------------------------------------ parameters

    def _sanitize_parameters(
        self,
        task: str | None = None,
        upocr_task: str | None = None,
        tile: bool | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        keep_background: bool | None = None,
        threshold: float | None = None,
        dilation: int | None = None,
        difference_threshold: float | None = None,
        min_region_area: int | None = None,
        min_region_score: float | None = None,
        min_region_share: float | None = None,
        min_tampered_share: float | None = None,
        region_rule: bool | None = None,
        max_pixels: int | None | str = "unset",
        tile_batch_size: int | None = None,
        progress_callback: Callable[[int, int], None] | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(f"UpocrPipeline got unexpected options {sorted(kwargs)}")
        if progress_callback is not None and not callable(progress_callback):
            raise ValueError(f"progress_callback must be callable, got {progress_callback!r}")
        task = task if task is not None else upocr_task
        preprocess = _given(
            task=None if task is None else self.resolve(task),
            tile=None if tile is None else bool(tile),
            keep_background=None if keep_background is None else bool(keep_background),
        )
        if max_pixels != "unset":  # None is a value here: no pixel limit
            preprocess["max_pixels"] = max_pixels
        # the text region is found before the tiled removal (only its windows need removing) and read out after
        region = _given(
            threshold=_checked("threshold", threshold, float, 0.0, 1.0),
            dilation=_checked("dilation", dilation, int, 0, None),
        )
        forward = _given(
            tile_size=_checked("tile_size", tile_size, int, 32, None),
            tile_overlap=_checked("tile_overlap", tile_overlap, int, 0, None),
            tile_batch_size=_checked("batch_size", tile_batch_size, int, 1, None),
            progress_callback=progress_callback,
            **region,
        )
        postprocess = _given(
            **region,
            difference_threshold=_checked("difference_threshold", difference_threshold, float, 0.0, 1.0),
            min_region_area=_checked("min_region_area", min_region_area, int, 1, None),
            min_region_score=_checked("min_region_score", min_region_score, float, 0.0, 1.0),
            min_region_share=_checked("min_region_share", min_region_share, float, 0.0, 1.0),
            min_tampered_share=_checked("min_tampered_share", min_tampered_share, float, 0.0, 1.0),
        )
        if region_rule:
            folder_rule = dict(getattr(self.image_processor, "tamper_region_rule", None) or {})
            postprocess = {**folder_rule, **postprocess}
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------------ steps

    def resolve(self, task: str | None) -> Task:
        """The model's task called `task` (its id or any other of its names); a `ValueError` listing the model's
        tasks when it has none of that name, or when no task is given."""
        return get_task(resolve_task(task, self.model.config.tasks))

    def preprocess(
        self,
        image: Any,
        task: Task | str | None = None,
        tile: bool | None = None,
        keep_background: bool = False,
        max_pixels: int | None | str = "default",
    ) -> dict[str, Any]:
        """One image (path, PIL, array, tensor) → `{"pixel_values": (1, 3, h, w), "meta": {per-image info}}`.
        `task` comes resolved from a call (`_sanitize_parameters`); a name is resolved here (no task: the error
        says which the model knows)."""
        task = task if isinstance(task, Task) else self.resolve(task)
        tile = self.image_processor.do_tile if tile is None else tile
        full = self.image_processor.convert_image(image, max_pixels=max_pixels)
        if tile:
            pixel_values = full[None]
        else:
            pixel_values = self.image_processor(full, do_resize=True, max_pixels=None)["pixel_values"]
        keep_background = keep_background and task.text_mask
        meta = {
            "task": task,
            "tile": bool(tile),
            "original_size": tuple(full.shape[-2:]),
            "original": to_uint8_rgb(full) if keep_background else None,
            # a grayscale page gets a grayscale result: the model's colour casts are not the user's
            "gray": task.text_mask and bool((full[0] == full[1]).all() and (full[1] == full[2]).all()),
        }
        return {"pixel_values": pixel_values, "meta": meta}

    def _forward(
        self,
        model_inputs: dict[str, Any],
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int = 1,
        progress_callback: Callable[[int, int], None] | None = None,
        threshold: float | None = None,
        dilation: int | None = None,
    ) -> dict[str, Any]:
        pixel_values = model_inputs["pixel_values"]
        # one image's info, or a list of them from transformers' batching
        meta = _as_list(model_inputs["meta"])
        task = meta[0]["task"].id
        if any(item["task"].id != task or item["tile"] != meta[0]["tile"] for item in meta):
            raise ValueError("one batch must share task and mode")
        keep_background = any(item["original"] is not None for item in meta)
        finds_text = keep_background and TEXT_SEGMENTATION in self.model.config.tasks
        x = pixel_values.to(device=self.device, dtype=self.model.dtype)
        if not meta[0]["tile"]:
            # keep-background's segmentation prompt rides along in the same model call as the removal one
            outputs = predict_tasks(self.model, x, [task, TEXT_SEGMENTATION] if finds_text else [task])
            return self._forward_outputs(outputs, meta)
        size = tile_size or self.image_processor.size.height
        options = dict(tile_size=size, overlap=tile_overlap, batch_size=tile_batch_size)
        if not finds_text:
            outputs = tiled_predict_tasks(self.model, x, [task], progress=progress_callback, **options)
            return self._forward_outputs(outputs, meta)
        threshold = self._threshold(threshold)
        removal, regions = tiled_keep_background_removal(
            self.model,
            x,
            task,
            lambda text, i: self._text_region(text, meta[i], threshold, dilation),
            options,
            progress=progress_callback,
        )
        # the region is all postprocess needs of the text pass
        return {**self._forward_outputs([removal], meta), "text_region": regions}

    @staticmethod
    def _forward_outputs(outputs: list[torch.Tensor], meta: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "prediction": outputs[0].float(),
            "text_prediction": outputs[1].float() if len(outputs) > 1 else None,
            "meta": meta,
        }

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        threshold: float | None = None,
        dilation: int | None = None,
        difference_threshold: float = 0.1,
        min_region_area: int = 1,
        min_region_score: float = 0.0,
        min_region_share: float = 0.0,
        min_tampered_share: float | None = None,
    ) -> dict[str, Any]:
        """One image's model output (transformers unbatches batched calls) → its result dict (see the module
        docstring). `prediction` and `text_prediction` are `(1, 3, h, w)`."""
        meta = _as_list(model_outputs["meta"])[0]
        prediction = model_outputs["prediction"]
        threshold = self._threshold(threshold)
        readout = meta["task"].readout
        if readout == "mask":
            return self._read_mask(prediction, meta, threshold)
        if readout == "class-map":
            height, width = meta["original_size"]
            area = max(min_region_area, math.ceil(min_region_share * height * width))
            return self._read_class_map(prediction, meta, area, min_region_score, min_tampered_share)
        text_prediction = model_outputs.get("text_prediction")
        text_region = model_outputs.get("text_region")  # found before a tiled removal
        region = dict(threshold=threshold, dilation=dilation, difference_threshold=difference_threshold)
        return self._read_image(prediction, text_prediction, text_region, meta, **region)

    def _read_mask(self, prediction: torch.Tensor, meta: dict[str, Any], threshold: float) -> dict[str, Any]:
        reading = self.image_processor.post_process_text_segmentation(
            prediction, [meta["original_size"]], threshold=threshold
        )[0]
        mask = reading["mask"].numpy()
        image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
        return {"task": meta["task"].id, "mask": mask, "scores": reading["scores"].numpy(), "image": image}

    def _read_class_map(
        self,
        prediction: torch.Tensor,
        meta: dict[str, Any],
        min_region_area: int,
        min_region_score: float,
        min_tampered_share: float | None,
    ) -> dict[str, Any]:
        reading = self.image_processor.post_process_tampered_text_detection(
            prediction, [meta["original_size"]], min_region_area, min_region_score, min_tampered_share
        )[0]
        class_map = reading["class_map"].numpy().astype(np.uint8)
        return {"task": meta["task"].id, "class_map": class_map, "scores": reading["scores"].numpy(),
                "regions": reading["regions"], "image": tamper_color_map(class_map)}  # fmt: skip

    def _read_image(
        self,
        prediction: torch.Tensor,
        text_prediction: torch.Tensor | None,
        text_region: torch.Tensor | None,
        meta: dict[str, Any],
        threshold: float,
        dilation: int | None,
        difference_threshold: float,
    ) -> dict[str, Any]:
        image = self.image_processor.post_process_text_removal(prediction, [meta["original_size"]])[0]
        # a grayscale page gets a grayscale result: the model's colour casts are not the user's
        if meta["gray"]:
            image = image.convert("L").convert("RGB")
        text_mask = None
        if meta["original"] is not None:
            array = np.asarray(image)
            if text_region is not None:
                text_mask = text_region[0]
            elif text_prediction is not None:
                text_mask = self._text_region(text_prediction, meta, threshold, dilation)
            else:
                changed = difference_mask(meta["original"], array, difference_threshold)
                text_mask = dilate_mask(changed, self._dilation(meta, dilation))
            text_mask = text_mask.cpu().numpy()
            image = Image.fromarray(compose_keep_background(meta["original"], array, text_mask))
        return {"task": meta["task"].id, "image": image, "text_mask": text_mask}

    def _text_region(
        self, text_prediction: torch.Tensor, meta: dict[str, Any], threshold: float, dilation: int | None
    ) -> torch.Tensor:
        """The region keep-background mode lets change (see the module docstring), from the model's raw text
        segmentation `(1, 3, h, w)` of the image: bool `(H, W)` at the image's original size."""
        mask = self.image_processor.post_process_text_segmentation(
            text_prediction, [meta["original_size"]], threshold=threshold
        )[0]["mask"]
        return dilate_mask(mask, self._dilation(meta, dilation))

    def _threshold(self, threshold: float | None) -> float:
        return self.image_processor.segmentation_threshold if threshold is None else threshold

    @staticmethod
    def _dilation(meta: dict[str, Any], dilation: int | None) -> int:
        return default_dilation(*meta["original_size"]) if dilation is None else dilation

    # ------------------------------------------------------------------------------------------ calling

    def __call__(self, inputs: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """Run on one image (→ one result dict), a list or tuple of images (→ a list, in order), or a `datasets`
        dataset or generator (→ an iterator of results), through transformers' pipeline batching.

        In resize mode `batch_size` images are stacked into one model call; in tile mode (images of any size)
        each image is run on its own and `batch_size` tiles go through the model per call.
        """
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        elif _is_dataset_with_images(inputs):  # the `image` column of upocr_hf.data's schema
            from transformers.pipelines.pt_utils import KeyDataset

            inputs = KeyDataset(inputs, "image")
        tile = kwargs.get("tile", self._preprocess_params.get("tile"))
        if self.image_processor.do_tile if tile is None else tile:
            kwargs.setdefault("tile_batch_size", batch_size or self._batch_size or 1)
            batch_size = 1
        return super().__call__(inputs, *args, batch_size=batch_size, **kwargs)


def _checked(name: str, value: Any, kind: type, low: float, high: float | None) -> Any:
    """`value` as `kind` when it lies in [low, high] (None: not given); `ValueError` naming the option otherwise."""
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (low <= number and (high is None or number <= high)) or number != value:
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(
            f"{name} must be {'an integer' if kind is int else 'a number'} {bounds}, got {value!r}"
        )
    return number


def _is_dataset_with_images(inputs: Any) -> bool:
    return type(inputs).__name__ == "Dataset" and "image" in (getattr(inputs, "column_names", None) or ())


def _given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None)."""
    return {name: value for name, value in options.items() if value is not None}


def _as_list(meta: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return meta if isinstance(meta, list) else [meta]


def load_upocr_pipeline(model: str | os.PathLike, **pipeline_kwargs: Any) -> UpocrPipeline:
    """`pipeline("upocr", model=model, **pipeline_kwargs)` with this package's `UpocrPipeline`, for any model
    folder or Hub id, Hub-ready ones (with `custom_pipelines` in `config.json`) included: naming the class keeps
    transformers from loading, or asking to trust, the folder's copy of the code.

    `pipeline_kwargs` are `pipeline()`'s own (`device`, `dtype`, ...)."""
    from transformers import pipeline

    register_pipeline()
    return pipeline(
        PIPELINE_TASK,
        model=str(model),
        pipeline_class=UpocrPipeline,
        trust_remote_code=False,
        **pipeline_kwargs,
    )


def register_pipeline() -> None:
    """Register `UpocrPipeline` as the `"upocr"` task of transformers' `PIPELINE_REGISTRY` (idempotent), with the
    package's default model (`upocr_hf/default_model`, where installed) as the task's default: `pipeline("upocr")`
    loads it."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK, {}).get("impl") is not UpocrPipeline:
        default_model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")
        has_default = os.path.isfile(os.path.join(default_model, "config.json"))
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=UpocrPipeline, pt_model=AutoModel, type="image",
            default={"model": (default_model, None)} if has_default else None,
        )  # fmt: skip


__all__ = [
    "PIPELINE_TASK",
    "UpocrPipeline",
    "load_upocr_pipeline",
    "register_pipeline",
    "tamper_color_map",
]

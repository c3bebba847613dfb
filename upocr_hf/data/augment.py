"""Training-time augmentation per task and collation into model-ready batches.

The image and its labels go through one :mod:`torchvision.transforms.v2` pipeline together, so every random
geometric parameter (crop window, flip, rotation angle, expanded canvas) is shared. Inputs are wrapped as
``tv_tensors``; the kind decides interpolation and fill:

* the input photo is a ``tv_tensors.Image``: bilinear rotation, bicubic (antialiased) resize; area opened by
  rotation is filled black (0), as PIL's ``rotate(expand=True)`` in the authors' code does;
* the removal target (the text-free photo) is also a ``tv_tensors.Image``: it is a photograph, so it is
  resized like the input (bicubic, as in the authors' code) -- resizing it with nearest would make the
  background pixels of input and target disagree. Rotation fills it black like the input, so input and
  target agree in the new area, and the text mask (a ``tv_tensors.Mask``) is 0 there: new area is plain
  background;
* segmentation and tamper targets are ``tv_tensors.Mask``: nearest everywhere (``NEAREST_EXACT`` for the
  resize, see :class:`JointResize`), and area opened by rotation is
  filled with ``IGNORE_VALUE_UINT8`` (128 gray) on all three channels, i.e. ignored by the loss.

Recipes (each task's ``upocr_hf.tasks.Task.augmentation``, each ending in a resize to ``size`` x ``size``, default
512):

* removal: horizontal flip p 0.3; rotation uniform in +-30 deg with expanded canvas, p 0.5;
* segmentation: random crop (each side a uniform 0.7-1.0 fraction, always); horizontal flip p 0.3; colour
  jitter (brightness, contrast, saturation 0.5, hue 0.5) p 0.5, on the image only; rotation +-30 deg p 0.5,
  label's new area ignored;
* tampered text: random crop 0.5-1.0 per side (always); horizontal flip p 0.5.

Use with a datasets ``Dataset`` in the schema of :mod:`upocr_hf.data` (columns ``image``, ``target``,
``mask``, ``task``)::

    ds.set_transform(UpocrAugment(size=512))          # or ds.with_transform(...)
    loader = DataLoader(ds, batch_size=8, collate_fn=upocr_collate)

Each transformed sample is a dict of tensors (S = ``size``):

=============== =================== =========================================================================
key             shape / dtype       meaning
=============== =================== =========================================================================
pixel_values    (3, S, S) float32   input in [0, 1], no mean/std normalisation
labels          (3, S, S) float32   the target in [0, 1]
text_mask       (1, S, S) float32   removal text mask m (1 on text); zeros for other tasks
ignore_mask     (1, S, S) bool      True where the target is 128 gray on all channels (ignored); all False
                                    for removal
task            str                 task id
task_id         int                 index of the task in ``tasks`` (default ``DEFAULT_TASKS``, the order of the
                                    released checkpoint; pass ``config.tasks``)
name            str                 sample name when the dataset has one
=============== =================== =========================================================================

Randomness comes from torch's global RNG (per DataLoader worker, seeded by the DataLoader).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import (
    ColorJitter,
    Compose,
    RandomApply,
    RandomHorizontalFlip,
    RandomRotation,
    Transform,
)
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from ..tasks import DEFAULT_TASKS, IGNORE_VALUE_UINT8, Augmentation, get_task

__all__ = [
    "JointResize",
    "RandomSideCrop",
    "UpocrAugment",
    "build_task_transform",
    "ignore_mask_from_target",
    "upocr_collate",
]


class RandomSideCrop(Transform):
    """With probability ``p``, crop a window whose width and height are independent uniform fractions
    in [``min_ratio``, ``max_ratio``] of the input's, at a uniform position (the authors' ``RandomCrop``)."""

    def __init__(self, min_ratio: float, max_ratio: float, p: float = 1.0) -> None:
        super().__init__()
        if not 0 < min_ratio <= max_ratio <= 1:
            raise ValueError(f"need 0 < min_ratio <= max_ratio <= 1, got {min_ratio}, {max_ratio}")
        self.min_ratio, self.max_ratio, self.p = min_ratio, max_ratio, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(()) >= self.p:
            return {"skip": True}
        height, width = query_size(flat_inputs)
        span = self.max_ratio - self.min_ratio
        rw, rh = (self.min_ratio + span * torch.rand(2)).tolist()
        crop_w, crop_h = max(1, int(width * rw)), max(1, int(height * rh))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        top = int(torch.randint(0, height - crop_h + 1, ()))
        return {"skip": False, "top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["skip"]:
            return inpt
        return self._call_kernel(
            F.crop,
            inpt,
            top=params["top"],
            left=params["left"],
            height=params["height"],
            width=params["width"],
        )


class JointResize(Transform):
    """Resize to a fixed size: images bicubic (antialiased), masks nearest *exact*.

    torchvision's ``Resize`` resizes ``tv_tensors.Mask`` with legacy ``NEAREST``, which samples at
    ``floor(i * scale)`` and shifts labels by up to half a source pixel against the bicubic image (5 % of the
    pixels of a 96x128 -> 50x70 resize disagree); ``NEAREST_EXACT`` samples at pixel centres like PIL's
    nearest (what the authors used), and stays aligned with the image.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = list(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            out = F.resize_image(
                inpt.as_subclass(torch.Tensor), self.size, interpolation=InterpolationMode.NEAREST_EXACT
            )
            return tv_tensors.wrap(out, like=inpt)
        return self._call_kernel(
            F.resize, inpt, self.size, interpolation=InterpolationMode.BICUBIC, antialias=True
        )


def build_task_transform(
    task: str, size: int | tuple[int, int] = 512, *, train: bool = True, config: Augmentation | None = None
) -> Compose:
    """The joint v2 pipeline of one task: ``train=True`` gives its recipe (``config``, default the task's own),
    ``train=False`` only the resize.

    Call the result on ``(image, target)`` or ``(image, target, mask)`` tv_tensors; see the module docstring
    for how each kind is interpolated and filled.
    """
    size_hw = (size, size) if isinstance(size, int) else tuple(size)
    steps: list[Transform] = []
    if train:
        cfg = config or get_task(task).augmentation
        if cfg.crop_prob > 0:
            steps.append(RandomSideCrop(cfg.crop_min_ratio, cfg.crop_max_ratio, cfg.crop_prob))
        if cfg.hflip_prob > 0:
            steps.append(RandomHorizontalFlip(cfg.hflip_prob))
        if cfg.color_jitter_prob > 0:  # v2 colour transforms leave tv_tensors.Mask untouched
            jitter = ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
            steps.append(RandomApply([jitter], p=cfg.color_jitter_prob))
        if cfg.rotate_prob > 0:
            label_fill = 0 if get_task(task).text_mask else IGNORE_VALUE_UINT8
            rotation = RandomRotation(
                cfg.rotate_degrees,
                interpolation=InterpolationMode.BILINEAR,
                expand=True,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: label_fill},
            )
            steps.append(RandomApply([rotation], p=cfg.rotate_prob))
    steps.append(JointResize(size_hw))
    return Compose(steps)


def ignore_mask_from_target(target: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) uint8 target -> (…, 1, H, W) bool, True where all three channels are 128 (ignored)."""
    return (target == IGNORE_VALUE_UINT8).all(dim=-3, keepdim=True)


def _to_uint8_chw(value: Any, mode: str) -> torch.Tensor:
    if isinstance(value, Image.Image):
        if value.mode != mode:
            value = value.convert(mode)
        return F.pil_to_tensor(value)
    tensor = torch.as_tensor(value)
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3 and tensor.shape[-1] in (1, 3) and tensor.shape[0] not in (1, 3):
        tensor = tensor.permute(2, 0, 1)
    return tensor.to(torch.uint8)


class UpocrAugment:
    """Batched transform for ``Dataset.set_transform`` / ``with_transform`` on the uniform schema.

    Args:
        size: output side (or ``(height, width)``); multiples of 32 (paper: 512).
        train: apply the task's random augmentation (``False``: resize only, for validation).
        tasks: task order defining ``task_id`` (pass the model's ``config.tasks``); each task is augmented by its
            registry entry's recipe (a task nobody registered: horizontal flips).
        overrides: replace a task's :class:`~upocr_hf.tasks.Augmentation` (e.g. to switch a step off).
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 512,
        *,
        train: bool = True,
        tasks: Sequence[str] = DEFAULT_TASKS,
        overrides: Mapping[str, Augmentation] | None = None,
    ) -> None:
        self.size = size
        self.train = train
        self.tasks = list(tasks)
        overrides = overrides or {}
        self.pipelines = {
            task: build_task_transform(task, size, train=train, config=overrides.get(task))
            for task in self.tasks
        }

    def transform_sample(self, image: Any, target: Any, mask: Any, task: str) -> dict[str, Any]:
        """Transform one sample (PIL images or uint8 arrays) into the tensors listed in the module docstring."""
        if task not in self.pipelines:
            raise ValueError(f"task {task!r} is not in the task order {self.tasks}")
        img = tv_tensors.Image(_to_uint8_chw(image, "RGB"))
        tgt_raw = _to_uint8_chw(target, "RGB")
        if tuple(tgt_raw.shape[-2:]) != tuple(img.shape[-2:]):
            raise ValueError(
                f"target size {tuple(tgt_raw.shape[-2:])} differs from image size {tuple(img.shape[-2:])}"
            )
        pipeline = self.pipelines[task]
        if get_task(task).text_mask:
            if mask is None:
                raise ValueError(f"a {task} sample needs its text mask")
            m = tv_tensors.Mask(_to_uint8_chw(mask, "L")[:1])
            img, tgt, m = pipeline(img, tv_tensors.Image(tgt_raw), m)
            text_mask = (m >= 128).float().as_subclass(torch.Tensor)
            ignore = torch.zeros_like(text_mask, dtype=torch.bool)
        else:
            img, tgt = pipeline(img, tv_tensors.Mask(tgt_raw))
            ignore = ignore_mask_from_target(tgt.as_subclass(torch.Tensor))
            text_mask = torch.zeros((1, *img.shape[-2:]), dtype=torch.float32)
        return {
            "pixel_values": img.as_subclass(torch.Tensor).float().div_(255),
            "labels": tgt.as_subclass(torch.Tensor).float().div_(255),
            "text_mask": text_mask,
            "ignore_mask": ignore,
            "task": task,
            "task_id": self.tasks.index(task),
        }

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        tasks = batch["task"]
        masks = batch.get("mask") or [None] * len(tasks)
        rows = [
            self.transform_sample(image, target, mask, task)
            for image, target, mask, task in zip(batch["image"], batch["target"], masks, tasks, strict=True)
        ]
        out: dict[str, list[Any]] = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
        if "name" in batch:
            out["name"] = list(batch["name"])
        return out

    def apply_to_stream(self, stream: Any, batch_size: int = 8) -> Any:
        """A ``datasets.IterableDataset`` in the uniform schema, augmented as it is read (what ``set_transform``
        does for a ``Dataset``), ``batch_size`` samples at a time; the source images are dropped from its rows."""
        columns = stream.column_names or ["image", "target"]
        sources = [column for column in ("image", "target", "mask") if column in columns]
        return stream.map(self, batched=True, batch_size=batch_size, remove_columns=sources)


def upocr_collate(samples: Sequence[Mapping[str, Any]], metadata: bool = True) -> dict[str, Any]:
    """Stack transformed samples into a batch of `UpocrModel.forward`'s keyword arguments: tensors
    ``pixel_values``, ``labels``, ``text_mask``, ``ignore_mask`` and ``task`` (long task ids), so that
    ``model(**batch)`` returns the loss; with ``metadata``, also lists ``tasks`` and ``names`` (when present).
    `transformers.Trainer` passes every key to the model: give it ``functools.partial(upocr_collate,
    metadata=False)``."""
    batch: dict[str, Any] = {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "text_mask": torch.stack([s["text_mask"] for s in samples]),
        "ignore_mask": torch.stack([s["ignore_mask"] for s in samples]),
        "task": torch.tensor([int(s["task_id"]) for s in samples], dtype=torch.long),
    }
    if metadata:
        batch["tasks"] = [s["task"] for s in samples]
        if all("name" in s for s in samples):
            batch["names"] = [s["name"] for s in samples]
    return batch

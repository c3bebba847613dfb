"""Synthetic training data rendered as it is read: samples that do not repeat, instead of folders written first.

``train.py --data TASK=synthetic:LOOK[:WEIGHT][,LOOK[:WEIGHT]...]`` trains TASK on a :class:`RenderedTaskDataset`
(e.g. ``text-removal=synthetic:photos:3,signs:1``): the DataLoader's workers render each sample when it is read,
with :func:`~upocr_hf.data.synthetic.render_sample`, in the training style (fonts, photographs and forgery methods
that the held-out style keeps apart). An epoch is :data:`EPOCH_SAMPLES` distinct samples, so a run sees each one
once; the looks are interleaved by weight. Sample ``i`` is a pure function of ``(seed, i, look, size)``: resuming
is exact and costs nothing (the sampler skips indices, nothing is rendered twice), and sample ``j`` of a look is
the one ``python -m upocr_hf.data.synthetic --look LOOK --seed SEED --style train`` writes as index ``j``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..tasks import TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION
from .folders import tampered_boxes_to_target, textseg_label_to_target
from .synthetic import LOOKS, SyntheticConfig, SyntheticSample, render_sample

__all__ = [
    "EPOCH_SAMPLES",
    "RENDERED_TASKS",
    "SYNTHETIC_SOURCE_PREFIX",
    "RenderedTaskDataset",
    "SyntheticSource",
    "require_rendered_task",
    "task_row",
]

#: How `--data` names rendered data instead of a folder.
SYNTHETIC_SOURCE_PREFIX = "synthetic:"
#: Distinct samples per epoch: at the recipe's 4 per task and step, 250,000 steps before one comes back.
EPOCH_SAMPLES = 1_000_000
#: The tasks the generator renders data for.
RENDERED_TASKS = (TEXT_REMOVAL, TEXT_SEGMENTATION, TAMPERED_TEXT_DETECTION)

_LOOK_WEIGHT = re.compile(r"(?P<look>[a-z]+)(?::(?P<weight>[1-9][0-9]*))?")


@dataclass(frozen=True)
class SyntheticSource:
    """The looks (`upocr_hf.data.synthetic.LOOKS`) a rendered dataset mixes, each with its whole-number weight."""

    looks: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, spec: str) -> SyntheticSource:
        """Read ``synthetic:LOOK[:WEIGHT][,LOOK[:WEIGHT]...]``; `ValueError` naming the rule otherwise."""
        if not spec.startswith(SYNTHETIC_SOURCE_PREFIX):
            raise ValueError(f"{spec!r} does not start with {SYNTHETIC_SOURCE_PREFIX!r}")
        looks = []
        for part in spec[len(SYNTHETIC_SOURCE_PREFIX) :].split(","):
            match = _LOOK_WEIGHT.fullmatch(part)
            if not match or match["look"] not in LOOKS:
                raise ValueError(
                    f"{spec!r}: expected {SYNTHETIC_SOURCE_PREFIX}LOOK[:WEIGHT][,LOOK[:WEIGHT]...] with looks from "
                    f"{sorted(LOOKS)} and whole-number weights, got {part!r}"
                )
            looks.append((match["look"], int(match["weight"] or 1)))
        if len({look for look, _ in looks}) != len(looks):
            raise ValueError(f"{spec!r}: a look is named twice")
        return cls(tuple(looks))

    @staticmethod
    def names(spec: object) -> bool:
        """Whether a `--data` value names rendered data rather than a folder."""
        return str(spec).startswith(SYNTHETIC_SOURCE_PREFIX)

    def locate(self, index: int) -> tuple[int, int]:
        """`(look number, that look's sample index)` of a dataset index: the looks interleaved by weight."""
        period = sum(weight for _, weight in self.looks)
        cycle, offset = divmod(index, period)
        for number, (_, weight) in enumerate(self.looks):
            if offset < weight:
                return number, cycle * weight + offset
            offset -= weight
        raise AssertionError("unreachable: offset < period")


def require_rendered_task(task: str) -> None:
    """`ValueError` unless the generator renders data for `task` (one of `RENDERED_TASKS`)."""
    if task not in RENDERED_TASKS:
        raise ValueError(
            f"the synthetic generator has no data for task {task!r}: it renders data for {RENDERED_TASKS} only"
        )


def task_row(sample: SyntheticSample, task: str) -> dict[str, Any]:
    """One task's row of a rendered sample in the uniform schema (`image`, `target`, `mask`, `task`, `name`), with
    uint8 arrays where the folder loaders give images: the targets they would read from the written files."""
    require_rendered_task(task)
    height, width = sample.image.shape[:2]
    if task == TEXT_REMOVAL:
        image, target = sample.image, sample.background
        mask = np.where(sample.text_mask, 255, 0).astype(np.uint8)
    elif task == TEXT_SEGMENTATION:
        image, target, mask = sample.image, textseg_label_to_target(sample.stroke_label), None
    else:  # tampered text detection
        image, mask = sample.tampered, None
        target = tampered_boxes_to_target(width, height, sample.tamper_boxes)
    return {"image": image, "target": target, "mask": mask, "task": task, "name": sample.name}


class RenderedTaskDataset(Dataset):
    """A map-style dataset of one task's synthetic samples, rendered when read (in DataLoader workers).

    Args:
        task: the task whose rows it gives (`task_row`).
        source: the looks and their weights (`SyntheticSource.parse("synthetic:photos:3,signs:1")`).
        size: the rendered side in pixels (train.py: its training crop).
        seed: the generator's seed (every look uses it, as the generator's command line would).
        length: samples per epoch.
        base: the generator's config the looks override (default: the training style, with this machine's fonts
            and photographs; the held-out style's are never drawn).

    Like a ``datasets.Dataset``, it takes a batched transform (`set_transform`, e.g.
    `~upocr_hf.data.augment.UpocrAugment`), applied to each row as a batch of one.
    """

    def __init__(
        self,
        task: str,
        source: SyntheticSource,
        *,
        size: int,
        seed: int = 0,
        length: int = EPOCH_SAMPLES,
        base: SyntheticConfig | None = None,
    ) -> None:
        require_rendered_task(task)
        self.task, self.source, self.seed, self.length = task, source, seed, length
        # fonts and photographs are looked up once here, not in every worker
        self.configs = [
            replace(base or SyntheticConfig(style="train"), **LOOKS[look], size=(size, size)).resolved()
            for look, _ in source.looks
        ]
        self._transform: Callable[[dict[str, list[Any]]], dict[str, list[Any]]] | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside a rendered dataset of {self.length} samples")
        look, local = self.source.locate(index)
        row = task_row(render_sample(local, self.seed, self.configs[look]), self.task)
        row["name"] = f"{self.source.looks[look][0]}-{row['name']}"  # each look counts its samples from 0
        if self._transform is None:
            return row
        transformed = self._transform({key: [value] for key, value in row.items()})
        return {key: values[0] for key, values in transformed.items()}

    def set_transform(self, transform: Callable[[dict[str, list[Any]]], dict[str, list[Any]]] | None) -> None:
        """Apply `transform` (batched, as ``datasets.Dataset.set_transform`` takes it) to every row read."""
        self._transform = transform

"""UPOCR's evaluation metrics (spec §6): text removal, text segmentation, tampered text detection.

* :mod:`upocr_hf.metrics.functional` — the vectorised computations (one place).
* :class:`TextRemovalMetric`, :class:`TextSegmentationMetric`, :class:`TamperedTextDetectionMetric` —
  ``evaluate.Metric`` subclasses (imported lazily, so ``import upocr_hf.metrics`` does not load
  ``evaluate``); the same classes load offline with ``evaluate.load(metric_path(task))``.
* :mod:`upocr_hf.metrics.paper_results` — the paper's reported numbers and table layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from upocr_hf.tasks import TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION

if TYPE_CHECKING:  # pragma: no cover
    from upocr_hf.metrics.modules import (
        TamperedTextDetectionMetric,
        TextRemovalMetric,
        TextSegmentationMetric,
    )

__all__ = [
    "METRIC_CLASS_NAMES",
    "METRIC_FOLDERS",
    "TamperedTextDetectionMetric",
    "TextRemovalMetric",
    "TextSegmentationMetric",
    "load_metric",
    "metric_path",
]

#: Folder (next to this file) of each task's evaluate module; its script has the folder's name.
METRIC_FOLDERS: dict[str, str] = {
    TEXT_REMOVAL: "text_removal",
    TEXT_SEGMENTATION: "text_segmentation",
    TAMPERED_TEXT_DETECTION: "tampered_text_detection",
}

#: Metric class of each task in :mod:`upocr_hf.metrics.modules`.
METRIC_CLASS_NAMES: dict[str, str] = {
    TEXT_REMOVAL: "TextRemovalMetric",
    TEXT_SEGMENTATION: "TextSegmentationMetric",
    TAMPERED_TEXT_DETECTION: "TamperedTextDetectionMetric",
}


def _task_id(task: str) -> str:
    for task_id, folder in METRIC_FOLDERS.items():
        if task in (task_id, folder):
            return task_id
    raise ValueError(f"unknown task {task!r}; expected one of {list(METRIC_FOLDERS)}")


def metric_path(task: str) -> str:
    """Folder of a task's evaluate module, for ``evaluate.load(metric_path(task))``.

    Args:
        task: a task id of :mod:`upocr_hf.tasks` (``"text-removal"``...) or the folder name
            (``"text_removal"``...).
    """
    return str(Path(__file__).resolve().parent / METRIC_FOLDERS[_task_id(task)])


def load_metric(task: str, **kwargs: Any) -> Any:
    """A fresh metric instance for ``task`` (direct import; same class ``evaluate.load`` returns).

    ``kwargs`` go to the metric's constructor (e.g. ``mssim_mode="multiscale"``, ``threshold=0.5``,
    ``keep_in_memory=True``).
    """
    from upocr_hf.metrics import modules

    return getattr(modules, METRIC_CLASS_NAMES[_task_id(task)])(**kwargs)


def __getattr__(name: str) -> Any:
    if name in METRIC_CLASS_NAMES.values():
        from upocr_hf.metrics import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

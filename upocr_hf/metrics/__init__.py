"""UPOCR's evaluation metrics: text removal, text segmentation, tampered text detection.

* :mod:`upocr_hf.metrics.functional` — the vectorised computations (one place).
* :class:`TextRemovalMetric`, :class:`TextSegmentationMetric`, :class:`TamperedTextDetectionMetric` —
  ``evaluate.Metric`` subclasses (imported lazily, so ``import upocr_hf.metrics`` does not load
  ``evaluate``); the same classes load offline with ``evaluate.load(metric_path(task))``.
* :mod:`upocr_hf.metrics.paper_results` — the paper's reported numbers and table layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from upocr_hf.tasks import get_task, scored_tasks

if TYPE_CHECKING:  # pragma: no cover
    from upocr_hf.metrics.modules import (
        TamperedTextDetectionMetric,
        TextRemovalMetric,
        TextSegmentationMetric,
    )

__all__ = [
    "METRIC_CLASS_NAMES",
    "TamperedTextDetectionMetric",
    "TextRemovalMetric",
    "TextSegmentationMetric",
    "load_metric",
    "metric_path",
]

#: Metric class (in :mod:`upocr_hf.metrics.modules`) of each evaluate module folder (next to this file; its script
#: has the folder's name). A task names its folder in its registry entry (``Task.metric``).
METRIC_CLASS_NAMES: dict[str, str] = {
    "text_removal": "TextRemovalMetric",
    "text_segmentation": "TextSegmentationMetric",
    "tampered_text_detection": "TamperedTextDetectionMetric",
}


def _metric_folder(task: str) -> str:
    folder = task if task in METRIC_CLASS_NAMES else get_task(task).metric
    if folder not in METRIC_CLASS_NAMES:
        raise ValueError(f"no metric for task {task!r}; tasks with one: {scored_tasks()}")
    return folder


def metric_path(task: str) -> str:
    """Folder of a task's evaluate module, for ``evaluate.load(metric_path(task))``.

    Args:
        task: a task name (``"text-removal"``..., or any name of a registered task) or the folder name
            (``"text_removal"``...).
    """
    return str(Path(__file__).resolve().parent / _metric_folder(task))


def load_metric(task: str, **kwargs: Any) -> Any:
    """A fresh metric instance for ``task`` (direct import; same class ``evaluate.load`` returns).

    ``kwargs`` go to the metric's constructor (e.g. ``mssim_mode="multiscale"``, ``threshold=0.5``,
    ``keep_in_memory=True``).
    """
    from upocr_hf.metrics import modules

    return getattr(modules, METRIC_CLASS_NAMES[_metric_folder(task)])(**kwargs)


def __getattr__(name: str) -> Any:
    if name in METRIC_CLASS_NAMES.values():
        from upocr_hf.metrics import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

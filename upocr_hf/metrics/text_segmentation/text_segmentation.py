"""UPOCR text-segmentation metric (fgIoU, precision, recall, F) for ``evaluate.load``.

Load it offline with ``evaluate.load(upocr_hf.metrics.metric_path("text-segmentation"))``. evaluate
copies this script into its module cache, so it imports the implementation from the installed
``upocr_hf`` package (absolute import) instead of defining it here.
"""

from upocr_hf.metrics.modules import TextSegmentationMetric

__all__ = ["TextSegmentationMetric"]

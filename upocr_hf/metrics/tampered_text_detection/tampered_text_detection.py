"""UPOCR tampered-text-detection metric (IoU/P/R/F of real and tampered text, mIoU, mF) for ``evaluate.load``.

Load it offline with ``evaluate.load(upocr_hf.metrics.metric_path("tampered-text-detection"))``.
evaluate copies this script into its module cache, so it imports the implementation from the
installed ``upocr_hf`` package (absolute import) instead of defining it here.
"""

from upocr_hf.metrics.modules import TamperedTextDetectionMetric

__all__ = ["TamperedTextDetectionMetric"]

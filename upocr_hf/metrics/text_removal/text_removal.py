"""UPOCR text-removal metric (PSNR, MSSIM, MSE, AGE, pEPs, pCEPs, FID) for ``evaluate.load``.

Load it offline with ``evaluate.load(upocr_hf.metrics.metric_path("text-removal"))``. evaluate copies
this script into its module cache, so it imports the implementation from the installed
``upocr_hf`` package (absolute import) instead of defining it here.
"""

from upocr_hf.metrics.modules import TextRemovalMetric

__all__ = ["TextRemovalMetric"]

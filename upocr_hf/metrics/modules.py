"""The three UPOCR metrics as ``evaluate.Metric`` subclasses.

Each metric reduces every (prediction, reference) pair to a small per-image record *as it is
added* (a few numbers, or a 3×3 confusion matrix) and stores only those records in evaluate's
Arrow cache, so thousands of 512×512 images cost kilobytes, not gigabytes, and distributed
evaluation (``num_process``/``process_id``) still works: ``compute()`` on process 0 aggregates
everyone's records. All numbers come from :mod:`upocr_hf.metrics.functional`.

Use them directly or through ``evaluate.load(upocr_hf.metrics.metric_path(task))``::

    metric = TextRemovalMetric()              # or evaluate.load(metric_path("text-removal"))
    for preds, gts in batches:                # PIL images, uint8 HWC arrays or [0, 1] float arrays
        metric.add_batch(predictions=preds, references=gts)
    results = metric.compute()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from upocr_hf.metrics import functional as F
from upocr_hf.metrics.fid import FeatureExtractor, fid_from_features, find_fid_extractor
from upocr_hf.tasks import SEGMENTATION_THRESHOLD

__all__ = ["TamperedTextDetectionMetric", "TextRemovalMetric", "TextSegmentationMetric"]

_CITATION = """\
@inproceedings{peng2024upocr,
  title={UPOCR: Towards Unified Pixel-Level OCR Interface},
  author={Peng, Dezhi and Yang, Zhenhua and Zhang, Jiaxin and Liu, Chongyu and Shi, Yongxin and Ding, Kai and Guo, Fengjun and Jin, Lianwen},
  booktitle={International Conference on Machine Learning},
  year={2024}
}
"""


class _RecordMetric(evaluate.Metric):
    """Base: ``add``/``add_batch``/``compute`` turn inputs into per-image records before storing them."""

    #: extra per-image inputs accepted next to predictions/references (e.g. ``ignore_masks``)
    _extra_inputs: tuple[str, ...] = ()

    def _record_features(self) -> datasets.Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reduce_pair(
        self, prediction: Any, reference: Any, **extra: Any
    ) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _aggregate(self, records: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _compute(self, **kwargs: Any) -> dict[str, Any]:
        names = list(self._record_features())
        records = {name: kwargs.pop(name) for name in names}
        return self._aggregate(records, **kwargs)

    def add_batch(
        self,
        *,
        predictions: Sequence[Any] | None = None,
        references: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Reduce a batch of (prediction, reference) pairs to per-image records and store them.

        Args:
            predictions: sequence of predictions (PIL images, numpy arrays or torch tensors).
            references: sequence of references of the same length.
        """
        bad = [name for name in kwargs if name not in self._extra_inputs]
        if bad:
            raise ValueError(
                f"unexpected inputs {bad}; accepted: predictions, references, {list(self._extra_inputs)}"
            )
        if predictions is None or references is None:
            raise ValueError("add_batch needs both predictions and references")
        predictions, references = list(predictions), list(references)
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        extras = {
            name: list(values) if values is not None else [None] * len(predictions)
            for name, values in kwargs.items()
        }
        for name, values in extras.items():
            if len(values) != len(predictions):
                raise ValueError(f"{len(values)} {name} for {len(predictions)} predictions")
        columns: dict[str, list[Any]] = {name: [] for name in self._record_features()}
        for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
            record = self._reduce_pair(
                prediction, reference, **{name: values[index] for name, values in extras.items()}
            )
            for name in columns:
                columns[name].append(record[name])
        if predictions:
            super().add_batch(**columns)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Reduce one (prediction, reference) pair to its per-image record and store it.

        Args:
            prediction: one prediction.
            reference: its reference.
        """
        self.add_batch(
            predictions=[prediction], references=[reference], **{k: [v] for k, v in kwargs.items()}
        )

    def compute(
        self,
        *,
        predictions: Sequence[Any] | None = None,
        references: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Add the given pairs (if any), then aggregate every record stored so far.

        Returns ``None`` on processes other than 0 in distributed use, as ``evaluate`` does.
        Records are cleared afterwards.
        """
        extra_inputs = {name: kwargs.pop(name) for name in self._extra_inputs if name in kwargs}
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references, **extra_inputs)
        if self.writer is None and self.num_process == 1:  # nothing was ever added: an empty set
            empty = {name: np.zeros((0,)) for name in self._record_features()}
            return self._aggregate(empty, **kwargs) if self.process_id == 0 else None
        return super().compute(**kwargs)


# ----------------------------------------------------------------------------------------------
_REMOVAL_DESCRIPTION = """\
Text-removal metrics of the SCUT-EnsText protocol the UPOCR paper uses (EraseNet's script): PSNR,
MSSIM, MSE, AGE, pEPs, pCEPs averaged over images, and FID when pytorch-fid with its Inception
weights is available offline. Images are loaded with the shorter side resized to 512 (bicubic).
"""

_REMOVAL_KWARGS = """
Args:
    predictions: text-free predictions — PIL images, uint8 (H, W, 3) arrays in 0..255, or float arrays in [0, 1].
    references: ground-truth text-free images, same forms.
    skip_identical (compute kwarg, default True): the protocol drops pairs with MSE == 0 from every
        average (PSNR would be infinite); False keeps them in every average except PSNR's.
    return_per_image (compute kwarg, default False): add "per_image", the per-image figures.
Returns:
    psnr (dB), mssim (fraction), mssim_x100, mse (RGB in [0, 1]), mse_x100, age (grey levels 0..255),
    peps, pceps (fractions of 512*512), fid (or None), fid_unavailable_reason (None when computed),
    num_images, num_evaluated, num_identical. A figure with no image to average is None.
Init options: mssim_mode ("protocol" | "multiscale"), resize_shorter_side (512 or None),
    fid ("auto" | False | a feature-extractor callable).
"""

_REMOVAL_STATS = ("mse", "psnr", "mssim", "age", "peps", "pceps", "eps", "ceps")


class TextRemovalMetric(_RecordMetric):
    """PSNR / MSSIM / MSE / AGE / pEPs / pCEPs (/ FID) of text removal, the paper's protocol.

    Args:
        mssim_mode: ``"protocol"`` (default; the published script's full-resolution quirk, which the
            paper's numbers use) or ``"multiscale"`` (true MS-SSIM).
        resize_shorter_side: shorter side both images are resized to (bicubic); ``None`` keeps sizes.
        fid: ``"auto"`` computes FID only if pytorch-fid and its weights are available offline;
            ``False`` disables it; a callable ``(N, H, W, 3) float [0, 1] -> (N, D)`` is used as the
            feature extractor.
        **kwargs: ``evaluate.Metric`` arguments (``cache_dir``, ``keep_in_memory``, ``num_process``...).
    """

    def __init__(
        self,
        *,
        mssim_mode: F.MssimMode = "protocol",
        resize_shorter_side: int | None = F.PROTOCOL_SIZE,
        fid: bool | str | FeatureExtractor = "auto",
        **kwargs: Any,
    ) -> None:
        if mssim_mode not in ("protocol", "multiscale"):
            raise ValueError(f"mssim_mode must be 'protocol' or 'multiscale', got {mssim_mode!r}")
        self.mssim_mode = mssim_mode
        self.resize_shorter_side = resize_shorter_side
        self.fid_extractor: FeatureExtractor | None
        if callable(fid):
            self.fid_extractor, self.fid_unavailable_reason = fid, None
        elif fid is False or fid is None:
            self.fid_extractor, self.fid_unavailable_reason = None, "FID disabled (fid=False)"
        elif fid in (True, "auto"):
            self.fid_extractor, self.fid_unavailable_reason = find_fid_extractor()
        else:
            raise ValueError(f"fid must be 'auto', False or a callable, got {fid!r}")
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_REMOVAL_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_REMOVAL_KWARGS,
            features=self._record_features(),
            reference_urls=["https://github.com/lcy0604/EraseNet"],
        )

    def _record_features(self) -> datasets.Features:
        features = {name: datasets.Value("float64") for name in _REMOVAL_STATS}
        if self.fid_extractor is not None:
            features["fid_prediction_features"] = datasets.Sequence(datasets.Value("float64"))
            features["fid_reference_features"] = datasets.Sequence(datasets.Value("float64"))
        return datasets.Features(features)

    def _reduce_pair(self, prediction: Any, reference: Any) -> dict[str, Any]:
        size = self.resize_shorter_side
        pred = F.load_removal_image(prediction, size)
        gt = F.load_removal_image(reference, size)
        record: dict[str, Any] = F.text_removal_image_stats(pred, gt, mssim_mode=self.mssim_mode, size=None)
        if self.fid_extractor is not None:
            features = np.asarray(self.fid_extractor(np.stack([pred, gt])), dtype=np.float64).reshape(2, -1)
            record["fid_prediction_features"] = features[0]
            record["fid_reference_features"] = features[1]
        return record

    def _aggregate(
        self, records: Mapping[str, Any], skip_identical: bool = True, return_per_image: bool = False
    ) -> dict[str, Any]:
        result = F.aggregate_text_removal(records, skip_identical=skip_identical)
        result["fid"], result["fid_unavailable_reason"] = None, self.fid_unavailable_reason
        if self.fid_extractor is not None:
            pred_features = records["fid_prediction_features"]
            ref_features = records["fid_reference_features"]
            if len(pred_features):
                pred_features, ref_features = np.stack(list(pred_features)), np.stack(list(ref_features))
            result["fid"], result["fid_unavailable_reason"] = fid_from_features(pred_features, ref_features)
        if return_per_image:
            result["per_image"] = {
                name: np.asarray(records[name], dtype=np.float64).tolist() for name in _REMOVAL_STATS
            }
        return result


# ----------------------------------------------------------------------------------------------
_SEGMENTATION_DESCRIPTION = """\
Text-segmentation metrics of the UPOCR paper (TextSeg): one binary confusion matrix over the whole
set (ignored pixels excluded), then fgIoU = TP/(TP+FP+FN), precision, recall and F = 2PR/(P+R).
Predictions are resized (bilinear) to each reference's size and thresholded (channel mean > 0.4).
"""

_SEGMENTATION_KWARGS = """
Args:
    predictions: bool masks, integer label maps (non-zero = text), or soft maps (float [0, 1] or
        uint8 0..255; (H, W) or RGB (H, W, 3), averaged over channels) thresholded at `threshold`.
    references: (H, W) label maps (0 background, non-zero text, ignore_index ignored) or RGB colour
        targets (white text, black background, gray 128 ignored).
    ignore_masks (optional): per-image bool masks, True = pixel left out.
    return_per_image (compute kwarg, default False): add "per_image" with each image's tp/fp/fn/tn.
Returns:
    fg_iou, precision, recall, f_score (fractions in [0, 1]; 0.0 when a denominator is 0),
    tp, fp, fn, tn (pixel counts over the set), num_images.
Init options: threshold (default 0.4), ignore_index (default 255, None for none).
"""

_CONFUSION_COUNTS = ("tp", "fp", "fn", "tn")


def _apply_ignore_mask(valid: np.ndarray, ignore_mask: Any) -> np.ndarray:
    if ignore_mask is None:
        return valid
    ignore = F.to_numpy_image(ignore_mask).astype(bool)
    if ignore.shape != valid.shape:
        raise ValueError(f"ignore mask {ignore.shape} does not match the reference {valid.shape}")
    return valid & ~ignore


class TextSegmentationMetric(_RecordMetric):
    """fgIoU / precision / recall / F of text segmentation over one confusion matrix.

    Args:
        threshold: a soft prediction's channel mean above this is text.
        ignore_index: label of ignored pixels in 2-D references (``None``: no ignored label).
        **kwargs: ``evaluate.Metric`` arguments.
    """

    _extra_inputs = ("ignore_masks",)

    def __init__(
        self,
        *,
        threshold: float = SEGMENTATION_THRESHOLD,
        ignore_index: int | None = F.DEFAULT_IGNORE_INDEX,
        **kwargs: Any,
    ) -> None:
        self.threshold = threshold
        self.ignore_index = ignore_index
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_SEGMENTATION_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_SEGMENTATION_KWARGS,
            features=self._record_features(),
        )

    def _record_features(self) -> datasets.Features:
        return datasets.Features({name: datasets.Value("int64") for name in _CONFUSION_COUNTS})

    def _reduce_pair(self, prediction: Any, reference: Any, ignore_masks: Any = None) -> dict[str, Any]:
        text, valid = F.segmentation_reference_to_mask(reference, self.ignore_index)
        valid = _apply_ignore_mask(valid, ignore_masks)
        mask = F.segmentation_prediction_to_mask(prediction, size=text.shape, threshold=self.threshold)
        return dict(zip(_CONFUSION_COUNTS, F.binary_confusion(mask, text, valid), strict=True))

    def _aggregate(self, records: Mapping[str, Any], return_per_image: bool = False) -> dict[str, Any]:
        counts = {name: int(np.asarray(records[name], dtype=np.int64).sum()) for name in _CONFUSION_COUNTS}
        result: dict[str, Any] = F.segmentation_scores(**counts)
        result.update(counts)
        result["num_images"] = len(records["tp"])
        if return_per_image:
            result["per_image"] = {
                name: np.asarray(records[name], dtype=np.int64).tolist() for name in _CONFUSION_COUNTS
            }
        return result


# ----------------------------------------------------------------------------------------------
_TAMPER_DESCRIPTION = """\
Tampered-text-detection metrics of the UPOCR paper (Tampered-IC13, pixel protocol): one 3-class
confusion matrix (background, real text, tampered text) over the set, ignored pixels excluded;
IoU / precision / recall / F for real and for tampered text, mIoU and mF over those two classes.
"""

_TAMPER_KWARGS = """
Args:
    predictions: (H, W) integer class maps (0 background, 1 real, 2 tampered) or RGB maps
        (float [0, 1] model outputs or uint8 colour images), read by argmax after a bilinear resize
        to the reference's size.
    references: (H, W) class maps (ignore_index ignored) or RGB colour targets (red background,
        green real, blue tampered, gray 128 ignored).
    ignore_masks (optional): per-image bool masks, True = pixel left out.
    return_per_image (compute kwarg, default False): add "per_image" with each image's flattened 3x3 matrix.
Returns:
    real_iou, real_precision, real_recall, real_f_score, the same for tampered_, miou, mf (fractions;
    0.0 when a denominator is 0), confusion_matrix (3x3 nested list, rows = reference), num_images.
Init options: ignore_index (default 255, None for none).
"""


class TamperedTextDetectionMetric(_RecordMetric):
    """IoU/P/R/F for real and tampered text, mIoU, mF over one 3-class confusion matrix.

    Args:
        ignore_index: label of ignored pixels in 2-D references (``None``: no ignored label).
        **kwargs: ``evaluate.Metric`` arguments.
    """

    _extra_inputs = ("ignore_masks",)

    def __init__(self, *, ignore_index: int | None = F.DEFAULT_IGNORE_INDEX, **kwargs: Any) -> None:
        self.ignore_index = ignore_index
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_TAMPER_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_TAMPER_KWARGS,
            features=self._record_features(),
        )

    def _record_features(self) -> datasets.Features:
        return datasets.Features({"confusion": datasets.Sequence(datasets.Value("int64"), length=9)})

    def _reduce_pair(self, prediction: Any, reference: Any, ignore_masks: Any = None) -> dict[str, Any]:
        classes, valid = F.tamper_reference_to_classes(reference, self.ignore_index)
        valid = _apply_ignore_mask(valid, ignore_masks)
        predicted = F.tamper_prediction_to_classes(prediction, size=classes.shape)
        return {"confusion": F.confusion_matrix(predicted, classes, 3, valid).ravel()}

    def _aggregate(self, records: Mapping[str, Any], return_per_image: bool = False) -> dict[str, Any]:
        per_image = [np.asarray(matrix, dtype=np.int64) for matrix in records["confusion"]]
        matrix = F.sum_confusion(per_image, 3)
        result: dict[str, Any] = F.tamper_scores(matrix)
        result["confusion_matrix"] = matrix.tolist()
        result["num_images"] = len(per_image)
        if return_per_image:
            result["per_image"] = {"confusion": [m.tolist() for m in per_image]}
        return result

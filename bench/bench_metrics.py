"""Throughput of the three UPOCR metrics at 512×512 (images per second, single process).

For each metric it times (a) the per-image reduction alone (``upocr_hf.metrics.functional``) and
(b) the ``evaluate`` module end to end (``add_batch`` with Arrow records in evaluate's on-disk
cache, then ``compute``). Run: ``python bench/bench_metrics.py --num-images 32``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import numpy as np

from upocr_hf.metrics import functional as F
from upocr_hf.metrics import load_metric
from upocr_hf.tasks import (
    IGNORE_VALUE_UINT8,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
)


def _make_data(task: str, n: int, size: int, rng: np.random.Generator) -> tuple[list, list]:
    if task == TEXT_REMOVAL:
        gts = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
        preds = [
            np.clip(g.astype(np.int16) + rng.integers(-25, 26, g.shape), 0, 255).astype(np.uint8) for g in gts
        ]
        return preds, gts
    if task == TEXT_SEGMENTATION:
        refs = []
        for _ in range(n):
            ref = np.zeros((size, size, 3), dtype=np.uint8)
            ref[rng.random((size, size)) < 0.2] = 255
            ref[rng.random((size, size)) < 0.01] = IGNORE_VALUE_UINT8
            refs.append(ref)
        preds = [rng.random((size, size, 3), dtype=np.float32) for _ in range(n)]  # soft RGB model outputs
        return preds, refs
    palette = np.asarray(TAMPER_CLASS_RGB, dtype=np.uint8)
    refs = [palette[rng.integers(0, 3, (size, size))] for _ in range(n)]
    preds = [rng.random((size, size, 3), dtype=np.float32) for _ in range(n)]
    return preds, refs


def _reducer(task: str) -> Callable[[object, object], object]:
    if task == TEXT_REMOVAL:
        return F.text_removal_image_stats

    if task == TEXT_SEGMENTATION:

        def reduce_segmentation(pred: object, ref: object) -> object:
            text, valid = F.segmentation_reference_to_mask(ref)
            return F.binary_confusion(F.segmentation_prediction_to_mask(pred, text.shape), text, valid)

        return reduce_segmentation

    def reduce_tamper(pred: object, ref: object) -> object:
        classes, valid = F.tamper_reference_to_classes(ref)
        return F.confusion_matrix(F.tamper_prediction_to_classes(pred, classes.shape), classes, 3, valid)

    return reduce_tamper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.num_images} images of {args.size}x{args.size}, batch {args.batch_size}")
    for task in (TEXT_REMOVAL, TEXT_SEGMENTATION, TAMPERED_TEXT_DETECTION):
        preds, refs = _make_data(task, args.num_images, args.size, rng)
        reduce = _reducer(task)
        start = time.perf_counter()
        for pred, ref in zip(preds, refs, strict=True):
            reduce(pred, ref)
        functional_rate = args.num_images / (time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as cache_dir:
            metric = load_metric(task, cache_dir=cache_dir)
            start = time.perf_counter()
            for i in range(0, args.num_images, args.batch_size):
                metric.add_batch(
                    predictions=preds[i : i + args.batch_size], references=refs[i : i + args.batch_size]
                )
            result = metric.compute()
            module_rate = args.num_images / (time.perf_counter() - start)
        print(
            f"{task:25s} functional {functional_rate:7.1f} img/s | evaluate module {module_rate:7.1f} img/s | "
            f"num_images={result['num_images']}"
        )


if __name__ == "__main__":
    main()

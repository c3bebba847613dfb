"""Choose a model's tampered-text region rule on validation data and save it in the model folder.

    python scripts/choose_tamper_rule.py --model DIR --data DIR/Tampered-IC13 [--split test] [--write]

The demo reads a tampering map under a region rule (`UpocrImageProcessor.tamper_region_rule`): a text region, judged
as a whole as a word is forged or not, counts as tampered when the share of its pixels read tampered, its mean
tampered score and its share of the image reach the rule's minima; the verdict counts those regions. (A rule on
tampered-pixel components instead counts every speck of a broken-up tampered rim as a region of its own, so the
grid has text-region rules only.) This runs the model once per image (the folder's inference mode), then reads
every class map under each rule of a small grid and keeps the rule with the highest mF, the mean of the real- and
tampered-text F (ties: the stricter rule): tampered-text F alone rewards a rule that calls most real text forged
(on the default model it chose a rule under which every word of the demo's examples read tampered). Each row also
says how many regions the rule reports per image and which share of them is mostly forged text. Choose on data that
the figures the demo quotes are not measured on. `--write` saves the rule into the folder's
`preprocessor_config.json` (written whole, then moved into place).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from upocr_hf.data import load_task_datasets
from upocr_hf.file_utils import atomic_write
from upocr_hf.image_processing_upocr import confident_tampered_regions
from upocr_hf.metrics import load_metric
from upocr_hf.metrics.functional import DEFAULT_IGNORE_INDEX, tamper_reference_to_classes
from upocr_hf.pipeline_upocr import UpocrPipeline, load_upocr_pipeline
from upocr_hf.tasks import TAMPERED_TEXT_DETECTION

#: The grid searched: minimum mean tampered score of a region, minimum share of the image's pixels, minimum share
#: of the region's pixels read tampered.
SCORES = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8)
SHARES = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3)
TAMPERED_SHARES = (0.0, 0.25, 0.5, 0.75)


def predictions(pipe: UpocrPipeline, dataset, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each image's argmax class map and class scores (the rule is applied afterwards)."""
    readings = []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        results = pipe([r["image"] for r in rows], task=TAMPERED_TEXT_DETECTION, batch_size=batch_size)
        readings += [
            (r["class_map"], r["scores"]) for r in (results if isinstance(results, list) else [results])
        ]
    return readings


def reference_classes(target) -> np.ndarray:
    """A reference in any form the tampering metric reads, as the class map it reads (ignored pixels:
    `DEFAULT_IGNORE_INDEX`), decoded once rather than once per rule."""
    classes, valid = tamper_reference_to_classes(target)
    return np.where(valid, classes, DEFAULT_IGNORE_INDEX).astype(np.uint8)


def mostly_forged(ruled: np.ndarray, target: np.ndarray) -> list[bool]:
    """For each tampered region of a ruled class map: are at least half its pixels forged text in the class map
    `target`?"""
    labels, count = ndimage.label(ruled == 2, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    forged = np.bincount(labels[target == 2], minlength=count + 1)[1:]
    return list(forged * 2 >= areas)


def score_rules(readings, targets: list[np.ndarray]) -> list[dict]:
    """Tampered-text F, mF, the share of forged images with a tampered region left, the regions reported per image
    and the share of them that is mostly forged text, for every rule (`targets`: `reference_classes`)."""
    rows = []
    for min_score, min_share, min_tampered_share in itertools.product(SCORES, SHARES, TAMPERED_SHARES):
        metric = load_metric(TAMPERED_TEXT_DETECTION)
        found, forged_regions = 0, []
        for (class_map, scores), target in zip(readings, targets, strict=True):
            area = max(1, math.ceil(min_share * class_map.size))
            ruled, regions = confident_tampered_regions(torch.from_numpy(class_map.astype(np.int64)),
                                                        torch.from_numpy(scores), area, min_score,
                                                        min_tampered_share)  # fmt: skip
            ruled = ruled.numpy().astype(np.uint8)
            metric.add_batch(predictions=[ruled], references=[target])
            found += bool(regions)
            forged_regions += mostly_forged(ruled, target)
        figures = metric.compute()
        rows.append({"min_region_score": min_score, "min_region_share": min_share,
                     "min_tampered_share": min_tampered_share,
                     "tampered_f_score": figures["tampered_f_score"], "real_f_score": figures["real_f_score"],
                     "mf": figures["mf"],
                     "images_with_a_tampered_region": found / len(readings),
                     "regions_per_image": len(forged_regions) / len(readings),
                     "mostly_forged_regions": float(np.mean(forged_regions)) if forged_regions else None})  # fmt: skip
    return rows


def choose(rows: list[dict]) -> dict:
    """The row of `score_rules` with the highest mF; among equals, the strictest rule (the largest minimum tampered
    share, then region score, then region share)."""
    order = ("mf", "min_tampered_share", "min_region_score", "min_region_share")
    return max(rows, key=lambda row: tuple(row[key] for key in order))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="choose_tamper_rule.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a save_pretrained UPOCR folder")
    parser.add_argument("--data", required=True, help="a Tampered-IC13-layout folder (validation data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="save the chosen rule into the folder")
    args = parser.parse_args(argv)
    pipe = load_upocr_pipeline(args.model)
    processor = pipe.image_processor
    task_data = {TAMPERED_TEXT_DETECTION: Path(args.data)}
    dataset = load_task_datasets(task_data, {TAMPERED_TEXT_DETECTION: [args.split]})[TAMPERED_TEXT_DETECTION]
    with torch.inference_mode():
        readings = predictions(pipe, dataset, args.batch_size)
    rows = score_rules(readings, [reference_classes(dataset[i]["target"]) for i in range(len(dataset))])
    best = choose(rows)
    for row in rows:
        print(json.dumps(row))
    rule = {key: best[key] for key in ("min_region_score", "min_region_share", "min_tampered_share")}
    print(
        f"chosen on {len(dataset)} images of {args.data}: {rule} (mF {best['mf']:.4f}, tampered F "
        f"{best['tampered_f_score']:.4f}, real F {best['real_f_score']:.4f})"
    )
    if args.write:
        processor.tamper_region_rule = rule
        target = Path(args.model) / "preprocessor_config.json"
        atomic_write(target, lambda file: file.write(processor.to_json_string()), mode="w")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())

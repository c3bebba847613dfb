"""Evaluate a UPOCR model on a dataset folder with the paper's protocol and print the paper's table beside ours.

    python -m upocr_hf.evaluation --model DIR --task text-segmentation --data data/TextSeg [--split test]
        [--save-predictions DIR] [--output-json FILE]
    python -m upocr_hf.evaluation --baseline --task text-removal --data data/SCUT-EnsText   # the trivial baseline
    python -m upocr_hf.evaluation --model DIR --task text-removal --data DIR --readable-words   # + OCR figure
    python -m upocr_hf.evaluation --anchor own-mask --model DIR --task text-removal --data DIR  # cv2.inpaint anchor

Protocol: each image is resized to the model size (512×512 for the paper's model), predicted, and
the prediction is resized back to the image's original size (bilinear) and read out as its task's readout says —
clamped RGB for text removal, channel mean > 0.4 for segmentation, argmax for tampered text. The metrics are
the `evaluate` modules of `upocr_hf.metrics`. The figures are printed as a table with the paper's reported
UPOCR numbers and written as JSON.

`--readable-words` (text removal; ``pip install "upocr_hf[ocr]"``) adds the share of the words an OCR engine reads
in the inputs that it still reads in the outputs (:mod:`upocr_hf.metrics.readable_words`). `--anchor` scores a
classical inpainter instead of the model: OpenCV's ``cv2.inpaint`` (Telea) inside the model's own text mask
(``own-mask``, the segmentation read at the folder's threshold, dilated 3 px) or inside the dataset's true text
mask (``true-mask``): what a model's removal has to beat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .command_line import module_parser, unit_interval
from .data import DatasetFolderError, load_task_datasets
from .file_utils import atomic_write, check_model_location
from .image_processing_upocr import UpocrImageProcessor
from .metrics import load_metric
from .metrics.paper_results import format_results_table
from .metrics.readable_words import ReadableWords
from .modeling_upocr import UpocrModel
from .pipeline_upocr import UpocrPipeline
from .tasks import SEGMENTATION_THRESHOLD, get_task, scored_tasks


def _batches(dataset: Any, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(dataset), batch_size):
        yield [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]


def _check_options(task: str, **options: Any) -> None:
    """Refuse the scoring options that do not apply to `task`, naming them."""
    spec = get_task(task)
    if spec.metric is None:
        raise ValueError(f"no metric for task {task!r}; metrics exist for {scored_tasks()}")
    applies = {"keep_background": spec.text_mask, "readable_words": spec.text_mask,
               "region_rule": spec.readout == "class-map"}  # fmt: skip
    for name, value in options.items():
        if value and not applies[name]:
            kind = "tampered text detection" if name == "region_rule" else "text removal"
            raise ValueError(f"{name} applies to {kind} only, not {task!r}")


def _given_flags(**flags: bool) -> dict[str, bool]:
    return {name: True for name, value in flags.items() if value}


@torch.no_grad()
def evaluate_model(
    pipe: UpocrPipeline,
    dataset: Any,
    task: str,
    *,
    batch_size: int = 4,
    threshold: float | None = None,
    tile: bool = False,
    keep_background: bool = False,
    save_predictions: str | os.PathLike | None = None,
    progress: bool = True,
    readable_words: ReadableWords | None = None,
    region_rule: bool = False,
) -> dict[str, Any]:
    """Run a UPOCR pipeline over `dataset` (the uniform schema of `upocr_hf.data`) and compute the task's metrics.

    Returns the metric's `compute()` result plus `num_samples`. `keep_background` scores the pipeline's
    keep-background mode for text removal (pixels outside the detected text region copied from the input; not the
    paper's protocol). `threshold` reads the segmentation masks and the keep-background text region; `None`: the
    pipeline's own (the model folder's `segmentation_threshold`, the mode its users get). With `save_predictions`,
    each read-out (text-free image, text mask or colour class map) is written as `DIR/<name>.png`. With
    `readable_words` (text removal), its figures are added (`ReadableWords.compute`). A `pipe` whose
    ``uses_true_masks`` is true is also given the samples' text masks (``true_masks=``). `region_rule` (tampered
    text) reads the class maps under the model folder's tampered-region rule (`tamper_region_rule`), as the demo
    shows them, instead of the paper's plain argmax.
    """
    spec = get_task(task)
    _check_options(
        task, keep_background=keep_background, readable_words=readable_words, region_rule=region_rule
    )
    reads_a_mask = spec.readout == "mask" or keep_background
    options: dict[str, Any] = {"threshold": threshold} if reads_a_mask and threshold is not None else {}
    metric = load_metric(task, **(options if spec.readout == "mask" else {}))
    options.update(_given_flags(keep_background=keep_background, region_rule=region_rule))
    output_dir = Path(save_predictions) if save_predictions else None
    bar = tqdm(total=len(dataset), desc=f"evaluating {task}", disable=not progress)
    for samples in _batches(dataset, batch_size):
        if getattr(pipe, "uses_true_masks", False):
            options["true_masks"] = [s["mask"] for s in samples]
        results = pipe([s["image"] for s in samples], task=task, tile=tile, batch_size=batch_size, **options)
        results = results if isinstance(results, list) else [results]
        if readable_words is not None:
            for sample, result in zip(samples, results, strict=True):
                readable_words.add(sample["image"], result["image"])
        metric.add_batch(
            predictions=[r[spec.output_key] for r in results], references=[s["target"] for s in samples]
        )
        if output_dir is not None:
            for index, (sample, result) in enumerate(zip(samples, results)):
                name = sample.get("name") or f"sample_{index}"
                atomic_write(
                    output_dir / f"{name}.png",
                    lambda file, image=result["image"]: image.save(file, format="PNG"),
                )
        bar.update(len(samples))
    bar.close()
    figures = metric.compute()
    if readable_words is not None:
        figures.update(readable_words.compute())
    figures["num_samples"] = len(dataset)
    return figures


class TrivialBaseline:
    """The trivial baselines a model must beat, in the pipeline's result format: the input image unchanged for text
    removal ("identity"), no text for segmentation and all background for tampered text ("background")."""

    name = "trivial baseline"

    def __call__(self, images: Sequence[Image.Image], task: str, **options: Any) -> list[dict[str, Any]]:
        results = []
        for image in images:
            rgb = image.convert("RGB")
            blank = np.zeros((rgb.height, rgb.width), dtype=np.uint8)
            results.append({"image": rgb, "mask": blank.astype(bool), "class_map": blank})
        return results


class InpaintAnchor:
    """The classical anchor of text removal, in the pipeline's result format: OpenCV's Telea inpainting
    (``cv2.inpaint``, radius `radius`) inside a text mask dilated by `dilation` pixels. The mask is the model's own
    segmentation (`segment`: a UPOCR pipeline; read at its folder's threshold) or, with `segment` None, the
    dataset's true text mask (`uses_true_masks`). Needs ``opencv-python`` (in the ``[ocr]`` extra)."""

    def __init__(self, segment: UpocrPipeline | None = None, dilation: int = 3, radius: int = 3) -> None:
        import cv2

        self.cv2, self.segment, self.dilation, self.radius = cv2, segment, dilation, radius
        self.uses_true_masks = segment is None
        self.name = "cv2.inpaint in the " + ("true text mask" if segment is None else "model's own text mask")

    def __call__(self, images: Sequence[Image.Image], task: str, **options: Any) -> list[dict[str, Any]]:
        if self.segment is None:
            masks = [np.asarray(mask, dtype=bool) for mask in options["true_masks"]]
        else:
            found = self.segment(list(images), task="text-segmentation", tile=options.get("tile", False))
            masks = [
                np.asarray(r["mask"], dtype=bool) for r in (found if isinstance(found, list) else [found])
            ]
        kernel = self.cv2.getStructuringElement(self.cv2.MORPH_ELLIPSE, (2 * self.dilation + 1,) * 2)
        results = []
        for image, mask in zip(images, masks, strict=True):
            rgb = np.asarray(image.convert("RGB"))
            region = self.cv2.dilate(mask.astype(np.uint8) * 255, kernel)
            filled = self.cv2.inpaint(rgb, region, self.radius, self.cv2.INPAINT_TELEA)
            results.append({"image": Image.fromarray(filled), "mask": region > 0})
        return results


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _model_pipeline(args: argparse.Namespace) -> tuple[UpocrPipeline, str]:
    """The pipeline of `--model` in its folder's inference mode, and the record's protocol text for that mode."""
    model = UpocrModel.from_pretrained(args.model).eval()
    processor = UpocrImageProcessor.for_model(args.model)
    pipe = UpocrPipeline(model=model, image_processor=processor, device=args.device)
    protocol = "tiled" if args.tile else f"resize to {processor.size['height']}x{processor.size['width']}"
    threshold = processor.segmentation_threshold if args.threshold is None else args.threshold
    if args.keep_background:
        protocol += (
            f", keep background (outside the text region detected at threshold {threshold:g}, the input)"
        )
    elif get_task(args.task).readout == "mask":
        protocol += f", threshold {threshold:g}"
    elif args.region_rule:
        rule = processor.tamper_region_rule
        if not rule:
            raise SystemExit(
                f"--region-rule: {args.model} has no tamper_region_rule in its preprocessor_config.json"
            )
        protocol += ", region rule " + ", ".join(f"{k} {v:g}" for k, v in sorted(rule.items()))
    return pipe, protocol


def _parser() -> argparse.ArgumentParser:
    parser = module_parser("upocr_hf.evaluation", __doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model", help="a save_pretrained UPOCR folder (default: the model shipped with the package)"
    )
    source.add_argument(
        "--baseline",
        action="store_true",
        help="score the trivial baseline instead (identity / no text / background)",
    )
    parser.add_argument(
        "--anchor",
        choices=("own-mask", "true-mask"),
        default=None,
        help="text removal: score cv2.inpaint (Telea) inside the --model's own text mask (dilated 3 px) or the "
        "dataset's true text mask instead of the model",
    )
    parser.add_argument(
        "--region-rule",
        action="store_true",
        help="tampered text: read the class maps under the model folder's tampered-region rule (as the demo does)",
    )
    parser.add_argument(
        "--readable-words",
        action="store_true",
        help='text removal: also count the input words an OCR engine still reads in the output (pip install "upocr_hf[ocr]")',
    )
    parser.add_argument("--task", required=True, choices=scored_tasks())
    parser.add_argument(
        "--data", required=True, help="the task's dataset folder (the public datasets' folder layouts)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--threshold",
        type=unit_interval,
        default=None,
        help="segmentation threshold, also of the keep-background text region (default: the model folder's "
        f"segmentation_threshold; the paper's {SEGMENTATION_THRESHOLD} where it says none)",
    )
    parser.add_argument(
        "--tile", action="store_true", help="tiled native-resolution inference (not the protocol)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--keep-background", action="store_true",
        help="text removal in the pipeline's keep-background mode (outside the detected text, the input; not the protocol)",
    )  # fmt: skip
    parser.add_argument("--save-predictions", default=None, help="folder for the predicted images")
    parser.add_argument(
        "--output-json", default=None, help="where to write the figures (default: print only)"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _scorer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Any, str, str]:
    """What the command scores (a model's pipeline, the trivial baseline or an anchor), its table label and the
    record's protocol text; usage errors exit through `parser`."""
    if args.keep_background and (not get_task(args.task).text_mask or args.baseline or args.anchor):
        parser.error("--keep-background scores a model's text removal (--task text-removal, not --baseline)")
    if (args.anchor or args.readable_words) and not get_task(args.task).text_mask:
        parser.error("--anchor and --readable-words apply to text removal (--task text-removal)")
    if args.region_rule and (args.baseline or get_task(args.task).readout != "class-map"):
        parser.error(
            "--region-rule scores a model's tampered text detection (--task tampered-text-detection)"
        )
    if args.anchor == "own-mask" and args.baseline:
        parser.error("--anchor own-mask uses the --model's text mask; it cannot be combined with --baseline")
    if args.anchor == "true-mask":
        return InpaintAnchor(), "cv2.inpaint, true mask", "none (anchor: cv2.inpaint in the true mask)"
    if args.baseline:
        return TrivialBaseline(), TrivialBaseline.name, "none (trivial baseline)"
    if args.model is None:
        from . import default_model_path

        args.model = default_model_path() or parser.error(
            "--model is required (this installation has no shipped model)"
        )
    try:
        check_model_location(args.model)
    except FileNotFoundError as error:
        parser.error(str(error))
    pipe, protocol = _model_pipeline(args)
    if args.anchor == "own-mask":
        label = f"cv2.inpaint, own mask of {Path(args.model).name}"
        return (
            InpaintAnchor(segment=pipe),
            label,
            f"anchor: cv2.inpaint in the model's text mask dilated 3 px; mask {protocol}",
        )
    return pipe, f"ours ({Path(args.model).name})", protocol


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    pipe, label, protocol = _scorer(parser, args)
    try:
        dataset = load_task_datasets({args.task: Path(args.data)}, {args.task: [args.split]})[args.task]
    except DatasetFolderError as error:  # a broken folder, an unknown Hub id: one line naming it
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    figures = evaluate_model(
        pipe, dataset, args.task, batch_size=args.batch_size, threshold=args.threshold,
        tile=args.tile, keep_background=args.keep_background, save_predictions=args.save_predictions,
        progress=not args.no_progress, readable_words=ReadableWords() if args.readable_words else None,
        region_rule=args.region_rule,
    )  # fmt: skip
    print(format_results_table(args.task, figures, label=label))
    from .data.synthetic import describe_synthetic_split

    described = describe_synthetic_split(args.data, args.split) if Path(args.data).is_dir() else None
    record = {
        "model": "trivial baseline" if args.baseline else (label if args.anchor else str(args.model)),
        "task": args.task, "data": str(args.data), **({"dataset": described} if described else {}),
        "anchor": args.anchor,
        "split": args.split, "protocol": protocol, "keep_background": args.keep_background,
        "region_rule": args.region_rule,
        "metrics": _json_ready(figures),
    }  # fmt: skip
    text = json.dumps(record, indent=2)
    if args.output_json:
        target = atomic_write(args.output_json, lambda file: file.write(text), mode="w")
        print(f"wrote {target}")
    else:
        print(text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

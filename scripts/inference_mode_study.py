"""Which inference mode should a model's users get by default? Score every mode on held-out data and print a table.

    python scripts/inference_mode_study.py --model upocr_hf/default_model --data runs/default-model/data \
        --large runs/default-model/study/data-large --out runs/default-model/study

Each of the three image sets holds the style-held-out split's fonts, photographs and forgery method:

- `held-out` — the held-out split as it is (each image one model-size tile);
- `mosaic` — 3×3 mosaics of those images: the same words, three times smaller relative to the image, like a
  high-resolution page or a wide shot with much small text;
- `large` — images rendered at a larger size (`--large`, e.g. 1024×768), their words as large relative to the image
  as in training, like a phone photo of a sign.

Modes: resize to a processor size (the paper's protocol at each size) or native tiles of a tile size. Text removal
is scored with and without keep-background; segmentation at several thresholds from one forward (the read-out is
`score > threshold`, so the scores of one run give every threshold's mask). Figures go to `study.jsonl` (one record per
line, written as they come: a stopped study resumes) and a Markdown table, `study.md`. Tiles are not run on
images no larger than one tile: there they give the native-size result.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from transformers.image_utils import SizeDict

from upocr_hf.data.synthetic import load_synthetic_folders
from upocr_hf.evaluation import _json_ready, evaluate_model
from upocr_hf.file_utils import atomic_write
from upocr_hf.image_processing_upocr import UpocrImageProcessor
from upocr_hf.metrics import load_metric
from upocr_hf.modeling_upocr import UpocrModel
from upocr_hf.pipeline_upocr import UpocrPipeline


def mosaics(dataset: Any, grid: int = 3) -> list[dict[str, Any]]:
    """Rows of `dataset` pasted `grid`×`grid` into larger images (image, target and mask alike); leftovers dropped."""
    per = grid * grid
    rows = []
    for first in range(0, len(dataset) - per + 1, per):
        parts = [dataset[i] for i in range(first, first + per)]
        width, height = parts[0]["image"].size
        row: dict[str, Any] = {"name": f"mosaic_{first // per:03d}", "task": parts[0]["task"]}
        for key in ("image", "target", "mask"):
            if parts[0].get(key) is None:
                row[key] = None
                continue
            canvas = Image.new(parts[0][key].mode, (width * grid, height * grid))
            for index, part in enumerate(parts):
                tile = part[key].resize((width, height)) if part[key].size != (width, height) else part[key]
                canvas.paste(tile, ((index % grid) * width, (index // grid) * height))
            row[key] = canvas
        rows.append(row)
    return rows


def modes(sizes: Sequence[int], tile_sizes: Sequence[int]) -> Iterator[dict[str, Any]]:
    for size in sizes:
        yield {"mode": f"resize {size}", "size": size, "tile": False}
    for size in tile_sizes:
        yield {"mode": f"tiles {size}", "size": size, "tile": True}


def pipeline_for(model: UpocrModel, model_dir: str, size: int) -> UpocrPipeline:
    processor = UpocrImageProcessor.for_model(model_dir)
    processor.size = SizeDict(height=size, width=size)
    return UpocrPipeline(model=model, image_processor=processor, device="cpu")


def segmentation_by_threshold(
    pipe: UpocrPipeline, rows: Any, thresholds: Sequence[float], tile: bool
) -> dict[float, dict[str, Any]]:
    """One forward per image, every threshold's figures (the read-out is `scores > threshold`)."""
    metrics = {t: load_metric("text-segmentation", threshold=t) for t in thresholds}
    for index in range(len(rows)):
        row = rows[index]
        result = pipe(row["image"], task="text-segmentation", tile=tile)
        for threshold, metric in metrics.items():
            metric.add_batch(predictions=[result["scores"] > threshold], references=[row["target"]])
    return {t: metric.compute() for t, metric in metrics.items()}


def study(
    model_dir: str,
    sets: dict[str, dict[str, Any]],
    sizes: Sequence[int],
    tile_sizes: Sequence[int],
    thresholds: Sequence[float],
    journal: Path,
) -> list[dict[str, Any]]:
    """One record per (set, task, mode, variant) with the task's figures, each appended to `journal` (JSON lines)
    as soon as it is known; records already there are kept, not recomputed, so a stopped study resumes."""
    records = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    done = {(r["set"], r["task"], r["mode"]) for r in records}
    model = UpocrModel.from_pretrained(model_dir).eval()
    for mode in modes(sizes, tile_sizes):
        pipe = pipeline_for(model, model_dir, mode["size"])
        for set_name, by_task in sets.items():
            for task, rows in by_task.items():
                if (set_name, task, mode["mode"]) in done or (mode["tile"] and _fits(rows, mode["size"])):
                    continue  # tiles on images no larger than a tile: one window, the native-size result
                base = {"set": set_name, "task": task, "mode": mode["mode"], "num_images": len(rows)}
                new = [{**base, **result} for result in _score(pipe, rows, task, mode, thresholds)]
                with journal.open("a") as file:
                    file.writelines(json.dumps(_json_ready(r)) + "\n" for r in new)
                records.extend(new)
                print(f"{set_name:9} {task:24} {mode['mode']:11} done", flush=True)
    return records


def _fits(rows: Any, tile_size: int) -> bool:
    return all(max(rows[i]["image"].size) <= tile_size for i in range(len(rows)))


def _score(
    pipe: UpocrPipeline, rows: Any, task: str, mode: dict[str, Any], thresholds: Sequence[float]
) -> Iterator[dict[str, Any]]:
    if task == "text-segmentation":
        by_threshold = segmentation_by_threshold(pipe, rows, thresholds, mode["tile"])
        for threshold, figures in by_threshold.items():
            yield {"variant": f"threshold {threshold:g}", "metrics": figures}
        return
    for keep_background in (False, True) if task == "text-removal" else (False,):
        figures = evaluate_model(
            pipe, rows, task, batch_size=1, tile=mode["tile"], keep_background=keep_background, progress=False
        )
        yield {"variant": "keep background" if keep_background else "", "metrics": figures}


def table(records: Sequence[dict[str, Any]]) -> str:
    lines = ["| set | task | mode | variant | figures |", "|---|---|---|---|---|"]
    for r in records:
        m = r["metrics"]
        if r["task"] == "text-removal":
            figures = f"PSNR {m['psnr']:.2f} dB, MSSIM {m['mssim']:.2f}"
        elif r["task"] == "text-segmentation":
            figures = f"fgIoU {m['fg_iou']:.3f}, F {m['f_score']:.3f}"
        else:
            figures = f"mF {m['mf']:.3f}, tampered F {m['tampered_f_score']:.3f}"
        lines.append(f"| {r['set']} | {r['task']} | {r['mode']} | {r['variant'] or '—'} | {figures} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--data", required=True, help="folder with the held-out split's three dataset folders"
    )
    parser.add_argument("--large", default=None, help="the same, rendered larger (optional)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--tile-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per task and set")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    held_out = load_synthetic_folders(args.data, split=args.split)
    limit = args.limit or max(len(ds) for ds in held_out.values())
    sets = {
        "held-out": {t: ds.select(range(min(limit, len(ds)))) for t, ds in held_out.items()},
        "mosaic": {t: mosaics(ds)[: max(1, limit // 9)] for t, ds in held_out.items()},
    }
    if args.large:
        sets["large"] = {
            t: ds.select(range(min(limit, len(ds))))
            for t, ds in load_synthetic_folders(args.large, split=args.split).items()
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = study(args.model, sets, args.sizes, args.tile_sizes, args.thresholds, out / "study.jsonl")
    atomic_write(out / "study.md", lambda file: file.write(table(records)), mode="w")
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

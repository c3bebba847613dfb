"""Benchmark of inference speed and training memory (not a test): one table of ratios, each against a baseline
measured in the same run, on this machine.

- **model**: the paper's model (random weights with randomised post-norms, so every block does real work) at
  512×512, batch 1, in float32 and under bf16 autocast, against the modeling code of git revision `--baseline`
  (default: the main branch before the speed work) with the same weights. The two alternate, `--repeats` rounds of
  one timed forward each after a warm-up; reported are the best of each (on a shared machine slow outliers are
  other load, not the code) and the median of the rounds' own ratios. Also the largest float32 difference between
  the two outputs, and under bf16 each code's distance from its own float32 output.
- **keep-background**: the shipped default model removing text at native resolution (tiles) and keeping the
  background, on two `--width`×`--height` images: a photo with a sign and a page with a paragraph. Before: the old
  model code, one tiled pass per task. Now: the pipeline's text-segmentation pass, then the removal only in the
  windows that hold text; against both prompts in every window (the code before that). Also where a pipeline
  run's time goes (inside the model against the rest) and the resize protocol for scale.
- **training memory**: peak resident memory of a training step of the paper's config (one 512² image per task,
  forward + losses + backward + AdamW) with gradient checkpointing against without (`bench/bench_train.py`, one
  process each). `--skip-training` leaves this out (it takes minutes and ~18 GiB).

    python bench/bench_inference.py [--repeats 5] [--json out.json] [--baseline REV] [--skip-training]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_space import cpu_name  # noqa: E402  (bench/ is this script's own folder on sys.path)

from upocr_hf import UpocrConfig, UpocrModel  # noqa: E402
from upocr_hf.keep_background import tiled_keep_background_removal  # noqa: E402
from upocr_hf.tiling import tiled_predict, tiled_predict_tasks  # noqa: E402

#: main before the speed work of this benchmark (separate q/k/v GEMMs, position bias recomputed in every forward)
BASELINE_REVISION = "03237f6"


def baseline_model_class(revision: str) -> type:
    """`UpocrModel` as `upocr_hf/modeling_upocr.py` was at `revision` (read with git, imported beside today's)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:upocr_hf/modeling_upocr.py"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("upocr_hf._baseline_modeling")
    module.__package__ = "upocr_hf"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:upocr_hf/modeling_upocr.py", "exec"), module.__dict__)
    return module.UpocrModel


def paper_models(revision: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    config = UpocrConfig(drop_path_rate=0.0, decoder_drop_path_rate=0.0)
    model = UpocrModel(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):  # post-norms start at zero: every block an identity
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.05)
    baseline = baseline_model_class(revision)(config).eval()
    baseline.load_state_dict(model.state_dict())
    return model, baseline


def alternating_times(functions: dict[str, callable], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function over `repeats` alternating rounds (after one warm-up call each)."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def comparison(times: dict[str, list[float]], before: str, now: str) -> dict:
    """Best times and two speed-ups: best against best, and the median of the rounds' own ratios (the machine's
    speed drifts between rounds on shared hardware; within a round both ran in the same conditions)."""
    ratios = [b / n for b, n in zip(times[before], times[now])]
    return {
        "before_s": round(min(times[before]), 3),
        "now_s": round(min(times[now]), 3),
        "speed-up": round(min(times[before]) / min(times[now]), 2),
        "speed-up_median_round": round(statistics.median(ratios), 2),
    }


def bench_model(args: argparse.Namespace) -> list[dict]:
    model, baseline = paper_models(args.baseline)
    image = torch.rand(1, 3, 512, 512)
    rows, float32 = [], {}
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.inference_mode(), autocast:
            models = {"before": baseline, "now": model}
            times = alternating_times(
                {name: lambda m=m: m(image, task=0) for name, m in models.items()}, args.repeats
            )
            outputs = {name: m(image, task=0).prediction.float() for name, m in models.items()}
        row = {"figure": f"paper model 512², batch 1, {precision}", **comparison(times, "before", "now")}
        if precision == "fp32":
            float32 = outputs
            row["max_abs_difference"] = float(
                f"{(outputs['now'] - outputs['before']).abs().max().item():.1e}"
            )
        else:  # bf16 rounding: each code's bf16 output against its own float32 output
            for name in models:
                error = (outputs[name] - float32[name]).abs().max().item()
                row[f"bf16_error_{name}"] = float(f"{error:.2g}")
        rows.append(row)
    return rows


def tiles_per_task(model: torch.nn.Module, run: Callable[[], Any]) -> collections.Counter:
    """How many tiles `run()` sends through `model` with each task prompt."""
    tiles = collections.Counter()

    def count(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        tiles.update({str(kwargs["task"]): len(args[0])})

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return tiles


class ModelTimer:
    """Forward hooks that add up the time spent inside the model's calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        model.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
        model.register_forward_hook(lambda *_: self._add())

    def _add(self) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def photo_with_a_sign(height: int, width: int) -> np.ndarray:
    """scikit-image's coffee photo at `width`×`height` with a two-line sign in its top-left part."""
    from PIL import Image, ImageDraw, ImageFont
    from skimage import data

    image = Image.fromarray(data.coffee()).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    unit = max(8, height // 24)
    draw.rectangle((unit * 2, unit * 2, unit * 15, unit * 7), fill=(40, 30, 25))
    font = ImageFont.load_default(size=unit * 2)
    draw.text((unit * 3, unit * 2.5), "FRESH COFFEE", font=font, fill=(240, 235, 220))
    draw.text((unit * 3, unit * 4.5), "open 7 to 19", font=font, fill=(240, 200, 80))
    return np.asarray(image)


def page_with_a_paragraph(height: int, width: int) -> np.ndarray:
    """A `width`×`height` off-white page with eight lines of dark text in its top part, as in a scan."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), (250, 250, 248))
    draw = ImageDraw.Draw(image)
    unit = max(8, height // 38)
    font = ImageFont.load_default(size=unit)
    for line in range(8):
        text = f"Minutes of the meeting held on 3 March, item {line + 1}"
        draw.text((unit * 3, unit * (3 + 1.5 * line)), text, font=font, fill=(20, 20, 20))
    return np.asarray(image)


def bench_keep_background(args: argparse.Namespace) -> list[dict]:
    from transformers import pipeline

    folder = ROOT / "upocr_hf" / "default_model"
    pipe = pipeline("upocr", model=str(folder), device="cpu")
    baseline = baseline_model_class(args.baseline).from_pretrained(folder).eval()
    photo = photo_with_a_sign(args.height, args.width)
    rows = []
    for name, image in (
        ("photo with a sign", photo),
        ("page of text", page_with_a_paragraph(args.height, args.width)),
    ):
        figure = f"keep-background tiles, default model, {args.width}×{args.height} {name}"
        rows += keep_background_rows(pipe, baseline, image, figure, args)
    with torch.inference_mode():
        timer = ModelTimer(pipe.model)
        start = time.perf_counter()
        pipe(photo, task="text-removal", tile=True, keep_background=True, batch_size=args.tile_batch)
        end_to_end = time.perf_counter() - start
        inside, calls = timer.seconds, timer.calls  # before the resize runs below add to them
        resized = min(
            alternating_times({"resize": lambda: pipe(photo, task="text-removal")}, args.repeats)["resize"]
        )
    rows.append({
        "figure": "a whole pipeline run on the photo: share of the time inside the model",
        "now_s": round(end_to_end, 3),
        "model_share": round(inside / end_to_end, 3),
        "model_calls": calls,
        "resize_protocol_s": round(resized, 3),
    })  # fmt: skip
    return rows


def keep_background_rows(
    pipe: Any, baseline: torch.nn.Module, image: np.ndarray, figure: str, args: argparse.Namespace
) -> list[dict]:
    """One image's tiled keep-background model calls: old code (a pass per task), both prompts in every window
    (the code before the text-first pass), and today's pipeline (the text, then the removal where it is)."""
    inputs = pipe.preprocess(image, task="text-removal", tile=True, keep_background=True)
    pixels, meta = inputs["pixel_values"], inputs["meta"]
    tasks = ["text-removal", "text-segmentation"]
    options = dict(tile_size=pipe.image_processor.size.height, batch_size=args.tile_batch)
    threshold = pipe.image_processor.segmentation_threshold

    def text_first() -> tuple[torch.Tensor, torch.Tensor]:
        region = lambda text, _: pipe._text_region(text, meta, threshold, None)  # noqa: E731
        return tiled_keep_background_removal(pipe.model, pixels, tasks[0], region, options)

    with torch.inference_mode():
        times = alternating_times(
            {
                "before": lambda: [tiled_predict(baseline, pixels, task, **options) for task in tasks],
                "every window": lambda: tiled_predict_tasks(pipe.model, pixels, tasks, **options),
                "text first": text_first,
            },
            args.repeats,
        )
        tiles = tiles_per_task(pipe.model, text_first)
    return [
        {
            "figure": f"{figure} (model calls, {args.tile_batch} tiles/call): before = old code, a pass per task",
            **comparison(times, "before", "text first"),
        },
        {
            "figure": f"  of which the text first, then removal in the {tiles['text-removal']} of "
            f"{tiles['text-segmentation']} windows that hold it, against both prompts in every window",
            **comparison(times, "every window", "text first"),
        },
    ]


def bench_training_memory(args: argparse.Namespace) -> list[dict]:
    def peak(checkpointing: bool) -> dict:
        command = [sys.executable, str(ROOT / "bench" / "bench_train.py"), "--child", "--configs", "paper",
                   "--size", "512", "--batch-size-per-task", "1", "--steps", "1"]  # fmt: skip
        command += ["--gradient-checkpointing"] if checkpointing else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return json.loads(output.strip().splitlines()[-1])

    without, with_checkpointing = peak(False), peak(True)
    return [{
        "figure": "training step, paper config, 3×512², peak RSS GiB: without → with gradient checkpointing",
        "without": round(without["peak_rss_gib"], 2),
        "with": round(with_checkpointing["peak_rss_gib"], 2),
        "ratio": round(with_checkpointing["peak_rss_gib"] / without["peak_rss_gib"], 2),
        "seconds_per_step": [round(without["seconds_per_step"], 1), round(with_checkpointing["seconds_per_step"], 1)],
    }]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--baseline", default=BASELINE_REVISION, help="git revision of the 'before' model code"
    )
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tile-batch", type=int, default=4, help="tiles per model call")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    rows = bench_model(args) + bench_keep_background(args)
    if not args.skip_training:
        rows += bench_training_memory(args)
    report = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "baseline_revision": args.baseline,
        "rows": rows,
    }
    print(f"{report['cpu']}, {report['torch_threads']} threads, torch {report['torch']}")
    for row in rows:
        figures = ", ".join(f"{key} {value}" for key, value in row.items() if key != "figure")
        print(f"{row['figure']}: {figures}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

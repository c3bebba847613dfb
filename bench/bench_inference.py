"""Benchmark of inference speed and training memory (not a test): one table of ratios, each against a baseline
measured in the same run, on this machine.

- **model**: the paper's model (random weights with randomised post-norms, so every block does real work) at
  512×512, batch 1, in float32 and under bf16 autocast, against the modeling code of git revision `--baseline`
  (default: the main branch before the speed work) with the same weights. The two alternate, `--repeats` rounds of
  one timed forward each after a warm-up; reported are the best of each (on a shared machine slow outliers are
  other load, not the code) and the median of the rounds' own ratios. Also the largest float32 difference between
  the two outputs, and under bf16 each code's distance from its own float32 output.
- **keep-background**: the shipped default model removing text from a `--width`×`--height` photo at native
  resolution (tiles) and keeping the background. Before: the old model code, one tiled pass per task. Now: today's
  code, the removal and text-segmentation prompts in one batched forward per tile batch; and that batching alone.
  Also where a pipeline run's time goes (inside the model against the rest) and the resize protocol for scale.
- **training memory**: peak resident memory of a training step of the paper's config (one 512² image per task,
  forward + losses + backward + AdamW) with gradient checkpointing against without (`bench/bench_train.py`, one
  process each). `--skip-training` leaves this out (it takes minutes and ~18 GiB).

    python bench/bench_inference.py [--repeats 5] [--json out.json] [--baseline REV] [--skip-training]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_space import cpu_name  # noqa: E402  (bench/ is this script's own folder on sys.path)

from upocr_hf import UpocrConfig, UpocrModel  # noqa: E402
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


class ModelTimer:
    """Forward hooks that add up the time spent inside the model's calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        model.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
        model.register_forward_hook(lambda *_: self._add())

    def _add(self) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def bench_keep_background(args: argparse.Namespace) -> list[dict]:
    from transformers import pipeline

    folder = ROOT / "upocr_hf" / "default_model"
    pipe = pipeline("upocr", model=str(folder), device="cpu")
    model = pipe.model
    baseline = baseline_model_class(args.baseline).from_pretrained(folder).eval()
    size = pipe.image_processor.size.height
    photo = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    pixels = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    tasks = ["text-removal", "text-segmentation"]
    options = dict(tile_size=size, batch_size=args.tile_batch)
    with torch.inference_mode():
        times = alternating_times(
            {
                "before": lambda: [tiled_predict(baseline, pixels, task, **options) for task in tasks],
                "two passes": lambda: [tiled_predict(model, pixels, task, **options) for task in tasks],
                "one pass": lambda: tiled_predict_tasks(model, pixels, tasks, **options),
            },
            args.repeats,
        )
        timer = ModelTimer(model)
        start = time.perf_counter()
        pipe(photo, task="text-removal", tile=True, keep_background=True, batch_size=args.tile_batch)
        end_to_end = time.perf_counter() - start
        resized = min(
            alternating_times({"resize": lambda: pipe(photo, task="text-removal")}, args.repeats)["resize"]
        )
    figure = f"keep-background tiles, default model, {args.width}×{args.height}, {args.tile_batch} tiles/call"
    return [
        {
            "figure": f"{figure} (model calls): before = old code, a pass per task",
            **comparison(times, "before", "one pass"),
        },
        {
            "figure": "  of which one batched pass for both prompts, against a pass per task (today's code)",
            **comparison(times, "two passes", "one pass"),
        },
        {
            "figure": "  a whole pipeline run of it: share of the time inside the model",
            "now_s": round(end_to_end, 3),
            "model_share": round(timer.seconds / end_to_end, 3),
            "model_calls": timer.calls,
            "resize_protocol_s": round(resized, 3),
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

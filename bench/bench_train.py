"""Seconds per training step and peak memory of UPOCR on this machine (forward + losses + backward + AdamW step).

    python bench/bench_train.py                       # tiny and paper configs, 1 image per task at 512×512
    python bench/bench_train.py --configs tiny --batch-size-per-task 8 --size 256
    python bench/bench_train.py --configs compact --size 256 --batch-size-per-task 4 --modes eager compile compile+bf16

``--modes`` compares eager fp32 with ``torch.compile`` (inductor; compile time reported apart) and bf16 autocast.

Each configuration runs in its own process so that the peak resident memory (ru_maxrss) is its own. Batches are
random tensors shaped like the multi-task batches of train.py (one batch per task, concatenated); the perceptual
loss is off (VGG-16 ImageNet weights are not available offline) unless --perceptual random or craft (CRAFT's
text-trained VGG16-BN, from the ``[train]`` extra); ``--perceptual-sizes 0 192 128`` compares the perceptual/style
terms at the crop's own size (0) against images shrunk to that many pixels:

    python bench/bench_train.py --configs compact --size 384 --batch-size-per-task 4 --modes bf16 \
        --perceptual craft --perceptual-sizes 0 192 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MODES = ("eager", "compile", "bf16", "compile+bf16")


def measure(
    config: str,
    size: int,
    per_task: int,
    steps: int,
    perceptual: str,
    checkpointing: bool,
    mode: str = "eager",
    perceptual_size: int = 0,
) -> dict:
    import contextlib

    import torch

    from upocr_hf.losses import UpocrLoss
    from upocr_hf.tasks import DEFAULT_TASKS
    from upocr_hf.training import build_model, enable_activation_checkpointing, optimizer_param_groups

    torch.manual_seed(0)
    model = build_model("scratch", config, DEFAULT_TASKS).train()
    if checkpointing:
        enable_activation_checkpointing(model)
    loss_fn = UpocrLoss(DEFAULT_TASKS, perceptual=perceptual, perceptual_size=perceptual_size or None)
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, 5e-4), lr=5e-4)
    batch_size = per_task * len(DEFAULT_TASKS)
    pixel_values = torch.rand(batch_size, 3, size, size)
    labels = torch.rand(batch_size, 3, size, size)
    text_mask = (torch.rand(batch_size, 1, size, size) > 0.8).float()
    ignore_mask = torch.rand(batch_size, 1, size, size) > 0.95
    task_ids = torch.arange(len(DEFAULT_TASKS)).repeat_interleave(per_task)
    forward = torch.compile(model) if "compile" in mode else model
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in mode else contextlib.nullcontext
    )
    times = []
    for _ in range(steps + 1):  # the first step warms up (and compiles) and is not timed
        start = time.perf_counter()
        with autocast():
            outputs = forward(pixel_values, task=task_ids)
        loss = loss_fn(
            outputs.multi_scale_predictions, pixel_values, labels, text_mask, ignore_mask, task_ids
        ).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {
        "config": config,
        "mode": mode,
        "perceptual": perceptual,
        "perceptual_size": perceptual_size or size,
        "first_step_seconds": times[0],
        "parameters": model.num_parameters(),
        "image_size": size,
        "images_per_step": batch_size,
        "gradient_checkpointing": checkpointing,
        "seconds_per_step": sum(times[1:]) / steps,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size-per-task", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--perceptual", default="off", choices=["off", "random", "craft"])
    parser.add_argument("--perceptual-sizes", nargs="+", type=int, default=[0], help="0: the crop's own size")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=MODES)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(
            args.configs[0], args.size, args.batch_size_per_task, args.steps, args.perceptual,
            args.gradient_checkpointing, args.modes[0], args.perceptual_sizes[0],
        )  # fmt: skip
        print(json.dumps(result))
        return
    results = []
    runs = [(c, m, p) for c in args.configs for m in args.modes for p in args.perceptual_sizes]
    for config, mode, perceptual_size in runs:
        command = [
            sys.executable, __file__, "--child", "--configs", config, "--size", str(args.size),
            "--batch-size-per-task", str(args.batch_size_per_task), "--steps", str(args.steps),
            "--perceptual", args.perceptual, "--modes", mode, "--perceptual-sizes", str(perceptual_size),
        ] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    if len(results) > 1:
        base = results[0]
        for other in results[1:]:
            print(
                f"{other['config']} {other['mode']} perceptual {other['perceptual_size']} / {base['config']} "
                f"{base['mode']} perceptual {base['perceptual_size']}: "
                f"{other['seconds_per_step'] / base['seconds_per_step']:.1f}× time per step, "
                f"{other['peak_rss_gib'] / base['peak_rss_gib']:.1f}× peak memory"
            )


if __name__ == "__main__":
    main()

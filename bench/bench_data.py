"""Benchmark of the data pipeline (not a test).

1. Synthetic generator: samples/second at 512x512 with 1 and 2 worker processes, rendering and writing all
   three layouts (PNG), and the render alone.
2. Folder loaders: seconds to load (validate + convert) the generated folders into datasets.
3. Training loader: samples/second of the multi-task loader with the §4 augmentation at 512x512
   (one batch of ``--batch-size`` per task per step), with 0 and ``--workers`` DataLoader workers.

    python bench/bench_data.py [--num 48] [--steps 12] [--batch-size 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from upocr_hf.data.augment import UpocrAugment
from upocr_hf.data.multitask import MultiTaskDataLoader
from upocr_hf.data.synthetic import SyntheticConfig, generate_folders, load_synthetic_folders, render_sample


def bench_generator(out: Path, num: int, size: int) -> dict[str, float]:
    cfg = SyntheticConfig(size=(size, size)).resolved()
    render_sample(0, 0, cfg)  # warm the font and photo caches
    t0 = time.perf_counter()
    for i in range(num):
        render_sample(i, 0, cfg)
    results = {"render_only_1proc": num / (time.perf_counter() - t0)}
    for workers in (1, 2):
        target = out / f"gen{workers}"
        t0 = time.perf_counter()
        generate_folders(target, num, size=size, seed=0, num_workers=workers, config=cfg)
        results[f"render_and_write_{workers}proc"] = num / (time.perf_counter() - t0)
    return results


def bench_loader(
    root: Path, size: int, steps: int, batch_size: int, workers: int, cache: str
) -> dict[str, float]:
    t0 = time.perf_counter()
    data = load_synthetic_folders(root, cache_dir=cache)
    results = {
        "folder_load_seconds": time.perf_counter() - t0,
        "rows_per_task": float(len(next(iter(data.values())))),
    }
    for ds in data.values():
        ds.set_transform(UpocrAugment(size))
    for num_workers in sorted({0, workers}):
        loader = MultiTaskDataLoader(data, batch_size, seed=0, num_workers=num_workers)
        it = iter(loader)
        next(it)  # start-up (worker launch, first batch) is not timed
        t0 = time.perf_counter()
        for _ in range(steps):
            batch = next(it)
        dt = time.perf_counter() - t0
        results[f"loader_samples_per_s_{num_workers}workers"] = steps * batch["pixel_values"].shape[0] / dt
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=48, help="samples to generate per measurement")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12, help="timed loader steps")
    parser.add_argument("--batch-size", type=int, default=8, help="per task (the paper's 8)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads of the main process (1 avoids contention on small machines)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        gen = bench_generator(tmp_path, args.num, args.size)
        load = bench_loader(
            tmp_path / "gen1", args.size, args.steps, args.batch_size, args.workers, str(tmp_path / "cache")
        )
    report = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU(s), torch threads "
        f"{args.torch_threads}",
        "size": args.size,
        **gen,
        **load,
    }
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark of inference (not a test): the paper's resize protocol against high-resolution tiling.

For each model config (randomly initialised; speed does not depend on the weights) the `upocr` pipeline processes
one `--height`×`--width` photo-sized image end to end (pre-processing, model, post-processing) for text removal:

- resize: the image is resized to the model size, predicted once and resized back (the paper's protocol);
- tile: overlapping model-size tiles at native resolution (overlap = tile/4), blended;
- tile + keep-background: the same plus the text-segmentation pass that defines the text region.

Configs: "tiny" (the test suite's, 64×64 tiles) and "small-reference" (the shared reference fixture's shape:
embed_dim 16, depths 2/2/2/2 and 2/2/2/2/2, windows 16 and 8, 512×512 tiles).

    python bench/bench_inference.py [--height 1536] [--width 2048] [--repeats 2] [--tile-batch 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch
from transformers import pipeline

from upocr_hf import UpocrConfig, UpocrModel
from upocr_hf.configuration_upocr import CONFIG_PRESETS
from upocr_hf.tiling import tile_starts

CONFIGS: dict[str, dict] = {
    "tiny": {**CONFIG_PRESETS["tiny"], "image_size": 64},
    "small-reference": {**CONFIG_PRESETS["small"], "image_size": 512},
}


def timed(function, repeats: int) -> float:
    """Best wall time of `repeats` runs, in seconds (after one warm-up run)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bench_config(name: str, kwargs: dict, image: np.ndarray, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = UpocrModel(UpocrConfig(**kwargs, drop_path_rate=0.0, decoder_drop_path_rate=0.0)).eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        pipe = pipeline("upocr", model=folder, device=args.device)
    size = kwargs["image_size"]
    height, width = image.shape[:2]
    tiles = len(tile_starts(height, size, size // 4)) * len(tile_starts(width, size, size // 4))
    resize = timed(lambda: pipe(image, task="text-removal"), args.repeats)
    tile = timed(
        lambda: pipe(image, task="text-removal", tile=True, batch_size=args.tile_batch), args.repeats
    )
    keep = timed(
        lambda: pipe(image, task="text-removal", tile=True, keep_background=True, batch_size=args.tile_batch),
        args.repeats,
    )
    return {
        "config": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tile_size": size,
        "tiles": tiles,
        "resize_s": round(resize, 3),
        "tile_s": round(tile, 3),
        "tile_keep_background_s": round(keep, 3),
        "tile_over_resize": round(tile / resize, 1),
        "tile_keep_background_over_resize": round(keep / resize, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tile-batch", type=int, default=4, help="tiles per model call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    results = [bench_config(name, CONFIGS[name], image, args) for name in args.configs]
    report = {
        "image": f"{args.width}x{args.height}",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

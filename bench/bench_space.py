"""Memory and time of the Space (not a test): the app's resident memory at start and its peak during each kind of
run, with the model it would serve, in a process of its own.

    python bench/bench_space.py [--model DIR] [--height 1536] [--width 2048]

Each mode (resize, tiles, tiles + keep-background) runs the app's own callback once on a `--width`×`--height`
photo-like image (`UPOCR_CONCURRENCY=1`: the queue runs one model call at a time, so one call's peak is the app's
peak). Memory is the process's resident set; `peak_gib` is the highest so far (`ru_maxrss`, Linux: KiB), so a run
that needs less than an earlier one repeats the earlier peak. One JSON line per measurement, then a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SPACE_APP = Path(__file__).resolve().parents[1] / "space" / "app.py"


def rss_gib() -> float:
    """Current resident memory of this process, GiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_app():
    spec = importlib.util.spec_from_file_location("upocr_space_app", SPACE_APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def photo(path: Path, width: int, height: int) -> Path:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    image.save(path)
    return path


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: what the Space serves)")
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()
    os.environ.setdefault("UPOCR_CACHE_EXAMPLES", "0")  # the start-up figure is the app's, not the examples'
    app = load_app()
    before = rss_gib()
    demo = app.build_demo(args.model)
    rows = [
        {
            "measure": "after start-up",
            "rss_gib": round(rss_gib(), 3),
            "python_and_imports_gib": round(before, 3),
        }
    ]
    print(json.dumps(rows[-1]))
    with tempfile.TemporaryDirectory() as folder:
        image = str(photo(Path(folder) / "photo.png", args.width, args.height))
        runs = {
            "removal, resized": lambda: demo.upocr.remove(image, False, True, progress=None),
            "removal, tiles + keep-background": lambda: demo.upocr.remove(image, True, True, progress=None),
            "segmentation, tiles": lambda: demo.upocr.segment(image, None, True, progress=None),
            "tampering, tiles": lambda: demo.upocr.detect(image, True, progress=None),
        }
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rows.append({"measure": name, "seconds": round(time.perf_counter() - start, 2),
                         "rss_gib": round(rss_gib(), 3), "peak_gib": round(peak_gib(), 3)})  # fmt: skip
            print(json.dumps(rows[-1]))
    print(f"\n{cpu_name()}, {os.cpu_count()} CPUs; {args.width}×{args.height} image")
    for row in rows:
        figures = ", ".join(f"{key} {value}" for key, value in row.items() if key != "measure")
        print(f"{row['measure']:<36} {figures}")


if __name__ == "__main__":
    main()

"""`upocr`: remove text, segment text or detect tampered text in image files and folders.

    upocr remove photo.jpg scans/ -o out/ --model path/to/model [--tile] [--keep-background]
    upocr segment scans/ -o masks/ --model path/to/model --threshold 0.4
    upocr detect-tampering docs/ -o tamper/ --model path/to/model

Inputs are files or folders; folders are walked recursively and their files with image extensions are processed
(a file named explicitly is always tried). Each input `<folder>/<sub>/<name>.<ext>` is written to
`OUTDIR/<sub>/<name>.png` (explicit files: `OUTDIR/<name>.png`):

- `remove`: the text-free RGB image;
- `segment`: the text mask (white text on black, 8-bit gray);
- `detect-tampering`: the class map in the task's colours (red background, green real text, blue tampered) and
  `<name>.json` with the tampered regions (boxes with exclusive maxima) and per-class pixel counts.

Outputs are written atomically (a temporary file in the same folder, then renamed). A file that cannot be read
(not an image, truncated, empty, over `--max-pixels`) is reported with the reason and skipped; the run goes on and
the exit status is 1 if any file failed (2 for usage errors), 0 otherwise.

Several processes (GPUs, or CPU ranks over gloo with `ACCELERATE_USE_CPU=true`) share the files out between them:

    accelerate launch --multi_gpu --num_processes 4 -m upocr_hf.cli remove photos/ -o out/ --model DIR

Each process takes its own contiguous share of the sorted file list (`PartialState.split_between_processes`), so
every output is written once; the main process prints the one report for all of them, and every process exits
with the status of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .command_line import CommandParser, unit_interval
from .file_utils import atomic_write, check_model_location, remove_stale_temporaries
from .image_io import DEFAULT_MAX_PIXELS, ImageLoadError, ImageTooLargeError, load_image
from .tasks import TAMPER_ID2LABEL, get_task, registered_tasks


def _image_extensions() -> set[str]:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


@dataclass
class Job:
    """One input file and where its result goes (`output` without extension)."""

    source: Path
    output: Path


@dataclass
class Summary:
    """What one process did: the files it wrote and those that failed, or why it could not start (`error`)."""

    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    error: str | None = None


def collect_jobs(
    inputs: Sequence[str | os.PathLike], output_dir: Path
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Expand files and folders into jobs; returns the jobs and the inputs that do not exist."""
    extensions = _image_extensions()
    jobs: list[Job] = []
    missing: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    file = Path(root) / name
                    if name.startswith(".") or file.suffix.lower() not in extensions:
                        continue
                    relative = file.relative_to(path)
                    jobs.append(Job(file, output_dir / relative.parent / relative.stem))
        elif path.exists():
            jobs.append(Job(path, output_dir / path.stem))
        else:
            missing.append((path, "no such file or folder"))
    # two inputs with the same stem in one folder (a.jpg, a.png) must not overwrite each other
    seen: dict[Path, int] = {}
    for job in jobs:
        if job.output in seen:
            job.output = job.output.with_name(f"{job.output.name}_{job.source.suffix.lstrip('.').lower()}")
        seen[job.output] = 1
    return jobs, missing


def write_result(job: Job, result: dict[str, Any]) -> list[Path]:
    """Write one pipeline result next to `job.output`; returns the files written."""
    image_path = job.output.with_name(job.output.name + ".png")
    atomic_write(image_path, lambda file: result["image"].save(file, format="PNG"))
    written = [image_path]
    if get_task(result["task"]).readout == "class-map":
        class_map = result["class_map"]
        report = {
            "source": str(job.source),
            "height": int(class_map.shape[0]),
            "width": int(class_map.shape[1]),
            "pixels_per_class": {name: int((class_map == i).sum()) for i, name in TAMPER_ID2LABEL.items()},
            "tampered_regions": result["regions"],
        }
        json_path = job.output.with_name(job.output.name + ".json")
        atomic_write(json_path, lambda file: json.dump(report, file, indent=2), mode="w")
        written.append(json_path)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="upocr", description="UPOCR: text removal, text segmentation and tampered text detection."
    )
    tasks = [task for task in registered_tasks() if task.command]
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(task.command for task in tasks) + "}"
    )
    for task in tasks:
        summary = f"{task.title.lower()}: {task.description}"
        sub = commands.add_parser(
            task.command, help=summary, description=summary[0].upper() + summary[1:] + "."
        )
        sub.add_argument(
            "inputs", nargs="+", metavar="INPUT", help="image files or folders (walked recursively)"
        )
        sub.add_argument("-o", "--output-dir", required=True, type=Path, help="folder for the results")
        sub.add_argument("--model", default=None, help="model folder (save_pretrained layout)")
        sub.add_argument(
            "--tile",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="high-resolution mode: overlapping native-size tiles; --no-tile: one resize to the model size "
            "(default: the mode the model folder's preprocessor_config.json gives, do_tile)",
        )
        sub.add_argument(
            "--tile-overlap", type=int, default=None, help="tile overlap in pixels (default tile/4)"
        )
        sub.add_argument(
            "--batch-size", type=int, default=1, help="images (or tiles with --tile) per model call"
        )
        sub.add_argument(
            "--device",
            default=None,
            help="cpu, cuda or cuda:N (default: cuda if available; under accelerate launch, each process's own GPU)",
        )
        sub.add_argument(
            "--dtype", choices=("float32", "bfloat16"), default="float32", help="inference precision"
        )
        sub.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            help="refuse larger images (decompression bombs)",
        )
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        if task.text_mask:
            sub.add_argument(
                "--keep-background",
                action="store_true",
                help="only replace pixels in the detected text region; all others stay byte-identical",
            )
        if task.readout == "mask" or task.text_mask:
            sub.add_argument(
                "--threshold",
                type=unit_interval,
                default=None,
                help="text mask threshold (default: the model folder's segmentation_threshold, else 0.4)",
            )
        sub.set_defaults(task=task.id)
    return parser


def _process_state(args: argparse.Namespace) -> Any:
    """This process's place among those `accelerate launch` started (the only one without it). CPU processes
    (`ACCELERATE_USE_CPU=true`, `--device cpu`, or no GPU) talk over gloo."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = args.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def _load_pipeline(args: argparse.Namespace, device: Any) -> Any:
    import torch

    from upocr_hf.pipeline_upocr import load_upocr_pipeline

    check_model_location(args.model)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    return load_upocr_pipeline(args.model, device=device, dtype=dtype)


def _run_batch(
    pipe: Any, batch: list[tuple[Job, Image.Image]], options: dict[str, Any], summary: Summary
) -> None:
    """Run one batch; if the batch call fails, retry its images one by one so each failure names its file."""
    try:
        results = pipe([image for _, image in batch], **options)
    except Exception as error:  # reported per file, the run goes on
        if len(batch) > 1:
            for item in batch:
                _run_batch(pipe, [item], options, summary)
        else:
            reason = error.reason if isinstance(error, ImageLoadError) else f"{type(error).__name__}: {error}"
            summary.failed.append((batch[0][0].source, reason))
        return
    for (job, _), result in zip(batch, results):
        try:
            write_result(job, result)
        except OSError as error:
            summary.failed.append((job.source, f"cannot write output: {error}"))
        else:
            summary.done.append(job.source)


def _pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline call options of the parsed command line."""
    options: dict[str, Any] = {"task": args.task, "max_pixels": args.max_pixels}
    if args.tile is not None:
        options["tile"] = args.tile
    options["batch_size"] = args.batch_size  # images per call, or tiles per call with --tile
    if args.tile_overlap is not None:
        options["tile_overlap"] = args.tile_overlap
    if getattr(args, "keep_background", False):
        options["keep_background"] = True
    if getattr(args, "threshold", None) is not None:
        options["threshold"] = args.threshold
    return options


def _process(
    jobs: list[Job], pipe: Any, args: argparse.Namespace, summary: Summary, show_progress: bool
) -> None:
    """Read the jobs' images and run them through the pipeline in batches (one image per call with --tile)."""
    from tqdm.auto import tqdm

    options = _pipeline_options(args)
    progress = tqdm(total=len(jobs), unit="image", disable=not show_progress or not jobs, file=sys.stderr)
    tile = pipe.image_processor.do_tile if args.tile is None else args.tile
    step = 1 if tile else args.batch_size
    batch: list[tuple[Job, Image.Image]] = []
    for index, job in enumerate(jobs):
        try:
            batch.append((job, load_image(job.source, max_pixels=args.max_pixels)))
        except ImageLoadError as error:
            hint = "; --max-pixels raises it" if isinstance(error, ImageTooLargeError) else ""
            summary.failed.append((job.source, error.reason + hint))
            progress.update(1)
        if batch and (len(batch) >= step or index == len(jobs) - 1):
            _run_batch(pipe, batch, options, summary)
            progress.update(len(batch))
            batch = []
    progress.close()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is None:
        from . import default_model_path

        args.model = default_model_path()
        if args.model is None:
            parser.error("--model is required (this installation has no shipped default model)")
    if args.batch_size < 1:
        parser.error("--batch-size must be ≥ 1")
    return args


def _run_share(jobs: list[Job], args: argparse.Namespace, state: Any) -> Summary:
    """Process this process's share of the jobs; a model that does not load is recorded, not raised, so that every
    process still reaches the report."""
    summary = Summary()
    # what an earlier run killed mid-write left beside these outputs
    remove_stale_temporaries(
        job.output.with_name(job.output.name + suffix) for job in jobs for suffix in (".png", ".json")
    )
    try:
        pipe = _load_pipeline(args, args.device or state.device)
    except Exception as error:  # any loading problem ends the run with a clear message
        summary.error = (
            str(error)
            if isinstance(error, FileNotFoundError)
            else f"cannot load the model from {args.model}: {error}"
        )
        return summary
    _process(jobs, pipe, args, summary, show_progress=not args.quiet and state.is_local_main_process)
    return summary


def _report(
    args: argparse.Namespace, state: Any, summaries: list[Summary], jobs: list[Job], missing: list
) -> int:
    """Print the one report of all processes (main process) and return the exit status of the whole run."""
    errors = [summary.error for summary in summaries if summary.error]
    if errors:
        if state.is_main_process:
            print(f"upocr: error: {errors[0]}", file=sys.stderr)
        return 2
    done = [source for summary in summaries for source in summary.done]
    failed = [*missing, *(failure for summary in summaries for failure in summary.failed)]
    if state.is_main_process:
        if not jobs and not missing:
            print("upocr: no image files found in the inputs", file=sys.stderr)
        shares = f" ({len(summaries)} processes: {' + '.join(str(len(s.done)) for s in summaries)})"
        print(
            f"upocr {args.command}: {len(done)} written to {args.output_dir}"
            + (shares if len(summaries) > 1 else "")
            + f", {len(failed)} failed"
        )
        for source, reason in failed:
            print(f"  failed: {source}: {reason}", file=sys.stderr)
    return 1 if failed or not jobs else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `upocr` console script; returns the exit status (0 ok, 1 some files failed, 2 usage).
    Under `accelerate launch` every process runs it on its share of the files and returns the status of all."""
    from accelerate.utils import gather_object

    args = _parse(argv)
    state = _process_state(args)
    jobs, missing = collect_jobs(args.inputs, args.output_dir)  # the same sorted list in every process
    with state.split_between_processes(jobs) as share:
        summary = _run_share(share, args, state)
    return _report(args, state, gather_object([summary]), jobs, missing)


if __name__ == "__main__":
    sys.exit(main())

"""The default model's lineage, learning curve and contact sheet (used by scripts/train_default_model.sh).

    python scripts/default_model_report.py lineage --previous upocr_hf/default_model/lineage.json --segment s2 \
        --run runs/default-model/s2 --command "..." --wall-time 6000 --evaluations EVAL.json ... --out lineage.json
    python scripts/default_model_report.py plot --lineage lineage.json --out learning_curve.png
    python scripts/default_model_report.py contact-sheet --model DIR --data DATA_DIR --out contact_sheet.png
    python scripts/default_model_report.py card --lineage lineage.json --out lineage.md
    python scripts/default_model_report.py study --runs 256=RUN_DIR 384=RUN_DIR --evaluations-root EVAL_DIR \
        --start upocr_hf/default_model/eval_results.json --out study.md

A lineage is a JSON list of training segments, oldest first; each records the exact command, steps, seed, wall time,
the learning curve (training loss every logging step, validation score every evaluation) and the held-out figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

STEP_LINE = re.compile(r"step (\d+): (\{.*\})")
VALIDATION_LINE = re.compile(r"validation at step (\d+): score ([0-9.]+)")


def read_curve(log: Path) -> dict[str, list]:
    """Training loss and validation score per step from a train.py log (a resumed run's repeats: last one wins)."""
    loss: dict[int, float] = {}
    score: dict[int, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if match := STEP_LINE.search(line):
            loss[int(match[1])] = json.loads(match[2]).get("loss", float("nan"))
        elif match := VALIDATION_LINE.search(line):
            score[int(match[1])] = float(match[2])
    return {"loss": sorted(loss.items()), "validation_score": sorted(score.items())}


def trained_steps(curve: dict[str, list]) -> int:
    """The last step a run logged (a run stopped early trained fewer steps than its schedule planned)."""
    return curve["loss"][-1][0] if curve["loss"] else 0


def lineage(args: argparse.Namespace) -> None:
    previous = (
        json.loads(Path(args.previous).read_text()) if args.previous and Path(args.previous).is_file() else []
    )
    train_args = json.loads((Path(args.run) / "train_args.json").read_text())
    from upocr_hf.hub import load_evaluation_results

    evaluations = {
        key: {k: v for k, v in record["metrics"].items() if isinstance(v, int | float)}
        for key, record in load_evaluation_results(args.evaluations).items()
    }
    curve = read_curve(Path(args.run) / "train.log")
    # train.py validates with the processor it saves beside the best model: its size is the validation's
    processor = Path(args.run) / "best" / "preprocessor_config.json"
    validation_size = json.loads(processor.read_text())["size"]["height"] if processor.is_file() else None
    segment = {
        "segment": args.segment,
        "command": args.command,
        "init_from": train_args["init_from"],
        "steps": trained_steps(curve),  # stopped early: fewer than planned_steps
        "planned_steps": train_args["max_steps"],
        "seed": train_args["seed"],
        "images_per_step": train_args["batch_size_per_task"] * len(train_args["data"]),
        "image_size": train_args["image_size"],
        "validation_size": validation_size,
        "wall_time_s": args.wall_time,
        "weights": args.weights,  # which of the run's models was packaged: its held-out score in the card
        "curve": curve,
        "held_out": evaluations,
    }
    Path(args.out).write_text(json.dumps([*previous, segment], indent=1) + "\n")


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segments = json.loads(Path(args.lineage).read_text())
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    offset = 0
    for segment in segments:
        curve = segment.get("curve") or {}
        if curve.get("loss"):
            steps, values = zip(*curve["loss"], strict=True)
            ax_loss.plot(np.array(steps) + offset, values, lw=1, label=segment["segment"])
        if curve.get("validation_score"):
            steps, values = zip(*curve["validation_score"], strict=True)
            # scores validated at different input sizes are not comparable: the legend says which is which
            size = segment.get("validation_size")
            label = f"{segment['segment']} (at {size} px)" if size else segment["segment"]
            ax_score.plot(np.array(steps) + offset, values, "o-", ms=3, label=label)
        ax_loss.axvline(offset, color="0.8", lw=0.8)
        offset += segment["steps"]
    ax_loss.set(title="training loss", xlabel="step (all segments)", yscale="log")
    ax_score.set(title="held-out score (mean of MSSIM, fgIoU, mF)", xlabel="step (all segments)")
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out)


def contact_sheet(args: argparse.Namespace) -> None:
    """Held-out inputs, outputs and targets of each task: one row per image, 256-px tiles."""
    from upocr_hf import load_upocr_pipeline
    from upocr_hf.data.synthetic import load_synthetic_folders

    # the package's pipeline even for a run folder saved with its code (which transformers would run as remote code)
    pipe = load_upocr_pipeline(args.model, device="cpu")
    tile = 256
    rows = []
    for task, dataset in load_synthetic_folders(args.data, split="test").items():
        for index in range(args.per_task):
            sample = dataset[index]
            image = sample["image"].convert("RGB")
            # each task's result carries its picture: the removal, the mask, the class map in the task's colours
            cells = [image, pipe(image, task=task)["image"], sample["target"]]
            rows.append([cell.convert("RGB").resize((tile, tile)) for cell in cells])
    sheet = Image.new("RGB", (3 * tile + 8, len(rows) * (tile + 4) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(("input", "output", "target")):
        draw.text((col * (tile + 4) + 4, 4), title, fill="black")
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            sheet.paste(cell, (c * (tile + 4), 20 + r * (tile + 4)))
    sheet.save(args.out)


def card(args: argparse.Namespace) -> None:
    segments = json.loads(Path(args.lineage).read_text())
    lines = [
        "## Lineage",
        "",
        "Trained in segments, each continuing from the weights the previous one shipped; a segment lands only when",
        "it beats the shipped model on the style-held-out split. Hours are CPU wall time on 2 cores.",
        "",
        "| segment | from | steps | images/step | seed | hours | held-out score | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    total = 0.0
    for s in segments:
        scores = [v for _, v in (s.get("curve") or {}).get("validation_score", [])]
        # the validation score of the model that was packaged (entries without `weights` packaged the best)
        landed = f"{scores[-1] if s.get('weights') == 'final' else max(scores):.4f}" if scores else "–"
        total += s["wall_time_s"] / 3600
        lines.append(
            f"| {s['segment']} | {s['init_from']} | {s['steps']:,} | {s['images_per_step']} | {s['seed']} | "
            f"{s['wall_time_s'] / 3600:.2f} | {landed} | `{s['command']}` |"
        )
    lines += ["", f"Total: {total:.2f} CPU-hours.", "", "![learning curve](learning_curve.png)", "",
              "Held-out inputs, outputs and targets (removal, segmentation, tampering):", "",
              "![contact sheet](contact_sheet.png)", ""]  # fmt: skip
    Path(args.out).write_text("\n".join(lines))


def _study_row(label: str, steps: str, hours: str, records: dict) -> str:
    from upocr_hf.packaging import selection_score

    m = {key: record["metrics"] for key, record in records.items()}
    return (
        f"| {label} | {steps} | {hours} | {m['text-removal']['psnr']:.2f} / {m['text-removal']['mssim_x100']:.2f} | "
        f"{m['text-removal (keep background)']['psnr']:.2f} | {m['text-segmentation']['fg_iou']:.3f} | "
        f"{m['tampered-text-detection']['mf']:.3f} / {m['tampered-text-detection']['tampered_f_score']:.3f} | "
        f"{selection_score(records):.4f} |"
    )


def study(args: argparse.Namespace) -> None:
    """The training-configuration study's table: one row per run (its held-out figures, steps and wall time)."""
    from upocr_hf.hub import load_evaluation_results

    lines = [
        "| training crop (px) | steps | hours | removal PSNR / MSSIM | keep-background PSNR | seg fgIoU | "
        "tamper mF / tampered F | selection score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if args.start:
        lines.append(_study_row("start", "–", "–", json.loads(Path(args.start).read_text())))
    for label, run in (item.split("=", 1) for item in args.runs):
        run = Path(run)
        evaluations = sorted((Path(args.evaluations_root) / run.name / "new").glob("*.json"))
        if not evaluations:
            lines.append(f"| {label} | – | – | not evaluated ({run}) | | | | |")
            continue
        steps = trained_steps(read_curve(run / "train.log"))
        hours = sum(float(x) for x in (run / "wall_seconds").read_text().split()) / 3600
        lines.append(_study_row(label, f"{steps:,}", f"{hours:.2f}", load_evaluation_results(evaluations)))
    Path(args.out).write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command_name", required=True)
    p = sub.add_parser("lineage")
    p.add_argument("--previous")
    p.add_argument("--segment", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--wall-time", type=float, required=True)
    p.add_argument("--evaluations", nargs="*", default=[])
    p.add_argument(
        "--weights",
        choices=("best", "final"),
        default="best",
        help="the run's model that is packaged: the best validated one (train.py's best/) or the last (final/)",
    )
    p.add_argument("--out", required=True)
    p = sub.add_parser("plot")
    p.add_argument("--lineage", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("contact-sheet")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--per-task", type=int, default=3)
    p.add_argument("--out", required=True)
    p = sub.add_parser("card")
    p.add_argument("--lineage", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("study")
    p.add_argument("--runs", nargs="+", required=True, help="LABEL=RUN_DIR of each configuration")
    p.add_argument("--evaluations-root", required=True, help="folder holding RUN_NAME/new/*.json of each run")
    p.add_argument("--start", help="eval_results.json of the model every run started from (the first row)")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    commands = {
        "lineage": lineage,
        "plot": plot,
        "contact-sheet": contact_sheet,
        "card": card,
        "study": study,
    }
    commands[args.command_name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

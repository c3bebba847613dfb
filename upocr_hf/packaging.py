"""Package a trained UPOCR as a Hub-ready folder whose model card carries its measured figures next to the trivial
baselines, and refuse to package one that does not beat them (on every task, in at least one evaluated protocol;
every comparison, won or lost, is written into the card). This is how `upocr_hf/default_model` is made
(`scripts/train_default_model.sh`):

    python -m upocr_hf.packaging --model runs/default-model/run/final --output upocr_hf/default_model \\
        --evaluations runs/default-model/eval/*.json --baselines runs/default-model/eval/baseline/*.json

The evaluation records are the JSON files written by `python -m upocr_hf.evaluation --output-json` (with `--baseline`
for the trivial baselines). The folder is written next to the output and moved into place only when complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from .command_line import module_parser
from .file_utils import error_line, free_space, staged_folder
from .hub import load_evaluation_results, prepare_hub_folder
from .tasks import get_task

#: The evaluation records a packaged folder carries, as `{key: record}` (see `load_evaluation_results`).
EVAL_RESULTS_FILE = "eval_results.json"


class BaselineNotBeatenError(ValueError):
    pass


class IncumbentNotBeatenError(ValueError):
    pass


def _selection_metric(record: Mapping[str, Any], key: str) -> str | None:
    return get_task(record.get("task", key)).selection_metric


def selection_figure(record: Mapping[str, Any], key: str) -> float:
    """One record's figure in [0, 1], higher is better: its task's `Task.selection_metric`; for a removal record
    scored by an OCR engine (`readable_words`: the percent of the inputs' words still read in the outputs), the mean
    of that and the share of words made unreadable, so that a model which leaves text legible cannot win on pixel
    similarity alone."""
    figure = float(record["metrics"][_selection_metric(record, key)])
    readable = record["metrics"].get("readable_words")
    return figure if readable is None else (figure + 1.0 - float(readable) / 100.0) / 2.0


def selection_score(evaluations: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None) -> float:
    """The mean of `selection_figure` over `keys`, default every record of a task that has a selection metric."""
    keys = [k for k, r in evaluations.items() if _selection_metric(r, k)] if keys is None else keys
    if not keys:
        raise ValueError("no evaluation record of a task with a selection metric")
    return sum(selection_figure(evaluations[k], k) for k in keys) / len(keys)


def compare_to_incumbent(
    evaluations: Mapping[str, Mapping[str, Any]],
    incumbent: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[float, float]:
    """`(new score, incumbent score)`: `selection_score` of both over the records they share.

    With `baselines`, the new model must also keep every comparison with the trivial baseline that the incumbent
    wins (`baseline_table`'s rows, record by record; a record the new model lacks counts as lost): a gain in one
    task may not buy a loss there, e.g. a protocol's PSNR falling back to within the margin of the input's.

    Raises:
        IncumbentNotBeatenError: they share no record, the new model does not score higher, or it loses a baseline
            comparison the incumbent wins (each such record named with both figures).
    """
    shared = [k for k in evaluations if k in incumbent and _selection_metric(evaluations[k], k)]
    if not shared:
        raise IncumbentNotBeatenError("the new model and the incumbent share no evaluation record to compare")
    new, old = selection_score(evaluations, shared), selection_score(incumbent, shared)
    if not new > old:
        raise IncumbentNotBeatenError(
            f"selection score {new:.4f} does not beat the incumbent's {old:.4f} (mean over {', '.join(shared)})"
        )
    if baselines is not None:
        ours, theirs = baseline_table(evaluations, baselines), baseline_table(incumbent, baselines)
        lost = [
            f"{key}: the new model has no record, and the incumbent beats the trivial baseline there"
            if key not in ours
            else f"{key}: {ours[key]['metric']} {ours[key]['model']:.4f} no longer beats the trivial baseline's "
            f"{row['baseline']:.4f} by the required {row['margin']}, which the incumbent's {row['model']:.4f} does"
            for key, row in theirs.items()
            if row["beats"] and not ours.get(key, {}).get("beats")
        ]
        if lost:
            raise IncumbentNotBeatenError(
                f"selection score {new:.4f} beats the incumbent's {old:.4f}, but " + "; ".join(lost)
            )
    return new, old


def baseline_table(
    evaluations: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`{key: {"task", "metric", "model", "baseline", "margin", "beats"}}` for every evaluation record of a task
    with a `Task.baseline_margin` and a baseline record (keys as in `load_evaluation_results`; baselines are looked
    up by the record's task)."""
    table: dict[str, dict[str, Any]] = {}
    for key, record in evaluations.items():
        task = record.get("task", key)
        if get_task(task).baseline_margin is None or task not in baselines:
            continue
        metric, margin = get_task(task).baseline_margin
        model_value = float(record["metrics"][metric])
        baseline_value = float(baselines[task]["metrics"][metric])
        table[key] = {"task": task, "metric": metric, "model": model_value, "baseline": baseline_value,
                      "margin": margin, "beats": model_value > baseline_value + margin}  # fmt: skip
    return table


def compare_to_baselines(
    evaluations: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """`baseline_table(evaluations, baselines)`, once every task passes: each task's records compared with its
    trivial baseline, at least one of them beating it by the task's margin.

    Raises:
        BaselineNotBeatenError: a task has no baseline record, or none of its records exceeds the baseline's figure
            by the required margin (every failing task is named with its figures).
    """
    for key, record in evaluations.items():
        task = record.get("task", key)
        if get_task(task).baseline_margin is not None and task not in baselines:
            raise BaselineNotBeatenError(f"{task}: no baseline record to compare with")
    table = baseline_table(evaluations, baselines)
    failures = []
    for task in dict.fromkeys(row["task"] for row in table.values()):
        rows = {key: row for key, row in table.items() if row["task"] == task}
        if not any(row["beats"] for row in rows.values()):
            failures += [
                f"{key}: {row['metric']} {row['model']:.4f} does not beat the trivial baseline's {row['baseline']:.4f} "
                f"by the required {row['margin']}"
                for key, row in rows.items()
            ]
    if failures:
        raise BaselineNotBeatenError("; ".join(failures))
    return table


def package_model(
    model_dir: str | Path,
    output: str | Path,
    evaluations: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, Mapping[str, Any]],
    training: Mapping[str, Any] | None = None,
    training_data: str | None = None,
    extra_files: Sequence[str | Path] = (),
    include_code: bool = True,
    incumbent: Mapping[str, Mapping[str, Any]] | None = None,
    card_appendix: str | None = None,
) -> Path:
    """Write `output` (replacing it only once the new folder is complete) from a `save_pretrained` folder.

    The card's metrics are the model's evaluation records; its training section gets `training` plus a line per
    task comparing the headline figure with the trivial baseline's. `include_code=False` leaves out the
    remote-code files and their `auto_map` / `custom_pipelines` entries: right for a folder that ships inside
    `upocr_hf` itself (the installed classes load it; `upocr_hf.hub.push_to_hub` adds the code back on upload).
    `incumbent`: the evaluation records of the model `output` holds now, on the same data; the new one must score
    higher and keep the incumbent's wins over the baselines (`compare_to_incumbent`) or nothing is written.
    `card_appendix`: Markdown added at the end of the card (e.g. the training lineage, with images shipped as
    `extra_files`).
    """
    from . import UpocrImageProcessor, UpocrModel

    comparison = compare_to_baselines(evaluations, baselines)
    if incumbent is not None:
        compare_to_incumbent(evaluations, incumbent, baselines)
    model = UpocrModel.from_pretrained(model_dir).eval()
    processor = UpocrImageProcessor.for_model(model_dir)
    details = dict(training or {})
    mode = "native-resolution tiles of" if processor.do_tile else "one resize to"
    details["default inference mode"] = (
        f"{mode} {processor.size.height}×{processor.size.width} px, segmentation threshold "
        f"{processor.segmentation_threshold:g} (preprocessor_config.json; a call's tile= and threshold= override them)"
    )
    for key, row in comparison.items():
        verdict = "beats it" if row["beats"] else "does NOT beat it"
        details[f"{key} vs trivial baseline"] = (
            f"{row['metric']} {row['model']:.4f} vs {row['baseline']:.4f}: {verdict} by the required margin "
            f"{row['margin']}"
        )
    with staged_folder(output) as staging:
        prepare_hub_folder(
            model, processor, staging, metrics=evaluations, training=details, training_data=training_data
        )
        if not include_code:
            _strip_remote_code(staging)
        for extra in extra_files:
            shutil.copy2(extra, staging / Path(extra).name)
        # machine-readable figures beside the card: the Space reads them to say how well the model does
        (staging / EVAL_RESULTS_FILE).write_text(
            json.dumps(dict(evaluations), indent=1, sort_keys=True) + "\n"
        )
        if card_appendix:
            card = staging / "README.md"
            card.write_text(
                card.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + card_appendix, encoding="utf-8"
            )
    return Path(output)


def _strip_remote_code(folder: Path) -> None:
    for code_file in folder.glob("*.py"):
        code_file.unlink()
    for name, keys in (
        ("config.json", ("auto_map", "custom_pipelines")),
        ("preprocessor_config.json", ("auto_map",)),
    ):
        path = folder / name
        if path.exists():
            config = json.loads(path.read_text())
            for key in keys:
                config.pop(key, None)
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = module_parser("upocr_hf.packaging", __doc__)
    parser.add_argument("--model", required=True, help="the trained save_pretrained folder")
    parser.add_argument("--output", required=True, help="the folder to write")
    parser.add_argument("--evaluations", nargs="+", required=True, help="the model's evaluation JSON records")
    parser.add_argument(
        "--baselines", nargs="+", required=True, help="the trivial baseline's evaluation JSON records"
    )
    parser.add_argument(
        "--incumbent",
        nargs="+",
        default=None,
        help="evaluation JSON records of the model the output folder holds now, on the same data: refuse unless the "
        "new model's selection score is higher and it keeps every baseline comparison the incumbent wins",
    )
    parser.add_argument(
        "--training", nargs="*", default=[], metavar="KEY=VALUE", help="training details for the card"
    )
    parser.add_argument("--training-data", default=None, help="the card's training-data paragraph")
    parser.add_argument(
        "--extra-files", nargs="*", default=[], help="files copied into the folder as they are"
    )
    parser.add_argument(
        "--card-appendix", default=None, help="a Markdown file added at the end of the model card"
    )
    parser.add_argument(
        "--without-code",
        action="store_true",
        help="leave out the remote-code files (a folder shipped inside upocr_hf)",
    )
    args = parser.parse_args(argv)
    training = {}
    for item in args.training:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--training {item!r}: expected KEY=VALUE")
        training[key] = value
    evaluations = load_evaluation_results(args.evaluations)
    baselines = load_evaluation_results(args.baselines)
    incumbent = load_evaluation_results(args.incumbent) if args.incumbent else None
    try:
        folder = package_model(
            args.model,
            args.output,
            evaluations,
            baselines,
            training,
            args.training_data,
            args.extra_files,
            include_code=not args.without_code,
            incumbent=incumbent,
            card_appendix=Path(args.card_appendix).read_text(encoding="utf-8")
            if args.card_appendix
            else None,
        )
    except (BaselineNotBeatenError, IncumbentNotBeatenError) as error:
        parser.exit(1, f"not packaged: {error}\n")
    except (
        OSError,
        SafetensorError,
    ) as error:  # unreadable input or a full disk: the old folder stays intact
        free = free_space(Path(args.output).resolve().parent)
        message = f"not packaged: {args.model} into {args.output}: {error_line(error)} ({free})"
        parser.exit(2, message + "\n")
    if incumbent is not None:
        new, old = compare_to_incumbent(evaluations, incumbent, baselines)
        print(f"selection score {new:.4f} beats the incumbent's {old:.4f}")
    for key, row in compare_to_baselines(evaluations, baselines).items():
        verdict = "beats" if row["beats"] else "does NOT beat"
        print(
            f"{key}: {row['metric']} {row['model']:.4f} {verdict} the trivial baseline's {row['baseline']:.4f}"
        )
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

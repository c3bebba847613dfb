"""Model card and Hub upload of a UPOCR checkpoint: model + image processor + pipeline code + README in one folder.

>>> from upocr_hf.hub import prepare_hub_folder, push_to_hub
>>> prepare_hub_folder(model, processor, "upocr-release/", metrics={"text-segmentation": record})  # offline
>>> push_to_hub(model, processor, "your-name/upocr", metrics=...)                                  # one commit

`prepare_hub_folder` writes everything a Hub repository needs, so that `pipeline(model=repo,
trust_remote_code=True)` works without this package: `config.json` (with `auto_map` and `custom_pipelines`),
`model.safetensors`, `preprocessor_config.json`, the code files (`configuration_upocr.py`, `modeling_upocr.py`,
`image_processing_upocr.py`, `pipeline_upocr.py` and the modules they import) and `README.md`, the model card
rendered from the package's card template (`upocr_hf/model_card.md`) with the given evaluation figures and training details.

`copy_with_code` turns a folder saved without code (the package's default model ships so) into one that carries it:
`python -m upocr_hf.hub copy-with-code upocr_hf/default_model space/model` (a Space that runs without the package).

`push_to_hub` uploads that folder as one commit. (transformers' own `model.push_to_hub` also sends the model's
code and weights, but neither the image processor nor the pipeline code, and it writes a generic model card.)

The card template has marked blocks (`<!-- upocr:metrics:start -->` ... `<!-- upocr:metrics:end -->`, likewise
`training` and `training-data`) whose content `render_model_card` replaces; the rest of the template is kept as is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard

from .command_line import CommandParser
from .file_utils import staged_folder
from .modeling_upocr import UpocrModel
from .tasks import get_task, order_tasks

#: The model card template: `model_card.md`, shipped inside the package (package data), so that a wheel install
#: renders cards too; the repository's top-level `model_card.md` links to it.
MODEL_CARD_TEMPLATE: Path = Path(__file__).resolve().parent / "model_card.md"
#: The model location of the template's code examples: a local folder's card says so; `repo_id` replaces it.
PLACEHOLDER_REPO_ID = "path/to/this/model"
#: Default commit message of `push_to_hub`.
COMMIT_MESSAGE = "Upload UPOCR model, image processor, pipeline code and model card"

_BLOCK = "<!-- upocr:{name}:start -->\n{body}\n<!-- upocr:{name}:end -->"


# ---------------------------------------------------------------------------------------------------- model card


def load_evaluation_results(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Read the JSON files written by `python -m upocr_hf.evaluation --output-json` into `{key: record}`.

    The key is the task, `"<task> (keep background)"` for a `--keep-background` record or `"<task> (region rule)"`
    for a `--region-rule` one, so each task's protocols can sit side by side in a model card. Two records with the same key are an error.
    """
    results: dict[str, dict[str, Any]] = {}
    for path in paths:
        record = json.loads(Path(path).read_text())
        if "task" not in record or "metrics" not in record:
            raise ValueError(f"{path}: not an evaluation record (expected the keys 'task' and 'metrics')")
        key = record["task"]
        if record.get("keep_background"):
            key += " (keep background)"
        if record.get("region_rule"):
            key += " (region rule)"
        if key in results:
            raise ValueError(f"{path}: a second evaluation record for {key!r}")
        results[key] = record
    return results


def _format_value(value: Any, scale: float, decimals: int) -> str:
    if value is None:
        return "–"
    try:
        return f"{float(value) * scale:.{decimals}f}"
    except (TypeError, ValueError):
        return str(value)


def format_metrics(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown tables of evaluation figures, one per task, in the units of the paper's tables.

    Args:
        metrics: `{task: record}` where a record is either an evaluation record of `python -m upocr_hf.evaluation`
            (`{"metrics": {...}, "data": ..., "split": ..., "protocol": ...}`, optionally `"dataset"`: a human
            description of the evaluation data) or directly a metric's `compute()` result.
    """
    from .metrics.paper_results import table_columns

    known = order_tasks(metrics)
    sections: list[str] = []
    for task in known:
        record = dict(metrics[task])
        figures = record.get("metrics", record)
        columns = table_columns(record.get("task", task))
        if columns:
            headers = [f"{c.header}{' ' + c.unit if c.unit in ('dB', '×100', '%') else ''}" for c in columns]
            cells = [_format_value(figures.get(c.key), c.scale, c.decimals) for c in columns]
        else:
            keys = [k for k, v in figures.items() if isinstance(v, int | float)]
            headers, cells = keys, [_format_value(figures[k], 1.0, 4) for k in keys]
        lines = [f"**{task}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines.append("| " + " | ".join(cells) + " |")
        details = []
        data = record.get("dataset") or (Path(str(record["data"])).name if record.get("data") else None)
        if data:
            details.append(f"data: {data}" + (f" ({record['split']} split)" if record.get("split") else ""))
        if figures.get("num_samples") is not None:
            details.append(f"{figures['num_samples']} images")
        if record.get("protocol"):
            details.append(f"protocol: {record['protocol']}")
        if figures.get("fid_unavailable_reason"):
            details.append(f"FID unavailable: {figures['fid_unavailable_reason']}")
        if details:
            lines += ["", "; ".join(details) + "."]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def format_training(training: Mapping[str, Any]) -> str:
    """A Markdown list of training details (`{"data": ..., "steps": ..., "hardware": ...}`)."""
    lines = []
    for key, value in training.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        lines.append(f"- **{str(key).replace('_', ' ')}**: {value}")
    return "\n".join(lines)


def _replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(
        rf"<!-- upocr:{re.escape(name)}:start -->.*?<!-- upocr:{re.escape(name)}:end -->", re.S
    )
    if not pattern.search(text):
        raise ValueError(
            f"the model card template has no '{name}' block (<!-- upocr:{name}:start --> ... end -->)"
        )
    return pattern.sub(lambda _: _BLOCK.format(name=name, body=body.strip()), text, count=1)


def render_model_card(
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    training: Mapping[str, Any] | None = None,
    *,
    training_data: str | None = None,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
) -> str:
    """The model card text: the template with the metrics, training and training-data blocks filled in.

    Args:
        metrics: evaluation figures per task (see `format_metrics`); `None` keeps the template's "no results" text.
        training: training details as key → value (rendered as a list); `None` keeps the template's text.
        training_data: Markdown replacing the template's training-data paragraph (e.g. "synthetic only: ...").
        repo_id: replaces the placeholder model id of the code examples.
        template: card template (default: `MODEL_CARD_TEMPLATE`).

    Raises:
        FileNotFoundError: the template is missing.
        ValueError: the template lacks a block to fill, or its YAML front matter does not parse.
    """
    path = Path(template) if template is not None else MODEL_CARD_TEMPLATE
    if not path.is_file():
        raise FileNotFoundError(
            f"model card template not found: {path} (the default one ships inside the upocr_hf package; an "
            "installation without its package data lacks it: reinstall, or pass template=...)"
        )
    text = path.read_text(encoding="utf-8")
    if metrics:
        text = _replace_block(text, "metrics", format_metrics(metrics))
    if training:
        text = _replace_block(text, "training", format_training(training))
    if training_data:
        text = _replace_block(text, "training-data", training_data)
    if repo_id:
        text = text.replace(PLACEHOLDER_REPO_ID, repo_id)
    card = ModelCard(text)  # parses the front matter: a broken template fails here, not on the Hub
    if not card.data.to_dict().get("library_name"):
        raise ValueError(f"{path}: the model card's front matter lacks library_name")
    if metrics:
        card.data.model_name = repo_id or "upocr"
        card.data.eval_results = eval_results(metrics)
        card.data.metrics = sorted({result.metric_type for result in card.data.eval_results})
        text = str(card)
    return text


def _protocol_config(record: Mapping[str, Any], task: str) -> str | None:
    """The `dataset_config` of a record's Hub entries: the Hub merges entries with the same task type, dataset,
    config and split, so each protocol of one task on one dataset needs a config of its own."""
    if record.get("keep_background"):
        return "keep-background"
    if record.get("region_rule"):
        return "region-rule"
    return "whole-image" if get_task(task).text_mask else None


def eval_results(metrics: Mapping[str, Mapping[str, Any]]) -> list[EvalResult]:
    """The evaluation records as the Hub's `model-index` entries: each task's table figures, under the task's name,
    the evaluation data the record names (a synthetic folder as synthetic, never as the real dataset whose layout it
    borrows; no local path) and its protocol as the dataset config (`_protocol_config`)."""
    from .metrics.paper_results import table_columns

    results = []
    for key, record in metrics.items():
        task = record.get("task", key)
        figures = record.get("metrics", record)
        folder = Path(str(record.get("data") or task)).name
        described = record.get("dataset")
        synthetic = bool(described and described.startswith("synthetic"))
        for column in table_columns(task):
            value = figures.get(column.key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                results.append(
                    EvalResult(
                        task_type="image-to-image", task_name=key,
                        dataset_type="upocr_hf-synthetic" if synthetic else folder,
                        dataset_name=described or folder, dataset_config=_protocol_config(record, task),
                        dataset_split=record.get("split"), metric_type=column.key,
                        metric_name=column.header, metric_value=float(value),
                    )
                )  # fmt: skip
    return results


def write_model_card(
    folder: str | os.PathLike,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    training: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Render the model card (see `render_model_card` for the options) into `folder/README.md`; returns its path."""
    target = Path(folder) / "README.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_model_card(metrics, training, **kwargs), encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------------- the folder


def prepare_hub_folder(
    model: Any,
    processor: Any | None,
    folder: str | os.PathLike,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    training: Mapping[str, Any] | None = None,
    **card_kwargs: Any,
) -> Path:
    """Write a complete Hub-ready folder: weights, config, image processor, model/processor/pipeline code, card.

    The pipeline is saved too (`custom_pipelines` in `config.json` plus `pipeline_upocr.py`), so
    `pipeline(model=folder, trust_remote_code=True)` works where `upocr_hf` is not installed. The model's
    train/eval mode is left as it was. `card_kwargs` go to `render_model_card` (`training_data`, `repo_id`,
    `template`).

    Args:
        model: a `UpocrModel`.
        processor: its `UpocrImageProcessor` (`None`: the default one, `UpocrImageProcessor.for_model()`).
        folder: where to write (created if needed; existing files of the same names are overwritten).
        metrics, training: see `render_model_card`.

    Returns:
        The folder.
    """
    from .image_processing_upocr import UpocrImageProcessor

    if processor is None:
        processor = UpocrImageProcessor.for_model()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_with_code(model, processor, folder)
    write_model_card(folder, metrics, training, **card_kwargs)
    return folder


def _save_with_code(model: Any, processor: Any, folder: Path) -> None:
    """Save model, processor and pipeline with their code (`auto_map`, `custom_pipelines`) into `folder`; the
    model's train/eval mode is left as it was."""
    from .pipeline_upocr import UpocrPipeline, register_pipeline

    register_pipeline()  # `custom_pipelines` is written only for a registered pipeline class
    was_training = model.training
    try:
        UpocrPipeline(model=model, image_processor=processor, device=model.device).save_pretrained(folder)
    finally:
        model.train(was_training)


def hub_operations(folder: str | os.PathLike) -> list[CommitOperationAdd]:
    """One `CommitOperationAdd` per file under `folder` (recursively; hidden files and folders are skipped)."""
    root = Path(folder)
    operations = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            operations.append(CommitOperationAdd(path_in_repo=relative.as_posix(), path_or_fileobj=str(path)))
    return operations


def push_to_hub(
    model: Any,
    processor: Any | None,
    repo_id: str,
    *,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    training: Mapping[str, Any] | None = None,
    training_data: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = COMMIT_MESSAGE,
    commit_description: str | None = None,
) -> Any:
    """Upload model + image processor + code + model card to `repo_id` in one commit (creating the repo if needed).

    Returns the `huggingface_hub.CommitInfo` of the commit.
    """
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upocr-hub-") as staging:
        prepare_hub_folder(
            model, processor, staging, metrics, training, training_data=training_data, repo_id=repo_id
        )
        return api.create_commit(
            repo_id=repo_id,
            operations=hub_operations(staging),
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


def copy_with_code(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy the saved UPOCR folder `source` to `destination` with the model, image processor and pipeline code
    added (`auto_map`, `custom_pipelines`), so that `pipeline(model=destination, trust_remote_code=True)` works where
    `upocr_hf` is not installed. Every file of `source` comes along (card, figures, pictures); the weights are
    written again, unchanged. A folder saved without `preprocessor_config.json` gets the default processor at its
    model's input size. The copy is assembled beside `destination` and renamed into place when complete.

    Raises:
        FileExistsError: `destination` exists (nothing is replaced).
    """
    from .image_processing_upocr import UpocrImageProcessor

    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} exists; choose a new folder")
    if destination.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"{destination} lies inside {source}; choose a folder outside it")
    model = UpocrModel.from_pretrained(source)
    # a folder saved without a processor gets the default one at its model's size
    processor = UpocrImageProcessor.for_model(source)
    # the folder's files, not its version control, caches or code of another version (written anew below)
    ignored = shutil.ignore_patterns(".git", ".cache", "__pycache__", "*.py", "pytorch_model.bin")
    with staged_folder(destination) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=ignored)
        _save_with_code(model, processor, staging)
    return destination


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m upocr_hf.hub copy-with-code SOURCE DESTINATION`."""
    parser = CommandParser(prog="python -m upocr_hf.hub", description="Hub-ready UPOCR folders.")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = "copy a saved folder, adding the model, processor and pipeline code"
    copy = commands.add_parser("copy-with-code", help=summary, description=summary.capitalize() + ".")
    copy.add_argument("source", help="a saved UPOCR folder")
    copy.add_argument("destination", help="the new folder to write")
    args = parser.parse_args(argv)
    try:
        folder = copy_with_code(args.source, args.destination)
    except (OSError, ValueError) as error:
        print(f"upocr_hf.hub: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder} (model, image processor, pipeline and their code)")
    return 0


UpocrModel.hub_folder_uploader = (
    push_to_hub  # `model.push_to_hub` sends the whole folder (see UpocrModel.push_to_hub)
)

__all__ = [
    "MODEL_CARD_TEMPLATE",
    "copy_with_code",
    "format_metrics",
    "format_training",
    "hub_operations",
    "load_evaluation_results",
    "prepare_hub_folder",
    "push_to_hub",
    "render_model_card",
    "write_model_card",
]


if __name__ == "__main__":
    sys.exit(main())

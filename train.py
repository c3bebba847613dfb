#!/usr/bin/env python
"""Train UPOCR with the paper's multi-task recipe, driven by 🤗 Accelerate.

    accelerate launch train.py --data text-removal=DIR text-segmentation=DIR tampered-text-detection=DIR \\
        --output_dir runs/upocr
    accelerate launch train.py recipe.yaml          # the same options from a YAML file

Every step takes one batch per task (`--batch_size_per_task` images per process), concatenates them and runs one
forward pass with a task prompt per sample. The tasks are those given `--data`. Checkpoints (`save_state`) are
written every `--checkpointing_steps` under `OUTPUT_DIR/checkpoints/step_<N>` (staged and renamed, the last
`--checkpoints_total_limit` kept); `--resume_from_checkpoint latest` continues exactly where one left off. The end
of training writes a `save_pretrained` folder in `OUTPUT_DIR/final`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list, set_seed
from datasets import IterableDataset
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from upocr_hf.checkpointing import (
    CheckpointError,
    CheckpointFolders,
    TrainingProgress,
    load_checkpoint,
    save_checkpoint,
)
from upocr_hf.command_line import DefaultsHelpFormatter, describe
from upocr_hf.configuration_upocr import CONFIG_PRESETS
from upocr_hf.data import DatasetFolderError, MultiTaskDataLoader, UpocrAugment, load_task_datasets
from upocr_hf.data.rendered import RenderedTaskDataset, SyntheticSource, require_rendered_task
from upocr_hf.evaluation import evaluate_model
from upocr_hf.file_utils import staged_folder
from upocr_hf.hub import prepare_hub_folder
from upocr_hf.image_processing_upocr import UpocrImageProcessor
from upocr_hf.losses import PERCEPTUAL_CHOICES, UpocrLoss
from upocr_hf.pipeline_upocr import UpocrPipeline
from upocr_hf.tasks import get_task
from upocr_hf.training import (
    PaperSchedule,
    build_model,
    enable_activation_checkpointing,
    gather_full_model,
    optimizer_param_groups,
    parse_class_weights,
    parse_removal_term_weights,
    parse_split_overrides,
    parse_task_folders,
    parse_task_weights,
)

#: Accelerate's logger: a line is written by the main process only.
logger = get_logger("upocr_hf.train")


@dataclass
class TrainArguments:
    """Options of `train.py`; defaults are the paper's recipe."""

    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "TASK=DIR for each task to train (a folder in the layout of its public dataset: SCUT-EnsText, TextSeg, Tampered-IC13, or image pairs), or TASK=synthetic:LOOK[:WEIGHT][,LOOK[:WEIGHT]...] for synthetic data rendered as it is read, at --image_size, never repeating (looks: photos, signs, training; e.g. synthetic:photos:3,signs:1)."
        },
    )
    train_splits: list[str] = field(
        default_factory=list,
        metadata={
            "help": "TASK=SPLIT[,SPLIT] overrides of the paper's training splits (TextSeg: train,val)."
        },
    )
    output_dir: str = field(
        default="runs/upocr", metadata={"help": "Where checkpoints and the final model go."}
    )
    init_from: str = field(
        default="scratch",
        metadata={"help": "'scratch', a save_pretrained folder, or an authors' checkpoint file."},
    )
    config: str = field(
        default="paper",
        metadata={"help": f"For scratch: a preset {sorted(CONFIG_PRESETS)} or a config.json path."},
    )
    deepen_to: str | None = field(
        default=None,
        metadata={
            "help": f"With a trained --init_from: a preset {sorted(CONFIG_PRESETS)} or config.json with its widths and "
            "more blocks per stage; the added blocks start as identities."
        },
    )
    image_size: int = field(
        default=512,
        metadata={
            "help": "Side of the training crops (a multiple of 32); recorded in the model card's training details. "
            "The size the trained model runs at is its image processor's: the --init_from folder's, or this size."
        },
    )
    max_steps: int = field(default=80_000, metadata={"help": "Optimizer updates in all."})
    batch_size_per_task: int = field(default=8, metadata={"help": "Images per task per process per step."})
    learning_rate: float = field(
        default=5e-4, metadata={"help": "Peak learning rate (decoder, bottleneck, prompts)."}
    )
    encoder_lr_ratio: float = field(default=0.1, metadata={"help": "The encoder's learning rate factor."})
    lateral_lr_ratio: float = field(
        default=1.0,
        metadata={
            "help": "The lateral skip branches' learning rate factor (paper: 1; from scratch 0.1 keeps the task prompt alive)."
        },
    )
    warmup_start_lr: float = field(default=1e-4)
    final_lr: float = field(default=1e-5)
    warmup_steps: int = field(default=2_000)
    lr_block: int = field(
        default=200, metadata={"help": "The rate is held constant within blocks of this many steps."}
    )
    weight_decay: float = field(default=1e-4)
    max_grad_norm: float = field(
        default=0.1,
        metadata={"help": "Under DeepSpeed, written into its config's gradient_clipping (its engine clips)."},
    )
    gradient_accumulation_steps: int = field(default=1)
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no | bf16 | fp16; left out, `accelerate config` / `accelerate launch --mixed_precision` decide."
        },
    )
    gradient_checkpointing: bool = field(default=False)
    torch_compile: bool = field(
        default=False,
        metadata={
            "help": "Compile the model with torch.compile (inductor), as `accelerate launch --dynamo_backend "
            "inductor` does; the first steps take minutes to compile. Left off, Accelerate's own configuration decides."
        },
    )
    task_loss_weights: list[str] = field(
        default_factory=list,
        metadata={"help": "TASK=WEIGHT factors of each task's loss in the total (paper: every task 1)."},
    )
    class_loss_weights: list[str] = field(
        default_factory=list,
        metadata={
            "help": "TASK=W0,W1[,W2]: weight of the pixels of each class (mask: background, text; class map: "
            "background, real, tampered) in that task's loss (paper: all 1)."
        },
    )
    perceptual_loss: str = field(
        default="imagenet",
        metadata={"help": f"VGG-16 for the perceptual/style losses: {' | '.join(PERCEPTUAL_CHOICES)}."},
    )
    vgg_weights_path: str | None = field(
        default=None,
        metadata={"help": "torchvision VGG-16 weights for 'local'; another craft_mlt_25k.pth for 'craft'."},
    )
    perceptual_size: int | None = field(
        default=None,
        metadata={
            "help": "Feed the perceptual/style VGG images of at most this many pixels on the longer side "
            "(default: the crop's own size, as the paper); cheaper on CPUs."
        },
    )
    removal_term_weights: list[str] = field(
        default_factory=list,
        metadata={
            "help": "TERM=WEIGHT for the removal loss's perceptual and style terms (paper: perceptual=0.01 "
            "style=120, chosen for the ImageNet VGG; CRAFT's batch-normalised features are on another scale)."
        },
    )
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per task."})
    seed: int = field(default=0)
    logging_steps: int = field(default=50)
    checkpointing_steps: int = field(default=2_000)
    checkpoints_total_limit: int = field(default=3)
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder."}
    )
    max_consecutive_nonfinite: int = field(
        default=5,
        metadata={"help": "Stop after this many non-finite losses in a row (each such step is skipped)."},
    )
    validation_data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "TASK=DIR of held-out data (its --validation_split) for periodic validation with the metrics."
        },
    )
    validation_split: str = field(default="test")
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the --data that datasets.load_dataset reads (Hub ids, imagefolders, Parquet) as streams "
            "(IterableDataset), as training goes, instead of preparing them in the datasets cache first."
        },
    )
    on_bad_sample: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "A sample whose files are missing or broken stops the run (error) or is left out (skip, counted in the log)."
        },
    )
    eval_steps: int = field(
        default=2_000, metadata={"help": "Validate every this many steps (and at the end)."}
    )
    report_to: str = field(
        default="none", metadata={"help": "Accelerate trackers: none | all | tensorboard | wandb."}
    )
    record_samples: bool = field(
        default=False,
        metadata={"help": "Append the sample names each rank trains on to OUTPUT_DIR/samples_rank<R>.jsonl."},
    )


class _Yaml12Loader(yaml.SafeLoader):
    """YAML where only true/false are booleans (YAML 1.2): `perceptual_loss: off` and `mixed_precision: no` stay the
    strings they are options of, instead of YAML 1.1's False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


_FLAG_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _yaml_flags(recipe: dict) -> dict:
    """The recipe with its on/off options as booleans (`gradient_checkpointing: no` means False, as on the command
    line); `ValueError` naming the option for anything else."""
    flags = {f.name for f in fields(TrainArguments) if f.type in ("bool", bool)}
    converted = dict(recipe)
    for name in flags & set(converted):
        value = converted[name]
        if isinstance(value, str) and value.lower() in _FLAG_WORDS:
            converted[name] = _FLAG_WORDS[value.lower()]
        elif not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false (yes/no, on/off), got {value!r}")
    return converted


def parse_args(argv: list[str]) -> TrainArguments:
    parser = HfArgumentParser(
        TrainArguments, description=describe(__doc__), formatter_class=DefaultsHelpFormatter
    )
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        recipe = yaml.load(Path(argv[0]).read_text(), Loader=_Yaml12Loader)  # a SafeLoader: plain data only
        (args,) = parser.parse_dict(_yaml_flags(recipe))
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    if not args.data:
        parser.error("--data needs at least one TASK=DIR")
    if args.image_size % 32:
        parser.error(f"--image_size must be a multiple of 32, got {args.image_size}")
    try:  # a typo in a term is refused before anything is built
        parse_removal_term_weights(args.removal_term_weights)
    except ValueError as error:
        parser.error(f"--removal_term_weights: {error}")
    for name, least in _LEAST_VALUES.items():
        if getattr(args, name) < least:
            parser.error(f"--{name} must be at least {least}, got {getattr(args, name)}")
    return args


#: The integer options' smallest meaningful values (the schedule needs an update to run; 0 workers is the main
#: process).
_LEAST_VALUES = {
    "image_size": 32, "max_steps": 1, "batch_size_per_task": 1, "warmup_steps": 0, "lr_block": 1,
    "gradient_accumulation_steps": 1, "num_workers": 0, "logging_steps": 1, "checkpointing_steps": 1,
    "max_consecutive_nonfinite": 1, "eval_steps": 1,
}  # fmt: skip


#: `--on_bad_sample` → the data loaders' `on_error`.
LOADER_ON_ERROR = {"error": "raise", "skip": "skip"}


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive steps have a non-finite loss."""


def apply_gradient_clipping(deepspeed_config: dict, max_grad_norm: float) -> None:
    """Make DeepSpeed clip at `--max_grad_norm`: its engine clips inside `step()` (accelerate's `clip_grad_norm_`
    does nothing there) at the config's `gradient_clipping`, which accelerate fills with 1.0 when it says "auto" or
    nothing. A config that names another number is refused rather than silently beating the flag."""
    configured = deepspeed_config.get("gradient_clipping", "auto")
    if configured not in ("auto", None) and float(configured) != max_grad_norm:
        raise ValueError(
            f"the DeepSpeed config's gradient_clipping is {configured} but --max_grad_norm is {max_grad_norm}: "
            "DeepSpeed clips with its config's value, so make the two agree (or set gradient_clipping to auto)"
        )
    deepspeed_config["gradient_clipping"] = max_grad_norm


def build_accelerator(args: TrainArguments) -> Accelerator:
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
        step_scheduler_with_optimizer=False,  # the schedule is in optimizer updates, whatever the world size
        dynamo_backend="inductor" if args.torch_compile else None,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if accelerator.state.deepspeed_plugin is not None:
        apply_gradient_clipping(accelerator.state.deepspeed_plugin.deepspeed_config, args.max_grad_norm)
    logger.info(
        "mixed precision: %s; %d process(es), %s",
        accelerator.mixed_precision,
        accelerator.num_processes,
        accelerator.distributed_type.value,
    )
    return accelerator


def training_sources(args: TrainArguments) -> dict[str, Path | SyntheticSource]:
    """`--data` read: each task's folder, or the looks of its rendered synthetic data (checked before any work)."""
    sources = {
        task: SyntheticSource.parse(str(folder)) if SyntheticSource.names(folder) else folder
        for task, folder in parse_task_folders(args.data).items()
    }
    rendered = [task for task, source in sources.items() if isinstance(source, SyntheticSource)]
    for task in rendered:
        try:
            require_rendered_task(task)
        except ValueError as error:
            raise ValueError(f"--data {task}=...: {error}") from None
    with_splits = [task for task in parse_split_overrides(args.train_splits) if task in rendered]
    if with_splits:
        raise ValueError(f"--train_splits for {with_splits}: rendered synthetic data has no splits")
    return sources


def training_loader(
    args: TrainArguments,
    sources: dict[str, Path | SyntheticSource],
    model: torch.nn.Module,
    accelerator: Accelerator,
) -> MultiTaskDataLoader:
    """One endless loader over every task's training splits, each augmented by its task's recipe."""
    folders = {task: source for task, source in sources.items() if isinstance(source, Path)}
    overrides = parse_split_overrides(args.train_splits)
    splits = {task: overrides.get(task, list(get_task(task).train_splits)) for task in folders}
    datasets = load_task_datasets(
        folders, splits, streaming=args.streaming, on_error=LOADER_ON_ERROR[args.on_bad_sample]
    )
    for task, source in sources.items():
        if isinstance(source, SyntheticSource):
            datasets[task] = RenderedTaskDataset(task, source, size=args.image_size, seed=args.seed)
    datasets = {task: datasets[task] for task in sources}  # the registry's task order, as --data gave it
    augment = UpocrAugment(args.image_size, tasks=model.config.tasks)
    streams = [task for task, dataset in datasets.items() if isinstance(dataset, IterableDataset)]
    for task, dataset in datasets.items():
        if task not in streams:  # a stream is augmented by the loader, as it reads it
            dataset.set_transform(augment)
    if args.streaming:
        logger.info("streamed: %s; prepared first: %s", streams, [t for t in datasets if t not in streams])
    return MultiTaskDataLoader.from_accelerator(
        accelerator, datasets, args.batch_size_per_task, seed=args.seed, num_workers=args.num_workers,
        stream_transform=augment.apply_to_stream,
    )  # fmt: skip


def validation_datasets(args: TrainArguments, tasks: list[str]) -> dict:
    """`{task: Dataset}` of `--validation_data` (empty without it); every task must be trained and scored."""
    if not args.validation_data:
        return {}
    folders = parse_task_folders(args.validation_data)
    unknown = [t for t in folders if t not in tasks]
    if unknown:
        raise ValueError(f"--validation_data for task(s) {unknown} that --data does not train")
    rendered = [t for t, folder in folders.items() if SyntheticSource.names(folder)]
    if rendered:
        raise ValueError(
            f"--validation_data for {rendered}: validation needs a fixed folder, not rendered data (write one with "
            "python -m upocr_hf.data.synthetic)"
        )
    unscored = [t for t in folders if not get_task(t).selection_metric]
    if unscored:
        raise ValueError(f"--validation_data: task(s) {unscored} have no selection metric to validate with")
    splits = dict.fromkeys(folders, [args.validation_split])
    return load_task_datasets(folders, splits, on_error=LOADER_ON_ERROR[args.on_bad_sample])


def optimization(args: TrainArguments, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the recipe's parameter groups and the paper's block-wise schedule."""
    groups = optimizer_param_groups(
        model, args.learning_rate, args.encoder_lr_ratio, args.weight_decay, args.lateral_lr_ratio
    )
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    schedule = PaperSchedule(
        args.learning_rate,
        args.warmup_start_lr,
        args.final_lr,
        args.warmup_steps,
        args.max_steps,
        args.lr_block,
    )
    return optimizer, schedule.scheduler(optimizer)


class RunningLog:
    """Loss figures averaged over the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, figures: dict[str, float]) -> None:
        for key, value in figures.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1

    def flush(self, accelerator: Accelerator) -> dict[str, float]:
        """The means since the last flush, averaged over all processes (every rank logs the same keys)."""
        keys = sorted(self.sums)
        local = torch.tensor([self.sums[key] / max(self.steps, 1) for key in keys], device=accelerator.device)
        means = accelerator.reduce(local, reduction="mean").tolist() if keys else []
        self.sums, self.steps = {}, 0
        return dict(zip(keys, means))


class SampleRecorder:
    """`--record_samples`: the sample names each rank trains on, one JSON line per step."""

    def __init__(self, args: TrainArguments, accelerator: Accelerator) -> None:
        self.file = None
        if args.record_samples:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            path = Path(args.output_dir) / f"samples_rank{accelerator.process_index}.jsonl"
            self.file = open(path, "a")  # closed by close(), after the training loop

    def write(self, step: int, batch: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"step": step, "names": batch.get("names", [])}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def forward_backward(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loss_fn: UpocrLoss,
    optimizer: Any,
    batch: dict,
    args: TrainArguments,
) -> tuple[Any, bool]:
    """One (micro-)step; the update is skipped on every rank when any rank's loss is not finite. Returns the losses
    and whether they were finite everywhere."""
    with accelerator.accumulate(model):
        with accelerator.autocast():
            outputs = model(batch["pixel_values"], task=batch["task"])
        losses = loss_fn(
            outputs.multi_scale_predictions, batch["pixel_values"], batch["labels"], batch["text_mask"],
            batch["ignore_mask"], batch["task"],
        )  # fmt: skip
        finite = torch.isfinite(losses.loss.detach()).float()
        all_finite = accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes
        if all_finite:
            accelerator.backward(losses.loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses, all_finite


def log_step(
    accelerator: Accelerator, running: RunningLog, optimizer: Any, progress: TrainingProgress, bar: Any
) -> None:
    logs = running.flush(accelerator)
    for group in optimizer.param_groups:
        logs[f"lr/{group.get('name', 'group')}"] = group["lr"]
    logs["skipped_nonfinite"] = progress.skipped_nonfinite
    accelerator.log(logs, step=progress.step)
    bar.set_postfix(loss=f"{logs.get('loss', math.nan):.4f}")
    logger.info("step %d: %s", progress.step, json.dumps({k: round(v, 6) for k, v in logs.items()}))


@dataclass
class Run:
    """Everything a training loop touches, prepared by Accelerate."""

    args: TrainArguments
    accelerator: Accelerator
    model: torch.nn.Module
    loader: MultiTaskDataLoader
    loss_fn: UpocrLoss
    optimizer: Any
    scheduler: Any
    progress: TrainingProgress
    checkpoints: CheckpointFolders
    validation: dict


def prepare_run(args: TrainArguments) -> Run:
    """Model, data, loss and optimisation of a run, prepared by Accelerate and resumed when asked."""
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    sources = training_sources(args)
    model = build_model(args.init_from, args.config, list(sources), args.deepen_to)
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    loader = training_loader(args, sources, model, accelerator)
    loss_fn = UpocrLoss(
        model.config.tasks,
        perceptual=args.perceptual_loss,
        vgg_weights_path=args.vgg_weights_path,
        perceptual_size=args.perceptual_size,
        task_weights=parse_task_weights(args.task_loss_weights),
        class_weights=parse_class_weights(args.class_loss_weights),
        removal_term_weights=parse_removal_term_weights(args.removal_term_weights),
    )
    loss_fn.to(accelerator.device)
    logger.info("tasks %s; %s", list(sources), loss_fn.perceptual_description)
    optimizer, scheduler = optimization(args, model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    progress = TrainingProgress()
    checkpoints = CheckpointFolders(Path(args.output_dir) / "checkpoints", keep=args.checkpoints_total_limit)
    if accelerator.is_main_process:
        checkpoints.recover()
    accelerator.wait_for_everyone()
    if args.resume_from_checkpoint:
        load_checkpoint(accelerator, checkpoints.resolve(args.resume_from_checkpoint), progress, loader)
    validation = validation_datasets(args, list(sources))
    return Run(
        args, accelerator, model, loader, loss_fn, optimizer, scheduler, progress, checkpoints, validation
    )


def check_nonfinite(run: Run, consecutive: int) -> None:
    """Log a skipped step; stop the run after `--max_consecutive_nonfinite` of them in a row."""
    logger.warning("non-finite loss at step %d: step skipped (%d in a row)", run.progress.step, consecutive)
    if consecutive >= run.args.max_consecutive_nonfinite:
        raise NonFiniteLossError(
            f"{consecutive} consecutive non-finite losses at step {run.progress.step}; stopping. "
            f"The last good checkpoint is {run.checkpoints.latest()}"
        )


def train_steps(run: Run) -> None:
    """Optimizer updates until `--max_steps`, logging, validating and checkpointing on their schedules."""
    args, progress = run.args, run.progress
    samples = SampleRecorder(args, run.accelerator)
    bar = tqdm(total=args.max_steps, initial=progress.step, disable=not run.accelerator.is_local_main_process)
    consecutive_nonfinite = 0
    running = RunningLog()
    while progress.step < args.max_steps:
        batch = run.loader.next_batch()
        samples.write(progress.step, batch)
        losses, all_finite = forward_backward(
            run.accelerator, run.model, run.loss_fn, run.optimizer, batch, args
        )
        if not run.accelerator.sync_gradients:
            continue
        if not all_finite:
            progress.skipped_nonfinite += 1
            consecutive_nonfinite += 1
            check_nonfinite(run, consecutive_nonfinite)
            continue
        consecutive_nonfinite = 0
        run.scheduler.step()
        progress.step += 1
        bar.update(1)
        running.add(losses.to_log_dict())
        last = progress.step == args.max_steps
        if progress.step % args.logging_steps == 0 or last:
            log_step(run.accelerator, running, run.optimizer, progress, bar)
        if run.validation and (progress.step % args.eval_steps == 0 or last):
            validate(run.accelerator, run.model, run.validation, progress, args)
        if progress.step % args.checkpointing_steps == 0 or last:
            save_checkpoint(run.accelerator, run.checkpoints, progress, run.loader)
    bar.close()
    samples.close()


def train(args: TrainArguments) -> Path:
    """Run (or resume) a training run; returns the final `save_pretrained` folder."""
    output_dir = Path(args.output_dir)
    run = prepare_run(args)
    accelerator, model = run.accelerator, run.model
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_args.json").write_text(json.dumps(asdict(args), indent=2))
    accelerator.init_trackers(
        "upocr", config={k: v for k, v in asdict(args).items() if not isinstance(v, list)}
    )
    train_steps(run)

    final_dir = output_dir / "final"
    final_model = gather_full_model(accelerator, model)  # on every rank: FSDP gathers the shards
    if final_model is not None:
        save_final_model(final_model, final_dir, args)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final_dir


def validate(
    accelerator: Accelerator,
    model: torch.nn.Module,
    datasets: dict,
    progress: TrainingProgress,
    args: TrainArguments,
) -> None:
    """Score the model on each validation set and keep the best model in `OUTPUT_DIR/best`. Every rank gathers the
    full weights (FSDP and ZeRO-3 shard them); the main process scores and saves them while the others wait.

    The selection score is the mean over tasks of one figure in [0, 1] each, higher is better: each task's
    `Task.selection_metric` (MSSIM for text removal, fgIoU for text segmentation, mF for tampered text detection).
    The model is scored by the paper's protocol at the input size of the processor it will be saved with.
    """
    full_model = gather_full_model(accelerator, model)
    if full_model is not None:
        pipe = UpocrPipeline(
            model=full_model,
            image_processor=trained_model_processor(args),
            device=accelerator.device,
        )
        logs, scores = {}, []
        for task, dataset in datasets.items():
            figures = evaluate_model(pipe, dataset, task, batch_size=args.batch_size_per_task, progress=False)
            for key, value in figures.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    logs[f"eval/{task}/{key}"] = value
            scores.append(figures.get(get_task(task).selection_metric) or 0.0)
        score = sum(scores) / len(scores)
        logs["eval/score"] = score
        accelerator.log(logs, step=progress.step)
        logger.info("validation at step %d: score %.4f %s", progress.step, score, json.dumps(logs))
        if progress.best_metric is None or score > progress.best_metric:
            progress.best_metric, progress.best_step = score, progress.step
            save_final_model(full_model, Path(args.output_dir) / "best", args)
    accelerator.wait_for_everyone()
    # every rank keeps the same record of the best score (each rank saves it with its checkpoint state)
    best = broadcast_object_list([progress.best_metric, progress.best_step], from_process=0)
    progress.best_metric, progress.best_step = best


def trained_model_processor(args: TrainArguments) -> UpocrImageProcessor:
    """The image processor saved with (and validating) a trained model: the one of the `save_pretrained` folder it
    started from, as it is (its input size and inference defaults, `do_tile` and `segmentation_threshold`, carry
    over: the size a model runs at need not be its training crop's); at the training crop's size when it started
    from scratch, from an authors' checkpoint file or from a folder saved without a processor."""
    folder = Path(args.init_from)
    return UpocrImageProcessor.for_model(folder if folder.is_dir() else None, size=args.image_size)


def save_final_model(model: torch.nn.Module, final_dir: Path, args: TrainArguments) -> None:
    """Write a Hub-ready `save_pretrained` folder (model, image processor, pipeline code, model card), staged."""
    with staged_folder(final_dir) as staging:
        size = args.image_size
        training = {
            "command": "train.py " + " ".join(sys.argv[1:]),
            "tasks": list(model.config.tasks),
            "data": args.data,
            "steps": args.max_steps,
            "images per task per process per step": args.batch_size_per_task,
            "training crop": f"{size}×{size}",
            "perceptual/style loss": args.perceptual_loss,
            "perceptual/style size": args.perceptual_size or f"{size} (the crop)",
        }
        if args.perceptual_loss != "off":
            training["perceptual/style weights"] = parse_removal_term_weights(args.removal_term_weights)
        prepare_hub_folder(model, trained_model_processor(args), staging, training=training)
        (staging / "training_args.json").write_text(json.dumps(asdict(args), indent=2))
    logger.info("saved the trained model to %s", final_dir)


def main(argv: list[str] | None = None) -> int:
    """Train; a run that cannot start or go on ends with a one-line reason and exit status 2."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        train(args)
    # ValueError: a malformed option value (TASK=DIR, weights, a task name that is a typo), found after parsing
    except (CheckpointError, NonFiniteLossError, DatasetFolderError, FileNotFoundError, ValueError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

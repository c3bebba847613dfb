#!/usr/bin/env python
"""Train UPOCR with the paper's multi-task recipe (spec §4), driven by 🤗 Accelerate.

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
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from upocr_hf.configuration_upocr import CONFIG_PRESETS
from upocr_hf.data import MultiTaskDataLoader, UpocrAugment, load_task_datasets
from upocr_hf.evaluate import evaluate_model
from upocr_hf.file_utils import staged_folder
from upocr_hf.hub import prepare_hub_folder
from upocr_hf.image_processing_upocr import UpocrImageProcessor
from upocr_hf.losses import PERCEPTUAL_CHOICES, UpocrLoss
from upocr_hf.pipeline_upocr import UpocrPipeline
from upocr_hf.tasks import get_task
from upocr_hf.training import (
    CheckpointFolders,
    PaperSchedule,
    TrainingProgress,
    build_model,
    optimizer_param_groups,
    parse_split_overrides,
    parse_task_folders,
    parse_task_weights,
)

logger = logging.getLogger("upocr_hf.train")


@dataclass
class TrainArguments:
    """Options of `train.py`; defaults are the paper's recipe."""

    data: list[str] = field(
        default_factory=list,
        metadata={"help": "TASK=DIR for each task to train (dataset folders in the layouts of spec §5)."},
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
    image_size: int = field(default=512, metadata={"help": "Training resolution (a multiple of 32)."})
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
    max_grad_norm: float = field(default=0.1)
    gradient_accumulation_steps: int = field(default=1)
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (through Accelerate)."})
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
    perceptual_loss: str = field(
        default="imagenet",
        metadata={"help": f"VGG-16 for the perceptual/style losses: {' | '.join(PERCEPTUAL_CHOICES)}."},
    )
    vgg_weights_path: str | None = field(
        default=None, metadata={"help": "torchvision VGG-16 weights for 'local'."}
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


def parse_args(argv: list[str]) -> TrainArguments:
    parser = HfArgumentParser(TrainArguments)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (args,) = parser.parse_yaml_file(os.path.abspath(argv[0]))
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    if not args.data:
        parser.error("--data needs at least one TASK=DIR")
    if args.image_size % 32:
        parser.error(f"--image_size must be a multiple of 32, got {args.image_size}")
    return args


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive steps have a non-finite loss."""


def train(args: TrainArguments) -> Path:
    """Run (or resume) a training run; returns the final `save_pretrained` folder."""
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,  # the schedule is in optimizer updates, whatever the world size
        dynamo_backend="inductor" if args.torch_compile else None,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(args.seed)

    folders = parse_task_folders(args.data)
    tasks = list(folders)
    model = build_model(args.init_from, args.config, tasks, args.image_size)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    model.train()

    overrides = parse_split_overrides(args.train_splits)
    splits = {task: overrides.get(task, list(get_task(task).train_splits)) for task in folders}
    datasets = load_task_datasets(folders, splits)
    for dataset in datasets.values():
        dataset.set_transform(UpocrAugment(args.image_size, tasks=model.config.tasks))
    loader = MultiTaskDataLoader.from_accelerator(
        accelerator, datasets, args.batch_size_per_task, seed=args.seed, num_workers=args.num_workers
    )
    loss_fn = UpocrLoss(
        model.config.tasks,
        perceptual=args.perceptual_loss,
        vgg_weights_path=args.vgg_weights_path,
        task_weights=parse_task_weights(args.task_loss_weights),
    )
    loss_fn.to(accelerator.device)
    logger.info("tasks %s; %s", tasks, loss_fn.perceptual_description)

    optimizer = torch.optim.AdamW(
        optimizer_param_groups(
            model, args.learning_rate, args.encoder_lr_ratio, args.weight_decay, args.lateral_lr_ratio
        ),
        lr=args.learning_rate,
    )
    schedule = PaperSchedule(
        args.learning_rate,
        args.warmup_start_lr,
        args.final_lr,
        args.warmup_steps,
        args.max_steps,
        args.lr_block,
    )
    scheduler = schedule.scheduler(optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(loader, progress)
    checkpoints = CheckpointFolders(output_dir / "checkpoints", keep=args.checkpoints_total_limit)

    if args.resume_from_checkpoint:
        resume_dir = checkpoints.resolve(args.resume_from_checkpoint)
        accelerator.load_state(str(resume_dir))
        logger.info("resumed from %s at step %d", resume_dir, progress.step)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_args.json").write_text(json.dumps(asdict(args), indent=2))
    accelerator.init_trackers(
        "upocr", config={k: v for k, v in asdict(args).items() if not isinstance(v, list)}
    )

    samples_log = None
    if args.record_samples:
        output_dir.mkdir(parents=True, exist_ok=True)
        samples_log = open(output_dir / f"samples_rank{accelerator.process_index}.jsonl", "a")  # noqa: SIM115

    validation = {}
    if args.validation_data:
        validation_folders = parse_task_folders(args.validation_data)
        unknown = [t for t in validation_folders if t not in tasks]
        if unknown:
            raise ValueError(f"--validation_data for task(s) {unknown} that --data does not train")
        unscored = [t for t in validation_folders if not get_task(t).selection_metric]
        if unscored:
            raise ValueError(
                f"--validation_data: task(s) {unscored} have no selection metric to validate with"
            )
        validation = load_task_datasets(
            validation_folders, dict.fromkeys(validation_folders, [args.validation_split])
        )

    bar = tqdm(total=args.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process)
    consecutive_nonfinite = 0
    running: dict[str, float] = {}
    running_steps = 0
    while progress.step < args.max_steps:
        batch = loader.next_batch()
        if samples_log is not None:
            samples_log.write(json.dumps({"step": progress.step, "names": batch.get("names", [])}) + "\n")
            samples_log.flush()
        with accelerator.accumulate(model):
            with accelerator.autocast():
                outputs = model(batch["pixel_values"], task=batch["task_ids"])
            losses = loss_fn(
                outputs.multi_scale_predictions,
                batch["pixel_values"],
                batch["labels"],
                batch["text_mask"],
                batch["ignore_mask"],
                batch["task_ids"],
            )
            finite = torch.isfinite(losses.loss.detach()).float()
            all_finite = accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes
            if all_finite:
                accelerator.backward(losses.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        if not all_finite:
            progress.skipped_nonfinite += 1
            consecutive_nonfinite += 1
            logger.warning(
                "non-finite loss at step %d: step skipped (%d in a row)", progress.step, consecutive_nonfinite
            )
            if consecutive_nonfinite >= args.max_consecutive_nonfinite:
                raise NonFiniteLossError(
                    f"{consecutive_nonfinite} consecutive non-finite losses at step {progress.step}; stopping. "
                    f"The last good checkpoint is {checkpoints.latest()}"
                )
            continue
        consecutive_nonfinite = 0
        scheduler.step()
        progress.step += 1
        bar.update(1)
        for key, value in losses.to_log_dict().items():
            running[key] = running.get(key, 0.0) + value
        running_steps += 1
        if progress.step % args.logging_steps == 0 or progress.step == args.max_steps:
            logs = {key: value / running_steps for key, value in running.items()}
            for group in optimizer.param_groups:
                logs[f"lr/{group.get('name', 'group')}"] = group["lr"]
            logs["skipped_nonfinite"] = progress.skipped_nonfinite
            accelerator.log(logs, step=progress.step)
            bar.set_postfix(loss=f"{logs.get('loss', math.nan):.4f}")
            logger.info("step %d: %s", progress.step, json.dumps({k: round(v, 6) for k, v in logs.items()}))
            running.clear()
            running_steps = 0
        if validation and (progress.step % args.eval_steps == 0 or progress.step == args.max_steps):
            validate(accelerator, model, validation, progress, args)
        if progress.step % args.checkpointing_steps == 0 or progress.step == args.max_steps:
            save_checkpoint(accelerator, checkpoints, progress)
    bar.close()
    if samples_log is not None:
        samples_log.close()

    final_dir = output_dir / "final"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(model, keep_torch_compile=False), final_dir, args)
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
    """Score the model on each validation set (main process) and keep the best model in `OUTPUT_DIR/best`.

    The selection score is the mean over tasks of one figure in [0, 1] each, higher is better: each task's
    `Task.selection_metric` (MSSIM for text removal, fgIoU for text segmentation, mF for tampered text detection).
    """
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
        pipe = UpocrPipeline(
            model=unwrapped,
            image_processor=UpocrImageProcessor.for_model(unwrapped.config),
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
            save_final_model(unwrapped, Path(args.output_dir) / "best", args)
        unwrapped.train()
    accelerator.wait_for_everyone()
    # every rank keeps the same record of the best score (each rank saves it with its checkpoint state)
    best = broadcast_object_list([progress.best_metric, progress.best_step], from_process=0)
    progress.best_metric, progress.best_step = best


def save_checkpoint(
    accelerator: Accelerator, checkpoints: CheckpointFolders, progress: TrainingProgress
) -> None:
    """`save_state` into a staging folder on every rank, then rename it into place on the main process."""
    staging = checkpoints.staging_path(progress.step)
    if accelerator.is_main_process:
        checkpoints.staging(progress.step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = checkpoints.commit(progress.step, extra=progress.state_dict())
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()


def save_final_model(model: torch.nn.Module, final_dir: Path, args: TrainArguments) -> None:
    """Write a Hub-ready `save_pretrained` folder (model, image processor, pipeline code, model card), staged."""
    with staged_folder(final_dir) as staging:
        size = model.config.image_size
        training = {
            "command": "train.py " + " ".join(sys.argv[1:]),
            "tasks": list(model.config.tasks),
            "data": args.data,
            "steps": args.max_steps,
            "images per task per process per step": args.batch_size_per_task,
            "resolution": f"{size}×{size}",
            "perceptual/style loss": args.perceptual_loss,
        }
        prepare_hub_folder(model, UpocrImageProcessor.for_model(model.config), staging, training=training)
        (staging / "training_args.json").write_text(json.dumps(asdict(args), indent=2))
    logger.info("saved the trained model to %s", final_dir)


def main(argv: list[str] | None = None) -> None:
    train(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

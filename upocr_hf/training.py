"""Building blocks of the paper's training recipe, used by the repository's `train.py`.

Kept in the package (not in the script) so they can be tested and reused: the learning-rate schedule, the
optimizer's parameter groups, model initialisation, task datasets, and crash-safe checkpoint folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .configuration_upocr import CONFIG_PRESETS, UpocrConfig
from .modeling_upocr import UpocrModel
from .tasks import find_task, get_task, order_tasks, registered_tasks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperSchedule:
    """The paper's learning rate, held constant within blocks of `block` iterations.

    Linear warm-up from `warmup_start_lr` to `peak_lr` over the first `warmup_steps` iterations, then linear decay
    reaching `final_lr` at `total_steps`. The rate of a block is the rate at its first iteration; the last
    iteration's rate is exactly `final_lr`.
    """

    peak_lr: float = 5e-4
    warmup_start_lr: float = 1e-4
    final_lr: float = 1e-5
    warmup_steps: int = 2_000
    total_steps: int = 80_000
    block: int = 200

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.block < 1 or self.warmup_steps < 0:
            raise ValueError(f"invalid schedule: {self}")

    def lr_at(self, step: int) -> float:
        """Learning rate of iteration `step` (0-based) for parameters whose base rate is `peak_lr`."""
        if step >= self.total_steps - 1:
            return self.final_lr
        start = (step // self.block) * self.block
        if start < self.warmup_steps:
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * start / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        return self.peak_lr - (self.peak_lr - self.final_lr) * (start - self.warmup_steps) / decay_steps

    def multiplier(self, step: int) -> float:
        """`lr_at(step) / peak_lr`: the factor `torch.optim.lr_scheduler.LambdaLR` applies to every group."""
        return self.lr_at(step) / self.peak_lr

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A `LambdaLR` that follows this schedule when stepped once per optimizer update."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.multiplier)


def optimizer_param_groups(
    model: UpocrModel,
    lr: float,
    encoder_lr_ratio: float = 0.1,
    weight_decay: float = 1e-4,
    lateral_lr_ratio: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW groups: the encoder at `lr * encoder_lr_ratio`, the decoder's lateral branches at
    `lr * lateral_lr_ratio`, everything else at `lr`.

    The paper trains the lateral branches at the decoder's rate (`lateral_lr_ratio=1`, the default). From scratch,
    each branch's four stacked linear convolutions grow multiplicatively under Adam and drown the task prompt within a
    few dozen steps, so every task gets the same output; a smaller rate for them avoids that (see the model card of the
    shipped default model). Weight decay applies to every parameter, as the recipe states a single AdamW weight decay.
    The lateral group is omitted when empty.
    """
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    lateral = [p for p in model.decoder.lateral_connections.parameters() if p.requires_grad]
    grouped = {id(p) for p in encoder + lateral}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    groups = [
        {"params": encoder, "lr": lr * encoder_lr_ratio, "weight_decay": weight_decay, "name": "encoder"},
        {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "decoder"},
    ]
    if lateral:
        groups.append(
            {"params": lateral, "lr": lr * lateral_lr_ratio, "weight_decay": weight_decay, "name": "lateral"}
        )
    return groups


def enable_activation_checkpointing(model: UpocrModel) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (less memory, more time).

    transformers 5.23 renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable` (the old name
    warns there); this calls whichever the installed version has, so the declared floor keeps working."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def build_model(init_from: str, config: str, tasks: Sequence[str]) -> UpocrModel:
    """The model a run starts from.

    Args:
        init_from: `"scratch"`, a `save_pretrained` folder, or an authors' checkpoint file (`.pth`/`.safetensors`,
            converted on the fly).
        config: for `"scratch"`, a preset name from `CONFIG_PRESETS` or a path to a `config.json`.
        tasks: the tasks the run trains; a pretrained model gets new task prompts for those it does not know.
    """
    if init_from == "scratch":
        if config in CONFIG_PRESETS:
            model_config = UpocrConfig(**CONFIG_PRESETS[config], tasks=list(tasks))
        elif Path(config).is_file():
            model_config = UpocrConfig.from_json_file(config)
            model_config.tasks = list(tasks)
            model_config.validate_architecture()
        else:
            raise ValueError(
                f"--config {config!r} is neither a preset {sorted(CONFIG_PRESETS)} nor a config.json file"
            )
        return UpocrModel(model_config)
    path = Path(init_from)
    if path.is_dir():
        model = UpocrModel.from_pretrained(path)
    elif path.is_file():
        from .convert_original_checkpoint import load_original_model

        model = load_original_model(path)
    else:
        raise ValueError(f"--init_from {init_from!r}: not 'scratch', a model folder or a checkpoint file")
    added = model.add_tasks(tasks)
    if added:
        logger.info(
            "added task prompts for %s to the initial model (it knew %s)",
            added,
            model.config.tasks[: -len(added)],
        )
    return model


def gather_full_model(accelerator: Any, model: torch.nn.Module) -> UpocrModel | None:
    """The prepared `model` with its full weights as a plain `UpocrModel` on the main process (`None` elsewhere), to
    validate and save.

    Every rank must call it: under FSDP or DeepSpeed ZeRO-3 `accelerator.get_state_dict` gathers the shards from all
    ranks (a collective; the main process alone would wait forever), and with DDP it reads the local copy. The
    result is a separate model because a sharded module cannot run a forward pass on one rank alone; it is built in
    evaluation mode and leaves the training model untouched.
    """
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    config = accelerator.unwrap_model(model, keep_torch_compile=False).config
    # `get_state_dict` keeps a compiled model's wrapper, whose keys start with "_orig_mod."
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state_dict, "_orig_mod.")
    full = UpocrModel(UpocrConfig.from_dict(config.to_dict()))
    full.load_state_dict(state_dict)
    return full.to(accelerator.device).eval()


#: An unregistered task name this similar to a registered one (difflib's ratio) is taken for a typo, not a new task.
NEAR_MISS_RATIO = 0.8


def _refuse_near_miss(name: str) -> None:
    """Refuse an unregistered task name that is a near miss of a registered one: `text-segmentaton` would
    otherwise train a new generic task and exit 0."""
    import difflib

    if find_task(name) is not None:
        return
    known = [n for task in registered_tasks() for n in task.names]
    close = difflib.get_close_matches(name, known, n=1, cutoff=NEAR_MISS_RATIO)
    if close:
        raise ValueError(
            f"unknown task {name!r}: did you mean {close[0]!r}? (a new task needs a name unlike the known ones, "
            f"or registering first with upocr_hf.tasks.register_task)"
        )


def parse_task_folders(specs: Iterable[str]) -> dict[str, Path]:
    """Parse `TASK=DIR` arguments into `{task: folder}` in the registry's task order."""
    folders: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"expected TASK=DIR, got {spec!r}")
        _refuse_near_miss(name)
        task = get_task(name).id  # any of a registered task's names; a new task's name as it is
        if task in folders:
            raise ValueError(f"task {task!r} given twice")
        folders[task] = Path(folder)
    return {task: folders[task] for task in order_tasks(folders)}


def parse_split_overrides(specs: Iterable[str]) -> dict[str, list[str]]:
    """Parse `TASK=SPLIT[,SPLIT...]` arguments into `{task: [splits]}`."""
    overrides = {}
    for spec in specs:
        name, sep, splits = spec.partition("=")
        names = [s for s in splits.split(",") if s]
        if not sep or not name or not names:
            raise ValueError(f"expected TASK=SPLIT[,SPLIT], got {spec!r}")
        overrides[get_task(name).id] = names
    return overrides


def _parse_task_numbers(specs: Iterable[str], form: str) -> dict[str, tuple[float, ...]]:
    """Parse `TASK=NUMBER[,NUMBER...]` arguments into `{task: numbers}`; `form` names the syntax in errors."""
    parsed = {}
    for spec in specs:
        task, sep, values = spec.partition("=")
        try:
            numbers = tuple(float(value) for value in values.split(","))
        except ValueError:
            sep = ""
        if not sep or not task:
            raise ValueError(f"expected {form}, got {spec!r}")
        parsed[task] = numbers
    return parsed


def parse_task_weights(specs: Iterable[str]) -> dict[str, float]:
    """Parse `TASK=WEIGHT` arguments into `{task: weight}` (the loss checks tasks and ranges)."""
    form = "TASK=WEIGHT (a number)"
    parsed = _parse_task_numbers(specs, form)
    for task, numbers in parsed.items():
        if len(numbers) != 1:
            raise ValueError(f"expected {form}, got {len(numbers)} numbers for {task!r}")
    return {task: numbers[0] for task, numbers in parsed.items()}


def parse_class_weights(specs: Iterable[str]) -> dict[str, tuple[float, ...]]:
    """Parse `TASK=W0,W1[,W2]` arguments (one weight per class) into `{task: weights}` (the loss checks them)."""
    return _parse_task_numbers(specs, "TASK=WEIGHT,WEIGHT[,WEIGHT] (one number per class)")


_CHECKPOINT_NAME = re.compile(r"^step_(\d+)$")
_STAGING_PREFIX = ".tmp-step_"


class CheckpointFolders:
    """Crash-safe `save_state` folders: `ROOT/step_<N>`, written under a temporary name and renamed when complete.

    A crash while saving leaves at most a `.tmp-step_<N>` folder, which is never taken for a checkpoint and is
    removed by the next save; only the newest `keep` complete checkpoints are kept.
    """

    def __init__(self, root: str | os.PathLike, keep: int | None = 3):
        self.root = Path(root)
        self.keep = keep

    def completed(self) -> list[Path]:
        """Complete checkpoints, oldest first (read-only: call `recover` first after a crash)."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        done = self.completed()
        return done[-1] if done else None

    def staging_path(self, step: int) -> Path:
        """The temporary folder that `accelerator.save_state` writes step `step` into (never a checkpoint)."""
        return self.root / f"{_STAGING_PREFIX}{step}"

    def staging(self, step: int) -> Path:
        """`staging_path(step)`, emptied first."""
        path = self.staging_path(step)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def commit(self, step: int, extra: Mapping[str, Any] | None = None) -> Path:
        """Rename the staged folder into place (with `extra` as `trainer_state.json`) and prune old ones. A folder
        already at that step is moved aside first and deleted last, so a crash at any moment leaves one of them."""
        staged, final = self.staging_path(step), self.root / f"step_{step}"
        if extra is not None:
            (staged / "trainer_state.json").write_text(json.dumps(dict(extra), indent=2))
        aside = self.root / f".old-step_{step}"
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            final.rename(aside)
        staged.rename(final)
        shutil.rmtree(aside, ignore_errors=True)
        for stale in self.root.glob(f"{_STAGING_PREFIX}*"):  # left by interrupted saves
            shutil.rmtree(stale, ignore_errors=True)
        if self.keep:
            for old in self.completed()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def recover(self) -> None:
        """Undo what an interrupted save left (call on one process): a checkpoint moved aside goes back into place
        when its replacement never arrived, and is deleted otherwise."""
        if not self.root.is_dir():
            return
        for aside in self.root.glob(".old-step_*"):
            original = self.root / aside.name.removeprefix(".old-")
            if original.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.rename(original)

    def size_of_latest(self) -> int | None:
        """Bytes the newest complete checkpoint takes on disk (None without one)."""
        latest = self.latest()
        return None if latest is None else sum(p.stat().st_size for p in latest.rglob("*") if p.is_file())

    def resolve(self, spec: str) -> Path:
        """`latest` or a path → the checkpoint folder to resume from (clear error if there is none)."""
        if spec == "latest":
            latest = self.latest()
            if latest is None:
                raise FileNotFoundError(
                    f"--resume_from_checkpoint latest: no complete checkpoint under {self.root}"
                )
            return latest
        path = Path(spec)
        if not (path.is_dir() and (path / "trainer_state.json").is_file()):
            raise FileNotFoundError(f"--resume_from_checkpoint {spec}: not a complete checkpoint folder")
        return path


class TrainingProgress:
    """Counters saved with every checkpoint, as JSON in its `trainer_state.json` (never as a pickle: a checkpoint
    folder may come from anywhere, and unpickling runs code)."""

    #: Each counter and the JSON types it may hold.
    FIELDS: dict[str, tuple[type, ...]] = {
        "step": (int,),
        "skipped_nonfinite": (int,),
        "best_metric": (int, float, type(None)),
        "best_step": (int, type(None)),
    }

    def __init__(self) -> None:
        self.step = 0
        self.skipped_nonfinite = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters; `ValueError` naming the field when one is missing or of the wrong type."""
        for name, types in self.FIELDS.items():
            value = state.get(name)
            if name not in state or isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(
                    f"trainer state: {name!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"
                )
        for name in self.FIELDS:
            setattr(self, name, state[name])


__all__ = [
    "CheckpointFolders",
    "PaperSchedule",
    "TrainingProgress",
    "build_model",
    "gather_full_model",
    "optimizer_param_groups",
    "parse_split_overrides",
    "parse_task_folders",
    "parse_class_weights",
    "parse_task_weights",
]

"""Building blocks of the paper's training recipe, used by the repository's `train.py`.

Kept in the package (not in the script) so they can be tested and reused: the learning-rate schedule, the
optimizer's parameter groups, model initialisation and the per-task options (crash-safe checkpoints:
`checkpointing.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from .configuration_upocr import CONFIG_PRESETS, UpocrConfig
from .losses import checked_removal_term_weights
from .modeling_upocr import UpocrModel
from .tasks import find_task, get_task, order_tasks, registered_tasks

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


def resolve_config(config: str, tasks: Sequence[str]) -> UpocrConfig:
    """The configuration named by `config`: a preset from `CONFIG_PRESETS` or a path to a `config.json`, with
    `tasks` as its task prompts."""
    if config in CONFIG_PRESETS:
        return UpocrConfig(**CONFIG_PRESETS[config], tasks=list(tasks))
    if Path(config).is_file():
        model_config = UpocrConfig.from_json_file(config)
        model_config.tasks = list(tasks)
        model_config.validate_architecture()
        return model_config
    raise ValueError(f"{config!r} is neither a preset {sorted(CONFIG_PRESETS)} nor a config.json file")


#: The configuration fields a deepened model keeps from the model it grows from (its depths are the target's).
WIDTH_FIELDS = (
    "embed_dim",
    "encoder_num_heads",
    "decoder_num_heads",
    "encoder_window_size",
    "encoder_pretrained_window_size",
    "decoder_window_size",
    "decoder_pretrained_window_size",
    "mlp_ratio",
    "hidden_act",
    "qkv_bias",
    "continuous_position_bias_hidden_size",
    "layer_norm_eps",
)


def deepen_model(model: UpocrModel, target: UpocrConfig) -> UpocrModel:
    """`model` with `target`'s numbers of blocks per stage, each at least `model`'s: its trained blocks are copied
    and the added ones are appended at the end of their stage.

    An added block starts as an identity (its post-norms are zero-initialised, `UpocrPostLayerNorm`), so the deepened
    model computes exactly what `model` computes until training changes it: a capacity study can start the deeper
    architecture from the best trained weights instead of from scratch.
    """
    widths = {name: getattr(target, name) for name in WIDTH_FIELDS}
    differing = [name for name, value in widths.items() if value != getattr(model.config, name)]
    if differing:
        name = differing[0]
        raise ValueError(
            f"--deepen_to: {name} is {widths[name]} but the --init_from model's is {getattr(model.config, name)}; "
            f"only encoder_depths and decoder_depths may differ ({', '.join(WIDTH_FIELDS)} must match)"
        )
    for name in ("encoder_depths", "decoder_depths"):
        now, wanted = getattr(model.config, name), getattr(target, name)
        if any(w < n for n, w in zip(now, wanted, strict=True)):
            raise ValueError(f"--deepen_to: {name} {wanted} removes blocks of the --init_from model's {now}")
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.encoder_depths, config.decoder_depths = list(target.encoder_depths), list(target.decoder_depths)
    deepened = UpocrModel(config)
    unexpected = deepened.load_state_dict(model.state_dict(), strict=False).unexpected_keys
    if unexpected:  # cannot happen while blocks are only appended; a guard against a renamed module
        raise RuntimeError(f"weights with no place in the deepened model: {unexpected[:3]}")
    return deepened.train(model.training)


def build_model(
    init_from: str, config: str, tasks: Sequence[str], deepen_to: str | None = None
) -> UpocrModel:
    """The model a run starts from.

    Args:
        init_from: `"scratch"`, a `save_pretrained` folder, or an authors' checkpoint file (`.pth`/`.safetensors`,
            converted on the fly).
        config: for `"scratch"`, a preset name from `CONFIG_PRESETS` or a path to a `config.json`.
        tasks: the tasks the run trains; a pretrained model gets new task prompts for those it does not know.
        deepen_to: for a pretrained model, a preset or `config.json` with more blocks per stage and the same
            widths: the model is deepened to it (`deepen_model`).
    """
    if init_from == "scratch":
        if deepen_to is not None:
            raise ValueError(
                "--deepen_to deepens a trained --init_from model; from scratch, name the --config"
            )
        try:
            return UpocrModel(resolve_config(config, tasks))
        except ValueError as error:
            raise ValueError(f"--config: {error}") from None
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
    if deepen_to is not None:
        model = deepen_model(model, resolve_config(deepen_to, model.config.tasks))
        logger.info(
            "deepened the initial model to encoder depths %s, decoder depths %s",
            model.config.encoder_depths,
            model.config.decoder_depths,
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


def parse_key_values(
    specs: Iterable[str], form: str, value: Callable[[str], T], key: Callable[[str], str], what: str
) -> dict[str, T]:
    """Parse `KEY=VALUE` arguments into `{key(KEY): value(VALUE)}`, each key once: the one parser of every
    KEY=VALUE option. `value` and `key` raise `ValueError` for a malformed VALUE or an unknown KEY; `form` names
    the syntax and `what` the kind of key in the errors."""
    parsed: dict[str, T] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        try:
            if not (sep and name and text):
                raise ValueError
            converted = value(text)
        except ValueError:
            raise ValueError(f"expected {form}, got {spec!r}") from None
        checked = key(name)
        if checked in parsed:
            raise ValueError(f"{what} {checked!r} given twice")
        parsed[checked] = converted
    return parsed


def _task_id(name: str) -> str:
    """The id of the task `name` names (any of a registered task's names; a new task's name as it is)."""
    _refuse_near_miss(name)
    return get_task(name).id


def parse_task_options(specs: Iterable[str], form: str, value: Callable[[str], T]) -> dict[str, T]:
    """Parse `TASK=VALUE` arguments into `{task id: value(VALUE)}` (`parse_key_values`): every per-task option.

    A task goes by any of its registered names, a near miss of one is refused (a new task needs a name unlike the
    known ones), and each task is given once."""
    return parse_key_values(specs, form, value, key=_task_id, what="task")


def parse_task_folders(specs: Iterable[str]) -> dict[str, Path]:
    """`TASK=DIR` arguments → `{task: folder}` in the registry's task order."""
    folders = parse_task_options(specs, "TASK=DIR", Path)
    return {task: folders[task] for task in order_tasks(folders)}


def parse_split_overrides(specs: Iterable[str]) -> dict[str, list[str]]:
    """`TASK=SPLIT[,SPLIT...]` arguments → `{task: [splits]}`."""
    return parse_task_options(specs, "TASK=SPLIT[,SPLIT]", lambda text: _listed(text, str))


def parse_task_weights(specs: Iterable[str]) -> dict[str, float]:
    """`TASK=WEIGHT` arguments → `{task: weight}` (the loss checks the ranges)."""
    return parse_task_options(specs, "TASK=WEIGHT (a number)", float)


def parse_class_weights(specs: Iterable[str]) -> dict[str, tuple[float, ...]]:
    """`TASK=W0,W1[,W2]` arguments (one weight per class) → `{task: weights}` (the loss checks them)."""
    form = "TASK=WEIGHT,WEIGHT[,WEIGHT] (one number per class)"
    return parse_task_options(specs, form, lambda text: tuple(_listed(text, float)))


def parse_removal_term_weights(specs: Iterable[str]) -> dict[str, float]:
    """`TERM=WEIGHT` arguments (TERM: ``perceptual`` or ``style``) → every removal term's weight, the paper's where
    none is given (`upocr_hf.losses.REMOVAL_TERM_WEIGHTS`); `ValueError` for a malformed, unknown or repeated one."""
    given = parse_key_values(specs, "TERM=WEIGHT (a number)", float, key=str, what="removal term")
    return checked_removal_term_weights(given)  # the loss's own check refuses an unknown term


def _listed(text: str, kind: Callable[[str], T]) -> list[T]:
    """Comma-separated values of `kind`; `ValueError` when one is empty or malformed."""
    items = text.split(",")
    if not all(items):
        raise ValueError(text)
    return [kind(item) for item in items]


__all__ = [
    "PaperSchedule",
    "build_model",
    "gather_full_model",
    "optimizer_param_groups",
    "parse_key_values",
    "parse_split_overrides",
    "parse_task_folders",
    "parse_task_options",
    "parse_class_weights",
    "parse_removal_term_weights",
    "parse_task_weights",
]

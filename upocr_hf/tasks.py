"""The task registry: every fact about each UPOCR task, in one entry per task.

Every UPOCR task is "RGB image in, RGB image out", chosen by a task prompt. What differs between tasks is how their
targets are coloured, how a prediction is read, which dataset layout holds their data, how they are augmented and
scored. A :class:`Task` holds all of that; the data loaders, augmentation, losses, metrics, training, evaluation,
packaging, the pipeline, the CLI and the Space read it from here. Adding a pixel task is one
:func:`register_task` call (plus, for a new dataset layout or metric, that loader or metric module).

This module is pure data (it imports nothing from the package), so a model folder's remote code carries it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

TEXT_REMOVAL = "text-removal"
TAMPERED_TEXT_DETECTION = "tampered-text-detection"
TEXT_SEGMENTATION = "text-segmentation"

#: Row order of the task prompts in the authors' released checkpoint.
DEFAULT_TASKS: tuple[str, ...] = (TEXT_REMOVAL, TAMPERED_TEXT_DETECTION, TEXT_SEGMENTATION)

#: Value (in [0, 1]) of "ignored" pixels in segmentation and tampered-text targets: 0.5 gray.
IGNORE_VALUE: float = 128 / 255
#: The same as an 8-bit value, for targets stored as uint8 images.
IGNORE_VALUE_UINT8: int = 128

#: Text segmentation target: white text strokes on black.
SEGMENTATION_BACKGROUND_RGB: tuple[int, int, int] = (0, 0, 0)
SEGMENTATION_TEXT_RGB: tuple[int, int, int] = (255, 255, 255)

#: Tampered text detection classes; the target colour of class ``i`` is ``TAMPER_CLASS_RGB[i]``.
TAMPER_ID2LABEL: dict[int, str] = {0: "background", 1: "real text", 2: "tampered text"}
TAMPER_CLASS_RGB: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))

#: Default probability threshold on the channel mean of a segmentation prediction.
SEGMENTATION_THRESHOLD: float = 0.4

#: How a prediction is read out, and the key of the pipeline result that holds the reading:
#: ``"image"`` the clamped RGB image (8-bit); ``"mask"`` channel mean > threshold (a boolean mask, text = True);
#: ``"class-map"`` argmax over the channels (0 background / 1 real text / 2 tampered text).
READOUT_KEYS: dict[str, str] = {"image": "image", "mask": "mask", "class-map": "class_map"}
#: How a task's training loss is computed: the text-removal loss (multi-scale L1 weighted on and off the text
#: region, plus the optional perceptual and style terms), or the masked multi-scale smooth L1 of the other tasks.
LOSSES: tuple[str, ...] = ("removal", "smooth-l1")


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges of one task's training augmentation, all ending in a resize to the training size.
    A probability of 0 disables a step. Crops keep independent uniform fractions of each side; rotations are
    uniform in ±``rotate_degrees`` with the canvas expanded."""

    crop_prob: float = 0.0
    crop_min_ratio: float = 1.0
    crop_max_ratio: float = 1.0
    hflip_prob: float = 0.0
    color_jitter_prob: float = 0.0
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.5
    rotate_prob: float = 0.0
    rotate_degrees: float = 30.0


@dataclass(frozen=True)
class Task:
    """Everything task-specific about one pixel task.

    Attributes:
        id: the task prompt's name (``config.tasks`` entries).
        title: a short human name ("Text removal").
        description: one sentence for help texts and the Space.
        readout: how a prediction is read, a key of :data:`READOUT_KEYS`; the target is coloured the same way
            (an RGB image; white-on-black text, 128-gray ignore; the :data:`TAMPER_CLASS_RGB` colours).
        aliases: other names accepted wherever a task is named (pipeline, CLI, generator).
        command: the ``upocr`` CLI sub-command, or None for none.
        dataset: the dataset folder layout its data comes in (a key of ``upocr_hf.data.DATASET_LOADERS``):
            ``"SCUT-EnsText"``, ``"TextSeg"``, ``"Tampered-IC13"`` or ``"image-pairs"``
            (``root/{split}/{image,target}/NAME.*``).
        train_splits: the splits trained on by default; ``test_split``: the one evaluated on.
        text_mask: samples carry a text-region mask (text removal): the loss weighs it, augmentation resizes the
            target as an image (bilinear) rather than a label (nearest), keep-background mode applies.
        loss: a name of :data:`LOSSES`.
        augmentation: the training augmentation.
        metric: the folder of its ``evaluate`` module under ``upocr_hf.metrics`` (None: not scored).
        selection_metric: one figure of that metric in [0, 1], higher is better, that ranks two models of this
            task (training keeps its best model by it; packaging replaces a model only with one that beats it).
        baseline_margin: ``(figure, margin)``: a packaged model must beat the trivial baseline (the input for an
            image readout, nothing for the others) on this figure by this much, in the metric's units.
    """

    id: str
    title: str
    description: str = ""
    readout: str = "image"
    aliases: tuple[str, ...] = ()
    command: str | None = None
    dataset: str = "image-pairs"
    train_splits: tuple[str, ...] = ("train",)
    test_split: str = "test"
    text_mask: bool = False
    loss: str = "smooth-l1"
    augmentation: Augmentation = field(default_factory=lambda: Augmentation(hflip_prob=0.5))
    metric: str | None = None
    selection_metric: str | None = None
    baseline_margin: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Task.id must be a non-empty string, got {self.id!r}")
        if self.readout not in READOUT_KEYS:
            raise ValueError(
                f"task {self.id!r}: readout must be one of {list(READOUT_KEYS)}, got {self.readout!r}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"task {self.id!r}: loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.selection_metric and not self.metric:
            raise ValueError(f"task {self.id!r}: a selection_metric needs a metric")

    @property
    def output_key(self) -> str:
        """The pipeline result key holding the reading (``"image"``, ``"mask"`` or ``"class_map"``)."""
        return READOUT_KEYS[self.readout]

    @property
    def names(self) -> tuple[str, ...]:
        """The id, the CLI command and the aliases: every name that means this task."""
        return tuple(dict.fromkeys(n for n in (self.id, self.command, *self.aliases) if n))


_REGISTRY: dict[str, Task] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to the registry (``replace=True`` to redefine a registered id). Its names must not mean another
    registered task. Returns ``task``."""
    if task.id in _REGISTRY and not replace:
        raise ValueError(f"task {task.id!r} is already registered (pass replace=True to redefine it)")
    for other in _REGISTRY.values():
        clash = set(task.names) & set(other.names)
        if other.id != task.id and clash:
            raise ValueError(f"task {task.id!r}: name(s) {sorted(clash)} already mean task {other.id!r}")
    _REGISTRY[task.id] = task
    return task


def unregister_task(task_id: str) -> None:
    """Remove a registered task (a no-op for unknown ids)."""
    _REGISTRY.pop(task_id, None)


def registered_tasks() -> tuple[Task, ...]:
    """The registered tasks, in registration order (the paper's tasks first, in prompt row order)."""
    return tuple(_REGISTRY.values())


def scored_tasks() -> list[str]:
    """The ids of the registered tasks that have a metric."""
    return [task.id for task in _REGISTRY.values() if task.metric]


def find_task(name: str) -> Task | None:
    """The registered task with this id, command or alias, or None."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    return next((task for task in _REGISTRY.values() if name in task.names), None)


def get_task(name: str) -> Task:
    """The task called ``name`` (id, command or alias). A name nobody registered is a new pixel task trained from
    its own image pairs: RGB readout, smooth-L1 loss, horizontal flips, no metric."""
    return find_task(name) or Task(id=name, title=name, description=f"the {name!r} task (not registered)")


def resolve_task(name: str | None, known: Sequence[str]) -> str:
    """A task id or any of its names → the id among ``known`` (a model's ``config.tasks``).

    Raises:
        ValueError: no task given, or none of ``known`` goes by that name; the message lists what is known.
    """
    known = list(known)
    if name is None:
        raise ValueError(f"Pass task=...; this model knows {known}")
    if name in known:
        return name
    task = find_task(name)
    if task is None or task.id not in known:
        aliases = sorted(n for t in _REGISTRY.values() if t.id in known for n in t.names if n != t.id)
        raise ValueError(f"Unknown task {name!r}; this model knows {known} (aliases: {aliases})")
    return task.id


def order_tasks(names: Iterable[str]) -> list[str]:
    """``names`` in registry order (the paper's prompt row order first), unregistered ones after, as given."""
    order = {task.id: i for i, task in enumerate(_REGISTRY.values())}
    return sorted(names, key=lambda name: order.get(name, len(order)))


for _task in (
    Task(
        id=TEXT_REMOVAL,
        title="Text removal",
        description="erase the text from a photo and fill in what was behind it",
        readout="image",
        aliases=("removal",),
        command="remove",
        dataset="SCUT-EnsText",
        text_mask=True,
        loss="removal",
        augmentation=Augmentation(hflip_prob=0.3, rotate_prob=0.5),
        metric="text_removal",
        selection_metric="mssim",
        baseline_margin=("psnr", 1.0),
    ),
    Task(
        id=TAMPERED_TEXT_DETECTION,
        title="Tampered text",
        description="find forged words among the real ones",
        readout="class-map",
        aliases=("tampering", "tamper", "tampered"),
        command="detect-tampering",
        dataset="Tampered-IC13",
        augmentation=Augmentation(crop_prob=1.0, crop_min_ratio=0.5, crop_max_ratio=1.0, hflip_prob=0.5),
        metric="tampered_text_detection",
        selection_metric="mf",
        baseline_margin=("mf", 0.1),
    ),
    Task(
        id=TEXT_SEGMENTATION,
        title="Text segmentation",
        description="mark every pixel of every text stroke",
        readout="mask",
        aliases=("segmentation",),
        command="segment",
        dataset="TextSeg",
        train_splits=("train", "val"),
        augmentation=Augmentation(
            crop_prob=1.0,
            crop_min_ratio=0.7,
            crop_max_ratio=1.0,
            hflip_prob=0.3,
            color_jitter_prob=0.5,
            rotate_prob=0.5,
        ),  # fmt: skip
        metric="text_segmentation",
        selection_metric="fg_iou",
        baseline_margin=("fg_iou", 0.1),
    ),
):
    register_task(_task)
del _task

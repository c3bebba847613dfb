"""Training data for UPOCR as Hugging Face datasets.

* :mod:`.folders` -- loaders for the local folders of SCUT-EnsText (text removal), TextSeg (text
  segmentation), Tampered-IC13 (tampered text detection) and image/target pairs (any other pixel task), producing
  the targets in each task's encoding, with validation; ``load_task_dataset(s)`` picks the loader of a task's
  registered layout (``upocr_hf.tasks``);
* :mod:`.synthetic` -- a synthetic generator for all three tasks that writes the same folder layouts
  (``python -m upocr_hf.data.synthetic --num N --size S --out DIR --seed K``);
* :mod:`.augment` -- the paper's per-task augmentation (torchvision v2, image and labels jointly) as a
  ``set_transform`` callable, and the collate function;
* :mod:`.multitask` -- the paper's multi-task batching: one batch per task per step, endless, sharded per rank,
  resumable.

Uniform sample schema (every loader, every task)::

    image   datasets.Image()   input photo
    target  datasets.Image()   target in the task's encoding: text-free photo (removal); white strokes on black, 128-gray
                               ignore (segmentation); red background / green real / blue tampered text,
                               128-gray ignore (tampered text detection)
    mask    datasets.Image()   removal text-region mask, 8-bit, 255 on text (None for other tasks)
    task    string             task id from upocr_hf.tasks
    name    string             sample name (file stem)

After :class:`UpocrAugment` and :func:`upocr_collate` (or :class:`MultiTaskDataLoader`) a batch is::

    pixel_values (B, 3, S, S) float32 in [0, 1]     labels     (B, 3, S, S) float32 in [0, 1]
    text_mask    (B, 1, S, S) float32 in {0, 1}     ignore_mask (B, 1, S, S) bool (True = ignored)
    task         (B,) int64 (index in the task order, default DEFAULT_TASKS)
    tasks        list[str]                          names      list[str]

Example::

    from upocr_hf.data import load_task_datasets, UpocrAugment, MultiTaskDataLoader
    from upocr_hf.tasks import get_task

    folders = {"text-removal": "data/SCUT-EnsText", "text-segmentation": "data/TextSeg",
               "tampered-text-detection": "data/Tampered-IC13"}
    # each task's folder is read by the loader of its registered layout, its default training splits concatenated
    train = load_task_datasets(folders, {task: get_task(task).train_splits for task in folders})
    for ds in train.values():
        ds.set_transform(UpocrAugment(512, tasks=model.config.tasks))
    loader = MultiTaskDataLoader.from_accelerator(accelerator, train, batch_size=8, num_workers=4)
    # with each checkpoint, save loader.state_dict() (plain data) as JSON; load_state_dict() continues from it
    for step, batch in zip(range(80_000), loader):
        ...
"""

from .augment import (
    RandomSideCrop,
    UpocrAugment,
    build_task_transform,
    ignore_mask_from_target,
    upocr_collate,
)
from .folders import (
    DATASET_LOADERS,
    SAMPLE_FEATURES,
    DatasetFolderError,
    LoadReport,
    TamperBox,
    load_image_pairs,
    load_scut_enstext,
    load_tampered_ic13,
    load_task_dataset,
    load_task_datasets,
    load_textseg,
    parse_tampered_ic13_gt,
    removal_mask_from_file,
    tampered_boxes_to_target,
    textseg_label_to_target,
)
from .multitask import MultiTaskDataLoader, ShardedEpochBatchSampler

# The generator is imported on first use, so that ``python -m upocr_hf.data.synthetic`` does not find its own
# module already imported by this package (runpy warns about that).
_SYNTHETIC_EXPORTS = (
    "SyntheticConfig",
    "SyntheticSample",
    "generate_folders",
    "load_synthetic_folders",
    "render_sample",
)


def __getattr__(name: str) -> object:
    if name in _SYNTHETIC_EXPORTS:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASET_LOADERS",
    "SAMPLE_FEATURES",
    "DatasetFolderError",
    "LoadReport",
    "MultiTaskDataLoader",
    "RandomSideCrop",
    "ShardedEpochBatchSampler",
    "SyntheticConfig",
    "SyntheticSample",
    "TamperBox",
    "UpocrAugment",
    "build_task_transform",
    "generate_folders",
    "ignore_mask_from_target",
    "load_image_pairs",
    "load_scut_enstext",
    "load_synthetic_folders",
    "load_tampered_ic13",
    "load_task_dataset",
    "load_task_datasets",
    "load_textseg",
    "parse_tampered_ic13_gt",
    "removal_mask_from_file",
    "render_sample",
    "tampered_boxes_to_target",
    "textseg_label_to_target",
    "upocr_collate",
]

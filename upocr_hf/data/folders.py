"""Loaders for the local folders of the three public UPOCR benchmarks.

Every loader returns a :class:`datasets.DatasetDict` (one entry per split) in the uniform sample schema of
:mod:`upocr_hf.data`:

======== ================= ===========================================================================
column   feature           content
======== ================= ===========================================================================
image    ``Image()``       the input photo (the original file's bytes, not re-encoded)
target   ``Image()``       the target in the task's encoding: the text-free photo (removal), white-on-black strokes with
                           128-gray ignore (segmentation), red/green/blue classes with 128-gray ignore
                           (tampered text detection)
mask     ``Image()``       removal only: 8-bit text-region mask, 255 on text, 0 elsewhere; ``None`` for
                           the other tasks
task     ``string``        a task id from :mod:`upocr_hf.tasks`
name     ``string``        the sample's file stem, for tracing a sample back to its files
======== ================= ===========================================================================

Conversion rules:

* **SCUT-EnsText** ``train|test/{image,label,mask}/NAME.*``: ``label`` is the text-free target as is. The
  ``mask`` files follow the EraseNet/ViTEraser convention of the preprocessed release, black (0) on text
  regions and white elsewhere (the authors' loss uses it as the *background* weight); the loader turns it
  into ``m`` = 255 on text (values ``< 128`` on disk). ``mask_text_value="white"`` reads masks whose text is
  white instead.
* **TextSeg** ``image/NAME.*``, ``semantic_label/NAME_maskfg.png``, ``split.json``: label value 100 (text)
  -> white, 0 (background) and 200 (word effect) -> black, 255 (ignore) -> 128 gray. Any other value is a
  :class:`DatasetFolderError` unless ``strict_label_values=False`` (then it becomes ignore).
* **Tampered-IC13** ``{split}_img/NAME.*`` and ``{split}_gt/NAME.txt`` with lines ``x1,y1,x2,y2,label``:
  the target starts red (background); each box is filled in file order, corners included (as OpenCV's
  ``cv2.rectangle(..., thickness=-1)`` does, clipped to the image), green for label 1 (real text), blue for
  label 2 (tampered text). An empty gt file means an image without text.

Validation: a missing folder, an image without its label, a label without its image, an unreadable or
truncated file, a label whose size differs from its image and a malformed gt line each give a
:class:`DatasetFolderError` naming the file (and line) and the rule broken. With ``on_error="skip"`` the
offending *sample* is left out instead, and the skip is counted in a :class:`LoadReport` (logged as a
warning and returned with ``return_report=True``). Structural problems (a missing root or split folder, an
unreadable ``split.json``) always raise. Files that are not images (no image extension) are listed in
``LoadReport.ignored_files`` and logged; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Dataset, DatasetDict, Features, IterableDataset, Value
from datasets import Image as ImageFeature
from PIL import Image

from ..tasks import (
    IGNORE_VALUE_UINT8,
    SEGMENTATION_BACKGROUND_RGB,
    SEGMENTATION_TEXT_RGB,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
    get_task,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_LOADERS",
    "IMAGE_EXTENSIONS",
    "SAMPLE_FEATURES",
    "TEXTSEG_IGNORE",
    "TEXTSEG_TEXT",
    "TEXTSEG_WORD_EFFECT",
    "DatasetFolderError",
    "LoadReport",
    "TamperBox",
    "load_image_pairs",
    "load_saved_dataset",
    "load_task_dataset",
    "load_task_datasets",
    "load_scut_enstext",
    "load_tampered_ic13",
    "load_textseg",
    "parse_tampered_ic13_gt",
    "removal_mask_from_file",
    "tampered_boxes_to_target",
    "textseg_label_to_target",
]

#: File extensions (lower case) recognised as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)

#: The uniform sample schema shared by every task (see the module docstring).
SAMPLE_FEATURES = Features(
    {
        "image": ImageFeature(),
        "target": ImageFeature(),
        "mask": ImageFeature(),
        "task": Value("string"),
        "name": Value("string"),
    }
)

#: TextSeg ``*_maskfg.png`` values.
TEXTSEG_TEXT = 100
TEXTSEG_WORD_EFFECT = 200
TEXTSEG_IGNORE = 255
_TEXTSEG_BACKGROUND = 0

OnError = Literal["raise", "skip"]


class DatasetFolderError(ValueError):
    """A dataset folder breaks its layout or a file breaks its format.

    Attributes:
        path: the offending file or folder.
        line: 1-based line number inside ``path`` (gt files), or ``None``.
        reason: which rule was broken.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep picklable across worker processes
        return (type(self), (self.path, self.reason, self.line))


@dataclass
class LoadReport:
    """What a loader did with one split of a folder: how many samples it loaded and what it left out."""

    dataset: str
    split: str
    root: str
    loaded: int = 0
    skipped: list[DatasetFolderError] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line per problem, headed by the counts."""
        head = (
            f"{self.dataset} [{self.split}] at {self.root}: loaded {self.loaded}, skipped {self.num_skipped}, "
            f"ignored {len(self.ignored_files)} non-image file(s)"
        )
        lines = [head] + [f"  skipped: {err}" for err in self.skipped]
        lines += [f"  ignored: {path}" for path in self.ignored_files]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class TamperBox:
    """One Tampered-IC13 annotation: inclusive pixel corners and the class (1 real text, 2 tampered text)."""

    x1: int
    y1: int
    x2: int
    y2: int
    label: int


# ----------------------------------------------------------------------------------------------------------
# Conversion rules (pure functions, also used by the synthetic generator and the tests)
# ----------------------------------------------------------------------------------------------------------


def textseg_label_to_target(label: np.ndarray, *, strict: bool = True, path: str = "<array>") -> np.ndarray:
    """Turn a TextSeg ``*_maskfg.png`` array (H, W) of 0/100/200/255 into the segmentation target (RGB) (H, W, 3) uint8.

    100 -> white text, 0 and 200 (word effect) -> black, 255 -> 128 gray (ignore). Other values raise a
    :class:`DatasetFolderError` when ``strict``, else become ignore.
    """
    label = np.asarray(label)
    if label.ndim == 3:  # an RGB-stored label: TextSeg labels are gray, take one channel after checking.
        if not (
            np.array_equal(label[..., 0], label[..., 1]) and np.array_equal(label[..., 0], label[..., 2])
        ):
            raise DatasetFolderError(path, "label is a colour image; expected a gray TextSeg mask")
        label = label[..., 0]
    known = (label == _TEXTSEG_BACKGROUND) | (label == TEXTSEG_TEXT) | (label == TEXTSEG_WORD_EFFECT)
    known |= label == TEXTSEG_IGNORE
    if strict and not known.all():
        bad = sorted(int(v) for v in np.unique(label[~known])[:8])
        raise DatasetFolderError(
            path,
            f"label values {bad} are not TextSeg values (0 background, 100 text, 200 word effect, 255 ignore)",
        )
    target = np.empty((*label.shape, 3), dtype=np.uint8)
    target[...] = SEGMENTATION_BACKGROUND_RGB
    target[label == TEXTSEG_TEXT] = SEGMENTATION_TEXT_RGB
    target[(label == TEXTSEG_IGNORE) | ~known] = IGNORE_VALUE_UINT8
    return target


def parse_tampered_ic13_gt(text: str, path: str = "<gt>") -> list[TamperBox]:
    """Parse a Tampered-IC13 gt file: one ``x1,y1,x2,y2,label`` line per box (label 1 real, 2 tampered).

    Blank lines are allowed and a UTF-8 byte-order mark is stripped. Coordinates must be integers (a value
    like ``12.0`` is accepted); corners given in reverse order are swapped, as OpenCV does when it draws.
    Anything else raises :class:`DatasetFolderError` naming the file and line.
    """
    boxes: list[TamperBox] = []
    for lineno, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            raise DatasetFolderError(
                path,
                f"expected 5 comma-separated fields 'x1,y1,x2,y2,label', got {len(fields)}: {raw!r}",
                lineno,
            )
        values: list[int] = []
        for f in fields:
            try:
                number = float(f)
            except ValueError:
                raise DatasetFolderError(path, f"field {f!r} is not a number: {raw!r}", lineno) from None
            if not np.isfinite(number) or number != int(number):
                raise DatasetFolderError(path, f"field {f!r} is not an integer: {raw!r}", lineno)
            values.append(int(number))
        x1, y1, x2, y2, label = values
        if label not in (1, 2):
            raise DatasetFolderError(
                path, f"label must be 1 (real text) or 2 (tampered text), got {label}", lineno
            )
        boxes.append(TamperBox(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2), label))
    return boxes


def tampered_boxes_to_target(width: int, height: int, boxes: Iterable[TamperBox]) -> np.ndarray:
    """Fill Tampered-IC13 boxes into the tampered-text target (three colours) (H, W, 3) uint8.

    Red background; boxes in order (later ones overwrite earlier ones), corners inclusive and clipped to the
    image; green for real text (1), blue for tampered text (2).
    """
    target = np.empty((height, width, 3), dtype=np.uint8)
    target[...] = TAMPER_CLASS_RGB[0]
    for box in boxes:
        x1, y1 = max(box.x1, 0), max(box.y1, 0)
        x2, y2 = min(box.x2, width - 1), min(box.y2, height - 1)
        if x1 > x2 or y1 > y2:
            continue  # entirely outside the image
        target[y1 : y2 + 1, x1 : x2 + 1] = TAMPER_CLASS_RGB[box.label]
    return target


def removal_mask_from_file(mask: Image.Image, text_value: Literal["black", "white"] = "black") -> np.ndarray:
    """Binary text-region mask (H, W) uint8, 255 on text, from a SCUT-EnsText ``mask`` image.

    ``text_value="black"`` (the preprocessed SCUT-EnsText release): pixels ``< 128`` are text;
    ``"white"``: pixels ``>= 128`` are text. JPEG noise around the edges is thresholded away.
    """
    gray = np.asarray(mask.convert("L"))
    text = gray < 128 if text_value == "black" else gray >= 128
    return np.where(text, 255, 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Folder scanning helpers
# ----------------------------------------------------------------------------------------------------------


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetFolderError(path, f"missing folder ({what})")


def _split_folders(root: Path) -> list[str]:
    """The ``train``/``test`` split folders present under ``root`` (at least one must be)."""
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if not splits:
        raise DatasetFolderError(root, "missing folder (no 'train' or 'test' split folder)")
    return splits


def _list_files(
    folder: Path, report: LoadReport, extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> dict[str, Path]:
    """Map file stem -> path for files with one of ``extensions``; others are reported as ignored."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if entry.suffix.lower() not in extensions:
            report.ignored_files.append(str(entry))
            continue
        if entry.stem in found:
            raise DatasetFolderError(
                entry, f"two files share the name {entry.stem!r} (other: {found[entry.stem].name})"
            )
        found[entry.stem] = entry
    return found


def _open_image(path: Path, verify: str) -> Image.Image:
    try:
        img = Image.open(path)
        if verify == "full":
            img.load()
        return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetFolderError(path, f"unreadable image file ({type(exc).__name__}: {exc})") from None


def _file_signature(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _check_items(
    items: Sequence[dict[str, Any]],
    check: Callable[[dict[str, Any]], dict[str, Any]],
    on_error: OnError,
    report: LoadReport,
    num_workers: int,
) -> list[dict[str, Any]]:
    """Run ``check`` on every item (threads; PIL releases the GIL while decoding) in a deterministic order."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")

    def run(item: dict[str, Any]) -> dict[str, Any] | DatasetFolderError:
        if "error" in item:
            return item["error"]
        try:
            return check(item)
        except DatasetFolderError as err:
            return err

    workers = max(1, min(num_workers, len(items)))
    if workers == 1:
        results = [run(item) for item in items]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(run, items))
    kept: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, DatasetFolderError):
            if on_error == "raise":
                raise DatasetFolderError(
                    result.path,
                    result.reason + " (to leave such samples out: on_error='skip', or --on_bad_sample skip)",
                    result.line,
                )
            report.skipped.append(result)
        else:
            kept.append(result)
    report.loaded = len(kept)
    if report.skipped:
        logger.warning("%s", report.summary())
    elif report.ignored_files:
        logger.warning("%s", report.summary())
    return kept


def _build_dataset(
    generator: Callable[..., Iterator[dict[str, Any]]],
    items: list[dict[str, Any]],
    options: dict[str, Any],
    cache_dir: str | None,
    keep_in_memory: bool,
    num_proc: int | None,
) -> Dataset:
    signature = [[_file_signature(Path(p)) for p in item["files"]] for item in items]
    fingerprint = _fingerprint(generator.__name__, signature, options, [item.get("boxes") for item in items])
    if not items:
        return Dataset.from_dict({k: [] for k in SAMPLE_FEATURES}, features=SAMPLE_FEATURES)
    kwargs: dict[str, Any] = {"items": items, "options": options}
    return Dataset.from_generator(
        generator,
        features=SAMPLE_FEATURES,
        gen_kwargs=kwargs,
        cache_dir=cache_dir,
        keep_in_memory=keep_in_memory,
        num_proc=num_proc if num_proc and num_proc > 1 and len(items) > 1 else None,
        fingerprint=fingerprint,
    )


def _raw(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return {"bytes": fh.read(), "path": os.path.basename(path)}


def _png(array: np.ndarray, name: str) -> dict[str, Any]:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": name + ".png"}


def _paired_items(
    files: Mapping[str, Mapping[str, Path]], companions: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Pair the files of an ``image`` folder with same-stem files in each companion folder.

    ``files`` maps folder name → {stem: path} (``"image"`` first); ``companions`` maps each other folder to what it
    holds, for error messages. An item lacking a file gets an ``error`` naming the file it has and the one missing.
    """
    images = files["image"]
    items: list[dict[str, Any]] = []
    for name in sorted(set().union(*(set(found) for found in files.values()))):
        item: dict[str, Any] = {"name": name}
        if name not in images:
            present = next(found[name] for found in files.values() if name in found)
            item["error"] = DatasetFolderError(
                present, f"{'/'.join(companions)} without its image in 'image/'"
            )
        else:
            missing = [folder for folder in companions if name not in files[folder]]
            if missing:
                folder = missing[0]
                item["error"] = DatasetFolderError(
                    images[name], f"image without its {companions[folder]} in '{folder}/'"
                )
            else:
                item["files"] = [str(images[name])] + [str(files[folder][name]) for folder in companions]
        items.append(item)
    return items


def _check_same_sizes(item: dict[str, Any], verify: str) -> dict[str, Any]:
    """Every file of an item decodes (``verify="full"``) and has its image's size."""
    sizes = []
    for p in item["files"]:
        with _open_image(Path(p), verify) as img:
            sizes.append(img.size)
    for p, s in zip(item["files"][1:], sizes[1:], strict=True):
        if s != sizes[0]:
            raise DatasetFolderError(
                p, f"size {s[0]}x{s[1]} differs from its image's {sizes[0][0]}x{sizes[0][1]}"
            )
    return item


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _finish(
    splits: dict[str, Dataset], reports: dict[str, LoadReport], return_report: bool
) -> DatasetDict | tuple[DatasetDict, dict[str, LoadReport]]:
    dd = DatasetDict(splits)
    return (dd, reports) if return_report else dd


# ----------------------------------------------------------------------------------------------------------
# SCUT-EnsText
# ----------------------------------------------------------------------------------------------------------


def _scut_generator(items: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in items:
        image_path, label_path, mask_path = item["files"]
        with Image.open(mask_path) as mask:
            m = removal_mask_from_file(mask, options["mask_text_value"])
        yield {
            "image": _raw(image_path),
            "target": _raw(label_path),
            "mask": _png(m, item["name"] + "_mask"),
            "task": TEXT_REMOVAL,
            "name": item["name"],
        }


def load_scut_enstext(
    root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    *,
    on_error: OnError = "raise",
    mask_text_value: Literal["black", "white"] = "black",
    verify: Literal["full", "header"] = "full",
    return_report: bool = False,
    cache_dir: str | None = None,
    keep_in_memory: bool = False,
    num_workers: int | None = None,
    num_proc: int | None = None,
) -> DatasetDict | tuple[DatasetDict, dict[str, LoadReport]]:
    """Load SCUT-EnsText (``root/{train,test}/{image,label,mask}/NAME.*``) for text removal.

    Args:
        root: the folder holding the split folders.
        splits: which splits to load; default every one of ``train``/``test`` present (at least one must be).
        on_error: ``"raise"`` (default) stops at the first bad sample with a :class:`DatasetFolderError`;
            ``"skip"`` leaves bad samples out and counts them in the report.
        mask_text_value: colour of text in the mask files (``"black"`` in the preprocessed release).
        verify: ``"full"`` decodes every file (finds truncated files); ``"header"`` only opens them.
        return_report: also return ``{split: LoadReport}``.
        cache_dir, keep_in_memory, num_proc: passed to :meth:`datasets.Dataset.from_generator`.
        num_workers: threads used to check the files.

    Returns:
        A ``DatasetDict`` keyed by split with the uniform schema (``task`` = ``"text-removal"``).
    """
    root = Path(root)
    _require_dir(root, "SCUT-EnsText root")
    splits = splits if splits is not None else _split_folders(root)
    out: dict[str, Dataset] = {}
    reports: dict[str, LoadReport] = {}
    for split in splits:
        report = LoadReport("SCUT-EnsText", split, str(root))
        base = root / split
        for sub in ("image", "label", "mask"):
            _require_dir(base / sub, f"SCUT-EnsText {split}/{sub}")
        files = {sub: _list_files(base / sub, report) for sub in ("image", "label", "mask")}
        items = _paired_items(files, {"label": "text-free label", "mask": "text mask"})
        check = partial(_check_same_sizes, verify=verify)
        kept = _check_items(items, check, on_error, report, num_workers or _default_workers())
        options = {"mask_text_value": mask_text_value}
        out[split] = _build_dataset(_scut_generator, kept, options, cache_dir, keep_in_memory, num_proc)
        reports[split] = report
    return _finish(out, reports, return_report)


# ----------------------------------------------------------------------------------------------------------
# TextSeg
# ----------------------------------------------------------------------------------------------------------

TEXTSEG_LABEL_SUFFIX = "_maskfg"


def _textseg_generator(items: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in items:
        image_path, label_path = item["files"]
        with Image.open(label_path) as label:
            arr = np.asarray(label.convert("L") if label.mode not in ("L", "RGB") else label)
        target = textseg_label_to_target(arr, strict=options["strict"], path=label_path)
        yield {
            "image": _raw(image_path),
            "target": _png(target, item["name"] + "_target"),
            "mask": None,
            "task": TEXT_SEGMENTATION,
            "name": item["name"],
        }


def load_textseg(
    root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    *,
    on_error: OnError = "raise",
    strict_label_values: bool = True,
    verify: Literal["full", "header"] = "full",
    return_report: bool = False,
    cache_dir: str | None = None,
    keep_in_memory: bool = False,
    num_workers: int | None = None,
    num_proc: int | None = None,
) -> DatasetDict | tuple[DatasetDict, dict[str, LoadReport]]:
    """Load TextSeg (``root/image/NAME.*``, ``root/semantic_label/NAME_maskfg.png``, ``root/split.json``).

    ``split.json`` maps split names (``train``, ``val``, ``test``) to lists of sample names. ``splits``
    defaults to every split it lists (the paper trains on ``train`` + ``val``: concatenate them). Images and
    labels that no split names are reported as ignored files; a label without its image anywhere in the
    folder is an error. Other arguments as in :func:`load_scut_enstext`; ``strict_label_values=False`` turns
    unknown label values into ignore instead of an error.
    """
    root = Path(root)
    _require_dir(root, "TextSeg root")
    _require_dir(root / "image", "TextSeg image")
    _require_dir(root / "semantic_label", "TextSeg semantic_label")
    split_map = _read_textseg_splits(root / "split.json", splits)
    splits = list(split_map) if splits is None else splits
    scan_report = LoadReport("TextSeg", "*", str(root))
    images = _list_files(root / "image", scan_report)
    labels = _textseg_labels(_list_files(root / "semantic_label", scan_report), scan_report)
    listed = {n for v in split_map.values() for n in v}
    orphan_labels = [name for name in labels if name not in images]
    unlisted = sorted(str(p) for n, p in images.items() if n not in listed)
    unlisted += sorted(str(p) for n, p in labels.items() if n not in listed and n in images)
    check = partial(_check_textseg_item, verify=verify, strict=strict_label_values)

    out: dict[str, Dataset] = {}
    reports: dict[str, LoadReport] = {}
    for index, split in enumerate(splits):
        report = LoadReport("TextSeg", split, str(root))
        items: list[dict[str, Any]] = []
        if index == 0:  # files no split names, and orphan labels, are reported once, with the first split
            report.ignored_files = scan_report.ignored_files + unlisted
            items += [{"name": name, "error": DatasetFolderError(labels[name], "label without its image in 'image/'")}
                      for name in sorted(orphan_labels)]  # fmt: skip
        items += _textseg_items(split_map[split], split, images, labels, root / "split.json")
        kept = _check_items(items, check, on_error, report, num_workers or _default_workers())
        options = {"strict": strict_label_values}
        out[split] = _build_dataset(_textseg_generator, kept, options, cache_dir, keep_in_memory, num_proc)
        reports[split] = report
    return _finish(out, reports, return_report)


def _read_textseg_splits(split_path: Path, splits: Sequence[str] | None) -> dict[str, list[str]]:
    """TextSeg's ``split.json``, checked: an object of sample-name lists that has every split asked for."""
    if not split_path.is_file():
        raise DatasetFolderError(split_path, "missing split file")
    try:
        split_map = json.loads(split_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFolderError(split_path, f"unreadable JSON ({exc})") from None
    if not isinstance(split_map, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) for n in v) for v in split_map.values()
    ):
        raise DatasetFolderError(
            split_path, "expected an object mapping split names to lists of sample names"
        )
    for split in splits or ():
        if split not in split_map:
            raise DatasetFolderError(split_path, f"no split {split!r} (has {sorted(split_map)})")
    return split_map


def _textseg_labels(label_files: Mapping[str, Path], report: LoadReport) -> dict[str, Path]:
    """``{sample name: label file}`` of the ``NAME_maskfg`` files; others are reported as ignored."""
    labels: dict[str, Path] = {}
    for stem, path in label_files.items():
        if stem.endswith(TEXTSEG_LABEL_SUFFIX):
            labels[stem[: -len(TEXTSEG_LABEL_SUFFIX)]] = path
        else:
            report.ignored_files.append(str(path))
    return labels


def _textseg_items(
    names: Sequence[str], split: str, images: Mapping[str, Path], labels: Mapping[str, Path], split_path: Path
) -> list[dict[str, Any]]:
    """One item per listed sample: its two files, or the error that keeps it out."""
    items: list[dict[str, Any]] = []
    for name in names:
        item: dict[str, Any] = {"name": name}
        if name not in images and name not in labels:
            item["error"] = DatasetFolderError(
                split_path, f"split {split!r} lists {name!r} but neither its image nor its label exists"
            )
        elif name not in images:
            continue  # reported with the first split as an orphan label
        elif name not in labels:
            item["error"] = DatasetFolderError(
                images[name], f"image without its label semantic_label/{name}{TEXTSEG_LABEL_SUFFIX}.png"
            )
        else:
            item["files"] = [str(images[name]), str(labels[name])]
        items.append(item)
    return items


def _check_textseg_item(item: dict[str, Any], verify: str, strict: bool) -> dict[str, Any]:
    image_path, label_path = item["files"]
    with _open_image(Path(image_path), verify) as img:
        size = img.size
    with _open_image(Path(label_path), "full") as lab:
        if lab.size != size:
            raise DatasetFolderError(
                label_path, f"size {lab.size[0]}x{lab.size[1]} differs from its image's {size[0]}x{size[1]}"
            )
        arr = np.asarray(lab.convert("L") if lab.mode not in ("L", "RGB") else lab)
    textseg_label_to_target(arr, strict=strict, path=label_path)
    return item


# ----------------------------------------------------------------------------------------------------------
# Tampered-IC13
# ----------------------------------------------------------------------------------------------------------


def _tampered_generator(items: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    del options
    for item in items:
        image_path = item["files"][0]
        width, height = item["size"]
        boxes = [TamperBox(*b) for b in item["boxes"]]
        target = tampered_boxes_to_target(width, height, boxes)
        yield {
            "image": _raw(image_path),
            "target": _png(target, item["name"] + "_target"),
            "mask": None,
            "task": TAMPERED_TEXT_DETECTION,
            "name": item["name"],
        }


def load_tampered_ic13(
    root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    *,
    on_error: OnError = "raise",
    verify: Literal["full", "header"] = "full",
    return_report: bool = False,
    cache_dir: str | None = None,
    keep_in_memory: bool = False,
    num_workers: int | None = None,
    num_proc: int | None = None,
) -> DatasetDict | tuple[DatasetDict, dict[str, LoadReport]]:
    """Load Tampered-IC13 (``root/{split}_img/NAME.*`` and ``root/{split}_gt/NAME.txt``).

    ``splits`` defaults to every one of ``train``/``test`` whose two folders exist. Boxes are filled into
    the three-colour target (see :func:`tampered_boxes_to_target`). Other arguments as in
    :func:`load_scut_enstext`.
    """
    root = Path(root)
    _require_dir(root, "Tampered-IC13 root")
    if splits is None:
        splits = [s for s in ("train", "test") if (root / f"{s}_img").is_dir() or (root / f"{s}_gt").is_dir()]
        if not splits:
            raise DatasetFolderError(root, "missing folder (no 'train_img'/'test_img' split folder)")
    out: dict[str, Dataset] = {}
    reports: dict[str, LoadReport] = {}
    for split in splits:
        report = LoadReport("Tampered-IC13", split, str(root))
        _require_dir(root / f"{split}_img", f"Tampered-IC13 {split} images")
        _require_dir(root / f"{split}_gt", f"Tampered-IC13 {split} ground truth")
        images = _list_files(root / f"{split}_img", report)
        gts = _list_files(root / f"{split}_gt", report, frozenset({".txt"}))
        items: list[dict[str, Any]] = []
        for name in sorted(set(images) | set(gts)):
            item: dict[str, Any] = {"name": name}
            if name not in images:
                item["error"] = DatasetFolderError(gts[name], f"gt file without its image in '{split}_img/'")
            elif name not in gts:
                item["error"] = DatasetFolderError(
                    images[name], f"image without its gt file {split}_gt/{name}.txt"
                )
            else:
                item["files"] = [str(images[name]), str(gts[name])]
            items.append(item)

        def check(item: dict[str, Any]) -> dict[str, Any]:
            image_path, gt_path = item["files"]
            with _open_image(Path(image_path), verify) as img:
                size = img.size
            try:
                text = Path(gt_path).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetFolderError(gt_path, f"unreadable gt file ({exc})") from None
            boxes = parse_tampered_ic13_gt(text, gt_path)
            return {**item, "size": list(size), "boxes": [[b.x1, b.y1, b.x2, b.y2, b.label] for b in boxes]}

        kept = _check_items(items, check, on_error, report, num_workers or _default_workers())
        out[split] = _build_dataset(_tampered_generator, kept, {}, cache_dir, keep_in_memory, num_proc)
        reports[split] = report
    return _finish(out, reports, return_report)


# ----------------------------------------------------------------------------------------------------------
# Any other pixel task: image / target pairs
# ----------------------------------------------------------------------------------------------------------


def _pairs_generator(items: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in items:
        image_path, target_path = item["files"]
        yield {"image": _raw(image_path), "target": _raw(target_path), "mask": None, "task": options["task"],
               "name": item["name"]}  # fmt: skip


def load_image_pairs(
    root: str | os.PathLike[str],
    task: str,
    splits: Sequence[str] | None = None,
    *,
    on_error: OnError = "raise",
    verify: Literal["full", "header"] = "full",
    return_report: bool = False,
    cache_dir: str | None = None,
    keep_in_memory: bool = False,
    num_workers: int | None = None,
    num_proc: int | None = None,
) -> DatasetDict | tuple[DatasetDict, dict[str, LoadReport]]:
    """Load a new pixel task from ``root/{split}/{image,target}/NAME.*`` (the target is the task's RGB image,
    128-gray where ignored), with the same validation and options as :func:`load_scut_enstext`.

    Returns:
        A ``DatasetDict`` keyed by split with the uniform schema (``task`` = ``task``, ``mask`` = ``None``).
    """
    root = Path(root)
    _require_dir(root, f"{task} dataset root")
    splits = splits if splits is not None else _split_folders(root)
    out: dict[str, Dataset] = {}
    reports: dict[str, LoadReport] = {}
    for split in splits:
        report = LoadReport(task, split, str(root))
        base = root / split
        for sub in ("image", "target"):
            _require_dir(base / sub, f"{task} {split}/{sub}")
        files = {sub: _list_files(base / sub, report) for sub in ("image", "target")}
        items = _paired_items(files, {"target": "target image"})
        kept = _check_items(items, partial(_check_same_sizes, verify=verify), on_error, report,
                            num_workers or _default_workers())  # fmt: skip
        out[split] = _build_dataset(
            _pairs_generator, kept, {"task": task}, cache_dir, keep_in_memory, num_proc
        )
        reports[split] = report
    return _finish(out, reports, return_report)


#: The loader of each dataset folder layout (``Task.dataset`` in :mod:`upocr_hf.tasks` names one). Each is called
#: as ``loader(root, splits, **options)``; ``image-pairs`` also gets the task id, which its samples carry.
DATASET_LOADERS: dict[str, Callable[..., Any]] = {
    "SCUT-EnsText": load_scut_enstext,
    "TextSeg": load_textseg,
    "Tampered-IC13": load_tampered_ic13,
    "image-pairs": load_image_pairs,
}


def load_task_dataset(
    task: str,
    root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    *,
    streaming: bool = False,
    **options: Any,
) -> DatasetDict:
    """Load ``task``'s data, in the uniform schema, from any of:

    * a ``save_to_disk`` folder (see :func:`load_saved_dataset`);
    * a folder ``datasets.load_dataset`` reads (see :func:`load_hub_dataset`): ``imagefolder`` style, with
      ``metadata.jsonl``, or Parquet files as ``push_to_hub`` writes them;
    * a Hub dataset id (``owner/name``; offline, from the ``datasets`` cache), when no such local path exists;
    * a folder in the layout of the task's registered public dataset (``Task.dataset``), read by that layout's
      loader with ``options`` (``on_error``, ``verify``, ...).

    Returns a ``DatasetDict`` keyed by split; with ``streaming``, what ``load_dataset`` reads comes as an
    ``IterableDatasetDict`` of streams (the other sources are prepared as usual)."""
    spec = get_task(task)
    if _is_saved_dataset(Path(root)):
        return load_saved_dataset(task, root, splits)
    if _is_load_dataset_folder(Path(root)) or _is_hub_id(root):
        return load_hub_dataset(task, str(root), splits, streaming=streaming)
    if spec.dataset not in DATASET_LOADERS:
        raise ValueError(
            f"task {task!r}: no loader for dataset layout {spec.dataset!r}; known: {list(DATASET_LOADERS)}"
        )
    if spec.dataset == "image-pairs":
        return load_image_pairs(root, spec.id, splits, **options)
    return DATASET_LOADERS[spec.dataset](root, splits, **options)


def _is_saved_dataset(root: Path) -> bool:
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


#: Files by which `load_dataset` recognises a local folder (metadata of an ``imagefolder``, Parquet shards).
_LOAD_DATASET_PATTERNS = ("metadata.jsonl", "*/metadata.jsonl", "*.parquet", "*/*.parquet")


def _is_load_dataset_folder(root: Path) -> bool:
    return root.is_dir() and any(next(root.glob(pattern), None) for pattern in _LOAD_DATASET_PATTERNS)


def _is_hub_id(spec: str | os.PathLike[str]) -> bool:
    """``owner/name`` that is not a local path."""
    text = str(spec)
    return not Path(text).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None


def load_hub_dataset(
    task: str, path: str, splits: Sequence[str] | None = None, *, streaming: bool = False
) -> DatasetDict:
    """What ``datasets.load_dataset(path)`` reads, in the uniform schema (checked as :func:`load_saved_dataset`
    checks): a Hub dataset id (with ``HF_HUB_OFFLINE=1``, the copy an earlier online load left in the ``datasets``
    cache), or a local folder of an ``imagefolder`` (``metadata.jsonl`` rows with ``image_file_name``,
    ``target_file_name`` and, for text removal, ``mask_file_name``, per split folder ``train/``, ``test/``) or of
    Parquet shards. `DatasetFolderError` names the source when it cannot be read. ``streaming``: an
    ``IterableDatasetDict``, read as it is iterated."""
    from datasets import load_dataset

    try:
        loaded = load_dataset(path, streaming=streaming)
    except Exception as error:  # not found, not cached offline, unreadable: datasets' own reason
        where = "no such folder; as a Hub dataset id" if _is_hub_id(path) else "load_dataset"
        raise DatasetFolderError(path, f"{where}: {str(error).splitlines()[0]}") from None
    return _uniform_splits(task, path, loaded, splits, "dataset")


def load_saved_dataset(
    task: str, root: str | os.PathLike[str], splits: Sequence[str] | None = None
) -> DatasetDict:
    """A ``datasets`` ``save_to_disk`` folder (a ``DatasetDict``, or one ``Dataset``: split ``"train"``) in the
    uniform schema: ``image`` and ``target`` columns (images), ``mask`` too for a task that trains with a text mask;
    a ``task`` column is added when there is none. `DatasetFolderError` names the folder and what is missing."""
    from datasets import load_from_disk

    loaded = load_from_disk(str(root))
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    return _uniform_splits(task, Path(root), loaded, splits, "saved dataset")


def _uniform_splits(
    task: str, source: str | Path, loaded: DatasetDict, splits: Sequence[str] | None, kind: str
) -> DatasetDict:
    """The chosen splits of `loaded`, checked against the task's schema, with a ``task`` column."""
    spec = get_task(task)
    out = {}
    for split in splits if splits is not None else list(loaded):
        if split not in loaded:
            raise DatasetFolderError(source, f"no split {split!r} in this {kind} (has {sorted(loaded)})")
        out[split] = _with_task_column(loaded[split], spec, source, split)
    return type(loaded)(out)


def _with_task_column(dataset: Any, spec: Any, source: str | Path, split: str) -> Any:
    """`dataset` checked for the columns of `spec`'s schema, with a ``task`` column (added when there is none).
    A stream whose features are not declared is checked as it is read, by the augmentation."""
    columns = dataset.column_names
    if columns is None:
        return dataset.map(lambda row: {"task": spec.id})
    required = {"image", "target"} | ({"mask"} if spec.text_mask else set())
    missing = sorted(required - set(columns))
    if missing:
        raise DatasetFolderError(
            source, f"split {split!r} lacks the column(s) {missing} of the {spec.id} schema"
        )
    if isinstance(dataset, IterableDataset):  # a stream's rows are only known as they are read
        if "task" in columns:
            return dataset
        features = Features({**dataset.features, "task": Value("string")})
        return dataset.map(lambda row: {"task": spec.id}, features=features)
    if "task" not in columns:
        return dataset.add_column("task", [spec.id] * len(dataset))
    if set(dataset.unique("task")) != {spec.id}:
        raise DatasetFolderError(
            source, f"split {split!r} holds rows of task(s) {dataset.unique('task')}, not {spec.id!r}"
        )
    return dataset


def load_task_datasets(
    folders: Mapping[str, str | os.PathLike[str]],
    splits: Mapping[str, Sequence[str]],
    *,
    streaming: bool = False,
    **options: Any,
) -> dict[str, Dataset]:
    """``{task: Dataset}``: for each task, the given ``splits[task]`` of its data, concatenated (``streaming``: an
    ``IterableDataset`` where ``load_dataset`` reads the data, see :func:`load_task_dataset`)."""
    from datasets import concatenate_datasets

    result = {}
    for task, folder in folders.items():
        parts = load_task_dataset(task, folder, list(splits[task]), streaming=streaming, **options)
        result[task] = concatenate_datasets([parts[split] for split in splits[task]])
    return result

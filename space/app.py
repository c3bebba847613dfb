"""UPOCR demo: one model, three pixel-level OCR tasks (text removal, text segmentation, tampered text detection).

A Gradio Blocks app, ready to be a Hugging Face Space. Run it locally with

    python space/app.py                                     # the shipped default model
    UPOCR_MODEL=path/to/folder python space/app.py          # a save_pretrained folder
    UPOCR_MODEL=your-name/upocr python space/app.py         # a Hub model id (needs network)

Environment variables (all optional):

- `UPOCR_MODEL`: model folder or Hub id. Default: a `model/` folder next to this file if there is one, else the
  model shipped with the `upocr_hf` package (`upocr_hf.DEFAULT_MODEL`).
- `UPOCR_DEVICE`: `cpu`, `cuda`, ... (default: `cuda` when available).
- `UPOCR_MAX_FILE_SIZE` (default `10mb`), `UPOCR_MAX_PIXELS` (default 25,000,000), `UPOCR_QUEUE_SIZE` (default 16),
  `UPOCR_CONCURRENCY` (default 1: model calls run one at a time), `UPOCR_CACHE_EXAMPLES` (default 1: compute the
  examples' outputs at start-up; 0 to skip).
- `GRADIO_SERVER_NAME` (default `0.0.0.0`, as Spaces need) and `GRADIO_SERVER_PORT` (default 7860).

The model runs through the UPOCR pipeline: with the `upocr_hf` package installed, `pipeline("upocr", model=...)`;
without it (a bare Space), `pipeline(model=..., trust_remote_code=True)` with the code saved in the model folder.
All pre- and post-processing is the pipeline's; this file only arranges inputs and outputs.

The API endpoints are `/remove`, `/segment` and `/detect`; see the "Use via API" page of the running app.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

logger = logging.getLogger("upocr_space")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
#: A model folder copied next to this file (how a bare Space ships its model).
LOCAL_MODEL_DIR = HERE / "model"

MAX_FILE_SIZE = os.environ.get("UPOCR_MAX_FILE_SIZE", "10mb")
MAX_PIXELS = int(os.environ.get("UPOCR_MAX_PIXELS", "25000000"))
QUEUE_SIZE = int(os.environ.get("UPOCR_QUEUE_SIZE", "16"))
CONCURRENCY = int(os.environ.get("UPOCR_CONCURRENCY", "1"))

TEXT_REMOVAL = "text-removal"
TEXT_SEGMENTATION = "text-segmentation"
TAMPERED_TEXT_DETECTION = "tampered-text-detection"

#: Display height of every image (inputs and outputs), in CSS pixels: a tall image fits the screen.
IMAGE_HEIGHT = 360
#: Removal downloads kept on disk (older ones are deleted; Gradio keeps its own copy while serving them).
MAX_KEPT_DOWNLOADS = 64
#: Gradio's own copies of uploads and results: swept every 10 minutes, each kept for at most an hour.
DELETE_CACHE = (600, 3600)
#: Where input images may come from (no webcam: these are photos and scans of text).
SOURCES = ["upload", "clipboard"]
#: Example outputs are computed when the app starts (`UPOCR_CACHE_EXAMPLES=0` to skip), so a first visitor gets an
#: instant result.
CACHE_EXAMPLES = os.environ.get("UPOCR_CACHE_EXAMPLES", "1").strip().lower() not in (
    "0",
    "false",
    "no",
    "off",
)


# ---------------------------------------------------------------------------------------------------- model


def default_model() -> str:
    """The model to serve: `$UPOCR_MODEL`, else `./model` next to this file, else `upocr_hf.DEFAULT_MODEL`.

    Raises:
        RuntimeError: none of the three is available; the message says how to provide one.
    """
    chosen = os.environ.get("UPOCR_MODEL", "").strip()
    if chosen:
        return chosen
    if (LOCAL_MODEL_DIR / "config.json").is_file():
        return str(LOCAL_MODEL_DIR)
    try:
        from upocr_hf import default_model_path
    except ImportError:
        default_model_path = None
    shipped = default_model_path() if default_model_path else None
    if shipped:
        return shipped
    raise RuntimeError(
        "No UPOCR model to serve. Set UPOCR_MODEL to a save_pretrained folder or a Hub model id, copy a model "
        f"folder to {LOCAL_MODEL_DIR}, or install the upocr_hf package with its default model "
        f"(upocr_hf importable: {default_model_path is not None}; its default model found: no)."
    )


def load_pipeline(model: str, device: str | None = None) -> Any:
    """Build the UPOCR pipeline for a model folder or Hub id.

    With `upocr_hf` importable the package's registered `"upocr"` task is used; otherwise the code saved in the
    model folder (`custom_pipelines` in its `config.json`) is loaded with `trust_remote_code=True`.
    """
    import torch
    from transformers import pipeline

    device = device or os.environ.get("UPOCR_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        from upocr_hf.pipeline_upocr import load_upocr_pipeline
    except ImportError:
        logger.info("upocr_hf is not installed: loading the model folder's own code (trust_remote_code=True)")
        return pipeline(model=model, trust_remote_code=True, device=device)
    return load_upocr_pipeline(model, device=device)


def _sibling_module(obj: Any, name: str) -> ModuleType | None:
    """The module `name` next to the module defining `type(obj)` (`upocr_hf.tasks` or the remote-code copy)."""
    package = type(obj).__module__.rpartition(".")[0]
    try:
        return importlib.import_module(f"{package}.{name}" if package else name)
    except ImportError:
        return None


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# ---------------------------------------------------------------------------------------------------- the model's figures

#: A Hub model id: OWNER/NAME.
HUB_ID = r"[\w.-]+/[\w.-]+"
#: Below this tampered-text F on its held-out figures, the tampering tab says plainly that detection is weak.
WEAK_TAMPER_F = 0.3
#: The tampering tab's figures: measured under the region rule the tab applies (the folder's `tamper_region_rule`)
#: where the folder has that record; a folder without one quotes its plain argmax record.
RULED_TAMPER_RECORD = f"{TAMPERED_TEXT_DETECTION} (region rule)"
#: The figures each tab quotes from the model's evaluation records (`eval_results.json`, written by
#: `upocr_hf.packaging`): (record, metric, label, factor, unit).
TAB_FIGURES: dict[str, tuple[tuple[str, str, str, float, str], ...]] = {
    TEXT_REMOVAL: (
        ("text-removal (keep background)", "psnr", "PSNR", 1, " dB"),
        ("text-removal (keep background)", "mssim", "MSSIM", 100, ""),
    ),
    TEXT_SEGMENTATION: (
        (TEXT_SEGMENTATION, "fg_iou", "fgIoU", 100, ""),
        (TEXT_SEGMENTATION, "f_score", "F", 100, ""),
    ),
    TAMPERED_TEXT_DETECTION: (
        (TAMPERED_TEXT_DETECTION, "mf", "mF", 100, ""),
        (TAMPERED_TEXT_DETECTION, "tampered_f_score", "tampered-text F", 100, ""),
    ),
}


class ModelFacts:
    """What the tabs say about the served model: its name, a link to its card and its own evaluation figures."""

    def __init__(self, model: str):
        self.model = model
        self.is_folder = os.path.isdir(model)
        self.name = Path(model).name if self.is_folder else model
        self.card_path = Path(model, "README.md") if self.is_folder else None
        try:
            self.records: dict[str, Any] = json.loads(Path(model, "eval_results.json").read_text())
        except (OSError, ValueError):
            self.records = {}

    @property
    def card_url(self) -> str | None:
        """The model card: the Hub page of a Hub id, the folder's README.md served by this app, or None."""
        if not self.is_folder:  # a Hub id has the form OWNER/NAME; a pipeline object's class name is no id
            return f"https://huggingface.co/{self.model}" if re.fullmatch(HUB_ID, self.model) else None
        if self.card_path and self.card_path.is_file():
            return f"gradio_api/file={urllib.parse.quote(str(self.card_path.resolve()))}"
        return None

    def metrics(self, record: str) -> Mapping[str, Any]:
        """The figures of one evaluation record (empty where the record or its figures are missing or malformed)."""
        entry = self.records.get(record) if isinstance(self.records, Mapping) else None
        metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
        return metrics if isinstance(metrics, Mapping) else {}

    def figure(self, record: str, metric: str) -> float | None:
        if record == TAMPERED_TEXT_DETECTION and self.metrics(RULED_TAMPER_RECORD):
            record = (
                RULED_TAMPER_RECORD  # what the tab shows is read under the rule: quote the figures of that
            )
        value = self.metrics(record).get(metric)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def line(self, task: str) -> str:
        """One line for a tab: the model, its figures on this task (where its folder records them), its card."""
        figures = []
        for record, metric, label, factor, unit in TAB_FIGURES.get(task, ()):
            value = self.figure(record, metric)
            if value is not None:
                figures.append(f"{label} {value * factor:.1f}{unit}")
        counts = [self.metrics(record).get("num_images") for record, *_ in TAB_FIGURES.get(task, ())]
        images = next((count for count in counts if isinstance(count, int) and count > 0), None)
        if not figures:
            quality = "no test figures in its folder"
        elif images:
            quality = f"on its {images}-image test split: {', '.join(figures)}"
        else:
            quality = f"its test figures: {', '.join(figures)}"
        url = self.card_url
        card = f" · [model card]({url})" if url else ""
        return f"Model `{self.name}` · {quality}{card}"

    def tamper_warning(self) -> str:
        """A plain warning when the model's own figures show weak detection of tampered text; else empty."""
        tampered_f = self.figure(TAMPERED_TEXT_DETECTION, "tampered_f_score")
        if tampered_f is None or tampered_f >= WEAK_TAMPER_F:
            return ""
        return (
            f"**Detection of tampered text is weak with this model** (tampered-text F {tampered_f:.2f} on its test "
            "forgeries; 1 is perfect): treat marked regions as hints, and finding none as no evidence of authenticity."
        )


# ---------------------------------------------------------------------------------------------------- drawing

#: Colours the demo draws with. Not the task's target colours: a red background reads as an alarm.
CLASS_DISPLAY_RGB: dict[int, tuple[int, int, int]] = {0: (40, 40, 40), 1: (46, 204, 113), 2: (255, 0, 200)}
#: Overlay colours for text masks; the one farthest from the image's colours under the mask is used.
CONTRAST_RGB = np.array([[255, 0, 200], [0, 229, 255], [255, 214, 0], [46, 204, 113]], dtype=np.float32)
OVERLAY_ALPHA = 0.45


def _line_width(mask: np.ndarray) -> int:
    return max(1, round(max(mask.shape) / 400))


def outline(mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(inner, outer): the mask's border `width` pixels inside it, and a `width`-pixel ring just outside it."""
    from scipy import ndimage

    inner = mask & ~ndimage.binary_erosion(mask, iterations=width)
    outer = ndimage.binary_dilation(mask, iterations=width) & ~mask
    return inner, outer


def contrasting_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The overlay colour farthest (RGB distance) from the mean colour of the image under `mask`."""
    mean = image[mask].mean(axis=0) if mask.any() else image.reshape(-1, 3).mean(axis=0)
    return CONTRAST_RGB[np.linalg.norm(CONTRAST_RGB - mean, axis=1).argmax()]


def draw_masks(image: np.ndarray, layers: Sequence[tuple[np.ndarray, Sequence[int], float]]) -> Image.Image:
    """Tint each `(mask, rgb, alpha)` layer onto a uint8 `(H, W, 3)` image and outline it in its colour with a
    dark halo, so that it stays visible on any photograph (a green mask on a green photo included)."""
    canvas = image.astype(np.float32)
    for mask, rgb, alpha in layers:
        if not mask.any():
            continue
        colour = np.asarray(rgb, dtype=np.float32)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour
        inner, outer = outline(mask, _line_width(mask))
        canvas[outer] = 0.3 * canvas[outer]
        canvas[inner] = colour
    return Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8), mode="RGB")


def class_map_image(class_map: np.ndarray) -> Image.Image:
    """The class map in the demo's colours (`CLASS_DISPLAY_RGB`)."""
    palette = np.array([CLASS_DISPLAY_RGB[index] for index in sorted(CLASS_DISPLAY_RGB)], dtype=np.uint8)
    return Image.fromarray(palette[np.asarray(class_map, dtype=np.intp)], mode="RGB")


def legend_html(labels: Mapping[int, str]) -> str:
    """Colour legend of the tampering outputs (class names `labels`), in the colours they are drawn with."""
    items = "".join(
        f'<span class="upocr-legend-item"><span class="upocr-swatch" style="background:{_hex(rgb)}"></span>'
        f"{labels[index]}</span>"
        for index, rgb in CLASS_DISPLAY_RGB.items()
    )
    return f'<div id="tamper-legend">{items}</div>'


# ---------------------------------------------------------------------------------------------------- the verdict

#: The tampered-text rule of this demo for a model folder that has none of its own (`tamper_region_rule`, chosen
#: on validation data by scripts/choose_tamper_rule.py; that one is used where it exists): a text region, judged
#: whole as a word is forged or not, counts as tampered when at least MIN_TAMPERED_SHARE of its pixels read
#: tampered, it covers at least MIN_REGION_SHARE of the image (and at least MIN_REGION_PIXELS) and its mean
#: tampered score is at least MIN_REGION_SCORE. Tampered pixels outside such regions are read as their next most
#: likely class. The verdict, the region count, the area shares and both pictures all
#: come from the class map after this rule, so they cannot contradict each other.
MIN_REGION_SHARE = 2e-4
MIN_REGION_PIXELS = 16
MIN_REGION_SCORE = 0.5
MIN_TAMPERED_SHARE = 0.5


def min_region_area(height: int, width: int) -> int:
    return max(MIN_REGION_PIXELS, math.ceil(MIN_REGION_SHARE * height * width))


class TamperVerdict:
    """The tampering tab's one reading of a class map (after the region rule) and its regions."""

    def __init__(self, class_map: np.ndarray, regions: list[dict[str, Any]]):
        self.class_map = class_map
        self.regions = regions

    @property
    def real_pixels(self) -> int:
        return int((self.class_map == 1).sum())

    @property
    def tampered_pixels(self) -> int:
        return int((self.class_map == 2).sum())

    @property
    def text_pixels(self) -> int:
        return self.real_pixels + self.tampered_pixels

    def headline(self) -> str:
        count = len(self.regions)
        if count:
            return f"### ⚠ Tampered text found: {count} region{'s' if count != 1 else ''}"
        if self.text_pixels:
            return "### No tampered text found"
        return "### No text found"

    def summary(self) -> str:
        """The area shares, in the same numbers as the headline and the pictures."""
        if not self.text_pixels:
            return "Nothing in this image was read as text."
        share = self.tampered_pixels / self.text_pixels
        return (
            f"Text covers {self.text_pixels / self.class_map.size:.1%} of the image; "
            f"{share:.1%} of it is marked tampered ({self.tampered_pixels:,} px), {1 - share:.1%} real."
        )


# ---------------------------------------------------------------------------------------------------- the app


NO_IMAGE = "Upload an image first (or click one of the examples)."


def _error(title: str, message: str) -> gr.Error:
    """An error whose toast starts with its title: Gradio 6 heads every toast with its kind ("Error", "Warning")
    and shows no title of its own, so the title leads the message."""
    return gr.Error(f"{title} — {message}", title=title, print_exception=False)


def tile_reporter(progress: Any, clock: Any = time.monotonic) -> Any:
    """A tile-progress callback for the pipeline that tells `progress` how many tiles are done and, from the pace so
    far, about how long the rest will take (Gradio's own estimate is the mean duration of past runs, whatever
    their size)."""
    started = clock()

    def report(done: int, total: int) -> None:
        left = (clock() - started) / done * (total - done)
        estimate = f" · about {math.ceil(left)} s left" if done < total else ""
        progress(done / total, desc=f"tile {done} of {total}{estimate}")

    return report


#: Pipeline options this app uses that older pipeline code (a model folder's copy) may not know.
NEWER_OPTIONS = ("min_region_score", "min_tampered_share", "progress_callback")


def pipeline_options(pipe: Any) -> set[str]:
    """The call options `pipe` accepts (the parameters of its `_sanitize_parameters`)."""
    return set(inspect.signature(pipe._sanitize_parameters).parameters) - {"kwargs"}


#: The callbacks' progress parameter (Gradio gives each call its own tracker in its place).
PROGRESS = gr.Progress()


class UpocrDemo:
    """The callbacks of the app around one UPOCR pipeline (thread-safe: model calls are serialised)."""

    def __init__(self, pipe: Any, facts: ModelFacts, max_pixels: int | None = MAX_PIXELS):
        self.pipe = pipe
        self.facts = facts
        self.max_pixels = max_pixels
        self.tasks: list[str] = list(pipe.model.config.tasks)
        tasks_module = _sibling_module(pipe, "tasks")
        # the model folder's defaults (preprocessor_config.json): the mode and threshold its model scored best in
        paper_threshold = getattr(tasks_module, "SEGMENTATION_THRESHOLD", 0.4)
        self.threshold: float = getattr(pipe.image_processor, "segmentation_threshold", paper_threshold)
        self.tile: bool = bool(getattr(pipe.image_processor, "do_tile", False))
        self.class_names: dict[int, str] = dict(
            getattr(tasks_module, "TAMPER_ID2LABEL", {0: "background", 1: "real text", 2: "tampered text"})
        )
        processing_module = _sibling_module(
            pipe.image_processor, "image_processing_upocr"
        ) or sys.modules.get(type(pipe.image_processor).__module__)
        self._to_uint8 = getattr(processing_module, "to_uint8_rgb", None)
        self._lock = threading.Lock()
        #: the call options the loaded pipeline takes: a folder saved with older code lacks the newer ones (the
        #: region rule, tile progress), and those are left out rather than refused on every run
        self.options = pipeline_options(pipe)
        if missing := sorted(set(NEWER_OPTIONS) - self.options):
            logger.warning("the model folder's pipeline code predates %s; those features are off", missing)
        self.work_dir = Path(tempfile.mkdtemp(prefix="upocr-space-"))
        self.downloads_dir = self.work_dir / "downloads"
        self.examples_cache_dir = self.work_dir / "examples"
        self._downloads: deque[Path] = deque()
        # the folder goes when the app object does, or at the latest when the process exits
        self.close = weakref.finalize(self, shutil.rmtree, self.work_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ helpers

    def _read(self, upload: Any) -> tuple[Any, np.ndarray, str]:
        """Uploaded file → (the processor's float image `(3, H, W)`, its uint8 RGB `(H, W, 3)`, the file's name).

        Raises `gr.Error` with the processor's reason for any file that is not a usable image.
        """
        image, name = self._load(upload)
        return image, self._uint8(image), name

    def _load(self, upload: Any) -> tuple[Any, str]:
        """Uploaded file → (the processor's float image `(3, H, W)`, the file's name); `gr.Error` as `_read`."""
        if upload is None:
            raise _error("No image", NO_IMAGE)
        if isinstance(upload, Mapping):  # the upload's FileData (the events run with preprocess=False)
            path, name = upload.get("path"), upload.get("orig_name")
        else:
            path, name = str(upload), None
        if not path:
            raise _error("No image", "the upload did not arrive; please try again.")
        name = name or Path(path).name
        try:
            image = self.pipe.image_processor.convert_image(path, max_pixels=self.max_pixels)
        except ValueError as error:  # ImageLoadError (a ValueError) carries a human-readable reason
            raise _error("Not a usable image", f"“{name}” cannot be used: {self._reason(error)}.") from None
        return image, name

    @staticmethod
    def _reason(error: ValueError) -> str:
        if getattr(error, "limit", None):  # too many pixels: the visitor can only make the image smaller
            return (
                f"it has {error.pixels:,} pixels and this demo takes at most {error.limit:,}; resize it first"
            )
        return getattr(error, "reason", None) or str(error)

    def check_upload(self, upload: Any) -> Any:
        """Upload event: a file that is not a usable image is named in a toast at once and cleared from the input
        (instead of a broken picture and an error only after Run)."""
        if upload is None:
            return gr.skip()
        try:
            self._load(upload)
        except gr.Error as error:
            gr.Warning(error.message, title=error.title)
            return None
        return gr.skip()

    @staticmethod
    def require_image(upload: Any, *options: Any) -> list[dict[str, Any]]:
        """Validator of every Run button: without an image the input says so, and no output turns into an error."""
        return [gr.validate(upload is not None, NO_IMAGE)] + [gr.validate(True, "") for _ in options]

    def _uint8(self, image: Any) -> np.ndarray:
        if self._to_uint8 is not None:
            return self._to_uint8(image)
        return image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()

    def _run(
        self, image: Any, task: str, progress: Any = None, **options: Any
    ) -> tuple[dict[str, Any], float]:
        """The pipeline's result for one image and the seconds it took (tiles reported to `progress`)."""
        if task not in self.tasks:
            raise _error("Task unknown to this model", f"it knows {', '.join(self.tasks)}, not {task}.")
        options = {key: value for key, value in options.items() if key in self.options}
        try:
            with self._lock:
                if options.get("tile") and progress is not None and "progress_callback" in self.options:
                    options["progress_callback"] = tile_reporter(
                        progress
                    )  # its clock starts when the model does
                start = time.perf_counter()
                result = self.pipe(image, task=task, **options)
                return result, time.perf_counter() - start
        except gr.Error:
            raise
        except Exception as error:  # keep serving: report the failure in the UI, log the traceback
            logger.exception("UPOCR pipeline failed")
            raise _error("Processing failed", f"the model could not process this image: {error}") from None

    def _save_download(self, image: Image.Image, name: str, suffix: str) -> str:
        path = self.downloads_dir / f"{time.time_ns()}" / f"{Path(name).stem or 'image'}_{suffix}.png"
        path.parent.mkdir(parents=True)
        image.save(path, format="PNG")
        self._downloads.append(path)
        while len(self._downloads) > MAX_KEPT_DOWNLOADS:
            old = self._downloads.popleft()
            old.unlink(missing_ok=True)
            try:
                old.parent.rmdir()
            except OSError:
                pass
        return str(path)

    @staticmethod
    def _mode(tile: bool, seconds: float, height: int, width: int) -> str:
        mode = "high-resolution tiles" if tile else "resized to the model size"
        return f"{width}×{height} px · {mode} · {seconds:.2f} s"

    # ------------------------------------------------------------------------------------------ callbacks

    def remove(
        self,
        image: Any,
        tile: bool | None = None,
        keep_background: bool = True,
        progress: gr.Progress = PROGRESS,
    ) -> tuple[tuple[Image.Image, Image.Image], str, str]:
        """Text removal → ((input, output) for the slider, PNG file to download, info line). `tile` `None`: the
        model's default mode (as in the other callbacks)."""
        pixels, original, name = self._read(image)
        tile = self.tile if tile is None else tile
        options = dict(tile=bool(tile), keep_background=bool(keep_background))
        result, seconds = self._run(pixels, TEXT_REMOVAL, progress, **options)
        output: Image.Image = result["image"]
        info = self._mode(bool(tile), seconds, *original.shape[:2])
        if result.get("text_mask") is not None:
            info += f" · only the detected text region ({float(np.mean(result['text_mask'])):.1%}) changed"
        download = self._save_download(output, name, "text_removed")
        return (Image.fromarray(original), output), download, info

    def segment(
        self,
        image: Any,
        threshold: float | None = None,
        tile: bool | None = None,
        progress: gr.Progress = PROGRESS,
    ) -> tuple[Image.Image, Image.Image, str]:
        """Text segmentation → (overlay on the input, binary mask, info line)."""
        pixels, original, _ = self._read(image)
        tile = self.tile if tile is None else tile
        threshold = self.threshold if threshold is None else float(threshold)
        result, seconds = self._run(pixels, TEXT_SEGMENTATION, progress, tile=bool(tile), threshold=threshold)
        mask = np.asarray(result["mask"], dtype=bool)
        overlay = draw_masks(original, [(mask, contrasting_colour(original, mask), OVERLAY_ALPHA)])
        info = (
            f"{self._mode(bool(tile), seconds, *original.shape[:2])} · text on {mask.mean():.1%} of the image"
        )
        return overlay, result["image"], info

    def detect(
        self, image: Any, tile: bool | None = None, progress: gr.Progress = PROGRESS
    ) -> tuple[Image.Image, Image.Image, str, str]:
        """Tampered text detection → (marked input, class map, verdict, info line), all from one `TamperVerdict`."""
        pixels, original, _ = self._read(image)
        tile = self.tile if tile is None else tile
        height, width = original.shape[:2]
        options: dict[str, Any] = dict(tile=bool(tile))
        if getattr(self.pipe.image_processor, "tamper_region_rule", None) and "region_rule" in self.options:
            options["region_rule"] = True  # the rule chosen for this model on validation data
        else:
            options.update(
                min_region_area=min_region_area(height, width),
                min_region_score=MIN_REGION_SCORE,
                min_tampered_share=MIN_TAMPERED_SHARE,
            )
        result, seconds = self._run(pixels, TAMPERED_TEXT_DETECTION, progress, **options)
        verdict = TamperVerdict(np.asarray(result["class_map"]), list(result.get("regions") or []))
        marked = draw_masks(
            original,
            [
                (verdict.class_map == 1, CLASS_DISPLAY_RGB[1], 0.25),
                (verdict.class_map == 2, CLASS_DISPLAY_RGB[2], 0.5),
            ],
        )
        info = f"{self._mode(bool(tile), seconds, height, width)} · {verdict.summary()}"
        return marked, class_map_image(verdict.class_map), verdict.headline(), info


def _examples(*prefixes: str) -> list[list[str]]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [[str(p)] for p in sorted(EXAMPLES_DIR.glob("*.png")) if p.name.startswith(prefixes)]


@contextlib.contextmanager
def _examples_cache(folder: Path) -> Iterator[None]:
    """Gradio caches example outputs under $GRADIO_EXAMPLES_CACHE, keyed by component number: a folder shared with
    an earlier run would show an earlier model's outputs. Each app caches in its own fresh folder instead."""
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous


INTRO = """\
# UPOCR · pixel-level OCR
Erase text, segment text strokes or find tampered text: one model, three tasks. Upload an image or tap an \
example, then press **Run**.
"""

ABOUT = """\
Every output has the input's size. *High resolution* runs the model on overlapping tiles at the image's native
resolution instead of resizing it to the model size (slower; better for small text in large images). The model
follows Peng et al., *UPOCR: Towards Unified Pixel-Level OCR Interface*, ICML 2024. Images are processed in
memory and not kept; results are offered for download for a while.
"""


def _image(label: str, elem_id: str, **kwargs: Any) -> gr.Image:
    return gr.Image(label=label, elem_id=elem_id, height=IMAGE_HEIGHT, elem_classes=["upocr-image"], **kwargs)


def _input(elem_id: str) -> gr.Image:
    return _image("Image", elem_id, type="filepath", sources=SOURCES)


def _wire(app: UpocrDemo, button: gr.Button, image: gr.Image, controls: list[Any], fn: Any, outputs: list[Any],
          api_name: str, examples_prefix: str, shared: dict[str, Any]) -> None:  # fmt: skip
    """Run button, upload check and cached examples of one tab."""
    image.upload(
        app.check_upload, inputs=[image], outputs=[image], preprocess=False, api_visibility="private"
    )
    button.click(fn, inputs=[image, *controls], outputs=outputs, api_name=api_name, validator=app.require_image,
                 **shared)  # fmt: skip
    if examples := _examples(examples_prefix):
        with _examples_cache(app.examples_cache_dir):
            gr.Examples(examples, inputs=[image], outputs=outputs, fn=fn, cache_examples=CACHE_EXAMPLES,
                        cache_mode="eager", label="Examples (synthetic)", elem_id=f"{api_name}-examples")  # fmt: skip


def _model_line(app: UpocrDemo, task: str, elem_id: str) -> None:
    gr.Markdown(app.facts.line(task), elem_id=elem_id, elem_classes=["upocr-model-line"])


def _removal_tab(app: UpocrDemo, shared: dict[str, Any]) -> None:
    _model_line(app, TEXT_REMOVAL, "remove-model")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            image = _input("remove-input")
            with gr.Accordion("Options", open=False):
                tile = gr.Checkbox(app.tile, label="High resolution (tiles at native size)")
                keep = gr.Checkbox(
                    True,
                    label="Keep background (only text pixels may change)",
                    info="Pixels outside the detected text region stay byte-identical to the input "
                    "(off: the model's whole output image, the paper's protocol).",
                )
            button = gr.Button("Run", variant="primary", elem_id="remove-run")
        with gr.Column(min_width=280):
            output = gr.ImageSlider(
                label="Before (left) · after (right): drag the handle",
                format="png",
                type="pil",
                height=IMAGE_HEIGHT,
                max_height=IMAGE_HEIGHT,
                elem_id="remove-output",
                elem_classes=["upocr-image"],
            )
            download = gr.DownloadButton("Download PNG", elem_id="remove-download", size="sm")
            info = gr.Markdown(elem_id="remove-info")
    _wire(app, button, image, [tile, keep], app.remove, [output, download, info], "remove", "text", shared)


def _segmentation_tab(app: UpocrDemo, shared: dict[str, Any]) -> None:
    _model_line(app, TEXT_SEGMENTATION, "segment-model")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            image = _input("segment-input")
            with gr.Accordion("Options", open=False):
                threshold = gr.Slider(
                    0.05, 0.95, value=app.threshold, step=0.05, label="Threshold",
                    info="A pixel is text when the prediction's channel mean exceeds this.",
                )  # fmt: skip
                tile = gr.Checkbox(app.tile, label="High resolution (tiles at native size)")
            button = gr.Button("Run", variant="primary", elem_id="segment-run")
        with gr.Column(min_width=280):
            overlay = _image("Text strokes, outlined on the image", "segment-overlay", format="png")
            info = gr.Markdown(elem_id="segment-info")
            with gr.Accordion("Text mask (white = text)", open=False):
                mask = _image("Text mask", "segment-mask", format="png")
    _wire(
        app, button, image, [threshold, tile], app.segment, [overlay, mask, info], "segment", "text", shared
    )


def _tampering_tab(app: UpocrDemo, shared: dict[str, Any]) -> None:
    _model_line(app, TAMPERED_TEXT_DETECTION, "detect-model")
    if warning := app.facts.tamper_warning():
        gr.Markdown(warning, elem_id="detect-warning")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            image = _input("detect-input")
            with gr.Accordion("Options", open=False):
                tile = gr.Checkbox(app.tile, label="High resolution (tiles at native size)")
            button = gr.Button("Run", variant="primary", elem_id="detect-run")
        with gr.Column(min_width=280):
            verdict = gr.Markdown(elem_id="detect-verdict")
            marked = _image("Real and tampered text, marked on the image", "detect-annotated", format="png")
            gr.HTML(legend_html(app.class_names))
            info = gr.Markdown(elem_id="detect-info")
            with gr.Accordion("Class map", open=False):
                class_map = _image("Class map", "detect-map", format="png")
    outputs = [marked, class_map, verdict, info]
    _wire(app, button, image, [tile], app.detect, outputs, "detect", "tampered", shared)


CSS = """
/* never enlarge a small image beyond its own pixels; scale large ones down to fit */
.upocr-image img { object-fit: scale-down !important; }
.upocr-model-line p { font-size: 0.9em; opacity: 0.85; margin: 0; }
#tamper-legend { display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; font-size: 0.9em; }
.upocr-legend-item { display: inline-flex; align-items: center; }
.upocr-swatch { display: inline-block; width: 1em; height: 1em; margin-right: 0.4em; border: 1px solid #888; }
#detect-verdict h3 { margin: 0.2em 0; }
"""


def build_demo(model: str | Any | None = None, *, max_pixels: int | None = MAX_PIXELS) -> gr.Blocks:
    """Build the app around a model folder / Hub id (default: `default_model()`) or a ready pipeline object.

    The returned `gr.Blocks` has its queue configured (`UPOCR_QUEUE_SIZE`, `UPOCR_CONCURRENCY` shared by the three
    tasks); start it with `launch(demo)`.
    """
    if model is None:
        model = default_model()
    if isinstance(model, str | os.PathLike):
        model_name = os.fspath(model)
        pipe = load_pipeline(model_name)
    else:
        pipe = model
        model_name = getattr(pipe.model.config, "_name_or_path", "") or type(pipe.model).__name__
    app = UpocrDemo(pipe, ModelFacts(model_name), max_pixels=max_pixels)
    shared = dict(concurrency_id="upocr-model", concurrency_limit=CONCURRENCY, preprocess=False)

    with gr.Blocks(
        title="UPOCR: text removal, segmentation and tampering detection", delete_cache=DELETE_CACHE
    ) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs(elem_id="tasks"):
            with gr.Tab("Erase text", id="removal"):
                _removal_tab(app, shared)
            with gr.Tab("Segment", id="segmentation"):
                _segmentation_tab(app, shared)
            with gr.Tab("Tampering", id="tampering"):
                _tampering_tab(app, shared)
        with gr.Accordion("About this demo", open=False):
            gr.Markdown(ABOUT)

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    demo.upocr = app  # for tests and embedding: the callbacks and the pipeline
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """`demo.launch` with this app's defaults (host/port from the environment, upload limit, styles, examples and
    the model card allowed)."""
    app = getattr(demo, "upocr", None)
    card = app.facts.card_path if app is not None and app.facts.card_url else None
    options: dict[str, Any] = dict(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(EXAMPLES_DIR)] + ([str(card.resolve())] if card else []),
        ssr_mode=False,
        css=CSS,
    )
    options.update(kwargs)
    return demo.launch(**options)


def main() -> None:
    """Entry point: serve the default (or `$UPOCR_MODEL`) model."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch(build_demo())


if __name__ == "__main__":
    main()

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
  `UPOCR_CONCURRENCY` (default 1: model calls run one at a time).
- `GRADIO_SERVER_NAME` (default `0.0.0.0`, as Spaces need) and `GRADIO_SERVER_PORT` (default 7860).

The model runs through the UPOCR pipeline: with the `upocr_hf` package installed, `pipeline("upocr", model=...)`;
without it (a bare Space), `pipeline(model=..., trust_remote_code=True)` with the code saved in the model folder.
All pre- and post-processing is the pipeline's; this file only arranges inputs and outputs.

The API endpoints are `/remove`, `/segment` and `/detect`; see the "Use via API" page of the running app.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
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

#: Segmentation overlay: text pixels are tinted with this colour at this opacity.
OVERLAY_RGB = np.array([255, 32, 32], dtype=np.float32)
OVERLAY_ALPHA = 0.55
#: Opacity of the class masks drawn by `gr.AnnotatedImage` in the tampering tab.
ANNOTATION_ALPHA = 0.6
#: Removal downloads kept on disk (older ones are deleted; Gradio keeps its own copy while serving them).
MAX_KEPT_DOWNLOADS = 64
#: Gradio's own copies of uploads and results: swept every 10 minutes, each kept for at most an hour.
DELETE_CACHE = (600, 3600)
#: Where input images may come from (no webcam: these are photos and scans of text).
SOURCES = ["upload", "clipboard"]


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


#: Below this tampered-text F on its held-out figures, the tampering tab says plainly that detection is weak.
WEAK_TAMPER_F = 0.3


def tamper_warning(model: str) -> str:
    """A plain warning for the tampering tab when the model's own held-out figures (`eval_results.json`, written
    by `upocr_hf.packaging`) show weak detection of tampered text; empty when they do not or are unknown."""
    path = Path(model, "eval_results.json")
    try:
        figures = json.loads(path.read_text())["tampered-text-detection"]["metrics"]
        tampered_f = float(figures["tampered_f_score"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if tampered_f >= WEAK_TAMPER_F:
        return ""
    return (
        f"**Detection of tampered text is weak with this model**: on its held-out forgeries its tampered-text F is "
        f"{tampered_f:.2f} (1 is perfect). Treat blue regions as hints and an all-green map as no evidence of "
        "authenticity."
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
        from upocr_hf import (
            UpocrPipeline,
        )  # importing the package registers its classes with the Auto classes
    except ImportError:
        logger.info("upocr_hf is not installed: loading the model folder's own code (trust_remote_code=True)")
        return pipeline(model=model, trust_remote_code=True, device=device)
    # The installed package's code serves the model. Naming the pipeline class lets folders that carry
    # `custom_pipelines` (Hub-ready folders) load without remote code; trust_remote_code=False keeps transformers
    # from asking interactively about the folder's copies of that code when it probes for optional components.
    return pipeline(
        "upocr", model=model, device=device, pipeline_class=UpocrPipeline, trust_remote_code=False
    )


def _sibling_module(obj: Any, name: str) -> ModuleType | None:
    """The module `name` next to the module defining `type(obj)` (`upocr_hf.tasks` or the remote-code copy)."""
    package = type(obj).__module__.rpartition(".")[0]
    try:
        return importlib.import_module(f"{package}.{name}" if package else name)
    except ImportError:
        return None


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# ---------------------------------------------------------------------------------------------------- the app


class UpocrDemo:
    """The callbacks of the app around one UPOCR pipeline (thread-safe: model calls are serialised)."""

    def __init__(self, pipe: Any, max_pixels: int | None = MAX_PIXELS):
        self.pipe = pipe
        self.max_pixels = max_pixels
        self.tasks: list[str] = list(pipe.model.config.tasks)
        tasks_module = _sibling_module(pipe, "tasks")
        self.threshold: float = getattr(tasks_module, "SEGMENTATION_THRESHOLD", 0.4)
        self.class_rgb: tuple[tuple[int, int, int], ...] = getattr(
            tasks_module, "TAMPER_CLASS_RGB", ((255, 0, 0), (0, 255, 0), (0, 0, 255))
        )
        self.class_names: dict[int, str] = dict(
            getattr(tasks_module, "TAMPER_ID2LABEL", {0: "background", 1: "real text", 2: "tampered text"})
        )
        processing_module = _sibling_module(
            pipe.image_processor, "image_processing_upocr"
        ) or sys.modules.get(type(pipe.image_processor).__module__)
        self._to_uint8 = getattr(processing_module, "to_uint8_rgb", None)
        self._lock = threading.Lock()
        self.downloads_dir = Path(tempfile.mkdtemp(prefix="upocr-space-"))
        self._downloads: deque[Path] = deque()
        # the folder goes when the app object does, or at the latest when the process exits
        self.close = weakref.finalize(self, shutil.rmtree, self.downloads_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ helpers

    def _read(self, upload: Any) -> tuple[Any, np.ndarray, str]:
        """Uploaded file → (the processor's float image `(3, H, W)`, its uint8 RGB `(H, W, 3)`, the file's name).

        Raises `gr.Error` with the processor's reason for any file that is not a usable image.
        """
        if upload is None:
            raise gr.Error(
                "Upload an image first (or click one of the examples).",
                title="No image",
                print_exception=False,
            )
        if isinstance(upload, Mapping):  # the upload's FileData (the events run with preprocess=False)
            path, name = upload.get("path"), upload.get("orig_name")
        else:
            path, name = str(upload), None
        if not path:
            raise gr.Error("The upload did not arrive; please try again.", title="No image")
        name = name or Path(path).name
        try:
            image = self.pipe.image_processor.convert_image(path, max_pixels=self.max_pixels)
        except ValueError as error:  # ImageLoadError (a ValueError) carries a human-readable reason
            reason = getattr(error, "reason", None) or str(error)
            if getattr(error, "limit", None):  # too many pixels: the visitor can only make the image smaller
                reason = f"it has {error.pixels:,} pixels and this demo takes at most {error.limit:,}; resize it first"
            raise gr.Error(
                f"“{name}” cannot be used: {reason}.", title="Not a usable image", print_exception=False
            ) from None
        return image, self._uint8(image), name

    def _uint8(self, image: Any) -> np.ndarray:
        if self._to_uint8 is not None:
            return self._to_uint8(image)
        return image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()

    def _run(self, image: Any, task: str, **options: Any) -> dict[str, Any]:
        if task not in self.tasks:
            raise gr.Error(f"This model was not trained for {task} (it knows {', '.join(self.tasks)}).")
        try:
            with self._lock:
                return self.pipe(image, task=task, **options)
        except gr.Error:
            raise
        except Exception as error:  # keep serving: report the failure in the UI, log the traceback
            logger.exception("UPOCR pipeline failed")
            raise gr.Error(
                f"The model could not process this image: {error}", title="Processing failed"
            ) from None

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
        self, image: Any, tile: bool = False, keep_background: bool = True
    ) -> tuple[tuple[Image.Image, Image.Image], str, str]:
        """Text removal → ((input, output) for the slider, PNG file to download, info line)."""
        pixels, original, name = self._read(image)
        start = time.perf_counter()
        result = self._run(pixels, TEXT_REMOVAL, tile=bool(tile), keep_background=bool(keep_background))
        seconds = time.perf_counter() - start
        output: Image.Image = result["image"]
        info = self._mode(bool(tile), seconds, *original.shape[:2])
        if result.get("text_mask") is not None:
            info += f" · background kept outside {float(np.mean(result['text_mask'])):.1%} of the pixels"
        download = self._save_download(output, name, "text_removed")
        return (Image.fromarray(original), output), download, info

    def segment(
        self, image: Any, threshold: float | None = None, tile: bool = False
    ) -> tuple[Image.Image, Image.Image, str]:
        """Text segmentation → (binary mask, red overlay on the input, info line)."""
        pixels, original, _ = self._read(image)
        threshold = self.threshold if threshold is None else float(threshold)
        start = time.perf_counter()
        result = self._run(pixels, TEXT_SEGMENTATION, tile=bool(tile), threshold=threshold)
        seconds = time.perf_counter() - start
        mask = np.asarray(result["mask"], dtype=bool)
        blended = original.astype(np.float32)
        blended[mask] = (1 - OVERLAY_ALPHA) * blended[mask] + OVERLAY_ALPHA * OVERLAY_RGB
        overlay = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), mode="RGB")
        info = (
            f"{self._mode(bool(tile), seconds, *original.shape[:2])} · text on {mask.mean():.1%} of the image"
        )
        return result["image"], overlay, info

    def detect(
        self, image: Any, tile: bool = False
    ) -> tuple[tuple[np.ndarray, list[tuple[np.ndarray, str]]], Image.Image, dict[str, float], str]:
        """Tampered text detection → (annotated input, class-colour map, real/tampered shares, info line)."""
        pixels, original, _ = self._read(image)
        start = time.perf_counter()
        result = self._run(pixels, TAMPERED_TEXT_DETECTION, tile=bool(tile))
        seconds = time.perf_counter() - start
        class_map = np.asarray(result["class_map"])
        real, tampered = int((class_map == 1).sum()), int((class_map == 2).sum())
        text = real + tampered
        annotations = [
            ((class_map == index).astype(np.float32) * ANNOTATION_ALPHA, self.class_names[index])
            for index in (1, 2)
        ]
        if text:
            shares = {self.class_names[1]: real / text, self.class_names[2]: tampered / text}
        else:
            shares = {"no text found": 1.0}
        regions = result.get("regions") or []
        info = (
            f"{self._mode(bool(tile), seconds, *original.shape[:2])} · text on {text / class_map.size:.1%} of the "
            f"image: {real / max(text, 1):.1%} real, {tampered / max(text, 1):.1%} tampered · "
            f"{len(regions)} tampered region{'s' if len(regions) != 1 else ''}"
        )
        return (original, annotations), result["image"], shares, info

    # ------------------------------------------------------------------------------------------ layout

    def legend_html(self) -> str:
        """Colour legend of the tampering class map, in the task's own colours."""
        items = "".join(
            f'<span style="display:inline-flex;align-items:center;margin-right:1.2em">'
            f'<span style="display:inline-block;width:1em;height:1em;margin-right:.4em;border:1px solid #888;'
            f'background:{_hex(self.class_rgb[index])}"></span>{label}</span>'
            for index, label in sorted(self.class_names.items())
        )
        return f'<div id="tamper-legend">{items}</div>'


def _examples(*prefixes: str) -> list[list[str]]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [[str(p)] for p in sorted(EXAMPLES_DIR.glob("*.png")) if p.name.startswith(prefixes)]


DESCRIPTION = """\
# UPOCR — unified pixel-level OCR

One image-to-image model, three tasks chosen by a task prompt: **erase text**, **segment text strokes** and
**find tampered text**. Upload an image (PNG, JPEG, WebP, TIFF, BMP, ...) or click an example, then press *Run*.
Outputs have the input's size. *High resolution* runs the model on overlapping tiles at the image's native
resolution instead of resizing it to the model size (slower, sharper on large images).

Model: `{model}` — Peng et al., *UPOCR: Towards Unified Pixel-Level OCR Interface*, ICML 2024.
"""


def _add_examples(prefix: str, target: gr.Image, elem_id: str) -> None:
    if examples := _examples(prefix):
        gr.Examples(examples, inputs=[target], label="Examples (synthetic)", elem_id=elem_id)


def _removal_tab(app: UpocrDemo, shared: dict[str, Any]) -> None:
    with gr.Row():
        with gr.Column():
            remove_input = gr.Image(type="filepath", label="Image", sources=SOURCES, elem_id="remove-input")
            with gr.Accordion("Options", open=False):
                remove_tile = gr.Checkbox(False, label="High resolution (tiles at native size)")
                remove_keep = gr.Checkbox(
                    True,
                    label="Keep background (only text pixels may change)",
                    info="Pixels outside the detected text region stay byte-identical to the input "
                    "(off: the model's whole output image, the paper's protocol).",
                )
            remove_button = gr.Button("Run", variant="primary", elem_id="remove-run")
        with gr.Column():
            remove_output = gr.ImageSlider(
                label="Before / after", format="png", type="pil", elem_id="remove-output"
            )
            remove_download = gr.DownloadButton("Download PNG", elem_id="remove-download")
            remove_info = gr.Markdown(label="info", elem_id="remove-info")
    _add_examples("text", remove_input, "remove-examples")
    remove_button.click(
        app.remove,
        inputs=[remove_input, remove_tile, remove_keep],
        outputs=[remove_output, remove_download, remove_info],
        api_name="remove",
        **shared,
    )


def _segmentation_tab(app: UpocrDemo, shared: dict[str, Any]) -> None:
    with gr.Row():
        with gr.Column():
            segment_input = gr.Image(type="filepath", label="Image", sources=SOURCES, elem_id="segment-input")
            with gr.Accordion("Options", open=False):
                segment_threshold = gr.Slider(
                    0.05,
                    0.95,
                    value=app.threshold,
                    step=0.05,
                    label="Threshold",
                    info="A pixel is text when the prediction's channel mean exceeds this.",
                )
                segment_tile = gr.Checkbox(False, label="High resolution (tiles at native size)")
            segment_button = gr.Button("Run", variant="primary", elem_id="segment-run")
        with gr.Column():
            with gr.Row():
                segment_mask = gr.Image(label="Text mask", format="png", elem_id="segment-mask")
                segment_overlay = gr.Image(label="Overlay", format="png", elem_id="segment-overlay")
            segment_info = gr.Markdown(label="info", elem_id="segment-info")
    _add_examples("text", segment_input, "segment-examples")
    segment_button.click(
        app.segment,
        inputs=[segment_input, segment_threshold, segment_tile],
        outputs=[segment_mask, segment_overlay, segment_info],
        api_name="segment",
        **shared,
    )


def _tampering_tab(app: UpocrDemo, shared: dict[str, Any], model_name: str) -> None:
    if warning := tamper_warning(model_name):
        gr.Markdown(warning, elem_id="detect-warning")
    with gr.Row():
        with gr.Column():
            detect_input = gr.Image(type="filepath", label="Image", sources=SOURCES, elem_id="detect-input")
            with gr.Accordion("Options", open=False):
                detect_tile = gr.Checkbox(False, label="High resolution (tiles at native size)")
            detect_button = gr.Button("Run", variant="primary", elem_id="detect-run")
        with gr.Column():
            detect_annotated = gr.AnnotatedImage(
                label="Real and tampered text",
                format="png",
                color_map={app.class_names[i]: _hex(app.class_rgb[i]) for i in (1, 2)},
                elem_id="detect-annotated",
            )
            detect_shares = gr.Label(label="Share of the text area", elem_id="detect-shares")
            detect_info = gr.Markdown(label="info", elem_id="detect-info")
            with gr.Accordion("Class map", open=False):
                detect_map = gr.Image(label="Class map", format="png", elem_id="detect-map")
                gr.HTML(app.legend_html())
    _add_examples("tampered", detect_input, "detect-examples")
    detect_button.click(
        app.detect,
        inputs=[detect_input, detect_tile],
        outputs=[detect_annotated, detect_map, detect_shares, detect_info],
        api_name="detect",
        **shared,
    )


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
    app = UpocrDemo(pipe, max_pixels=max_pixels)
    shared = dict(concurrency_id="upocr-model", concurrency_limit=CONCURRENCY, preprocess=False)

    with gr.Blocks(
        title="UPOCR: text removal, segmentation and tampering detection", delete_cache=DELETE_CACHE
    ) as demo:
        gr.Markdown(
            DESCRIPTION.format(model=Path(model_name).name if os.path.isdir(model_name) else model_name)
        )
        with gr.Tabs():
            with gr.Tab("Text removal", id="removal"):
                _removal_tab(app, shared)
            with gr.Tab("Text segmentation", id="segmentation"):
                _segmentation_tab(app, shared)
            with gr.Tab("Tampered text", id="tampering"):
                _tampering_tab(app, shared, model_name)

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    demo.upocr = app  # for tests and embedding: the callbacks and the pipeline
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """`demo.launch` with this app's defaults (host/port from the environment, upload limit, examples allowed)."""
    options: dict[str, Any] = dict(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(EXAMPLES_DIR)],
        ssr_mode=False,
    )
    options.update(kwargs)
    return demo.launch(**options)


def main() -> None:
    """Entry point: serve the default (or `$UPOCR_MODEL`) model."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch(build_demo())


if __name__ == "__main__":
    main()

"""UPOCR for the Hugging Face ecosystem: one image-to-image model for text removal, text segmentation and
tampered text detection, chosen by a task prompt."""

from pathlib import Path

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from . import hub  # noqa: F401  (registers the Hub folder upload of `UpocrModel.push_to_hub`)
from .configuration_upocr import UpocrConfig
from .image_io import ImageLoadError, load_image
from .image_processing_upocr import UpocrImageProcessor
from .modeling_upocr import UpocrModel, UpocrModelOutput, UpocrPreTrainedModel
from .pipeline_upocr import UpocrPipeline, load_upocr_pipeline, register_pipeline
from .tasks import DEFAULT_TASKS, TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION

__version__ = "0.1.0"

#: Where the package's default model lives: a small UPOCR trained on synthetic data only (its model card there gives
#: its figures). The CLI and the Space use it when no model is named.
DEFAULT_MODEL = str(Path(__file__).resolve().parent / "default_model")


def default_model_path() -> str | None:
    """`DEFAULT_MODEL` when this installation has it (a `config.json` inside), else None."""
    return DEFAULT_MODEL if Path(DEFAULT_MODEL, "config.json").is_file() else None


AutoConfig.register(UpocrConfig.model_type, UpocrConfig, exist_ok=True)
AutoModel.register(UpocrConfig, UpocrModel, exist_ok=True)
# Saved folders carry `auto_map` and these code files, so `trust_remote_code=True` works without this package.
UpocrConfig.register_for_auto_class()
UpocrModel.register_for_auto_class("AutoModel")
# One processor class serves both backend names (it works on tensors; PIL images are converted on the way in).
AutoImageProcessor.register(
    UpocrConfig,
    image_processor_classes={"torchvision": UpocrImageProcessor, "pil": UpocrImageProcessor},
    exist_ok=True,
)
UpocrImageProcessor.register_for_auto_class("AutoImageProcessor")
# `pipeline("upocr", model=...)`; saving the pipeline copies its code so `trust_remote_code=True` works without us.
register_pipeline()

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TASKS",
    "default_model_path",
    "ImageLoadError",
    "TAMPERED_TEXT_DETECTION",
    "TEXT_REMOVAL",
    "TEXT_SEGMENTATION",
    "UpocrConfig",
    "UpocrImageProcessor",
    "UpocrModel",
    "UpocrModelOutput",
    "UpocrPipeline",
    "UpocrPreTrainedModel",
    "load_image",
    "load_upocr_pipeline",
]

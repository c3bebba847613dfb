"""UPOCR for the Hugging Face ecosystem: one image-to-image model for text removal, text segmentation and
tampered text detection, chosen by a task prompt."""

from transformers import AutoConfig, AutoModel

from .configuration_upocr import UpocrConfig
from .modeling_upocr import UpocrModel, UpocrModelOutput, UpocrPreTrainedModel
from .tasks import DEFAULT_TASKS, TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION

__version__ = "0.1.0"

AutoConfig.register(UpocrConfig.model_type, UpocrConfig, exist_ok=True)
AutoModel.register(UpocrConfig, UpocrModel, exist_ok=True)
# Saved folders carry `auto_map` and these code files, so `trust_remote_code=True` works without this package.
UpocrConfig.register_for_auto_class()
UpocrModel.register_for_auto_class("AutoModel")

__all__ = [
    "DEFAULT_TASKS",
    "TAMPERED_TEXT_DETECTION",
    "TEXT_REMOVAL",
    "TEXT_SEGMENTATION",
    "UpocrConfig",
    "UpocrModel",
    "UpocrModelOutput",
    "UpocrPreTrainedModel",
]

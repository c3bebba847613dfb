"""UPOCR model configuration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

from .tasks import DEFAULT_TASKS, TAMPER_ID2LABEL

NUM_ENCODER_STAGES = 4
NUM_DECODER_STAGES = 5
#: Decoder stages (0-based) whose output gets a lateral branch of the encoder map at the same stride.
SKIP_DECODER_STAGES = (0, 1, 2)
#: Decoder stages (0-based) whose output is turned into an RGB prediction (strides 4, 2, 1).
OUTPUT_DECODER_STAGES = (2, 3, 4)


#: The range of each integer field (inclusive), each list-of-integers field's entries, each float field.
INT_RANGES: dict[str, tuple[int, int]] = {
    "num_channels": (1, 16),
    "patch_size": (1, 64),
    "embed_dim": (1, 4096),
    "encoder_window_size": (2, 1024),
    "encoder_pretrained_window_size": (0, 1024),
    "decoder_window_size": (2, 1024),
    "decoder_pretrained_window_size": (0, 1024),
    "continuous_position_bias_hidden_size": (1, 16384),
}
INT_LIST_RANGES: dict[str, tuple[int, int]] = {
    "encoder_depths": (1, 64),
    "encoder_num_heads": (1, 1024),
    "decoder_depths": (1, 64),
    "decoder_num_heads": (1, 1024),
}
FLOAT_RANGES: dict[str, tuple[float, float]] = {  # (lowest, highest); the probabilities stay below 1
    "mlp_ratio": (0.125, 64.0),
    "hidden_dropout_prob": (0.0, 0.999),
    "attention_probs_dropout_prob": (0.0, 0.999),
    "drop_path_rate": (0.0, 0.999),
    "decoder_drop_path_rate": (0.0, 0.999),
    "layer_norm_eps": (0.0, 1.0),
    "initializer_range": (1e-6, 10.0),
}


def _checked_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # 512.0 in a hand-edited config.json
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _checked_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


def _checked_int_list(name: str, value: Any, low: int, high: int) -> list[int]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of integers, got {value!r}")
    return [_checked_int(f"{name}[{i}]", v, low, high) for i, v in enumerate(value)]


def _checked_tasks(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"tasks must be a list of at least one task name, got {value!r}")
    if any(not isinstance(task, str) or not task for task in value):
        raise ValueError(f"tasks must be non-empty strings, got {list(value)}")
    if len(set(value)) != len(value):
        raise ValueError(f"tasks must be unique, got {list(value)}")
    return list(value)


def _checked_activation(value: Any) -> str:
    from transformers.activations import ACT2FN

    if not isinstance(value, str) or value not in ACT2FN:
        raise ValueError(f"hidden_act must be one of {sorted(ACT2FN)}, got {value!r}")
    return value


class UpocrConfig(PretrainedConfig):
    r"""
    Configuration of a [`UpocrModel`]: a Swin Transformer V2 encoder, a task-prompted bottleneck and a Swin V2
    decoder with patch splitting, as in "Towards Unified Pixel-Level OCR Interface" (Peng et al., ICML 2024).
    The defaults give the paper's model (108,157,401 parameters).

    Channel widths are derived: encoder stage `i` has `embed_dim * 2**i` channels, decoder stage `j` has
    `embed_dim * 8 / 2**j` channels before its patch split, so the three RGB predictions come from maps with
    `embed_dim`, `embed_dim / 2` and `embed_dim / 4` channels (strides 4, 2 and 1).

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input and of every prediction (RGB).
        patch_size (`int`, *optional*, defaults to 4):
            Side of the patch embedding convolution (kernel and stride). Only 4 is supported: the decoder's five
            ×2 splits must return to full resolution.
        embed_dim (`int`, *optional*, defaults to 96):
            Channels of the patch embedding (encoder stage 1).
        encoder_depths (`list[int]`, *optional*, defaults to `[2, 2, 18, 2]`):
            Number of Swin V2 blocks in each of the 4 encoder stages.
        encoder_num_heads (`list[int]`, *optional*, defaults to `[3, 6, 12, 24]`):
            Attention heads in each encoder stage.
        encoder_window_size (`int`, *optional*, defaults to 16):
            Attention window side in the encoder.
        encoder_pretrained_window_size (`int`, *optional*, defaults to 16):
            Window side the encoder's continuous position bias was pretrained with (0: same as the window).
        decoder_depths (`list[int]`, *optional*, defaults to `[2, 18, 2, 2, 2]`):
            Number of Swin V2 blocks in each of the 5 decoder stages.
        decoder_num_heads (`list[int]`, *optional*, defaults to `[24, 12, 6, 3, 2]`):
            Attention heads in each decoder stage.
        decoder_window_size (`int`, *optional*, defaults to 8):
            Attention window side in the decoder.
        decoder_pretrained_window_size (`int`, *optional*, defaults to 8):
            Window side the decoder's continuous position bias was pretrained with (0: same as the window).
        mlp_ratio (`float`, *optional*, defaults to 4.0):
            Hidden width of each block's MLP relative to its channels.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the MLPs.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether queries and values have a learned bias (keys never have one).
        continuous_position_bias_hidden_size (`int`, *optional*, defaults to 512):
            Hidden width of the MLP that maps relative offsets to attention biases.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout after the MLP.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        drop_path_rate (`float`, *optional*, defaults to 0.3):
            Stochastic depth rate of the last encoder block; it rises linearly from 0 over the encoder blocks.
        decoder_drop_path_rate (`float`, *optional*, defaults to 0.3):
            Same for the decoder blocks.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every LayerNorm.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of Linear layers.
        tasks (`list[str]`, *optional*, defaults to `["text-removal", "tampered-text-detection", "text-segmentation"]`):
            Ordered task identifiers; row `i` of the task prompt embedding belongs to `tasks[i]`. The default is
            the row order of the authors' released checkpoint.
        id2label (`dict[int, str]`, *optional*):
            Classes of tampered text detection; defaults to background / real text / tampered text.
    """

    model_type = "upocr"

    def __init__(
        self,
        num_channels: int = 3,
        patch_size: int = 4,
        embed_dim: int = 96,
        encoder_depths: Sequence[int] = (2, 2, 18, 2),
        encoder_num_heads: Sequence[int] = (3, 6, 12, 24),
        encoder_window_size: int = 16,
        encoder_pretrained_window_size: int = 16,
        decoder_depths: Sequence[int] = (2, 18, 2, 2, 2),
        decoder_num_heads: Sequence[int] = (24, 12, 6, 3, 2),
        decoder_window_size: int = 8,
        decoder_pretrained_window_size: int = 8,
        mlp_ratio: float = 4.0,
        hidden_act: str = "gelu",
        qkv_bias: bool = True,
        continuous_position_bias_hidden_size: int = 512,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.3,
        decoder_drop_path_rate: float = 0.3,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tasks: Sequence[str] = DEFAULT_TASKS,
        **kwargs,
    ) -> None:
        # older folders recorded the training crop here; the size a model runs at is its processor's `size`
        kwargs.pop("image_size", None)
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(TAMPER_ID2LABEL)
        given = locals()
        for name, (low, high) in INT_RANGES.items():
            setattr(self, name, _checked_int(name, given[name], low, high))
        for name, (low, high) in INT_LIST_RANGES.items():
            setattr(self, name, _checked_int_list(name, given[name], low, high))
        for name, (low, high) in FLOAT_RANGES.items():
            setattr(self, name, _checked_float(name, given[name], low, high))
        self.hidden_act = _checked_activation(hidden_act)
        if qkv_bias not in (True, False):  # 0 and 1 are accepted, as Python accepts them
            raise ValueError(f"qkv_bias must be true or false, got {qkv_bias!r}")
        self.qkv_bias = bool(qkv_bias)
        self.tasks = _checked_tasks(tasks)
        super().__init__(**kwargs)
        self.validate_architecture()

    @property
    def encoder_hidden_sizes(self) -> list[int]:
        """Channels of each encoder stage (strides 4, 8, 16, 32)."""
        return [self.embed_dim * 2**i for i in range(NUM_ENCODER_STAGES)]

    @property
    def decoder_hidden_sizes(self) -> list[int]:
        """Channels of each decoder stage before its patch split (strides 32, 16, 8, 4, 2)."""
        top = self.embed_dim * 2 ** (NUM_ENCODER_STAGES - 1)
        return [top // 2**j for j in range(NUM_DECODER_STAGES)]

    @property
    def task2id(self) -> dict[str, int]:
        """Task identifier → row of the task prompt embedding."""
        return {task: i for i, task in enumerate(self.tasks)}

    def validate_architecture(self) -> None:
        """Raise `ValueError` naming the field and the rule when the hyperparameters cannot build a model."""
        self._validate_io()
        self._validate_stages()
        self._validate_channels()
        self._validate_windows()

    def _validate_io(self) -> None:
        if self.patch_size != 4:
            raise ValueError(
                f"patch_size must be 4 (the decoder upsamples ×32 in five ×2 splits), got {self.patch_size}"
            )
        if self.num_channels != 3:
            raise ValueError(
                f"num_channels must be 3 (UPOCR reads and writes RGB images), got {self.num_channels}"
            )

    def _validate_stages(self) -> None:
        for name, expected in (
            ("encoder_depths", NUM_ENCODER_STAGES),
            ("encoder_num_heads", NUM_ENCODER_STAGES),
            ("decoder_depths", NUM_DECODER_STAGES),
            ("decoder_num_heads", NUM_DECODER_STAGES),
        ):
            values = getattr(self, name)
            if len(values) != expected:
                raise ValueError(
                    f"{name} must have {expected} entries (one per stage), got {len(values)}: {values}"
                )

    def _validate_channels(self) -> None:
        for stage, (channels, heads) in enumerate(zip(self.encoder_hidden_sizes, self.encoder_num_heads)):
            if channels % heads:
                raise ValueError(
                    f"encoder stage {stage}: {channels} channels (embed_dim * 2**{stage}) are not divisible by "
                    f"encoder_num_heads[{stage}] = {heads}"
                )
        for stage, (channels, heads) in enumerate(zip(self.decoder_hidden_sizes, self.decoder_num_heads)):
            if channels % heads:
                raise ValueError(
                    f"decoder stage {stage}: {channels} channels are not divisible by decoder_num_heads[{stage}] = {heads}"
                )
            if channels % 4:
                raise ValueError(
                    f"decoder stage {stage}: the patch split needs channels divisible by 4, got {channels} "
                    f"(embed_dim must be a multiple of 8)"
                )

    def _validate_windows(self) -> None:
        for name in ("encoder_window_size", "decoder_window_size"):
            window = getattr(self, name)
            if window < 2 or window % 2:
                raise ValueError(
                    f"{name} must be an even number ≥ 2 (shifted windows move by half), got {window}"
                )
        for name in ("encoder_pretrained_window_size", "decoder_pretrained_window_size"):
            if getattr(self, name) == 1 or getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (use the window size) or ≥ 2, got {getattr(self, name)}")


#: Named architectures for `--config`: the paper's model, the reference fixture's small model, the shipped default
#: model's compact one, and a tiny one for tests.
CONFIG_PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "small": dict(
        embed_dim=16,
        encoder_depths=[2, 2, 2, 2],
        encoder_num_heads=[1, 2, 4, 8],
        decoder_depths=[2, 2, 2, 2, 2],
        decoder_num_heads=[8, 4, 2, 1, 1],
    ),
    # The architecture of the model shipped in upocr_hf/default_model: 5.7M parameters.
    "compact": dict(
        embed_dim=32,
        encoder_depths=[2, 2, 2, 2],
        encoder_num_heads=[1, 2, 4, 8],
        encoder_window_size=8,
        encoder_pretrained_window_size=8,
        decoder_depths=[2, 2, 2, 2, 2],
        decoder_num_heads=[8, 4, 2, 1, 1],
        drop_path_rate=0.0,
        decoder_drop_path_rate=0.0,
    ),
    "tiny": dict(
        embed_dim=16,
        encoder_depths=[2, 1, 1, 2],
        encoder_num_heads=[1, 1, 2, 2],
        encoder_window_size=4,
        encoder_pretrained_window_size=4,
        decoder_depths=[2, 1, 1, 1, 2],
        decoder_num_heads=[2, 2, 2, 1, 1],
        decoder_window_size=4,
        decoder_pretrained_window_size=4,
        continuous_position_bias_hidden_size=16,
        drop_path_rate=0.0,
        decoder_drop_path_rate=0.0,
    ),
}

# compact with three times the blocks at stride 16 in the encoder and twice in the decoder: 7.0M parameters, to grow
# the shipped model into (`train.py --deepen_to compact-deep`) for a capacity study
CONFIG_PRESETS["compact-deep"] = {
    **CONFIG_PRESETS["compact"],
    "encoder_depths": [2, 2, 6, 2],
    "decoder_depths": [2, 4, 2, 2, 2],
}


__all__ = ["CONFIG_PRESETS", "UpocrConfig"]

"""PyTorch UPOCR: one image-to-image network for pixel-level OCR tasks, chosen by a learned task prompt."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.swinv2.modeling_swinv2 import (
    Swinv2DropPath,
    Swinv2Intermediate,
    Swinv2Output,
    Swinv2PatchMerging,
    window_partition,
    window_reverse,
)
from transformers.utils import ModelOutput
from transformers.utils.generic import GeneralInterface

from .configuration_upocr import NUM_ENCODER_STAGES, OUTPUT_DECODER_STAGES, SKIP_DECODER_STAGES, UpocrConfig
from .cpu_inference import (
    InferenceCache,
    cached_linear,
    chunked_window_attention,
    fast_path_applies,
    inference_attention_implementation,
    inference_linear_weights,
    linear,
    to_autocast_dtype,
)

#: Input sides must be multiples of this so the encoder's and decoder's maps line up (patch 4 × three merges).
SIZE_DIVISOR = 32
#: Added to attention logits between tokens of different regions in shifted windows.
SHIFTED_WINDOW_MASK_VALUE = -100.0

TaskSpec = str | int | Sequence[str | int] | torch.Tensor


@dataclass
class UpocrModelOutput(ModelOutput):
    r"""
    Output of [`UpocrModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The training loss (`UpocrModel.loss_function`), returned when `labels` are given.
        prediction (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            The full-resolution RGB prediction (no output activation; clamp to [0, 1] to read it).
        multi_scale_predictions (`tuple[torch.FloatTensor]`):
            The coarse-to-fine RGB predictions at 1/4, 1/2 and full resolution, shapes
            `(batch_size, 3, ceil(height / s), ceil(width / s))` for s = 4, 2, 1. The last one is `prediction`.
        encoder_hidden_states (`tuple[torch.FloatTensor]`, *optional*):
            The four normalised encoder maps (strides 4, 8, 16, 32), each `(batch_size, channels, h, w)` at the
            padded size. Returned when `output_hidden_states=True`.
        decoder_hidden_states (`tuple[torch.FloatTensor]`, *optional*):
            The output of each decoder stage after its patch split and skip connection (strides 16, 8, 4, 2, 1),
            each `(batch_size, channels, h, w)` at the padded size. Returned when `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    prediction: torch.FloatTensor | None = None
    multi_scale_predictions: tuple[torch.FloatTensor, ...] | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None


def shifted_window_attention_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device
) -> torch.Tensor:
    """The standard Swin region mask for a (padded) `height × width` map rolled by `-shift_size`.

    Returns a float tensor of shape `(num_windows, window_size**2, window_size**2)` holding 0 between tokens of the
    same region and `SHIFTED_WINDOW_MASK_VALUE` between tokens of different regions.
    """
    regions = torch.zeros((1, height, width, 1), device=device)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    count = 0
    for height_slice in slices:
        for width_slice in slices:
            regions[:, height_slice, width_slice, :] = count
            count += 1
    region_windows = window_partition(regions, window_size).view(-1, window_size * window_size)
    mask = region_windows.unsqueeze(1) - region_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, SHIFTED_WINDOW_MASK_VALUE)


def windowed_position_bias(
    position_bias: torch.Tensor, shift_mask: torch.Tensor | None, batch_windows: int
) -> torch.Tensor:
    """The additive attention bias of every window: `(1, heads, N, N)` unshifted, `(batch_windows, heads, N, N)`
    with a shift mask `(num_windows, N, N)` (window i of each image takes mask i)."""
    if shift_mask is None:
        return position_bias.unsqueeze(0)
    heads, tokens = position_bias.shape[:2]
    num_windows = shift_mask.shape[0]
    bias = position_bias.unsqueeze(0) + shift_mask.unsqueeze(1).to(position_bias.dtype)  # (nW, heads, N, N)
    bias = bias.unsqueeze(0).expand(batch_windows // num_windows, -1, -1, -1, -1)
    return bias.reshape(batch_windows, heads, tokens, tokens)


def eager_window_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: tuple[torch.Tensor, torch.Tensor],
    position_bias: torch.Tensor,
    shift_mask: torch.Tensor | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """`softmax(query·key^T + bias) @ value` with matmuls; the signature of every `UpocrAttentionInterface` entry.

    Args:
        module: the calling `UpocrSelfAttention`.
        query, key, value: `(batch_size * num_windows, heads, N, head_dim)`.
        scaling: factors `(batch_size * num_windows, heads, N, 1)` of query and key (cosine attention: each token
            over its length, the query's times the head's logit scale).
        position_bias: `(heads, N, N)`.
        shift_mask: `(num_windows, N, N)` for shifted windows, or `None`.
        dropout: the attention probabilities' dropout rate.
    Returns:
        The context `(batch_size * num_windows, N, heads * head_dim)`.
    """
    query, key = query * scaling[0], key * scaling[1]
    scores = query @ key.transpose(-2, -1) + windowed_position_bias(position_bias, shift_mask, query.shape[0])
    probabilities = F.dropout(scores.softmax(dim=-1), p=dropout, training=dropout > 0)
    return (probabilities @ value).transpose(1, 2).flatten(2)


def sdpa_window_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: tuple[torch.Tensor, torch.Tensor],
    position_bias: torch.Tensor,
    shift_mask: torch.Tensor | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """`eager_window_attention` through `torch.nn.functional.scaled_dot_product_attention`."""
    query, key = query * scaling[0], key * scaling[1]
    bias = windowed_position_bias(position_bias, shift_mask, query.shape[0])
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=1.0)
    return context.transpose(1, 2).flatten(2)


class UpocrAttentionInterface(GeneralInterface):
    """The window-attention implementations by name (transformers' `AttentionInterface` pattern, with UPOCR's
    signature: see `eager_window_attention`). `config._attn_implementation` picks `"eager"` or `"sdpa"`; the CPU
    inference fast path may run `"cpu_chunked"` instead (`cpu_inference.inference_attention_implementation`).
    `UpocrAttentionInterface.register(name, function)` adds one."""

    _global_mapping = {
        "eager": eager_window_attention,
        "sdpa": sdpa_window_attention,
        "cpu_chunked": chunked_window_attention,
    }


WINDOW_ATTENTION_FUNCTIONS = UpocrAttentionInterface()


class UpocrSelfAttention(nn.Module):
    """Swin V2 window attention: scaled cosine attention plus a log-spaced continuous position bias.

    Computes exactly what the authors' window attention computes. The query/key/value projections are stored
    separately (the key has no bias), as in the converted checkpoints; on the inference fast path they run as one
    GEMM over their concatenated weights. Attention runs through `torch.nn.functional.scaled_dot_product_attention`
    (`config._attn_implementation == "sdpa"`; on the inference fast path in bf16 on CPU, through
    `chunked_window_attention` instead) or plain matmul + softmax (`"eager"`).
    """

    def __init__(
        self, config: UpocrConfig, dim: int, num_heads: int, window_size: int, pretrained_window_size: int
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.pretrained_window_size = pretrained_window_size
        self.query = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        hidden = config.continuous_position_bias_hidden_size
        self.continuous_position_bias_mlp = nn.Sequential(
            nn.Linear(2, hidden, bias=True), nn.ReLU(inplace=True), nn.Linear(hidden, num_heads, bias=False)
        )
        self.dropout_prob = config.attention_probs_dropout_prob
        self.projection = nn.Linear(dim, dim)
        coords_table, position_index = self.create_coords_table_and_index()
        self.register_buffer("relative_coords_table", coords_table, persistent=False)
        self.register_buffer("relative_position_index", position_index, persistent=False)
        # on the fast path the fused projection, the position bias and autocast's weight casts depend on the
        # weights only: computed once
        self._qkv_cache = InferenceCache()
        self._bias_cache = InferenceCache()
        self._projection_cache = InferenceCache()

    def create_coords_table_and_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-spaced table of relative offsets `(1, 2w-1, 2w-1, 2)` and the `(w², w²)` index into it."""
        window = self.window_size
        # float32 whatever the model's dtype, as in the authors' implementation: a float64 model then matches theirs
        # run in float64 (a table computed in float64 would move the outputs by 1e-7)
        offsets = torch.arange(-(window - 1), window, dtype=torch.int64).float()
        table = (
            torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"))
            .permute(1, 2, 0)
            .contiguous()
            .unsqueeze(0)
        )
        normaliser = (self.pretrained_window_size if self.pretrained_window_size > 0 else window) - 1
        table = table / normaliser * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)

        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)  # (2, w²)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # (w², w², 2)
        relative[:, :, 0] += window - 1
        relative[:, :, 1] += window - 1
        relative[:, :, 0] *= 2 * window - 1
        return table, relative.sum(-1)

    def cached_relative_position_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """`relative_position_bias()` in `dtype`, computed once for inference without autograd (it depends on the
        weights only)."""
        mlp = self.continuous_position_bias_mlp
        sources = (mlp[0].weight, mlp[0].bias, mlp[2].weight)
        return self._bias_cache.get(
            lambda: self.relative_position_bias().to(dtype), *sources, extra_key=(dtype,)
        )

    def relative_position_bias(self) -> torch.Tensor:
        """Bias of shape `(num_heads, w², w²)` added to the attention logits."""
        coords = self.relative_coords_table.to(self.continuous_position_bias_mlp[0].weight.dtype)
        table = self.continuous_position_bias_mlp(coords).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)]
        tokens = self.window_size * self.window_size
        bias = bias.view(tokens, tokens, self.num_heads).permute(2, 0, 1).contiguous()
        return 16 * torch.sigmoid(bias)

    def fused_query_key_value(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The `(3 * dim, dim)` weight and `(3 * dim,)` bias of the three projections as one (zero key bias), as
        `inference_linear_weights` keeps them."""
        sources = (self.query.weight, self.key.weight, self.value.weight)
        if self.config.qkv_bias:
            sources += (self.query.bias, self.value.bias)
        return self._qkv_cache.get(self._fuse_query_key_value, *sources)

    def _fuse_query_key_value(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = None
        if self.config.qkv_bias:
            bias = torch.cat([self.query.bias, torch.zeros_like(self.query.bias), self.value.bias])
        return inference_linear_weights(weight, bias, derived=True)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: windows of tokens, `(batch_size * num_windows, w², dim)`.
            attention_mask: `(num_windows, w², w²)` additive mask of shifted windows, or `None`.
        Returns:
            `(batch_size * num_windows, w², dim)`.
        """
        projections = (self.query, self.key, self.value, self.projection)
        fast = fast_path_applies(self, *((m, nn.Linear) for m in projections))
        query, key, value = self.project_query_key_value(hidden_states, fast)
        # cosine attention with a per-head logit scale: the unit-length division and the scale are one factor per
        # token (F.normalize's eps, same function), in the GEMM dtype under autocast
        logit_scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        norms = [torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min(1e-12) for t in (query, key)]
        scaling = ((logit_scale / norms[0]).to(query.dtype), (1.0 / norms[1]).to(key.dtype))
        # a layer built from a bare config (no PreTrainedModel around it) has no implementation set: eager
        implementation = self.config._attn_implementation or "eager"
        if fast:
            implementation = inference_attention_implementation(implementation, query)
        context = WINDOW_ATTENTION_FUNCTIONS[implementation](
            self,
            query,
            key,
            value,
            scaling,
            self.cached_relative_position_bias(query.dtype),
            attention_mask,
            dropout=self.dropout_prob if self.training else 0.0,
        )
        if fast:
            return cached_linear(self._projection_cache, self.projection, context)
        return self.projection(context)

    def project_query_key_value(
        self, hidden_states: torch.Tensor, fast: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value `(batch_size * num_windows, heads, w², head_dim)`; on the fast path one GEMM."""
        batch_windows, tokens, _ = hidden_states.shape
        if fast:
            weight, bias = self.fused_query_key_value()
            shape = (batch_windows, tokens, 3, self.num_heads, self.head_dim)
            projected = linear(hidden_states, weight, bias).view(shape).unbind(2)
        else:
            projected = (self.query(hidden_states), self.key(hidden_states), self.value(hidden_states))
        shape = (batch_windows, tokens, self.num_heads, self.head_dim)
        query, key, value = (t.reshape(shape).transpose(1, 2) for t in projected)
        return query, key, value


class UpocrPostLayerNorm(nn.LayerNorm):
    """The LayerNorm applied to a residual branch's output in a res-post-norm block; zero-initialised, so
    every block starts as an identity."""


class UpocrLayer(GradientCheckpointingLayer):
    """A Swin V2 block (res-post-norm) that always keeps its window and, for odd blocks, its shift.

    Unlike transformers' `Swinv2Layer`, the window is never shrunk and the shift never switched off on maps no
    larger than the window: maps are zero-padded at the bottom/right to a multiple of the window, and the
    padding tokens take part in unshifted attention unmasked, as in the authors' implementation.
    """

    def __init__(
        self,
        config: UpocrConfig,
        dim: int,
        num_heads: int,
        window_size: int,
        pretrained_window_size: int,
        shift: bool,
        drop_path_rate: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.attention = UpocrSelfAttention(config, dim, num_heads, window_size, pretrained_window_size)
        self.attention_norm = UpocrPostLayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = Swinv2Intermediate(config, dim)
        self.output = Swinv2Output(config, dim)
        self.mlp_norm = UpocrPostLayerNorm(dim, eps=config.layer_norm_eps)
        self.drop_path = Swinv2DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        # the fast path fuses the GELU into the GEMM: transformers' "gelu" is the exact (erf) one
        self._fuse_gelu = config.hidden_act == "gelu"
        self._intermediate_cache = InferenceCache()
        self._output_cache = InferenceCache()

    def forward(self, hidden_states: torch.Tensor, shift_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states: `(batch_size, height, width, dim)`.
            shift_mask: the stage's shifted-window mask for the padded map (used by shifted blocks only).
        Returns:
            `(batch_size, height, width, dim)`.
        """
        batch_size, height, width, dim = hidden_states.shape
        window = self.window_size
        pad_bottom, pad_right = (-height) % window, (-width) % window
        # under autocast the attention's first GEMM would cast the windows anyway: cast before the layout copies
        # (pad, roll, partition), which then move half the bytes
        windows = to_autocast_dtype(hidden_states)[0]
        if pad_bottom or pad_right:  # F.pad copies even when there is nothing to pad
            windows = F.pad(windows, (0, 0, 0, pad_right, 0, pad_bottom))
        padded_height, padded_width = height + pad_bottom, width + pad_right
        if self.shift_size:
            windows = torch.roll(windows, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(windows, window).view(-1, window * window, dim)
        windows = self.attention(windows, shift_mask if self.shift_size else None)
        attended = window_reverse(windows.view(-1, window, window, dim), window, padded_height, padded_width)
        if self.shift_size:
            attended = torch.roll(attended, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        attended = attended[:, :height, :width, :]

        hidden_states = hidden_states + self.drop_path(self.attention_norm(attended))
        return hidden_states + self.drop_path(self.mlp_norm(self.mlp(hidden_states)))

    def mlp(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Linear dim→4·dim, activation, Linear 4·dim→dim (transformers' Swinv2Intermediate and Swinv2Output)."""
        modules = (
            (self.intermediate, Swinv2Intermediate),
            (self.intermediate.dense, nn.Linear),
            (self.output, Swinv2Output),
            (self.output.dense, nn.Linear),
        )
        if not (self._fuse_gelu and fast_path_applies(self, *modules)):
            return self.output(self.intermediate(hidden_states))
        hidden_states = cached_linear(
            self._intermediate_cache, self.intermediate.dense, hidden_states, gelu=True
        )
        # the output's dropout is an identity in eval mode
        return cached_linear(self._output_cache, self.output.dense, hidden_states)


class UpocrStage(nn.Module):
    """A sequence of Swin V2 blocks alternating plain and shifted windows. Input/output `(B, H, W, C)`."""

    def __init__(
        self,
        config: UpocrConfig,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        pretrained_window_size: int,
        drop_path_rates: Sequence[float],
    ):
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            UpocrLayer(
                config, dim, num_heads, window_size, pretrained_window_size, i % 2 == 1, drop_path_rates[i]
            )
            for i in range(depth)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        height, width = hidden_states.shape[1:3]
        shift_mask = None
        if len(self.blocks) > 1:
            window = self.window_size
            shift_mask = shifted_window_attention_mask(
                height + (-height) % window,
                width + (-width) % window,
                window,
                window // 2,
                hidden_states.device,
            )
        for block in self.blocks:
            hidden_states = block(hidden_states, shift_mask)
        return hidden_states


class UpocrPatchEmbeddings(nn.Module):
    """Conv 4×4 stride 4 then LayerNorm: `(B, 3, H, W)` → `(B, H/4, W/4, embed_dim)`."""

    def __init__(self, config: UpocrConfig):
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # the weights' dtype: a model held in bf16 (DeepSpeed's bf16 mode) still takes the processor's float32
        pixel_values = pixel_values.to(self.projection.weight.dtype)
        return self.norm(self.projection(pixel_values).permute(0, 2, 3, 1))


class UpocrPatchSplit(nn.Module):
    """The inverse of patch merging (×2 upsampling): `(B, H, W, C)` → `(B, 2H, 2W, C/2)`.

    Each token's channels are read as four groups of C/4 placed in a 2×2 cell — group 0 at (0,0), group 1 at (1,0),
    group 2 at (0,1), group 3 at (1,1), the order in which patch merging concatenates them — then projected by a
    bias-free Linear C/4 → C/2 and normalised.
    """

    def __init__(self, config: UpocrConfig, dim: int):
        super().__init__()
        self.projection = nn.Linear(dim // 4, dim // 2, bias=False)
        self.norm = nn.LayerNorm(dim // 2, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, height, width, dim = hidden_states.shape
        # channel group g = 2 * column + row
        cells = hidden_states.view(batch_size, height, width, 2, 2, dim // 4)
        cells = cells.permute(0, 1, 4, 2, 3, 5).reshape(batch_size, 2 * height, 2 * width, dim // 4)
        return self.norm(self.projection(cells))


class UpocrLateralConnection(nn.Sequential):
    """Skip branch from an encoder map: Conv1×1 C→C, Conv3×3 C→2C, Conv3×3 2C→2C, Conv1×1 2C→C (no activation)."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.Conv2d(2 * channels, 2 * channels, kernel_size=3, padding=1),
            nn.Conv2d(2 * channels, channels, kernel_size=1),
        )


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    rates = torch.linspace(0, rate, sum(depths)).tolist()
    bounds = [sum(depths[:i]) for i in range(len(depths) + 1)]
    return [rates[bounds[i] : bounds[i + 1]] for i in range(len(depths))]


class UpocrEncoder(nn.Module):
    """Swin V2 encoder: `(B, 3, H, W)` → four normalised maps `(B, h, w, C_i)` at strides 4, 8, 16, 32."""

    def __init__(self, config: UpocrConfig):
        super().__init__()
        self.embeddings = UpocrPatchEmbeddings(config)
        dims = config.encoder_hidden_sizes
        rates = _drop_path_rates(config.drop_path_rate, config.encoder_depths)
        self.stages = nn.ModuleList(
            UpocrStage(
                config,
                dims[i],
                config.encoder_depths[i],
                config.encoder_num_heads[i],
                config.encoder_window_size,
                config.encoder_pretrained_window_size,
                rates[i],
            )
            for i in range(NUM_ENCODER_STAGES)
        )
        # Swinv2PatchMerging concatenates the 2×2 neighbours in the order (0,0), (1,0), (0,1), (1,1), then
        # Linear 4C→2C without bias and LayerNorm(2C): exactly the authors' patch merging.
        self.downsamplers = nn.ModuleList(
            Swinv2PatchMerging(None, dims[i], norm_layer=lambda d: nn.LayerNorm(d, eps=config.layer_norm_eps))
            for i in range(NUM_ENCODER_STAGES - 1)
        )
        self.hidden_state_norms = nn.ModuleList(nn.LayerNorm(d, eps=config.layer_norm_eps) for d in dims)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        hidden_states = self.embeddings(pixel_values)
        features = []
        for i, stage in enumerate(self.stages):
            hidden_states = stage(hidden_states)
            features.append(self.hidden_state_norms[i](hidden_states))
            if i < len(self.downsamplers):
                batch_size, height, width, dim = hidden_states.shape
                merged = self.downsamplers[i](hidden_states.view(batch_size, -1, dim), (height, width))
                hidden_states = merged.view(batch_size, height // 2, width // 2, 2 * dim)
        return features


class UpocrDecoder(nn.Module):
    """Swin V2 decoder with patch splitting, encoder skip connections and three RGB heads (strides 4, 2, 1)."""

    def __init__(self, config: UpocrConfig):
        super().__init__()
        dims = config.decoder_hidden_sizes
        rates = _drop_path_rates(config.decoder_drop_path_rate, config.decoder_depths)
        self.stages = nn.ModuleList(
            UpocrStage(
                config,
                dims[j],
                config.decoder_depths[j],
                config.decoder_num_heads[j],
                config.decoder_window_size,
                config.decoder_pretrained_window_size,
                rates[j],
            )
            for j in range(len(dims))
        )
        self.upsamplers = nn.ModuleList(UpocrPatchSplit(config, dim) for dim in dims)
        self.lateral_connections = nn.ModuleList(
            UpocrLateralConnection(dims[j] // 2) for j in SKIP_DECODER_STAGES
        )
        self.output_norms = nn.ModuleList(
            nn.LayerNorm(dims[j] // 2, eps=config.layer_norm_eps) for j in OUTPUT_DECODER_STAGES
        )
        self.output_convs = nn.ModuleList(
            nn.Conv2d(dims[j] // 2, config.num_channels, kernel_size=3, padding=1)
            for j in OUTPUT_DECODER_STAGES
        )

    def forward(
        self, hidden_states: torch.Tensor, encoder_features: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            hidden_states: the prompted bottleneck map, `(B, H/32, W/32, 8 * embed_dim)`.
            encoder_features: the four encoder maps `(B, h, w, C)` at strides 4, 8, 16, 32.
        Returns:
            The RGB predictions `(B, 3, h, w)` coarse to fine, and each stage's output `(B, h, w, C)`.
        """
        predictions, stage_outputs = [], []
        for j, (stage, upsample) in enumerate(zip(self.stages, self.upsamplers)):
            hidden_states = upsample(stage(hidden_states))
            if j in SKIP_DECODER_STAGES:
                skip = encoder_features[len(encoder_features) - 2 - j].permute(0, 3, 1, 2)
                lateral = self.lateral_connections[SKIP_DECODER_STAGES.index(j)](skip)
                hidden_states = hidden_states + lateral.permute(0, 2, 3, 1)
            if j in OUTPUT_DECODER_STAGES:
                k = OUTPUT_DECODER_STAGES.index(j)
                # convolve the channels-last view as it is (oneDNN runs these heads several times faster on it
                # than on an NCHW copy); the 3-channel output is made NCHW again, the layout callers get
                normed = self.output_norms[k](hidden_states).permute(0, 3, 1, 2)
                predictions.append(self.output_convs[k](normed).contiguous())
            stage_outputs.append(hidden_states)
        return predictions, stage_outputs


def _crop(prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`prediction[:, :, :height, :width]` as a tensor of its own, not a view: FSDP2 warns about every view a
    wrapped module returns (an in-place op on one would skip its pre-backward all-gather)."""
    if prediction.shape[-2:] == (height, width):
        return prediction
    return prediction[:, :, :height, :width].contiguous()


class UpocrPreTrainedModel(PreTrainedModel):
    config_class = UpocrConfig
    config: UpocrConfig
    base_model_prefix = "upocr"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["UpocrLayer", "UpocrPatchSplit", "UpocrLateralConnection"]

    def clear_inference_caches(self) -> None:
        """Forget the weights derived for the inference fast path (fused projections, position biases, autocast
        casts); they are recomputed on the next inference forward. Done by `train()`, `eval()` and every `.to()` or
        cast; call it yourself after changing weights through `param.data`, which no cache can see."""
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, InferenceCache):
                    value.clear()

    def train(self, mode: bool = True) -> UpocrPreTrainedModel:
        self.clear_inference_caches()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_inference_caches()  # the old device's or dtype's copies would stay in memory
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal Linear layers, zero-initialised post-norms, Kaiming-normal task prompts."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, UpocrPostLayerNorm):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.kaiming_normal_(module.weight)
        elif isinstance(module, UpocrSelfAttention):
            init.constant_(module.logit_scale, math.log(10.0))
            coords_table, position_index = module.create_coords_table_and_index()
            init.copy_(module.relative_coords_table, coords_table)
            init.copy_(module.relative_position_index, position_index)


class UpocrModel(UpocrPreTrainedModel):
    """UPOCR: RGB image + task prompt → RGB image (text-free image, stroke mask or tamper map).

    Example:

    ```python
    >>> import torch
    >>> from upocr_hf import UpocrConfig, UpocrModel
    >>> model = UpocrModel(UpocrConfig()).eval()
    >>> pixel_values = torch.rand(2, 3, 512, 512)  # RGB in [0, 1], no mean/std normalisation
    >>> out = model(pixel_values, task=["text-removal", "text-segmentation"])
    >>> out.prediction.shape
    torch.Size([2, 3, 512, 512])
    ```
    """

    #: `upocr_hf.hub.push_to_hub`, set when the package is imported (the tools layer registers itself here, so the
    #: model never imports it); None where this file runs as a folder's code (`trust_remote_code`), the package
    #: installed or not.
    hub_folder_uploader: ClassVar[Callable[..., Any] | None] = None

    def __init__(self, config: UpocrConfig):
        super().__init__(config)
        self.encoder = UpocrEncoder(config)
        bottleneck_dim = config.encoder_hidden_sizes[-1]
        self.bottleneck = nn.Linear(bottleneck_dim, bottleneck_dim)
        self.task_embeddings = nn.Embedding(len(config.tasks), bottleneck_dim)
        self.decoder = UpocrDecoder(config)
        self.post_init()

    @property
    def loss_function(self) -> Any:
        """The loss `forward` computes when given `labels`: a `upocr_hf.losses.UpocrLoss` over `config.tasks`. By
        default the paper's losses without the perceptual and style terms of text removal (they need a VGG-16's
        weights, which the model does not load on its own); assign
        `UpocrLoss(model.config.tasks, perceptual="craft", ...)` for the full recipe (as `train.py` builds it)."""
        loss = self.__dict__.get("_upocr_loss")
        if loss is None or (
            loss.tasks != tuple(self.config.tasks) and self.__dict__.get("_upocr_loss_is_default")
        ):
            from .losses import UpocrLoss

            loss = UpocrLoss(self.config.tasks, perceptual="off")
            # kept out of the module tree: no state of it belongs in the model's state dict or FSDP units
            self.__dict__.update(_upocr_loss=loss, _upocr_loss_is_default=True)
        if tuple(getattr(loss, "tasks", self.config.tasks)) != tuple(self.config.tasks):
            raise ValueError(
                f"the loss is over tasks {list(loss.tasks)}, the model's are {self.config.tasks}"
            )
        return loss

    def __setattr__(self, name: str, value: Any) -> None:
        # `nn.Module.__setattr__` would register a loss module as a sub-module instead of calling a property setter
        if name == "loss_function":
            self.__dict__.update(_upocr_loss=value, _upocr_loss_is_default=False)
        else:
            super().__setattr__(name, value)

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding, as transformers' Swin models return; FSDP2 (Accelerate) shards it as its own unit."""
        return self.encoder.embeddings

    def push_to_hub(self, repo_id: str, *, image_processor: Any = None, **kwargs: Any) -> Any:
        """Upload the model as a complete Hub folder in one commit: weights and config, an image processor
        (`image_processor`; default: the one `UpocrImageProcessor.for_model` makes), the model, processor and pipeline
        code, and a model card, so that `pipeline("upocr", model=repo_id, trust_remote_code=True)` works (keyword
        arguments as `upocr_hf.hub.push_to_hub`'s: `private`, `token`, `revision`, `create_pr`, `commit_message`,
        `metrics`, `training`). Loaded as a folder's code (`trust_remote_code`), transformers' own
        `push_to_hub` (the model's files only) is used."""
        upload = type(self).hub_folder_uploader
        if upload is None:
            return super().push_to_hub(repo_id, **kwargs)
        return upload(self, image_processor, repo_id, **kwargs)

    def add_tasks(self, tasks: Sequence[str]) -> list[str]:
        """Append task prompts for `tasks` not yet known (new rows, Kaiming-normal like the others); returns the
        added names. The existing prompts and `config.tasks` order are kept, so earlier task ids stay valid."""
        new = [task for task in dict.fromkeys(tasks) if task not in self.config.tasks]
        if not new:
            return []
        old = self.task_embeddings
        grown = nn.Embedding(old.num_embeddings + len(new), old.embedding_dim, device=old.weight.device,
                             dtype=old.weight.dtype)  # fmt: skip
        with torch.no_grad():
            nn.init.kaiming_normal_(grown.weight)
            grown.weight[: old.num_embeddings] = old.weight
        self.task_embeddings = grown
        self.config.tasks = [*self.config.tasks, *new]
        self.config.validate_architecture()
        return new

    def task_ids(self, task: TaskSpec, batch_size: int) -> torch.Tensor:
        """Resolve a task name, a task id, or one of either per sample into a `(batch_size,)` LongTensor."""
        known = self.config.tasks

        def resolve(item: str | int) -> int:
            if isinstance(item, str):
                if item not in self.config.task2id:
                    raise ValueError(f"Unknown task {item!r}; this model knows {known}")
                return self.config.task2id[item]
            index = int(item)
            if not 0 <= index < len(known):
                raise ValueError(
                    f"Task id {index} is out of range; this model knows {len(known)} tasks: {known}"
                )
            return index

        if isinstance(task, torch.Tensor):
            ids = [resolve(i) for i in task.reshape(-1).tolist()]
        elif isinstance(task, str | int):
            ids = [resolve(task)]
        else:
            ids = [resolve(item) for item in task]
        if len(ids) == 1:
            ids = ids * batch_size
        if len(ids) != batch_size:
            raise ValueError(
                f"Got {len(ids)} tasks for a batch of {batch_size} images; give one task or one per image"
            )
        return torch.tensor(ids, dtype=torch.long, device=self.task_embeddings.weight.device)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        task: TaskSpec = 0,
        labels: torch.FloatTensor | None = None,
        text_mask: torch.FloatTensor | None = None,
        ignore_mask: torch.BoolTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        original_sizes: torch.LongTensor | None = None,
    ) -> UpocrModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                RGB images scaled to [0, 1] (no mean/std normalisation). Sides must be at least 32; sides that are not
                multiples of 32 are reflection-padded at the bottom/right up to the next multiple, and every output is
                cropped back (the stride-`s` outputs to `ceil(side / s)`).
            task (`str`, `int`, a sequence of either, or a `torch.LongTensor`):
                The task of every image (one value) or of each image (one per sample; tasks may be mixed), as a
                name from `config.tasks` or a row index.
            labels (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                The target images in [0, 1], each in its task's encoding (text-free image, stroke mask, class map).
                Given, the output carries `loss` (`loss_function`), so that `transformers.Trainer` can train the model.
            text_mask (`torch.FloatTensor` of shape `(batch_size, 1, height, width)`, *optional*):
                Text removal's text region (1 = text), for its loss; none means all zeros.
            ignore_mask (`torch.BoolTensor` of shape `(batch_size, 1, height, width)`, *optional*):
                Target pixels the loss leaves out (True), for the smooth-L1 tasks; none means none.
            output_hidden_states (`bool`, *optional*):
                Also return the encoder and decoder maps.
            return_dict (`bool`, *optional*):
                Return a [`UpocrModelOutput`] (default) or a plain tuple.
            original_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*):
                Not used by the model: the image processor returns it beside `pixel_values` for its
                `post_process_*` methods, and accepting it lets `model(**processor(images), task=...)` work.
        """
        del original_sizes
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch_size, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        batch_size, _, height, width = pixel_values.shape
        if height < SIZE_DIVISOR or width < SIZE_DIVISOR:
            raise ValueError(
                f"pixel_values must be at least {SIZE_DIVISOR}×{SIZE_DIVISOR} pixels, got {height}×{width}"
            )
        task_ids = self.task_ids(task, batch_size)
        inputs = pixel_values

        pad_bottom, pad_right = (-height) % SIZE_DIVISOR, (-width) % SIZE_DIVISOR
        if pad_bottom or pad_right:
            pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom), mode="reflect")

        encoder_features = self.encoder(pixel_values)
        prompted = self.bottleneck(encoder_features[-1]) + self.task_embeddings(task_ids)[:, None, None, :]
        predictions, decoder_features = self.decoder(prompted, encoder_features)

        scales = (4, 2, 1)
        predictions = tuple(
            _crop(p, math.ceil(height / s), math.ceil(width / s)) for p, s in zip(predictions, scales)
        )
        encoder_hidden_states = decoder_hidden_states = None
        if output_hidden_states:
            encoder_hidden_states = tuple(f.permute(0, 3, 1, 2) for f in encoder_features)
            decoder_hidden_states = tuple(f.permute(0, 3, 1, 2) for f in decoder_features)
        loss = None
        if labels is not None:
            loss = self.loss_function(predictions, inputs, labels, text_mask, ignore_mask, task_ids).loss
        if not return_dict:
            outputs = (predictions[-1], predictions)
            if output_hidden_states:
                outputs += (encoder_hidden_states, decoder_hidden_states)
            return outputs if loss is None else (loss, *outputs)
        return UpocrModelOutput(
            loss=loss,
            prediction=predictions[-1],
            multi_scale_predictions=predictions,
            encoder_hidden_states=encoder_hidden_states,
            decoder_hidden_states=decoder_hidden_states,
        )


__all__ = ["UpocrModel", "UpocrModelOutput", "UpocrPreTrainedModel"]

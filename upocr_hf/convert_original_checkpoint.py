"""Convert the authors' UPOCR checkpoints (`torch.save({'model': state_dict, ...})`) to a `save_pretrained` folder.

    python -m upocr_hf.convert_original_checkpoint --checkpoint upocr.pth --output DIR [--tasks A B C]

The file is read safely (`torch.load(weights_only=True)`, or a `.safetensors` file). Every key of the authors'
naming is mapped to ours; buffers the model recomputes (`relative_coords_table`, `relative_position_index`) and
the VGG-16 loss network are dropped; any other key that cannot be mapped is an error naming the key. The
architecture is read off the tensor shapes, so the same converter serves the paper's model and smaller ones.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from .command_line import module_parser
from .configuration_upocr import NUM_DECODER_STAGES, NUM_ENCODER_STAGES, UpocrConfig
from .file_utils import error_line, free_space, staged_folder
from .image_processing_upocr import UpocrImageProcessor
from .modeling_upocr import UpocrModel
from .tasks import DEFAULT_TASKS


class CheckpointConversionError(ValueError):
    """An original checkpoint that cannot be converted; the message names the file or key and the reason."""


#: Keys the converter drops on purpose: recomputed buffers and the perceptual-loss network.
_DROPPED_KEY = re.compile(
    r"(\.relative_coords_table$|\.relative_position_index$|(^|\.)(vgg\w*|perceptual\w*|criterion)\.)"
)

_BLOCK_RENAMES = {
    "norm1.weight": "attention_norm.weight",
    "norm1.bias": "attention_norm.bias",
    "norm2.weight": "mlp_norm.weight",
    "norm2.bias": "mlp_norm.bias",
    "mlp.fc1.weight": "intermediate.dense.weight",
    "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight",
    "mlp.fc2.bias": "output.dense.bias",
    "attn.q_bias": "attention.query.bias",
    "attn.v_bias": "attention.value.bias",
    "attn.logit_scale": "attention.logit_scale",
    "attn.cpb_mlp.0.weight": "attention.continuous_position_bias_mlp.0.weight",
    "attn.cpb_mlp.0.bias": "attention.continuous_position_bias_mlp.0.bias",
    "attn.cpb_mlp.2.weight": "attention.continuous_position_bias_mlp.2.weight",
    "attn.proj.weight": "attention.projection.weight",
    "attn.proj.bias": "attention.projection.bias",
}

_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^encoder\.backbone\.patch_embed\.proj\.(weight|bias)$"),
        r"encoder.embeddings.projection.\1",
    ),
    (re.compile(r"^encoder\.backbone\.patch_embed\.norm\.(weight|bias)$"), r"encoder.embeddings.norm.\1"),
    (
        re.compile(
            r"^encoder\.backbone\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$"
        ),
        r"encoder.downsamplers.\1.\2",
    ),
    (re.compile(r"^encoder\.backbone\.norm(\d+)\.(weight|bias)$"), r"encoder.hidden_state_norms.\1.\2"),
    (re.compile(r"^proj\.(weight|bias)$"), r"bottleneck.\1"),
    (re.compile(r"^task_prompt\.task_embedding\.weight$"), "task_embeddings.weight"),
    (
        re.compile(r"^decoder\.layers\.(\d+)\.upsample\.upsample\.weight$"),
        r"decoder.upsamplers.\1.projection.weight",
    ),
    (
        re.compile(r"^decoder\.layers\.(\d+)\.upsample\.norm\.(weight|bias)$"),
        r"decoder.upsamplers.\1.norm.\2",
    ),
    (
        re.compile(r"^decoder\.lateral_connection_list\.(\d+)\.([0-3])\.(weight|bias)$"),
        r"decoder.lateral_connections.\1.\2.\3",
    ),
    (re.compile(r"^decoder\.intermediate_convs\.([01])\.(weight|bias)$"), r"decoder.output_convs.\1.\2"),
    (re.compile(r"^decoder\.output_conv\.(weight|bias)$"), r"decoder.output_convs.2.\1"),
]
_DECODER_NORM = re.compile(r"^decoder\.norm([234])\.(weight|bias)$")
_BLOCK = re.compile(r"^(encoder\.backbone|decoder)\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the authors' state dict from a `.pth` (`{'model': state_dict}` or a bare state dict) or `.safetensors`.

    `torch.load` runs with `weights_only=True`, so a checkpoint cannot execute code. A `module.` prefix left by
    DistributedDataParallel is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointConversionError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            state_dict = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            state_dict = loaded.get("model", loaded) if isinstance(loaded, Mapping) else loaded
    except Exception as error:  # re-raised with the file named
        raise CheckpointConversionError(f"{path}: cannot be read as a checkpoint ({error})") from error
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CheckpointConversionError(
            f"{path}: expected a state dict of tensors (or {{'model': state_dict}})"
        )
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def convert_key(key: str) -> str | None:
    """Our name for one of the authors' keys; `None` for keys that are dropped on purpose.

    Raises `CheckpointConversionError` naming the key when it has no counterpart. The fused `attn.qkv.weight`
    maps to the placeholder `attention.qkv.weight`, which `convert_state_dict` splits into query/key/value.
    """
    if _DROPPED_KEY.search(key):
        return None
    block = _BLOCK.match(key)
    if block:
        prefix, stage, index, rest = block.groups()
        ours = "encoder" if prefix == "encoder.backbone" else "decoder"
        if rest == "attn.qkv.weight":
            return f"{ours}.stages.{stage}.blocks.{index}.attention.qkv.weight"
        if rest in _BLOCK_RENAMES:
            return f"{ours}.stages.{stage}.blocks.{index}.{_BLOCK_RENAMES[rest]}"
        raise CheckpointConversionError(f"cannot map key {key!r}: unknown block parameter {rest!r}")
    norm = _DECODER_NORM.match(key)
    if norm:
        return f"decoder.output_norms.{int(norm.group(1)) - 2}.{norm.group(2)}"
    for pattern, replacement in _RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    raise CheckpointConversionError(f"cannot map key {key!r}: it is not part of the UPOCR architecture")


def convert_state_dict(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key to our naming and split fused `qkv` weights into query, key and value."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in original.items():
        ours = convert_key(key)
        if ours is None:
            continue
        if ours.endswith(".attention.qkv.weight"):
            base = ours.removesuffix("qkv.weight")
            query, key_weight, value = tensor.chunk(3, dim=0)
            converted[base + "query.weight"] = query.clone()
            converted[base + "key.weight"] = key_weight.clone()
            converted[base + "value.weight"] = value.clone()
        else:
            converted[ours] = tensor
    return converted


def _stage_shapes(
    original: Mapping[str, torch.Tensor], prefix: str, num_stages: int
) -> tuple[list[int], list[int]]:
    depths, heads = [], []
    for stage in range(num_stages):
        blocks = {
            int(m.group(1))
            for k in original
            if (m := re.match(rf"^{re.escape(prefix)}\.layers\.{stage}\.blocks\.(\d+)\.", k))
        }
        if not blocks:
            raise CheckpointConversionError(f"no blocks found for {prefix}.layers.{stage}")
        depths.append(max(blocks) + 1)
        heads.append(original[f"{prefix}.layers.{stage}.blocks.0.attn.logit_scale"].shape[0])
    return depths, heads


def _window_sizes(original: Mapping[str, torch.Tensor], prefix: str) -> tuple[int, int]:
    """Window and pretrained window read off a block's coordinate table (its values encode the latter)."""
    table_key = f"{prefix}.layers.0.blocks.0.attn.relative_coords_table"
    index_key = f"{prefix}.layers.0.blocks.0.attn.relative_position_index"
    if table_key in original:
        table = original[table_key]
        window = (table.shape[1] + 1) // 2
        largest = table.abs().max().item()  # = log2(8 (w - 1) / (pw - 1) + 1) / 3
        if largest <= 0:  # an all-zero (e.g. placeholder) table says nothing: assume the window itself
            return window, window
        return window, round(8 * (window - 1) / (2 ** (3 * largest) - 1) + 1)
    if index_key in original:
        window = math.isqrt(original[index_key].shape[0])
        return window, window
    raise CheckpointConversionError(
        f"cannot infer the window size: neither {table_key} nor {index_key} is present"
    )


def config_from_original_state_dict(
    original: Mapping[str, torch.Tensor], tasks: Sequence[str] | None = None
) -> UpocrConfig:
    """Build the `UpocrConfig` whose model has exactly the shapes of an original state dict."""
    try:
        return _config_from_original(original, tasks)
    except CheckpointConversionError:
        raise
    except KeyError as error:
        raise CheckpointConversionError(f"not a UPOCR checkpoint: missing key {error.args[0]!r}") from None
    except ValueError as error:  # the shapes read off the checkpoint make no valid UPOCR configuration
        raise CheckpointConversionError(f"not a UPOCR checkpoint: {error}") from None


def _config_from_original(original: Mapping[str, torch.Tensor], tasks: Sequence[str] | None) -> UpocrConfig:
    patch_weight = original["encoder.backbone.patch_embed.proj.weight"]
    task_rows = original["task_prompt.task_embedding.weight"].shape[0]
    first_block = "encoder.backbone.layers.0.blocks.0"
    embed_dim = patch_weight.shape[0]
    mlp_ratio = original[f"{first_block}.mlp.fc1.weight"].shape[0] / embed_dim
    cpb_hidden = original[f"{first_block}.attn.cpb_mlp.0.weight"].shape[0]
    qkv_bias = f"{first_block}.attn.q_bias" in original
    if tasks is None:
        if task_rows != len(DEFAULT_TASKS):
            raise CheckpointConversionError(
                f"the checkpoint has {task_rows} task prompts; name them in row order with --tasks"
            )
        tasks = DEFAULT_TASKS
    if len(tasks) != task_rows:
        raise CheckpointConversionError(
            f"got {len(tasks)} task names for {task_rows} task prompts in the checkpoint"
        )
    encoder_depths, encoder_heads = _stage_shapes(original, "encoder.backbone", NUM_ENCODER_STAGES)
    decoder_depths, decoder_heads = _stage_shapes(original, "decoder", NUM_DECODER_STAGES)
    encoder_window, encoder_pretrained = _window_sizes(original, "encoder.backbone")
    decoder_window, decoder_pretrained = _window_sizes(original, "decoder")
    return UpocrConfig(
        patch_size=patch_weight.shape[-1],
        embed_dim=embed_dim,
        encoder_depths=encoder_depths,
        encoder_num_heads=encoder_heads,
        encoder_window_size=encoder_window,
        encoder_pretrained_window_size=encoder_pretrained,
        decoder_depths=decoder_depths,
        decoder_num_heads=decoder_heads,
        decoder_window_size=decoder_window,
        decoder_pretrained_window_size=decoder_pretrained,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        continuous_position_bias_hidden_size=cpb_hidden,
        tasks=list(tasks),
    )


def load_original_model(
    original: Mapping[str, torch.Tensor] | str | os.PathLike, tasks: Sequence[str] | None = None
) -> UpocrModel:
    """An `UpocrModel` (eval mode) holding the weights of an original checkpoint file or state dict."""
    if not isinstance(original, Mapping):
        original = read_original_checkpoint(original)
    config = config_from_original_state_dict(original, tasks)
    model = UpocrModel(config)
    converted = convert_state_dict(original)
    expected = model.state_dict()
    for key, tensor in converted.items():
        if key in expected and tensor.shape != expected[key].shape:
            raise CheckpointConversionError(
                f"{key}: shape {tuple(tensor.shape)} in the checkpoint, {tuple(expected[key].shape)} in the model "
                "its other weights describe"
            )
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise CheckpointConversionError(
            f"converted weights do not fit the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    return model.eval()


def convert_checkpoint(
    checkpoint: str | os.PathLike, output_dir: str | os.PathLike, tasks: Sequence[str] | None = None
) -> UpocrModel:
    """Convert an original checkpoint into a `save_pretrained` folder (safetensors, config, code files).

    The folder is written next to `output_dir` under a temporary name and renamed into place when complete, so
    a failed conversion never leaves a half-written folder or replaces a good one.
    """
    model = load_original_model(checkpoint, tasks)
    try:
        with staged_folder(output_dir) as staging:
            model.save_pretrained(staging, safe_serialization=True)
            _save_default_image_processor(model, staging)
    except Exception as error:  # a full disk shows as OSError or SafetensorError alike
        free = free_space(Path(output_dir).resolve().parent)
        raise CheckpointConversionError(
            f"cannot write {output_dir}: {error_line(error)} ({free}; the model needs about "
            f"{sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20:,.0f} MiB)"
        ) from None
    return model


def _save_default_image_processor(model: UpocrModel, folder: Path) -> None:
    """Save the image processor of the model's input size beside it."""
    UpocrImageProcessor.for_model().save_pretrained(folder)


def main(argv: Sequence[str] | None = None) -> None:
    parser = module_parser("upocr_hf.convert_original_checkpoint", __doc__)
    parser.add_argument("--checkpoint", required=True, help="the authors' .pth (or .safetensors) file")
    parser.add_argument("--output", required=True, help="folder to write (save_pretrained layout)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help=f"task names in the checkpoint's prompt row order (default for 3 rows: {' '.join(DEFAULT_TASKS)})",
    )
    args = parser.parse_args(argv)
    try:
        model = convert_checkpoint(args.checkpoint, args.output, args.tasks)
    except CheckpointConversionError as error:
        parser.exit(2, f"error: {error}\n")
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: {count:,} parameters, tasks {model.config.tasks}")


if __name__ == "__main__":
    main()

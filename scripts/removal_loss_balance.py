"""How much each term of the text-removal loss moves the model: the gradient of each weighted term.

    python scripts/removal_loss_balance.py --model upocr_hf/default_model [--removal-term-weights perceptual=0.1]

The paper weighs its perceptual and style terms 0.01 and 120 for the ImageNet VGG-16; CRAFT's batch-normalised
VGG16-BN (`--perceptual_loss craft`) has features on another scale, so those weights need not give the terms the
pull they had. This renders removal samples in the training style (`RenderedTaskDataset`, augmented as training
augments them), computes the removal loss as training does (`UpocrLoss`, CRAFT's features at `--perceptual-size`),
and measures, per batch, the norm of each weighted term's gradient over the model's parameters and its cosine with
the L1 term's gradient. It prints a JSON record (means over the batches, and the spread of the per-batch ratios) and
writes it to `--out` when given. These are shares of the summed raw gradient: AdamW then scales each parameter's
step by its own gradient history, so a term's share of the step can differ from its share of the gradient.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from upocr_hf.data.augment import UpocrAugment, upocr_collate
from upocr_hf.data.rendered import RenderedTaskDataset, SyntheticSource
from upocr_hf.data.synthetic import SyntheticConfig
from upocr_hf.file_utils import atomic_write
from upocr_hf.losses import PERCEPTUAL_CHOICES, UpocrLoss
from upocr_hf.modeling_upocr import UpocrModel
from upocr_hf.tasks import TEXT_REMOVAL
from upocr_hf.training import parse_removal_term_weights


def removal_batches(
    source: SyntheticSource,
    size: int,
    seed: int,
    count: int,
    batch_size: int,
    tasks: list[str],
    base: SyntheticConfig | None = None,
) -> list[dict]:
    """`count` training batches of removal samples rendered from `source` and augmented as training augments them
    (`base`: the generator's config, default the training style with this machine's fonts and photographs)."""
    dataset = RenderedTaskDataset(TEXT_REMOVAL, source, size=size, seed=seed, base=base)
    dataset.set_transform(UpocrAugment(size, tasks=tasks))
    rows = [dataset[index] for index in range(count * batch_size)]
    return [upocr_collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def term_gradients(
    model: UpocrModel, loss_fn: UpocrLoss, batch: dict
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The raw removal terms of one batch and each weighted term's flattened gradient over the parameters (their
    sum is the gradient of the removal loss training back-propagates)."""
    outputs = model(batch["pixel_values"], task=batch["task"])
    _, terms = loss_fn.removal_loss(
        outputs.multi_scale_predictions, batch["pixel_values"], batch["labels"], batch["text_mask"]
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    gradients = {}
    for name, value in terms.items():
        weighted = loss_fn.removal_weights[name] * value
        grads = torch.autograd.grad(weighted, parameters, retain_graph=True, allow_unused=True)
        gradients[name] = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, parameters)]
        )
    return {name: float(value.detach()) for name, value in terms.items()}, gradients


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two gradient vectors, summed in float64 (millions of float32 terms drift by 1e-4)."""
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def balance(model: UpocrModel, loss_fn: UpocrLoss, batches: list[dict]) -> dict[str, dict[str, float]]:
    """Per term: its weight, mean raw and weighted values, mean gradient norm, the ratio of that mean to the L1
    term's, the smallest and largest per-batch ratio, and the mean cosine with the L1 term's gradient."""
    per_batch: dict[str, list[dict[str, float]]] = {}
    for batch in batches:
        values, gradients = term_gradients(model, loss_fn, batch)
        l1_norm = float(gradients["l1"].norm())
        for name, gradient in gradients.items():
            norm = float(gradient.norm())
            per_batch.setdefault(name, []).append(
                {
                    "raw": values[name],
                    "norm": norm,
                    "ratio": norm / l1_norm,
                    "cosine": cosine(gradient, gradients["l1"]),
                }
            )
    mean = lambda rows, key: sum(row[key] for row in rows) / len(rows)  # noqa: E731
    l1_mean_norm = mean(per_batch["l1"], "norm")
    summary = {}
    for name, rows in per_batch.items():
        weight = loss_fn.removal_weights[name]
        summary[name] = {
            "weight": weight,
            "raw": mean(rows, "raw"),
            "weighted": weight * mean(rows, "raw"),
            "gradient_norm": mean(rows, "norm"),
            "gradient_norm_over_l1": mean(rows, "norm") / l1_mean_norm,
            "batch_ratio_min": min(row["ratio"] for row in rows),
            "batch_ratio_max": max(row["ratio"] for row in rows),
            "cosine_with_l1": mean(rows, "cosine"),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", "--model-dir", default="upocr_hf/default_model", help="a save_pretrained folder"
    )
    parser.add_argument("--perceptual-loss", "--perceptual_loss", default="craft", choices=PERCEPTUAL_CHOICES,
                        help="the VGG of the terms, as train.py takes it")  # fmt: skip
    parser.add_argument("--vgg-weights-path", "--vgg_weights_path", default=None, help="as train.py takes it")
    parser.add_argument("--perceptual-size", "--perceptual_size", type=int, default=192)
    parser.add_argument("--removal-term-weights", "--removal_term_weights", nargs="*", default=[],
                        metavar="TERM=WEIGHT", help="as train.py takes them (default: the paper's)")  # fmt: skip
    parser.add_argument("--size", type=int, default=384, help="the training crop")
    parser.add_argument("--looks", default="photos:3,signs:1",
                        help="the synthetic looks and weights, as train.py's --data TASK=synthetic:LOOKS")  # fmt: skip
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON record here")
    args = parser.parse_args(argv)
    try:
        term_weights = parse_removal_term_weights(args.removal_term_weights)
        source = SyntheticSource.parse(f"synthetic:{args.looks}")
    except ValueError as error:
        parser.error(str(error))
    torch.manual_seed(args.seed)
    model = UpocrModel.from_pretrained(args.model).train()  # training mode, as the step sees it
    loss_fn = UpocrLoss(
        model.config.tasks,
        perceptual=args.perceptual_loss,
        vgg_weights_path=args.vgg_weights_path,
        perceptual_size=args.perceptual_size,
        removal_term_weights=term_weights,
    )
    batches = removal_batches(source, args.size, args.seed, args.batches, args.batch_size, model.config.tasks)
    record = {
        "model": args.model,
        "perceptual": args.perceptual_loss,
        "perceptual_size": args.perceptual_size,
        "images": f"{args.batches * args.batch_size} rendered removal samples (looks {args.looks}, seed {args.seed}), {args.size} px",
        "terms": balance(model, loss_fn, batches),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out is not None:
        atomic_write(args.out, lambda file: file.write((text + "\n").encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

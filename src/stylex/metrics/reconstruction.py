"""Reconstruction figures: classifier consistency, L1, and reconstruction identity, with two trivial baselines.

Consistency alone proves little (G sees the logits, so one class-typical image per class satisfies C);
identity says whether reconstructions depend on the input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def identity(x_rec: torch.Tensor, x: torch.Tensor) -> float:
    """Share of reconstructions whose nearest neighbour (pixel L2) among the originals `x` is their own source.

    Args:
        x_rec, x: [N, 3, R, R]; chance level is 1/N.
    """
    a = x_rec.float().flatten(1)
    b = x.float().flatten(1)
    d = torch.cdist(a, b)  # [N, N]
    return (d.argmin(dim=1) == torch.arange(len(x), device=d.device)).float().mean().item()


@torch.no_grad()
def _figures(x_rec: torch.Tensor, x: torch.Tensor, pred: torch.Tensor, classify: Callable) -> dict[str, float]:
    pred_rec = classify(x_rec).argmax(dim=1)
    return {
        "consistency": (pred_rec == pred).float().mean().item(),
        "l1": (x_rec.float() - x.float()).abs().mean().item(),
        "identity": identity(x_rec, x),
    }


def class_median(x: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Baseline: each image replaced by the pixel-wise median of the images of its predicted class."""
    out = torch.empty_like(x)
    for k in pred.unique():
        m = pred == k
        out[m] = x[m].median(dim=0).values
    return out


def shifted_by_one(x: torch.Tensor) -> torch.Tensor:
    """Baseline: the input itself moved one pixel right and down (edges repeated)."""
    return F.pad(x, (1, 0, 1, 0), mode="replicate")[:, :, : x.shape[2], : x.shape[3]]


@torch.no_grad()
def reconstruction_report(
    x: torch.Tensor,
    x_rec: torch.Tensor,
    classify: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 64,
) -> dict[str, Any]:
    """Figures for StylEx's reconstructions and the two baselines.

    Args:
        x: originals [N, 3, R, R] in [-1, 1] (N <= a few hundred: identity compares all pairs).
        x_rec: reconstructions [N, 3, R, R].
        classify: images -> logits [N, K].
    Returns:
        {"stylex": {...}, "class_median": {...}, "shifted_input": {...}} each with consistency, l1, identity.
    """

    def batched(images):
        return torch.cat([classify(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    pred = batched(x).argmax(dim=1)
    return {
        "stylex": _figures(x_rec, x, pred, batched),
        "class_median": _figures(class_median(x, pred), x, pred, batched),
        "shifted_input": _figures(shifted_by_one(x), x, pred, batched),
        "num_images": len(x),
    }

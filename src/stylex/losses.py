"""Losses as small pure functions (rosinality / NVlabs style). Every function returns a scalar tensor."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """Discriminator logistic loss: softplus(D(fake)) + softplus(-D(real)). Scores [N]."""
    return F.softplus(fake_score.float()).mean() + F.softplus(-real_score.float()).mean()


def g_nonsaturating(fake_score: torch.Tensor) -> torch.Tensor:
    """Generator non-saturating loss: softplus(-D(fake)). Scores [N]."""
    return F.softplus(-fake_score.float()).mean()


def r1_penalty(real_score: torch.Tensor, real_x: torch.Tensor) -> torch.Tensor:
    """R1 = E ||grad_x D(x)||^2 on real images (x must require grad). Computed in float32."""
    (grad,) = torch.autograd.grad(real_score.float().sum(), real_x, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def path_lengths(images: torch.Tensor, w: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN2's path lengths |J_w^T y| per sample, y ~ N(0, I) / R (images [N, 3, R, R] = G(w), w [N, D]
    requiring grad); differentiable (create_graph), in float32. Returns [N].

    Args:
        y: the N(0, I) draws [N, 3, R, R] (drawn here when None); the 1/R scale is applied here.
    """
    y = torch.randn_like(images.float()) if y is None else y.float()
    y = y / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images.float() * y).sum(), w, create_graph=True)
    return grad.float().square().sum(dim=1).sqrt()


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference."""
    return (x.float() - y.float()).abs().mean()


def feature_distance(feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
    """Perceptual distance: mean over layers of L1 between channel-normalised feature maps (LPIPS-like, unlearned).

    Args:
        feats_x, feats_y: lists of feature maps [N, C_l, H_l, W_l] from the same network.
    """
    total: torch.Tensor | float = 0.0
    for a, b in zip(feats_x, feats_y, strict=True):
        a = F.normalize(a.float(), dim=1, eps=1e-6)
        b = F.normalize(b.float(), dim=1, eps=1e-6)
        total = total + (a - b).abs().sum(dim=1).mean()
    assert isinstance(total, torch.Tensor), "no feature maps"  # ClassifierAdapter.check refuses empty lists
    return total / len(feats_x)


def classifier_kl(logits_x: torch.Tensor, logits_rec: torch.Tensor) -> torch.Tensor:
    """KL(C(x) || C(x_rec)) over classes, batch mean, in float32. Logits [N, K]."""
    log_p = F.log_softmax(logits_x.float(), dim=1)
    log_q = F.log_softmax(logits_rec.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

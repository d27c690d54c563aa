"""Exponential moving average of a network's weights (G_ema, E_ema)."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def make_ema(module: M) -> M:
    """A frozen copy of `module` to hold the average."""
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, step: int, beta: float) -> None:
    """ema <- beta_t * ema + (1 - beta_t) * module, with beta_t = min(beta, (1 + step) / (10 + step)).

    The ramp makes the average follow the network closely in the first steps of a short run. Parameters that do
    not train (`requires_grad` off, e.g. `freeze_g`) keep their average as it is: a fine-tune that freezes a part
    keeps that part's average as it started, not its raw weights.
    """
    beta_t = min(beta, (1 + step) / (10 + step))
    for p_ema, p in zip(ema.parameters(), module.parameters(), strict=True):
        if p.requires_grad:
            p_ema.lerp_(p.detach(), 1 - beta_t)
    for b_ema, b in zip(ema.buffers(), module.buffers(), strict=True):
        b_ema.copy_(b)

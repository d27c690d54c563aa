"""Optional filters of the AttFind search (all off by default, as in the official notebook)."""

from __future__ import annotations

import torch

from stylex.attfind.effects import Effects


def stable_images(effects: Effects, effect_threshold: float = 0.3, max_large_effects: int = 750) -> torch.Tensor:
    """Images whose reconstruction is not unstable: the notebook drops an image when too many edits move it a lot.

    Args:
        effects: the effect table [N, 2, S, K].
        effect_threshold: a logit change larger than this (in absolute value) counts as large.
        max_large_effects: an image with more large changes than this (over directions, coordinates and
            classes) is dropped.

    Returns:
        keep [N] bool, for `select_attributes(keep_images=...)`.
    """
    count = (effects.effects.abs() > effect_threshold).sum(dim=(1, 2, 3))  # [N]
    return count <= max_large_effects

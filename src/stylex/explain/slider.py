"""Slider positions on StyleSpace coordinates: the one edit the report's frames and the live viewer both use.

A position v in [-1, 1] on coordinate j moves s_j part of the way to the coordinate's extremes over the AttFind
images: v > 0 toward s_max[j], v < 0 toward s_min[j], 0 leaves the image as it is:

    s_j(v) = s_j + v * (s_max[j] - s_j)     for v >= 0
    s_j(v) = s_j + |v| * (s_min[j] - s_j)   for v < 0

so v = +1 / -1 is AttFind's edit "toward max / min" with shift size 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from stylex.models.stylespace import StyleVector


def slide(s: StyleVector, positions: Mapping[int, float], s_min: torch.Tensor, s_max: torch.Tensor) -> StyleVector:
    """Styles with each coordinate j of `positions` moved to position v (see the module docstring).

    Args:
        s: styles, batch N.
        positions: {flat coordinate j: v in [-1, 1]}; positions apply to the unedited s_j.
        s_min, s_max: [S] the edit targets (from the AttFind `Effects`).
    """
    flat = s.flatten().clone()  # [N, S]
    for j, v in positions.items():
        v = float(max(-1.0, min(1.0, v)))
        target = (s_max if v >= 0 else s_min)[j].to(flat)
        flat[:, j] = flat[:, j] + abs(v) * (target - flat[:, j])
    return s.unflatten(flat)


def sweep(s: StyleVector, j: int, values: Sequence[float], s_min: torch.Tensor, s_max: torch.Tensor) -> StyleVector:
    """Every image at every position of coordinate j, frame-major: row f * N + i is image i at values[f].

    Args:
        s: styles, batch N.
        j: flat coordinate.
        values: F positions in [-1, 1].
        s_min, s_max: [S] the edit targets.

    Returns:
        styles, batch F * N.
    """
    return StyleVector.cat([slide(s, {j: v}, s_min, s_max) for v in values])

"""The one place that converts between file pixels and model tensors.

Files and arrays hold uint8 HWC RGB in [0, 255]; everything inside the models is float NCHW in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, 3] (or one [H, W, 3]) -> float tensor [N, 3, H, W] in [-1, 1]."""
    if images.ndim == 3:
        images = images[None]
    assert images.ndim == 4 and images.shape[-1] == 3, images.shape
    assert images.dtype == np.uint8, images.dtype
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float tensor [N, 3, H, W] in [-1, 1] -> uint8 array [N, H, W, 3] (values outside are clipped)."""
    assert x.ndim == 4 and x.shape[1] == 3, tuple(x.shape)
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()

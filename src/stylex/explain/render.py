"""Image grids and files (PIL lives here, nowhere else in the library)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylex.data.convert import to_uint8


def grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of images (each [N, 3, R, R] in [-1, 1], same N and R) -> one uint8 image [H, W, 3], white gaps."""
    arrays = [to_uint8(r) for r in rows]  # each [N, R, R, 3]
    n, r = arrays[0].shape[0], arrays[0].shape[1]
    out = np.full((len(rows) * (r + pad) + pad, n * (r + pad) + pad, 3), 255, np.uint8)
    for i, a in enumerate(arrays):
        for j in range(n):
            y, x = pad + i * (r + pad), pad + j * (r + pad)
            out[y : y + r, x : x + r] = a[j]
    return out


def save_png(image: np.ndarray, path: str | Path, scale: int = 1) -> None:
    """Write uint8 [H, W, 3] as PNG (nearest-neighbour upscaled by `scale`), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 2) -> None:
    """Rows of images -> PNG grid."""
    save_png(grid(rows), path, scale=scale)

"""Differentiable Augmentation (DiffAugment; Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020) for the inputs of D.

On a few hundred real images D memorises the training set and its gradients stop teaching G. DiffAugment draws
a random transform per image and applies it to every image D sees, real and generated alike, in D's loss, in R1
and in G's adversarial loss. Because the transforms are differentiable in the pixels, G's gradient passes
through them, and because reals and fakes are transformed by the same distribution, D can only tell them apart
by what the un-augmented images differ in: G learns the data, not the augmented data.

The policies (`stylex.config.DIFFAUG_POLICIES`), in the order the policy string names them:
    color:       per image, brightness + b (b ~ U[-0.5, 0.5)), then saturation (each pixel's deviation from
                 its channel mean times s ~ U[0, 2)), then contrast (each value's deviation from the image mean
                 times k ~ U[0.5, 1.5)); scales for images in [-1, 1].
    translation: per image, a shift by whole pixels (dy, dx), each uniform in [-R/8, R/8] (R/8 rounded), with
                 zeros where the shifted image leaves the frame; an exact index gather, no interpolation.
    cutout:      per image, a square of half the size (rounded), placed uniformly at random wholly inside the
                 image, set to 0 (a quarter of the pixels). The paper's code lets the square's centre range over
                 the whole image and clips it at the border (about 19% of the pixels on average).

Random parameters are drawn apart from their use (`sample_augment`, then `apply_augment`), so that a trainer
can draw them for a global batch from its own generator and give each process its rows (`AugmentParams.rows`);
`diff_augment` does both for one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from stylex.config import parse_diffaug

TRANSLATION_RATIO = 1 / 8  # largest shift, as a share of the image size
CUTOUT_RATIO = 1 / 2  # side of the cutout square, as a share of the image size


@dataclass(frozen=True)
class AugmentParams:
    """The random parameters of one augmentation of N images; a field is None when its policy is off.

    Attributes:
        policy: the policy names in the order they apply.
        brightness: [N] added to every value, in [-0.5, 0.5).
        saturation: [N] factor on each pixel's deviation from its mean over channels, in [0, 2).
        contrast: [N] factor on each value's deviation from the image mean, in [0.5, 1.5).
        shift: long [N, 2] (dy, dx) in pixels: content moves down / right by it.
        cutout: long [N, 2] (top, left) corner of the zeroed square.
        cutout_size: (height, width) of the zeroed square in pixels.
    """

    policy: tuple[str, ...]
    brightness: torch.Tensor | None = None
    saturation: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    cutout: torch.Tensor | None = None
    cutout_size: tuple[int, int] = (0, 0)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> AugmentParams:
        """A copy with `fn` applied to every tensor field."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        changes: dict[str, Any] = {k: fn(v) for k, v in values.items() if isinstance(v, torch.Tensor)}
        return replace(self, **changes)

    def rows(self, index: torch.Tensor) -> AugmentParams:
        """The parameters of the images at `index` (long [M]), e.g. one process's share of a global batch."""
        return self._map(lambda t: t[index.to(t.device)])

    def to(self, device: str | torch.device) -> AugmentParams:
        return self._map(lambda t: t.to(device))


def sample_augment(
    policy: str | tuple[str, ...],
    num_images: int,
    size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> AugmentParams:
    """Draw the random parameters of `policy` for `num_images` images of `size` = (H, W).

    Drawn on the generator's device (the CPU for None, from the global RNG) in a fixed order, so the same
    generator state gives the same parameters.

    Raises:
        StylexError: an unknown policy name (see `stylex.config.parse_diffaug`).
    """
    names = parse_diffaug(policy) if isinstance(policy, str) else parse_diffaug(",".join(policy))
    n, (h, w) = num_images, size
    device = generator.device if generator is not None else torch.device("cpu")

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    def integers(low: int, high: int, *shape: int) -> torch.Tensor:  # uniform in [low, high]
        return torch.randint(low, high + 1, shape, generator=generator, device=device)

    out: dict = {"policy": names}
    for name in names:
        if name == "color":
            out["brightness"] = uniform(n) - 0.5
            out["saturation"] = uniform(n) * 2
            out["contrast"] = uniform(n) + 0.5
        elif name == "translation":
            max_dy, max_dx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
            out["shift"] = torch.stack([integers(-max_dy, max_dy, n), integers(-max_dx, max_dx, n)], dim=1)
        elif name == "cutout":
            ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
            out["cutout"] = torch.stack([integers(0, h - ch, n), integers(0, w - cw, n)], dim=1)
            out["cutout_size"] = (ch, cw)
    return AugmentParams(**out)


def apply_augment(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Apply drawn parameters to images x [N, C, H, W] (parameters on x's device); differentiable in x.

    Returns:
        [N, C, H, W], x's dtype.
    """
    assert x.ndim == 4, f"images must be [N, C, H, W], got {tuple(x.shape)}"
    for name in params.policy:
        if name == "color":
            x = _color(x, params.brightness, params.saturation, params.contrast)
        elif name == "translation":
            assert params.shift is not None  # drawn for every policy name (sample_augment)
            x = _translate(x, params.shift)
        elif name == "cutout":
            assert params.cutout is not None
            x = _cutout(x, params.cutout, params.cutout_size)
    return x


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment of images x [N, C, H, W]: `policy` ("color,translation,cutout"; "" = x unchanged), with
    parameters drawn from `generator` (None: the global RNG), each image its own. Differentiable in x.

    Raises:
        StylexError: an unknown policy name, naming the valid ones.
    """
    params = sample_augment(policy, len(x), (x.shape[2], x.shape[3]), generator)
    return apply_augment(x, params.to(x.device))


# ------------------------------------------------------------------------------------------------- policies
def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).view(-1, 1, 1, 1)  # [N] -> [N, 1, 1, 1]


def _color(x: torch.Tensor, brightness, saturation, contrast) -> torch.Tensor:
    x = x + _per_image(brightness, x)
    gray = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
    x = gray + (x - gray) * _per_image(saturation, x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    return mean + (x - mean) * _per_image(contrast, x)


def _translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Output pixel (i, j) of image n reads input pixel (i - dy_n, j - dx_n), or 0 outside the frame."""
    n, c, h, w = x.shape
    src_i = torch.arange(h, device=x.device) - shift[:, :1]  # [N, H]
    src_j = torch.arange(w, device=x.device) - shift[:, 1:]  # [N, W]
    inside = ((src_i >= 0) & (src_i < h))[:, :, None] & ((src_j >= 0) & (src_j < w))[:, None, :]  # [N, H, W]
    flat = src_i.clamp(0, h - 1)[:, :, None] * w + src_j.clamp(0, w - 1)[:, None, :]  # [N, H, W]
    index = flat.view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out * inside[:, None].to(x.dtype)


def _cutout(x: torch.Tensor, corner: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    _, _, h, w = x.shape
    i = torch.arange(h, device=x.device)[None, :] - corner[:, :1]  # [N, H] row offset into the square
    j = torch.arange(w, device=x.device)[None, :] - corner[:, 1:]  # [N, W]
    inside = ((i >= 0) & (i < size[0]))[:, :, None] & ((j >= 0) & (j < size[1]))[:, None, :]  # [N, H, W]
    return x * (~inside)[:, None].to(x.dtype)

"""SmallCNN: the built-in classifier, a small ResNet that trains in seconds on CPU at 32-64 px."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylex.classifier.spec import InputSpec

NORMS = ("group", "batch")


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, dim), dim)
    return nn.BatchNorm2d(dim)


class ResidualBlock(nn.Module):
    """Basic residual block (post-activation): conv3x3 -> norm -> ReLU -> conv3x3 -> norm, plus skip, ReLU.

    Args:
        in_dim: Input channels.
        out_dim: Output channels.
        stride: 1, or 2 to halve H and W (the skip then uses a strided 1x1 conv).
        norm: "group" or "batch".
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, out_dim)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_dim != out_dim:
            self.skip = nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), _norm(norm, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.skip(x))


class SmallCNN(nn.Module):
    """A small ResNet classifier taking stylex images ([-1, 1], NCHW) directly.

    Stem conv -> `num_stages` residual stages (stage i has `width * 2**i` channels, capped at
    `width * 4`; every stage after the first halves H and W) -> global average and max pool,
    concatenated -> linear. The max pool lets small local evidence (a corner, a spot) count, which
    average pooling alone dilutes; on synthetic shapes it is the difference between learning in a few
    epochs and not at all. Width 32, 3 stages, 1 block each: about 0.3 M parameters.

    Args:
        num_classes: K, the number of logits (>= 2).
        resolution: Side of the square images it is trained on; recorded in its `input_spec`
            (any size works, thanks to the global pool).
        width: Channels of the stem and the first stage.
        num_stages: Residual stages; each after the first halves the resolution.
        blocks_per_stage: Residual blocks in each stage.
        norm: "batch" (BatchNorm, default: trains much faster here) or "group" (GroupNorm, the same in
            train and eval; for tiny batches).
        stem_stride: Stride of the stem conv; None = 1 below 64 px, 2 from 64 px (4x less compute).
            Full resolution in the first stage makes shapes learnable in 1-2 epochs at 32 px instead of 5+.
    """

    architecture = "SmallCNN"
    __jit_unused_properties__ = ["input_spec"]  # lets torch.jit.script compile the module

    def __init__(
        self,
        num_classes: int,
        resolution: int,
        width: int = 32,
        num_stages: int = 3,
        blocks_per_stage: int = 1,
        norm: str = "batch",
        stem_stride: int | None = None,
    ) -> None:
        super().__init__()
        assert num_classes >= 2, num_classes
        assert resolution >= 4 and width >= 1 and num_stages >= 1 and blocks_per_stage >= 1
        assert norm in NORMS, norm
        if stem_stride is None:
            stem_stride = 2 if resolution >= 64 else 1
        self.num_classes = num_classes
        self.resolution = resolution
        self.width = width
        self.num_stages = num_stages
        self.blocks_per_stage = blocks_per_stage
        self.norm = norm
        self.stem_stride = stem_stride

        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=stem_stride, padding=1, bias=False), _norm(norm, width), nn.ReLU()
        )
        stages = []
        in_dim = width
        for i in range(num_stages):
            out_dim = width * 2 ** min(i, 2)
            blocks = [ResidualBlock(in_dim, out_dim, 1 if i == 0 else 2, norm)]
            blocks += [ResidualBlock(out_dim, out_dim, 1, norm) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            in_dim = out_dim
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(2 * in_dim, num_classes)
        self.feature_dims = [width * 2 ** min(i, 2) for i in range(num_stages)]

    @property
    def input_spec(self) -> InputSpec:
        """Takes [-1, 1] images as they are, at the resolution it was built for."""
        return InputSpec(size=self.resolution, value_range=(-1.0, 1.0))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-ready; `SmallCNN(**m.config())` rebuilds the architecture."""
        return {
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "width": self.width,
            "num_stages": self.num_stages,
            "blocks_per_stage": self.blocks_per_stage,
            "norm": self.norm,
            "stem_stride": self.stem_stride,
        }

    @torch.jit.export
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each stage, for a perceptual loss.

        Args:
            x: [N, 3, H, W] images in [-1, 1].

        Returns:
            One tensor per stage, [N, feature_dims[i], H_i, W_i], H_i = H / (stem_stride * 2**i).
        """
        assert x.ndim == 4 and x.shape[1] == 3, x.shape
        h = self.stem(x)  # [N, width, H/stem_stride, W/stem_stride]
        feats: list[torch.Tensor] = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] images in [-1, 1] -> logits [N, num_classes]."""
        h = self.features(x)[-1]  # [N, C, H', W']
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # [N, 2C]
        return self.head(pooled)  # [N, K]

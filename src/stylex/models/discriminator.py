"""Class-conditional StyleGAN2 ResNet discriminator D(x | c).

Conditioning by projection (Miyato & Koyama 2018) on the classifier's probabilities p = softmax(c):
D(x | c) = psi(h(x)) + <V p, h(x)>, the K-way form of "multiply the output by the conditional input".
"""

from __future__ import annotations

import torch
from torch import nn

from stylex.models.encoder import ResNetTrunk
from stylex.models.layers import EqualConv2d, EqualLinear


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel: the mean std of features over groups of `group_size` samples. [N,C,H,W] -> [N,C+1,H,W]."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.float().reshape(g, n // g, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [N/g]
    y = y.reshape(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    """D: (x [N, 3, R, R], classifier logits c [N, K]) -> realness score [N].

    Args:
        resolution: input size R.
        c_dim: number of classes K (0 = unconditional).
        channel_base, channel_max: channel rule as in the generator.
        mbstd_group: minibatch-std group size (0 turns it off).
    """

    def __init__(
        self,
        resolution: int,
        c_dim: int,
        channel_base: int = 4096,
        channel_max: int = 128,
        mbstd_group: int = 4,
    ):
        super().__init__()
        self.resolution, self.c_dim, self.mbstd_group = resolution, c_dim, mbstd_group
        self.trunk = ResNetTrunk(resolution, channel_base, channel_max)
        c4 = self.trunk.out_channels
        self.conv = EqualConv2d(c4 + (1 if mbstd_group else 0), c4, 3, activation=True)
        self.fc = EqualLinear(c4 * 16, c4, activation=True)
        self.out = EqualLinear(c4, 1)
        self.embed = EqualLinear(c_dim, c4) if c_dim > 0 else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.trunk(x)  # [N, C4, 4, 4]
        if self.mbstd_group:
            h = minibatch_stddev(h, self.mbstd_group)
        h = self.fc(self.conv(h).flatten(1))  # [N, C4]
        out = self.out(h).squeeze(1)  # [N]
        if self.embed is not None:
            assert c is not None and c.shape == (x.shape[0], self.c_dim), "D needs the classifier logits c [N, K]"
            p = torch.softmax(c.float(), dim=1).to(h.dtype)
            out = out + (self.embed(p) * h).sum(dim=1) / h.shape[1] ** 0.5
        return out

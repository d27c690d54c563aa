"""Encoder E: image [N, 3, R, R] -> w [N, w_dim], the StyleGAN2 ResNet discriminator trunk without minibatch-std.

The output is raw (no normalisation): it is fed straight to the style affines beside the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from stylex.models.layers import EqualConv2d, EqualLinear, ResBlockDown, channels_at, log2_int


class ResNetTrunk(nn.Module):
    """fromRGB (1x1) and ResBlockDown blocks from resolution R down to 4x4 -> features [N, C4, 4, 4]."""

    def __init__(self, resolution: int, channel_base: int, channel_max: int):
        super().__init__()
        ch = {2**i: channels_at(2**i, channel_base, channel_max) for i in range(2, log2_int(resolution) + 1)}
        self.from_rgb = EqualConv2d(3, ch[resolution], 1, activation=True)
        self.blocks = nn.Sequential(
            *[ResBlockDown(ch[2**i], ch[2 ** (i - 1)]) for i in range(log2_int(resolution), 2, -1)]
        )
        self.out_channels = ch[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.from_rgb(x))


class Encoder(nn.Module):
    """E: x [N, 3, R, R] in [-1, 1] -> w [N, w_dim].

    Args:
        resolution: input size R.
        w_dim: output width (the generator's w_dim).
        channel_base, channel_max: channel rule as in the generator.
        match_rms: rescale each output w to the per-sample RMS held in the buffer `w_rms` (a scalar the trainer
            keeps at the mapping network's output RMS; `TrainConfig.w_scale = "match_mapping"`). False: raw output,
            and no buffer.
    """

    w_rms: torch.Tensor  # the buffer, with match_rms

    def __init__(
        self,
        resolution: int,
        w_dim: int,
        channel_base: int = 4096,
        channel_max: int = 128,
        match_rms: bool = False,
    ):
        super().__init__()
        self.resolution, self.w_dim = resolution, w_dim
        self.match_rms = match_rms
        if match_rms:
            self.register_buffer("w_rms", torch.ones(()))  # target RMS of w, set by the trainer
        self.trunk = ResNetTrunk(resolution, channel_base, channel_max)
        c4 = self.trunk.out_channels
        self.fc = EqualLinear(c4 * 16, c4, activation=True)
        self.out = EqualLinear(c4, w_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        h = self.trunk(x).flatten(1)  # [N, C4 * 16]
        w = self.out(self.fc(h))  # [N, w_dim]
        if self.match_rms:  # per-sample RMS -> w_rms (the scale G sees from mapping(z))
            w = w * (self.w_rms.to(w.dtype) * torch.rsqrt(w.float().square().mean(dim=1, keepdim=True) + 1e-8)).to(
                w.dtype
            )
        return w

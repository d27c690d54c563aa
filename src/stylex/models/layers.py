"""Building blocks shared by G, E and D: equalised-learning-rate layers and the modulated convolution.

Equalised learning rate (Karras et al.): weights are stored at unit scale and multiplied by
1/sqrt(fan_in) at run time, so Adam's per-parameter step size is the same for every layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate.

    Args:
        in_dim: input features.
        out_dim: output features.
        bias_init: initial value of the bias (1.0 for style affines, so styles start at 1).
        lr_mul: learning-rate multiplier (0.01 in the StyleGAN2 mapping network).
        activation: apply leaky ReLU (slope 0.2, gain sqrt(2)) after the linear map.
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        if self.activation:
            out = F.leaky_relu(out, 0.2) * math.sqrt(2)
        return out


class EqualConv2d(nn.Module):
    """Conv2d (stride 1, 'same' padding) with equalised learning rate.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size.
        bias: learn a bias.
        activation: leaky ReLU (0.2) with gain sqrt(2) after the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        out = F.conv2d(x, w, b, padding=self.padding)
        if self.activation:
            out = F.leaky_relu(out, 0.2) * math.sqrt(2)
        return out


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution, written as scale -> shared conv -> demodulate.

    This is the "non-fused" form of StyleGAN2 (NVlabs `fused_modconv=False`): mathematically the
    same as per-sample weights, but one ordinary conv for the whole batch, which is much faster on a CPU.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size (1 for toRGB).
        style_dim: width of the per-layer style input (w' = concat(w, c)).
        demodulate: normalise each output channel to unit expected variance (off for toRGB).
        upsample: upsample the input x2 (bilinear) before the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        # The affine map w' -> s. StyleSpace is the output of these maps (bias 1: styles start at 1).
        self.affine = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.padding = kernel_size // 2
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x: [N, in, H, W]; s: style [N, in] -> [N, out, H', W'] (H' = 2H when upsampling)."""
        w = self.weight * self.weight_gain  # [out, in, k, k]
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = x * s.to(x.dtype)[:, :, None, None]
        out = F.conv2d(x, w.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # d[n, o] = 1 / sqrt(sum_{i,k} (w[o,i,k] * s[n,i])^2)
            w2 = w.square().sum(dim=(2, 3))  # [out, in]
            d = torch.rsqrt(s.float().square() @ w2.t() + 1e-8)  # [N, out]
            out = out * d.to(out.dtype)[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by a learned per-layer strength (starts at 0)."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + noise.to(x.dtype) * self.strength.to(x.dtype)


class ResBlockDown(nn.Module):
    """Residual block of the StyleGAN2 ResNet discriminator: two 3x3 convs, then /2 average pooling.

    Output = (conv path + 1x1 skip) / sqrt(2).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation=True)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.conv0(x))
        y = F.avg_pool2d(y, 2)
        skip = self.skip(F.avg_pool2d(x, 2))
        return (y + skip) * (1 / math.sqrt(2))


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Channel width at a given resolution: min(channel_base / resolution, channel_max) (NVlabs rule)."""
    return max(1, min(channel_base // resolution, channel_max))


def log2_int(resolution: int) -> int:
    r = int(math.log2(resolution))
    if 2**r != resolution or resolution < 8:
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return r

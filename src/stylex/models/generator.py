"""StyleGAN2 generator ("skip" architecture) conditioned on the classifier: w' = concat(w, c).

Three separate steps (DESIGN rule 4):
    mapping(z) -> w                 the random path's latent, [N, w_dim]
    styles(w, c) -> StyleVector     per-layer affine maps of w' = concat(w, c)  (StyleSpace)
    synthesis(s, noise) -> x        image [N, 3, R, R] in [-1, 1] (unbounded output, like StyleGAN2)
On the encoder path w = E(x) is fed to `styles` directly; the mapping network is used only for z.
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from stylex.models.layers import EqualLinear, ModulatedConv2d, NoiseInjection, channels_at, log2_int
from stylex.models.stylespace import StyleLayout, StyleVector


class SynthesisState(NamedTuple):
    """What enters a conv layer during synthesis: activations x [N, C, r, r] and the toRGB skip image so far
    [N, 3, r', r'] (None before the first toRGB)."""

    x: torch.Tensor
    img: torch.Tensor | None


class MappingNetwork(nn.Module):
    """z [N, z_dim] -> w [N, w_dim]: pixel-norm then an MLP with lr multiplier 0.01 (StyleGAN2)."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01):
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.net = nn.Sequential(
            *[EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activation=True) for i in range(num_layers)]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        return self.net(z)


class SynthesisLayer(nn.Module):
    """Modulated conv + noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, demodulate=True, upsample=upsample)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.noise(self.conv(x, s), noise)
        return F.leaky_relu(x + self.bias.to(x.dtype)[None, :, None, None], 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias. With `tint` > 0 the conv also reads `tint` constant
    channels of ones after the features: their styles scale colours added to every pixel (tint coordinates)."""

    def __init__(self, in_channels: int, style_dim: int, tint: int = 0):
        super().__init__()
        self.tint = tint
        self.conv = ModulatedConv2d(in_channels + tint, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.tint:
            x = torch.cat([x, x.new_ones(x.shape[0], self.tint, x.shape[2], x.shape[3])], dim=1)
        return self.conv(x, s) + self.bias.to(x.dtype)[None, :, None, None]


class Generator(nn.Module):
    """Class-conditional StyleGAN2 generator.

    Args:
        resolution: output size R (power of two, 8..1024).
        z_dim: random latent width (z path).
        w_dim: latent width of w (the encoder's output width too).
        c_dim: number of classifier logits K appended to w.
        num_mapping_layers: depth of the mapping MLP.
        channel_base, channel_max: channels at resolution r are min(channel_base / r, channel_max).
        cond_rgb: the toRGB styles see c too; False feeds their affines zeros in place of c (see
            `TrainConfig.cond_rgb`).
        tint_styles: constant channels of the first toRGB layer, i.e. global-tint style coordinates
            (`ModelConfig.tint_styles`).
        grey: every toRGB output is made grey (the mean of its three channels in each), so the images are grey
            (`ModelConfig.grey`: greyscale data, whose explanations must not show colours no scan has).
    """

    def __init__(
        self,
        resolution: int,
        z_dim: int,
        w_dim: int,
        c_dim: int,
        num_mapping_layers: int = 4,
        channel_base: int = 4096,
        channel_max: int = 128,
        cond_rgb: bool = True,
        tint_styles: int = 0,
        grey: bool = False,
    ):
        super().__init__()
        self.resolution, self.z_dim, self.w_dim, self.c_dim = resolution, z_dim, w_dim, c_dim
        self.cond_rgb, self.tint_styles, self.grey = cond_rgb, tint_styles, bool(grey)
        style_dim = w_dim + c_dim
        self.mapping_net = MappingNetwork(z_dim, w_dim, num_mapping_layers)
        ch = {2**i: channels_at(2**i, channel_base, channel_max) for i in range(2, log2_int(resolution) + 1)}
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        layers = [SynthesisLayer(ch[4], ch[4], style_dim, upsample=False)]
        to_rgbs = [ToRGB(ch[4], style_dim, tint=tint_styles)]
        names = ["b4.conv1"]
        self.noise_sizes = [4]
        for log_res in range(3, log2_int(resolution) + 1):
            res = 2**log_res
            layers.append(SynthesisLayer(ch[res // 2], ch[res], style_dim, upsample=True))
            layers.append(SynthesisLayer(ch[res], ch[res], style_dim, upsample=False))
            to_rgbs.append(ToRGB(ch[res], style_dim))
            names += [f"b{res}.conv0", f"b{res}.conv1"]
            self.noise_sizes += [res, res]
        self.layers = nn.ModuleList(layers)
        self.to_rgbs = nn.ModuleList(to_rgbs)
        self.layout = StyleLayout(
            conv_dims=tuple(layer.conv.in_channels for layer in layers),
            rgb_dims=tuple(rgb.conv.in_channels for rgb in to_rgbs),
            conv_names=tuple(names),
            tints=tint_styles,
        )

    def _synthesis_layers(self) -> list[SynthesisLayer]:
        """`layers` typed (a ModuleList's items are plain Modules to a type checker)."""
        return cast("list[SynthesisLayer]", list(self.layers))

    # 1. random path
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, z_dim] -> w [N, w_dim]."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, tuple(z.shape)
        return self.mapping_net(z)

    # 2. StyleSpace
    def styles(self, w: torch.Tensor, c: torch.Tensor) -> StyleVector:
        """w [N, w_dim], classifier logits c [N, c_dim] -> StyleVector of w' = concat(w, c)."""
        assert w.ndim == 2 and w.shape[1] == self.w_dim, tuple(w.shape)
        assert c.ndim == 2 and c.shape == (w.shape[0], self.c_dim), (tuple(c.shape), self.c_dim)
        w_prime = torch.cat([w, c.to(w.dtype)], dim=1)  # [N, w_dim + c_dim]
        conv = [layer.conv.affine(w_prime) for layer in self._synthesis_layers()]
        w_rgb = w_prime if self.cond_rgb else torch.cat([w, torch.zeros_like(c, dtype=w.dtype)], dim=1)
        rgb = [to_rgb.conv.affine(w_rgb) for to_rgb in cast("list[ToRGB]", list(self.to_rgbs))]
        return StyleVector(conv, rgb, self.layout)

    def cond_group_norm(self, groups: str = "channel") -> torch.Tensor:
        """The group-lasso term of `TrainConfig.cond_sparsity`; 0-dim, differentiable. groups="channel": the sum
        over the conv style channels of the L2 norm of each channel's affine weights on c (with the equalised-lr
        gain); groups="class": the sum of the absolute values of those weights, one group per (channel, class).
        A sum, so that the pull on each channel does not depend on how many channels G has."""
        if groups not in ("channel", "class"):
            raise ValueError(f"groups must be 'channel' or 'class', got {groups!r}")
        affines = [layer.conv.affine for layer in self._synthesis_layers()]
        weights = [affine.weight[:, self.w_dim :] * affine.weight_gain for affine in affines]
        if groups == "class":
            return torch.cat([w.abs().flatten() for w in weights]).sum()
        return torch.cat([w.norm(dim=1) for w in weights]).sum()

    def make_noise(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> list[torch.Tensor]:
        """Per-layer noise maps [N, 1, r, r]; pass a seeded `generator` for fixed noise."""
        device = device if device is not None else self.const.device
        return [
            torch.randn(batch_size, 1, r, r, generator=generator, device=device if generator is None else "cpu").to(
                device
            )
            for r in self.noise_sizes
        ]

    # 3. image
    def synthesis(self, s: StyleVector, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """StyleVector (batch N) -> image [N, 3, R, R]. noise: from `make_noise`, or None for fresh noise."""
        n = s.batch_size
        if noise is None:
            noise = self.make_noise(n)
        x = self.const.expand(n, -1, -1, -1)  # [N, C4, 4, 4]
        return self.synthesis_from(0, SynthesisState(x, None), s, noise)

    def synthesis_from(
        self, layer: int, state: SynthesisState, s: StyleVector, noise: list[torch.Tensor]
    ) -> torch.Tensor:
        """Finish synthesis from conv layer `layer`, given the state entering it (see `synthesis_states`).

        `synthesis(s, noise)` is `synthesis_from(0, SynthesisState(const, None), s, noise)`; AttFind uses a
        later `layer` to re-run only the layers at and after an edited style.

        Args:
            layer: index of the first conv layer to run (0 .. len(layout.conv_dims) - 1).
            state: activations x [N, C, r, r] entering `layer` and the toRGB skip image so far [N, 3, r', r']
                (None before the first toRGB).
            s: styles [N]; only conv styles >= `layer` and the toRGB styles after it are read.
            noise: per-layer noise maps as from `make_noise` (all layers; those >= `layer` are read).

        Returns:
            image [N, 3, R, R].
        """
        x, img = state
        for i in range(layer, len(self.layers)):
            x, img = self._layer_step(i, x, img, s, noise)
        assert img is not None, "synthesis_from: no toRGB ran (layer past the last conv layer)"
        return img

    def synthesis_states(self, s: StyleVector, noise: list[torch.Tensor]) -> list[SynthesisState]:
        """The state entering every conv layer: a cache for re-running synthesis from an edited layer.

        Returns:
            one `SynthesisState` per conv layer l: x [N, C_in(l), r, r] and the skip image [N, 3, r', r'] (None
            for l = 0); `synthesis_from(l, states[l], s, noise)` equals `synthesis(s, noise)`.
        """
        n = s.batch_size
        x, img = self.const.expand(n, -1, -1, -1), None  # [N, C4, 4, 4]
        states = []
        for i in range(len(self.layers)):
            states.append(SynthesisState(x, img))
            x, img = self._layer_step(i, x, img, s, noise)
        return states

    def _layer_step(
        self, i: int, x: torch.Tensor, img: torch.Tensor | None, s: StyleVector, noise: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv layer i; after the last conv of a resolution block, add its toRGB to the (upsampled) skip image."""
        x = self.layers[i](x, s.conv[i], noise[i])  # [N, C, r, r] (layers 1, 3, ... upsample x2)
        if i % 2 == 0:
            rgb = self.to_rgbs[i // 2](x, s.rgb[i // 2])  # [N, 3, r, r]
            if self.grey:  # each part grey, so the sum of the upsampled parts is too
                rgb = rgb.mean(1, keepdim=True).expand_as(rgb)
            img = rgb if img is None else F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + rgb
        return x, img

    def forward(self, w: torch.Tensor, c: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Shorthand for synthesis(styles(w, c), noise)."""
        return self.synthesis(self.styles(w, c), noise)

"""Class-swap diagnostic (`stylex.metrics.conditioning`): which styles carry the class in a conditioned model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stylex.config import preset
from stylex.metrics.conditioning import class_swap
from stylex.models.stylex import StylEx, build_networks


class RedCorner(nn.Module):
    """Class 1 when the top-left corner is redder than it is blue, class 0 otherwise."""

    def forward(self, x):
        d = (x[:, 0, :4, :4] - x[:, 2, :4, :4]).mean(dim=(1, 2)) * 20
        return torch.stack([-d, d], dim=1)


@pytest.fixture
def classifier():
    return RedCorner()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 3, 16, 16, generator=g) * 2 - 1


def _setup(classifier, images, scale=1.0, **overrides):
    torch.manual_seed(0)
    config = preset("tiny", **overrides)
    G, E, _ = build_networks(config, 2)
    model = StylEx(G, E, config).eval()
    with torch.no_grad():  # scale > 1: the logits weigh more, so that swapping them changes the picture more
        for layer in [*G.layers, *G.to_rgbs]:
            layer.conv.affine.weight[:, G.w_dim :] *= scale
        noise = G.make_noise(len(images), torch.Generator().manual_seed(1))
        s = model.styles(images, classifier(images))
        base = classifier(G.synthesis(s, noise))
        flat = s.flatten()
    return model, noise, base, flat.min(0).values, flat.max(0).values


def test_swap_without_rgb_conditioning_lives_in_the_conv_styles(classifier, images):
    model, noise, base, lo, hi = _setup(classifier, images, cond_rgb=False)
    out = class_swap(model, classifier, images, noise, base, lo, hi, k=3, batch_size=16)
    assert set(out["overall"]) == {"all", "conv", "rgb", "top3"}
    assert sum(out["counts"].values()) == len(images)  # two classes: every image counts once
    assert out["overall"]["rgb"] == 0.0  # the toRGB styles never see the logits
    assert out["overall"]["conv"] == out["overall"]["all"] > 0
    for y, figures in out["per_class"].items():
        assert figures["conv"] == figures["all"], y


def test_swap_with_conv_styles_blind_to_the_logits_lives_in_the_torgb_styles(classifier, images):
    model, noise, base, lo, hi = _setup(classifier, images, scale=30.0)
    with torch.no_grad():
        for layer in model.G.layers:
            layer.conv.affine.weight[:, model.G.w_dim :] = 0
        s = model.styles(images, classifier(images))
        base = classifier(model.G.synthesis(s, noise))
    out = class_swap(model, classifier, images, noise, base, lo, hi, k=3, batch_size=16)
    assert out["overall"]["conv"] == out["overall"]["top3"] == 0.0  # no conv coordinate moves with the logits
    assert out["overall"]["rgb"] == out["overall"]["all"] > 0


def test_unconditioned_model_has_no_swap(classifier, images):
    model, noise, base, lo, hi = _setup(classifier, images, conditional=False, cls_weight=0.0, perceptual_weight=0.0)
    assert class_swap(model, classifier, images, noise, base, lo, hi) is None

"""DiffAugment (`stylex.training.augment`): shapes, ranges, gradients, each policy's effect, reproducibility,
config validation, and a tiny training run with it that resumes exactly."""

from __future__ import annotations

import pytest
import torch

from stylex.config import DIFFAUG_POLICIES, TrainConfig, parse_diffaug, preset
from stylex.errors import StylexError
from stylex.training.augment import AugmentParams, apply_augment, diff_augment, sample_augment
from stylex.training.checkpoint import STATE, load_state
from stylex.training.trainer import Trainer

ALL = "color,translation,cutout"


def images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [N, 3, R, R]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ["", "color", "translation", "cutout", ALL, "cutout, color"])
def test_shape_dtype_and_range_kept(policy):
    x = images()
    y = diff_augment(x, policy, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    if "color" in policy:
        # brightness +-0.5, saturation x[0, 2), contrast x[0.5, 1.5) bound values of [-1, 1] images by 7.5
        assert y.abs().max() <= 7.5
    else:  # translation and cutout only move values or write zeros
        assert y.min() >= -1 and y.max() <= 1
    if not policy:
        assert torch.equal(y, x)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
def test_gradient_flows_to_x(policy):
    x = images().requires_grad_(True)
    (diff_augment(x, policy, gen()) * torch.randn(x.shape, generator=gen(1))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    x = images(n=2, size=8).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, ALL, gen(3)), (x,))


def test_translation_moves_content():
    n, size = 64, 16
    x = torch.full((n, 3, size, size), -1.0)
    x[:, :, 8, 8] = 1.0  # one bright pixel in every image
    params = sample_augment("translation", n, (size, size), gen())
    y = apply_augment(x, params)
    assert params.shift.abs().max() <= 2 and len({tuple(s) for s in params.shift.tolist()}) > 1  # up to 16 / 8
    for img, (dy, dx) in zip(y, params.shift.tolist(), strict=True):
        bright = (img[0] == 1).nonzero().tolist()
        assert bright == [[8 + dy, 8 + dx]], "the bright pixel moves by the drawn shift"
    # zeros where the frame was left: a shift of (2, 0) zeroes the top two rows
    shifted = apply_augment(x[:1], AugmentParams(policy=("translation",), shift=torch.tensor([[2, 0]])))
    assert (shifted[0, :, :2] == 0).all() and (shifted[0, :, 2:] == -1).sum() == 3 * 14 * 16 - 3
    # a pixel at the border can be pushed out of the frame
    edge = torch.full((n, 3, size, size), -1.0)
    edge[:, :, 0, 0] = 1.0
    out = diff_augment(edge, "translation", gen())
    assert ((out == 1).flatten(1).sum(1) == 0).any(), "the border pixel is cut off when shifted up or left"


def test_cutout_zeroes_a_quarter():
    x = images(n=32, size=16) * 0.5 + 0.75  # values in [0.25, 1.25]: never 0 before the cutout
    y = diff_augment(x, "cutout", gen())
    zeroed = (y == 0).float().mean(dim=(1, 2, 3))  # [N] share of zeroed values per image
    assert torch.allclose(zeroed, torch.full_like(zeroed, 0.25)), "an 8 x 8 square of a 16 x 16 image"
    assert torch.equal(y[y != 0], x[y != 0]), "the rest is untouched"
    corners = sample_augment("cutout", 32, (16, 16), gen()).cutout
    assert len({tuple(c) for c in corners.tolist()}) > 1, "the square moves from image to image"


def test_color_is_per_image_and_keeps_mean_shift():
    x = images(n=16)
    params = sample_augment("color", 16, (16, 16), gen())
    y = apply_augment(x, params)
    # saturation and contrast keep the image mean, so the mean moves by exactly the brightness
    assert torch.allclose(y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)), params.brightness, atol=1e-5)
    assert params.brightness.unique().numel() == 16, "each image draws its own parameters"


def test_same_seed_same_output_and_order_matters():
    x = images()
    assert torch.equal(diff_augment(x, ALL, gen(5)), diff_augment(x, ALL, gen(5)))
    assert not torch.equal(diff_augment(x, ALL, gen(5)), diff_augment(x, ALL, gen(6)))
    torch.manual_seed(7)
    a = diff_augment(x, ALL, None)  # the global RNG
    torch.manual_seed(7)
    assert torch.equal(a, diff_augment(x, ALL, None))
    assert not torch.equal(diff_augment(x, "color,cutout", gen(5)), diff_augment(x, "cutout,color", gen(5)))


def test_rows_select_images_of_a_larger_batch():
    x = images(n=8)
    params = sample_augment(ALL, 8, (16, 16), gen())
    rows = torch.tensor([1, 4, 6])
    assert torch.equal(apply_augment(x, params)[rows], apply_augment(x[rows], params.rows(rows)))


@pytest.mark.parametrize("policy", ["colour", "color,zoom", "color,,cutout", "color,color", "COLOR"])
def test_unknown_policy_is_refused(policy):
    with pytest.raises(StylexError, match="valid policies: color, translation, cutout"):
        diff_augment(images(), policy, gen())
    with pytest.raises(StylexError, match="valid policies"):
        preset("tiny", diffaug=policy)


def test_config_round_trip_and_presets():
    assert parse_diffaug("") == () and parse_diffaug(" color , cutout ") == ("color", "cutout")
    assert set(DIFFAUG_POLICIES) == {"color", "translation", "cutout"}
    cfg = preset("tiny", diffaug=ALL)
    assert TrainConfig.from_dict(cfg.to_dict()).diffaug == ALL
    assert TrainConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "diffaug"}).diffaug == ""
    faces, plant = preset("faces-64").to_dict(), preset("plant-64").to_dict()
    assert faces.pop("diffaug") == ALL and faces.pop("preset") == "faces-64"
    assert plant.pop("diffaug") == "" and plant.pop("preset") == "plant-64"
    assert faces == plant, "faces-64 is plant-64 with DiffAugment"


# ------------------------------------------------------------------------------------------------- training
def _trainer(tmp_path, classifier, images, name="run", **overrides):
    cfg = preset("tiny", **overrides)
    return Trainer(cfg, classifier, images[:32], images[32:], tmp_path / name, quiet=True)


def test_training_with_diffaug_resumes_exactly(tmp_path, stand_in_classifier, tiny_images):
    kw = {"diffaug": ALL, "r1_interval": 2, "z_path_every": 2}
    full = _trainer(tmp_path, stand_in_classifier, tiny_images, "full", max_steps=6, **kw)
    full.run()
    half = _trainer(tmp_path, stand_in_classifier, tiny_images, "half", max_steps=3, **kw)
    half.run()
    assert "rng_aug" in load_state(tmp_path / "half" / STATE)
    resumed = _trainer(tmp_path, stand_in_classifier, tiny_images, "half", max_steps=6, **kw)
    resumed.run(resume=True)
    assert resumed.step == 6
    for name, module in full.modules().items():
        other = resumed.modules()[name]
        for (k, a), (_, b) in zip(module.state_dict().items(), other.state_dict().items(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), f"{name}.{k} differs after resume"
    # the augmentation is on: the same run without it ends elsewhere
    plain = _trainer(tmp_path, stand_in_classifier, tiny_images, "plain", max_steps=6, r1_interval=2, z_path_every=2)
    plain.run()
    pairs = zip(plain.D.state_dict().values(), full.D.state_dict().values(), strict=True)
    assert not all(torch.allclose(a, b) for a, b in pairs)


def test_diffaug_cannot_change_on_resume(tmp_path, stand_in_classifier, tiny_images):
    _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1).run()
    with pytest.raises(StylexError, match="diffaug"):
        _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=2, diffaug=ALL).run(resume=True)


def test_diffaug_touches_only_the_inputs_of_D(tmp_path, stand_in_classifier, tiny_images, monkeypatch):
    tr = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1, diffaug=ALL, z_path_every=1)
    seen = {"D": [], "E": [], "C": []}
    augmented = []
    inner_augment = tr.augment
    monkeypatch.setattr(tr, "augment", lambda x: augmented.append(out := inner_augment(x)) or out)
    for key, module in (("D", tr.D), ("E", tr.E), ("C", stand_in_classifier)):
        module.register_forward_pre_hook(lambda _m, args, key=key: seen[key].append(args[0]))
    tr.start(resume=False)
    tr.train_step()
    # D: real and fakes in the D step, x_rec in the encoder step, x_fake in the z step; all augmented
    assert len(seen["D"]) == 4 and len(augmented) == 4
    assert all(any(d is a for a in augmented) for d in seen["D"])
    assert not any(t is a for t in seen["E"] + seen["C"] for a in augmented), "E and C never see augmented images"


def test_each_process_gets_its_rows_of_the_global_augmentation(tmp_path, stand_in_classifier, tiny_images):
    """With several processes each augments its share of the batch as one process augments the whole batch."""
    one = _trainer(tmp_path, stand_in_classifier, tiny_images, diffaug=ALL)
    x = images(n=16)  # [reconstructions; z-path fakes] of a global batch of 8
    whole = one.augment(x)
    for shard in (torch.tensor([0, 2, 4, 6]), torch.tensor([1, 3, 5, 7])):  # two ranks' strided columns
        rank = _trainer(tmp_path, stand_in_classifier, tiny_images, diffaug=ALL)
        rank.shard = shard
        rows = torch.cat([shard, shard + 8])
        assert torch.equal(rank.augment(x[rows]), whole[rows])

"""Network contracts: shapes, backward, StyleVector algebra, checkpoint round trip, resume equivalence."""

from __future__ import annotations

import pytest
import torch

from stylex.config import preset
from stylex.errors import StylexError
from stylex.models import Discriminator, Encoder, Generator, StyleCoord
from stylex.models.stylex import StylEx
from stylex.training.trainer import DivergenceError, Trainer


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_generator_shapes_and_backward(resolution):
    torch.manual_seed(0)
    G = Generator(resolution, z_dim=8, w_dim=12, c_dim=3, num_mapping_layers=2, channel_base=128, channel_max=8)
    z = torch.randn(4, 8)
    c = torch.randn(4, 3)
    w = G.mapping(z)
    assert w.shape == (4, 12)
    s = G.styles(w, c)
    assert [t.shape[1] for t in s.conv] == list(G.layout.conv_dims)
    assert s.flatten().shape == (4, G.layout.num_coords)
    x = G.synthesis(s)
    assert x.shape == (4, 3, resolution, resolution)
    x.square().mean().backward()
    assert all(p.grad is not None for n, p in G.named_parameters()), "every parameter gets a gradient"


def test_encoder_discriminator_shapes_and_backward():
    torch.manual_seed(0)
    E = Encoder(16, w_dim=12, channel_base=128, channel_max=8)
    D = Discriminator(16, c_dim=3, channel_base=128, channel_max=8)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    w = E(x)
    assert w.shape == (4, 12)
    score = D(x, torch.randn(4, 3))
    assert score.shape == (4,)
    (w.sum() + score.sum()).backward()
    assert x.grad is not None and all(p.grad is not None for p in E.parameters())
    assert all(p.grad is not None for p in D.parameters())


def test_discriminator_depends_on_condition():
    torch.manual_seed(0)
    D = Discriminator(16, c_dim=2, channel_base=128, channel_max=8)
    torch.nn.init.normal_(D.embed.weight)
    x = torch.randn(4, 3, 16, 16)
    a = D(x, torch.tensor([[5.0, -5.0]] * 4))
    b = D(x, torch.tensor([[-5.0, 5.0]] * 4))
    assert not torch.allclose(a, b)


def test_stylevector_flatten_unflatten_shifted():
    torch.manual_seed(0)
    G = Generator(16, z_dim=8, w_dim=12, c_dim=2, num_mapping_layers=2, channel_base=128, channel_max=8)
    s = G.styles(torch.randn(3, 12), torch.randn(3, 2))
    flat = s.flatten()
    assert torch.equal(s.unflatten(flat).flatten(), flat)
    coord = StyleCoord(layer=2, channel=5)
    j = G.layout.flat_index(coord)
    assert G.layout.coord(j) == coord
    t = s.shifted(j, 0.5)
    diff = t.flatten() - flat
    assert torch.allclose(diff[:, j], torch.full((3,), 0.5))
    diff[:, j] = 0
    assert diff.abs().max() == 0, "only the shifted coordinate changes"
    assert torch.equal(s.flatten(), flat), "shifted() must not modify the original"
    # one coordinate per row, or the same coordinates for every row: said, since 3 coordinates and 3 deltas for 3
    # rows could mean either (it took the first, silently)
    coords, deltas = torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0])
    t = s.shifted(coords, deltas, per_row=True)
    assert torch.allclose((t.flatten() - flat)[torch.arange(3), coords], deltas)
    assert (t.flatten() - flat).count_nonzero() == 3
    t = s.shifted(coords, deltas, per_row=False)
    assert torch.allclose((t.flatten() - flat)[:, coords], deltas.expand(3, 3))
    with pytest.raises(StylexError, match="pass per_row=True"):
        s.shifted(coords, deltas)
    with pytest.raises(StylexError, match="one coordinate and one delta per row"):
        s.shifted(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), per_row=True)
    two = s.shifted(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))  # 2 coordinates for 3 rows: every row
    assert torch.allclose((two.flatten() - flat)[:, :2], torch.tensor([[1.0, 2.0]]).expand(3, 2))
    with pytest.raises(StylexError, match="pass per_row=True"):  # one delta for 3 coordinates of 3 rows: either too
        s.shifted(coords, 1.0)
    assert torch.allclose(
        (s.shifted(coords, 1.0, per_row=True).flatten() - flat)[torch.arange(3), coords], deltas * 0 + 1
    )
    twice = s.shifted(torch.tensor([4, 4]), torch.tensor([1.0, 2.0]))  # a coordinate listed twice gets both deltas
    assert torch.allclose((twice.flatten() - flat)[:, 4], torch.full((3,), 3.0))
    with pytest.raises(StylexError, match=r"coordinates must be in \[0, "):
        s.shifted(torch.tensor([0, flat.shape[1]]), 1.0)
    with pytest.raises(StylexError, match="do not fit 3 rows and 1 coordinates"):
        s.shifted(2, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(StylexError, match="whole-number coordinates"):
        s.shifted(torch.tensor([0.5]), 1.0)
    one = s.index(torch.tensor([1]))
    assert torch.equal(one.shifted(torch.tensor([4]), torch.tensor([0.5])).flatten(), one.shifted(4, 0.5).flatten())
    # the shifted style changes the image
    noise = G.make_noise(3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(G.synthesis(s, noise), G.synthesis(s.shifted(j, 3.0), noise))


def test_tint_styles_shift_every_pixel_by_one_colour():
    """A tint coordinate (`model.tint_styles`) adds the same colour to every pixel; a feature toRGB coordinate
    does not; StyleGAN2's layout is unchanged without them."""
    torch.manual_seed(0)
    kwargs = dict(z_dim=8, w_dim=12, c_dim=2, num_mapping_layers=2, channel_base=128, channel_max=8)
    assert Generator(16, **kwargs).layout.rgb_dims == (8, 8, 8)
    G = Generator(16, tint_styles=2, **kwargs)
    assert G.layout.rgb_dims == (10, 8, 8) and G.layout.conv_dims == (8, 8, 8, 8, 8)
    layout = G.layout.with_rgb(True)
    s = G.styles(torch.randn(3, 12), torch.randn(3, 2)).with_layout(layout)
    noise = G.make_noise(3, generator=torch.Generator().manual_seed(0))
    base = G.synthesis(s, noise)
    tint = layout.flat_index(StyleCoord(len(layout.conv_dims), 9))
    assert layout.describe(tint) == "toRGB0[9] (tint 1)" and layout.tint_index(tint) == 1
    assert layout.tint_index(tint - 2) is None and layout.with_rgb(False).tints == 2
    diff = G.synthesis(s.shifted(tint, 2.0), noise) - base
    per_pixel = diff.flatten(2)
    assert per_pixel.abs().amax() > 1e-3, "the tint changes the image"
    assert torch.allclose(per_pixel, per_pixel[:, :, :1].expand_as(per_pixel), atol=1e-5), "one colour everywhere"
    assert torch.allclose(per_pixel[0], per_pixel[1], atol=1e-5), "the same colour for every image"
    feature = layout.flat_index(StyleCoord(len(layout.conv_dims), 3))
    diff = (G.synthesis(s.shifted(feature, 2.0), noise) - base).flatten(2)
    assert (diff - diff[:, :, :1]).abs().amax() > 1e-3, "a feature coordinate draws a pattern"
    cfg = preset("tiny")
    assert cfg.model.tint_styles == 0
    with pytest.raises(StylexError, match="tint_styles"):
        preset("tiny", **{"model.tint_styles": -1})


def test_greyscale_data_gets_a_grey_generator(tmp_path, stand_in_classifier):
    """Greyscale scans came back as green and red reconstructions and counterfactuals, which a clinician reads as
    findings. On grey data (R = G = B) `stylex train` makes the generator grey (`model.grey`), says so, and records
    it; a resume keeps the run's choice; `model.grey=false` keeps colour; colour data is left as it was."""
    import json
    import warnings

    import numpy as np

    import stylex
    from stylex.pipeline import load_run

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (24, 16, 16, 1), dtype=np.uint8), 3, axis=3)
    np.savez(tmp_path / "scans.npz", images=grey)
    np.savez(tmp_path / "colour.npz", images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8))
    cfg = preset("tiny", max_steps=1)
    with pytest.warns(UserWarning, match="every image of the data is grey, so the generator draws grey images"):
        stylex.train_stylex(tmp_path / "scans.npz", stand_in_classifier, tmp_path / "grey", cfg, quiet=True)
    assert json.loads((tmp_path / "grey" / "config.json").read_text())["train"]["model"]["grey"] is True
    model, _ = load_run(tmp_path / "grey", classifier=stand_in_classifier)
    with torch.no_grad():
        x = model.G(torch.randn(4, model.G.w_dim), torch.randn(4, 2))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2]), "R = G = B"
    stylex.train_stylex(tmp_path / "scans.npz", stand_in_classifier, tmp_path / "grey", preset("tiny", max_steps=2),
                        resume=True, quiet=True)  # fmt: skip
    assert json.loads((tmp_path / "grey" / "config.json").read_text())["train"]["model"]["grey"] is True, "resumed"
    # a colour image explained by the grey model: said, as its reconstruction and edits lose the colour
    from PIL import Image

    from stylex.attfind.run import run_attfind
    from stylex.explain.run import explain_images

    run_attfind(tmp_path / "grey", classifier=stand_in_classifier, num_images=4, top_k=1, fast=4, render=False,
                resamples=0, quiet=True)  # fmt: skip
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    with pytest.warns(UserWarning, match="the image has colour, but the model draws grey images"):
        explain_images(tmp_path / "grey", tmp_path / "grey" / "attfind", tmp_path / "ex", [tmp_path / "colour.png"],
                       strategies=("independent",), top_k=1, classifier=stand_in_classifier, quiet=True)  # fmt: skip
    for data, name, overrides in (("scans", "kept", {"model.grey": False}), ("colour", "colour", {})):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing said: colour asked for, or colour data
            stylex.train_stylex(tmp_path / f"{data}.npz", stand_in_classifier, tmp_path / name,
                                preset("tiny", max_steps=1, **overrides), quiet=True)  # fmt: skip
        model, _ = load_run(tmp_path / name, classifier=stand_in_classifier)
        with torch.no_grad():
            x = model.G(torch.randn(4, model.G.w_dim), torch.randn(4, 2))
        assert not torch.equal(x[:, 0], x[:, 1]), f"{name}: colour"


def _trainer(tmp_path, classifier, images, name="run", **overrides):
    cfg = preset("tiny", **overrides)
    return Trainer(cfg, classifier, images[:32], images[32:], tmp_path / name, quiet=True)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, stand_in_classifier, tiny_images):
    tr = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=2)
    tr.run()
    model = StylEx.load(tmp_path / "run")
    x = tiny_images[:4]
    c = stand_in_classifier(x)
    noise = model.G.make_noise(4, generator=torch.Generator().manual_seed(0))
    expected = tr.G_ema(tr.E_ema(x), c, noise)
    assert torch.equal(model.reconstruct(x, c, noise), expected)


def test_resume_equals_uninterrupted(tmp_path, stand_in_classifier, tiny_images):
    full = _trainer(tmp_path, stand_in_classifier, tiny_images, "full", max_steps=6, r1_interval=2)
    full.run()
    half = _trainer(tmp_path, stand_in_classifier, tiny_images, "half", max_steps=3, r1_interval=2)
    half.run()
    resumed = _trainer(tmp_path, stand_in_classifier, tiny_images, "half", max_steps=6, r1_interval=2)
    resumed.run(resume=True)
    assert resumed.step == 6
    for name, module in full.modules().items():
        other = resumed.modules()[name]
        for (k, a), (_, b) in zip(module.state_dict().items(), other.state_dict().items(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), f"{name}.{k} differs after resume"


def test_existing_run_needs_resume(tmp_path, stand_in_classifier, tiny_images):
    """Messages name the Python arguments from Python, and the options in a `stylex` command."""
    from stylex.errors import on_command_line

    _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1).run()
    with pytest.raises(StylexError, match="pass resume=True to continue it or choose another out_dir"):
        _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1).run()
    with on_command_line(), pytest.raises(StylexError, match="pass --resume to continue it or choose another --out"):
        _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1).run()


def test_a_kl_that_blows_up_at_once_points_at_the_logit_scale(tmp_path, stand_in_classifier, tiny_images):
    """Logits x1000 made the classifier term diverge at step 1, and the message said to lower the learning rates
    and --resume, neither of which could help (no checkpoint existed)."""
    tr = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1)
    said = tr._kept(None, ["kl"])
    assert "classifier term (kl) blew up at once" in said and "temperature" in said and "start again" in said
    assert "resume" not in said
    later = tr._kept(200, ["kl"])
    assert "lower the learning rates" in later and "(step 200); then resume=True" in later


def test_divergence_stops_with_step(tmp_path, stand_in_classifier, tiny_images):
    tr = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=3)
    with torch.no_grad():
        tr.G.const.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="step 1"):
        tr.run()


def test_the_trainer_says_when_the_perceptual_loss_is_off(tmp_path, stand_in_classifier, tiny_images, monkeypatch):
    """The note of a classifier whose `features` is unusable is said where the perceptual loss lives, in training."""
    note = "Classifier 'x' has a `features` that does not return ...; the perceptual loss is off for it."
    monkeypatch.setattr(stand_in_classifier, "features_note", note, raising=False)
    with pytest.warns(UserWarning, match="the perceptual loss is off"):
        _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=1)

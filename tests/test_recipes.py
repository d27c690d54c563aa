"""Trainer options: warm-up, w scale, evaluation clock, best checkpoint (issue 3); conditioning; fine-tune."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stylex import losses
from stylex.config import preset
from stylex.errors import StylexError
from stylex.models.stylex import StylEx
from stylex.training.trainer import BEST_INFO, BEST_WEIGHTS, Trainer


def _trainer(tmp_path, classifier, images, **overrides):
    cfg = preset("tiny", **overrides)
    return Trainer(cfg, classifier, images[:32], images[32:], tmp_path / "run", quiet=True)


def _evals(run_dir):
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval" in r]


def test_adv_start_step_skips_the_discriminator_before_it(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, adv_start_step=3, z_path_every=2)
    t.start(resume=False)
    d0 = {k: v.clone() for k, v in t.D.state_dict().items()}
    for _ in range(3):
        stats = t.train_step()
        t.step += 1
        assert not {"loss_d", "g_adv", "g_adv_z", "r1"} & set(stats), stats
    assert all(torch.equal(d0[k], v) for k, v in t.D.state_dict().items())
    stats = t.train_step()  # step 3: adversarial terms on
    assert {"loss_d", "g_adv"} <= set(stats)
    assert any(not torch.equal(d0[k], v) for k, v in t.D.state_dict().items())


def test_w_scale_match_mapping_sets_e_output_rms_to_mapping_rms(tmp_path, stand_in_classifier, tiny_images):
    plain = _trainer(tmp_path, stand_in_classifier, tiny_images)
    assert not hasattr(plain.E, "w_rms")  # default: raw E(x), checkpoints as before
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, w_scale="match_mapping")
    with torch.no_grad():
        mapping_rms = t.G.mapping(torch.randn(512, t.config.model.z_dim)).square().mean(dim=1).sqrt().mean()
        w = t.E(tiny_images[:8])
        w_plain = plain.E(tiny_images[:8])
    target = float(t.E.w_rms)
    assert abs(target - float(mapping_rms)) < 0.05 * float(mapping_rms)
    rms = w.square().mean(dim=1).sqrt()  # [8] per-sample RMS
    assert torch.allclose(rms, torch.full_like(rms, target), rtol=1e-4)
    assert not torch.allclose(w_plain.square().mean(dim=1).sqrt(), rms, rtol=0.05)
    t.start(resume=False)
    t.train_step()  # the running estimate moves and reaches the EMA encoder too
    assert float(t.E_ema.w_rms) == float(t.E.w_rms)


def test_keep_best_writes_loadable_ema_weights(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, eval_every=2, keep_best="identity")
    t.run()
    run = tmp_path / "run"
    info = json.loads((run / BEST_INFO).read_text())
    assert info["step"] in (2, 4) and "identity" in info["figures"]
    evals = _evals(run)
    assert info["figures"]["identity"] == max(r["eval"]["stylex"]["identity"] for r in evals)
    model = StylEx.load(run, weights=BEST_WEIGHTS)
    x = tiny_images[32:36]
    assert model.reconstruct(x, stand_in_classifier(x)).shape == x.shape
    assert not list(run.glob("*.tmp"))


def test_keep_best_by_another_figure_after_a_resume_starts_afresh(tmp_path, stand_in_classifier, tiny_images):
    """Resuming with another keep_best compared the new figure with the old best's value of it, and kept best.json
    of the old criterion; the first evaluation after the resume now keeps a best by the new one."""
    _trainer(tmp_path, stand_in_classifier, tiny_images, eval_every=2, keep_best="identity").run()
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, eval_every=2, keep_best="consistency", max_steps=6)
    t.run(resume=True)
    info = json.loads((tmp_path / "run" / BEST_INFO).read_text())
    assert info["keep_best"] == "consistency" and info["step"] == 6


def test_eval_every_minutes_evaluates_on_the_clock(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, eval_every_minutes=1e-9)
    t.run()
    assert [r["step"] for r in _evals(tmp_path / "run")] == [1, 2, 3, 4]


def test_cond_rgb_false_keeps_the_logits_out_of_the_torgb_styles(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, cond_rgb=False)
    torch.manual_seed(0)
    w, c = torch.randn(4, t.G.w_dim), torch.randn(4, t.G.c_dim)
    with torch.no_grad():
        a, b = t.G.styles(w, c), t.G.styles(w, c + 3.0)
        on = _trainer(tmp_path, stand_in_classifier, tiny_images).G  # the paper's G: every affine sees c
        on.load_state_dict(t.G.state_dict())
        a_on, b_on = on.styles(w, c), on.styles(w, c + 3.0)
    assert all(torch.equal(x, y) for x, y in zip(a.rgb, b.rgb, strict=True))
    assert not torch.allclose(a.flatten(), b.flatten())  # the conv styles still see c
    assert torch.equal(a.flatten(), a_on.flatten())
    assert not all(torch.allclose(x, y) for x, y in zip(a_on.rgb, b_on.rgb, strict=True))


def test_cond_sparsity_shrinks_the_logit_columns_of_the_conv_affines(tmp_path, stand_in_classifier, tiny_images):
    def after(weight):
        # Adam moves each weight by about lr per step, so a large lr shows the pull within a few steps
        t = _trainer(tmp_path, stand_in_classifier, tiny_images, cond_sparsity=weight, adv_weight=0.0, lr_g=0.05)
        t.start(resume=False)
        stats = [t.train_step() for _ in range(10)]
        return t, float(t.G.cond_group_norm().detach()), stats

    t0, base, stats0 = after(0.0)
    t1, shrunk, stats1 = after(1.0)
    assert "cond_norm" not in stats0[-1] and "cond_norm" in stats1[-1]
    assert shrunk < 0.8 * base, (shrunk, base)
    # the term is the sum over conv style channels of the L2 norm of their weights on the logits
    G = t0.G
    rows = torch.cat([(L.conv.affine.weight[:, G.w_dim :] * L.conv.affine.weight_gain) for L in G.layers])
    assert rows.shape == (G.layout.num_coords, G.c_dim)
    assert torch.allclose(G.cond_group_norm(), rows.norm(dim=1).sum())


def test_cond_sparsity_class_groups_are_an_l1_on_each_logit_weight(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, cond_sparsity=1.0, cond_sparsity_groups="class",
                 adv_weight=0.0, lr_g=0.05)  # fmt: skip
    G = t.G
    rows = torch.cat([(L.conv.affine.weight[:, G.w_dim :] * L.conv.affine.weight_gain) for L in G.layers])
    assert torch.allclose(G.cond_group_norm("class"), rows.abs().sum())
    assert G.cond_group_norm("class") > G.cond_group_norm("channel")  # c_dim > 1: L1 exceeds the row norms
    before = G.cond_group_norm("class").item()
    t.start(resume=False)
    for _ in range(10):
        t.train_step()
    assert G.cond_group_norm("class").item() < 0.8 * before
    with pytest.raises(StylexError, match="cond_sparsity_groups must be one of channel, class"):
        preset("tiny", cond_sparsity_groups="rows")
    with pytest.raises(ValueError, match="groups"):
        G.cond_group_norm("rows")


def test_swap_weight_teaches_g_to_draw_the_class_of_the_logits_it_sees(tmp_path, stand_in_classifier, tiny_images):
    class Sharp(type(stand_in_classifier)):  # decides on left vs right brightness, with confident logits
        def forward(self, x):
            d = (x[..., : x.shape[-1] // 2].mean((1, 2, 3)) - x[..., x.shape[-1] // 2 :].mean((1, 2, 3))) * 40
            return torch.stack([d, -d], dim=1)

    steps = 15

    def swap_kl(weight):
        torch.manual_seed(0)
        t = _trainer(tmp_path / str(weight), Sharp(), tiny_images, swap_weight=weight, lr_g=0.01, adv_weight=0.0)
        t.start(resume=False)
        stats = [t.train_step() for _ in range(steps)]
        with torch.no_grad():  # the swap KL of the trained G on all images, fixed noise
            x = tiny_images
            c = t.classify(x)
            c_swap = torch.roll(c, 1, dims=0)
            x_swap = t.G(t.E(x), c_swap, t.G.make_noise(len(x), torch.Generator().manual_seed(1)))
            return stats, float(losses.classifier_kl(c_swap, t.classify(x_swap)))

    stats, with_swap = swap_kl(1.0)
    assert all("swap" in st and st["swap"] >= 0 for st in stats)
    _, without = swap_kl(0.0)
    assert with_swap < 0.7 * without, (with_swap, without)
    off = _trainer(tmp_path / "off", stand_in_classifier, tiny_images)
    off.start(resume=False)
    assert "swap" not in off.train_step()
    with pytest.raises(StylexError, match="swap_weight needs a conditional model"):
        preset("tiny", swap_weight=1.0, conditional=False)
    with pytest.raises(StylexError, match="swap_weight must be a finite number >= 0"):
        preset("tiny", swap_weight=-1.0)


def test_init_from_starts_a_new_run_from_another_runs_networks(tmp_path, stand_in_classifier, tiny_images):
    src = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=2, max_minutes=0)
    src.run()
    cfg = preset("tiny", max_steps=1, max_minutes=0, cond_sparsity=1.0)
    t = Trainer(cfg, stand_in_classifier, tiny_images[:32], tiny_images[32:], tmp_path / "tuned", quiet=True)
    t.start(resume=False)
    t.init_weights(tmp_path / "run")
    for name, module in t.modules().items():
        ref = src.modules()[name].state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in module.state_dict().items()), name
    assert t.step == 0
    t2 = Trainer(cfg, stand_in_classifier, tiny_images[:32], tiny_images[32:], tmp_path / "tuned2", quiet=True)
    t2.run(init_from=tmp_path / "run")
    saved = json.loads((tmp_path / "tuned2" / "config.json").read_text())
    assert saved["init_from"] == str((tmp_path / "run").resolve())
    assert saved["train"]["cond_sparsity"] == 1.0
    with pytest.raises(StylexError, match="init_from= starts a new run .* drop it to resume=True"):
        Trainer(cfg, stand_in_classifier, tiny_images[:32], tiny_images[32:], tmp_path / "tuned2", quiet=True).run(
            resume=True, init_from=tmp_path / "run"
        )


def test_init_from_an_unconditioned_run_starts_the_class_projection_fresh(tmp_path, stand_in_classifier, tiny_images):
    plain = _trainer(tmp_path / "p", stand_in_classifier, tiny_images, conditional=False, cls_weight=0.0,
                     perceptual_weight=0.0, max_steps=2, max_minutes=0)  # fmt: skip
    plain.run()
    t = _trainer(tmp_path / "c", stand_in_classifier, tiny_images, swap_weight=1.0, max_steps=1, max_minutes=0)
    t.start(resume=False)
    embed = {k: v.clone() for k, v in t.D.state_dict().items() if k.startswith("embed.")}
    assert embed, "a conditional D has a class projection"
    t.init_weights(tmp_path / "p" / "run")
    for name, module in t.modules().items():
        ref = plain.modules()[name].state_dict()
        for k, v in module.state_dict().items():
            assert torch.equal(v, embed[k] if k in embed and name == "D" else ref[k]), (name, k)
    stats = t.train_step()  # and it trains, with the logits G now sees
    assert "swap" in stats and all(math.isfinite(v) for v in stats.values())
    cond = _trainer(tmp_path / "c2", stand_in_classifier, tiny_images, max_steps=1, max_minutes=0)
    cond.run()
    back = _trainer(tmp_path / "p2", stand_in_classifier, tiny_images, conditional=False, cls_weight=0.0)
    back.start(resume=False)
    with pytest.raises(StylexError, match="do not fit"):  # the other way round is still refused
        back.init_weights(tmp_path / "c2" / "run")
    refused = _trainer(tmp_path / "p3", stand_in_classifier, tiny_images, conditional=False, cls_weight=0.0)
    with pytest.raises(StylexError, match="do not fit"):
        refused.run(init_from=tmp_path / "c2" / "run")
    assert not (tmp_path / "p3" / "run" / "config.json").exists(), "a refused --init-from writes nothing"


def test_freeze_g_leaves_the_named_generator_parts_as_they_were(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=3, max_minutes=0, freeze_g="to_rgbs")
    with torch.no_grad():  # an average that differs from the raw weights, as a fine-tune (--init-from) loads it
        for n, p in t.G_ema.named_parameters():
            if n.startswith("to_rgbs."):
                p.add_(0.5)
    before = {n: p.detach().clone() for n, p in t.G.named_parameters()}
    before_ema = {n: p.detach().clone() for n, p in t.G_ema.named_parameters()}
    t.run()
    after, after_ema = dict(t.G.named_parameters()), dict(t.G_ema.named_parameters())
    frozen = [n for n in before if n.startswith("to_rgbs.")]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(torch.equal(before_ema[n], after_ema[n]) for n in frozen), "their average stays as it started"
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("layers."))
    with pytest.raises(StylexError, match="names no parameter of G; its parts are"):
        _trainer(tmp_path, stand_in_classifier, tiny_images, freeze_g="to_rgb")


def test_path_lengths_of_a_linear_generator_are_the_norm_of_a_y():
    """G(w) = w A: J^T y = A y, so |J^T y| is |A y| for the noise y ~ N(0, I) / R that the function draws."""
    torch.manual_seed(3)
    A = torch.randn(5, 3 * 4 * 4, requires_grad=True)
    w = torch.randn(6, 5, requires_grad=True)
    images = (w @ A).view(6, 3, 4, 4)
    torch.manual_seed(0)
    lengths = losses.path_lengths(images, w)
    torch.manual_seed(0)
    y = torch.randn(6, 3, 4, 4) / 4
    assert torch.allclose(lengths, (y.flatten(1) @ A.T).norm(dim=1).detach(), rtol=1e-5)
    assert lengths.requires_grad  # differentiable, so the penalty trains G


def _relative_penalty(t, w, c, noise, draws=32):
    """E over noise draws y and images of (|J_w^T y| - mean)^2 / mean^2: smallest when every J_w is the same
    isometry up to scale, StyleGAN2's aim."""
    torch.manual_seed(5)
    lengths = []
    for _ in range(draws):
        w_ = w.clone().requires_grad_(True)
        lengths.append(losses.path_lengths(t.G(w_, c, noise), w_).detach())
    lengths = torch.stack(lengths)
    return float((lengths - lengths.mean()).square().mean() / lengths.mean().square())


def test_path_length_regularisation_evens_out_how_far_a_step_in_w_moves_the_image(
    tmp_path, stand_in_classifier, tiny_images
):
    x = tiny_images[:16]

    def trained(weight):  # the path-length term alone trains G (the other losses off)
        torch.manual_seed(0)
        t = _trainer(tmp_path / str(weight), stand_in_classifier, tiny_images, pl_weight=weight, pl_interval=1,
                     lr_g=0.003, adv_weight=0.0, l1_weight=0.0, perceptual_weight=0.0, cls_weight=0.0,
                     w_rec_weight=0.0)  # fmt: skip
        t.start(resume=False)
        with torch.no_grad():
            w, c = t.E(x), t.classify(x)
        noise = t.G.make_noise(len(x), torch.Generator().manual_seed(1))
        before = _relative_penalty(t, w, c, noise)
        stats = [t.train_step() for _ in range(30)]
        return t, stats, before, _relative_penalty(t, w, c, noise)

    t, stats, before, after = trained(10.0)
    assert all("pl" in st and math.isfinite(st["pl"]) for st in stats) and stats[-1]["pl_mean"] > 0
    assert after < 0.8 * before, (after, before)
    _, stats0, before0, after0 = trained(0.0)
    assert "pl" not in stats0[-1] and after0 == pytest.approx(before0)
    t.save_checkpoint()  # the running mean survives --resume
    again = Trainer(t.config, stand_in_classifier, tiny_images[:32], tiny_images[32:], t.out_dir, quiet=True)
    again.start(resume=True)
    assert float(again.pl_mean) == pytest.approx(float(t.pl_mean))
    for bad in (dict(pl_interval=0), dict(pl_decay=0.0), dict(pl_weight=-1.0)):
        with pytest.raises(StylexError, match="pl_"):
            preset("tiny", **bad)

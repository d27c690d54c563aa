"""Trainer options for the recipe comparison (issue 3): warm-up, w scale, evaluation clock, best checkpoint."""

from __future__ import annotations

import json

import torch

from stylex.config import preset
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


def test_eval_every_minutes_evaluates_on_the_clock(tmp_path, stand_in_classifier, tiny_images):
    t = _trainer(tmp_path, stand_in_classifier, tiny_images, eval_every_minutes=1e-9)
    t.run()
    assert [r["step"] for r in _evals(tmp_path / "run")] == [1, 2, 3, 4]

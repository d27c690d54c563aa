"""Ground truth on synthetic shapes: true importance, the factor oracle, attribute readings and scores, the
baselines (Wu et al., random, an unconditioned model) and `stylex evaluate`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_tiny_run, run_cli
from stylex.attfind.baselines import baseline_attributes, run_baseline, typical_difference
from stylex.attfind.effects import Effects
from stylex.attfind.result import AttFindResult, Attribute, ClassAttributes
from stylex.data import FACTOR_NAMES, render_scene, sample_factors, to_tensor
from stylex.metrics.evaluate import format_metrics
from stylex.metrics.groundtruth import (
    AttributeReading,
    TrueImportance,
    best_reach,
    factor_reach,
    normalised_changes,
    reach_dominant_counts,
    read_attributes,
    score_explanation,
    spearman,
    true_importance,
)
from stylex.metrics.oracle import CHANGE_SCALE, factor_change, gaussian_blur, oracle_errors, read_factors
from stylex.models.stylespace import StyleLayout, StyleVector
from stylex.models.stylex import StylEx


def _render(factors: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    n = len(factors["shape"])
    return np.stack([render_scene({k: v[i] for k, v in factors.items()}, resolution) for i in range(n)])


# ------------------------------------------------------------------------------------------------ true importance
class BrightBackground(nn.Module):
    """Hand-written classifier: class 1 iff the background is bright (median HSV value of the border > 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = ((x + 1) / 2).amax(dim=1)  # [N, R, R] HSV value
        border = torch.cat([v[:, 0], v[:, -1], v[:, 1:-1, 0], v[:, 1:-1, -1]], dim=1)
        logit = 40 * (border.median(dim=1).values - 0.5)
        return torch.stack([-logit, logit], dim=1)


class CircleOrRed(nn.Module):
    """Factor-reading classifier: the rule `shape==circle or obj_hue<0.25`, applied to the oracle's reading."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = read_factors(x)
        label = torch.as_tensor((f["shape"] == 0) | (f["obj_hue"] < 0.25), dtype=torch.float32)
        logit = 10 * (label - 0.5)
        return torch.stack([-logit, logit], dim=1)


def test_true_importance_finds_the_factor_a_pixel_classifier_reads():
    imp = true_importance(BrightBackground(), resolution=16, num_scenes=48, num_values=2, seed=0)
    flips = dict(zip(imp.factors, imp.flip_rate, strict=True))
    assert imp.used() == ["bg_brightness"] and imp.ranking()[0] == "bg_brightness"
    assert flips["bg_brightness"] > 0.3  # a redraw crosses 0.5 half the time
    assert max(v for f, v in flips.items() if f != "bg_brightness") < 0.05


def test_true_importance_finds_both_factors_of_a_two_factor_rule():
    imp = true_importance(CircleOrRed(), resolution=16, num_scenes=32, num_values=2, seed=1)
    assert set(imp.used()) == {"shape", "obj_hue"} and set(imp.ranking()[:2]) == {"shape", "obj_hue"}
    assert all(imp.flip_rate[imp.factors.index(f)] == 0 for f in FACTOR_NAMES if f not in ("shape", "obj_hue"))
    d = imp.to_dict()
    assert d["used"] == imp.used() and set(d["flip_rate"]) == set(FACTOR_NAMES)


# ------------------------------------------------------------------------------------------------ oracle
@pytest.mark.parametrize(
    "resolution, sigma, shape_acc, tol",
    [(32, 0.0, 1.0, 0.005), (32, 1.0, 0.95, 0.015), (16, 0.0, 0.95, 0.01), (16, 1.0, 0.85, 0.03)],
)
def test_oracle_reads_fresh_renders(resolution, sigma, shape_acc, tol):
    factors = sample_factors(60, seed=11)
    images = _render(factors, resolution)
    if sigma:
        images = np.clip(np.round(gaussian_blur(images.astype(np.float64), sigma)), 0, 255).astype(np.uint8)
    err = oracle_errors(factors, read_factors(images))
    assert err["shape_accuracy"] >= shape_acc, err
    for name in ("obj_hue", "pos_x", "pos_y", "bg_hue", "bg_brightness"):
        assert err[f"{name}_mae"] < tol, (name, err)
    assert err["obj_size_mae"] < 2 * tol, err
    # the model convention reads the same as the file convention
    again = read_factors(to_tensor(images[:8]))
    assert all(np.allclose(again[f], read_factors(images[:8])[f]) for f in FACTOR_NAMES)


def test_oracle_tells_a_size_change_from_a_shape_change_on_blurred_renders():
    """The precision metric rests on this: a pure size change reads as size, a pure shape change as shape, also
    when the shapes are as soft as a 2 px blur makes them."""
    n = 40
    f = sample_factors(n, seed=7)
    bigger = dict(f, obj_size=np.clip(np.asarray(f["obj_size"]) + 0.06, 0.25, 0.5))
    reshaped = dict(f, shape=(np.asarray(f["shape"]) + 1) % 3)

    def read(factors):
        images = gaussian_blur(_render(factors, 32).astype(np.float64), 2.0)
        return read_factors(np.clip(np.round(images), 0, 255).astype(np.uint8))

    base = read(f)
    for after, factor in ((read(bigger), "obj_size"), (read(reshaped), "shape")):
        change = factor_change(base, after)
        norm = np.stack([change[g] / CHANGE_SCALE[g] for g in FACTOR_NAMES], axis=1)  # [n, 7]
        dominant = np.asarray(FACTOR_NAMES)[norm.argmax(axis=1)]
        assert (dominant == factor).mean() >= 0.9, (
            factor,
            dict(zip(*np.unique(dominant, return_counts=True), strict=True)),
        )


def _shaded(factors: dict[str, np.ndarray], seed: int, amplitude: float = 0.12) -> np.ndarray:
    """Renders whose background is shaded, as a generator's often is: the plain background colour plus a
    bilinear ramp between random corner offsets (up to `amplitude` per channel), the object drawn over it
    unchanged, then blurred by 1 px. uint8 [N, 32, 32, 3]."""
    rng = np.random.default_rng(seed)
    n = len(factors["shape"])
    scenes = _render(factors, 32).astype(np.float64) / 255
    red = dict(factors, obj_hue=np.zeros(n), bg_brightness=np.zeros(n))
    coverage = _render(red, 32)[..., :1].astype(np.float64) / 255  # [N, R, R, 1]
    t = (np.arange(32) + 0.5) / 32
    x, y = t[None, None, :, None], t[None, :, None, None]
    c = rng.uniform(-amplitude, amplitude, size=(4, n, 1, 1, 3))  # corner offsets
    ramp = (1 - x) * (1 - y) * c[0] + x * (1 - y) * c[1] + (1 - x) * y * c[2] + x * y * c[3]  # [N, R, R, 3]
    images = np.clip(scenes + (1 - coverage) * ramp, 0, 1)
    return np.clip(np.round(gaussian_blur(images * 255, 1.0)), 0, 255).astype(np.uint8)


def test_oracle_reads_the_object_alike_on_differently_shaded_backgrounds():
    """A generator's background is rarely plain, and an edit of its colour often changes its shading too. Redrawing
    only the shading must not read as a change of the object (it did when the background was one border colour:
    the shading leaked into the object's coverage, and blobs flipped shape)."""
    f = sample_factors(40, seed=5)
    a, b = read_factors(_shaded(f, seed=1)), read_factors(_shaded(f, seed=2))
    assert oracle_errors(f, a)["shape_accuracy"] >= 0.9, oracle_errors(f, a)
    change = factor_change(a, b)
    for name in ("shape", "obj_size", "pos_x", "pos_y", "obj_hue"):
        assert change[name].mean() / CHANGE_SCALE[name] < 0.05, (name, change[name].mean() / CHANGE_SCALE[name])


# ------------------------------------------------------------------------------------------------ scores
def _importance(flip: dict[str, float], prob: dict[str, float] | None = None) -> TrueImportance:
    prob = prob or flip
    return TrueImportance(
        tuple(FACTOR_NAMES),
        np.array([flip.get(f, 0.0) for f in FACTOR_NAMES]),
        np.array([prob.get(f, 0.0) for f in FACTOR_NAMES]),
        num_scenes=1,
        num_values=1,
    )


def _reading(class_index: int, rank: int, **changes: float) -> AttributeReading:
    return AttributeReading(class_index, str(class_index), rank, {f: changes.get(f, 0.0) for f in FACTOR_NAMES})


def test_purity_precision_coverage_on_a_hand_made_table():
    importance = _importance({"shape": 0.5, "bg_hue": 0.2})  # truly used: shape, bg_hue
    readings = [
        _reading(0, 1, shape=1.0),  # one factor: purity 1
        _reading(0, 2, obj_hue=0.6, pos_x=0.2),  # dominant obj_hue (not used), purity 0.75
        _reading(1, 1, bg_hue=0.6, shape=0.2),  # dominant bg_hue, purity 0.75
        _reading(1, 2, **{f: 0.05 for f in FACTOR_NAMES}),  # changes nothing visibly: no dominant factor
    ]
    assert readings[0].dominant == "shape" and readings[0].purity == 1.0
    assert readings[1].dominant == "obj_hue" and readings[1].purity == pytest.approx(0.75)
    assert readings[3].dominant is None and readings[3].purity == 0.0

    k1 = score_explanation(readings, importance, top_k=1)
    assert (k1.num_attributes, k1.precision, k1.coverage) == (2, 1.0, 1.0)
    assert k1.mean_purity == pytest.approx(0.875)
    k2 = score_explanation(readings, importance, top_k=2)
    assert (k2.num_attributes, k2.precision, k2.coverage) == (4, 0.5, 1.0)
    assert k2.mean_purity == pytest.approx((1 + 0.75 + 0.75 + 0) / 4)
    assert k2.first_rank["shape"] == 1 and k2.first_rank["obj_hue"] == 2 and k2.first_rank["pos_y"] is None
    assert k2.dominant_counts["none"] == 1 and k2.used == ["shape", "bg_hue"]
    assert k2.factor_importance["shape"] == pytest.approx(1.25)  # 1 from the first, 0.25 of the third

    only_shape = score_explanation(readings[:1], importance, top_k=1)
    assert only_shape.coverage == 0.5 and only_shape.precision == 1.0
    nothing_used = score_explanation(readings, _importance({}), top_k=2)
    assert nothing_used.coverage is None and nothing_used.precision == 0.0


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 35, 90]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.5 * 3**0.5)  # tied ranks share their mean
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# ------------------------------------------------------------------------------------------------ reading attributes
class FactorGenerator(nn.Module):
    """A toy generator whose 9 styles are the scene: styles 0-6 are the factors (shape as a continuous code),
    style 7 moves bg_hue only (a clean attribute), style 8 moves every factor a little (a random mix)."""

    resolution = 16
    layout = StyleLayout(conv_dims=(9,), rgb_dims=(1,), conv_names=("toy",))
    MIX = np.array([0.6, 0.2, 0.1, 0.2, 0.2, 0.3, 0.3])

    def synthesis(self, s: StyleVector, noise=None) -> torch.Tensor:
        flat = s.flatten().double().cpu().numpy()  # [N, 9]
        images = []
        for row in flat:
            f = dict(zip(FACTOR_NAMES, row[:7], strict=True))
            f["bg_hue"] = f["bg_hue"] + row[7]
            f = {k: v + self.MIX[i] * row[8] for i, (k, v) in enumerate(f.items())}
            f["shape"] = int(np.clip(np.floor(f["shape"]), 0, 2))
            f["obj_size"] = float(np.clip(f["obj_size"], 0.25, 0.5))
            images.append(render_scene(f, self.resolution))
        return to_tensor(np.stack(images))


def _factor_styles(n: int, seed: int) -> StyleVector:
    """Styles of `FactorGenerator` for n random scenes, with random values of the two extra styles."""
    f = sample_factors(n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    cols = [torch.as_tensor(f[name], dtype=torch.float32) + (0.5 if name == "shape" else 0.0) for name in FACTOR_NAMES]
    s_flat = torch.stack(cols + [torch.rand(n, generator=g) * 0.3, torch.rand(n, generator=g)], dim=1)  # [n, 9]
    return StyleVector([s_flat], [torch.zeros(n, 1)], FactorGenerator.layout)


def test_read_attributes_finds_the_one_factor_a_clean_edit_changes():
    n = 12
    s = _factor_styles(n, seed=3)
    s_flat = s.flatten()

    def attribute(rank: int, j: int) -> Attribute:
        return Attribute(rank, j, 0, "toy", j, "max", 0.0, 0.0)

    result = AttFindResult([ClassAttributes(0, "a", n, [attribute(1, 7), attribute(2, 8)])])
    readings = read_attributes(
        FactorGenerator(), s, [], result, s_flat.min(0).values, s_flat.max(0).values, 1.0,
        predicted=torch.ones(n, dtype=torch.long), top_k=2, max_images=n,
    )  # fmt: skip
    clean, mixed = readings
    assert clean.dominant == "bg_hue" and clean.purity > 0.95 and clean.num_images == n
    assert mixed.purity < 0.6 and sum(v > 0.1 for v in mixed.changes.values()) >= 3


def test_factor_reach_names_the_coordinate_that_moves_each_factor():
    n = 12
    s = _factor_styles(n, seed=4)
    calls = []
    edits = factor_reach(
        FactorGenerator(), s, [], BrightBackground(), batch_size=4 * n, progress=lambda d, t: calls.append((d, t))
    )
    assert len(edits) == 2 * 9 and calls[-1] == (18, 18) and len(calls) == 5  # 4 edits per synthesis call
    best = best_reach(edits, "conv", top=1)
    assert best["obj_size"][0]["channel"] == FACTOR_NAMES.index("obj_size")
    assert best["pos_x"][0]["channel"] == FACTOR_NAMES.index("pos_x")
    assert best["bg_hue"][0]["channel"] in (FACTOR_NAMES.index("bg_hue"), 7)  # the factor itself, or the clean edit
    clean = [e for e in edits if e["channel"] == 7]
    assert all(max(e["changes"], key=e["changes"].get) == "bg_hue" for e in clean)
    # only the background's brightness moves this classifier's decisions
    flips = max(edits, key=lambda e: e["decision_flips"])
    assert flips["channel"] == FACTOR_NAMES.index("bg_brightness") and flips["decision_flips"] > 0.2
    assert all(e["decision_flips"] == 0 for e in edits if e["channel"] in (0, 2, 3, 4))
    assert best_reach(edits, "rgb")["bg_hue"] == []  # toRGB styles are edited only with include_rgb
    counts = reach_dominant_counts(edits, "conv")
    assert sum(counts.values()) == len(edits) and counts["bg_hue"] >= 2  # its own style and the clean edit, both ways
    assert counts["obj_size"] >= 1 and reach_dominant_counts(edits, "rgb") == dict.fromkeys(counts, 0)
    mean = s.flatten().mean(dim=0)  # targets halfway in: smaller changes than to the extremes
    near = factor_reach(FactorGenerator(), s, [], s_min=mean, s_max=mean)
    size = FACTOR_NAMES.index("obj_size")
    assert (
        max(e["changes"]["obj_size"] for e in near if e["channel"] == size) < best["obj_size"][0]["changes"]["obj_size"]
    )


# ------------------------------------------------------------------------------------------------ baselines
def test_wu_detector_ranks_a_planted_coordinate_first():
    g = torch.Generator().manual_seed(0)
    s_flat = torch.randn(300, 40, generator=g)
    planted = 17
    p1 = torch.sigmoid(4 * s_flat[:, planted])
    probs = torch.stack([1 - p1, p1], dim=1)
    layout = StyleLayout(conv_dims=(8,) * 5, rgb_dims=(1,) * 3, conv_names=tuple(f"l{i}" for i in range(5)))
    result = baseline_attributes("wu", s_flat, probs, layout, top_k=3, class_names=["no", "yes"])
    yes, no = result.for_class("yes").attributes[0], result.for_class("no").attributes[0]
    assert yes.flat_index == planted and yes.direction == "max" and (yes.layer, yes.channel) == (2, 1)
    assert no.flat_index == planted and no.direction == "min"
    score, direction = typical_difference(s_flat, probs, 1)
    assert int(score.argmax()) == planted and int(direction[planted]) == 1
    assert result.settings["method"] == "wu"

    random_a = baseline_attributes("random", s_flat, probs, layout, top_k=5, seed=1)
    random_b = baseline_attributes("random", s_flat, probs, layout, top_k=5, seed=1)
    assert random_a.to_dict() == random_b.to_dict()
    coords = [a.flat_index for a in random_a.classes[0].attributes]
    assert len(set(coords)) == 5


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A tiny StylEx run and an unconditioned one on the same 16 px shapes and classifier."""
    root = make_tiny_run(tmp_path_factory.mktemp("groundtruth"), num_images=32, steps=2)
    run_cli("train", "--data", root / "data", "--classifier", root / "clf", "--out", root / "plain", "--preset",
            "tiny", "--max-steps", 2, "--set", "conditional=false", "--set", "cls_weight=0", "--set",
            "perceptual_weight=0", "--quiet")  # fmt: skip
    return root


def test_unconditioned_model_ignores_the_classifier(tiny_runs):
    from stylex.config import TrainConfig, preset
    from stylex.models.stylex import StylEx, build_networks

    model = StylEx.load(tiny_runs / "plain")
    assert model.config.conditional is False and model.num_classes == 2
    assert build_networks(model.config, 2)[2].c_dim == 0, "D is unconditional"
    older = {k: v for k, v in preset("tiny").to_dict().items() if k != "conditional"}
    assert TrainConfig.from_dict(older).conditional is True, "runs from before the option stay conditional"
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    a, b = model.styles(x, torch.randn(3, 2)), model.styles(x, torch.randn(3, 2))
    assert torch.equal(a.flatten(), b.flatten())
    conditioned, b_c = StylEx.load(tiny_runs / "run"), torch.ones(3, 2)
    assert not torch.equal(conditioned.styles(x, torch.zeros(3, 2)).flatten(), conditioned.styles(x, b_c).flatten())


def test_evaluate_writes_metrics_for_attfind_and_baselines(tiny_runs, monkeypatch):
    from stylex.metrics import evaluate as evaluate_module

    bars = []

    class Recorder(evaluate_module._Stages):  # the progress bar's stages, as named; its total must match them
        def __init__(self, total, quiet):
            super().__init__(total, quiet)
            self.total, self.quiet, self.names, self.closed = total, quiet, [], False
            bars.append(self)

        def stage(self, name):
            self.names.append(name)
            super().stage(name)

        def close(self):
            self.closed = True
            super().close()

    monkeypatch.setattr(evaluate_module, "_Stages", Recorder)
    run_dir = tiny_runs / "run"
    run_cli("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 2, "--fast", 4, "--no-render", "--quiet")
    result = run_cli("evaluate", "--model", run_dir, "--attributes", run_dir / "attfind", "--out", tiny_runs / "ev",
                     "--k", "1,2", "--num-scenes", 8, "--num-values", 1, "--read-images", 4, "--reach", 3)  # fmt: skip
    assert "precision" in result.output and "sufficiency@K" in result.output and "reach (" in result.output
    assert "warning" not in result.output
    more = run_cli("evaluate", "--model", run_dir, "--attributes", run_dir / "attfind", "--out", tiny_runs / "ev4",
                   "--k", "2,4", "--num-scenes", 8, "--num-values", 1, "--read-images", 4)  # fmt: skip
    assert "warning: " in more.output and "so the figures @4 use those 2" in more.output
    run_cli("evaluate", "--model", run_dir, "--attributes", run_dir / "attfind", "--out", tiny_runs / "evq", "--k",
            "2", "--num-scenes", 4, "--num-values", 1, "--read-images", 2, "--quiet")  # fmt: skip
    with_reach, without, _ = bars
    assert [b.total for b in bars] == [len(b.names) for b in bars] == [8, 7, 6] and all(b.closed for b in bars)
    assert with_reach.names[-2] == "factor reach on 3 images" and without.names[:2] == [
        "encoding 6 images",
        "sufficiency@2",
    ]
    assert [b.quiet for b in bars] == [False, False, True] and (tiny_runs / "evq" / "metrics.json").is_file()
    metrics = json.loads((tiny_runs / "ev" / "metrics.json").read_text())
    assert metrics["method"] == "attfind" and metrics["num_images"] == 6 and metrics["ks"] == [1, 2]
    assert set(metrics["sufficiency"]) == {"1", "2"} and 0 <= metrics["reconstruction"]["stylex"]["consistency"] <= 1
    gt = metrics["groundtruth"]
    assert set(gt["true_importance"]["flip_rate"]) == set(FACTOR_NAMES) and set(gt["scores"]) == {"1", "2"}
    assert all(r["rank"] <= 2 for r in gt["attributes"]) and gt["oracle_on_inputs"]["shape_accuracy"] > 0.8
    reach = gt["reach"]
    assert reach["num_images"] == 3 and set(reach["best_conv"]) == set(FACTOR_NAMES)
    layout = StylEx.load(run_dir).G.layout
    assert reach["num_edits"] == 2 * layout.num_coords  # every conv coordinate, both directions
    for f, best in reach["best_conv"].items():
        assert best["layer_name"] in layout.conv_names and best["change"] == best["changes"][f] >= 0
        assert 0 <= best["decision_flips"] <= 1 and best["mean_abs_logit_change"] >= 0
    assert sum(reach["dominant_counts"].values()) == reach["num_edits"]
    # the summary warns about a truly used factor that no coordinate has as its dominant factor, and only then
    gt["true_importance"]["used"] = ["obj_size"]
    reach["dominant_counts"]["obj_size"] = 0
    assert "no single conv coordinate has obj_size as its dominant factor" in format_metrics(metrics)
    reach["dominant_counts"]["obj_size"] = 1
    assert "warning" not in format_metrics(metrics)
    # the true importance is listed in the order of the rates it shows (it was ordered by another figure)
    line = next(ln for ln in format_metrics(metrics).splitlines() if ln.startswith("true importance"))
    shown = [float(part.split()[-1]) for part in line.split(": ", 1)[1].split("; used")[0].split(", ")]
    assert shown == sorted(shown, reverse=True)
    assert "coverage: share of the used factors" in format_metrics(metrics), "the columns are explained"
    drawn = round(100 * gt["reconstruction_factors"]["shape_accuracy"])
    assert f"the oracle reads shape right on {drawn}% of the reconstructions" in format_metrics(metrics)

    plain = tiny_runs / "plain"
    wu = run_baseline(plain, "wu", num_images=6, top_k=2, out=plain / "wu")
    assert wu.settings["method"] == "wu" and (plain / "wu" / "attributes.json").is_file()
    run_baseline(run_dir, "random", num_images=6, top_k=2, out=run_dir / "random")
    for folder, method in ((plain / "wu", "wu"), (run_dir / "random", "random")):
        model = plain if method == "wu" else run_dir
        run_cli("evaluate", "--model", model, "--attributes", folder, "--out", folder / "ev", "--k", "2",
                "--num-scenes", 4, "--num-values", 1, "--read-images", 2)  # fmt: skip
        assert json.loads((folder / "ev" / "metrics.json").read_text())["method"] == method

    wrong = run_cli("evaluate", "--model", run_dir, "--attributes", tiny_runs / "clf", "--out", tiny_runs / "x",
                    ok=False)  # fmt: skip
    assert wrong.exit_code == 1 and wrong.output.startswith("error: ") and "attfind" in wrong.output


def test_include_rgb_travels_from_attfind_to_evaluate_explain_and_report(tiny_runs):
    """`--include-rgb`: attributes.json records it; evaluate (and its reach), explain and report then work in
    the same StyleSpace (toRGB styles after the conv styles), and the Wu baseline can rank toRGB styles too."""
    run_dir, out = tiny_runs / "run", tiny_runs / "run" / "attfind-rgb"
    run_cli("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 3, "--include-rgb", "--out", out, "--quiet",
            "--frames", 2)  # fmt: skip
    info = json.loads((out / "attributes.json").read_text())
    layout = StylEx.load(run_dir).G.layout
    S = layout.with_rgb(True).num_coords
    assert info["settings"]["include_rgb"] is True and S > layout.num_coords
    assert Effects.load(out / "effects.safetensors").num_coords == S
    for c in info["classes"]:
        for a in c["attributes"]:
            assert a["layer_name"] == layout.with_rgb(True).names[a["layer"]] and 0 <= a["flat_index"] < S
    run_cli("evaluate", "--model", run_dir, "--attributes", out, "--out", tiny_runs / "ev-rgb", "--k", "2",
            "--num-scenes", 4, "--num-values", 1, "--read-images", 2, "--reach", 2)  # fmt: skip
    reach = json.loads((tiny_runs / "ev-rgb" / "metrics.json").read_text())["groundtruth"]["reach"]
    assert reach["searched"] == "conv+toRGB" and reach["num_edits"] == 2 * S
    index = Effects.load(out / "effects.safetensors").meta["indices"][0]
    run_cli("explain", "--model", run_dir, "--attributes", out, "--index", index, "--out", tiny_runs / "ex-rgb",
            "--quiet")  # fmt: skip
    steps = json.loads((tiny_runs / "ex-rgb" / "explanation.json").read_text())
    assert steps["reused_effects"] is True
    run_cli("report", run_dir, "--attributes", out, "--out", tiny_runs / "report-rgb", "--quiet", "--explanations", 1)
    assert (tiny_runs / "report-rgb" / "index.html").is_file()
    wu = run_baseline(tiny_runs / "plain", "wu", num_images=6, top_k=2, out=tiny_runs / "wu-rgb", include_rgb=True)
    assert wu.settings["include_rgb"] is True


def test_tint_styles_train_and_are_searched_by_default(tiny_runs):
    """A model trained with `model.tint_styles` has tint coordinates after toRGB0's features; AttFind and the
    baselines search the toRGB styles by default for it (`--no-include-rgb` turns that off), and not for others."""
    root = tiny_runs
    run_cli("train", "--data", root / "data", "--classifier", root / "clf", "--out", root / "tint", "--preset",
            "tiny", "--max-steps", 2, "--set", "model.tint_styles=2", "--quiet")  # fmt: skip
    layout = StylEx.load(root / "tint").G.layout
    assert layout.rgb_dims[0] == layout.conv_dims[0] + 2
    run_cli("attfind", "--model", root / "tint", "--num-images", 6, "--top-k", 2, "--no-render", "--quiet")
    info = json.loads((root / "tint" / "attfind" / "attributes.json").read_text())
    assert info["settings"]["include_rgb"] is True
    assert (
        Effects.load(root / "tint" / "attfind" / "effects.safetensors").num_coords == layout.with_rgb(True).num_coords
    )
    run_cli("attfind", "--model", root / "tint", "--num-images", 6, "--top-k", 2, "--no-render", "--quiet",
            "--no-include-rgb", "--out", root / "tint" / "conv-only")  # fmt: skip
    assert json.loads((root / "tint" / "conv-only" / "attributes.json").read_text())["settings"]["include_rgb"] is False
    assert run_baseline(root / "tint", "random", num_images=6, top_k=2, out=root / "tint-random").include_rgb
    assert not run_baseline(root / "run", "random", num_images=6, top_k=2, out=root / "run-random").include_rgb
    import stylex  # the Python API follows the same default, and an explicit value wins

    model, classifier = stylex.load_run(root / "tint")
    x = torch.rand(4, 3, model.resolution, model.resolution) * 2 - 1
    kw = dict(top_k=2, fast=4, max_batch=64, sufficiency=False, progress=False)
    result = stylex.AttFind(model, classifier, **kw).run(x)
    assert result.include_rgb
    assert not stylex.AttFind(model, classifier, include_rgb=False, **kw).run(x).include_rgb
    rgb = layout.with_rgb(True)  # a tint is named as one, and the name survives saving
    j = rgb.offsets()[len(rgb.conv_dims)] + rgb.rgb_dims[0] - 1
    a = Attribute.of(rgb, 1, j, 1, 0.5, 0.1)
    assert a.tint == 1 and a.describe() == f"toRGB0[{rgb.rgb_dims[0] - 1}] (tint 1) -> max"
    assert Attribute.of(rgb, 1, j - 2, 1, 0.5, 0.1).tint is None
    result.classes[0].attributes[0] = a
    assert AttFindResult.from_dict(result.to_dict()).classes[0].attributes[0] == a
    assert "(tint 1)" in result.summary()
    from dataclasses import replace  # a result saved before attributes recorded their tint gets it when bound

    from stylex.attfind.run import bind_results

    result.classes[0].attributes[0] = replace(a, tint=None)
    bind_results(model, result, result.effects, root / "tint", root / "tint")
    assert result.classes[0].attributes[0] == a


def _load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while it runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_recon_importance_measures_the_classifier_through_the_model():
    """benchmarks/recon_importance.py: through a model that gives every image back, the classifier uses what it
    uses on the renders; through one that loses the background's brightness, it uses nothing."""
    from types import SimpleNamespace

    bench = _load_benchmark("recon_importance")

    class Identity:
        G = SimpleNamespace(make_noise=lambda n, generator=None: [torch.zeros(n, 1, 4, 4)])

        def reconstruct(self, x, c, noise):
            assert [m.shape for m in noise] == [(len(x), 1, 4, 4)]  # one noise map per image, the same for all
            return x

    class DarkBackground(Identity):
        def reconstruct(self, x, c, noise):
            return torch.full_like(x, -1.0)

    classifier = BrightBackground()
    kw = dict(resolution=16, num_scenes=24, num_values=2, seed=3)
    renders = true_importance(classifier, **kw)
    same = true_importance(bench.through_model(Identity(), classifier, batch_size=7), **kw)
    assert renders.used() == ["bg_brightness"]
    assert np.allclose(same.flip_rate, renders.flip_rate) and np.allclose(same.prob_change, renders.prob_change)
    dark = true_importance(bench.through_model(DarkBackground(), classifier), **kw)
    assert dark.used() == [] and dark.flip_rate.max() == 0


def test_factor_attfind_control_renders_the_scenes_it_encodes():
    """benchmarks/factor_attfind.py: factors -> coordinates -> render gives back the scenes of the data, and moving
    the background hue's sine coordinate to its maximum changes the background hue alone."""
    control = _load_benchmark("factor_attfind")

    f = sample_factors(6, seed=4)
    coords = control.to_coords(f)
    want = np.stack([render_scene({k: f[k][i] for k in FACTOR_NAMES}, 16) for i in range(6)])
    got = control.render(coords, 16)
    assert torch.allclose(got, to_tensor(want), atol=1 / 127.5)  # one grey level: atan2 rounding of the hues

    j = control.COORDS.index("bg_hue_sin")
    edited = coords.copy()
    edited[:, j] = 1.0
    changes = normalised_changes(read_factors(got), read_factors(control.render(edited, 16)))
    assert max(changes, key=changes.get) == "bg_hue"
    assert changes["bg_hue"] > 0.5 and all(v < 0.1 for k, v in changes.items() if k != "bg_hue")


def test_groundtruth_table_shows_the_shortcut_attributes_resampled_ranks(tmp_path):
    """benchmarks/groundtruth.py: the shortcut's best rank comes with the quartiles of that attribute's rank over
    AttFind's bootstrap resamples, read from its attributes file; a baseline without them shows the rank alone."""
    import json

    bench = _load_benchmark("groundtruth")

    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({"classes": [
        {"resampled_ranks": [[1, 1, 1], [2, 2, 2]]},
        {"resampled_ranks": [[1, 1, 2], [2, 2, 3], [3, 4, 6]]},
    ]}))  # fmt: skip
    metrics = {
        "attributes": str(attributes),
        "groundtruth": {
            "scores": {"10": {"first_rank": {"bg_hue": 3, "shape": None}}},
            "attributes": [
                {"class_index": 0, "rank": 2, "dominant": "obj_size"},
                {"class_index": 1, "rank": 3, "dominant": "bg_hue"},
            ],
        },
    }
    assert bench.shortcut_rank(metrics, "bg_hue") == "3 [3-6]"
    assert bench.shortcut_rank(metrics, "shape") == "-"
    attributes.write_text(json.dumps({"classes": [{}, {}]}))
    assert bench.shortcut_rank(metrics, "bg_hue") == "3"


def test_groundtruth_records_its_commands_and_the_table_says_them(tmp_path, monkeypatch):
    """benchmarks/groundtruth.py: each command line is recorded once in ROOT/runs.json; --table-only takes
    --include-rgb from that record, refuses to guess when it holds both kinds, and the table starts with the
    commands that made the results it shows."""
    bench = _load_benchmark("groundtruth")

    assert bench.recorded_include_rgb(tmp_path) is None
    rgb = ["--root", str(tmp_path), "--steps", "5", "--include-rgb"]
    bench.record_run(tmp_path, rgb, True)
    bench.record_run(tmp_path, rgb, True)  # the same command again: not a new entry
    bench.record_run(tmp_path, [*rgb, "--seeds", "1"], True)
    assert [r["argv"] for r in bench.recorded_runs(tmp_path)] == [rgb, [*rgb, "--seeds", "1"]]
    assert bench.recorded_include_rgb(tmp_path) is True

    cells = [bench.Cell("two-factor", 0, tmp_path / "two-factor" / "seed0")]
    text = bench.table(cells, tmp_path, include_rgb=True)
    assert text.startswith("<!-- Made by")
    assert "benchmarks/groundtruth.py --root " + str(tmp_path) + " --steps 5 --include-rgb\n" in text
    assert "--seeds 1 -->" in text
    assert "No metrics found" in text  # no results yet: the table says where it looked
    assert "<!--" not in bench.table(cells, tmp_path, include_rgb=False)  # those commands did not make conv-only rows

    def table_only(*flags):
        argv = ["groundtruth.py", "--root", str(tmp_path), "--table-only", "--scenarios", "two-factor", *flags]
        monkeypatch.setattr("sys.argv", argv)
        bench.main()
        return (tmp_path / "table.md").read_text()

    assert table_only().startswith("<!-- Made by")  # --include-rgb as recorded
    assert "<!--" not in table_only("--no-include-rgb")

    # a base root's --plain-only run explains nothing: it neither decides --include-rgb nor heads a table, but a
    # root linked to it cites it after its own command
    base = tmp_path / "base"
    bench.record_run(base, ["--root", str(base), "--plain-only"], False, explains=False)
    assert bench.recorded_include_rgb(base) is None and "<!--" not in bench.table(cells, base)
    linked = tmp_path / "linked"
    bench.record_run(linked, ["--root", str(linked), "--link-root", str(base)], False, linked=base)
    head = bench.table(cells, linked).split(" -->")[0].splitlines()
    assert head[1:] == [
        f"     benchmarks/groundtruth.py --root {linked} --link-root {base}",
        f"     benchmarks/groundtruth.py --root {base} --plain-only",
    ]

    bench.record_run(tmp_path, ["--root", str(tmp_path), "--steps", "5"], False)
    with pytest.raises(SystemExit, match="--no-include-rgb"):
        bench.recorded_include_rgb(tmp_path)


def test_groundtruth_refuses_folders_that_are_not_there_and_counts_what_it_averages(tmp_path, monkeypatch, capsys):
    """A mistyped --link-root started every training from scratch (hours), --table-only on a missing root ended in a
    traceback, and a mean over the seeds where a figure exists was labelled with the row's n."""
    bench = _load_benchmark("groundtruth")
    cases = [(["--table-only"], "is not a folder: there is no table"),
             (["--link-root", str(tmp_path / "typo")], "--link-root .*typo is not a folder"),
             (["--link-root", str(tmp_path), "--adopt", str(tmp_path)], "lacks two-factor-seed0.tgz")]  # fmt: skip
    for flags, why in cases:
        monkeypatch.setattr("sys.argv", ["groundtruth.py", "--root", str(tmp_path / "root"), *flags])
        with pytest.raises(SystemExit):
            bench.main()
        err = capsys.readouterr().err
        assert re.search(why, err) and len(err.strip().splitlines()) == 1, err  # one line, no usage block
    assert not (tmp_path / "root").exists()
    assert bench._mean_std([1.0, None, 0.0]) == "0.500 ± 0.707 (n=2)" and bench._mean_std([0.5, 0.5]) == "0.500 ± 0.000"
    (tmp_path / "empty").mkdir()
    assert "nothing under it is evaluated yet" in bench.table(
        [bench.Cell("two-factor", 0, tmp_path)], tmp_path / "empty"
    )


def test_groundtruth_reuses_a_training_only_with_the_same_overrides(tmp_path):
    """benchmarks/groundtruth.py: a finished training is reused only when its marker records the same budget,
    --set overrides included (before, a rerun with another --set reused the old models silently); a marker
    without overrides still matches a command without them."""
    import argparse

    bench = _load_benchmark("groundtruth")
    cell = bench.Cell("two-factor", 0, tmp_path)

    def args(*overrides, stylex_set=()):
        return argparse.Namespace(steps=100, minutes=30.0, set=list(overrides), stylex_set=list(stylex_set),
                                  init_root=None, link_root=None, stylex_from_plain=False)  # fmt: skip

    for kind in ("plain", "stylex"):
        training = bench.Training(cell, kind)
        tinted = args("model.tint_styles=3")
        training.marker.write_text(json.dumps({"budget": training.budget(tinted)}))
        assert training.done(tinted)
        assert not training.done(args())
        assert not training.done(args("model.tint_styles=2"))
        training.marker.write_text(json.dumps({"budget": {"steps": 100}}))  # written before --set was recorded
        assert training.done(args()) and not training.done(tinted)
    stylex = bench.Training(cell, "stylex")
    swap = args(stylex_set=["swap_weight=1.0"])
    stylex.marker.write_text(json.dumps({"budget": stylex.budget(swap)}))
    assert stylex.done(swap) and not stylex.done(args())


def test_groundtruth_adopts_a_run_trained_elsewhere_only_when_it_matches(tiny_runs, tmp_path):
    """benchmarks/groundtruth.py --adopt: a StylEx run from an archive (as gpu_groundtruth.sh writes them) takes a
    cell's place when its config.json matches the command line, with a marker that the benchmark then reuses; a
    run with other settings, another classifier or another start is refused and leaves the cell as it was."""
    import argparse
    import tarfile

    bench = _load_benchmark("groundtruth")
    archives = tmp_path / "gpu"
    archives.mkdir()

    def pack(edit=lambda config: None):
        config = json.loads((tiny_runs / "run" / "config.json").read_text())
        edit(config)
        (tmp_path / "config.json").write_text(json.dumps(config))
        with tarfile.open(archives / "two-factor-seed0.tgz", "w:gz") as tar:
            tar.add(tmp_path / "config.json", arcname="config.json")
            for name in ("weights.safetensors", "stats.jsonl"):
                tar.add(tiny_runs / "run" / name, arcname=name)

    def cell(name, **given):
        root = tmp_path / name
        root.mkdir()
        (root / "clf").symlink_to(tiny_runs / "clf")
        args = dict(adopt=archives, preset="tiny", steps=2, minutes=30.0, set=[], stylex_set=[], init_root=None,
                    link_root=tmp_path, stylex_from_plain=False)  # fmt: skip
        return bench.Cell("two-factor", 0, root), argparse.Namespace(**{**args, **given})

    def refused(c, args, words):
        with pytest.raises(SystemExit, match=words):
            bench.adopt_run(c, args, 16)
        assert sorted(p.name for p in c.root.iterdir()) == ["clf"], "a refused run leaves nothing behind"

    pack()
    c, args = cell("same")
    bench.adopt_run(c, args, 16)
    training = bench.Training(c, "stylex")
    assert training.done(args) and (c.root / "stylex" / "weights.safetensors").is_file()
    marker = json.loads(training.marker.read_text())
    assert marker["steps_trained"] == 2 and marker["adopted_from"].endswith("two-factor-seed0.tgz")
    bench.adopt_run(c, args, 16)  # done: nothing happens
    refused(*cell("swap", stylex_set=["swap_weight=1.0"]), "swap_weight is 0.0, the command line gives 1.0")
    refused(
        *cell("from-plain", stylex_from_plain=True),
        "started from nothing, the command line from two-factor/seed0/plain",
    )
    refused(*cell("none", adopt=tmp_path / "empty"), "holds no two-factor-seed0.tgz")
    pack(lambda config: config.update(classifier_fingerprint="0" * 16))
    refused(*cell("other-classifier"), "its classifier's fingerprint is 0000000000000000")


@pytest.mark.slow
def test_groundtruth_plain_only_trains_the_base_models_alone(tmp_path, monkeypatch):
    """benchmarks/groundtruth.py --plain-only: data, classifier and the unconditioned model, nothing else; with
    --link-root, the data and classifier are linked and the unconditioned model is trained anew."""
    bench = _load_benchmark("groundtruth")
    tiny = ["--preset", "tiny", "--steps", "2", "--num-images", "48", "--eval-images", "16", "--classifier-epochs",
            "1", "--scenarios", "two-factor", "--seeds", "0", "--poll", "0.2"]  # fmt: skip

    def run(root, *flags):
        monkeypatch.setattr("sys.argv", ["groundtruth.py", "--root", str(root), "--plain-only", *tiny, *flags])
        bench.main()
        return root / "two-factor" / "seed0"

    base = run(tmp_path / "base")
    assert (base / "plain" / "weights.safetensors").is_file() and (base / "clf" / "weights.safetensors").is_file()
    assert not (base / "stylex").exists() and not (tmp_path / "base" / "table.md").exists()
    assert bench.recorded_runs(tmp_path / "base")[0]["argv"][2] == "--plain-only"

    other = run(tmp_path / "other", "--link-root", str(tmp_path / "base"), "--set", "model.tint_styles=3")
    assert (other / "data").is_symlink() and (other / "clf").is_symlink()
    assert (other / "plain" / "weights.safetensors").is_file() and not (other / "plain").is_symlink()
    config = json.loads((other / "plain" / "config.json").read_text())
    assert config["train"]["model"]["tint_styles"] == 3


def test_benchmark_scripts_refuse_what_they_cannot_measure(monkeypatch, capsys):
    """recon_importance.py and factor_reach.py printed plausible figures for a digits model; the scripts' errors are
    one `error:` line (script_main) and their --help shows the defaults (ScriptParser)."""

    from stylex.errors import StylexError
    from stylex.scripting import ScriptParser, script_main
    from stylex.zoo import zoo_path

    digits = str(zoo_path("digits-32") / "samples")
    cases = [("recon_importance", ["--run", "zoo:digits-32", "--num-scenes", "4"]),
             ("factor_reach", ["--model", "zoo:digits-32", "--data", digits, "--num-images", "4"])]  # fmt: skip
    for name, argv in cases:
        bench = _load_benchmark(name)
        monkeypatch.setattr("sys.argv", [f"{name}.py", *argv])
        with pytest.raises(StylexError, match="factors.csv"):
            bench.main()
        with pytest.raises(SystemExit, match="^error: .*factors.csv"):
            script_main(bench.main)
    p = ScriptParser(description="first line\n  kept as written")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--quiet", action="store_true")
    text = p.format_help()
    assert "--minutes MINUTES  (default: 30.0)" in text and "  kept as written" in text and "default: False" not in text


def test_evaluate_lists_tied_factors_in_one_order():
    """The true-importance ranking, the used factors and the first ranks list tied factors in one order (by name);
    the used list followed another order than the ranking beside it."""
    from stylex.metrics.evaluate import format_metrics

    score = {"precision": 1.0, "coverage": 1.0, "mean_purity": 0.9, "spearman": None,
             "used": ["size", "hue"], "first_rank": {"size": 2, "hue": 1}}  # fmt: skip
    metrics = {
        "method": "attfind",
        "num_images": 4,
        "reconstruction": {"stylex": {"consistency": 1.0, "l1": 0.1, "identity": 0.0}},
        "sufficiency": {"2": {"overall": 0.5}},
        "groundtruth": {
            "true_importance": {"flip_rate": {"size": 0.4, "shape": 0.1, "hue": 0.4}, "used": ["size", "hue"]},
            "scores": {"2": score},
        },
    }
    text = format_metrics(metrics)
    assert "rate): hue 0.40, size 0.40, shape 0.10; used: hue, size" in text
    assert text.splitlines()[4].endswith("hue 1, size 2")

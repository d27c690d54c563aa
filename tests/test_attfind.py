"""AttFind: cached synthesis, batched effects == the plain loop, a planted answer, fast mode, selection, JSON, CLI."""

from __future__ import annotations

import json
import math
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import make_tiny_run, run_cli
from stylex.attfind import (
    AttFind,
    AttFindResult,
    Effects,
    StyleEffects,
    edit_styles,
    greedy_select,
    reference_effects,
    select_attributes,
    top_overlap,
)
from stylex.attfind.result import ClassAttributes
from stylex.attfind.selection import class_scores, rank_stability
from stylex.data import load_dataset
from stylex.errors import StylexError
from stylex.models import Generator
from stylex.models.generator import SynthesisState
from stylex.models.stylespace import StyleLayout, StyleVector

# ------------------------------------------------------------------------------------------------ fixtures


def _failing_on_call(n: int, real, error):
    """`real`, except that its n-th call raises `error` (an interrupt or a full disk at a chosen moment)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise error
        return real(*args, **kwargs)

    return wrapper


def _tiny_generator() -> Generator:
    """16 px, 8 channels per layer: S = 5 layers x 8 = 40 coordinates; non-zero noise and biases."""
    torch.manual_seed(0)
    G = Generator(16, z_dim=8, w_dim=12, c_dim=2, num_mapping_layers=2, channel_base=128, channel_max=8)
    with torch.no_grad():
        for layer in G.layers:
            layer.noise.strength.fill_(0.2)
            layer.bias.normal_(0, 0.2)
    return G.eval().requires_grad_(False)


@pytest.fixture
def tiny(stand_in_classifier):
    G = _tiny_generator()
    g = torch.Generator().manual_seed(1)
    s = G.styles(torch.randn(3, 12, generator=g), torch.randn(3, 2, generator=g))
    noise = G.make_noise(3, generator=torch.Generator().manual_seed(2))
    return G, stand_in_classifier, s, noise


PLANTED = 6  # layer 1, channel 2 of the toy generator


class ToyGenerator(nn.Module):
    """Three "layers" of 4 styles each; image brightness = 2 tanh(style 6) + weak distractors from all styles.

    It implements the generator interface AttFind uses (layout, synthesis, synthesis_states, synthesis_from).
    """

    resolution = 8

    def __init__(self):
        super().__init__()
        self.layout = StyleLayout(conv_dims=(4, 4, 4), rgb_dims=(1,), conv_names=("a", "b", "c"))
        self.weight = nn.Parameter(torch.randn(12, generator=torch.Generator().manual_seed(3)), requires_grad=False)

    def _layer(self, i: int, x: torch.Tensor, s: StyleVector) -> torch.Tensor:
        w = self.weight[4 * i : 4 * i + 4]
        x = x + 0.05 * torch.tanh(s.conv[i] * w).sum(dim=1)[:, None, None, None]
        if i == 1:
            x = x + 2.0 * torch.tanh(s.conv[1][:, 2])[:, None, None, None]
        return x

    def synthesis_states(self, s, noise):
        x = torch.zeros(s.batch_size, 1, 1, 1)
        states = []
        for i in range(3):
            states.append(SynthesisState(x, None))
            x = self._layer(i, x, s)
        return states

    def synthesis_from(self, layer, state, s, noise):
        x = state.x
        for i in range(layer, 3):
            x = self._layer(i, x, s)
        return x.expand(-1, 3, self.resolution, self.resolution)

    def synthesis(self, s, noise=None):
        return self.synthesis_from(0, SynthesisState(torch.zeros(s.batch_size, 1, 1, 1), None), s, noise)


def brightness_classifier(x: torch.Tensor) -> torch.Tensor:
    m = x.mean(dim=(1, 2, 3))
    return torch.stack([-m, m], dim=1) * 3  # class 1 = bright


@pytest.fixture
def toy():
    G = ToyGenerator()
    flat = torch.randn(20, 12, generator=torch.Generator().manual_seed(4))
    s = StyleVector(list(flat.split(4, dim=1)), [torch.ones(20, 1)], G.layout)
    return G, s


# ------------------------------------------------------------------------------------------------ generator


def test_synthesis_from_cached_states_equals_synthesis(tiny):
    G, _, s, noise = tiny
    x = G.synthesis(s, noise)
    states = G.synthesis_states(s, noise)
    assert len(states) == len(G.layout.conv_dims) and states[0].img is None
    for layer, st in enumerate(states):
        assert torch.equal(G.synthesis_from(layer, st, s, noise), x), layer


# ------------------------------------------------------------------------------------------------ effects


def test_batched_cached_effects_equal_plain_loop(tiny):
    G, C, s, noise = tiny
    expected = reference_effects(G, C, s, noise, shift_size=1.0)  # [3, 2, 40, 2], one edit per forward
    # odd batch and chunk sizes: batches mix images and end mid-layer
    got = StyleEffects(G, C, max_batch=7, images_per_chunk=2, progress=False).compute(s, noise)
    assert got.effects.shape == (3, 2, G.layout.num_coords, 2)
    assert expected.abs().max() > 1e-2, "the edits must move the logits for the test to mean anything"
    assert (got.effects - expected).abs().max() < 1e-4
    assert got.exact.all() and got.meta["mode"] == "exact"
    s_flat = s.flatten()
    assert torch.allclose(got.s_min, s_flat.min(0).values) and torch.allclose(got.s_max, s_flat.max(0).values)
    assert torch.allclose(got.base_logits, C(G.synthesis(s, noise)), atol=1e-5)


def test_run_without_styles_needs_an_effect_table(toy):
    """`run(None, noise)` without effects= was an AttributeError from inside the effect computation."""
    G, _ = toy
    with pytest.raises(StylexError, match="needs the images' styles, or an effect table"):
        AttFind(G, brightness_classifier, progress=False).run(None, [])


def test_memory_bounds_must_be_finite(toy):
    """memory_mb NaN or inf passed `<= 0` and ended in "cannot convert float NaN to integer" when batches were sized."""
    G, _ = toy
    for kwargs in ({"memory_mb": math.nan}, {"memory_mb": math.inf}, {"memory_mb": 0}, {"cache_mb": math.inf}):
        with pytest.raises(StylexError, match="memory_mb must be positive"):
            StyleEffects(G, brightness_classifier, progress=False, **kwargs)


def test_the_class_strategy_edits_each_coordinate_once(toy):
    """AttFind may list both directions of one coordinate (the notebook zeroes only the pair it picked); an image
    explanation applied both, and its second step, which edits keep out, was listed though it changed nothing."""
    from stylex.explain.counterfactual import Counterfactuals

    G, s = toy
    table = StyleEffects(G, brightness_classifier, progress=False).compute(s, [])
    cf = Counterfactuals(G, brightness_classifier, table.s_min, table.s_max, 1.0, ["dark", "bright"])
    image = int(table.base_logits[:, 1].argmin())  # the darkest image, moved toward "bright"
    e = cf.explain(s.index([image]), [], table.subset([image]), "class", target=1, top_k=3,
                   class_edits=[(5, 1), (5, 0), (2, 1), (7, 0)])  # fmt: skip
    assert [step.flat_index for step in e.steps] == [5, 2, 7] and e.steps[0].direction == "max"


def test_bf16_channels_last_effects_are_close(tiny):
    G, C, s, noise = tiny
    exact = StyleEffects(G, C, progress=False).compute(s, noise)
    fast = StyleEffects(G, C, precision="bf16", channels_last=True, progress=False).compute(s, noise)
    scale = exact.effects.abs().max()
    assert (fast.effects - exact.effects).abs().max() < 0.1 * scale


def test_effects_resume_from_saved_chunks(tiny, tmp_path, monkeypatch):
    G, C, s, noise = tiny
    full = StyleEffects(G, C, images_per_chunk=1, progress=False).compute(s, noise)
    finder = StyleEffects(G, C, images_per_chunk=1, progress=False)
    original = finder._chunk
    monkeypatch.setattr(finder, "_chunk", _failing_on_call(2, original, KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        finder.compute(s, noise, checkpoint_dir=tmp_path / "partial")
    assert len(list((tmp_path / "partial").glob("chunk_*.safetensors"))) == 1
    monkeypatch.setattr(finder, "_chunk", original)
    resumed = StyleEffects(G, C, images_per_chunk=1, progress=False)
    counted = []
    inner = resumed._chunk
    monkeypatch.setattr(resumed, "_chunk", lambda *a, **k: counted.append(1) or inner(*a, **k))
    got = resumed.compute(s, noise, checkpoint_dir=tmp_path / "partial")
    assert len(counted) == 2, "the saved image is not recomputed"
    assert torch.allclose(got.effects, full.effects, atol=1e-6)
    assert not (tmp_path / "partial").exists()


def test_resume_by_input_key_survives_last_bit_changes(tiny, tmp_path, monkeypatch):
    """Styles encoded under another thread count differ in their last bits; chunks named by the inputs' key are
    still reused, while the default key (the styles' bytes) recomputes them."""
    G, C, s, noise = tiny
    partial = tmp_path / "partial"

    def up(x):  # one ulp
        return torch.nextafter(x, torch.full_like(x, float("inf")))

    nudged = StyleVector([up(x) for x in s.conv], [up(x) for x in s.rgb], s.layout)
    assert not torch.equal(nudged.flatten(), s.flatten())

    def computed_chunks(styles, key, stop_after=None):
        finder = StyleEffects(G, C, images_per_chunk=1, progress=False)
        inner, calls = finder._chunk, []

        def counting(*args, **kwargs):
            if len(calls) == stop_after:
                raise KeyboardInterrupt
            calls.append(1)
            return inner(*args, **kwargs)

        monkeypatch.setattr(finder, "_chunk", counting)
        try:
            finder.compute(styles, noise, checkpoint_dir=partial, key=key)
        except KeyboardInterrupt:
            assert len(list(partial.glob("chunk_*.safetensors"))) == stop_after
        return len(calls)

    for key, recomputed in (("inputs", 1), (None, 3)):
        computed_chunks(s, key, stop_after=2)  # interrupted after 2 of the 3 images
        assert computed_chunks(nudged, key) == recomputed, key
        assert not partial.exists()


def test_effects_save_load_round_trip(tiny, tmp_path):
    G, C, s, noise = tiny
    eff = StyleEffects(G, C, fast=5, progress=False).compute(s, noise, meta={"indices": [3, 5, 7]})
    eff.save(tmp_path / "e.safetensors")
    back = Effects.load(tmp_path / "e.safetensors")
    for name in ("effects", "s_min", "s_max", "base_logits", "styles", "styles_rgb", "exact"):
        assert torch.equal(getattr(back, name), getattr(eff, name)), name
    assert back.meta == eff.meta and back.shift_size == eff.shift_size
    assert torch.equal(back.style_vector(G.layout).flatten(), s.flatten())
    assert back.subset([1]).meta["indices"] == [5]


# ------------------------------------------------------------------------------------------------ planted answer


def test_attfind_ranks_the_planted_coordinate_first(toy):
    G, s = toy
    result = AttFind(G, brightness_classifier, top_k=3, progress=False).run(s, [])
    bright, dark = result.for_class(1), result.for_class(0)
    assert bright.num_images > 0 and dark.num_images > 0
    assert (bright.attributes[0].flat_index, bright.attributes[0].direction) == (PLANTED, "max")
    assert (dark.attributes[0].flat_index, dark.attributes[0].direction) == (PLANTED, "min")
    first = bright.attributes[0]
    assert (first.layer, first.channel, first.layer_name) == (1, 2, "b")
    assert first.flip_rate > 0.9
    assert bright.sufficiency == 1.0 and dark.sufficiency == 1.0 and result.sufficiency == 1.0


class BrightnessD(nn.Module):
    """A stand-in discriminator that scores an image's brightness alone, and records the minibatch-std group it was
    called with."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale, self.mbstd_group, self.groups = scale, 4, []

    def forward(self, x, c):
        self.groups.append(self.mbstd_group)
        return self.scale * x.mean(dim=(1, 2, 3))


def test_discriminator_filter_skips_the_coordinate_whose_edit_the_discriminator_notices(toy):
    """The notebook's optional filter: a D that does not look at the image changes nothing; a D that sees the
    brightness rejects the planted coordinate (its edit moves the brightness by ~2, each distractor's by 0.1 or
    less), in the ranking and in every bootstrap resample, and the result says so."""
    G, s = toy
    kw = dict(top_k=3, progress=False, sufficiency=False)
    plain = AttFind(G, brightness_classifier, **kw).run(s, [])
    blind = AttFind(G, brightness_classifier, discriminator=BrightnessD(0.0), **kw).run(s, [])
    assert [[a.edit for a in c.attributes] for c in blind.classes] == [
        [a.edit for a in c.attributes] for c in plain.classes
    ]
    assert blind.stats["discriminator_rejected"] == {"0": [], "1": []}

    D = BrightnessD(1.0)
    result = AttFind(G, brightness_classifier, discriminator=D, discriminator_threshold=0.5, **kw).run(s, [])
    assert result.stats["discriminator_rejected"] == {"0": ["b[2]"], "1": ["b[2]"]}
    for c in result.classes:
        assert len(c.attributes) == 3 and PLANTED not in [a.flat_index for a in c.attributes]
    assert result.settings["discriminator_filter"] is True and result.settings["discriminator_threshold"] == 0.5
    assert set(D.groups) == {1} and D.mbstd_group == 4  # each image scored alone; the group put back
    assert "discriminator filter (threshold 0.5): skipped '0': b[2]; '1': b[2]" in result.summary()
    filtered = [sum(c.stability) for c in result.classes]
    rank_stability(result.effects, result, 100)  # the same draws without the filter: the planted one comes back
    assert all(b < a for a, b in zip(filtered, [sum(c.stability) for c in result.classes], strict=True))


def test_fast_mode_keeps_the_planted_coordinate(toy):
    G, s = toy
    result = AttFind(G, brightness_classifier, top_k=3, fast=2, progress=False).run(s, [])
    eff = result.effects
    n = eff.num_images
    assert eff.meta["mode"] == "fast" and eff.exact.flatten(1).sum(dim=1).eq(4).all(), "2M edits per image"
    exact = StyleEffects(G, brightness_classifier, progress=False).compute(s, [])
    strong = exact.effects[:, :, PLANTED].abs().amax(dim=-1).argmax(dim=1)  # [N] the direction that moves it most
    assert eff.exact[torch.arange(n), strong, PLANTED].all(), "the planted edit is evaluated exactly for every image"
    assert result.for_class(1).attributes[0].edit == (PLANTED, 1)
    mask = eff.exact[..., None].expand_as(eff.effects)  # [N, 2, S, K]
    assert torch.allclose(eff.effects[mask], exact.effects[mask], atol=1e-5)
    assert top_overlap(eff, exact, k=1) == 1.0


def test_fast_mode_exact_entries_match_on_a_real_generator(tiny):
    G, C, s, noise = tiny
    S = G.layout.num_coords
    exact = StyleEffects(G, C, progress=False).compute(s, noise)
    for points in (0, 3):
        fast = StyleEffects(G, C, fast=10, fast_points=points, progress=False).compute(s, noise)
        assert fast.exact.shape == (3, 2, S) and fast.exact.flatten(1).sum(dim=1).eq(20).all()
        mask = fast.exact[..., None].expand_as(fast.effects)  # [N, 2, S, K]
        assert torch.allclose(fast.effects[mask], exact.effects[mask], atol=1e-4)
        # elsewhere: the first-order estimate at the image, not the exact value
        grad = StyleEffects(G, C, progress=False)._gradients(s, noise)[:, 0]  # [N, S, K]
        estimate = grad[:, None] * fast.deltas()[..., None]  # [N, 2, S, K]
        assert torch.allclose(fast.effects[~mask], estimate[~mask], atol=1e-5)
        assert 0.0 <= fast.meta["estimate_top10_overlap"] <= 1.0
        assert fast.meta["fast_points"] == points
        assert 0.0 <= top_overlap(fast, exact, k=5) <= 1.0


@pytest.mark.parametrize("points", [0, 2])
def test_fast_mode_evaluates_the_pairs_with_the_largest_estimate(tiny, points):
    """Each image's 2M evaluated pairs are its top 2M by |grad * delta|, max over classes and gradient points
    (the image's styles and `points` perturbed copies, N(0, (fast_noise * (s_max - s_min))^2), seeded)."""
    G, C, s, noise = tiny
    n, S = s.batch_size, G.layout.num_coords
    fast = StyleEffects(G, C, fast=6, fast_points=points, fast_noise=0.1, seed=3, progress=False).compute(s, noise)
    perturb = None
    if points:
        scale = 0.1 * (fast.s_max - fast.s_min)
        perturb = torch.randn(n, points, S, generator=torch.Generator().manual_seed(3)) * scale
    grads = StyleEffects(G, C, progress=False)._gradients(s, noise, perturb)  # [N, 1 + P, S, K]
    estimate = grads[:, :, None] * fast.deltas()[:, None, :, :, None]  # [N, 1 + P, 2, S, K]
    score = estimate.abs().amax(dim=(1, 4)).flatten(1)  # [N, 2S]
    expected = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(12, dim=1).indices, True)
    assert torch.equal(fast.exact.flatten(1), expected)


def test_fast_mode_gradient_points_are_seeded_and_perturbed(tiny):
    G, C, s, noise = tiny
    a = StyleEffects(G, C, fast=5, seed=1, progress=False).compute(s, noise)
    b = StyleEffects(G, C, fast=5, seed=1, progress=False).compute(s, noise)
    assert torch.equal(a.exact, b.exact) and torch.equal(a.effects, b.effects)
    finder = StyleEffects(G, C, progress=False)
    perturb = 0.1 * torch.randn(3, 2, G.layout.num_coords, generator=torch.Generator().manual_seed(0))
    grads = finder._gradients(s, noise, perturb, batch=4)  # [N, 1 + 2, S, K], batches split images' points
    assert grads.shape == (3, 3, G.layout.num_coords, 2)
    assert torch.allclose(grads[:, 0], finder._gradients(s, noise)[:, 0], atol=1e-5)
    moved = s.unflatten(s.flatten() + perturb[:, 1])
    assert torch.allclose(grads[:, 2], finder._gradients(moved, noise)[:, 0], atol=1e-5)
    assert not torch.allclose(grads[:, 0], grads[:, 2])


def test_effects_file_of_version_1_loads_with_a_per_coordinate_mask(tmp_path, tiny):
    from safetensors import safe_open
    from safetensors.torch import save_file

    G, C, s, noise = tiny
    fast = StyleEffects(G, C, fast=4, progress=False).compute(s, noise)
    fast.save(tmp_path / "e.safetensors")
    with safe_open(str(tmp_path / "e.safetensors"), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["exact"] = fast.exact_coords().to(torch.uint8)  # version 1 stored [N, S]
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata={**metadata, "version": "1"})
    back = Effects.load(tmp_path / "v1.safetensors")
    assert back.exact.shape == fast.exact.shape
    assert torch.equal(back.exact, fast.exact_coords()[:, None].expand(-1, 2, -1))


def test_bf16_edit_path_reproduces_the_base_logits_bit_for_bit(tiny):
    """A zero edit from any layer's cached state gives the base logits exactly, also with the low-resolution
    layers in fp32 and channels_last states, so an effect holds no path noise; the fp32 hooks are removed."""
    G, C, s, noise = tiny
    n = s.batch_size
    for bf16_from in (0, 8, None):
        finder = StyleEffects(G, C, precision="bf16", channels_last=True, bf16_from=bf16_from, progress=False)
        base = finder._base_logits(s, noise)  # [N, K]
        with torch.no_grad(), finder._autocast():
            states = finder._states(s, noise)
            for layer, off in enumerate(G.layout.offsets()[:-1]):
                zero = finder._edited_logits(layer, states, s, noise, torch.arange(n), torch.full((n,), off), 0.0)
                assert torch.equal(zero, base), (bf16_from, layer)
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in [*G.layers, *G.to_rgbs])


def test_bf16_from_runs_the_low_resolution_layers_in_fp32(tiny):
    G, C, s, noise = tiny  # 16 px: conv layers at 4, 8, 8, 16, 16 px
    seen = {}
    hooks = [
        layer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.dtype))
        for i, layer in enumerate(G.layers)
    ]
    finder = StyleEffects(G, C, precision="bf16", bf16_from=16, progress=False)
    finder._base_logits(s, noise)
    for h in hooks:
        h.remove()
    assert [seen[i] for i in range(5)] == [torch.float32] * 3 + [torch.bfloat16] * 2
    exact = StyleEffects(G, C, progress=False).compute(s, noise)
    mixed = StyleEffects(G, C, precision="bf16", channels_last=True, bf16_from=16, progress=False).compute(s, noise)
    assert (mixed.effects - exact.effects).abs().max() < 0.1 * exact.effects.abs().max()


def test_fast_mode_in_bf16_evaluates_what_the_exact_bf16_table_holds(tiny):
    G, C, s, noise = tiny
    # batch 1 for both: oneDNN's bf16 kernels round differently at different batch sizes
    kw = dict(precision="bf16", channels_last=True, max_batch=1, progress=False)
    exact = StyleEffects(G, C, **kw).compute(s, noise)
    fast = StyleEffects(G, C, fast=8, **kw).compute(s, noise)
    mask = fast.exact[..., None].expand_as(fast.effects)
    assert torch.allclose(fast.effects[mask], exact.effects[mask], atol=1e-4)


def test_cpu_batches_are_sized_for_the_cache(tiny):
    G, C, s, noise = tiny
    _, largest = StyleEffects(G, C, progress=False)._probe(s, noise)
    _, batch = StyleEffects(G, C, cache_mb=64 * largest * 4 / 2**20, progress=False)._plan(s, noise)
    assert batch == 64
    _, batch = StyleEffects(G, C, cache_mb=0, max_batch=300, progress=False)._plan(s, noise)
    assert batch == 300  # 0 turns the cap off


def test_channels_last_falls_back_for_a_classifier_that_needs_contiguous_input(tiny):
    G, C, s, noise = tiny

    def flat_classifier(x):  # .view needs a contiguous tensor: fails on channels_last input
        return x.view(x.shape[0], -1)[:, :2] * 3

    plain = StyleEffects(G, flat_classifier, progress=False).compute(s, noise)
    finder = StyleEffects(G, flat_classifier, channels_last=True, progress=False)
    got = finder.compute(s, noise)
    assert not finder._classifier_channels_last
    assert torch.allclose(got.effects, plain.effects, atol=1e-5)


# ------------------------------------------------------------------------------------------------ selection


def test_greedy_select_drops_images_past_the_threshold():
    # columns (direction 0): A moves image 0 only; B moves all three; C moves images 1 and 2 a little.
    scores = torch.zeros(3, 2, 3)
    scores[:, 0, 0] = torch.tensor([2.0, 0.0, 0.0])  # A, mean 0.667
    scores[:, 0, 1] = torch.tensor([1.5, 0.4, 0.4])  # B, mean 0.767: picked first
    scores[:, 0, 2] = torch.tensor([0.0, 0.3, 0.3])  # C
    scores[:, 1, 2] = -5.0  # negative effects are clipped at 0
    picked = greedy_select(scores, top_k=2, threshold=1.0)
    # image 0 has passed the threshold after B, so C (0.3 over images 1, 2) beats A (0 there)
    assert [(j, d) for j, d, _ in picked] == [(1, 0), (2, 0)]
    assert picked[0][2] == pytest.approx(2.3 / 3) and picked[1][2] == pytest.approx(0.3)
    # without the drop-out A comes second
    picked = greedy_select(scores, top_k=2, threshold=float("inf"))
    assert [(j, d) for j, d, _ in picked] == [(1, 0), (0, 0)]


def test_greedy_select_counts_the_images_still_below_the_threshold():
    scores = torch.zeros(3, 2, 3)
    scores[:, 0, 0] = torch.tensor([2.0, 0.0, 0.0])
    scores[:, 0, 1] = torch.tensor([1.5, 0.4, 0.4])
    scores[:, 0, 2] = torch.tensor([0.0, 0.3, 0.3])
    counting: list[int] = []
    greedy_select(scores, top_k=3, threshold=1.0, counting=counting)
    assert counting == [3, 2, 2]  # image 0 passes 1.0 with B; images 1, 2 reach 0.7 after B and C
    counting = []
    greedy_select(scores, top_k=3, threshold=0.35, counting=counting)
    assert counting == [3, 0, 0]  # B alone takes every image past 0.35: picks 2 and 3 rank all images


def test_attfind_result_records_when_the_drop_out_is_spent(tmp_path):
    layout = StyleLayout((3,), (1,), ("b4.conv0",))
    torch.manual_seed(0)
    eff = torch.zeros(4, 2, 3, 2)
    eff[:, 1, 0, 1] = 5.0  # coordinate 0 -> max raises logit 1 by 5 on every image: one pick spends the drop-out
    eff[:, 1, 1, 1] = 0.5
    eff[:, 0, 2, 1] = 0.2
    base = torch.tensor([[2.0, 0.0]] * 4)  # every image predicted as class 0
    e = Effects(eff, torch.zeros(3), torch.ones(3), base, torch.zeros(4, 3), torch.zeros(4, 1),
                torch.ones(4, 3, dtype=torch.bool), 1.0)  # fmt: skip
    result = select_attributes(e, layout, top_k=3, threshold=1.0)
    c1 = result.for_class(1)
    assert c1.counting == [4, 0, 0] and c1.dropout_spent_at == 2
    assert "by rank 2, so ranks 2-3 are ranked by the mean effect over all 4 images" in result.summary()
    assert result.for_class(0).counting == [] and result.for_class(0).dropout_spent_at is None
    result.save(tmp_path / "attributes.json")
    assert AttFindResult.load(tmp_path / "attributes.json").for_class(1).counting == [4, 0, 0]
    # files written before `counting` existed still load, without the note
    d = json.loads((tmp_path / "attributes.json").read_text())
    for c in d["classes"]:
        del c["counting"]
    old = AttFindResult.from_dict(d)
    assert old.for_class(1).counting is None and "drop-out" not in old.summary()
    assert "drop-out" not in select_attributes(e, layout, top_k=3, threshold=100.0).summary()
    short = result.summary(max_classes=1)  # a classifier with many classes: the first tables, a line for the rest
    assert "class '0'" in short and "class '1'" not in short and "\n... and 1 more class " + (
        "(attributes.json holds every class; `stylex report` shows them)\neffect: mean change of the class's logit on "
        "the images still counting when it was picked; flips: share of the images") in short  # fmt: skip
    assert "more class" not in result.summary(max_classes=2)


def _stability_table() -> Effects:
    """20 images, all predicted as class 0. For class 1: coordinate 0 -> max raises the logit by 5 on every image;
    coordinate 1 -> max by 30 on image 0 alone (mean 1.5: second on the full set, but only in the draws that
    include image 0, and first only in the rare draws that hold it 4 times); coordinate 2 -> min by 0.1 on every
    image."""
    eff = torch.zeros(20, 2, 3, 2)
    eff[:, 1, 0, 1] = 5.0
    eff[0, 1, 1, 1] = 30.0
    eff[:, 0, 2, 1] = 0.1
    base = torch.tensor([[2.0, 0.0]] * 20)
    return Effects(eff, torch.zeros(3), torch.ones(3), base, torch.zeros(20, 3), torch.zeros(20, 1),
                   torch.ones(20, 3, dtype=torch.bool), 1.0)  # fmt: skip


def test_rank_stability_tells_a_broad_attribute_from_one_owed_to_one_image(tmp_path):
    layout = StyleLayout((3,), (1,), ("b4.conv0",))
    e = _stability_table()
    result = select_attributes(e, layout, top_k=2, threshold=float("inf"))
    c1 = result.for_class(1)
    assert [a.edit for a in c1.attributes] == [(0, 1), (1, 1)]  # on these 20 images the one-image edit is second
    rank_stability(e, result, resamples=200, seed=0)
    assert c1.stability[0] == 1.0 and c1.resampled_ranks[0] == [1, 1, 1]
    # a draw without image 0 (about (19/20)^20 = 36% of them) ranks the small broad edit second instead
    assert 0.5 < c1.stability[1] < 0.8, c1.stability
    assert c1.resampled_ranks[1][0] == 2 and c1.resampled_ranks[1][2] == 3  # 3 = K + 1: not picked
    assert result.for_class(0).stability is None  # no image to search for class 0 with
    assert result.settings["stability_resamples"] == 200
    assert "picked again in 100% of image resamples; middle half: rank 1" == c1.stability_note(0)
    assert "middle half: rank 2 to not picked" in c1.stability_note(1)
    summary = result.summary()
    assert "stable" in summary and "2-none" in summary and "200 bootstrap resamples" in summary
    # seeded, saved and read back; files from before it existed load without it
    again = select_attributes(e, layout, top_k=2, threshold=float("inf"))
    rank_stability(e, again, resamples=200, seed=0)
    assert again.for_class(1).stability == c1.stability
    result.save(tmp_path / "attributes.json")
    loaded = AttFindResult.load(tmp_path / "attributes.json").for_class(1)
    assert loaded.stability == c1.stability and loaded.resampled_ranks == c1.resampled_ranks
    d = json.loads((tmp_path / "attributes.json").read_text())
    for c in d["classes"]:
        del c["stability"], c["resampled_ranks"]
    old = AttFindResult.from_dict(d)
    assert old.for_class(1).stability is None and "stable" not in old.summary()
    # a file whose lists do not match its attributes is refused when read (summary() met an IndexError)
    for key, value in (("stability", [1.0]), ("resampled_ranks", [[1, 1, 1]]), ("resampled_ranks", [[1], [2]])):
        bad = json.loads((tmp_path / "attributes.json").read_text())
        bad["classes"][1][key] = value
        with pytest.raises(StylexError, match=f"malformed .*{key}"):
            AttFindResult.from_dict(bad)
    # resamples=0 leaves the result alone
    none = select_attributes(e, layout, top_k=2, threshold=float("inf"))
    rank_stability(e, none, resamples=0)
    assert none.for_class(1).stability is None and "stability_resamples" not in none.settings


def test_rank_stability_uses_the_drop_out_and_the_kept_images():
    layout = StyleLayout((3,), (1,), ("b4.conv0",))
    e = _stability_table()
    # with the drop-out, coordinate 0 (5.0 >= 1.0) retires every image, so pick 2 ranks all images: the same list
    result = select_attributes(e, layout, top_k=2, threshold=1.0)
    rank_stability(e, result, resamples=50)
    assert 0.5 < result.for_class(1).stability[1] < 0.85
    # leaving image 0 out of the search removes the one-image edit from every draw
    keep = torch.ones(20, dtype=torch.bool)
    keep[0] = False
    result = select_attributes(e, layout, top_k=2, threshold=1.0, keep_images=keep)
    assert [a.edit for a in result.for_class(1).attributes] == [(0, 1), (2, 0)]
    rank_stability(e, result, resamples=50, keep_images=keep)
    assert result.for_class(1).stability == [1.0, 1.0]


def test_one_vs_all_score_is_the_log_odds_change():
    torch.manual_seed(0)
    eff = torch.randn(4, 2, 5, 3)
    base = torch.randn(4, 3)
    exact = torch.ones(4, 5, dtype=torch.bool)
    e = Effects(eff, torch.zeros(5), torch.ones(5), base, torch.zeros(4, 5), torch.zeros(4, 1), exact, 1.0)
    got = class_scores(e, 1, one_vs_all=True)
    new = base[:, None, None] + eff
    expected = (new[..., 1] - new[..., [0, 2]].logsumexp(-1)) - (base[:, 1] - base[:, [0, 2]].logsumexp(-1))[
        :, None, None
    ]
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(class_scores(e, 1, one_vs_all=False), eff[..., 1])
    layout = StyleLayout((2, 3), (1,), ("a", "b"))
    result = select_attributes(e, layout, top_k=2)
    assert result.settings["score"] == "one_vs_all" and len(result.classes) == 3


def test_result_json_round_trip(toy):
    G, s = toy
    result = AttFind(G, brightness_classifier, top_k=3, class_names=["dark", "bright"], progress=False).run(s, [])
    back = AttFindResult.from_json(result.to_json())
    assert back == result
    assert back.for_class("bright").attributes[0].edit == (PLANTED, 1)
    assert "sufficiency@3 overall: 1.000" in result.summary()


def test_edit_styles_moves_to_the_targets(tiny):
    G, _, s, _ = tiny
    flat = s.flatten()
    s_min, s_max = flat.min(0).values, flat.max(0).values
    out = edit_styles(s, [(3, 0), (7, 1), (3, 1)], s_min, s_max, shift_size=1.0).flatten()
    assert torch.allclose(out[:, 3], s_min[3].expand(3)) and torch.allclose(out[:, 7], s_max[7].expand(3))
    changed = (out != flat).any(dim=0).nonzero().flatten().tolist()
    assert set(changed) <= {3, 7}


# ------------------------------------------------------------------------------------------------ CLI


run = run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """synth -> train-classifier -> train (tiny, 3 steps), once for the module."""
    return make_tiny_run(tmp_path_factory.mktemp("attfind"), num_images=32, steps=3)


def test_inputs_key_names_weights_images_settings_and_the_classifier_convention(tiny_run):
    from stylex.attfind.run import inputs_key
    from stylex.classifier import ClassifierAdapter, InputSpec
    from stylex.pipeline import load_run

    model, clf = load_run(tiny_run / "run")
    x = torch.rand(2, 3, model.resolution, model.resolution) * 2 - 1
    key = inputs_key(model, clf, x, "s")
    assert inputs_key(model, clf, x.clone(), "s") == key
    other_spec = ClassifierAdapter(clf.model, InputSpec(value_range=(0.0, 1.0)), num_classes=clf.num_classes)
    assert other_spec.fingerprint() == clf.fingerprint(), "the same weights"
    assert inputs_key(model, other_spec, x, "s") != key, "another input convention gives other logits"
    assert inputs_key(model, clf, x.flip(0), "s") != key and inputs_key(model, clf, x, "t") != key
    with torch.no_grad():
        model.E.parameters().__next__().add_(1.0)
    assert inputs_key(model, clf, x, "s") != key


def test_attfind_writes_plain_progress_lines_into_a_log(tiny_run, monkeypatch):
    """Under nohup (stderr a file: tqdm draws no bar) an hour of AttFind wrote nothing after its first line; a bar
    that runs longer than a minute now writes a plain line a minute into the log. Short work stays silent."""
    import stylex.progress

    run_dir = tiny_run / "run"
    args = ("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 2, "--resamples", 0, "--frames", 2)
    monkeypatch.setattr(stylex.progress, "PLAIN_SECONDS", 0.0)
    out = run(*args, "--out", tiny_run / "logged").output
    for bar in ("encoding images", "AttFind effects", "strips and GIFs"):
        assert f"{bar}: 100% " in out, bar
    assert "\r" not in out and "|" not in out.split("effects:")[0], "whole lines, no bar drawing"
    assert "AttFind effects" not in run(*args, "--out", tiny_run / "logged-q", "--quiet").output
    monkeypatch.setattr(stylex.progress, "PLAIN_SECONDS", 3600.0)
    assert "AttFind effects" not in run(*args, "--out", tiny_run / "logged-short").output


def test_quiet_turns_every_bar_off(tiny_run, monkeypatch):
    """The functions that take `progress=` imported the bar under that very name, so `progress=False` (what
    `--quiet` passes) was the function, always true: the encoding and strip bars showed under --quiet."""
    import stylex.progress

    made = []
    real = stylex.progress.progress_bar

    def recorded(*args, disable=None, **kwargs):
        made.append((kwargs.get("desc"), disable))
        return real(*args, disable=disable, **kwargs)

    monkeypatch.setattr(stylex.progress, "progress_bar", recorded)
    run_dir = tiny_run / "run"
    args = ("--model", run_dir, "--num-images", 6, "--top-k", 2, "--resamples", 0, "--frames", 2, "--out")
    run("attfind", *args, tiny_run / "q1", "--quiet")
    run("explain", "--model", run_dir, "--attributes", tiny_run / "q1", "--index", 0, "--index", 1, "--out",
        tiny_run / "q1x", "--quiet")  # fmt: skip
    run("evaluate", "--model", run_dir, "--attributes", tiny_run / "q1", "--out", tiny_run / "q1e", "--k", 1,
        "--num-scenes", 2, "--num-values", 1, "--read-images", 2, "--quiet")  # fmt: skip
    shown = {desc for desc, disable in made}
    assert {"encoding images", "strips and GIFs", "explaining", "evaluate"} <= shown, shown
    assert [desc for desc, disable in made if disable is not True] == []
    made.clear()
    run("attfind", *args, tiny_run / "q2")
    assert {desc for desc, disable in made if disable is None} >= {"encoding images", "strips and GIFs"}


def test_a_batch_explain_leaves_out_an_unreadable_file_and_names_it(tiny_run):
    """One broken file in a folder of 500 scans stopped `stylex explain --image FOLDER` before any work; each image
    stands alone, so the others are explained and the broken one is named. A training set is still refused whole."""
    run_dir, out = tiny_run / "run", tiny_run / "af-broken"
    run("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 2, "--no-render", "--quiet", "--out", out)
    folder = tiny_run / "scans"
    folder.mkdir()
    for k, src in enumerate(sorted((tiny_run / "data").rglob("*.png"))[:2]):
        shutil.copy(src, folder / f"scan{k}.png")
    (folder / "scan9.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = ["explain", "--model", run_dir, "--attributes", out, "--strategy", "subset", "--quiet"]
    said = run(*args, "--image", folder, "--out", tiny_run / "scans-out").output
    assert "warning: 1 of 3 images cannot be read and are left out:" in said and "scan9.png" in said
    listed = json.loads((tiny_run / "scans-out" / "explanations.json").read_text())["images"]
    assert [e["folder"] for e in listed] == ["scan0", "scan1"]
    alone = run(*args, "--image", folder / "scan9.png", "--out", tiny_run / "scan9-out", ok=False)
    assert alone.exit_code == 1 and "Cannot read image" in alone.output, "a file given by name is still an error"
    (tiny_run / "scans" / "scan0.png").write_bytes(b"not an image")
    (tiny_run / "scans" / "scan1.png").write_bytes(b"not an image")
    none = run(*args, "--image", folder, "--out", tiny_run / "scans-none", ok=False)
    assert none.exit_code == 1 and "3 of 3 images cannot be read" in none.output
    with pytest.raises(StylexError, match="cannot be read; re-export or delete them"):
        load_dataset(folder)


def test_cli_attfind_unstable_filter(tiny_run):
    """`stylex attfind --unstable-filter T COUNT` (the notebook's other optional filter, Python-only before) leaves
    out of the selection the images with more than COUNT logit changes above T, on the saved effects, and says how
    many; sufficiency still counts every image."""
    from stylex.errors import StylexError

    run_dir, out = tiny_run / "run", tiny_run / "unstable"
    args = ("attfind", "--model", run_dir, "--num-images", 8, "--top-k", 2, "--no-render", "--quiet", "--out", out)
    run(*args)
    effects = Effects.load(out / "effects.safetensors")
    counts = (effects.effects.abs() > 1e-3).sum(dim=(1, 2, 3))  # [N] large changes per image at T = 1e-3
    limit = int(counts.float().median())
    expected = int((counts > limit).sum())
    assert 0 < expected < 8, counts
    result = run(*args, "--unstable-filter", 1e-3, limit)
    assert "reused the effects" in result.output
    assert (
        f"unstable-image filter: left out {expected} image" in result.output and "of 8 with more than" in result.output
    )
    assert "the images per class above are of those kept (sufficiency counts all)" in result.output
    info = json.loads((out / "attributes.json").read_text())
    assert info["settings"]["unstable_filter"] == [1e-3, limit] and info["stats"]["unstable_dropped"] == expected
    assert info["settings"]["num_images_used"] == 8 - expected and info["settings"]["num_images"] == 8
    assert sum(info["stats"]["sufficiency_counts"][c["class_name"]][1] for c in info["classes"]) == 8
    plain = json.loads(
        run(*args[:-2], "--out", tiny_run / "uplain") and (tiny_run / "uplain" / "attributes.json").read_text()
    )
    assert "unstable_filter" not in plain["settings"] and plain["settings"]["num_images_used"] == 8
    assert "unstable-image filter" not in run(*args[:-2], "--out", tiny_run / "uplain").output
    error = run(*args, "--unstable-filter", 0, 5, ok=False)
    assert error.exit_code == 2 and "--unstable-filter" in error.output
    for bad in ((0.3,), (0.3, -1), (0.3, 7.5), (float("nan"), 1), "0.3,750", (True, 1)):
        with pytest.raises(StylexError, match="unstable_filter must be"):
            AttFind(torch.nn.Identity(), torch.nn.Identity(), unstable_filter=bad)


def test_cli_attfind_discriminator_filter(tiny_run):
    """`stylex attfind --discriminator-filter T` loads the run's D, skips the coordinates whose edits move it by
    more than T, and records that; an exported model has no D to load."""
    from stylex.attfind.effects import image_noise
    from stylex.attfind.filters import DiscriminatorFilter
    from stylex.errors import StylexError
    from stylex.pipeline import load_run

    run_dir, out = tiny_run / "run", tiny_run / "dfilter"
    args = ("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 2, "--no-render", "--quiet", "--out", out)
    result = run(*args, "--discriminator-filter", 1e-6)
    assert "discriminator filter (threshold 1e-06): skipped" in result.output
    info = json.loads((out / "attributes.json").read_text())
    assert info["settings"]["discriminator_filter"] is True and info["settings"]["discriminator_threshold"] == 1e-6
    rejected = info["stats"]["discriminator_rejected"]
    assert set(rejected) == {c["class_name"] for c in info["classes"]}
    for c in info["classes"]:
        named = {f"{a['layer_name']}[{a['channel']}]" for a in c["attributes"]}
        assert not named & set(rejected[c["class_name"]])
    plain = json.loads(
        run(*args[:-2], "--out", tiny_run / "dplain") and (tiny_run / "dplain" / "attributes.json").read_text()
    )
    assert plain["settings"]["discriminator_filter"] is False and "discriminator_rejected" not in plain["stats"]

    # the run's own D on its own images: every image is checked with effect_threshold -inf (this 3-step model
    # moves no logit by 0.2), and D's score does move under an edit
    model, clf = load_run(run_dir)
    D = model.discriminator(run_dir)
    assert D.c_dim == 2 and not D.training
    effects = Effects.load(tiny_run / "dplain" / "effects.safetensors")
    s, noise = effects.style_vector(model.G.layout), image_noise(model.G, effects.meta["indices"], 0)
    check = DiscriminatorFilter(model.G, D, clf, s, noise, effects, threshold=1e-6, effect_threshold=-float("inf"))
    assert not check(0, 0, 1) and check.max_change[(0, 0)] > 1e-6 and check.rejected == [(0, 0)]
    assert D.mbstd_group == model.config.model.mbstd_group > 0
    model.run_info["export"] = {}
    with pytest.raises(StylexError, match="ships without the discriminator"):
        model.discriminator(run_dir)


def test_cli_attfind_and_explain_write_their_files(tiny_run):
    run_dir, out = tiny_run / "run", tiny_run / "run" / "attfind"
    result = run("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 3, "--max-batch", 64, "--quiet")
    assert "sufficiency@3" in result.output and "s/image" in result.output
    assert "100 bootstrap resamples of the images" in result.output  # --resamples 100 by default
    assert (out / "effects.safetensors").is_file()
    info = json.loads((out / "attributes.json").read_text())
    assert len(info["classes"]) == 2 and info["settings"]["top_k"] == 3
    first = info["classes"][0]["attributes"][0]
    for key in ("rank", "layer", "layer_name", "channel", "flat_index", "direction", "mean_effect", "flip_rate"):
        assert key in first
    assert list((out / "attributes").rglob("*.png")) and list((out / "attributes").rglob("*.gif"))
    assert not (out / ".effects_partial").exists()

    again = run("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 2, "--no-render", "--quiet")
    assert "reused the effects" in again.output
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)  # float results change in their last bits with the thread count
    try:
        other = run("attfind", "--model", run_dir, "--num-images", 6, "--top-k", 2, "--no-render", "--quiet")
    finally:
        torch.set_num_threads(threads)
    assert "reused the effects" in other.output, "the same model, images and settings under another thread count"
    clash = run("attfind", "--model", run_dir, "--num-images", 5, "--quiet", ok=False)
    assert clash.exit_code == 1 and "--recompute" in clash.output

    index = Effects.load(out / "effects.safetensors").meta["indices"][1]
    run("explain", "--model", run_dir, "--attributes", out, "--index", index, "--out", tiny_run / "ex0", "--quiet")
    report = json.loads((tiny_run / "ex0" / "explanation.json").read_text())
    assert report["reused_effects"] is True, "an image AttFind measured reuses its row of the table"
    data = load_dataset(tiny_run / "data", resolution=16, progress=False)
    assert report["source"].startswith(f"index {index} ({data.filenames[index]}) of ")
    assert set(report["strategies"]) <= {"independent", "subset", "class"} and report["strategies"]
    assert (tiny_run / "ex0" / "independent.png").is_file() and (tiny_run / "ex0" / "subset.png").is_file()

    image = next((tiny_run / "data").rglob("*.png"))
    said = run("explain", "--model", run_dir, "--attributes", out, "--image", image, "--out", tiny_run / "ex1",
               "--strategy", "subset", "--fast", 8, "--quiet").output  # fmt: skip
    assert (tiny_run / "ex1" / "subset.png").is_file()
    report = json.loads((tiny_run / "ex1" / "explanation.json").read_text())
    differs = report["image_class"] != report["reconstruction_class"]
    assert ("warning: the image is classified" in said) == differs, "said exactly when the two classes differ"

    both = run("explain", "--model", run_dir, "--attributes", out, "--out", tiny_run / "ex2", ok=False)
    assert both.exit_code == 2 and both.output.startswith("error: ") and "--index" in both.output

    # Several images at once, one load of the model: a folder (x.png in two class folders, x.jpg, and an x-2.png that
    # the name of a clash must not take), a file, one of the folder's files again, two indices (one twice); each
    # image once, into its own folder, listed in explanations.json.
    folder = tiny_run / "batch"
    for k, src in enumerate(sorted((tiny_run / "data").rglob("*.png"))[:2]):
        (folder / f"c{k}").mkdir(parents=True)
        shutil.copy(src, folder / f"c{k}" / "x.png")
    for name in ("x.jpg", "x-2.png"):  # Pillow reads by content
        shutil.copy(folder / "c1" / "x.png", folder / "c1" / name)
    args = ["explain", "--model", run_dir, "--attributes", out, "--strategy", "subset", "--quiet"]
    inputs = ["--image", folder, "--image", image, "--image", folder / "c0" / "x.png", "--index", index, "--index", 0,
              "--index", index]  # fmt: skip
    said = run(*args, *inputs, "--out", tiny_run / "many").output
    listed = json.loads((tiny_run / "many" / "explanations.json").read_text())["images"]
    assert [e["folder"] for e in listed] == ["c0/x", "c1/x-2", "c1/x", "c1/x-3", image.stem, f"index-{index}",
                                             "index-0"]  # fmt: skip
    assert listed[1]["source"] == str(folder / "c1" / "x-2.png") and listed[5]["source"].startswith(f"index {index} (")
    measured = [f"index-{i}" for i in Effects.load(out / "effects.safetensors").meta["indices"]]
    for e in listed:
        one = json.loads((tiny_run / "many" / e["folder"] / "explanation.json").read_text())
        assert one["source"] == e["source"] and one["target"] == e["strategies"]["subset"]["to"]
        assert (tiny_run / "many" / e["folder"] / "subset.png").is_file()
        assert one["reused_effects"] == (e["folder"] in measured), "only images AttFind measured reuse its row"
        assert f"{e['source']}: subset: " in said
    assert said.rstrip().endswith(f"wrote {tiny_run / 'many' / 'explanations.json'}")

    # Again into the same folder with fewer images: what the first run wrote goes (a file of the user's stays).
    (tiny_run / "many" / "notes.txt").write_text("mine")
    run(*args, "--index", 0, "--index", index, "--out", tiny_run / "many")
    left = sorted(p.relative_to(tiny_run / "many").as_posix() for p in (tiny_run / "many").rglob("*"))
    assert left == [
        "explanations.json",
        "index-0",
        "index-0/explanation.json",
        "index-0/subset.png",
        f"index-{index}",
        f"index-{index}/explanation.json",
        f"index-{index}/subset.png",
        "notes.txt",
    ]
    run(*args, "--index", 0, "--out", tiny_run / "many")  # one image: into the folder itself, the batch gone
    assert sorted(p.name for p in (tiny_run / "many").iterdir()) == ["explanation.json", "notes.txt", "subset.png"]
    before = (tiny_run / "many" / "explanation.json").read_text()
    drawn = json.loads(before)["reconstruction_class"]
    refused = run(*args, "--index", 1, "--target", drawn, "--out", tiny_run / "many", ok=False)  # already that class
    assert refused.exit_code == 1 and (tiny_run / "many" / "explanation.json").read_text() == before, "kept"

    # An output folder inside an input folder would be read as images by the next run: refused before any work.
    inside = run(*args, "--image", folder, "--out", folder / "c1" / "out", ok=False)
    assert (
        inside.exit_code == 1 and "is inside the image folder" in inside.output and not (folder / "c1" / "out").exists()
    )

    # Interrupted, or failing midway (a full disk): the images explained so far are listed, and what an earlier run
    # wrote is gone all the same.
    import stylex.explain.run as explain_run

    real = explain_run._explain_one
    run(*args, "--index", 1, "--index", 2, "--index", 3, "--out", tiny_run / "cut")  # 1 and 2: planned, not reached
    for stop in (KeyboardInterrupt, OSError(28, "No space left on device")):
        with pytest.MonkeyPatch.context() as mp, pytest.raises(type(stop) if isinstance(stop, OSError) else stop):
            mp.setattr(explain_run, "_explain_one", _failing_on_call(2, real, stop))
            explain_run.explain_images(run_dir, out, tiny_run / "cut", indices=[0, 1, 2], strategies=("subset",),
                                       quiet=True)  # fmt: skip
        summary = json.loads((tiny_run / "cut" / "explanations.json").read_text())
        assert [e["folder"] for e in summary["images"]] == ["index-0"] and summary[
            "interrupted"
        ] == "after 1 of 3 images"
        assert sorted(p.name for p in (tiny_run / "cut").iterdir()) == ["explanations.json", "index-0"]

    # names: each once, case-insensitively; a clash's name never one that an image has; never a name of the files
    # explain writes beside the folders (subset.png.jpg would have made a folder "subset.png")
    assert explain_run._folder_names(["x", "x", "x-2", "X", "a/x"]) == ["x", "x-3", "x-2", "X-4", "a/x"]
    names = ["subset.png", "Explanations.json", "a/class.png", "explanations.json/b", "b", ".", ".."]
    assert explain_run._folder_names(names) == [
        "subset.png-2", "Explanations.json-2", "a/class.png-2", "explanations.json-2/b", "b", ".-2", "..-2",
    ]  # fmt: skip

    # Interrupted while an image's pictures are drawn: nothing of it is left, and an earlier explanation in the same
    # place stays whole (the pictures are drawn aside and swapped in at the end). No write goes through a link
    # left at a temporary name.
    real_render = explain_run._render_sequence
    for target_dir, given in (
        (tiny_run / "fresh", ["--index", 3]),
        (tiny_run / "fresh2", ["--index", 3, "--index", 4]),
    ):
        target_dir.mkdir()
        (target_dir / "user.txt").write_text("mine")
        (target_dir / "explanation.json.tmp").symlink_to(tiny_run / "victim.json")
        (tiny_run / "victim.json").write_text("the user's")
        before = {p.name for p in target_dir.iterdir()}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(explain_run, "_render_sequence", _failing_on_call(2, real_render, KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                explain_run.explain_images(run_dir, out, target_dir, indices=given[1::2], quiet=True)
        assert {p.name for p in target_dir.iterdir()} == before, "nothing of the interrupted image is left"
    run(*args, "--strategy", "class", "--index", 3, "--out", tiny_run / "fresh")  # a whole one, through no link
    assert (tiny_run / "victim.json").read_text() == "the user's"
    earlier = {p.name: p.read_bytes() for p in (tiny_run / "fresh").iterdir() if p.is_file() and not p.is_symlink()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(explain_run, "_render_sequence", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            explain_run.explain_images(run_dir, out, tiny_run / "fresh", indices=[4], quiet=True)
    now = {p.name: p.read_bytes() for p in (tiny_run / "fresh").iterdir() if p.is_file() and not p.is_symlink()}
    assert now == earlier, "the earlier explanation stays whole"

    # Ctrl-C in the middle of the swap waits for its end: the explanation is all new, then the interrupt comes.
    import os
    import signal

    run(*args, "--index", 4, "--out", tiny_run / "reference")
    real_replace = os.replace

    def replace_then_interrupt(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        if Path(dst) == tiny_run / "fresh" / "subset.png":
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            explain_run.explain_images(
                run_dir, out, tiny_run / "fresh", indices=[4], strategies=("subset",), quiet=True
            )
    assert (tiny_run / "fresh" / "subset.png").read_bytes() == (tiny_run / "reference" / "subset.png").read_bytes()
    assert json.loads((tiny_run / "fresh" / "explanation.json").read_text())["source"].startswith("index 4 (")
    assert not (tiny_run / "fresh" / "class.png").exists() and not list((tiny_run / "fresh").glob(".explain-*"))

    # A link in OUT is not written through, whether it leads out of OUT or into it (to OUT itself, whose single
    # explanation the listing then removed): that image is skipped, saying why.
    outside = tiny_run / "outside"
    outside.mkdir()
    (outside / "class.png").write_text("the user's")
    (tiny_run / "linked").mkdir()
    (tiny_run / "linked" / "index-0").symlink_to(outside)
    (tiny_run / "linked" / "c1").symlink_to(outside)  # a link above the image's folder: c1/x would land outside
    (tiny_run / "linked" / "index-2").symlink_to(".")  # OUT itself
    said = run(*args, "--index", 0, "--index", 1, "--index", 2, "--image", folder, "--out", tiny_run / "linked").output
    assert said.count("goes through a link") == 5, "index-0, index-2 and the three images of c1"
    assert sorted(p.name for p in (tiny_run / "linked").iterdir()) == ["c0", "c1", "explanations.json", "index-0",
                                                                         "index-1", "index-2"]  # fmt: skip
    assert sorted(p.name for p in outside.iterdir()) == ["class.png"]
    assert (outside / "class.png").read_text() == "the user's"
    # An earlier listed folder that is now a link to a folder this run writes: clearing it spares that folder.
    (tiny_run / "linked" / "index-1-old").symlink_to("index-1")
    listing = json.loads((tiny_run / "linked" / "explanations.json").read_text())
    listing["images"].append({"source": "earlier", "folder": "index-1-old"})
    (tiny_run / "linked" / "explanations.json").write_text(json.dumps(listing))
    run(*args, "--index", 1, "--index", 3, "--out", tiny_run / "linked")
    assert sorted(p.name for p in (tiny_run / "linked" / "index-1").iterdir()) == ["explanation.json", "subset.png"]

    # A listing that is not what explain wrote (hand-edited, or stale) removes nothing it should not, and no crash.
    odd = tiny_run / "odd"
    (odd / "mine").mkdir(parents=True)
    for name in ("notes", "mine/explanation.json", "explanation.json", "subset.png"):
        (odd / name).write_text("the user's")
    folders = ("notes", ".", "..", "/etc", "a\0b", "", "mine/../notes", "../odd/mine")
    for listing in ({"images": 5}, "[]", *({"images": [{"folder": f}]} for f in folders)):
        (odd / "explanations.json").write_text(json.dumps(listing))
        explain_run._clear_earlier(odd, keep={"index-0"})
        assert (odd / "notes").read_text() == "the user's" and (odd / "mine" / "explanation.json").is_file()
    assert not (odd / "explanation.json").exists(), "a single explanation's files go when a batch replaces them"

    # Each image once, however it is given; an image of AttFind's data keeps its index there as its key (the noise
    # AttFind gave it, and its row of the table), also as a file or a folder; other images are new (key -1).
    data_dir = tiny_run / "data"
    measured = str(data_dir.resolve())
    first = data_dir / data.filenames[0]
    given = explain_run._read_inputs(16, [first, data_dir], 0, data_dir, out, measured=measured)
    assert [i.key for i in given] == list(range(len(data))) == [i.measured_key for i in given]
    assert given[0].source == str(first), "the first way it was given names it"
    assert {i.key for i in explain_run._read_inputs(16, [data_dir], [], None, out, measured="/elsewhere")} == {-1}

    # --target the class every image already has (this tiny model draws every image as one class): nothing is
    # explained, the command fails saying why, and the folder keeps what an earlier run wrote.
    run(*args, "--index", 3, "--index", 4, "--out", tiny_run / "same")
    earlier = sorted(p.relative_to(tiny_run / "same") for p in (tiny_run / "same").rglob("*"))
    none = run(*args, *inputs, "--target", drawn, "--out", tiny_run / "same", ok=False)
    assert none.exit_code == 1 and "none of the 7 images was explained, so " in none.output
    assert "already classified" in none.output
    assert sorted(p.relative_to(tiny_run / "same") for p in (tiny_run / "same").rglob("*")) == earlier

    # attributes that claim another StyleSpace (here: with the toRGB styles) than their effects are refused
    other = tiny_run / "other-attfind"
    other.mkdir()
    (other / "effects.safetensors").write_bytes((out / "effects.safetensors").read_bytes())
    info["settings"]["include_rgb"] = True
    (other / "attributes.json").write_text(json.dumps(info))
    for command in (
        ["explain", "--model", run_dir, "--index", index, "--out", tiny_run / "ex3"],
        ["report", run_dir, "--out", tiny_run / "rep", "--no-generate"],
    ):
        refused = run(*command, "--attributes", other, "--quiet", ok=False)
        assert refused.exit_code == 1 and "was made for another model" in refused.output, refused.output


# ------------------------------------------------------------------------------------------------ toRGB search


def test_rgb_layout_indexes_the_torgb_styles_after_the_conv_styles(tiny):
    G, _, s, _ = tiny
    conv_only = G.layout
    layout = conv_only.with_rgb(True)
    S_conv, L = conv_only.num_coords, len(conv_only.conv_dims)
    assert layout.num_coords == S_conv + sum(conv_only.rgb_dims) and layout.names[L:] == ("toRGB0", "toRGB1", "toRGB2")
    j = S_conv + conv_only.rgb_dims[0] + 3  # toRGB1, channel 3
    assert layout.coord(j).layer == L + 1 and layout.coord(j).channel == 3 and layout.describe(j) == "toRGB1[3]"
    assert layout.flat_index(layout.coord(j)) == j and layout.synthesis_start(L + 1) == 2
    assert layout.synthesis_start(4) == 4 and conv_only.coord(S_conv - 1).layer == L - 1
    with pytest.raises(IndexError):
        conv_only.coord(j)
    s_rgb = s.with_layout(layout)
    flat = s_rgb.flatten()
    assert flat.shape == (3, layout.num_coords) and torch.equal(flat[:, :S_conv], s.flatten())
    edited = s_rgb.shifted(j, 1.5)  # only toRGB1[3] moves
    assert torch.equal(edited.rgb[1][:, 3], s.rgb[1][:, 3] + 1.5)
    assert all(torch.equal(a, b) for a, b in zip(edited.conv, s.conv, strict=True))
    assert torch.equal(edited.rgb[0], s.rgb[0]) and torch.equal(edited.rgb[2], s.rgb[2])


def test_rgb_effects_equal_the_plain_loop_and_fast_mode_ranks_them(tiny):
    G, C, s, noise = tiny
    s = s.with_layout(G.layout.with_rgb(True))
    S = s.layout.num_coords
    expected = reference_effects(G, C, s, noise, shift_size=1.0)  # one full forward per edit
    assert expected.shape[2] == S and expected[:, :, 40:].abs().max() > 1e-2, "toRGB edits must move the logits"
    got = StyleEffects(G, C, max_batch=7, images_per_chunk=2, progress=False).compute(s, noise)
    assert (got.effects - expected).abs().max() < 1e-4
    # fast mode: its gradient reaches the toRGB styles, and its exact entries are exact there too
    fast = StyleEffects(G, C, fast=10, progress=False).compute(s, noise)
    mask = fast.exact[..., None].expand_as(fast.effects)
    assert torch.allclose(fast.effects[mask], got.effects[mask], atol=1e-4)
    grad = StyleEffects(G, C, progress=False)._gradients(s, noise)[:, 0]  # [N, S, K]
    assert grad.shape[1] == S and grad[:, 40:].abs().max() > 0
    rebuilt = fast.style_vector(s.layout)
    assert rebuilt.layout.search_rgb and torch.equal(rebuilt.flatten(), s.flatten())


def test_attfind_include_rgb_finds_a_colour_coordinate(tiny):
    """A classifier that reads only the image's colour balance: every attribute AttFind names with the toRGB
    styles searchable is a toRGB one whose edit alone moves that balance, and the result records the search."""
    G, _, s, noise = tiny

    def redness(x):
        d = (x[:, 0] - x[:, 2]).mean(dim=(1, 2)) * 20
        return torch.stack([d, -d], dim=1)

    conv_only = AttFind(G, redness, top_k=2, sufficiency=False, progress=False, include_rgb=False).run(s, noise)
    assert not conv_only.include_rgb
    result = AttFind(G, redness, top_k=2, sufficiency=False, progress=False, include_rgb=True).run(s, noise)
    assert result.include_rgb and G.layout.search_rgb
    for with_rgb, without in zip(result.classes, conv_only.classes, strict=True):
        top = with_rgb.attributes[0]
        assert top.layer_name.startswith("toRGB") and top.flat_index >= 40, top
        assert top.mean_effect > 1.5 * without.attributes[0].mean_effect, (top, without.attributes[0])
    assert all(a.flat_index < 40 for c in conv_only.classes for a in c.attributes)
    assert json.loads(json.dumps(result.to_dict()))["settings"]["include_rgb"] is True
    from stylex.models.stylespace import use_rgb_coordinates

    use_rgb_coordinates(G, False)
    assert not G.layout.search_rgb and G.layout.num_coords == 40


def test_results_found_before_the_model_trained_on_are_flagged_in_one_line(tmp_path):
    """AttFind records the model's weights (rounded to float16, so that an export matches its run); explain,
    report and evaluate warn, in one `warning:` line, when the model has been trained on since (its results
    describe weights that no longer exist), and not before."""
    root = make_tiny_run(tmp_path, num_images=32, steps=2)
    run, found = root / "run", root / "run" / "attfind"
    run_cli("attfind", "--model", run, "--num-images", 6, "--top-k", 2, "--fast", 4, "--no-render", "--quiet")
    assert "model_fingerprint" in json.loads((found / "attributes.json").read_text())["settings"]

    def explain(model, out):
        result = run_cli("explain", "--model", model, "--attributes", found, "--index", 0, "--top-k", 1,
                         "--strategy", "independent", "--out", tmp_path / out, "--quiet")  # fmt: skip
        return [line for line in result.output.splitlines() if "warning" in line.lower()]

    assert explain(run, "e0") == []
    run_cli("export", run, "--out", tmp_path / "exported", "--num-samples", 4)  # float16 weights
    assert explain(tmp_path / "exported" / "stylex", "e1") == []
    run_cli("train", "--data", root / "data", "--classifier", root / "clf", "--out", run, "--preset", "tiny",
            "--max-steps", 4, "--resume", "--quiet")  # fmt: skip
    (line,) = explain(run, "e2")
    assert line.startswith("warning: ") and "other weights" in line and "--recompute" in line
    assert "(trained on since?)" in line
    run_cli("train", "--data", root / "data", "--classifier", root / "clf", "--out", tmp_path / "other", "--preset",
            "tiny", "--max-steps", 1, "--quiet")  # fmt: skip
    (line,) = explain(tmp_path / "other", "e3")  # another run's attributes: said so, not "trained on since"
    assert f"(it was found for {run}" in line
    # attributes in a folder of their own: the command to redo them names it (`--recompute` alone redid RUN/attfind)
    shutil.copytree(found, tmp_path / "mine")
    result = run_cli("explain", "--model", run, "--attributes", tmp_path / "mine", "--index", 0, "--top-k", 1,
                     "--strategy", "independent", "--out", tmp_path / "e4", "--quiet")  # fmt: skip
    assert f"Run `stylex attfind --model {run} --out {tmp_path / 'mine'} --recompute`" in result.output


def test_an_explanation_says_at_which_edit_it_flips():
    """The explanation's words count the edits up to the flip, not all the edits it applied (it said "flips after
    5 edits" for a flip at the first)."""
    from stylex.explain.counterfactual import ExplanationStep, ImageExplanation

    def explanation(predicted):
        steps = [
            ExplanationStep(j, 0, "b4.conv0", j, "max", 0.1, [0.0, 1.0], [0.3, 0.7], p) for j, p in enumerate(predicted)
        ]
        return ImageExplanation("class", "x", ["a", "b"], 0, 1, [1.0, 0.0], [0.7, 0.3], steps)

    assert explanation([1, 1, 1, 1, 1]).outcome == "flips at edit 1 of 5"
    assert explanation([0, 0, 1]).to_dict()["num_edits_to_flip"] == 3
    assert explanation([0, 1, 0]).outcome == "flips at edit 2 of 3, and is back by the last"
    assert explanation([0]).outcome == "does not flip in 1 edit"
    three = ImageExplanation("class", "x", ["7", "1", "4"], 0, 1, [1.0, 0.0, 0.0], [0.7, 0.2, 0.1],
                             explanation([1, 2, 2]).steps)  # fmt: skip
    assert three.outcome == "flips at edit 1 of 3, and is '4' by the last", "not 'back': it went on to a third class"
    saved = three.to_dict()  # explanation.json: `flipped` (ends as the target) beside the class it ends as, in words
    assert saved["flipped"] is False and saved["num_edits_to_flip"] == 1 and saved["final_class"] == 2
    assert saved["outcome"] == three.outcome
    # a 9-class image at 0.201 against 0.200 "flipped" at the first edit: said to start from a near-tie
    tie = ImageExplanation("class", "x", ["a", "b", "c"], 0, 1, [0.0] * 3, [0.34, 0.33, 0.33], explanation([1]).steps)
    assert tie.outcome == "flips at edit 1 of 1 (from a near-tie: p 0.340 against 0.330)"


def test_a_target_is_an_index_as_an_int_and_a_name_as_text():
    """With classes named "1", "2", "3", target=1 from Python is the class at index 1 ("2"); the text "1" (the
    command line's --target 1) is the class named "1"; text that names no class is an index."""
    from stylex.explain.run import _resolve_class

    names = ["1", "2", "3"]
    assert [_resolve_class(t, names) for t in (1, "1", 0, "0", 2)] == [1, 0, 0, 0, 2]
    nfd = unicodedata.normalize("NFD", "Ödem")  # a folder named on macOS, the name typed elsewhere (or back)
    assert _resolve_class(nfd, ["a", "Ödem"]) == 1 and _resolve_class("Ödem", ["a", nfd]) == 1
    result = AttFindResult(classes=[ClassAttributes(k, name, 0, []) for k, name in enumerate(names)])
    assert result.for_class(1).class_name == "2" and result.for_class("1").class_index == 0
    assert result.for_class("0").class_index == 0


def test_explaining_toward_the_class_the_image_already_has_is_refused(tmp_path, monkeypatch):
    """`explain --target` the image's own predicted class used to report a flip after one edit; for a new image it
    is refused before the effects of every coordinate are computed."""
    root = make_tiny_run(tmp_path, num_images=32, steps=2)
    run = root / "run"
    run_cli("attfind", "--model", run, "--num-images", 6, "--top-k", 2, "--fast", 4, "--no-render", "--quiet")
    args = ["explain", "--model", run, "--attributes", run / "attfind", "--index", 0, "--strategy", "independent"]
    args += ["--top-k", 1, "--quiet"]
    run_cli(*args, "--out", tmp_path / "any")
    e = json.loads((tmp_path / "any" / "explanation.json").read_text())["strategies"]["independent"]
    own = e["class_names"][e["original_class"]]
    result = run_cli(*args, "--target", own, "--out", tmp_path / "own", ok=False)
    assert result.exit_code == 1 and f"already classified as {own!r}" in result.output
    image = [
        "explain",
        "--model",
        run,
        "--attributes",
        run / "attfind",
        "--image",
        next((root / "data").rglob("*.png")),
    ]
    run_cli(*image, "--strategy", "independent", "--top-k", 1, "--quiet", "--out", tmp_path / "img")
    e = json.loads((tmp_path / "img" / "explanation.json").read_text())["strategies"]["independent"]
    own = e["class_names"][e["original_class"]]

    def no_effects(*a, **k):
        raise AssertionError("the effects were computed before the target was refused")

    monkeypatch.setattr("stylex.attfind.effects.StyleEffects.compute", no_effects)
    result = run_cli(*image, "--target", own, "--out", tmp_path / "own2", ok=False)
    assert result.exit_code == 1 and f"already classified as {own!r}" in result.output


def test_a_second_run_into_the_same_folder_leaves_no_stale_pictures(tmp_path):
    """attfind with a smaller --top-k left the earlier ranks' GIFs and strips; explain with fewer strategies left the
    other strategies' PNGs beside an explanation.json that no longer named them."""
    root = make_tiny_run(tmp_path, num_images=32, steps=2)
    run, out = root / "run", tmp_path / "af"
    args = ("attfind", "--model", run, "--num-images", 6, "--fast", 4, "--frames", 3, "--quiet", "--out", out)
    run_cli(*args, "--top-k", 3)
    ranks = {p.name[:2] for p in (out / "attributes").rglob("*.png")}
    mine = next((out / "attributes").iterdir()) / "notes.txt"  # a file of one's own beside the pictures stays
    mine.write_text("mine")
    run_cli(*args, "--top-k", 1)
    assert ranks > {"01"} and {p.name[:2] for p in (out / "attributes").rglob("*.png")} == {"01"}
    assert mine.read_text() == "mine"
    run_cli(*args, "--top-k", 1, "--no-render")  # no pictures drawn: none of the earlier ones is left either
    assert not list((out / "attributes").rglob("*.png")) and not list((out / "attributes").rglob("*.gif"))
    assert mine.read_text() == "mine"

    explain = ("explain", "--model", run, "--attributes", out, "--index", 0, "--top-k", 1, "--quiet", "--out")
    run_cli(*explain, tmp_path / "ex")
    assert {p.name for p in (tmp_path / "ex").glob("*.png")} == {"independent.png", "subset.png", "class.png"}
    run_cli(*explain, tmp_path / "ex", "--strategy", "class")
    assert {p.name for p in (tmp_path / "ex").glob("*.png")} == {"class.png"}

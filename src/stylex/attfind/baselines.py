"""Baselines for AttFind, written as the same `AttFindResult`, so that sufficiency and the ground-truth metrics
treat every method alike.

- **Wu et al.** (CVPR 2021, "StyleSpace analysis", their detector of class-specific channels): for class y take
  the images most typical of it (the top `typical_share` = 2% by the classifier's probability of y on the
  reconstructions, at least `min_typical` images), and score every conv style coordinate j by
  ``|mean_typical(s_j) - mean_all(s_j)| / std_all(s_j)``; the top K are y's attributes, each edited toward the
  coordinate's maximum when the typical mean lies above the overall mean, else toward its minimum.
- **Random coordinates**: K coordinates per class drawn uniformly without replacement (seeded), with the same
  direction rule as Wu et al. (toward the side where y's typical images lie), so that only the choice of
  coordinates is left to chance.

The edit itself is AttFind's (`edit_styles`: s_j moves `shift_size` of the way to the coordinate's minimum or
maximum over the N images). Each attribute's ``mean_effect`` holds the method's own score (Wu: the normalised
mean difference; random: 0), not a logit change; ``flip_rate`` is measured like AttFind's (the share of images
not predicted as y that the edit alone turns into y).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stylex.attfind.result import AttFindResult, Attribute, ClassAttributes
from stylex.errors import StylexError
from stylex.models.stylespace import StyleLayout, StyleVector

if TYPE_CHECKING:
    from stylex.models.generator import Generator

METHODS = ("wu", "random")
"""Names of the baselines `run_baseline` knows."""
TYPICAL_SHARE = 0.02
"""Wu et al.: share of the images, the most confidently classified as y, that stand for class y."""
MIN_TYPICAL = 5
"""At least this many typical images per class (2% of a few hundred images is only a handful)."""


def typical_difference(
    s_flat: torch.Tensor,
    probs: torch.Tensor,
    y: int,
    typical_share: float = TYPICAL_SHARE,
    min_typical: int = MIN_TYPICAL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wu et al.'s score of every coordinate for class y, and the side class y lies on.

    Args:
        s_flat: conv styles [N, S].
        probs: classifier probabilities [N, K] of the images (of their reconstructions).
        y: the class.
        typical_share, min_typical: how many of the most confident images stand for y.

    Returns:
        score [S] = |mean over the typical images - mean over all| / std over all (0 where the std is 0), and
        direction [S] (1 = "max" where the typical mean is above the overall mean, else 0 = "min").
    """
    n = s_flat.shape[0]
    m = min(n, max(min_typical, math.ceil(typical_share * n)))
    typical = probs[:, y].topk(m).indices  # [m]
    s = s_flat.double()
    diff = s[typical].mean(dim=0) - s.mean(dim=0)  # [S]
    std = s.std(dim=0, unbiased=False)
    score = torch.where(std > 0, diff.abs() / std.clamp(min=1e-12), torch.zeros_like(diff))
    return score.float(), (diff > 0).long()


@torch.no_grad()
def single_edit_flip_rates(
    G: Generator,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    s: StyleVector,
    noise: list[torch.Tensor],
    predicted: torch.Tensor,
    y: int,
    edits: Sequence[tuple[int, int]],
    s_min: torch.Tensor,
    s_max: torch.Tensor,
    shift_size: float = 1.0,
    batch_size: int = 64,
) -> list[float]:
    """For each edit alone: the share of the images not predicted as y that it turns into y (0 if there are none)."""
    from stylex.metrics.sufficiency import count_flips

    rows = torch.nonzero(predicted.cpu() != y).flatten()
    rates = []
    for edit in edits:
        flipped = count_flips(G, classifier, s, noise, rows, y, [edit], s_min, s_max, shift_size, batch_size)
        rates.append(flipped / rows.numel() if rows.numel() else 0.0)
    return rates


def baseline_attributes(
    method: str,
    s_flat: torch.Tensor,
    probs: torch.Tensor,
    layout: StyleLayout,
    top_k: int = 10,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    typical_share: float = TYPICAL_SHARE,
    min_typical: int = MIN_TYPICAL,
    flip_rates: Callable[[int, list[tuple[int, int]]], list[float]] | None = None,
) -> AttFindResult:
    """Per class, the top-K attributes of a baseline (module docstring).

    Args:
        method: "wu" or "random".
        s_flat: conv styles of the N images [N, S].
        probs: classifier probabilities of their reconstructions [N, K].
        layout: the generator's style layout.
        top_k: attributes per class.
        seed: seeds the random coordinates.
        class_names: names of the K classes.
        typical_share, min_typical: see `typical_difference`.
        flip_rates: (y, edits) -> each edit's flip rate (e.g. `single_edit_flip_rates`); None leaves them 0.

    Returns:
        `AttFindResult` (no effects, no sufficiency yet); settings name the method.
    """
    if method not in METHODS:
        raise StylexError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}.")
    if top_k < 1:
        raise StylexError(f"top_k must be at least 1, got {top_k}.")
    n, S = s_flat.shape
    K = probs.shape[1]
    if probs.shape[0] != n or layout.num_coords != S:
        raise StylexError(f"styles [{n}, {S}] and probabilities {list(probs.shape)} do not fit the layout.")
    names = list(class_names) if class_names is not None else [str(k) for k in range(K)]
    predicted = probs.argmax(dim=1)
    classes = []
    for y in range(K):
        score, direction = typical_difference(s_flat, probs, y, typical_share, min_typical)
        k = min(top_k, S)
        if method == "wu":
            coords = score.topk(k).indices.tolist()
        else:
            coords = torch.randperm(S, generator=torch.Generator().manual_seed(seed * 1_000_003 + y))[:k].tolist()
        edits = [(j, int(direction[j])) for j in coords]
        rates = flip_rates(y, edits) if flip_rates is not None else [0.0] * len(edits)
        attributes = []
        for rank, ((j, d), rate) in enumerate(zip(edits, rates, strict=True), start=1):
            mean = float(score[j]) if method == "wu" else 0.0
            attributes.append(Attribute.of(layout, rank, j, d, mean, rate))
        classes.append(ClassAttributes(y, names[y], int((predicted != y).sum()), attributes))
    settings = {
        "method": method,
        "top_k": top_k,
        "num_images": n,
        "typical_share": typical_share,
        "min_typical": min_typical,
        "direction_rule": "toward the mean of the class's typical images",  # random coordinates too
        "mean_effect": "Wu et al.'s score |mean_typical - mean_all| / std" if method == "wu" else "not measured (0)",
        "include_rgb": layout.search_rgb,
    }
    return AttFindResult(classes, settings)


@torch.no_grad()
def run_baseline(
    run_dir: str | os.PathLike,
    method: str,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    num_images: int = 250,
    top_k: int = 10,
    seed: int = 0,
    shift_size: float = 1.0,
    typical_share: float = TYPICAL_SHARE,
    min_typical: int = MIN_TYPICAL,
    classifier=None,
    device: str = "cpu",
    batch_size: int = 64,
    include_rgb: bool | None = None,
    quiet: bool = False,
) -> AttFindResult:
    """A baseline on a trained run, on the images `stylex attfind` would use with the same `num_images` and `seed`;
    writes ``out/attributes.json`` (default RUN/<method>) with flip rates and sufficiency@top_k, like AttFind.

    Args:
        run_dir: a run folder written by `stylex train` (for Wu et al. as in their paper: a model trained without
            the classifier, `TrainConfig.conditional=False`).
        method: "wu" or "random".
        data: images (default the run's own data).
        out: output folder.
        num_images, seed: which images (as `stylex attfind --num-images N --seed S`) and their fixed noise.
        top_k: attributes per class.
        shift_size: edit size.
        typical_share, min_typical: see `typical_difference`.
        classifier: a loaded classifier instead of the recorded one.
        device: where the networks run.
        batch_size: images per forward pass.
        include_rgb: rank the toRGB styles too (see `stylex.models.stylespace.use_rgb_coordinates`; None: on for a
            model with tint styles).
        quiet: no progress bar while a large folder is read.

    Returns:
        the `AttFindResult`.
    """
    from stylex.attfind.run import ATTRIBUTES_FILE, class_names_of, encode_dataset, pick_indices
    from stylex.data import load_dataset
    from stylex.metrics.sufficiency import sufficiency
    from stylex.models.stylespace import use_rgb_coordinates
    from stylex.pipeline import load_run, recorded_data

    if method not in METHODS:
        raise StylexError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}.")
    model, classifier = load_run(run_dir, classifier, device)
    use_rgb_coordinates(model.G, include_rgb)
    data = recorded_data(run_dir, data, model.run_info.get("data"))
    dataset = load_dataset(data, resolution=model.resolution, progress=not quiet)
    if len(dataset) < 2:
        raise StylexError(f"{data} has {len(dataset)} image; a baseline needs at least 2 (min and max of each style).")
    indices = pick_indices(len(dataset), num_images, seed)
    s, noise = encode_dataset(model, classifier, dataset, indices, seed, device, batch_size)
    s_flat = s.flatten().float()
    s_min, s_max = s_flat.min(dim=0).values, s_flat.max(dim=0).values
    logits = torch.cat(
        [
            classifier(model.G.synthesis(s.index(slice(a, a + batch_size)), [n[a : a + batch_size] for n in noise]))
            for a in range(0, len(indices), batch_size)
        ]
    ).cpu()  # [N, K]
    predicted = logits.argmax(dim=1)

    def flips(y: int, edits: list[tuple[int, int]]) -> list[float]:
        return single_edit_flip_rates(
            model.G, classifier, s, noise, predicted, y, edits, s_min, s_max, shift_size, batch_size
        )

    result = baseline_attributes(
        method, s_flat.cpu(), logits.softmax(dim=1), model.G.layout, top_k, seed, class_names_of(model, classifier),
        typical_share, min_typical, flips,
    )  # fmt: skip
    figures = sufficiency(
        model.G, classifier, s, noise, logits, {c.class_index: c.edits for c in result.classes}, s_min, s_max,
        shift_size, batch_size,
    )  # fmt: skip
    for c in result.classes:
        c.sufficiency = figures["per_class"][c.class_index]
    result.sufficiency = figures["overall"]
    result.settings.update(shift_size=shift_size, run=str(run_dir), data=str(Path(data).resolve()), seed=seed)
    result.stats["sufficiency_counts"] = {result.classes[y].class_name: v for y, v in figures["counts"].items()}
    out = Path(out) if out is not None else Path(run_dir) / method
    result.save(out / ATTRIBUTES_FILE)
    return result

"""AttFind step 2: pick, per class, the attributes that push images toward it (official notebook semantics).

Per target class y:
1. take the images whose unedited reconstruction is not predicted as y;
2. score every (coordinate j, direction d) edit by its effect on y's score, clipped at 0: the logit y
   (K = 2, as in the notebook), or the one-vs-all log-odds logit_y - logsumexp_{k != y} logit_k (K > 2);
3. repeat K times: pick the edit with the largest mean score over the images whose accumulated score (over
   the edits picked so far) is still below `threshold`; add its scores to the accumulators; zero its column.

`rank_stability` then asks how much of that ranking is owed to the particular N images: it reruns the search on
bootstrap resamples of the images and records, per attribute, how often it is picked again and at which ranks (not
in the paper or the notebook).

The notebook's optional discriminator filter, which skips a candidate whose edited images the discriminator judges
differently, comes in through `select_attributes`' `candidate_filter` hook (`filters.DiscriminatorFilter`, off by
default, as in the notebook).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from stylex.attfind.effects import Effects
from stylex.attfind.result import AttFindResult, Attribute, ClassAttributes
from stylex.errors import StylexError
from stylex.models.stylespace import StyleLayout


def class_scores(effects: Effects, y: int, one_vs_all: bool) -> torch.Tensor:
    """The change of class y's score under every edit [N, 2, S].

    Args:
        effects: the effect table.
        y: target class.
        one_vs_all: False: the change of logit y. True: the change of logit_y - logsumexp_{k != y} logit_k.
    """
    if not one_vs_all:
        return effects.effects[..., y]
    base = effects.base_logits[:, None, None, :]  # [N, 1, 1, K]
    new = base + effects.effects  # [N, 2, S, K]
    others = [k for k in range(effects.num_classes) if k != y]

    def log_odds(logits: torch.Tensor) -> torch.Tensor:
        return logits[..., y] - torch.logsumexp(logits[..., others], dim=-1)

    return log_odds(new) - log_odds(base)


def greedy_select(
    scores: torch.Tensor,
    top_k: int,
    threshold: float = 1.0,
    candidate_filter: Callable[[int, int], bool] | None = None,
    counting: list[int] | None = None,
) -> list[tuple[int, int, float]]:
    """The notebook's greedy search on one class's scores.

    Args:
        scores: [M, 2, S] effect on the target score for the M images not predicted as the target.
        top_k: how many edits to pick.
        threshold: an image stops counting once the summed scores of the picked edits reach this (1.0 = 5 x 0.2
            in the notebook); float("inf") turns the drop-out off.
        candidate_filter: (j, d) -> keep?; a rejected candidate is zeroed and the next best is tried.
        counting: if given, receives for each pick the number of images still below `threshold` before it (0: the
            pick ranked every image, as the drop-out has nothing left to drop).

    Returns:
        [(j, d, mean score)] best first; empty if M == 0.
    """
    m, two, S = scores.shape
    if m == 0:
        return []
    table = scores.reshape(m, two * S).clamp(min=0).clone()  # [M, 2S], column d * S + j as in the notebook
    accumulated = torch.zeros(m)
    picked: list[tuple[int, int, float]] = []
    while len(picked) < min(top_k, two * S):
        active = accumulated < threshold
        rows = table[active] if active.any() else table  # all images done: fall back to every image
        mean = rows.mean(dim=0)  # [2S]
        col = int(mean.argmax())
        j, d = col % S, col // S
        if candidate_filter is not None and not candidate_filter(j, d):
            table[:, col] = 0
            continue
        picked.append((j, d, float(mean[col])))
        if counting is not None:
            counting.append(int(active.sum()))
        accumulated += table[:, col]
        table[:, col] = 0
    return picked


def select_attributes(
    effects: Effects,
    layout: StyleLayout,
    top_k: int = 10,
    threshold: float = 1.0,
    one_vs_all: bool | None = None,
    class_names: Sequence[str] | None = None,
    keep_images: torch.Tensor | None = None,
    candidate_filter: Callable[[int, int, int], bool] | None = None,
) -> AttFindResult:
    """Per class, the top-K attributes (no sufficiency yet: that needs the generator, see `AttFind`).

    Args:
        effects: the effect table.
        layout: the generator's style layout (names the coordinates).
        top_k: attributes per class.
        threshold: see `greedy_select`.
        one_vs_all: score by the one-vs-all log-odds; default True when K > 2, False (logit y) when K = 2.
        class_names: names of the K classes (default "0", "1", ...).
        keep_images: bool [N], images to use (e.g. from `filters.stable_images`); default all.
        candidate_filter: (class y, j, d) -> keep? (hook for a discriminator filter).

    Returns:
        `AttFindResult` with `effects` attached.
    """
    if top_k < 1:
        raise StylexError(f"top_k must be at least 1, got {top_k}.")
    if layout.num_coords != effects.num_coords:
        raise StylexError(
            f"the effect table has {effects.num_coords} coordinates but the model has {layout.num_coords}; "
            "re-run `stylex attfind` for this model."
        )
    K = effects.num_classes
    one_vs_all = K > 2 if one_vs_all is None else one_vs_all
    names = list(class_names) if class_names is not None else [str(k) for k in range(K)]
    if len(names) != K:
        raise StylexError(f"{len(names)} class names for a classifier with {K} classes.")
    keep = torch.ones(effects.num_images, dtype=torch.bool) if keep_images is None else keep_images.bool()
    pred = effects.predicted
    classes = []
    for y in range(K):
        rows = torch.nonzero((pred != y) & keep).flatten()  # [M]
        scores = class_scores(effects, y, one_vs_all)[rows]  # [M, 2, S]
        flt = None if candidate_filter is None else (lambda j, d, y=y: candidate_filter(y, j, d))
        counting: list[int] = []
        picked = greedy_select(scores, top_k, threshold, flt, counting)
        attributes = []
        for rank, (j, d, mean) in enumerate(picked, start=1):
            after = effects.base_logits[rows] + effects.effects[rows, d, j]  # [M, K]
            attributes.append(Attribute.of(layout, rank, j, d, mean, float((after.argmax(dim=1) == y).float().mean())))
        classes.append(ClassAttributes(y, names[y], int(rows.numel()), attributes, counting=counting))
    settings = {
        "top_k": top_k,
        "threshold": threshold,
        "shift_size": effects.shift_size,
        "score": "one_vs_all" if one_vs_all else "logit",
        "num_images": effects.num_images,
        "num_images_used": int(keep.sum()),
        "discriminator_filter": candidate_filter is not None,
        "include_rgb": layout.search_rgb,
    }
    return AttFindResult(classes, settings, None, dict(effects.meta), effects)


def rank_stability(
    effects: Effects,
    result: AttFindResult,
    resamples: int = 100,
    seed: int = 0,
    keep_images: torch.Tensor | None = None,
    candidate_filter: Callable[[int, int, int], bool] | None = None,
) -> None:
    """How much each class's ranking depends on the particular images: the search rerun on bootstrap resamples.

    For each class y, the images AttFind used for y (not predicted as y, and in `keep_images`) are drawn
    `resamples` times with replacement, and the greedy search is rerun with the result's settings on each draw.
    Fills, per class, `stability` (per attribute: the share of draws in which it is again among the top K) and
    `resampled_ranks` (per attribute: the quartiles of its rank over the draws, K + 1 for a draw that does not
    pick it), and records `stability_resamples` in the settings. Cheap: no generator or classifier runs, only the
    selection on the stored effect table.

    Args:
        effects: the effect table the result was selected from.
        result: `select_attributes`' result for that table (modified in place).
        resamples: bootstrap draws per class; 0 leaves the result as it is.
        seed: seeds the draws.
        keep_images: bool [N], the images the selection used (default all).
        candidate_filter: the selection's (class y, j, d) -> keep? filter, applied to every draw as well.
    """
    if resamples <= 0:
        return
    settings = result.settings
    top_k = int(settings.get("top_k", max((len(c.attributes) for c in result.classes), default=1)))
    threshold = float(settings.get("threshold", 1.0))
    one_vs_all = settings.get("score") == "one_vs_all"
    keep = torch.ones(effects.num_images, dtype=torch.bool) if keep_images is None else keep_images.bool()
    pred = effects.predicted
    generator = torch.Generator().manual_seed(seed)
    absent = top_k + 1
    for c in result.classes:
        rows = torch.nonzero((pred != c.class_index) & keep).flatten()
        if rows.numel() == 0 or not c.attributes:
            continue
        scores = class_scores(effects, c.class_index, one_vs_all)[rows]  # [M, 2, S]
        ranks = torch.full((resamples, len(c.attributes)), absent, dtype=torch.float32)
        wanted = {a.edit: i for i, a in enumerate(c.attributes)}
        flt = None if candidate_filter is None else (lambda j, d, y=c.class_index: candidate_filter(y, j, d))
        for b in range(resamples):
            draw = torch.randint(rows.numel(), (rows.numel(),), generator=generator)
            for rank, (j, d, _) in enumerate(greedy_select(scores[draw], top_k, threshold, flt), start=1):
                if (j, d) in wanted:
                    ranks[b, wanted[(j, d)]] = rank
        quartiles = torch.quantile(ranks, torch.tensor([0.25, 0.5, 0.75]), dim=0, interpolation="nearest")  # [3, A]
        c.stability = [round(float(v), 4) for v in (ranks <= top_k).float().mean(dim=0)]
        c.resampled_ranks = [[int(v) for v in quartiles[:, i]] for i in range(len(c.attributes))]
    settings["stability_resamples"] = resamples

"""Where a conditioned model keeps the class: swap the logits G sees, and see which styles carry the change.

A StylEx generator sees the classifier's logits c beside E(x) (w' = concat(w, c)), and every style affine is
linear in w', so giving G another class's logits moves every style by a fixed amount: the same for every image.
`class_swap` replaces the logits of each image by the mean logits of the images the classifier puts in class
y, and counts how often the classifier then decides y, when the swap reaches

- ``all``: every style (conv and toRGB), i.e. G(E(x), c_y);
- ``conv``: only the conv styles, the StyleSpace AttFind searches (toRGB styles unchanged);
- ``rgb``: only the toRGB styles;
- ``top{k}``: only the k conv coordinates the swap moves most (relative to each coordinate's range over the
  images), each set to the end of its range it moves toward, as an AttFind attribute is (shift size 1).

When ``all`` flips nearly every image but ``conv`` or ``top{k}`` flips few, the class is there but spread
over many coordinates or held by the toRGB styles, and sufficiency@K stays low however well AttFind searches:
a property of the trained model (see `TrainConfig.cond_rgb` and `TrainConfig.cond_sparsity`), not of the search.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stylex.attfind.effects import edit_styles
from stylex.models.stylespace import StyleVector
from stylex.models.stylex import condition

MODES = ("all", "conv", "rgb")


@torch.no_grad()
def class_swap(
    model,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    noise: list[torch.Tensor],
    base_logits: torch.Tensor,
    s_min: torch.Tensor,
    s_max: torch.Tensor,
    k: int = 10,
    batch_size: int = 64,
) -> dict | None:
    """Decision-change rates of logit swaps (module docstring); None for a model trained without conditioning.

    Args:
        model: a loaded `StylEx`.
        classifier: logits of images [N, 3, R, R].
        x: the images [N, 3, R, R] (their own logits are what G saw).
        noise: per-image fixed noise (as AttFind's).
        base_logits: the classifier's logits [N, K] of the unedited reconstructions: an image counts for class y
            when its reconstruction is not decided as y (as in sufficiency@K).
        s_min, s_max: [S] the conv coordinates' ranges over the images (AttFind's edit targets).
        k: coordinates of the ``top{k}`` variant.
        batch_size: images per forward pass.

    Returns:
        {"k", "per_class": {y: {mode: rate}}, "counts": {y: images}, "overall": {mode: rate}}, class indices as
        keys; a class no image is decided as (no donor) or that every reconstruction already is, is left out.
    """
    if not model.config.conditional:
        return None
    G = model.G
    device = x.device
    parts = [
        (model.encode(x[a : a + batch_size]), classifier(x[a : a + batch_size])) for a in range(0, len(x), batch_size)
    ]
    w = torch.cat([p[0] for p in parts])  # [N, w_dim]
    c = torch.cat([p[1] for p in parts]).float()  # [N, K]
    donors_of = c.argmax(dim=1).cpu()
    predicted = base_logits.argmax(dim=1).cpu()
    span = (s_max - s_min).to(device).clamp_min(1e-8)
    top = f"top{k}"
    per_class: dict[int, dict[str, float]] = {}
    counts: dict[int, int] = {}
    flips_total = dict.fromkeys((*MODES, top), 0)
    for y in range(c.shape[1]):
        rows = (predicted != y).nonzero().squeeze(1)
        donors = (donors_of == y).nonzero().squeeze(1)
        if rows.numel() == 0 or donors.numel() == 0:
            continue
        c_y = c[donors.to(device)].mean(dim=0, keepdim=True)  # [1, K]
        # The swap moves an image's styles by A_c (c_y - c): over the images, on average by A_c (c_y - mean c).
        probe = w[:1]
        c_rows = c[rows.to(device)].mean(dim=0, keepdim=True)
        mean_shift = (
            G.styles(probe, condition(c_y, model.config)).flatten()
            - G.styles(probe, condition(c_rows, model.config)).flatten()
        )[0]  # [S]
        ranked = (mean_shift.abs() / span).topk(min(k, span.numel())).indices
        edits = [(int(j), int(mean_shift[j] > 0)) for j in ranked if mean_shift[j] != 0]  # none: conv blind to c
        flips = dict.fromkeys(flips_total, 0)
        for a in range(0, rows.numel(), batch_size):
            r = rows[a : a + batch_size].to(device)
            s0 = G.styles(w[r], condition(c[r], model.config))
            s1 = G.styles(w[r], condition(c_y.expand(len(r), -1), model.config))
            variants = {
                "all": s1,
                "conv": StyleVector(list(s1.conv), list(s0.rgb), s0.layout),
                "rgb": StyleVector(list(s0.conv), list(s1.rgb), s0.layout),
            }
            variants[top] = edit_styles(s0, edits, s_min.to(device), s_max.to(device), 1.0)
            nb = [n[r] for n in noise]
            for mode, s_edit in variants.items():
                flips[mode] += int((classifier(G.synthesis(s_edit, nb)).argmax(dim=1).cpu() == y).sum())
        counts[y] = int(rows.numel())
        per_class[y] = {mode: v / counts[y] for mode, v in flips.items()}
        for mode, v in flips.items():
            flips_total[mode] += v
    total = sum(counts.values())
    overall = {mode: (v / total if total else None) for mode, v in flips_total.items()}
    return {"k": k, "per_class": per_class, "counts": counts, "overall": overall}

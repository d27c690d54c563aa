"""Sufficiency@K (Lang et al. 2021, Sec. 4.2): do a class's top-K attributes, applied together, flip the decision?

For each target class y and each image whose unedited reconstruction is not predicted as y, apply y's K
attributes together (`edit_styles`) with the image's fixed noise and check whether the classifier now
predicts y. Per class: the share of such images that flip. Overall: flips over all (image, class) pairs; with
two classes every image counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from stylex.attfind.effects import edit_styles
from stylex.models.stylespace import StyleVector

if TYPE_CHECKING:
    from stylex.models.generator import Generator


@torch.no_grad()
def count_flips(
    G: Generator,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    s: StyleVector,
    noise: list[torch.Tensor],
    rows: torch.Tensor,
    y: int,
    edits: Sequence[tuple[int, int]],
    s_min: torch.Tensor,
    s_max: torch.Tensor,
    shift_size: float = 1.0,
    batch_size: int = 64,
) -> int:
    """How many of the images `rows` [M] the edits (flat j, direction d), applied together, turn into class y."""
    device = s.conv[0].device
    s_min, s_max = s_min.to(device), s_max.to(device)
    flipped = 0
    for a in range(0, rows.numel(), batch_size):
        r = rows[a : a + batch_size].to(device)
        s_edit = edit_styles(s.index(r), list(edits), s_min, s_max, shift_size)
        logits = classifier(G.synthesis(s_edit, [n[r] for n in noise]))  # [B, K]
        flipped += int((logits.argmax(dim=1).cpu() == y).sum())
    return flipped


@torch.no_grad()
def sufficiency(
    G: Generator,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    s: StyleVector,
    noise: list[torch.Tensor],
    base_logits: torch.Tensor,
    edits: dict[int, Sequence[tuple[int, int]]],
    s_min: torch.Tensor,
    s_max: torch.Tensor,
    shift_size: float = 1.0,
    batch_size: int = 64,
) -> dict:
    """Sufficiency per class and overall.

    Args:
        G: generator.
        classifier: images -> logits [N, K].
        s: styles of the N images; noise: their fixed noise maps.
        base_logits: [N, K] logits of the unedited reconstructions (which images are "not y").
        edits: class y -> its attributes as (flat j, direction d), best first (cut to K by the caller).
        s_min, s_max, shift_size: the edit targets and size used by AttFind.
        batch_size: images per forward pass.

    Returns:
        {"per_class": {y: rate or None}, "counts": {y: [flipped, total]}, "overall": rate or None}.
    """
    pred = base_logits.argmax(dim=1).cpu()
    per_class, counts = {}, {}
    for y, edit_list in edits.items():
        rows = torch.nonzero(pred != y).flatten()
        flipped = count_flips(G, classifier, s, noise, rows, y, list(edit_list), s_min, s_max, shift_size, batch_size)
        total = int(rows.numel())
        counts[y] = [flipped, total]
        per_class[y] = flipped / total if total and edit_list else None
    total = sum(t for y, (_, t) in counts.items() if per_class[y] is not None)
    flips = sum(f for y, (f, _) in counts.items() if per_class[y] is not None)
    return {"per_class": per_class, "counts": counts, "overall": flips / total if total else None}

"""Optional filters of the AttFind search (all off by default, as in the official notebook)."""

from __future__ import annotations

import torch

from stylex.attfind.effects import Effects


def stable_images(effects: Effects, effect_threshold: float = 0.3, max_large_effects: int = 750) -> torch.Tensor:
    """Images whose reconstruction is not unstable: the notebook drops an image when too many edits move it a lot.

    Args:
        effects: the effect table [N, 2, S, K].
        effect_threshold: a logit change larger than this (in absolute value) counts as large.
        max_large_effects: an image with more large changes than this (over directions, coordinates and
            classes) is dropped.

    Returns:
        keep [N] bool, for `select_attributes(keep_images=...)`.
    """
    count = (effects.effects.abs() > effect_threshold).sum(dim=(1, 2, 3))  # [N]
    return count <= max_large_effects


class DiscriminatorFilter:
    """The notebook's optional discriminator filter: skip a coordinate whose edit makes images the discriminator
    judges differently (artifacts rather than an attribute).

    For a candidate coordinate j of class y, in each direction, the first `num_images` images on which the edit
    raises logit y by more than `effect_threshold` are regenerated with and without the edit, and D scores both
    (each with the classifier's logits of its own image, as D was trained). If D's score moves by more than
    `threshold` on any of them, j is rejected for y (both directions, as in the notebook). D sees each image alone
    (its minibatch-std group set to 1), so that a score does not depend on the other images of the batch. Verdicts
    are cached per (y, j): the bootstrap resamples of `rank_stability` reuse them; so are D's scores of the unedited
    images, which every candidate compares against.

    Args:
        G: the generator the effects were computed with.
        D: the run's discriminator, (x [N, 3, R, R], logits [N, K]) -> score [N].
        classifier: images -> logits [N, K].
        s: the styles of the effect table's images; noise: their fixed noise maps.
        effects: the effect table (edit targets, shift size, per-image effects).
        threshold: largest allowed change of D's score (0.2 in the notebook).
        effect_threshold: how much an edit must raise logit y on an image for the image to be checked (0.2).
        num_images: images checked per direction (10).

    Call it as `filter(y, j, d) -> keep?` (the `candidate_filter` of `select_attributes`). `rejected` lists the
    (y, j) pairs it rejected, in order; `max_change` holds the largest score change seen per (y, j).
    """

    def __init__(
        self,
        G,
        D,
        classifier,
        s,
        noise: list[torch.Tensor],
        effects: Effects,
        threshold: float = 0.2,
        effect_threshold: float = 0.2,
        num_images: int = 10,
    ):
        self.G, self.D, self.C, self.s, self.noise, self.effects = G, D, classifier, s, noise, effects
        self.threshold, self.effect_threshold, self.num_images = threshold, effect_threshold, num_images
        self.max_change: dict[tuple[int, int], float] = {}
        self.rejected: list[tuple[int, int]] = []
        self._before: dict[int, float] = {}  # image row -> D's score of its unedited image

    def __call__(self, y: int, j: int, d: int) -> bool:
        if (y, j) not in self.max_change:
            self.max_change[(y, j)] = self._max_change(y, j)
            if self.max_change[(y, j)] > self.threshold:
                self.rejected.append((y, j))
        return self.max_change[(y, j)] <= self.threshold

    @torch.no_grad()
    def _max_change(self, y: int, j: int) -> float:
        from stylex.attfind.effects import edit_styles

        e = self.effects
        device = self.s.conv[0].device
        s_min, s_max = e.s_min.to(device), e.s_max.to(device)
        largest = 0.0
        group = getattr(self.D, "mbstd_group", 0)
        try:
            if group:
                self.D.mbstd_group = 1
            for d in (0, 1):
                rows = torch.nonzero(e.effects[:, d, j, y] > self.effect_threshold).flatten()[: self.num_images]
                if rows.numel() == 0:
                    continue
                s_rows, noise = self.s.index(rows.to(device)), [n[rows.to(n.device)] for n in self.noise]
                new = [int(r) for r in rows if int(r) not in self._before]
                if new:
                    idx = torch.tensor(new, device=device)
                    x = self.G.synthesis(self.s.index(idx), [n[idx.to(n.device)] for n in self.noise])
                    self._before.update(zip(new, self.D(x, self.C(x)).float().tolist(), strict=True))
                after = self.G.synthesis(edit_styles(s_rows, [(j, d)], s_min, s_max, e.shift_size), noise)
                before = torch.tensor([self._before[int(r)] for r in rows])
                change = self.D(after, self.C(after)).float().cpu() - before
                largest = max(largest, float(change.abs().max()))
        finally:
            if group:
                self.D.mbstd_group = group
        return largest

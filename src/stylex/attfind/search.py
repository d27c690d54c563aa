"""AttFind as one object with one verb: effects -> per-class selection -> sufficiency@K."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from stylex.attfind.effects import Effects, StyleEffects
from stylex.attfind.filters import DiscriminatorFilter, stable_images
from stylex.attfind.result import AttFindResult
from stylex.attfind.selection import rank_stability, select_attributes
from stylex.errors import StylexError
from stylex.models.stylespace import StyleVector, use_rgb_coordinates

if TYPE_CHECKING:
    from stylex.models.generator import Generator


def check_styles_differ(s: StyleVector) -> None:
    """Refuse images whose styles are all the same (one image given N times): AttFind edits each style toward its
    minimum and maximum over the images, so every edit would change nothing and the attributes would be noise."""
    flat = s.flatten()
    spread = flat.amax(0) - flat.amin(0)  # float noise only, for one image encoded in a batch several times
    if len(flat) >= 2 and bool((spread <= 1e-5 * (1 + flat.abs().amax(0))).all()):
        raise StylexError(
            f"the {len(flat)} images have the same styles (one image given {len(flat)} times?): AttFind edits each "
            "style toward its minimum and maximum over the images, so every edit would change nothing; give images "
            "that differ."
        )


class AttFind:
    """Find the StyleSpace attributes that move a classifier's decision (Lang et al. 2021, Alg. 1).

    Args:
        G: the generator (`Generator` or anything with its `layout` / `synthesis*` methods).
        classifier: images [N, 3, R, R] in [-1, 1] -> logits [N, K].
        top_k: attributes per class (10 for sufficiency@10; 8 in the notebook's figures).
        threshold: accumulated effect at which an image stops counting in the greedy search (1.0).
        shift_size: edit size, the fraction of the way to the coordinate's min / max (1.0).
        one_vs_all: score classes by their one-vs-all log-odds; default True when K > 2, else the logit.
        fast: None for exact effects; M to evaluate only the top 2M (coordinate, direction) pairs per image
            exactly (see `StyleEffects`).
        max_batch, memory_mb, images_per_chunk, precision, channels_last: see `StyleEffects`.
        class_names: names of the K classes.
        unstable_filter: None (off, as in the notebook), or (effect_threshold, max_large_effects) for
            `filters.stable_images`: an image with more than `max_large_effects` logit changes larger than
            `effect_threshold` is left out of the selection (the notebook's optional filter uses 0.3 and 750).
            Sufficiency still counts every image.
        sufficiency: also measure sufficiency@top_k (a few forward passes per image and class).
        progress: tqdm bar while computing effects.
        include_rgb: None keeps `G`'s StyleSpace as it is; True / False makes its toRGB styles searchable or not
            (`stylex.models.stylespace.use_rgb_coordinates`; not in the paper, whose AttFind searches the conv
            styles only).
        resamples: bootstrap resamples of the images for each attribute's rank stability (`rank_stability`;
            seconds, no network runs); 0 skips it.
        discriminator: the run's discriminator D (`StylEx.discriminator`) for the notebook's optional filter
            (`filters.DiscriminatorFilter`): a coordinate whose edit moves D's score by more than
            `discriminator_threshold` is skipped. None (default, as in the notebook): no filter.
        discriminator_threshold: see `discriminator` (0.2 in the notebook).
    """

    def __init__(
        self,
        G: Generator,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        *,
        top_k: int = 10,
        threshold: float = 1.0,
        shift_size: float = 1.0,
        one_vs_all: bool | None = None,
        fast: int | None = None,
        max_batch: int = 256,
        memory_mb: float = 2048.0,
        images_per_chunk: int = 16,
        precision: str = "fp32",
        channels_last: bool = False,
        class_names: Sequence[str] | None = None,
        unstable_filter: tuple[float, int] | None = None,
        sufficiency: bool = True,
        progress: bool = True,
        include_rgb: bool | None = None,
        resamples: int = 100,
        discriminator: nn.Module | None = None,
        discriminator_threshold: float = 0.2,
    ):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise StylexError(f"top_k must be an integer >= 1, got {top_k!r}.")
        if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 0:
            raise StylexError(f"resamples must be an integer >= 0 (0 skips the stability check), got {resamples!r}.")
        for name, value in (("threshold", threshold), ("shift_size", shift_size)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise StylexError(f"{name} must be a positive number, got {value!r}.")
        if unstable_filter is not None:
            unstable_filter = _unstable_filter(unstable_filter)
        if include_rgb is not None:
            use_rgb_coordinates(G, include_rgb)
        self.G, self.C = G, classifier
        self.top_k, self.threshold, self.one_vs_all = top_k, threshold, one_vs_all
        self.class_names, self.unstable_filter, self.with_sufficiency = class_names, unstable_filter, sufficiency
        self.resamples = resamples
        self.D, self.discriminator_threshold = discriminator, discriminator_threshold
        self.effects_finder = StyleEffects(
            G,
            classifier,
            shift_size=shift_size,
            fast=fast,
            max_batch=max_batch,
            memory_mb=memory_mb,
            images_per_chunk=images_per_chunk,
            precision=precision,
            channels_last=channels_last,
            progress=progress,
        )

    def run(
        self,
        s: StyleVector | None,
        noise: list[torch.Tensor],
        *,
        effects: Effects | None = None,
        checkpoint_dir: str | Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> AttFindResult:
        """Effects (or the given table), then per-class attributes, then sufficiency.

        Args:
            s: styles of the N images; may be None when `effects` is given (rebuilt from it).
            noise: the images' fixed noise maps [N, 1, r, r] per layer (see `effects.image_noise`).
            effects: a table computed before (e.g. `Effects.load`): skips the expensive step.
            checkpoint_dir: resume folder for the effects (see `StyleEffects.compute`).
            meta: extra facts stored with the effects.

        Returns:
            `AttFindResult` (with `.effects`).
        """
        if s is None and effects is None:
            raise StylexError("AttFind.run needs the images' styles, or an effect table computed before (effects=).")
        if s is not None and s.layout != self.G.layout:  # styles encoded before the search space was set
            s = s.with_layout(self.G.layout)
        if s is not None and effects is None:
            check_styles_differ(s)
        if effects is None:
            assert s is not None  # refused above when neither is given
            effects = self.effects_finder.compute(s, noise, checkpoint_dir=checkpoint_dir, meta=meta)
        if s is None:
            s = effects.style_vector(self.G.layout)
        keep = None if self.unstable_filter is None else stable_images(effects, *self.unstable_filter)
        d_filter = None
        if self.D is not None:
            d_filter = DiscriminatorFilter(self.G, self.D, self.C, s, noise, effects, self.discriminator_threshold)
        result = select_attributes(
            effects,
            self.G.layout,
            top_k=self.top_k,
            threshold=self.threshold,
            one_vs_all=self.one_vs_all,
            class_names=self.class_names,
            keep_images=keep,
            candidate_filter=d_filter,
        )
        if keep is not None and self.unstable_filter is not None:  # keep is set by the filter
            result.settings["unstable_filter"] = list(self.unstable_filter)
            result.stats["unstable_dropped"] = int((~keep).sum())
        if d_filter is not None:  # what the ranking skipped (the resamples below may try, and skip, others)
            result.settings["discriminator_threshold"] = self.discriminator_threshold
            names = [c.class_name for c in result.classes]
            result.stats["discriminator_rejected"] = {
                name: [self.G.layout.describe(j) for y, j in d_filter.rejected if names[y] == name] for name in names
            }
        rank_stability(effects, result, self.resamples, keep_images=keep, candidate_filter=d_filter)
        if self.with_sufficiency:
            from stylex.metrics.sufficiency import sufficiency

            device = s.conv[0].device
            figures = sufficiency(
                self.G,
                self.C,
                s,
                noise,
                effects.base_logits,
                {c.class_index: c.edits for c in result.classes},
                effects.s_min.to(device),
                effects.s_max.to(device),
                effects.shift_size,
                batch_size=self.effects_finder.max_batch,
            )
            for c in result.classes:
                c.sufficiency = figures["per_class"][c.class_index]
            result.sufficiency = figures["overall"]
            result.stats["sufficiency_counts"] = {result.classes[y].class_name: v for y, v in figures["counts"].items()}
        return result


def _unstable_filter(value) -> tuple[float, int]:
    """`AttFind(unstable_filter=...)` checked: (effect_threshold > 0, max_large_effects >= 0)."""
    try:
        threshold, count = value
        ok = (
            isinstance(threshold, int | float) and not isinstance(threshold, bool) and math.isfinite(threshold)
            and threshold > 0 and isinstance(count, int) and not isinstance(count, bool) and count >= 0
        )  # fmt: skip
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise StylexError(
            "unstable_filter must be (effect_threshold, max_large_effects): a positive number and a whole number "
            f">= 0, e.g. (0.3, 750) as in the notebook; got {value!r}."
        )
    return float(threshold), int(count)

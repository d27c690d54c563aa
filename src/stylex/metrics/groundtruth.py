"""Ground truth on synthetic shapes: what the classifier really uses, and which factors an explanation's
attributes change.

1. **True importance** (`true_importance`): render fresh scenes with independently drawn factors, then for each
   factor alone re-render the same scenes with that factor redrawn (every other category for the shape;
   `num_values` fresh uniform draws for a continuous factor) and classify. Per factor: the *decision-change
   rate* (share of interventions that change the predicted class) and the mean absolute change of the
   probability of the originally predicted class. A factor is **truly used** when its decision-change rate is at
   least `threshold` (default :data:`USED_THRESHOLD` = 0.1: one intervention in ten changes the decision). Measured
   on SmallCNNs trained at 32 px: the factors of the label rule sit at 0.26-0.65, a shortcut the classifier partly
   learned at ~0.16, ignored factors at 0.00-0.03, with an occasional weak side dependence at 0.05-0.06 that the
   threshold leaves out (it is a dependence, but not one an explanation must name).
2. **Reading attributes** (`read_attributes`): for each attribute (a style edit), the factor oracle
   (:mod:`stylex.metrics.oracle`) reads the images before and after the edit; per factor the mean change, divided
   by the factor's change under an independent redraw (:data:`stylex.metrics.oracle.CHANGE_SCALE`), so that
   factors in different units compare. The attribute's **dominant factor** is the one with the largest normalised
   change, if that change is at least `min_change` (default :data:`MIN_CHANGE`); otherwise it changes no factor
   visibly and has none. Its **purity** is the dominant factor's share of the summed normalised changes (1 = it
   changes one factor only; 0 when it has no dominant factor).
3. **Scores** (`score_explanation`), over the top-K attributes of every class together:
   precision@K = share whose dominant factor is truly used; coverage@K = share of the truly used factors that are
   the dominant factor of at least one of them; mean purity; the Spearman rank correlation between the
   explanation's factor importance (per factor, the sum over the top-K attributes of that factor's share of the
   attribute's change) and the true importance (mean absolute probability change); and, per factor, the best rank
   at which it is an attribute's dominant factor (e.g. to ask whether a shortcut is among the top 3).
4. **Factor reach** (`factor_reach`, a diagnostic): every style coordinate edited alone, both directions, as
   AttFind edits; per factor the edits that change it most. AttFind and the baselines explain with single
   coordinates, so a factor that no coordinate moves cannot be any attribute's dominant factor, however the
   coordinates are ranked (`benchmarks/factor_reach.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stylex.data.convert import to_tensor
from stylex.data.synth import FACTOR_NAMES, FACTORS, render_scene, sample_factors
from stylex.errors import StylexError
from stylex.metrics.oracle import CHANGE_SCALE, factor_change, read_factors

if TYPE_CHECKING:
    from stylex.models.generator import Generator

USED_THRESHOLD = 0.1
"""A factor is truly used when redrawing it alone changes the classifier's decision in at least this share of
interventions."""
MIN_CHANGE = 0.1
"""An attribute has a dominant factor only if it changes that factor by at least this much (normalised: 1.0 is the
change of an independent redraw); below it the edit changes no factor visibly."""

_SPECS = {f.name: f for f in FACTORS}


# ------------------------------------------------------------------------------------------------ true importance
@dataclass
class TrueImportance:
    """What the classifier really uses, measured by intervening on one factor at a time.

    Attributes:
        factors: factor names, in :data:`FACTOR_NAMES` order.
        flip_rate: [F] share of interventions on each factor that change the predicted class.
        prob_change: [F] mean |p_y(intervened) - p_y(original)| with y the original prediction.
        num_scenes: scenes intervened on.
        num_values: interventions per scene for a continuous factor (a categorical one takes every other category).
        threshold: decision-change rate at which a factor counts as truly used.
        resolution: image size the scenes were rendered at.
    """

    factors: tuple[str, ...]
    flip_rate: np.ndarray
    prob_change: np.ndarray
    num_scenes: int
    num_values: int
    threshold: float = USED_THRESHOLD
    resolution: int = 32

    def used(self) -> list[str]:
        """The truly used factors (decision-change rate >= threshold), most important first."""
        return [f for f in self.ranking() if self.flip_rate[self.factors.index(f)] >= self.threshold]

    def ranking(self) -> list[str]:
        """All factors, most important first (by probability change, then decision-change rate)."""
        order = sorted(range(len(self.factors)), key=lambda i: (-self.prob_change[i], -self.flip_rate[i], i))
        return [self.factors[i] for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "factors": list(self.factors),
            "flip_rate": {f: round(float(v), 6) for f, v in zip(self.factors, self.flip_rate, strict=True)},
            "prob_change": {f: round(float(v), 6) for f, v in zip(self.factors, self.prob_change, strict=True)},
            "used": self.used(),
            "ranking": self.ranking(),
            "threshold": self.threshold,
            "num_scenes": self.num_scenes,
            "num_values": self.num_values,
            "resolution": self.resolution,
        }


def intervention_values(name: str, current: np.ndarray, num_values: int, rng: np.random.Generator) -> np.ndarray:
    """New values of one factor for every scene [N, M].

    Args:
        name: the factor.
        current: its values in the N scenes [N].
        num_values: M for a continuous factor (fresh uniform draws over its range); a categorical factor gets
            every other category (M = number of categories - 1).
        rng: numpy generator.
    """
    spec = _SPECS[name]
    if spec.is_categorical:
        codes = np.arange(len(spec.categories))
        return np.stack([codes[codes != c] for c in current]).astype(np.int64)
    return rng.uniform(spec.low, spec.high, (len(current), num_values))


@torch.no_grad()
def _probabilities(classifier: Callable, images: np.ndarray, batch_size: int, device) -> torch.Tensor:
    """Softmax [N, K] of uint8 images [N, R, R, 3]."""
    out = []
    for a in range(0, len(images), batch_size):
        x = to_tensor(images[a : a + batch_size]).to(device)
        out.append(classifier(x).float().softmax(dim=1).cpu())
    return torch.cat(out)


def _render(factors: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    n = len(next(iter(factors.values())))
    return np.stack([render_scene({k: v[i] for k, v in factors.items()}, resolution) for i in range(n)])


@torch.no_grad()
def true_importance(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    resolution: int = 32,
    num_scenes: int = 256,
    num_values: int = 4,
    seed: int = 0,
    threshold: float = USED_THRESHOLD,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> TrueImportance:
    """Intervene on each factor alone and measure how the classifier's decision changes (module docstring, 1).

    The scenes are drawn independently (`sample_factors`), whatever correlations the training data had, so a
    shortcut shows up only as much as the classifier really relies on it.

    Args:
        classifier: images [N, 3, R, R] in [-1, 1] -> logits [N, K].
        resolution: R, the size the classifier sees (the model's resolution).
        num_scenes: N.
        num_values: draws per scene for a continuous factor.
        seed: seeds the scenes and the draws.
        threshold: decision-change rate at which a factor counts as truly used.
        batch_size: images per classifier call.
        device: where the classifier runs.

    Returns:
        `TrueImportance`.
    """
    if num_scenes < 1 or num_values < 1:
        raise StylexError(f"true importance needs num_scenes >= 1 and num_values >= 1, got {num_scenes}, {num_values}.")
    factors = sample_factors(num_scenes, seed=seed)
    p0 = _probabilities(classifier, _render(factors, resolution), batch_size, device)  # [N, K]
    pred = p0.argmax(dim=1)  # [N]
    p0_pred = p0.gather(1, pred[:, None])[:, 0]  # [N]
    rng = np.random.default_rng([seed, 2])
    flips, changes = [], []
    for name in FACTOR_NAMES:
        values = intervention_values(name, factors[name], num_values, rng)  # [N, M]
        m = values.shape[1]
        new = {k: np.repeat(v, m) for k, v in factors.items()}  # scene i repeated M times, [N * M]
        new[name] = values.reshape(-1)
        p = _probabilities(classifier, _render(new, resolution), batch_size, device)  # [N * M, K]
        y = pred.repeat_interleave(m)
        flips.append(float((p.argmax(dim=1) != y).float().mean()))
        changes.append(float((p.gather(1, y[:, None])[:, 0] - p0_pred.repeat_interleave(m)).abs().mean()))
    return TrueImportance(
        tuple(FACTOR_NAMES), np.array(flips), np.array(changes), num_scenes, num_values, threshold, resolution
    )


# ------------------------------------------------------------------------------------------------ attributes
@dataclass
class AttributeReading:
    """Which factors one attribute (a style edit) changes, read by the factor oracle.

    Attributes:
        class_index, class_name: the class the attribute pushes toward.
        rank: its rank among the class's attributes (1 = first).
        changes: factor -> mean change over the images, normalised by
            :data:`stylex.metrics.oracle.CHANGE_SCALE` (1.0 = as much as an independent redraw).
        min_change: the normalised change a factor needs to count as the dominant one.
        num_images: images the changes were averaged over.
        flat_index, layer_name, channel, direction: the edit (see `stylex.attfind.Attribute`); -1 / "" if unknown.
    """

    class_index: int
    class_name: str
    rank: int
    changes: dict[str, float]
    min_change: float = MIN_CHANGE
    num_images: int = 0
    flat_index: int = -1
    layer_name: str = ""
    channel: int = -1
    direction: str = ""

    @property
    def magnitude(self) -> float:
        """The largest normalised change."""
        return max(self.changes.values(), default=0.0)

    @property
    def dominant(self) -> str | None:
        """The factor with the largest normalised change, or None when no factor changes by `min_change`."""
        if not self.changes or self.magnitude < self.min_change:
            return None
        return max(self.changes, key=lambda f: self.changes[f])

    @property
    def purity(self) -> float:
        """The dominant factor's share of the summed normalised changes; 0 without a dominant factor."""
        if self.dominant is None:
            return 0.0
        return self.magnitude / sum(self.changes.values())

    def shares(self) -> dict[str, float]:
        """Each factor's share of the summed changes (all 0 without a dominant factor)."""
        total = sum(self.changes.values())
        if self.dominant is None or total <= 0:
            return {f: 0.0 for f in self.changes}
        return {f: v / total for f, v in self.changes.items()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["changes"] = {f: round(v, 6) for f, v in self.changes.items()}
        d.update(dominant=self.dominant, purity=round(self.purity, 6), magnitude=round(self.magnitude, 6))
        return d


def normalised_changes(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean change of every factor between two readings of the same images, divided by its `CHANGE_SCALE`."""
    change = factor_change(before, after)
    return {f: float(change[f].mean() / CHANGE_SCALE[f]) for f in FACTOR_NAMES}


@torch.no_grad()
def read_attributes(
    G: Generator,
    s,
    noise: list[torch.Tensor],
    result,
    s_min: torch.Tensor,
    s_max: torch.Tensor,
    shift_size: float,
    predicted: torch.Tensor,
    top_k: int,
    max_images: int = 64,
    min_change: float = MIN_CHANGE,
    batch_size: int = 64,
    read: Callable[[torch.Tensor], dict[str, np.ndarray]] = read_factors,
) -> list[AttributeReading]:
    """Read every class's top-K attributes with the factor oracle (module docstring, 2).

    For class y, the images are the first `max_images` whose unedited reconstruction is not predicted as y (those
    AttFind and sufficiency edit toward y; all images if there are none). Each attribute's edit is applied alone.

    Args:
        G: generator (`synthesis`).
        s: `StyleVector` of the N images; noise: their fixed noise maps.
        result: `AttFindResult` (or a baseline's) with the ranked attributes per class.
        s_min, s_max, shift_size: the edit targets and size (as in `stylex.attfind.edit_styles`).
        predicted: [N] predicted class of each unedited reconstruction.
        top_k: attributes read per class.
        max_images: images per class.
        min_change: see `AttributeReading`.
        batch_size: images per synthesis call.
        read: the oracle, images [n, 3, R, R] in [-1, 1] -> factors.

    Returns:
        one `AttributeReading` per (class, attribute) with rank <= top_k, classes in order, best first.
    """
    from stylex.attfind.effects import edit_styles

    predicted = predicted.cpu()
    device = s.conv[0].device

    def render(styles, rows: torch.Tensor) -> dict[str, np.ndarray]:
        """Oracle readings of G(styles) [M], styles being those of images `rows` [M] (for their noise)."""
        parts = []
        for a in range(0, rows.numel(), batch_size):
            r = rows[a : a + batch_size].to(device)
            sub = styles.index(torch.arange(a, a + r.numel(), device=device))
            parts.append(read(G.synthesis(sub, [n[r] for n in noise])))
        return {f: np.concatenate([p[f] for p in parts]) for f in FACTOR_NAMES}

    readings = []
    for c in result.classes:
        attributes = [a for a in c.attributes if a.rank <= top_k]
        if not attributes:
            continue
        rows = torch.nonzero(predicted != c.class_index).flatten()
        rows = (rows if rows.numel() else torch.arange(len(predicted)))[:max_images]  # [M]
        s_rows = s.index(rows.to(device))
        before = render(s_rows, rows)
        for a in attributes:
            after = render(edit_styles(s_rows, [a.edit], s_min.to(device), s_max.to(device), shift_size), rows)
            readings.append(
                AttributeReading(
                    class_index=c.class_index,
                    class_name=c.class_name,
                    rank=a.rank,
                    changes=normalised_changes(before, after),
                    min_change=min_change,
                    num_images=int(rows.numel()),
                    flat_index=a.flat_index,
                    layer_name=a.layer_name,
                    channel=a.channel,
                    direction=a.direction,
                )
            )
    return readings


# ------------------------------------------------------------------------------------------------ scores
def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant or too short."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"spearman needs two sequences of the same length, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):  # ties share their mean rank
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class ExplanationScores:
    """How well the top-K attributes of an explanation name the factors the classifier uses.

    Attributes:
        top_k: K (per class).
        num_attributes: attributes scored (top-K of every class together).
        precision: share of them whose dominant factor is truly used (None without attributes).
        coverage: share of the truly used factors that some attribute has as its dominant factor (None when no
            factor is truly used).
        mean_purity: mean purity (None without attributes).
        spearman: rank correlation of `factor_importance` with the true importance (None if either is constant).
        factor_importance: factor -> summed share of the attributes' changes.
        first_rank: factor -> the best rank at which it is an attribute's dominant factor (None if never).
        dominant_counts: factor -> number of attributes with it as dominant factor ("none" for no factor).
        used: the truly used factors.
    """

    top_k: int
    num_attributes: int
    precision: float | None
    coverage: float | None
    mean_purity: float | None
    spearman: float | None
    factor_importance: dict[str, float] = field(default_factory=dict)
    first_rank: dict[str, int | None] = field(default_factory=dict)
    dominant_counts: dict[str, int] = field(default_factory=dict)
    used: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("precision", "coverage", "mean_purity", "spearman"):
            d[key] = None if d[key] is None else round(d[key], 6)
        d["factor_importance"] = {f: round(v, 6) for f, v in self.factor_importance.items()}
        return d


def score_explanation(
    readings: Sequence[AttributeReading], importance: TrueImportance, top_k: int
) -> ExplanationScores:
    """Precision@K, coverage@K, mean purity, Spearman and first ranks (module docstring, 3).

    Args:
        readings: attribute readings of all classes (as from `read_attributes`); those with rank > top_k are
            ignored.
        importance: the classifier's true importance.
        top_k: K per class.
    """
    top = [r for r in readings if r.rank <= top_k]
    used = importance.used()
    factors = list(importance.factors)
    dominant = [r.dominant for r in top]
    precision = float(np.mean([d in used for d in dominant])) if top else None
    coverage = len({d for d in dominant if d in used}) / len(used) if used else None
    mean_purity = float(np.mean([r.purity for r in top])) if top else None
    shares = [r.shares() for r in top]
    explained = {f: float(sum(sh.get(f, 0.0) for sh in shares)) for f in factors}
    rho = spearman([explained[f] for f in factors], importance.prob_change)
    first = {f: min((r.rank for r in top if r.dominant == f), default=None) for f in factors}
    counts = {f: sum(d == f for d in dominant) for f in factors}
    counts["none"] = sum(d is None for d in dominant)
    return ExplanationScores(top_k, len(top), precision, coverage, mean_purity, rho, explained, first, counts, used)


# ------------------------------------------------------------------------------------------------ factor reach
@torch.no_grad()
def factor_reach(
    G: Generator,
    s,
    noise: list[torch.Tensor],
    classifier: Callable[[torch.Tensor], torch.Tensor] | None = None,
    include_rgb: bool = False,
    batch_size: int = 256,
    read: Callable[[torch.Tensor], dict[str, np.ndarray]] = read_factors,
    progress: Callable[[int, int], None] | None = None,
    s_min: torch.Tensor | None = None,
    s_max: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Edit every style coordinate alone and read which factors each edit changes (module docstring, 4).

    Each edit sets one coordinate of every image to that coordinate's minimum or maximum over the images (AttFind's
    edit at shift size 1; `s_min` / `s_max` give other targets for the conv coordinates, e.g. AttFind's over more
    images), with the images' own noise.

    Args:
        G: generator (`synthesis`).
        s: `StyleVector` of the N images; noise: their fixed noise maps.
        classifier: if given, each edit also records the mean |logit change| and the share of changed decisions.
        include_rgb: also edit the toRGB styles (AttFind does not: it searches modulated-conv styles only).
        batch_size: images per synthesis call (several edits share a call).
        read: the oracle, images [n, 3, R, R] in [-1, 1] -> factors.
        progress: called with (edits done, edits in all) after each synthesis call.
        s_min, s_max: [S] edit targets of the searchable styles (default: the minimum / maximum over these images);
            a toRGB style outside the layout's searchable ones goes to its minimum / maximum over these images.

    Returns:
        one dict per edit: ``kind`` ("conv" or "rgb"), ``layer`` (index), ``layer_name``, ``channel``,
        ``direction`` ("min" or "max"), ``changes`` (factor -> mean normalised change) and, with a classifier,
        ``mean_abs_logit_change`` and ``decision_flips``.
    """
    from stylex.models.stylespace import StyleVector

    n = s.batch_size
    flat = s.flatten()
    lo = flat.min(dim=0).values if s_min is None else s_min.to(flat)
    hi = flat.max(dim=0).values if s_max is None else s_max.to(flat)
    offsets = s.layout.offsets()
    groups = [("conv", i, d) for i, d in enumerate(s.layout.conv_dims)]
    groups += [("rgb", i, d) for i, d in enumerate(s.layout.rgb_dims)] if include_rgb else []
    edits = [(kind, i, c, d) for kind, i, dims in groups for c in range(dims) for d in ("min", "max")]

    base = G.synthesis(s, noise)
    before = read(base)
    base_logits = classifier(base) if classifier is not None else None
    per_call = max(1, batch_size // n)
    out: list[dict[str, Any]] = []
    for a in range(0, len(edits), per_call):
        chunk = edits[a : a + per_call]
        images = []
        for kind, i, c, d in chunk:
            conv, rgb = list(s.conv), list(s.rgb)
            styles = conv if kind == "conv" else rgb
            edited = styles[i].clone()
            if kind == "conv" or s.layout.search_rgb:  # a searchable style: AttFind's targets
                j = offsets[i if kind == "conv" else len(s.layout.conv_dims) + i] + c
                edited[:, c] = (lo if d == "min" else hi)[j]
            else:
                edited[:, c] = styles[i][:, c].min() if d == "min" else styles[i][:, c].max()
            styles[i] = edited
            images.append(G.synthesis(StyleVector(conv, rgb, s.layout), noise))
        after = torch.cat(images)  # [len(chunk) * n, 3, R, R]
        readings = read(after)
        logits = classifier(after) if classifier is not None else None
        for e, (kind, i, c, d) in enumerate(chunk):
            rows = slice(e * n, (e + 1) * n)
            record: dict[str, Any] = {
                "kind": kind,
                "layer": i,
                "layer_name": s.layout.conv_names[i] if kind == "conv" else f"toRGB{i}",
                "channel": c,
                "direction": d,
                "changes": normalised_changes(before, {f: v[rows] for f, v in readings.items()}),
            }
            if logits is not None and base_logits is not None:  # both or neither: a classifier was given
                delta = logits[rows] - base_logits
                record["mean_abs_logit_change"] = float(delta.abs().mean())
                flips = logits[rows].argmax(dim=1) != base_logits.argmax(dim=1)
                record["decision_flips"] = float(flips.float().mean())
            out.append(record)
        if progress is not None:
            progress(min(a + per_call, len(edits)), len(edits))
    return out


def best_reach(edits: Sequence[dict[str, Any]], kind: str | None = None, top: int = 5) -> dict[str, list[dict]]:
    """Per factor, the `top` edits of `factor_reach` that change it most (only those of `kind`, if given)."""
    pool = [e for e in edits if kind is None or e["kind"] == kind]
    return {f: sorted(pool, key=lambda e: -e["changes"][f])[:top] for f in FACTOR_NAMES}


def reach_dominant_counts(
    edits: Sequence[dict[str, Any]], kind: str | None = None, min_change: float = MIN_CHANGE
) -> dict[str, int]:
    """Per factor, how many edits of `factor_reach` (only those of `kind`, if given) have it as their dominant
    factor (the largest normalised change, if >= `min_change`), as an attribute's reading would; "none" counts the
    edits that change no factor that much. A truly used factor with count 0 cannot be the dominant factor of any
    single-coordinate attribute of this generator, whatever the search ranks first."""
    counts = dict.fromkeys(FACTOR_NAMES, 0) | {"none": 0}
    for e in edits:
        if kind is None or e["kind"] == kind:
            f = max(e["changes"], key=e["changes"].get)
            counts[f if e["changes"][f] >= min_change else "none"] += 1
    return counts

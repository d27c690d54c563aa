"""Synthetic shapes with ground-truth factors: a dataset whose true explanation is known.

Each image is one shape (circle, square or triangle) of one colour on a plain background. Seven factors,
all drawn independently and uniformly, so that any one can be intervened on or correlated without
moving the others:

======================  ==============  =======================================================
factor                  range           meaning
======================  ==============  =======================================================
``shape``               circle/square/  categorical, stored as int code (index in :data:`SHAPES`)
                        triangle
``obj_hue``             [0, 1)          hue of the shape (saturation 1, value 1: always vivid)
``obj_size``            [0.25, 0.5)     side of the shape's bounding box, fraction of the image
``pos_x``, ``pos_y``    [0.25, 0.75)    centre of the bounding box, fraction of the image (x right,
                                        y down); the range keeps every shape inside the image
``bg_hue``              [0, 1)          hue of the background (saturation 0.35: always duller than
                                        the shape)
``bg_brightness``       [0.2, 0.8)      HSV value of the background
======================  ==============  =======================================================

Labels come from a rule string (grammar in :mod:`stylex.data.rules`), e.g. ``shape==circle``,
``obj_size>0.4 and bg_hue<0.5``, ``shape`` (3 classes) or ``obj_hue:4`` (4 hue bins).

Shortcuts: ``correlate={"bg_hue": 0.95}`` redraws ``bg_hue`` after labelling so that with probability
0.95 it falls in the part of its range tied to the image's label, and otherwise in one of the other parts.
For a continuous factor with range [low, high) and K classes, class y's part is the y-th of K equal-width
sub-ranges (K=2, bg_hue: class 0 -> [0, 0.5), class 1 -> [0.5, 1)). For a categorical factor, class y's
part is the categories with ``code % K == y`` (K=2, shape: class 0 -> circle/triangle, class 1 -> square).
A probability of 1/K leaves the factor independent of the label; 1 makes it a perfect shortcut. A factor
the rule reads cannot be correlated.
"""

from __future__ import annotations

import colorsys
import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from stylex.data.dataset import (
    FACTORS_CSV,
    PROGRESS_MIN_FILES,
    SYNTH_JSON,
    ImageDataset,
    atomic_dir,
    class_dir_names,
    foreign_entries,
    write_image_tree,
)
from stylex.data.rules import FactorSpec, LabelRule, parse_label_rule
from stylex.errors import StylexError

SHAPES = ("circle", "square", "triangle")
"""Names of the ``shape`` factor's int codes."""

OBJ_SATURATION = 1.0
"""HSV saturation of every shape."""
OBJ_VALUE = 1.0
"""HSV value of every shape."""
BG_SATURATION = 0.35
"""HSV saturation of every background: lower than the shape's, so a shape stands out even on its own hue."""
SUPERSAMPLE = 4
"""Each pixel is the mean of SUPERSAMPLE x SUPERSAMPLE coverage samples (anti-aliased edges)."""

FACTORS: tuple[FactorSpec, ...] = (
    FactorSpec("shape", 0, len(SHAPES), SHAPES, "the shape drawn"),
    FactorSpec("obj_hue", 0.0, 1.0, doc="hue of the shape"),
    FactorSpec("obj_size", 0.25, 0.5, doc="side of the shape's bounding box, fraction of the image"),
    FactorSpec("pos_x", 0.25, 0.75, doc="horizontal centre of the shape, fraction of the image from the left"),
    FactorSpec("pos_y", 0.25, 0.75, doc="vertical centre of the shape, fraction of the image from the top"),
    FactorSpec("bg_hue", 0.0, 1.0, doc="hue of the background"),
    FactorSpec("bg_brightness", 0.2, 0.8, doc="HSV value of the background"),
)
"""The factors, in the order they are drawn and written to ``factors.csv``."""

FACTOR_NAMES = tuple(f.name for f in FACTORS)
_SPECS = {f.name: f for f in FACTORS}


def parse_rule(label_rule: str) -> LabelRule:
    """Parse a label rule against the synthetic factors (grammar in :mod:`stylex.data.rules`).

    Raises:
        StylexError: bad syntax or an unknown factor; the message lists the valid factors.
    """
    return parse_label_rule(label_rule, FACTORS)


def parse_correlate(spec: str | Sequence[str] | Mapping[str, float] | None) -> dict[str, float]:
    """Read a ``correlate`` option: ``"bg_hue=0.95"``, ``"bg_hue=0.95,obj_size=0.9"``, a list of such
    strings (one per repeated command line flag), or a mapping. None or empty gives ``{}``.

    Raises:
        StylexError: an unknown factor, or a probability that is not a number in [0, 1].
    """
    if not spec:
        return {}
    items: list[tuple[str, float | str]]
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        parts = [spec] if isinstance(spec, str) else list(spec)
        items = []
        for part in (p.strip() for chunk in parts for p in chunk.split(",")):
            if not part:
                continue
            name, eq, value = part.partition("=")
            if not eq:
                raise StylexError(f"Cannot read correlate {part!r}; write factor=probability, e.g. bg_hue=0.95.")
            items.append((name.strip(), value.strip()))
    out = {}
    for name, value in items:
        if name not in _SPECS:
            raise StylexError(f"Cannot correlate unknown factor {name!r}; choose one of {', '.join(FACTOR_NAMES)}.")
        try:
            p = float(value)
        except (TypeError, ValueError):
            p = float("nan")
        if not 0.0 <= p <= 1.0:
            raise StylexError(f"Correlate probability for {name} is {value!r}; give a number in [0, 1], e.g. 0.95.")
        out[name] = p
    return out


def sample_factors(num_images: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw factors independently and uniformly over their ranges (see the module docstring).

    Args:
        num_images: N.
        seed: seed of a ``numpy.random.default_rng``; the same seed gives the same factors, whatever N's
            later use (resolution does not enter).

    Returns:
        factor name -> values [N]: ``shape`` int64 codes into :data:`SHAPES`, the others float64.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for f in FACTORS:
        if f.is_categorical:
            out[f.name] = rng.integers(0, len(f.categories), num_images).astype(np.int64)
        else:
            out[f.name] = rng.uniform(f.low, f.high, num_images)
    return out


def _correlate(
    factors: dict[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    correlate: Mapping[str, float],
    rule: LabelRule,
    rng: np.random.Generator,
) -> None:
    """Redraw each factor in ``correlate`` in place, tied to ``labels`` (semantics in the module docstring)."""
    k = num_classes
    for f in FACTORS:  # fixed order, so the result does not depend on the mapping's order
        if f.name not in correlate:
            continue
        if f.name in rule.factors_used:
            raise StylexError(
                f"Cannot correlate {f.name} because the label rule {rule.text!r} reads it; "
                "correlate a factor the rule does not use."
            )
        p = correlate[f.name]
        tied = rng.random(len(labels)) < p  # [N] bool: falls in the label's part
        if f.is_categorical:
            codes = np.arange(len(f.categories))
            if len(codes) < k:
                raise StylexError(
                    f"Cannot correlate {f.name} ({len(codes)} categories) with {k} classes; "
                    "correlate a continuous factor instead."
                )
            new = np.empty(len(labels), dtype=np.int64)
            for y in range(k):
                own, other = codes[codes % k == y], codes[codes % k != y]
                idx_in, idx_out = np.flatnonzero((labels == y) & tied), np.flatnonzero((labels == y) & ~tied)
                new[idx_in] = rng.choice(own, len(idx_in))
                new[idx_out] = rng.choice(other, len(idx_out))
            factors[f.name] = new
        else:
            part = np.where(tied, labels, (labels + rng.integers(1, k, len(labels))) % k)  # [N] in [0, k)
            width = (f.high - f.low) / k
            factors[f.name] = f.low + (part + rng.random(len(labels))) * width


def render_scene(factors: Mapping[str, float | int | str], resolution: int = 32) -> np.ndarray:
    """Render one image from factor values (for datasets, and for intervening on one factor at a time).

    Args:
        factors: a value for every name in :data:`FACTOR_NAMES`; ``shape`` as an int code or a name in
            :data:`SHAPES`. Values outside the sampling ranges are drawn as given (hues wrap around; a
            shape moved past the border is clipped).
        resolution: side of the image in pixels.

    Returns:
        uint8 RGB [resolution, resolution, 3].
    """
    missing = [name for name in FACTOR_NAMES if name not in factors]
    if missing:
        raise ValueError(f"render_scene needs a value for {', '.join(missing)}")
    shape = factors["shape"]
    shape = SHAPES.index(shape) if isinstance(shape, str) else int(shape)
    n = resolution * SUPERSAMPLE
    t = (np.arange(n) + 0.5) / n  # sample centres, fraction of the image
    dx = t[None, :] - float(factors["pos_x"])  # [1, n]
    dy = t[:, None] - float(factors["pos_y"])  # [n, 1]
    r = float(factors["obj_size"]) / 2
    if SHAPES[shape] == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif SHAPES[shape] == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # triangle, apex up: apex at (0, -r), base from (-r, r) to (r, r)
        inside = (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    coverage = inside.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE).mean(axis=(1, 3))  # [R, R]
    obj = np.array(colorsys.hsv_to_rgb(float(factors["obj_hue"]) % 1.0, OBJ_SATURATION, OBJ_VALUE))
    bg = np.array(colorsys.hsv_to_rgb(float(factors["bg_hue"]) % 1.0, BG_SATURATION, float(factors["bg_brightness"])))
    image = bg * (1.0 - coverage[..., None]) + obj * coverage[..., None]  # [R, R, 3] in [0, 1]
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _describe(num_images: int, resolution: int, seed: int, label_rule: str, correlate: Mapping[str, float]) -> str:
    extra = f", correlate={dict(correlate)}" if correlate else ""
    return f"synth(num_images={num_images}, resolution={resolution}, seed={seed}, label_rule={label_rule!r}{extra})"


def render_shapes(
    num_images: int,
    resolution: int = 32,
    seed: int = 0,
    label_rule: str = "shape==circle",
    correlate: Mapping[str, float] | None = None,
    progress: bool = True,
) -> ImageDataset:
    """Draw factors, label them with a rule, optionally tie some factors to the label, and render.

    Deterministic: the same arguments give the same images, labels and factors.

    Args:
        num_images: N.
        resolution: side of the images in pixels.
        seed: seed for factors and correlation draws.
        label_rule: rule string (grammar in :mod:`stylex.data.rules`).
        correlate: factor name -> probability that the factor falls in the part of its range tied to the
            label (module docstring); None or ``{}`` turns shortcuts off.
        progress: show a progress bar when rendering more than :data:`PROGRESS_MIN_FILES` images.

    Returns:
        ``images`` uint8 [N, R, R, 3], ``labels`` [N], ``class_names`` from the rule, ``factors`` for every
        name in :data:`FACTOR_NAMES` ([N] each), ``factor_categories={"shape": SHAPES}``.

    Raises:
        StylexError: a bad rule, or a bad or forbidden ``correlate`` entry.
    """
    if num_images < 1 or resolution < 1:
        raise StylexError(f"Need num_images >= 1 and resolution >= 1, got {num_images} and {resolution}.")
    rule = parse_rule(label_rule)
    correlate = parse_correlate(correlate)
    factors = sample_factors(num_images, seed)
    labels = rule.apply(factors)
    if correlate:
        _correlate(factors, labels, rule.num_classes, correlate, rule, np.random.default_rng([seed, 1]))
    disable = True if not progress or num_images <= PROGRESS_MIN_FILES else None
    images = np.empty((num_images, resolution, resolution, 3), dtype=np.uint8)
    from stylex.progress import progress_bar

    for i in progress_bar(range(num_images), desc="rendering shapes", unit="img", disable=disable):
        images[i] = render_scene({name: values[i] for name, values in factors.items()}, resolution)
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=list(rule.class_names),
        factors=factors,
        source=_describe(num_images, resolution, seed, label_rule, correlate),
        factor_categories={f.name: f.categories for f in FACTORS if f.is_categorical},
    )


def write_synth(
    out_dir: str | os.PathLike,
    num_images: int,
    resolution: int = 32,
    seed: int = 0,
    label_rule: str = "shape==circle",
    correlate: Mapping[str, float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ImageDataset:
    """Render a synthetic dataset and write it as a factor folder that :func:`load_dataset` reads back.

    Writes, atomically (into a temporary folder renamed into place):

    - ``<out_dir>/<class folder>/<index>.png``, class folders named by
      :func:`stylex.data.dataset.class_dir_names` (they sort in label order);
    - ``<out_dir>/factors.csv``: columns ``filename`` (relative to ``out_dir``), ``label``, then each factor
      of :data:`FACTOR_NAMES` (``shape`` by name, floats at full precision);
    - ``<out_dir>/synth.json``: ``format_version``, the arguments, ``class_names`` and each factor's range,
      categories and meaning.

    Args:
        out_dir: a new (or empty) folder.
        num_images, resolution, seed, label_rule, correlate, progress: as in :func:`render_shapes`.
        overwrite: replace ``out_dir`` if it holds an earlier ``write_synth`` output (its synth.json) and nothing
            else; any other folder is refused.

    Returns:
        The dataset as :func:`load_dataset` will return it (``filenames`` relative to ``out_dir``).

    Raises:
        StylexError: what :func:`render_shapes` raises; a rule that leaves a class without images (the message
            gives the factor ranges); an existing non-empty ``out_dir`` without ``overwrite``.
    """
    data = render_shapes(num_images, resolution, seed, label_rule, correlate, progress)
    assert data.labels is not None and data.factors is not None  # render_shapes sets both
    counts = np.bincount(data.labels, minlength=data.num_classes)
    if counts.min() == 0:
        empty = data.class_names[int(np.argmin(counts))]
        ranges = ", ".join(f"{f.name} in [{f.low:g}, {f.high:g})" for f in FACTORS if not f.is_categorical)
        raise StylexError(
            f"Label rule {label_rule!r} gives no images of class {empty!r} among {num_images}; "
            f"choose thresholds inside the factor ranges ({ranges}) or draw more images."
        )
    correlate = parse_correlate(correlate)
    with atomic_dir(out_dir, overwrite=overwrite, owner=("`stylex data synth`", _not_synth)) as tmp:
        data.filenames = write_image_tree(data, tmp, record_names=False)  # synth.json names the classes
        with open(tmp / FACTORS_CSV, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label", *FACTOR_NAMES])
            for i in range(len(data)):
                row = [data.filenames[i], int(data.labels[i])]
                for spec in FACTORS:
                    value = data.factors[spec.name][i]
                    row.append(spec.categories[value] if spec.is_categorical else repr(float(value)))
                writer.writerow(row)
        meta = {
            "format_version": 1,
            "num_images": num_images,
            "resolution": resolution,
            "seed": seed,
            "label_rule": label_rule,
            "correlate": correlate,
            "class_names": data.class_names,
            "factors": {
                f.name: {"low": f.low, "high": f.high, "categories": list(f.categories), "doc": f.doc} for f in FACTORS
            },
        }
        (tmp / SYNTH_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    data.source = str(Path(out_dir))
    return data


def _not_synth(folder: Path) -> str | None:
    """Why `folder` is not a `write_synth` output holding nothing else (None when it is one)."""
    try:
        meta = json.loads((folder / SYNTH_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"has no readable {SYNTH_JSON}"
    if not isinstance(meta, dict) or not isinstance(meta.get("factors"), dict) or "class_names" not in meta:
        return f"has a {SYNTH_JSON} that `data synth` did not write"
    return foreign_entries(folder, {SYNTH_JSON, FACTORS_CSV, *class_dir_names(meta["class_names"])})

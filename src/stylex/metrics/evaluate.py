"""`stylex evaluate` as one library call: every figure of an explanation, into ``metrics.json``.

For a run and an attributes file (from `stylex attfind` or a baseline, `stylex.attfind.baselines`), on the images
AttFind used (the same data, number of images and seed, read from the attributes file's settings, so the same
edit targets s_min / s_max):

- ``sufficiency``: sufficiency@K for each K (`stylex.metrics.sufficiency`), per class and overall;
- ``reconstruction``: classifier consistency, L1 and identity of the reconstructions G(E(x), C(x)), with the two
  trivial baselines (`stylex.metrics.reconstruction`);
- ``conditioning`` (conditioned models; None otherwise): how often swapping the logits G sees to another class's
  flips the decision when the swap reaches all styles, only the conv styles, only the toRGB styles, or only the
  max(K) conv coordinates it moves most (`stylex.metrics.conditioning`): where the model keeps the class;
- ``groundtruth`` (only when the data are synthetic shapes with their factors): the classifier's true importance
  of every factor, what each of the top attributes changes (oracle readings, dominant factor, purity), and per K
  precision@K, coverage@K, mean purity, Spearman and each factor's first rank (`stylex.metrics.groundtruth`);
  also how well the oracle reads the inputs and how faithfully the reconstructions keep each factor; with
  ``reach_images`` > 0, ``groundtruth.reach``: per factor the single searched coordinate (conv, and toRGB when the
  attributes were searched with ``include_rgb``: ``searched``) that changes it most on that many of the images
  (`stylex.metrics.groundtruth.factor_reach`), and per factor how many of those edits have it as their dominant
  factor (``dominant_counts``), i.e. whether any single-coordinate explanation could name the factor at all (the
  terminal summary warns about truly used factors that none can).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stylex.config import write_json
from stylex.errors import StylexError, option
from stylex.metrics.groundtruth import MIN_CHANGE, USED_THRESHOLD

METRICS_FILE = "metrics.json"
METRICS_FORMAT = "stylex.metrics.evaluate"
METRICS_VERSION = 1
DEFAULT_KS = (3, 5, 10)


def _batched_synthesis(G, s, noise: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    n = s.batch_size
    return torch.cat(
        [
            G.synthesis(s.index(slice(a, a + batch_size)), [t[a : a + batch_size] for t in noise])
            for a in range(0, n, batch_size)
        ]
    )


@torch.no_grad()
def evaluate_run(
    run_dir: str | os.PathLike,
    attributes_dir: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    num_images: int | None = None,
    seed: int | None = None,
    num_scenes: int = 256,
    num_values: int = 4,
    used_threshold: float = USED_THRESHOLD,
    min_change: float = MIN_CHANGE,
    max_read_images: int = 64,
    reach_images: int = 0,
    classifier=None,
    device: str = "cpu",
    batch_size: int = 64,
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate an explanation; writes ``out/metrics.json`` and returns the same dict.

    Args:
        run_dir: the run folder the attributes were found in.
        attributes_dir: a folder with ``attributes.json`` (`stylex attfind --out`, or a baseline's).
        out: folder for ``metrics.json``.
        data: images (default: those recorded in the attributes file, else the run's data).
        ks: the K of sufficiency@K and of the factor scores (each cut to the attributes available).
        num_images, seed: which images and their fixed noise (default: the attributes file's settings, i.e.
            AttFind's own images).
        num_scenes, num_values: size of the true-importance experiment (`true_importance`).
        used_threshold: decision-change rate at which a factor is truly used.
        min_change: normalised change an attribute needs for a dominant factor.
        max_read_images: images per class on which each attribute is read by the oracle.
        reach_images: > 0: also the factor reach on the first that many images (2 edits per coordinate; about 2
            minutes for 32 images of a shapes-32 model on 2 CPU cores).
        classifier: a loaded classifier instead of the one the run recorded.
        device: where the networks run.
        batch_size: images per forward pass.
        quiet: no progress bars (one over the stages, one while a large folder is read).

    Returns:
        the metrics (see the module docstring).
    """
    from stylex.attfind.effects import image_noise
    from stylex.attfind.result import AttFindResult
    from stylex.attfind.run import ATTRIBUTES_FILE, encode_images, pick_indices, warn_if_stale
    from stylex.data import FACTOR_NAMES, load_dataset
    from stylex.metrics.conditioning import class_swap
    from stylex.metrics.reconstruction import reconstruction_report
    from stylex.metrics.sufficiency import sufficiency
    from stylex.models.stylespace import use_rgb_coordinates
    from stylex.pipeline import load_run

    t0 = time.perf_counter()
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise StylexError(f"every K must be a whole number >= 1, got {list(ks)}.")
    model, classifier = load_run(run_dir, classifier, device)
    attributes_file = Path(attributes_dir) / ATTRIBUTES_FILE
    result = AttFindResult.load(attributes_file)
    use_rgb_coordinates(model.G, result.include_rgb)  # the StyleSpace the attributes were searched in
    warn_if_stale(model, result, attributes_dir, run_dir)
    found = max((len(c.attributes) for c in result.classes), default=0)
    if found and ks[-1] > found:
        cut = ", ".join(f"@{k}" for k in ks if k > found)
        warnings.warn(
            f"{attributes_file} holds at most {found} attributes per class, so the figures {cut} use those "
            f"{found} (run `stylex attfind --top-k {ks[-1]}` for more).",
            stacklevel=2,
        )
    S, K = model.G.layout.num_coords, model.num_classes
    bad = [a.flat_index for c in result.classes for a in c.attributes if not 0 <= a.flat_index < S]
    if len(result.classes) != K or bad:
        raise StylexError(
            f"{attributes_file} does not belong to {run_dir} ({len(result.classes)} classes for a {K}-class model"
            + (f", coordinates {bad[:3]} outside [0, {S})" if bad else "")
            + "); pass the attributes folder found in this run."
        )
    settings = result.settings
    given = data
    data = data or settings.get("data") or model.run_info.get("data")
    if data is None:
        raise StylexError(f"neither {attributes_file} nor {run_dir} records its data; pass {option('--data')}.")
    if not given and not Path(data).exists():
        raise StylexError(f"the data AttFind searched, {data}, is not here (moved?); pass it with {option('--data')}.")
    num_images = int(num_images or settings.get("num_images") or 250)
    seed = int(settings.get("seed", 0) if seed is None else seed)
    shift_size = float(settings.get("shift_size", 1.0))
    dataset = load_dataset(data, resolution=model.resolution, progress=not quiet)
    if len(dataset) < 2:
        raise StylexError(f"{data} has {len(dataset)} image; evaluation needs at least 2.")
    indices = pick_indices(len(dataset), num_images, seed)
    factors = dataset.factors or {}
    synthetic = all(f in factors for f in FACTOR_NAMES)
    stages = 2 + len(ks) + (3 + (reach_images > 0) if synthetic else 0)
    bar = _Stages(stages, quiet)

    # 1. The images, their styles, fixed noise, reconstructions and edit targets (as AttFind made them).
    bar.stage(f"encoding {len(indices)} images")
    x = dataset.tensors(indices).to(device)  # [N, 3, R, R]
    s = encode_images(model, classifier, x, batch_size)
    noise = image_noise(model.G, indices, seed, device)
    s_flat = s.flatten().float()
    s_min, s_max = s_flat.min(dim=0).values, s_flat.max(dim=0).values  # [S]
    x_rec = _batched_synthesis(model.G, s, noise, batch_size)  # [N, 3, R, R]
    base_logits = torch.cat([classifier(x_rec[a : a + batch_size]) for a in range(0, len(x_rec), batch_size)]).cpu()
    predicted = base_logits.argmax(dim=1)

    # 2. Sufficiency@K and reconstruction.
    names = result.class_names
    suff = {}
    for k in ks:
        bar.stage(f"sufficiency@{k}")
        figures = sufficiency(
            model.G, classifier, s, noise, base_logits, {c.class_index: c.edits[:k] for c in result.classes},
            s_min, s_max, shift_size, batch_size,
        )  # fmt: skip
        suff[str(k)] = {
            "overall": figures["overall"],
            "per_class": {names[y]: v for y, v in figures["per_class"].items()},
            "counts": {names[y]: v for y, v in figures["counts"].items()},
        }
    bar.stage("reconstruction and conditioning")
    recon = reconstruction_report(x, x_rec, classifier, batch_size)
    swap = class_swap(model, classifier, x, noise, base_logits, s_min, s_max, max(ks), batch_size)
    if swap is not None:
        swap["per_class"] = {names[y]: v for y, v in swap["per_class"].items()}
        swap["counts"] = {names[y]: v for y, v in swap["counts"].items()}

    metrics: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "run": str(run_dir),
        "attributes": str(attributes_file),
        "method": settings.get("method", "attfind"),
        "data": str(data),
        "num_images": len(indices),
        "seed": seed,
        "ks": ks,
        "class_names": names,
        "sufficiency": suff,
        "reconstruction": recon,
        "conditioning": swap,
        "groundtruth": None,
    }

    # 3. Ground truth, for synthetic shapes.
    if synthetic:
        metrics["groundtruth"] = _groundtruth(
            model, classifier, s, noise, result, s_min, s_max, shift_size, predicted, x, x_rec,
            {f: factors[f][indices] for f in FACTOR_NAMES}, ks, num_scenes, num_values, used_threshold, min_change,
            max_read_images, seed, device, batch_size, reach_images, bar,
        )  # fmt: skip
    else:
        metrics["groundtruth_skipped"] = (
            f"{data} has no synthetic-shapes factors (factors.csv from `stylex data synth`)"
        )
    bar.close()
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / METRICS_FILE, metrics)
    return metrics


def _groundtruth(
    model, classifier, s, noise, result, s_min, s_max, shift_size, predicted, x, x_rec, true_factors, ks,
    num_scenes, num_values, used_threshold, min_change, max_read_images, seed, device, batch_size, reach_images=0,
    bar=None,
) -> dict[str, Any]:  # fmt: skip
    """The ground-truth part of `evaluate_run` (its module docstring)."""
    from stylex.metrics.groundtruth import (
        best_reach,
        factor_reach,
        reach_dominant_counts,
        read_attributes,
        score_explanation,
        true_importance,
    )
    from stylex.metrics.oracle import oracle_errors, read_factors

    bar = bar or _Stages(0, quiet=True)
    bar.stage(f"true importance ({num_scenes} scenes)")
    importance = true_importance(
        classifier, model.resolution, num_scenes, num_values, seed, used_threshold, max(batch_size, 256), device
    )
    bar.stage("reading the attributes")
    readings = read_attributes(
        model.G, s, noise, result, s_min, s_max, shift_size, predicted, max(ks), max_read_images, min_change,
        batch_size,
    )  # fmt: skip
    scores = {str(k): score_explanation(readings, importance, k).to_dict() for k in ks}
    reach = None
    if reach_images > 0:
        n = min(reach_images, s.batch_size)
        rows = torch.arange(n, device=s.conv[0].device)
        bar.stage(f"factor reach on {n} images")
        edits = factor_reach(
            model.G, s.index(rows), [z[:n] for z in noise], classifier, batch_size=max(batch_size, 256),
            s_min=s_min, s_max=s_max, include_rgb=s.layout.search_rgb,
            progress=lambda done, total: bar.detail(f"factor reach on {n} images: {done}/{total} edits"),
        )  # fmt: skip
        kind = None if s.layout.search_rgb else "conv"  # the styles AttFind searched
        best = {f: dict(ranked[0], change=ranked[0]["changes"][f]) for f, ranked in best_reach(edits, kind, 1).items()}
        reach = {
            "num_images": n,
            "num_edits": len(edits),
            "searched": "conv+toRGB" if s.layout.search_rgb else "conv",
            "best_conv": best,  # the best searched coordinate (toRGB ones too when searched)
            "dominant_counts": reach_dominant_counts(edits, kind, min_change),
        }
    bar.stage("reading the inputs and reconstructions")
    return {
        "true_importance": importance.to_dict(),
        "scores": scores,
        "attributes": [r.to_dict() for r in readings],
        "oracle_on_inputs": oracle_errors(true_factors, read_factors(x)),
        "reconstruction_factors": oracle_errors(true_factors, read_factors(x_rec)),
        "min_change": min_change,
        "max_read_images": max_read_images,
        "reach": reach,
    }


class _Stages:
    """One progress bar over the stages of `evaluate_run`, named as each begins (the stages differ in length:
    a count, not a rate)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from stylex.progress import progress_bar

        self._bar = progress_bar(
            total=total, desc="evaluate", unit="stage", disable=True if quiet else None, dynamic_ncols=True,
            bar_format="{desc}: {n_fmt}/{total_fmt} stages [{elapsed}]",
        )  # fmt: skip
        self._started = False

    def stage(self, name: str) -> None:
        """The previous stage is done; `name` begins."""
        self.detail(name, refresh=not self._started)
        if self._started:
            self._bar.update(1)
        self._started = True

    def detail(self, text: str, refresh: bool = True) -> None:
        self._bar.set_description_str(f"evaluate: {text}", refresh=refresh)

    def close(self) -> None:
        if self._started:
            self._bar.update(1)
        self._bar.close()


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:5.3f}"


def format_metrics(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal: sufficiency, reconstruction, and the ground-truth scores per K."""
    rec = metrics["reconstruction"]["stylex"]
    lines = [
        f"{metrics['method']} on {metrics['num_images']} images: consistency {rec['consistency']:.3f}, "
        f"L1 {rec['l1']:.3f}, identity {rec['identity']:.3f}",
        "sufficiency@K: " + ", ".join(f"@{k} {_fmt(v['overall'])}" for k, v in metrics["sufficiency"].items()),
    ]
    swap = metrics.get("conditioning")
    if swap:
        lines.append(
            "class swap (logits G sees -> another class's), decision flips: "
            + ", ".join(f"{mode} {_fmt(v)}" for mode, v in swap["overall"].items())
        )
    gt = metrics.get("groundtruth")
    if gt is None:
        lines.append(f"ground truth: skipped ({metrics.get('groundtruth_skipped', 'no factors')})")
        return "\n".join(lines)
    ti = gt["true_importance"]
    rates = ti["flip_rate"]
    order = sorted(rates, key=lambda f: (-rates[f], f))  # ties by name, the same in both lists
    ranked = ", ".join(f"{f} {rates[f]:.2f}" for f in order)
    used = ", ".join(f for f in order if f in ti["used"]) or "none"
    lines.append(f"true importance (decision-change rate): {ranked}; used: {used}")
    lines.append(
        f"{'K':>4s}{'precision':>11s}{'coverage':>10s}{'purity':>8s}{'spearman':>10s}  first rank of used factors"
    )
    for k, sc in gt["scores"].items():
        first = ", ".join(f"{f} {sc['first_rank'][f] or '-'}" for f in order if f in sc["used"]) or "-"
        lines.append(
            f"{k:>4s}{_fmt(sc['precision']):>11s}{_fmt(sc['coverage']):>10s}{_fmt(sc['mean_purity']):>8s}"
            f"{_fmt(sc['spearman']):>10s}  {first}"
        )
    lines.append(
        "precision: share of the top-K attributes whose dominant factor is truly used; coverage: share of the used "
        "factors that some attribute has as its dominant one (n/a when none is used); purity: the dominant factor's "
        "share of an attribute's change; spearman: rank correlation of the factors' shares of the attributes' "
        "changes with their true importance by mean probability change (n/a when either is constant); first rank: "
        "the best rank at which a used factor is dominant ('-': none of the top K)"
    )
    drawn, seen = gt.get("reconstruction_factors") or {}, gt.get("oracle_on_inputs") or {}
    if "shape_accuracy" in drawn and "shape_accuracy" in seen:
        lines.append(
            f"the oracle reads shape right on {drawn['shape_accuracy']:.0%} of the reconstructions "
            f"({seen['shape_accuracy']:.0%} of the inputs): attribute readings are as sure as the model draws"
        )
    reach = gt.get("reach")
    if reach:
        best = reach["best_conv"]
        what = "conv or toRGB coordinate" if reach.get("searched") == "conv+toRGB" else "conv coordinate"
        lines.append(
            f"reach (largest change of each factor by one {what}, {reach['num_images']} images): "
            + ", ".join(f"{f} {best[f]['change']:.2f}" for f in sorted(best, key=lambda f: -best[f]["change"]))
        )
        counts = reach.get("dominant_counts") or {}
        unnamed = [f for f in gt["true_importance"]["used"] if counts and counts.get(f, 0) == 0]
        if unnamed:
            lines.append(
                f"warning: no single {what} has {', '.join(unnamed)} as its dominant factor, so no "
                "single-coordinate explanation of this model can name it; the generator lacks such a coordinate"
            )
    return "\n".join(lines)

"""The Python API on one page, in the style of captum: load, find attributes, explain an image.

    import stylex

    model, classifier = stylex.load_run("runs/demo-train/stylex")  # StylEx (G_ema, E_ema) + the run's classifier
    model, classifier = stylex.load_zoo("pepper-64")  # or a shipped model (stylex.list_models())
    w = model.encode(x)  # x [N, 3, R, R] in [-1, 1] -> w [N, w_dim]
    x_rec = model.reconstruct(x, classifier(x))  # [N, 3, R, R]
    result = stylex.AttFind(model, classifier, top_k=10, fast=50).run(x)  # -> AttFindResult
    e = stylex.counterfactual(model, classifier, result, x[0])  # -> ImageExplanation

Every name here is re-exported lazily by `stylex` itself (importing `stylex` loads nothing heavy), and so are
`load_run` (`stylex.pipeline`) and `load_zoo` / `list_models` (`stylex.zoo`). `make demo-train` writes the run
folder runs/demo-train/stylex; `make demo` explains the shipped pepper-64 model (into runs/demo) without training.
The image explanation is `counterfactual`, not `explain`: `stylex.explain` is the subpackage that draws and
reports.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from stylex.attfind.result import AttFindResult
from stylex.attfind.search import AttFind as _GeneratorAttFind
from stylex.classifier.adapter import as_classifier
from stylex.errors import StylexError
from stylex.explain.counterfactual import ImageExplanation
from stylex.models.stylespace import StyleVector, use_rgb_coordinates
from stylex.models.stylex import StylEx


class AttFind(_GeneratorAttFind):
    """AttFind on a trained StylEx model and images: `AttFind(model, classifier, top_k=10).run(x)`.

    The same algorithm as `stylex.attfind.AttFind` (which works on a generator and styles); this adapter only
    encodes the images and fixes their noise first.

    Args:
        model: a `StylEx` model (e.g. from `StylEx.load` or `load_run`).
        classifier: the classifier from `load_run`, or any `nn.Module` mapping images [N, 3, R, R] in [-1, 1] to
            logits [N, K] (see `stylex.classifier.as_classifier`: it is checked once, put in eval mode and frozen;
            for other inputs wrap it as `ClassifierAdapter(module, InputSpec(...))`).
        **kwargs: the options of `stylex.attfind.AttFind`: top_k (10), threshold (1.0), shift_size (1.0),
            one_vs_all, fast (None = exact effects; M = evaluate only the top 2M (coordinate, direction) pairs per
            image exactly),
            max_batch, memory_mb, images_per_chunk, precision, channels_last, class_names (default the run's),
            unstable_filter, sufficiency, progress, resamples (100 bootstrap resamples for each attribute's rank
            stability; 0 skips it); include_rgb (search the toRGB styles too; default: on for a
            model trained with tint styles, `--set model.tint_styles=N`, off otherwise, as `stylex attfind`);
            discriminator and discriminator_threshold (the notebook's optional filter, e.g.
            `discriminator=model.discriminator(RUN)`, as `stylex attfind --discriminator-filter T`).
    """

    def __init__(self, model: StylEx, classifier: Callable[[torch.Tensor], torch.Tensor], **kwargs: Any):
        from stylex.attfind.run import class_names_of

        if not isinstance(model, StylEx):
            raise StylexError(
                "stylex.AttFind takes a StylEx model (stylex.StylEx.load(RUN)); for a bare generator use "
                "stylex.attfind.AttFind(G, classifier)."
            )
        classifier = as_classifier(classifier, model.resolution, model.num_classes)
        _warn_if_other_classifier(model, classifier)
        kwargs.setdefault("class_names", class_names_of(model, classifier))
        if kwargs.get("include_rgb") is None:  # as `stylex attfind`: a tint model's tints are searched
            kwargs["include_rgb"] = use_rgb_coordinates(model.G, None)
        super().__init__(model.G, classifier, **kwargs)
        self.model = model

    def run(  # type: ignore[override]
        self,
        images: torch.Tensor | StyleVector,
        noise: list[torch.Tensor] | None = None,
        *,
        keys: Sequence[int] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> AttFindResult:
        """Find the attributes of every class on `images`.

        Args:
            images: x [N, 3, R, R] in [-1, 1] (N >= 2: each coordinate's min and max over them are the edit
                targets), or their styles (then `noise` is required, as for `stylex.attfind.AttFind.run`).
            noise: per-layer noise maps [N, 1, r, r]; default fixed per image from `keys` and `seed`.
            keys: one integer per image that fixes its noise (e.g. its dataset index); default 0..N-1.
            seed: noise seed.
            **kwargs: effects, checkpoint_dir, meta (see `stylex.attfind.AttFind.run`).

        Returns:
            `AttFindResult`: per class the ranked attributes and sufficiency@top_k; `.effects` holds the effect
            table [N, 2, S, K] with the images' styles (what `counterfactual` and the report need).
        """
        from stylex.attfind.effects import image_noise
        from stylex.attfind.run import encode_images

        if isinstance(images, StyleVector):
            if noise is None:
                raise StylexError("pass noise with styles, or pass the images themselves.")
            return self._fingerprinted(super().run(images, noise, **kwargs))
        x = _as_batch(images, self.model.resolution)
        if len(x) < 2:
            raise StylexError(f"AttFind needs at least 2 images (min and max of each style), got {len(x)}.")
        device = next(self.model.parameters()).device
        x = x.to(device)
        keys = list(range(len(x))) if keys is None else [int(k) for k in keys]
        if len(keys) != len(x):
            raise StylexError(f"got {len(keys)} keys for {len(x)} images; pass one per image.")
        with torch.no_grad():
            s = encode_images(self.model, self.C, x)
        if noise is None:
            noise = image_noise(self.model.G, keys, seed, device)
        meta = {"indices": keys, "seed": seed, **(kwargs.pop("meta", None) or {})}
        return self._fingerprinted(super().run(s, noise, meta=meta, **kwargs))

    def _fingerprinted(self, result: AttFindResult) -> AttFindResult:
        """Record the weights searched, as `stylex attfind` does: a counterfactual with a model trained on since,
        or another model of the same shape, is then warned about (`StaleAttributesWarning`)."""
        from stylex.attfind.run import model_fingerprint

        result.settings["model_fingerprint"] = model_fingerprint(self.model)
        return result


def _as_batch(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """x [3, R, R] or [N, 3, R, R] float in [-1, 1] -> [N, 3, R, R] float32, checked."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise StylexError("images must be a float tensor [N, 3, R, R] in [-1, 1] (see stylex.data.to_tensor).")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise StylexError(f"images must be [N, 3, R, R], got {list(x.shape)}.")
    if x.shape[-1] != resolution:
        raise StylexError(f"images are {x.shape[-1]} px but the model works at {resolution} px; resize them first.")
    if not torch.isfinite(x).all():
        raise StylexError("images hold NaN or inf values; pass images in [-1, 1].")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.5 or hi > 1.5:
        warnings.warn(
            f"images span [{lo:.3g}, {hi:.3g}], not [-1, 1] (images in 0..255 or 0..1? stylex.data.to_tensor "
            "converts uint8 images).",
            stacklevel=3,
        )
    elif lo >= 0 and hi <= 1 and hi > lo:  # no pixel darker than mid-grey: nearly always images in 0..1
        warnings.warn(
            f"images span [{lo:.3g}, {hi:.3g}]: images in 0..1? stylex expects [-1, 1] (2 * x - 1 converts them; "
            "stylex.data.to_tensor converts uint8 images). Ignore this for images with no dark pixels.",
            stacklevel=3,
        )
    return x.float()  # float64, float16 and bfloat16 images as the float32 models take


def counterfactual(
    model: StylEx,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    result: AttFindResult,
    image: torch.Tensor | str | os.PathLike,
    *,
    strategy: str = "subset",
    target: int | str | None = None,
    top_k: int = 5,
    fast: int | None = None,
    key: int | None = -1,
) -> ImageExplanation:
    """Explain one image: the edits of its styles that move the classifier toward another class.

    Args:
        model, classifier: as for `AttFind`.
        result: an `AttFindResult` with its `.effects` (from `AttFind.run`, or `load_attfind(folder)`).
        image: x [3, R, R] or [1, 3, R, R] in [-1, 1], or an image file (read like the data).
        strategy: "independent" (this image's strongest edits, cumulatively), "subset" (greedily, until the
            decision flips) or "class" (the target class's AttFind attributes).
        target: class (index or name) to move toward; default the most likely class other than the predicted one.
        top_k: most edits.
        fast: None: the image's exact effects (2 S forward passes: 13 s for the shipped pepper-64 model on a
            2-core CPU); M: fast mode (see `StyleEffects`; 2.0 s with M = 50). An image AttFind measured (`key`
            its key there, the same image) reuses its row of the effect table instead: no effects are computed.
        key: fixes the image's noise (its dataset index, or -1 or None for a file), as `AttFind.run`'s keys: pass
            the key AttFind gave the image (its position in `AttFind.run`'s images by default) for the same noise.

    Returns:
        `ImageExplanation`: the steps (edit, logits and probabilities [K] after it), whether it flipped, and the
        pictures (`.images`: the input, its reconstruction and the image after each step; `.picture()`, `.save(path)`;
        a notebook shows them).
    """
    from stylex.attfind.effects import image_noise
    from stylex.attfind.run import encode_images
    from stylex.explain.run import _resolve_class, explain_styles, measured_row, sequence_tiles

    if not isinstance(model, StylEx):
        raise StylexError(
            f"model must be a StylEx model (stylex.load_run(RUN) gives it with its classifier), got "
            f"{type(model).__name__}."
        )
    if isinstance(result, str | os.PathLike):
        raise StylexError(f"result must be an AttFindResult; for a folder pass stylex.load_attfind({str(result)!r}).")
    effects = getattr(result, "effects", None)
    if effects is None:
        raise StylexError("the AttFind result has no effect table; use stylex.load_attfind(FOLDER) or AttFind.run.")
    key = -1 if key is None else int(key)
    source = f"image with key {key}" if key >= 0 else "image"
    if isinstance(image, str | os.PathLike):
        from stylex.data import read_image, to_tensor

        source = str(image)
        image = to_tensor(read_image(image, model.resolution)[None].copy())
    classifier = as_classifier(classifier, model.resolution, model.num_classes)
    _warn_if_other_classifier(model, classifier)
    _check_result(result, model)
    if top_k < 1:
        raise StylexError(f"top_k must be at least 1, got {top_k}.")
    x = _as_batch(image, model.resolution)
    if len(x) != 1:
        raise StylexError(f"counterfactual takes one image, got {len(x)}; call it once per image.")
    device = next(model.parameters()).device
    x = x.to(device)
    with torch.no_grad():
        s = encode_images(model, classifier, x)
        noise = image_noise(model.G, [key], int(effects.meta.get("seed", 0)), device)
        y = _resolve_class(target, result.class_names)
        found, skipped, _ = explain_styles(
            model.G,
            classifier,
            s,
            noise,
            effects,
            result,
            row=measured_row(effects, key, s),
            strategies=(strategy,),
            target=y,
            top_k=top_k,
            fast=fast,
            source=source,
        )
    if strategy not in found:
        raise StylexError(f"strategy {strategy!r} was skipped: {skipped.get(strategy, 'unknown strategy')}.")
    e = found[strategy]
    e.images, e.image_probs = sequence_tiles(model.G, classifier, x, s, noise, e, effects)
    return e


def _check_result(result: AttFindResult, model: StylEx) -> None:
    """Search `model` in the StyleSpace `result` was found in; refuse a result of another model, warn on a stale one."""
    from stylex.attfind.run import bind_results

    bind_results(
        model, result, result.effects, "the AttFind result", "this model",
        redo="Search this model with stylex.AttFind(model, classifier).run(x) for a result of its own.",
    )  # fmt: skip


def load_attfind(folder: str | os.PathLike) -> AttFindResult:
    """The `AttFindResult` a `stylex attfind` folder holds, with its effect table attached (`.effects`)."""
    from stylex.attfind.effects import Effects
    from stylex.attfind.run import ATTRIBUTES_FILE, EFFECTS_FILE

    folder = Path(folder)
    if folder.name == ATTRIBUTES_FILE and folder.is_file():  # the file itself, as AttFindResult.load takes
        folder = folder.parent
    if not folder.exists():
        raise StylexError(
            f"{folder} does not exist; pass the folder `stylex attfind` wrote (its --out, default RUN/attfind), "
            "or one with the files of AttFindResult.save and Effects.save."
        )
    if not (folder / ATTRIBUTES_FILE).is_file():
        within = " (a run folder: its AttFind results are in RUN/attfind)" if (folder / "config.json").is_file() else ""
        raise StylexError(
            f"{folder} holds no {ATTRIBUTES_FILE}{within}; pass the folder `stylex attfind` wrote (its --out, default "
            "RUN/attfind), or the one AttFindResult.save wrote into."
        )
    result = AttFindResult.load(folder / ATTRIBUTES_FILE)
    result.effects = Effects.load(folder / EFFECTS_FILE)
    return result


def _warn_if_other_classifier(model: StylEx, classifier) -> None:
    """A model with another classifier than the one it was trained with explains nothing about either: the command
    line refuses the pair (`load_run`); from Python, where a run trained on an in-memory module needs the module
    again, it is said."""
    recorded = model.run_info.get("classifier_fingerprint")
    if recorded and classifier.fingerprint() != recorded:
        warnings.warn(
            f"this classifier (weights fingerprint {classifier.fingerprint()}) is not the one the model was trained "
            f"with ({recorded}); the explanations describe a pair that never trained together.",
            stacklevel=3,
        )

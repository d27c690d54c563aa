"""`stylex attfind` as one library call: load a run and images, find attributes, write the files, draw them.

Files written into the output folder (each atomically):
    effects.safetensors   the effect table [N, 2, S, K] with s_min, s_max, base logits and styles (see `Effects`)
    attributes.json       the `AttFindResult`: per class the ranked attributes, sufficiency@K, settings, timings
    attributes/<class>/   per attribute a before/after strip (PNG) and a sweep (GIF)
An interrupted effects computation leaves finished chunks in `.effects_partial/`; the same command resumes.

Several processes (`torchrun --nproc_per_node=N -m stylex attfind ...`): every process encodes all N images
(cheap next to the effects, and it gives every process the same s_min / s_max), computes the effects of its
share of them and sends its rows to the others (`StyleEffects.compute`); rank 0 then selects the attributes,
measures sufficiency, draws and writes every file, so the output equals a 1-process run's up to float rounding.
All processes add their finished chunks to the one `.effects_partial/` folder and rank 0 alone reads it, so an
interrupted run resumes with any number of processes. (Across machines that do not share the output folder, rank
0 still writes every file, but the other machines' chunks are neither reused nor removed.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from stylex.attfind.effects import Effects, _fingerprint, image_noise
from stylex.attfind.result import AttFindResult
from stylex.attfind.search import AttFind, check_styles_differ
from stylex.errors import StylexError, option
from stylex.models.stylespace import StyleVector, use_rgb_coordinates
from stylex.training.distributed import Distributed, process_group

EFFECTS_FILE = "effects.safetensors"
ATTRIBUTES_FILE = "attributes.json"
PARTIAL_DIR = ".effects_partial"


@torch.no_grad()
def encode_images(model, classifier, x: torch.Tensor, batch_size: int = 64, progress: bool = False) -> StyleVector:
    """Styles s = G.styles(E(x), C(x)) of images x [N, 3, R, R] in [-1, 1], in batches (`progress`: a tqdm bar
    when stderr is a terminal: thousands of images take minutes on a CPU)."""
    from stylex.progress import progress_bar

    out = []
    with progress_bar(total=len(x), desc="encoding images", unit="image", disable=None if progress else True) as bar:
        for a in range(0, len(x), batch_size):
            xb = x[a : a + batch_size]
            out.append(model.styles(xb, classifier(xb)))
            bar.update(len(xb))
    return StyleVector.cat(out)


def inputs_key(model, classifier, x: torch.Tensor, settings: str) -> str:
    """Fingerprint of what an effect table is computed from: the weights of G and E, the classifier (a
    `ClassifierAdapter`: its weights' fingerprint and its input convention), the images x and the `settings`.

    Not of the encoded styles: float results change in their last bits with the number of threads (a 1-process run
    against a torchrun one, another machine, OMP_NUM_THREADS), and the same inputs must still find their saved
    effects and their chunks.
    """
    from stylex.classifier import weights_fingerprint

    spec = json.dumps(classifier.input_spec.to_dict(), sort_keys=True)
    return _fingerprint(weights_fingerprint(model), classifier.fingerprint(), spec, x, settings)


def class_names_of(model, classifier) -> list[str]:
    names = model.run_info.get("class_names") or classifier.class_names
    return list(names) if names else [str(k) for k in range(model.num_classes)]


def encode_dataset(
    model, classifier, dataset, indices: list[int], seed: int, device, batch_size: int = 64, progress: bool = False
):
    """The images `indices` of `dataset` as AttFind sees them: (styles s, fixed per-image noise).

    attfind, the baselines and the speed benchmark go through here, so they edit the same styles with the
    same noise.
    """
    x = dataset.tensors(indices).to(device)  # [N, 3, R, R]
    return encode_images(model, classifier, x, batch_size, progress), image_noise(model.G, indices, seed, device)


def bind_results(
    model, result: AttFindResult, effects: Effects, folder, run_dir, command: str = "stylex attfind", redo: str = ""
):
    """Switch `model`'s generator to the StyleSpace `result` was searched in (conv styles, or with the toRGB ones),
    and refuse results that another model made.

    Raises:
        StylexError: the effects' coordinate or class count differs from the model's; the message names `command`
            (or says `redo`, from Python, where no command was run).
    """
    use_rgb_coordinates(model.G, result.include_rgb)
    moved = model.run_info.get("data_moved_from")
    if moved and effects.meta.get("data") == moved:  # found on the run's data, since moved with the run
        effects.meta["data"] = result.settings["data"] = model.run_info["data"]
    if effects.num_coords != model.G.layout.num_coords or effects.num_classes != model.num_classes:
        raise StylexError(f"{folder} was made for another model; " + (redo or f"run `{command}` for {run_dir} first."))
    warn_if_stale(model, result, folder, run_dir, command, redo)
    layout = model.G.layout
    for c in result.classes:  # results saved before attributes recorded whether they are tint styles
        c.attributes = [replace(a, tint=layout.tint_index(a.flat_index)) if a.tint is None else a for a in c.attributes]


def warn_if_stale(
    model, result: AttFindResult, folder, run_dir, command: str = "stylex attfind", redo: str = ""
) -> None:
    """Warn when `result` was searched on other weights than `model`'s, e.g. before `stylex train --resume` went
    on: its attributes and counterfactuals would describe a model that no longer exists. Results saved before the
    weights were recorded are not checked. `redo` says what to do instead of naming `command --recompute`."""
    found_on = result.settings.get("model_fingerprint")
    if found_on and found_on != model_fingerprint(model):
        other = result.settings.get("run")
        same_place = not other or not Path(str(run_dir)).exists() or Path(other).resolve() == Path(run_dir).resolve()
        why = "trained on since?" if same_place else f"it was found for {other}"
        if not other and redo:  # a result of the Python API, which does not know its model's folder
            why = "another model's, or trained on since?"
        again = f"Run `{command} --recompute` for {run_dir}."
        if command == "stylex attfind" and Path(str(folder)).resolve() != (Path(str(run_dir)) / "attfind").resolve():
            where = f"--model {shlex.quote(str(run_dir))} --out {shlex.quote(str(folder))}"  # not the run's own
            again = f"Run `stylex attfind {where} --recompute`."
        warnings.warn(
            f"{folder} was found on other weights than {run_dir} has now ({why}); its attributes may not be this "
            f"model's. " + (redo or again),
            StaleAttributesWarning,
            stacklevel=2,
        )


def model_fingerprint(model) -> str:
    """The fingerprint of a StylEx model's weights rounded to float16: the same for a run and its export (stored in
    float16 by default), another once training has moved the weights."""
    from stylex.classifier import weights_fingerprint

    return weights_fingerprint(model, dtype=torch.float16)


class StaleAttributesWarning(UserWarning):
    """AttFind results that were found on other weights of the model they are used with."""


def round_robin(classes: Sequence[int], n: int) -> list[int]:
    """Up to `n` positions into `classes` (one class per item), taking the classes in turn in their order, each
    class's items in theirs: so that each class appears when it can."""
    by_class: dict[int, list[int]] = {}
    for pos, k in enumerate(classes):
        by_class.setdefault(int(k), []).append(pos)
    queues = [by_class[k] for k in sorted(by_class)]
    out: list[int] = []
    while len(out) < min(n, len(classes)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def pick_indices(num_available: int, num_images: int, seed: int) -> list[int]:
    """`num_images` dataset indices drawn without replacement (seeded), sorted."""
    n = min(num_images, num_available)
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(num_available)[:n])


def run_attfind(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    num_images: int = 250,
    top_k: int = 10,
    fast: int | None = None,
    shift_size: float = 1.0,
    threshold: float = 1.0,
    one_vs_all: bool | None = None,
    include_rgb: bool | None = None,
    max_batch: int = 256,
    memory_mb: float = 2048.0,
    precision: str = "fp32",
    channels_last: bool = False,
    seed: int = 0,
    render: bool = True,
    num_frames: int = 16,
    resamples: int = 100,
    discriminator_threshold: float | None = None,
    unstable_filter: tuple[float, int] | None = None,
    recompute: bool = False,
    resume: bool = True,
    classifier=None,
    device: str = "cpu",
    quiet: bool = False,
) -> AttFindResult | None:
    """AttFind on a trained run: effects of every style coordinate searched, per-class attributes, sufficiency@K.

    Args:
        run_dir: a run folder written by `stylex train`.
        data: images to use (folder or .npz); default the run's own data.
        out: output folder (default RUN/attfind).
        num_images: N, images drawn (seeded) from `data`.
        top_k: attributes per class, also the K of sufficiency@K.
        fast: None for exact effects, or M (see `StyleEffects`).
        shift_size, threshold, one_vs_all: see `AttFind`.
        include_rgb: search the toRGB styles too, after the conv styles (not in the paper; colour attributes live
            there). Recorded in attributes.json; every command that reads the result searches the same space.
            None (default): on for a model with tint styles (`ModelConfig.tint_styles`), off otherwise.
        max_batch, memory_mb, precision, channels_last: speed and memory knobs, see `StyleEffects`.
        seed: picks the images and their fixed noise.
        render: draw the strips and GIFs.
        num_frames: GIF sweep positions from each coordinate's minimum to its maximum (the GIF goes there and
            back: 2 * num_frames - 2 frames); each is one synthesis, most of the drawing time.
        resamples: bootstrap resamples of the images for each attribute's rank stability (see `AttFind`).
        discriminator_threshold: None (default, as in the notebook), or the notebook's optional discriminator
            filter with this threshold (0.2 there): a coordinate whose edit moves the run's D by more is skipped
            (`filters.DiscriminatorFilter`). Needs the run folder (an exported model has no D).
        unstable_filter: None (default, as in the notebook), or the notebook's optional filter (0.3, 750): an
            image with more than 750 logit changes larger than 0.3 is left out of the selection (see `AttFind`).
        recompute: replace an existing effects file made with other settings; without it the existing file is
            reused when it matches and an error is raised when it does not.
        resume: reuse the finished chunks an interrupted run with the same inputs left in `out/.effects_partial`.
        classifier: a loaded classifier instead of the one the run recorded.
        device: "cpu" or "cuda" (under torchrun each process uses cuda:LOCAL_RANK).
        quiet: no progress bars.

    Returns:
        the `AttFindResult` (also written to `out/attributes.json`); `stats["reused_effects"]` says whether the
        effects were read from an earlier run. Under torchrun: the result on rank 0, None on the other ranks.
    """
    from stylex.files import folder_lock
    from stylex.zoo import is_shipped, resolve_model

    out = Path(out) if out is not None else resolve_model(run_dir) / "attfind"
    if is_shipped(out):
        raise StylexError(
            f"{out} is inside the shipped models' folder, which stylex does not write into; pass another "
            f"{option('--out')}."
        )
    with (
        process_group(device) as dist,
        folder_lock(out, "stylex attfind") if dist.is_main else contextlib.nullcontext(),
    ):
        return _run_attfind(
            run_dir,
            data,
            out,
            num_images=num_images,
            top_k=top_k,
            fast=fast,
            shift_size=shift_size,
            threshold=threshold,
            one_vs_all=one_vs_all,
            include_rgb=include_rgb,
            max_batch=max_batch,
            memory_mb=memory_mb,
            precision=precision,
            channels_last=channels_last,
            seed=seed,
            render=render,
            num_frames=num_frames,
            resamples=resamples,
            discriminator_threshold=discriminator_threshold,
            unstable_filter=unstable_filter,
            recompute=recompute,
            resume=resume,
            classifier=classifier,
            device=str(dist.device(device)),
            quiet=quiet or not dist.is_main,
            dist=dist,
        )


def _run_attfind(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None,
    out: str | os.PathLike | None,
    *,
    num_images: int,
    top_k: int,
    fast: int | None,
    shift_size: float,
    threshold: float,
    one_vs_all: bool | None,
    include_rgb: bool | None,
    max_batch: int,
    memory_mb: float,
    precision: str,
    channels_last: bool,
    seed: int,
    render: bool,
    num_frames: int,
    resamples: int,
    discriminator_threshold: float | None,
    unstable_filter: tuple[float, int] | None,
    recompute: bool,
    resume: bool,
    classifier,
    device: str,
    quiet: bool,
    dist: Distributed,
) -> AttFindResult | None:
    from stylex.data import load_dataset
    from stylex.data.dataset import check_out_of_data
    from stylex.models.stylespace import use_rgb_coordinates
    from stylex.pipeline import load_run, recorded_data

    model, classifier = load_run(run_dir, classifier, device)
    D = None if discriminator_threshold is None else model.discriminator(run_dir)
    include_rgb = use_rgb_coordinates(model.G, include_rgb)
    data = recorded_data(run_dir, data, model.run_info.get("data"))
    out = Path(out) if out is not None else Path(run_dir) / "attfind"
    check_out_of_data(out, data)
    dataset = load_dataset(data, resolution=model.resolution, progress=not quiet)
    if len(dataset) < 2:
        raise StylexError(f"{data} has {len(dataset)} image; AttFind needs at least 2 (min and max of each style).")
    indices = pick_indices(len(dataset), num_images, seed)
    names = class_names_of(model, classifier)

    s, noise = encode_dataset(model, classifier, dataset, indices, seed, device, progress=not quiet)
    check_styles_differ(s)
    settings = f"{shift_size}|{fast}|{precision}|{channels_last}|{include_rgb}|{seed}|{indices}"
    key = inputs_key(model, classifier, dataset.tensors(indices), settings)
    meta = {"key": key, "run": str(run_dir), "data": str(Path(data).resolve()), "indices": indices, "seed": seed}

    effects_path = out / EFFECTS_FILE
    partial = out / PARTIAL_DIR
    effects, error = None, None
    if dist.is_main:  # rank 0 alone reads the output folder; its verdict reaches every rank
        try:
            effects = _saved_effects(effects_path, key, recompute)
        except StylexError as e:
            if not dist.enabled:
                raise
            error = str(e)
        if not resume and partial.is_dir():
            shutil.rmtree(partial)
    error = dist.share_error(error)
    if error is not None:
        raise StylexError(error)
    if dist.main_value(effects is not None) and not dist.is_main:
        return None  # rank 0 reuses the saved effects: nothing left to share
    finder = AttFind(
        model.G,
        classifier,
        top_k=top_k,
        threshold=threshold,
        shift_size=shift_size,
        one_vs_all=one_vs_all,
        fast=fast,
        max_batch=max_batch,
        memory_mb=memory_mb,
        precision=precision,
        channels_last=channels_last,
        class_names=names,
        progress=not quiet,
        resamples=resamples,
        discriminator=D,
        discriminator_threshold=0.2 if discriminator_threshold is None else discriminator_threshold,
        unstable_filter=unstable_filter,
    )
    reused = effects is not None
    if not reused:  # every rank computes its share of the rows and receives the others'
        effects = finder.effects_finder.compute(s, noise, checkpoint_dir=partial, meta=meta, dist=dist, key=key)
    if not dist.is_main:
        return None
    result = finder.run(s, noise, effects=effects)
    if not reused:
        result.effects.save(effects_path)
    result.stats["reused_effects"] = reused
    result.settings.update(run=str(run_dir), data=meta["data"], seed=seed, model_fingerprint=model_fingerprint(model))
    result.stats.pop("key", None)
    result.stats.pop("indices", None)
    if (out / ATTRIBUTES_FILE).is_file():  # an earlier search's pictures go, drawn again or not (--no-render):
        from stylex.explain.attributes import remove_attribute_pictures

        remove_attribute_pictures(out / "attributes")  # a smaller --top-k left its extra ranks' GIFs behind
    if render:
        from stylex.explain.attributes import render_attributes

        render_attributes(model.G, classifier, s, noise, result, result.effects, out / "attributes",
                          num_frames=num_frames, progress=not quiet)  # fmt: skip
    result.save(out / ATTRIBUTES_FILE)
    return result


def _saved_effects(path: Path, key: str, recompute: bool) -> Effects | None:
    """The effects in `path` when they were made from the same images and settings (`key`); None to compute."""
    if not path.is_file() or recompute:
        return None
    saved = Effects.load(path)
    if saved.meta.get("key") != key:
        raise StylexError(
            f"{path} holds effects of other images, weights or settings (or an older stylex wrote it, which keyed "
            f"them differently); pass {option('--recompute', 'recompute=True')} to replace it, or choose another "
            f"{option('--out')}."
        )
    return saved

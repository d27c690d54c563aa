"""One library call per CLI stage: train a StylEx model, reconstruct, and the demos (shipped model; whole chain).

Each stage reads the files the stage before it wrote, so any stage can be re-run alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stylex.config import TrainConfig, read_json, write_json
from stylex.errors import StylexError, counted, option

if TYPE_CHECKING:
    from stylex.training.distributed import Distributed


def _held_out(dataset, config: TrainConfig, class_names=None):
    """The deterministic (train, val) split every stage agrees on: stratified by the labels in the run's class
    order (`class_names`, which the data's classes may name in another order)."""
    if len(dataset) < 4:
        raise StylexError(f"{dataset.source} has {len(dataset)} images; StylEx needs at least 4.")
    if class_names:
        dataset = dataset.relabelled(class_names)
    return dataset.split(config.val_fraction, config.seed)


def _run_held_out(dataset, model):
    """The run's held-out split of `dataset`, its own data, once the data are checked to be what it trained on.

    Raises:
        StylexError: the data now hold another number of images (one deleted or added: the split would put
            training images among the held-out ones).
    Warns when only the pixels differ (edited images, or another Pillow's decoding): the split is the same.
    """
    info = model.run_info
    recorded, counts = info.get("data_fingerprint"), (info.get("num_train"), info.get("num_val"))
    files = info.get("data_files_fingerprint")  # recorded since session 20
    advice = ("Restore the data as they were, or pass held-out images of your own (which are used whole, e.g. "
              "`stylex data heldout`'s file written before the change).")  # fmt: skip
    if recorded is not None and dataset.fingerprint() != recorded:
        if None not in counts and sum(counts) != len(dataset):
            raise StylexError(
                f"{dataset.source} holds {len(dataset)} images, but the run was trained on {sum(counts)} "
                f"({counts[0]} training, {counts[1]} held out): with images added or removed its held-out split "
                f"would hold training images. {advice}"
            )
        if files is not None and dataset.files_fingerprint() != files:
            raise StylexError(
                f"the files of {dataset.source} are not those the run was trained on (replaced or renamed): its "
                f"held-out split would hold other images, some of them training images. {advice}"
            )
        warnings.warn(
            f"the images of {dataset.source} are not the pixels the run was trained on: "
            + (
                "the same files, edited (or decoded by another version of Pillow), so its held-out split is the "
                "same files."
                if files is not None
                else "if the files were only edited (or decoded by another version of Pillow) its held-out split "
                "is the same files; if some were replaced by others, it may hold training images."
            ),
            stacklevel=2,
        )
    return _held_out(dataset, model.config, info.get("class_names"))[1]


def recorded_data(run_dir, data, recorded):
    """`data` when given, else the data the run recorded (`recorded`).

    Raises:
        StylexError: the run records none, or what it records is not here (moved since: said as such, with the
            option that points at it, where the loader said only "does not exist").
    """
    if data:
        return data
    if not recorded:
        raise StylexError(f"{run_dir} does not record its data; pass {option('--data')}.")
    if not Path(recorded).exists():
        raise StylexError(
            f"the data {run_dir} was trained on, {recorded}, is not here (moved?); pass it with {option('--data')}."
        )
    return recorded


def _is_run_data(data: str | os.PathLike | None, run_info: dict) -> bool:
    """Whether `data` is the data the run recorded (None stands for it): only that data has the run's held-out
    split; other data holds none of its training images."""
    own = run_info.get("data")
    return data is None or (own is not None and Path(data).resolve() == Path(own).resolve())


def _run_class_names(classifier, dataset) -> list[str]:
    """The class names a run records: the classifier's, else the data's (numbered up to the classifier's outputs).

    Raises:
        StylexError: the data has more classes than the classifier has outputs.
    Warns when the data's classes are not among the classifier's: its labels are then taken as the classifier's
    outputs by position, which the user should know.
    """
    k, theirs = classifier.num_classes, list(classifier.class_names or [])
    ours = list(dataset.class_names) if dataset.labels is not None else []
    if len(ours) > k:
        raise StylexError(
            f"{dataset.source} has {len(ours)} classes ({', '.join(ours)}) but the classifier has {k} outputs; "
            "give it images of the classifier's classes."
        )
    if theirs and ours and not set(ours) <= set(theirs):
        pairs = ", ".join(f"{a} as {b}" for a, b in zip(ours, theirs, strict=False))
        warnings.warn(
            f"the data's classes ({', '.join(ours)}) are not the classifier's ({', '.join(theirs)}); they are taken "
            f"by position ({pairs}). If that is wrong, name the data's classes as the classifier's (the class "
            "folders, or class_names in an .npz).",
            stacklevel=3,
        )
    if theirs:
        return theirs
    if ours and len(ours) < k:
        rest = f"output {k - 1} is" if k - len(ours) == 1 else f"outputs {len(ours)}-{k - 1} are"
        warnings.warn(
            f"the classifier has {k} outputs and {dataset.source} {len(ours)} classes; data class i is taken as "
            f"output i, and {rest} named by number.",
            stacklevel=3,
        )
        return ours + [str(i) for i in range(len(ours), k)]
    return ours


def write_held_out(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> int:
    """Write the held-out split of a run's data (the images its training never saw) as an .npz file that every
    command takes as `--data`; returns the number of images.

    Args:
        run_dir: a run folder written by `stylex train`.
        out: the .npz file to write (images, labels, class_names, filenames; no ground-truth factors).
        data: the images to split; default the run's own data. The split is the run's (its `val_fraction` and
            `seed`), so it matches training only for the data the run was trained on.
        overwrite: replace an existing `out` (never the data it splits).
        quiet: no progress bar while a large folder is read.
    """
    from stylex.data import load_dataset, save_npz
    from stylex.data.dataset import check_npz_out
    from stylex.models.stylex import StylEx

    model = StylEx.load(run_dir)
    if data is None and isinstance(model.run_info.get("export"), dict):
        raise StylexError(
            f"{run_dir} is an exported model: its shipped samples are held-out images already; pass "
            f"{option('--data')} to split another file with the model's split."
        )
    data = recorded_data(run_dir, data, model.run_info.get("data"))
    out = check_npz_out(out, data, overwrite, "split")
    dataset = load_dataset(data, resolution=model.resolution, progress=not quiet)
    if _is_run_data(data, model.run_info):
        val = _run_held_out(dataset, model)
    else:  # other data: split as the run would, as documented
        _, val = _held_out(dataset, model.config, model.run_info.get("class_names"))
    if len(val) == 0:
        raise StylexError(f"{run_dir} holds no images out (val_fraction {model.config.val_fraction}).")
    save_npz(val, out)
    return len(val)


def train_stylex(
    data: str | os.PathLike,
    classifier,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool = False,
    device: str = "cpu",
    quiet: bool = False,
    init_from: str | os.PathLike | None = None,
):
    """Train (or resume) a StylEx model for `classifier` on the images in `data`.

    Launched by `torchrun --nproc_per_node=N`, the N processes train one model together with
    DistributedDataParallel on shards of the global batch `config.batch_size` (see
    `stylex.training.distributed`); rank 0 writes the run folder.

    Args:
        data: image folder or .npz (see `stylex.data.load_dataset`); labels are not needed.
        classifier: a loaded `ClassifierAdapter` (see `stylex.classifier.load_classifier`), its place (as the
            command line's --classifier), or an `nn.Module` taking images in [-1, 1] (see
            `stylex.classifier.as_classifier`); moved to the process's device. A run trained with an in-memory module
            records no place to reload it from: pass it to later calls again (it cannot be exported).
        out_dir: the run folder (config.json, weights.safetensors, state.pt, stats.jsonl, samples/).
        config: the resolved training config.
        resume: continue the run in `out_dir` from its last checkpoint (also with another number of processes).
        init_from: start a new run from the networks of this run folder (a fine-tune; see `Trainer.init_weights`).
        device: "cpu" or "cuda" (under torchrun each process uses cuda:LOCAL_RANK).
        quiet: no progress bar.
    Returns:
        `TrainResult`: out_dir; step (where training stopped); seconds (training time over all sessions, evaluation
        not counted); last_stats (the last logged mean losses, {} when no step ran); start_step (where this call
        began: a resumed run's step); stopped_by ("SIGINT" / "SIGTERM" when a signal stopped it after a checkpoint).
    Raises:
        StylexError: a bad config, data or classifier; a folder that holds a run (without `resume`) or none (with
            it); a resume on another config, classifier or data; a diverging loss (`DivergenceError`).
    The caller's random numbers are left as they were (training seeds its own from `config.seed`).
    """
    from stylex.classifier import as_classifier, load_classifier
    from stylex.data.dataset import check_out_of_data
    from stylex.device import check_device
    from stylex.files import folder_lock
    from stylex.training.distributed import process_group

    check_device(device)
    if not isinstance(config, TrainConfig):
        raise StylexError(
            f"config must be a TrainConfig (stylex.config.preset(NAME, ...)), got {type(config).__name__}."
        )
    if not isinstance(data, str | os.PathLike):
        raise StylexError(
            f"data must be the path of an image folder or .npz, got {type(data).__name__}; write an ImageDataset "
            "first (stylex.data.save_image_folder, or np.savez(path, images=..., labels=..., class_names=...))."
        )
    config.validate()
    check_out_of_data(out_dir, data)  # its samples would join the data
    with process_group(device) as dist:
        dist.check_batch(config.batch_size)
        device = dist.device(device)
        quiet = quiet or not dist.is_main
        resolution = config.model.resolution
        if isinstance(classifier, str | os.PathLike):  # a classifier folder, TorchScript file or module:factory
            classifier = load_classifier(os.fspath(classifier), device=device, resolution=resolution)
        classifier = as_classifier(classifier, resolution).to(device)
        size = getattr(getattr(classifier, "input_spec", None), "size", None)
        if size is not None and size > resolution and dist.is_main:
            warnings.warn(
                f"the model draws {resolution} px images and the classifier takes {size} px: it sees them enlarged "
                "and blurred, and may classify them less accurately than its own images (explanations then describe "
                f"that); train with --set model.resolution={size}, or a classifier at {resolution} px.",
                stacklevel=2,
            )
        held = folder_lock(out_dir, "stylex train") if dist.is_main else contextlib.nullcontext()
        with held, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # held before any work
            return _train(data, classifier, out_dir, config, resume, device, quiet, dist, init_from)


def _train(
    data: str | os.PathLike,
    classifier,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool,
    device: torch.device,
    quiet: bool,
    dist: Distributed,
    init_from: str | os.PathLike | None = None,
):
    from stylex.classifier.load import relative_places
    from stylex.data import load_dataset
    from stylex.training.trainer import Trainer

    dataset = load_dataset(data, resolution=config.model.resolution, progress=not quiet)  # classifier: checked
    if dist.is_main and not resume and init_from is None:
        _warn_if_shrunk(dataset.native_side, config, getattr(getattr(classifier, "input_spec", None), "size", None))
    config = _resolve_grey(config, dataset, Path(out_dir), resume, warn=dist.is_main)
    class_names = _run_class_names(classifier, dataset)
    train_set, val_set = _held_out(dataset, config, class_names)
    out_dir = Path(out_dir)
    checked = _classifier_accuracy(classifier, val_set, device, warn=dist.is_main)
    run_info = {
        "data": str(Path(data).resolve()),
        "data_relative": os.path.relpath(Path(data).resolve(), Path(out_dir).resolve()),  # for a moved project
        "data_fingerprint": dataset.fingerprint(),
        "data_files_fingerprint": dataset.files_fingerprint(),
        "num_train": len(train_set),
        "num_val": len(val_set),
        "class_names": class_names,
        "classifier": relative_places(classifier.to_dict(relative_to=out_dir), out_dir),
        "classifier_fingerprint": classifier.fingerprint(),
        **({"classifier_accuracy": checked} if checked else {}),
    }
    trainer = Trainer(
        config,
        classifier,
        train_set.tensors(),
        val_set.tensors(),
        out_dir,
        run_info=run_info,
        device=device,
        quiet=quiet,
        dist=dist,
    )
    return trainer.run(resume=resume, init_from=init_from)


MAX_SUGGESTED = 256
"""The largest model size `_warn_if_shrunk` proposes (1024 px images on 2 CPU cores would take days)."""


def _warn_if_shrunk(side: int | None, config: TrainConfig, classifier_size: int | None) -> None:
    """Warn when the images are at least twice the model's size (the default preset draws 32 px whatever the data),
    unless the classifier's larger input size was named already."""
    r = config.model.resolution
    if side is None or side < 2 * r or (classifier_size is not None and classifier_size > r):
        return
    fit = min(1 << (side.bit_length() - 1), MAX_SUGGESTED)  # the largest power of two the images fill
    larger = config.preset if config.preset in ("plant-64", "faces-64") else "plant-64"  # faces-64 keeps its diffaug
    name = {32: "shapes-32", 64: larger}.get(fit, larger if fit > 64 else config.preset)
    size = "" if fit in (32, 64) else f" model.resolution={fit}"
    how = option(f"--preset {name}" + (f" --set{size}" if size else ""), f'stylex.preset("{name}")' + (
        f" with{size}" if size else ""))  # fmt: skip
    if fit > 64:
        how += " (a larger model: slower per step)"
    warnings.warn(
        f"the images are {side} px (the median shorter side) and the model draws {r} px (preset {config.preset}): "
        f"StylEx learns, and explains, them shrunk {side / r:.0f}x, so details finer than that are lost to it; to "
        f"train at {fit} px pass {how}.",
        stacklevel=3,
    )


def _resolve_grey(config: TrainConfig, dataset, out_dir: Path, resume: bool, warn: bool = True) -> TrainConfig:
    """`config` with `model.grey` decided where it is None: a resumed run's own choice, else on when every image of
    the data is grey (R = G = B), said once: scans came back as green and red counterfactuals, which a reader takes
    for findings."""
    import dataclasses

    if config.model.grey is not None:
        return config
    if resume:
        try:
            saved = read_json(out_dir / "config.json")["train"]["model"].get("grey")
        except (StylexError, OSError, KeyError, TypeError, AttributeError):
            return config  # the trainer says what is wrong with the folder
        return dataclasses.replace(config, model=dataclasses.replace(config.model, grey=saved))
    pixels = dataset.images
    grey = len(pixels) > 0 and all(
        np.array_equal(chunk[..., 0], chunk[..., 1]) and np.array_equal(chunk[..., 1], chunk[..., 2])
        for chunk in (pixels[i : i + 256] for i in range(0, len(pixels), 256))
    )
    if not grey:
        return config
    if warn:
        warnings.warn(
            "every image of the data is grey, so the generator draws grey images too (model.grey; "
            "--set model.grey=false for colour ones).",
            stacklevel=3,
        )
    return dataclasses.replace(config, model=dataclasses.replace(config.model, grey=True))


CLASSIFIER_CHECK_IMAGES = 512
"""At most this many of the run's held-out images measure its classifier when `stylex train` starts."""


def _classifier_accuracy(classifier, val_set, device, warn: bool = True) -> dict[str, Any] | None:
    """The classifier's accuracy on the run's held-out images where they are labelled ({"accuracy", "num_images"},
    recorded in the run for the report), said when it is nearer chance than perfect: an untrained classifier, or one
    given the wrong input convention, went through training, AttFind and the report without a word."""
    from stylex.classifier.train import balanced_accuracy, weak_classifier_note

    if val_set.labels is None or len(val_set) == 0:
        return None
    held_out = len(val_set)
    if held_out > CLASSIFIER_CHECK_IMAGES:  # a seeded sample: a large classifier on the CPU takes its time
        picked = np.random.default_rng(0).choice(held_out, CLASSIFIER_CHECK_IMAGES, replace=False)
        val_set = val_set.subset(np.sort(picked))
    with torch.no_grad():
        predicted = torch.cat(
            [classifier(val_set.tensors(list(range(i, min(i + 64, len(val_set))))).to(device)).argmax(1).cpu()
             for i in range(0, len(val_set), 64)]
        ).numpy()  # fmt: skip
    accuracy = float((predicted == val_set.labels).mean())
    balanced = balanced_accuracy(val_set.labels, predicted, classifier.num_classes)
    if balanced is None:  # no label among the classifier's outputs
        return None
    present = len(np.unique(val_set.labels))
    on = counted(len(val_set), "held-out image") + (f" of {held_out}" if held_out > len(val_set) else "")
    note = weak_classifier_note(accuracy, classifier.num_classes, balanced, present)
    if note and warn:
        warnings.warn(
            f"{note} (on {on} of the run). An untrained classifier (a factory "
            f"given no {option('--classifier-weights', 'weights')}?) or one given another input range than it takes "
            f"({option('--classifier-range', 'InputSpec(value_range=...)')}) looks like this.",
            stacklevel=5,
        )
    return {
        "accuracy": round(accuracy, 4),
        "balanced_accuracy": round(balanced, 4),
        "classes_present": present,
        "num_images": len(val_set),
        "num_held_out": held_out,
    }


def load_run(
    run_dir: str | os.PathLike,
    classifier=None,
    device: str = "cpu",
    weights: str | None = None,
    trust_code: bool | None = None,
):
    """(StylEx model, classifier) of a run folder (or an exported model's folder, or `zoo:NAME`).

    The classifier is the one the run recorded, unless one is given: a `ClassifierAdapter` or an `nn.Module` (see
    `stylex.classifier.as_classifier`), which must have the recorded classifier's weights. `weights` picks the
    checkpoint file in the run folder (see `StylEx.load`; "best.safetensors" for the best one by `keep_best`).
    `trust_code`: a recorded `module:factory` classifier is imported only when trusted (see
    `load_classifier_from_dict`; None = the STYLEX_TRUST_CODE environment variable).
    """
    from stylex.classifier import as_classifier, load_classifier_from_dict
    from stylex.models.stylex import StylEx
    from stylex.zoo import resolve_model

    if isinstance(classifier, str | os.PathLike):  # its input convention would be lost: the run records it
        raise StylexError(
            f"classifier= takes a loaded classifier, not a place ({classifier}); leave it out to load the one the run "
            "recorded (with its input convention), or load it yourself with stylex.classifier.load_classifier."
        )
    run_dir = resolve_model(run_dir)
    model = StylEx.load(run_dir, device=device, weights=weights)
    info = model.run_info
    if classifier is None and isinstance(info.get("export"), dict):  # a downloaded folder reads only its own files
        from stylex.models.stylex import inside_export

        for key in ("location", "weights"):
            recorded = (info.get("classifier") or {}).get(key)
            if isinstance(recorded, str) and recorded:
                inside_export(run_dir, recorded, f"classifier {key}")
    if classifier is None:
        classifier = load_classifier_from_dict(
            info["classifier"], device=device, base_dir=run_dir, resolution=model.resolution, trust_code=trust_code
        )
    else:
        classifier = as_classifier(classifier, model.resolution)
    recorded = info.get("classifier_fingerprint")
    if recorded and classifier.fingerprint() != recorded:
        raise StylexError(
            f"the classifier given was not the one {run_dir} was trained with (fingerprint "
            f"{classifier.fingerprint()} vs {info['classifier_fingerprint']}); pass that classifier or re-train."
        )
    if classifier.num_classes != model.num_classes:
        raise StylexError(
            f"{run_dir} was trained for {model.num_classes} classes, the classifier has {classifier.num_classes}."
        )
    return model, classifier


def reconstruct(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    num_images: int = 256,
    split: str = "val",
    classifier=None,
    device: str = "cpu",
    seed: int = 0,
    dataset=None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Encode and regenerate images; write a grid and metrics; return the figures.

    Args:
        run_dir: a run folder written by `stylex train`.
        data: images to reconstruct; default the run's own data.
        out: folder for `reconstructions.png` and `reconstruction.json` (default RUN/reconstruct).
        num_images: how many images are evaluated (identity compares each against all of them).
        split: "val" (the run's held-out split of its own data; other data, and an exported model's shipped
            samples, are held-out images already and are used whole) or "all".
        classifier: a loaded classifier to use instead of the recorded one (must have the same fingerprint).
        dataset: the images of `data` at the model's resolution, already read (the report passes its own, which it
            read once: its warnings came twice).
        quiet: no progress bar while a large folder is read.
    Returns:
        {"stylex": {consistency, l1, identity}, "class_median": {...}, "shifted_input": {...}, ...}.
    """
    from stylex.data import load_dataset
    from stylex.data.dataset import check_out_of_data
    from stylex.explain.render import save_grid
    from stylex.metrics.reconstruction import reconstruction_report

    if num_images < 2:
        raise StylexError(
            f"num_images must be at least 2 (identity compares each image with the others), got {num_images}."
        )
    model, classifier = load_run(run_dir, classifier, device)
    shipped_samples = data is None and isinstance(model.run_info.get("export"), dict)  # held out already
    own_data = _is_run_data(data, model.run_info)  # other data (e.g. `stylex data heldout`'s file) is used whole
    data = recorded_data(run_dir, data, model.run_info.get("data"))
    out = Path(out) if out else Path(run_dir) / "reconstruct"
    check_out_of_data(out, data)
    if dataset is None:
        dataset = load_dataset(data, resolution=model.resolution, progress=not quiet)
    if split not in ("val", "all"):
        raise StylexError(f"split must be 'val' or 'all', got {split!r}.")
    if split == "val" and own_data and not shipped_samples:
        dataset = _run_held_out(dataset, model)
    if len(dataset) == 0:
        raise StylexError(
            f"no images to reconstruct in {data}" + (" (its held-out split is empty)" if own_data else "") + "."
        )
    n = min(num_images, len(dataset))
    x = dataset.tensors(list(range(n))).to(device)
    gen = torch.Generator().manual_seed(seed)
    x_rec = []
    with torch.no_grad():
        for i in range(0, n, 64):
            xb = x[i : i + 64]
            noise = model.G.make_noise(len(xb), generator=gen, device=device)
            x_rec.append(model.reconstruct(xb, classifier(xb), noise))
        x_rec = torch.cat(x_rec)
        report = reconstruction_report(x, x_rec, classifier)
    report.update({"run": str(run_dir), "data": str(data), "split": split})
    out.mkdir(parents=True, exist_ok=True)
    k = min(16, n)
    save_grid([x[:k], x_rec[:k]], out / "reconstructions.png", scale=3)
    write_json(out / "reconstruction.json", report)
    report["grid"] = str(out / "reconstructions.png")
    return report


def format_report(report: dict[str, Any]) -> str:
    """A small table of the reconstruction figures for the terminal."""
    lines = [f"{'':16s}{'consistency':>12s}{'L1':>8s}{'identity':>10s}"]
    for name in ("stylex", "class_median", "shifted_input"):
        r = report[name]
        lines.append(f"{name:16s}{r['consistency']:12.3f}{r['l1']:8.3f}{r['identity']:10.3f}")
    lines.append(f"({report['num_images']} images; identity chance level {1 / report['num_images']:.3f})")
    return "\n".join(lines)


def demo(
    out_dir: str | os.PathLike = "runs/demo",
    model: str = "pepper-64",
    top_k: int = 10,
    num_frames: int = 12,
    num_explanations: int = 3,
    fast: int = 32,
    quiet: bool = False,
) -> dict[str, Any]:
    """`stylex demo`: explain the shipped leaf classifier with the shipped `pepper-64` model, no training.

    AttFind in fast mode on the model's shipped sample images, a few image explanations, then the HTML report,
    whose path it prints last. The shipped model is only read (see `stylex.zoo`); `demo_train` is the whole
    chain from nothing.

    Args:
        out_dir: folder for what the demo writes: attfind/, explanations/<image>/, report/, demo.json.
        model: the shipped model to explain (`stylex zoo` lists them).
        top_k: attributes per class (each drawn as a strip, a GIF and a slider: the drawing is most of the time).
        num_frames: GIF sweep positions per attribute (`run_attfind`'s; the GIF goes there and back in
            2 * num_frames - 2 frames). Each position is one synthesis of 4 images, so with top_k = 10 the whole
            demo takes 86 / 77 / 67 CPU seconds at 16 / 12 / 8 positions (one thread of the 2-core machine).
        num_explanations: images explained, taking the predicted classes in turn (also shown in the report).
        fast: M of AttFind's fast mode (the top 2M (coordinate, direction) edits per image are evaluated exactly, in
            bf16 autocast with channels_last: 3x faster than float32 on the project's 2-core machine, whose CPU has
            bf16 instructions; the same attributes up to bf16 rounding).
    Returns:
        {"model", "attfind", "explanations" (folders), "report" (index.html), "seconds" (per step and "total")}.
    """
    from stylex.attfind import run_attfind
    from stylex.attfind.run import round_robin
    from stylex.explain.report import write_report
    from stylex.explain.run import explain_image
    from stylex.training.distributed import one_process
    from stylex.zoo import RUN_DIR, SAMPLES_DIR, list_models, read_card, zoo_root

    one_process("the demo")
    if model not in list_models():
        shipped = ", ".join(list_models()) or "none"
        raise StylexError(
            f"the demo explains the shipped model {model!r}, which is not installed in {zoo_root()} (shipped: "
            f"{shipped}); pass --model with a shipped name, or run `stylex demo --train` for the whole chain from "
            "synthetic data (about 6 minutes)."
        )
    folder = zoo_root() / model
    run_dir, samples = folder / RUN_DIR, folder / SAMPLES_DIR
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[step] = round(now - t, 2)
        t = now

    print(f"[1/4] loading the shipped model {model!r} ({folder})")
    _, classifier = load_run(run_dir)  # checks that the model, its classifier and their fingerprint agree
    card = read_card(folder)
    rec, training = card.get("reconstruction") or {}, card.get("training") or {}
    accuracy = (card.get("classifier") or {}).get("val_accuracy")
    print(
        f"      {card.get('resolution')} px, classes {', '.join(card.get('class_names') or [])}; classifier accuracy "
        f"{_fmt(accuracy)}; StylEx trained {training.get('steps', '?')} steps ({_fmt(training.get('minutes'), 1)} "
        f"min); consistency {_fmt(rec.get('consistency'))}, identity {_fmt(rec.get('identity'))} on its "
        f"{rec.get('num_images', '?')} sample images"
    )
    lap("load")
    num_images = int((card.get("samples") or {}).get("num_images") or 250)
    print(f"[2/4] AttFind in fast mode (M = {fast}, bf16) on the {num_images} shipped images, top {top_k} per class")
    result = run_attfind(
        run_dir, samples, out_dir / "attfind", num_images=num_images, top_k=top_k, fast=fast, precision="bf16",
        channels_last=True, num_frames=num_frames, recompute=True, classifier=classifier, quiet=quiet,
    )  # fmt: skip
    assert result is not None  # None only on torchrun's ranks > 0; the demo runs in one process
    print(result.summary())
    lap("attfind")
    effects = result.effects
    indices = list(effects.meta["indices"])
    picks = round_robin(effects.predicted.tolist(), num_explanations)
    previous = _previous_explanations(out_dir)  # before this demo's demo.json replaces it
    print(f"[3/4] explaining {len(picks)} images")
    folders = []
    for pos in picks:
        index = indices[pos]
        dst = out_dir / "explanations" / f"index-{index}"  # as `stylex explain --index` names it
        report = explain_image(
            run_dir, out_dir / "attfind", dst, index=index, data=samples, classifier=classifier, quiet=quiet
        )
        for name, e in report["explanations"].items():
            names = e.class_names
            print(f"      image {index}, {name}: {names[e.original_class]} -> {names[e.target_class]} {e.outcome}")
        folders.append(str(dst))
    _remove_stale_explanations(out_dir / "explanations", previous, folders)
    lap("explanations")
    print("[4/4] writing the report")
    index_html = write_report(
        run_dir, out_dir / "report", out_dir / "attfind", data=samples, classifier=classifier, top_k=top_k,
        num_explanations=num_explanations, quiet=quiet,
    )  # fmt: skip
    lap("report")
    seconds["total"] = round(time.perf_counter() - t0, 2)
    summary = {
        "model": model,
        "attfind": str(out_dir / "attfind"),
        "explanations": folders,
        "report": str(index_html),
        "seconds": seconds,
    }
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
    print(f"done in {seconds['total']:.0f} s ({steps}). Open the report: {index_html.resolve().as_uri()}")
    return summary


def _previous_explanations(out_dir: Path) -> list[str]:
    """The explanation folders the demo that last wrote `out_dir` listed in its demo.json (none if there is none)."""
    try:
        listed = json.loads((out_dir / "demo.json").read_text()).get("explanations")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(p) for p in listed] if isinstance(listed, list) else []


def _remove_stale_explanations(folder: Path, previous: list[str], kept: list[str]) -> None:
    """Remove the explanation folders the previous demo listed (`previous`) that this one did not write: a rerun left
    them beside the new ones. Only folders directly in `folder`, not links; anything else there is left alone."""
    import re
    import shutil

    keep = {Path(k).resolve() for k in kept}
    gone = []
    for name in previous:
        sub = folder / Path(name).name  # where that demo wrote it, whatever --out it was given (relative, moved)
        named = re.fullmatch(r"index-\d+|image\d+", sub.name)  # as demos name them: never "..", never a path
        if named and sub.is_dir() and not sub.is_symlink() and sub.resolve() not in keep:
            shutil.rmtree(sub)
            gone.append(sub.name)
    if gone:
        print(f"      removed the previous demo's explanations of other images: {', '.join(gone)}")


def _trained_minutes(run_dir: Path) -> float:
    """Minutes a run has trained, from its checkpoint (0 when it has none)."""
    from stylex.training.checkpoint import STATE, load_state

    return float(load_state(run_dir / STATE).get("seconds", 0.0)) / 60 if (run_dir / STATE).is_file() else 0.0


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


DEMO_TRAIN_IMAGES = 2000
"""Synthetic shapes `demo --train` makes (its tests make fewer)."""


def demo_train(out_dir: str | os.PathLike, minutes: float = 5.0, quiet: bool = False) -> dict[str, Any]:
    """`stylex demo --train`: the whole chain from nothing on synthetic shapes: data -> classifier -> StylEx (short
    run) -> reconstructions -> AttFind (fast mode) -> the HTML report, whose path it prints last (6 minutes on 2 CPU
    cores with the default budget).

    Args:
        out_dir: folder for everything the demo writes (data/, classifier/, stylex/, report/).
        minutes: wall-clock budget of the StylEx training run.
    Returns:
        the reconstruction figures, plus "report": the path of the report's index.html.
    """
    from stylex.attfind import run_attfind
    from stylex.classifier import ClassifierTrainConfig, load_classifier, train_classifier
    from stylex.config import preset
    from stylex.data import load_dataset, write_synth
    from stylex.explain.report import write_report
    from stylex.training.distributed import one_process

    one_process("the demo")
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data_dir = out_dir / "data"
    if not (data_dir / "factors.csv").is_file():
        print(f"[1/6] synthesising {DEMO_TRAIN_IMAGES:,} shapes at 32 px -> {data_dir}")
        write_synth(
            data_dir, DEMO_TRAIN_IMAGES, resolution=32, seed=0, label_rule="shape==circle", overwrite=True,
            progress=not quiet,
        )  # fmt: skip
    clf_dir = out_dir / "classifier"
    if not (clf_dir / "weights.safetensors").is_file():
        print(f"[2/6] training the classifier -> {clf_dir}")
        dataset = load_dataset(data_dir, resolution=32, progress=False)
        train_set, val_set = dataset.split(0.1, 0)
        train_classifier(train_set, val_set, clf_dir, ClassifierTrainConfig(epochs=4), quiet=quiet)
    metrics = read_json(clf_dir / "metrics.json")
    print(f"      classifier validation accuracy {metrics['val_accuracy']:.3f}")
    classifier = load_classifier(str(clf_dir), resolution=32)
    run_dir = out_dir / "stylex"
    config = preset("shapes-32", max_minutes=minutes, sample_every=500, checkpoint_every=500)
    resume = (run_dir / "weights.safetensors").is_file()
    trained = _trained_minutes(run_dir) if resume else 0.0
    if trained >= minutes:  # the trainer's "nothing trained" warning names --max-minutes, which the demo lacks
        print(f"[3/6] StylEx has trained {trained:.2f} minutes already -> {run_dir}; give a larger --minutes to "
              "train it on")  # fmt: skip
    else:
        print(f"[3/6] training StylEx for {minutes:g} minute{'' if minutes == 1 else 's'} -> {run_dir}"
              + (f" (resuming after {trained:.2f})" if resume else ""))  # fmt: skip
        train_stylex(data_dir, classifier, run_dir, config, resume=resume, quiet=quiet)
    print("[4/6] reconstructing held-out images")
    report = reconstruct(run_dir, classifier=classifier, quiet=quiet)
    print(format_report(report))
    print(f"grid: {report['grid']}")
    print("[5/6] AttFind in fast mode on 64 images")
    result = run_attfind(
        run_dir, out=run_dir / "attfind", num_images=64, top_k=10, fast=32, recompute=True, classifier=classifier,
        quiet=quiet,
    )  # fmt: skip
    assert result is not None  # None only on torchrun's ranks > 0; the demo runs in one process
    print(result.summary())
    print("[6/6] writing the report")
    index = write_report(run_dir, out_dir / "report", run_dir / "attfind", classifier=classifier, quiet=quiet)
    report["report"] = str(index)
    (out_dir / "demo.json").write_text(json.dumps(report, indent=2))
    print(f"done in {time.perf_counter() - t0:.0f} s. Open the report: {index.resolve().as_uri()}")
    return report

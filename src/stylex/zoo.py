"""Shipped models ("the zoo"): export a trained run as a self-contained folder; list and load the shipped ones.

An exported model is one folder that can be moved or shipped as it is:

    stylex/                a run folder that `StylEx.load` and `load_run` read:
        config.json        the run's config (kind "stylex-run") with an "export" entry; the classifier is recorded
                           at "../classifier" and the data at "../samples", both relative to this folder
        weights.safetensors  G_ema and E_ema only (no D, no raw G / E, no optimiser state), float16 by default;
                           `StylEx.load` reads them back as float32
        stats.jsonl        the training log (the report's training curves; the card's steps and minutes)
        reconstruct/       reconstruction figures and grid on the shipped samples (what `stylex reconstruct` writes)
    classifier/            the classifier the run was trained with (config.json, weights.safetensors, metrics.json)
    samples/               held-out images as PNG files in class folders (`load_dataset` reads them with labels)
    card.json              what the model is and how well it does (see `export_run`)

The shipped models live in the package, `stylex/assets/zoo/<name>/` (`zoo_root()`); the command line names one
as `zoo:<name>` wherever it takes a run folder (`resolve_model`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylex.errors import StylexError, option

RUN_DIR = "stylex"
CLASSIFIER_DIR = "classifier"
SAMPLES_DIR = "samples"
CARD = "card.json"
CARD_FORMAT_VERSION = 1
PREFIX = "zoo:"
"""`zoo:<name>` names a shipped model wherever a command takes a run folder."""


# ------------------------------------------------------------------------------------------------ the shipped models
def zoo_root() -> Path:
    """The package folder that holds the shipped models: `stylex/assets/zoo` (package data)."""
    return Path(__file__).resolve().parent / "assets" / "zoo"


def list_models() -> list[str]:
    """Names of the shipped models (folders of `zoo_root()` with a card.json), sorted."""
    root = zoo_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / CARD).is_file())


def zoo_path(name: str) -> Path:
    """The folder of the shipped model `name` (or `zoo:name`); a StylexError lists the shipped names when there is
    none."""
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    names = list_models()
    if name not in names:
        shipped = ", ".join(names) if names else "none"
        raise StylexError(
            f"no shipped model named {name!r} in {zoo_root()} (shipped: {shipped}); use one of those names, "
            "or a run folder."
        )
    return zoo_root() / name


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The card.json of an exported model folder."""
    from stylex.config import read_json

    card = read_json(Path(folder) / CARD)
    if not isinstance(card, dict) or card.get("kind") != "stylex-model-card":
        raise StylexError(f"{Path(folder) / CARD} is not a stylex model card; export the model with `stylex export`.")
    if card.get("format_version", CARD_FORMAT_VERSION) != CARD_FORMAT_VERSION:
        raise StylexError(
            f"{Path(folder) / CARD} has format version {card.get('format_version')!r}; this stylex reads version "
            f"{CARD_FORMAT_VERSION}: use the stylex version that exported it, or ask for an export made with this one."
        )
    return card


def load_zoo(name: str, device: str = "cpu"):
    """(StylEx model, classifier) of the shipped model `name` or `zoo:name` (see `list_models`)."""
    from stylex.pipeline import load_run

    return load_run(zoo_path(name) / RUN_DIR, device=device)


def resolve_model(value: str | os.PathLike) -> Path:
    """A model argument as a run folder: `zoo:NAME` -> the shipped model's run folder; an exported model's folder
    (`stylex export --out`) -> the run folder inside it; anything else as it is."""
    text = os.fspath(value)
    if text.startswith(PREFIX):
        return zoo_path(text) / RUN_DIR
    folder = Path(text)
    if not (folder / "config.json").is_file() and (folder / RUN_DIR / "config.json").is_file():
        return folder / RUN_DIR
    return folder


def model_name(info: dict[str, Any], run_dir: str | os.PathLike) -> str:
    """A model's name for titles: an export's name, else its run folder's, or the folder above for the `stylex/`
    folder of the layout `make demo-train` and exports use."""
    name = (info.get("export") or {}).get("name")
    if isinstance(name, str) and name:
        return name
    folder = Path(run_dir).resolve()
    return folder.parent.name if folder.name == RUN_DIR else folder.name


def is_shipped(path: str | os.PathLike) -> bool:
    """Whether `path` lies inside the package's zoo (read-only: commands must not write their outputs there)."""
    try:
        Path(path).resolve().relative_to(zoo_root().resolve())
    except ValueError:
        return False
    return True


def format_models() -> list[str]:
    """One line per shipped model: name, resolution, classes, reconstruction consistency on its samples."""
    lines = []
    for name in list_models():
        try:
            card = read_card(zoo_root() / name)
        except StylexError as e:
            lines.append(f"{name}: unreadable card ({e})")
            continue
        rec = card.get("reconstruction") or {}
        consistency = rec.get("consistency")
        consistency = f"{consistency:.3f}" if isinstance(consistency, int | float) else "n/a"
        classes = ", ".join(str(c) for c in card.get("class_names") or [])
        lines.append(
            f"{name}: {card.get('resolution', '?')} px, {len(card.get('class_names') or [])} classes ({classes}), "
            f"consistency {consistency} on {rec.get('num_images', '?')} shipped images"
        )
    return lines


# ------------------------------------------------------------------------------------------------ export
KEEP_BEST_IN_PYTHON = "keep_best='identity' in its config (stylex.preset(NAME, keep_best='identity', ...))"


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    samples: str | os.PathLike | None = None,
    num_samples: int = 24,
    half: bool = True,
    name: str | None = None,
    notes: str = "",
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    seed: int = 0,
    best: bool = False,
    redact_paths: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Write a trained run as a self-contained model folder (layout in the module docstring); returns its card.

    The folder is written under a temporary name and renamed into place, so a failure leaves no partial `out`.

    Args:
        run_dir: a run folder written by `stylex train` (only read).
        out: the new folder (absent or empty; replaced with `overwrite`).
        samples: images to ship (folder or .npz); default the run's own data, of which only the held-out split is
            used. Images of another source are all candidates.
        num_samples: how many images to ship, balanced over the classes as far as the images allow (seeded).
        half: store the weights as float16 (half the size; `StylEx.load` reads them back as float32).
        name: the model's name in the card (default the folder name of `out`).
        notes: free text for the card (e.g. the exact training command and its duration).
        metrics: further figures to record in the card under "metrics" (e.g. an AttFind sufficiency).
        overwrite: replace `out` if it holds an earlier export (a stylex model card.json) and nothing else; any
            other folder is refused, so that a mistyped `out` deletes nothing.
        device: where the reconstruction figures are computed.
        seed: picks the samples.
        best: export the run's best checkpoint by its held-out figure (best.safetensors, written when the run was
            trained with `keep_best`) instead of its last one.
        redact_paths: record the source run, its data and the run it was fine-tuned from by their names only, not
            by this machine's absolute paths (which may name users, projects or patients), and ship the sample
            images under numbers (0000.png, ...) instead of their file names, for a folder to share.
        quiet: no progress bar while a large folder is read.

    Returns:
        The card (also written to `out/card.json`): name, resolution, class names, classifier accuracy, the run's
        training steps and minutes, reconstruction consistency / L1 / identity on the shipped samples, file sizes,
        the exporting machine (torch version, platform) and the notes.
    """
    from stylex.config import read_json, write_json
    from stylex.data.dataset import atomic_dir, check_out_of_data
    from stylex.pipeline import load_run
    from stylex.training.checkpoint import WEIGHTS, read_weights

    if num_samples < 2:
        raise StylexError(f"ship at least 2 sample images (AttFind needs a min and a max), got {num_samples}.")
    run_dir, out = resolve_model(run_dir), Path(out)
    a, b = run_dir.resolve(), out.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise StylexError(
            f"{option('--out')} {out} and the run folder {run_dir} overlap; choose an {option('--out')} outside the "
            "run."
        )
    from stylex.training.trainer import BEST_INFO, BEST_WEIGHTS

    kind = (read_json(run_dir / "config.json").get("classifier") or {}).get("kind")
    if kind == "factory":  # said before loading it (which would first ask to trust its code)
        raise StylexError(
            f"{run_dir} was trained with a factory classifier (module:function), which is code an exported folder "
            "cannot carry; save the classifier as TorchScript (torch.jit.script(model).save(...)) and train with that."
        )
    if kind == "module":
        raise StylexError(
            f"{run_dir} was trained with an in-memory classifier, which an export cannot ship; train the run with a "
            "classifier saved as a folder (stylex.classifier.train_classifier), a TorchScript file or module:factory."
        )
    weights = BEST_WEIGHTS if best else WEIGHTS
    if best and not (run_dir / BEST_WEIGHTS).is_file():
        raise StylexError(
            f"{run_dir} has no {BEST_WEIGHTS}; a run keeps its best checkpoint when trained with "
            f"{option('--set keep_best=identity', KEEP_BEST_IN_PYTHON)} (or another held-out figure) and eval_every "
            "or eval_every_minutes."
        )
    step = int(read_weights(run_dir / weights)[1].get("step", 0))
    model, classifier = load_run(run_dir, device=device, weights=weights)
    if int(read_weights(run_dir / weights)[1].get("step", 0)) != step:  # a training run checkpointed meanwhile
        raise StylexError(f"{run_dir} wrote a new checkpoint while it was being exported; export it again.")
    info = model.run_info
    name = name or out.name
    if is_shipped(out):
        raise StylexError(
            f"{option('--out')} {out} is inside the shipped models' folder {zoo_root()}, which stylex does not write "
            f"into; choose another {option('--out')}."
        )
    check_out_of_data(out, samples if samples is not None else info.get("data"))  # its samples would join the data
    with atomic_dir(out, overwrite=overwrite, owner=("`stylex export`", _not_an_export)) as tmp:
        (tmp / RUN_DIR).mkdir()
        clf_entry, clf_card = _export_classifier(info.get("classifier") or {}, run_dir, tmp / CLASSIFIER_DIR)
        chosen = _write_samples(
            model,
            classifier,
            info,
            samples,
            num_samples,
            seed,
            device,
            tmp / SAMPLES_DIR,
            renamed=redact_paths,
            quiet=quiet,
        )
        _write_weights(model, step, tmp / RUN_DIR / "weights.safetensors", half)
        training = _training_record(run_dir, step, info)
        if best:
            kept = (
                json.loads((run_dir / BEST_INFO).read_text(encoding="utf-8")) if (run_dir / BEST_INFO).is_file() else {}
            )
            training["checkpoint"] = {"best": True, "keep_best": kept.get("keep_best"), "figures": kept.get("figures")}
        export_info = {
            "format_version": CARD_FORMAT_VERSION,
            "name": name,
            "source_run": str(run_dir.resolve()),
            "source_data": info.get("data"),
            "weights_dtype": "float16" if half else "float32",
            "step": step,
            "training": training,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        config = {**info, "data": f"../{SAMPLES_DIR}", "classifier": clf_entry, "export": export_info}
        config.pop("data_relative", None)  # the run's data, which the folder does not ship
        config["classifier_fingerprint"] = clf_entry.get("fingerprint") or info.get("classifier_fingerprint")
        write_json(tmp / RUN_DIR / "config.json", config)
        _copy_stats(run_dir / "stats.jsonl", tmp / RUN_DIR / "stats.jsonl", step)
        rec = _reconstruction(tmp, len(chosen["files"]), device)
        card = {
            "kind": "stylex-model-card",
            "format_version": CARD_FORMAT_VERSION,
            "name": name,
            "resolution": model.resolution,
            "num_classes": model.num_classes,
            "class_names": _class_names(model, classifier),
            "classifier": clf_card,
            "training": training,
            "samples": {k: v for k, v in chosen.items() if k != "files"},
            "reconstruction": rec,
            "metrics": dict(metrics or {}),
            "weights_dtype": export_info["weights_dtype"],
            "num_parameters": {
                "G_ema": sum(p.numel() for p in model.G.parameters()),
                "E_ema": sum(p.numel() for p in model.E.parameters()),
            },
            "exported_by": _machine(),
            "source_run": export_info["source_run"],
            "source_data": export_info["source_data"],
            "date": export_info["date"],
            "notes": notes,
        }
        if redact_paths:
            shown = (str(info.get("data")), str(samples))
            write_json(tmp / RUN_DIR / "config.json", _redacted(config, *shown))
            card = _redacted(card, *shown)
            for record in (tmp / CLASSIFIER_DIR).glob("*.json"):  # a classifier's config.json names its data
                write_json(record, _redacted(json.loads(record.read_text(encoding="utf-8")), *shown))
        card["files"] = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        card["total_bytes"] = sum(card["files"].values())  # every file but card.json itself
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def _redacted(record: Any, *paths: str) -> Any:
    """`record` with every absolute path cut to its last name, also where one of `paths` sits inside a sentence
    (the samples' "held-out split of PATH")."""
    if isinstance(record, dict):
        return {k: _redacted(v, *paths) for k, v in record.items()}
    if isinstance(record, list):
        return [_redacted(v, *paths) for v in record]
    if isinstance(record, str):
        if os.path.isabs(record):
            return Path(record).name
        for path in paths:
            if os.path.isabs(path) and path in record:
                record = record.replace(path, Path(path).name)
    return record


def _not_an_export(folder: Path) -> str | None:
    """Why `folder` is not an export holding nothing else (None when it is one), for `export --overwrite`."""
    from stylex.data.dataset import foreign_entries

    try:
        card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"has no readable {CARD}"
    if not isinstance(card, dict) or card.get("kind") != "stylex-model-card":
        return f"has a {CARD} that is not a stylex model card"
    return foreign_entries(folder, {CARD, RUN_DIR, CLASSIFIER_DIR, SAMPLES_DIR, "LICENSE.md"})


def _class_names(model, classifier) -> list[str]:
    from stylex.attfind.run import class_names_of

    return class_names_of(model, classifier)


def _export_classifier(entry: dict[str, Any], run_dir: Path, dst: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copy the run's classifier into `dst`; (its entry for the exported config.json, its part of the card).

    A classifier folder of `stylex train-classifier` is copied (config.json, the weights it used as
    weights.safetensors, metrics.json); a TorchScript file is copied with its weights. A `module:factory`
    classifier is code the folder cannot carry, and is refused.
    """
    from stylex.classifier.adapter import ClassifierSource
    from stylex.classifier.store import CONFIG_NAME, METRICS_NAME, WEIGHTS_NAME

    src = ClassifierSource.from_dict(entry).resolved(run_dir)
    rel = f"../{CLASSIFIER_DIR}"
    dst.mkdir()
    card: dict[str, Any] = {"kind": src.kind, "fingerprint": src.fingerprint}
    if src.kind == "stylex":
        folder = Path(src.location)
        shutil.copyfile(folder / CONFIG_NAME, dst / CONFIG_NAME)
        shutil.copyfile(Path(src.weights) if src.weights else folder / WEIGHTS_NAME, dst / WEIGHTS_NAME)
        if (folder / METRICS_NAME).is_file():
            shutil.copyfile(folder / METRICS_NAME, dst / METRICS_NAME)
            try:
                clf_metrics = json.loads((folder / METRICS_NAME).read_text(encoding="utf-8"))
            except ValueError:
                clf_metrics = {}
            for key in ("val_accuracy", "val_balanced_accuracy", "train_accuracy", "num_val", "epochs"):
                if key in clf_metrics:
                    card[key] = clf_metrics[key]
        try:
            card["architecture"] = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("architecture")
        except ValueError:
            pass
        new = replace(src, location=rel, weights=None)
    elif src.kind == "torchscript":
        file = Path(src.location)
        shutil.copyfile(file, dst / file.name)
        weights = None
        if src.weights:
            shutil.copyfile(src.weights, dst / WEIGHTS_NAME)
            weights = f"{rel}/{WEIGHTS_NAME}"
        new = replace(src, location=f"{rel}/{file.name}", weights=weights)
    else:
        raise StylexError(
            f"the run's classifier {src.describe()} is a {src.kind!r} classifier: code that an exported folder "
            "cannot carry; save it as TorchScript (torch.jit.script(model).save(path)), train a run with it, and "
            "export that run."
        )
    card["input_spec"] = src.input_spec.to_dict()
    return new.to_dict(), card


def _write_weights(model, step: int, path: Path, half: bool) -> None:
    """G_ema and E_ema as "G_ema.*" / "E_ema.*" tensors (float16 when `half`), recording the training step."""
    from stylex.files import save_safetensors
    from stylex.training.checkpoint import CHECKPOINT_FORMAT_VERSION

    tensors = {}
    for prefix, module in (("G_ema", model.G), ("E_ema", model.E)):
        for key, value in module.state_dict().items():
            value = value.detach().cpu()
            if half and value.dtype == torch.float32:
                value = value.half()
                if not torch.isfinite(value).all():
                    raise StylexError(
                        f"{prefix}.{key} holds values beyond float16's range; export with "
                        f"{option('--no-half', 'half=False')}."
                    )
            tensors[f"{prefix}.{key}"] = value.contiguous()
    save_safetensors(
        tensors, path, {"format_version": str(CHECKPOINT_FORMAT_VERSION), "step": str(step), "exported": "1"}
    )


def _training_record(run_dir: Path, step: int, info: dict[str, Any]) -> dict[str, Any]:
    """The run's training length: steps and minutes from state.pt, else from stats.jsonl; preset and batch size."""
    from stylex.training.checkpoint import STATE, load_state

    train = info.get("train") or {}
    record: dict[str, Any] = {"steps": step, "minutes": None, "preset": train.get("preset")}
    record["batch_size"] = train.get("batch_size")
    record["num_train"] = info.get("num_train")
    if (run_dir / STATE).is_file():
        state = load_state(run_dir / STATE)
        if int(state["step"]) == step and "seconds" in state:
            record["minutes"] = round(float(state["seconds"]) / 60, 2)
    if record["minutes"] is None:
        seconds = [r["seconds"] for r in _stats_records(run_dir / "stats.jsonl", step) if "seconds" in r]
        if seconds:
            record["minutes"] = round(float(seconds[-1]) / 60, 2)
    previous = (info.get("export") or {}).get("training")  # re-exporting an exported folder
    if record["minutes"] is None and isinstance(previous, dict):
        record["minutes"] = previous.get("minutes")
    if isinstance(previous, dict) and isinstance(previous.get("init_from"), dict):
        record["init_from"] = previous["init_from"]
    elif info.get("init_from"):
        record["init_from"] = _init_record(Path(info["init_from"]))
    return record


def _init_record(run_dir: Path) -> dict[str, Any]:
    """What a fine-tune (`--init-from`) started from: that run's folder, and its length when it can still be read."""
    from stylex.training.checkpoint import STATE, load_state

    record: dict[str, Any] = {"run": str(run_dir), "steps": None, "minutes": None, "preset": None}
    with contextlib.suppress(StylexError, OSError, ValueError, TypeError, KeyError):
        info = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        step = int(load_state(run_dir / STATE)["step"])
        earlier = _training_record(run_dir, step, info)
        record.update({k: earlier.get(k) for k in ("steps", "minutes", "preset")})
        if earlier.get("init_from"):
            record["init_from"] = earlier["init_from"]
    return record


def _stats_records(path: Path, step: int) -> list[dict[str, Any]]:
    """The stats.jsonl records up to `step` (lines cut short by a crash are skipped)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and isinstance(r.get("step"), int | float) and r["step"] <= step:
                records.append(r)
    return records


def _copy_stats(src: Path, dst: Path, step: int) -> None:
    records = _stats_records(src, step)
    if records:
        dst.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _write_samples(
    model,
    classifier,
    info,
    samples,
    num_samples: int,
    seed: int,
    device: str,
    dst: Path,
    renamed: bool = False,
    quiet: bool = False,
):
    """Pick `num_samples` images, balanced over classes, and write them as `dst/<class folder>/<stem>.png`
    (`renamed`: as `0000.png`, `0001.png`, ..., since a file's name may name a patient).

    Candidates: the held-out split of the run's own data, or all images of another source (or of an exported
    model's shipped samples). A class is the
    image's label when the source's labels fit the model's classes (by name, else by count), else the
    classifier's prediction. Classes are taken in turn, each in a seeded order, until `num_samples` are chosen.
    """
    from stylex.attfind.run import round_robin
    from stylex.data import load_dataset
    from stylex.data.dataset import ImageDataset, write_image_tree
    from stylex.pipeline import _is_run_data, _run_held_out

    own = info.get("data")
    data = samples if samples is not None else own
    if data is None:
        raise StylexError(f"the run does not record its data; pass {option('--samples')} with the images to ship.")
    if not Path(data).exists():
        raise StylexError(f"the images to ship, {data}, are not here; pass {option('--samples')} with the run's data.")
    dataset = load_dataset(data, resolution=model.resolution, progress=not quiet)
    # an exported model's own data are its shipped samples, held-out images already
    is_own = _is_run_data(data, info) and not isinstance(info.get("export"), dict)
    source = f"held-out split of {data}" if is_own else f"all images of {data}"
    if is_own:
        dataset = _run_held_out(dataset, model)
    if len(dataset) < 2:
        raise StylexError(
            f"{source} has {len(dataset)} images; ship at least 2 (pass {option('--samples')} with more)."
        )
    names = _class_names(model, classifier)
    labels, how = _sample_labels(dataset, names, model, classifier, device)
    order = np.random.default_rng(seed).permutation(len(dataset))
    chosen = sorted(int(order[i]) for i in round_robin([int(labels[i]) for i in order], num_samples))
    picked = ImageDataset(
        dataset.images[chosen],
        labels=labels[chosen],
        class_names=list(names),
        filenames=[f"{n:04d}.png" for n in range(len(chosen))]  # file names may name patients
        if renamed
        else ["_".join(dataset.filenames[i].split()) for i in chosen],  # no spaces in package files
    )
    dst.mkdir()
    files = write_image_tree(picked, dst)
    per_class = {n: int((labels[chosen] == k).sum()) for k, n in enumerate(names)}
    missing = [n for n, v in per_class.items() if not v]
    if missing and len(chosen) >= len(names):  # each class with images gets one before any gets two
        warnings.warn(
            f"the shipped samples hold no image of {', '.join(missing)}: {source} holds none ({how}), so AttFind "
            f"on the export finds no image of it to explain; pass {option('--samples')} with images of every class.",
            stacklevel=3,
        )
    return {"num_images": len(chosen), "per_class": per_class, "labels": how, "source": source, "files": files}


def _sample_labels(dataset, names: list[str], model, classifier, device: str) -> tuple[np.ndarray, str]:
    """Class index per image in the model's class order, and where it came from."""
    if dataset.labels is not None:
        if sorted(dataset.class_names) == sorted(names):
            return dataset.relabelled(names).labels.copy(), "dataset labels"
        if dataset.num_classes == len(names):
            return dataset.labels.copy(), "dataset labels (by index)"
    preds = []
    with torch.no_grad():
        for a in range(0, len(dataset), 64):
            preds.append(classifier(dataset.tensors(list(range(a, min(a + 64, len(dataset))))).to(device)).argmax(1))
    return torch.cat(preds).cpu().numpy(), "classifier predictions"


def _reconstruction(folder: Path, num_images: int, device: str) -> dict[str, Any]:
    """Reconstruction figures of the exported model (as stored, so float16-rounded) on its samples, written to
    stylex/reconstruct/ like `stylex reconstruct` does; loading the folder here also checks that it loads."""
    from stylex.config import write_json
    from stylex.pipeline import reconstruct

    out = folder / RUN_DIR / "reconstruct"
    report = reconstruct(folder / RUN_DIR, folder / SAMPLES_DIR, out, num_images=num_images, split="all", device=device)
    report.pop("grid", None)
    report.update(run=RUN_DIR, data=SAMPLES_DIR)  # not the temporary folder's paths
    write_json(out / "reconstruction.json", report)
    return {
        **report["stylex"],
        "num_images": report["num_images"],
        "baselines": {k: report[k] for k in ("class_median", "shifted_input")},
    }


def _machine() -> dict[str, Any]:
    from stylex import __version__

    return {
        "stylex": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "num_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }

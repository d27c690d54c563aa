"""One library call per CLI stage: train a StylEx model, reconstruct, and the demo chain.

Each stage reads the files the stage before it wrote, so any stage can be re-run alone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stylex.config import TrainConfig, read_json, write_json
from stylex.errors import StylexError

if TYPE_CHECKING:
    from stylex.training.distributed import Distributed


def _held_out(dataset, config: TrainConfig):
    """The deterministic (train, val) split every stage agrees on."""
    if len(dataset) < 4:
        raise StylexError(f"{dataset.source} has {len(dataset)} images; StylEx needs at least 4.")
    return dataset.split(config.val_fraction, config.seed)


def train_stylex(
    data: str | os.PathLike,
    classifier,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool = False,
    device: str = "cpu",
    quiet: bool = False,
):
    """Train (or resume) a StylEx model for `classifier` on the images in `data`.

    Launched by `torchrun --nproc_per_node=N`, the N processes train one model together with
    DistributedDataParallel on shards of the global batch `config.batch_size` (see
    `stylex.training.distributed`); rank 0 writes the run folder.

    Args:
        data: image folder or .npz (see `stylex.data.load_dataset`); labels are not needed.
        classifier: a loaded `ClassifierAdapter` (see `stylex.classifier.load_classifier`); moved to the
            process's device.
        out_dir: the run folder (config.json, weights.safetensors, state.pt, stats.jsonl, samples/).
        config: the resolved training config.
        resume: continue the run in `out_dir` from its last checkpoint (also with another number of processes).
        device: "cpu" or "cuda" (under torchrun each process uses cuda:LOCAL_RANK).
    Returns:
        `TrainResult` (step, seconds, last logged losses).
    """
    from stylex.training.distributed import process_group

    config.validate()
    with process_group(device) as dist:
        dist.check_batch(config.batch_size)
        device = dist.device(device)
        return _train(data, classifier.to(device), out_dir, config, resume, device, quiet or not dist.is_main, dist)


def _train(
    data: str | os.PathLike,
    classifier,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool,
    device: torch.device,
    quiet: bool,
    dist: Distributed,
):
    from stylex.data import load_dataset
    from stylex.training.trainer import Trainer

    dataset = load_dataset(data, resolution=config.model.resolution, progress=not quiet)
    classifier.check(config.model.resolution)
    train_set, val_set = _held_out(dataset, config)
    out_dir = Path(out_dir)
    run_info = {
        "data": str(Path(data).resolve()),
        "num_train": len(train_set),
        "num_val": len(val_set),
        "class_names": list(classifier.class_names or dataset.class_names),
        "classifier": classifier.to_dict(relative_to=out_dir),
        "classifier_fingerprint": classifier.fingerprint(),
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
    return trainer.run(resume=resume)


def load_run(run_dir: str | os.PathLike, classifier=None, device: str = "cpu"):
    """(StylEx model, classifier) of a run folder; the classifier is the one the run recorded unless given."""
    from stylex.classifier import load_classifier_from_dict
    from stylex.models.stylex import StylEx

    model = StylEx.load(run_dir, device=device)
    info = model.run_info
    if classifier is None:
        classifier = load_classifier_from_dict(
            info["classifier"], device=device, base_dir=run_dir, resolution=model.resolution
        )
    elif info.get("classifier_fingerprint") and classifier.fingerprint() != info["classifier_fingerprint"]:
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
) -> dict[str, Any]:
    """Encode and regenerate images; write a grid and metrics; return the figures.

    Args:
        run_dir: a run folder written by `stylex train`.
        data: images to reconstruct; default the run's own data.
        out: folder for `reconstructions.png` and `reconstruction.json` (default RUN/reconstruct).
        num_images: how many images are evaluated (identity compares each against all of them).
        split: "val" (the run's held-out split, only meaningful for the run's own data) or "all".
        classifier: a loaded classifier to use instead of the recorded one (must have the same fingerprint).
    Returns:
        {"stylex": {consistency, l1, identity}, "class_median": {...}, "shifted_input": {...}, ...}.
    """
    from stylex.data import load_dataset
    from stylex.explain.render import save_grid
    from stylex.metrics.reconstruction import reconstruction_report

    model, classifier = load_run(run_dir, classifier, device)
    data = data or model.run_info.get("data")
    if data is None:
        raise StylexError(f"{run_dir} does not record its data; pass --data.")
    dataset = load_dataset(data, resolution=model.resolution, progress=False)
    if split == "val":
        _, dataset = _held_out(dataset, model.config)
    elif split != "all":
        raise StylexError(f"split must be 'val' or 'all', got {split!r}.")
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
    out = Path(out) if out else Path(run_dir) / "reconstruct"
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


def demo(out_dir: str | os.PathLike, minutes: float = 5.0, quiet: bool = False) -> dict[str, Any]:
    """The whole chain on synthetic shapes: data -> classifier -> StylEx (short run) -> reconstructions ->
    AttFind (fast mode) -> the HTML report, whose path it prints last.

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

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data_dir = out_dir / "data"
    if not (data_dir / "factors.csv").is_file():
        print(f"[1/6] synthesising 2,000 shapes at 32 px -> {data_dir}")
        write_synth(
            data_dir, 2000, resolution=32, seed=0, label_rule="shape==circle", overwrite=True, progress=not quiet
        )
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
    print(f"[3/6] training StylEx for {minutes:g} minutes -> {run_dir}" + (" (resuming)" if resume else ""))
    train_stylex(data_dir, classifier, run_dir, config, resume=resume, quiet=quiet)
    print("[4/6] reconstructing held-out images")
    report = reconstruct(run_dir, classifier=classifier)
    print(format_report(report))
    print(f"grid: {report['grid']}")
    print("[5/6] AttFind in fast mode on 64 images")
    result = run_attfind(
        run_dir, out=run_dir / "attfind", num_images=64, top_k=10, fast=32, recompute=True, classifier=classifier,
        quiet=quiet,
    )  # fmt: skip
    print(result.summary())
    print("[6/6] writing the report")
    index = write_report(run_dir, out_dir / "report", run_dir / "attfind", classifier=classifier, quiet=quiet)
    report["report"] = str(index)
    (out_dir / "demo.json").write_text(json.dumps(report, indent=2))
    print(f"done in {time.perf_counter() - t0:.0f} s. Open the report: file://{index.resolve()}")
    return report

"""Training the built-in classifier (SmallCNN) on a labelled image dataset."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from stylex.classifier.adapter import weights_fingerprint
from stylex.classifier.small_cnn import NORMS, SmallCNN
from stylex.classifier.store import (
    CONFIG_NAME,
    FORMAT_VERSION,
    METRICS_NAME,
    WEIGHTS_NAME,
    save_weights_atomic,
    write_json_atomic,
)
from stylex.data.convert import to_tensor
from stylex.device import check_device
from stylex.errors import StylexError, counted
from stylex.progress import progress_bar


class LabelledImages(Protocol):
    """What `train_classifier` needs from a dataset (`stylex.data.ImageDataset` has it). Its images are read from
    an `images` attribute (uint8 [N, H, W, 3]) where it has one, else through `tensors`."""

    labels: np.ndarray | None  # int64 [N]
    class_names: list[str]

    def __len__(self) -> int: ...

    def tensors(self, indices: np.ndarray) -> torch.Tensor: ...  # float [n, 3, H, W] in [-1, 1]


@dataclass
class ClassifierTrainConfig:
    """How `train_classifier` builds and trains a SmallCNN.

    Attributes:
        width: Channels of SmallCNN's first stage (later stages double it, up to 4x).
        num_stages: Residual stages; each after the first halves the resolution.
        blocks_per_stage: Residual blocks per stage.
        norm: "batch" (BatchNorm, default: learns shapes several times faster) or "group" (GroupNorm:
            identical in train and eval).
        stem_stride: Stride of the first conv: 1 keeps full resolution in the first stage (finer detail,
            learns faster per epoch, 4x the compute), 2 halves it; None = 1 below 64 px, else 2.
        epochs: Passes over the training set.
        batch_size: Images per step (a smaller final remainder of each epoch is dropped).
        lr: Peak learning rate of AdamW under a one-cycle schedule (warm up 20%, cosine down to ~0).
        weight_decay: AdamW's decoupled weight decay; 0 turns it off.
        label_smoothing: Cross-entropy label smoothing in [0, 1); 0 turns it off.
        hflip: Random horizontal flips (p = 0.5). Off by default: wrong for digits and text; turn it on
            for mirror-symmetric classes (faces, leaves, objects).
        translate: Largest random shift, as a fraction of the image side (0.0625 = 2 px at 32 px),
            with reflection padding; 0 turns it off.
        seed: Seeds initialisation, shuffling and augmentation; the same seed gives the same weights on CPU.
    """

    width: int = 32
    num_stages: int = 3
    blocks_per_stage: int = 1
    norm: str = "batch"
    stem_stride: int | None = None
    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    hflip: bool = False
    translate: float = 0.0625
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stem_stride not in (None, 1, 2):
            raise StylexError(f"Classifier stem_stride {self.stem_stride} must be 1, 2 or None (automatic).")
        if self.norm not in NORMS:
            raise StylexError(f"Classifier norm '{self.norm}' is unknown; use one of {', '.join(NORMS)}.")
        for name in ("width", "num_stages", "blocks_per_stage", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise StylexError(f"Classifier {name} is {getattr(self, name)}; it must be at least 1.")
        if not 0 < self.lr < math.inf or not 0 <= self.weight_decay < math.inf or not 0 <= self.label_smoothing < 1:
            raise StylexError(
                "Classifier lr must be a finite number > 0, weight_decay a finite number >= 0 and label_smoothing "
                f"in [0, 1); got lr {self.lr}, weight_decay {self.weight_decay}, label_smoothing "
                f"{self.label_smoothing}."
            )
        if not 0 <= self.translate < 0.5:
            raise StylexError(f"Classifier translate {self.translate} must be a fraction of the side in [0, 0.5).")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierTrainConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise StylexError(f"Unknown classifier training options {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**d)


def train_classifier(
    train_set: LabelledImages,
    val_set: LabelledImages | None,
    out_dir: str | Path,
    config: ClassifierTrainConfig | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a SmallCNN on `train_set`, evaluate on `val_set`, and write a classifier directory.

    Steps: 1. build SmallCNN from a seeded RNG; 2. AdamW + one-cycle schedule, cross-entropy on
    augmented batches; 3. evaluate train (no augmentation) and val accuracy; 4. write
    `out_dir/weights.safetensors`, `config.json`, `metrics.json`, each atomically.

    Args:
        train_set: Labelled images: `images` uint8 [N, H, W, 3] (H == W), `labels` int64 [N],
            `class_names` (K >= 2 names). `stylex.data.ImageDataset` fits.
        val_set: Held-out images in the same form, or None (no val metrics).
        out_dir: Directory to write; created if missing, its three files replaced.
        config: Training options; None = defaults.
        device: Where to train.
        quiet: Turn off the progress bar.

    Returns:
        The metrics written to metrics.json: val_accuracy (None without a val set), val_balanced_accuracy (the
        mean of the per-class accuracies: chance 1 / K however unbalanced the classes), train_accuracy,
        per_class_accuracy {class name: accuracy or None}, confusion [K][K] (rows: true class, val set),
        num_train, num_val, seconds, epochs, final_loss, history (per epoch), fingerprint.
    """
    config = config or ClassifierTrainConfig()
    start = time.perf_counter()
    device = torch.device(check_device(device))
    out_dir = Path(out_dir)
    train = _Split(train_set, "training set")
    val = _Split(val_set, "validation set") if val_set is not None and len(val_set) > 0 else None
    class_names = list(getattr(train_set, "class_names", None) or [])
    num_classes = len(class_names) if class_names else int(train.labels.max()) + 1
    if not class_names:
        class_names = [str(k) for k in range(num_classes)]
    if num_classes < 2:
        raise StylexError(f"The training set has {num_classes} class; a classifier needs at least 2 labelled classes.")
    for split in (train, val):
        if split is None:
            continue
        if split.labels.min() < 0 or split.labels.max() >= num_classes:
            raise StylexError(
                f"The {split.name} has labels outside 0..{num_classes - 1} for classes {class_names}; fix its labels."
            )
        if split.resolution != train.resolution:
            raise StylexError(
                f"The {split.name} is {split.resolution} px but the training set is {train.resolution} px; "
                "load both at one resolution."
            )
    resolution = train.resolution
    _warn_missing_classes(train, val, class_names)

    # 1. Model, initialised from the seed without touching the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SmallCNN(
            num_classes,
            resolution,
            width=config.width,
            num_stages=config.num_stages,
            blocks_per_stage=config.blocks_per_stage,
            norm=config.norm,
            stem_stride=config.stem_stride,
        ).to(device)
    gen = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation

    # 2. Optimiser and schedule.
    n = len(train)
    batch_size = min(config.batch_size, n)
    steps_per_epoch = n // batch_size
    total_steps = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # One-cycle: short warm-up then cosine decay; reaches good accuracy in few epochs.
    # torch's OneCycleLR divides by pct_start * total_steps - 1, which is 0 for a 5-step run (0.2 * 5): a warm-up of
    # 30% there (a ZeroDivisionError traceback stopped train-classifier with --epochs 1 --batch-size N/5)
    pct_start = 0.2 if abs(0.2 * total_steps - 1) > 1e-9 else 0.3
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps, pct_start=pct_start)
    labels_all = torch.from_numpy(train.labels)

    history: list[dict[str, Any]] = []
    loss_value = math.nan
    bar = progress_bar(
        total=total_steps, desc="classifier", unit="step", disable=True if quiet else None, dynamic_ncols=True
    )
    try:
        for epoch in range(config.epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            seen = correct = 0
            loss_sum = 0.0
            for step in range(steps_per_epoch):
                idx = perm[step * batch_size : (step + 1) * batch_size]
                x = _augment(train.batch(idx), config, gen).to(device)  # [B, 3, H, W]
                y = labels_all[idx].to(device)  # [B]
                logits = model(x)  # [B, K]
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                if not torch.isfinite(loss):
                    raise StylexError(
                        f"Classifier training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                        f"lower the learning rate (now {config.lr:g})."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_value = loss.item()
                loss_sum += loss_value * len(idx)
                seen += len(idx)
                correct += int((logits.argmax(1) == y).sum())
                bar.update(1)
                bar.set_postfix(
                    epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss_value:.3f}", acc=f"{correct / seen:.3f}"
                )
            if val is not None:  # eval mode then sees these weights' statistics
                _recompute_batchnorm(model, train, device, batch_size, None if quiet else "BatchNorm statistics")
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "train_accuracy_running": correct / seen,
            }
            if val is not None:
                val_pred = _predict(model, val, device, batch_size, None if quiet else "validating")
                entry["val_accuracy"] = float(np.mean(val_pred == val.labels))
                bar.set_postfix(
                    epoch=f"{epoch + 1}/{config.epochs}",
                    loss=f"{entry['loss']:.3f}",
                    val_acc=f"{entry['val_accuracy']:.3f}",
                )
            history.append(entry)
    finally:
        bar.close()

    # 3. Final evaluation, without augmentation, in eval mode (the last epoch recomputed the statistics when it
    # validated).
    if val is None:
        _recompute_batchnorm(model, train, device, batch_size, None if quiet else "BatchNorm statistics")
    train_pred = _predict(model, train, device, batch_size, None if quiet else "training accuracy")
    metrics: dict[str, Any] = {
        "val_accuracy": None,
        "train_accuracy": float(np.mean(train_pred == train.labels)),
        "per_class_accuracy": {name: None for name in class_names},
        "confusion": None,
        "num_train": n,
        "num_val": 0 if val is None else len(val),
        "epochs": config.epochs,
        "final_loss": loss_value,
        "history": history,
    }
    if val is not None:
        val_pred = _predict(model, val, device, batch_size, None if quiet else "validating")
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(confusion, (val.labels, val_pred), 1)
        metrics["val_accuracy"] = float(np.mean(val_pred == val.labels))
        metrics["confusion"] = confusion.tolist()
        metrics["per_class_accuracy"] = {
            name: (float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() > 0 else None)
            for k, name in enumerate(class_names)
        }
        metrics["val_balanced_accuracy"] = balanced_accuracy(val.labels, val_pred, num_classes)

    # 4. Write weights first, then the config that points at them, then the metrics.
    model.eval()
    broken = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # a last step that broke them passes the loss check (argmax of NaN logits still "predicts" a class)
        raise StylexError(
            f"Classifier training made {len(broken)} weight tensors non-finite ({broken[0]}, ...); nothing was "
            f"written. Lower the learning rate (now {config.lr:g})."
        )
    fingerprint = weights_fingerprint(model)
    metrics["fingerprint"] = fingerprint
    save_weights_atomic(out_dir / WEIGHTS_NAME, model.state_dict())
    write_json_atomic(
        out_dir / CONFIG_NAME,
        {
            "format_version": FORMAT_VERSION,
            "architecture": SmallCNN.architecture,
            "num_classes": num_classes,
            "resolution": resolution,
            "width": config.width,
            "class_names": class_names,
            "model": model.config(),
            "input_spec": model.input_spec.to_dict(),
            "train": config.to_dict(),
            "fingerprint": fingerprint,
            # where its images came from, for the report's "how this run was made" (a path, or a description)
            **_recorded_source(train_set),
        },
    )
    metrics["seconds"] = time.perf_counter() - start
    write_json_atomic(out_dir / METRICS_NAME, metrics)
    return metrics


class _Split:
    """A dataset seen as (uint8 images, int64 labels) with batched conversion to [-1, 1] tensors."""

    def __init__(self, dataset: LabelledImages, name: str) -> None:
        self.name = name
        self.dataset = dataset
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise StylexError(
                f"The {name} has no labels; a classifier needs one class per image "
                "(a folder per class, or 'labels' in the .npz)."
            )
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(dataset) or len(self.labels) == 0:
            raise StylexError(
                f"The {name} has {len(self.labels)} labels for {len(dataset)} images; give one label per image."
            )
        images = getattr(dataset, "images", None)
        if images is not None:
            shape = tuple(images.shape)  # [N, H, W, 3]
            self.resolution = shape[1]
            square = shape[1] == shape[2]
        else:
            probe = dataset.tensors(np.arange(1))  # [1, 3, H, W]
            self.resolution = probe.shape[2]
            square = probe.shape[2] == probe.shape[3]
        if not square:
            raise StylexError(f"The {name} images are not square; load them resized to a square resolution.")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Indices [B] -> float images [B, 3, H, W] in [-1, 1]."""
        idx_np = idx.numpy()
        images = getattr(self.dataset, "images", None)
        if images is not None:
            return to_tensor(np.asarray(images[idx_np]))
        return self.dataset.tensors(idx_np)


def _warn_missing_classes(train: _Split, val: _Split | None, class_names: list[str]) -> None:
    """Warn about classes without training images (the classifier cannot learn them) and, with a validation set,
    classes without validation images (its accuracy then says nothing about them)."""
    k = len(class_names)
    for split, what in ((train, "training"), (val, "validation")):
        if split is None:
            continue
        counts = np.bincount(split.labels, minlength=k)
        missing = [class_names[i] for i in range(k) if counts[i] == 0]
        if missing:
            why = "it cannot learn them" if split is train else "its validation accuracy says nothing about them"
            verb = "has" if len(missing) == 1 else "have"
            warnings.warn(
                f"{counted(len(missing), 'class')} of {k} ({', '.join(missing)}) {verb} no {what} images; {why}.",
                stacklevel=3,
            )


def _augment(x: torch.Tensor, config: ClassifierTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random flips and shifts of a batch [B, 3, H, W] (identity when both are off)."""
    b, _, h, w = x.shape
    if config.hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    pad = int(round(config.translate * h))
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # [B, 3, H + 2p, W + 2p]
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
    return x


@torch.no_grad()
def _batches(n: int, batch_size: int, desc: str | None):
    """Batch starts over n images; with `desc`, under a tqdm bar (when stderr is a terminal): the passes over all
    training images after the last epoch took 40 s of silence on 20,000 images."""
    starts = range(0, n, batch_size)
    return starts if desc is None else progress_bar(starts, desc=desc, unit="batch", leave=False, disable=None)


def _recompute_batchnorm(
    model: SmallCNN, split: _Split, device: torch.device, batch_size: int, desc: str | None = None
) -> None:
    """Set every BatchNorm's running mean and variance to their averages over the batches of `split` (no
    augmentation) under the current weights. The running averages that training keeps lag behind weights that a
    high learning rate moves fast: after a short training they made eval-mode predictions far worse than
    training-mode ones (validation 0.67 against a running training accuracy of 1.0 on 120 images). Training itself
    uses batch statistics, so it is unchanged; restores the model's mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training, momenta = model.training, [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    for start in _batches(len(split), batch_size, desc):
        model(split.batch(torch.arange(start, min(start + batch_size, len(split)))).to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def _predict(
    model: SmallCNN, split: _Split, device: torch.device, batch_size: int, desc: str | None = None
) -> np.ndarray:
    """Predicted class per image [N] (eval mode, no augmentation); restores the model's mode."""
    was_training = model.training
    model.eval()
    preds = []
    for start in _batches(len(split), batch_size, desc):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        preds.append(model(split.batch(idx).to(device)).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(preds).numpy()


def _recorded_source(images) -> dict[str, str]:
    """{"data": where `images` came from} for the classifier's config.json (an absolute path where it is one), or
    {} when they do not say (a dataset built in memory)."""
    source = str(getattr(images, "source", "") or "")
    if not source:
        return {}
    return {"data": str(Path(source).resolve()) if Path(source).exists() else source}


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float | None:
    """The mean of the per-class accuracies over the classes that have images (None when none has): chance is
    1 / K however unbalanced the classes are, where plain accuracy rewards always naming the commonest class."""
    recalls = [float(np.mean(predicted[labels == k] == k)) for k in range(num_classes) if np.any(labels == k)]
    return float(np.mean(recalls)) if recalls else None


def shows_balanced(accuracy: float | None, balanced: float | None) -> bool:
    """Whether the balanced accuracy says something the accuracy does not (they differ at 3 decimals: the classes
    are unbalanced), so that it is printed beside it."""
    return (
        isinstance(accuracy, int | float)
        and isinstance(balanced, int | float)
        and f"{balanced:.3f}" != f"{accuracy:.3f}"
    )


def weak_classifier_note(
    accuracy: float, num_classes: int, balanced: float | None = None, present: int | None = None
) -> str | None:
    """A sentence when a held-out accuracy is nearer chance (1 / num_classes) than perfect, else None: a 9-class
    classifier at 0.167 (chance 0.111) went through training, AttFind and the report without a word. With
    `balanced` (see `balanced_accuracy`) that figure is judged, against 1 / `present` (the classes it averages over):
    a classifier that names the commonest of unbalanced classes for every image scored 0.750 on 60/15/5 images, its
    balanced accuracy 0.333."""
    if num_classes < 2:
        return None
    if balanced is not None and present is not None and present < 2:  # one class held out: nothing to balance
        balanced = None
    # `present`: the classes with held-out images, which the balanced figure averages over; naming the commonest of
    # them every time scores 1 / present there
    chance = 1.0 / (present if balanced is not None and present else num_classes)
    judged = accuracy if balanced is None else balanced
    if judged >= chance + (1.0 - chance) / 2:
        return None
    why = "StylEx explains what this classifier uses, which may say little about the data"
    counted_over = num_classes if balanced is None or not present else present
    classes = f"{counted_over} classes" + (" with held-out images" if counted_over != num_classes else "")
    if balanced is not None and accuracy - balanced > 0.05:
        return (
            f"the classifier's held-out accuracy, {accuracy:.3f}, hides unbalanced classes: its balanced accuracy "
            f"(the mean of the per-class accuracies), {balanced:.3f}, is nearer chance ({chance:.3f} for "
            f"{classes}) than perfect, so it mostly names the commonest classes: {why}"
        )
    what = "held-out accuracy"
    if shows_balanced(accuracy, balanced):  # unbalanced classes: the figure judged
        what = f"held-out balanced accuracy (the mean of the per-class accuracies; {accuracy:.3f} over all images)"
    return f"the classifier's {what}, {judged:.3f}, is nearer chance ({chance:.3f} for {classes}) than perfect: {why}"

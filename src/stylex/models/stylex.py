"""The trained StylEx pair (G, E) as one object: load a run, encode, reconstruct."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from stylex.config import CONFIG_FORMAT_VERSION, TrainConfig, read_json
from stylex.errors import StylexError, option
from stylex.models.discriminator import Discriminator
from stylex.models.encoder import Encoder
from stylex.models.generator import Generator
from stylex.models.stylespace import StyleVector


def build_networks(config: TrainConfig, c_dim: int) -> tuple[Generator, Encoder, Discriminator]:
    """G, E, D of the sizes in `config` for a classifier with `c_dim` classes (D unconditional when
    `config.conditional` is False; G keeps its c inputs, which are then fed zeros, see `condition`)."""
    m = config.model
    G = Generator(
        m.resolution,
        m.z_dim,
        m.w_dim,
        c_dim,
        m.num_mapping_layers,
        m.channel_base,
        m.channel_max,
        cond_rgb=config.cond_rgb,
        tint_styles=m.tint_styles,
        grey=bool(m.grey),
    )
    E = Encoder(m.resolution, m.w_dim, m.channel_base, m.channel_max, match_rms=config.w_scale == "match_mapping")
    D = Discriminator(m.resolution, c_dim if config.conditional else 0, m.channel_base, m.channel_max, m.mbstd_group)
    return G, E, D


def condition(c: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """What G sees of the classifier logits c [N, K]: c itself, or zeros for a model trained without conditioning
    (`TrainConfig.conditional` False), so that its images never depend on the classifier."""
    return c if config.conditional else torch.zeros_like(c)


class StylEx(nn.Module):
    """A generator and encoder trained together for one classifier.

    Args:
        G: generator (usually the EMA copy).
        E: encoder.
        config: the training config of the run.
        run_info: the rest of the run's config.json (classifier spec, class names).
    """

    def __init__(self, G: Generator, E: Encoder, config: TrainConfig, run_info: dict | None = None):
        super().__init__()
        self.G, self.E, self.config = G, E, config
        self.run_info = run_info or {}
        self.step: int | None = None  # the training step of the loaded weights (set by `load`)

    @property
    def resolution(self) -> int:
        return self.G.resolution

    @property
    def num_classes(self) -> int:
        return self.G.c_dim

    @classmethod
    def load(
        cls,
        run_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        ema: bool = True,
        weights: str | None = None,
    ) -> StylEx:
        """Load G_ema and E_ema (or the raw G and E with ema=False) of a run folder written by `stylex train`.

        Also reads the run folder of an exported model (`stylex export`, see `stylex.zoo`): its weights hold only
        G_ema and E_ema, maybe stored as float16 (loaded as float32), and its relative data location (the shipped
        samples) is resolved against the folder.

        Args:
            run_dir: the run folder; also an exported model's folder or `zoo:NAME` (`stylex.zoo.resolve_model`).
            device: where the networks go.
            ema: the moving averages (True) or the raw training weights (not in an exported model).
            weights: the weights file inside `run_dir`: the last checkpoint (None, "weights.safetensors") or the
                best one by a held-out figure ("best.safetensors", written with `TrainConfig.keep_best`; EMA only).
        """
        from stylex.device import check_device
        from stylex.training.checkpoint import WEIGHTS, load_modules, read_weights
        from stylex.zoo import resolve_model

        check_device(device)
        run_dir = resolve_model(run_dir)
        if not run_dir.is_dir():
            raise StylexError(f"{run_dir} is not a folder; pass the run folder written by `stylex train --out`.")
        info = read_json(run_dir / "config.json")
        if not isinstance(info, dict) or info.get("kind") != "stylex-run" or "train" not in info:
            raise StylexError(
                f"{run_dir} is not a StylEx run folder (its config.json is not from `stylex train`); "
                "pass the --out folder of `stylex train`."
            )
        exported = isinstance(info.get("export"), dict)
        version = info.get("format_version", CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            remedy = "ask for an export made with this version" if exported else "re-train"
            raise StylexError(
                f"{run_dir / 'config.json'} has format version {version!r}; this stylex reads version "
                f"{CONFIG_FORMAT_VERSION}: use the stylex version that wrote it, or {remedy}."
            )
        if exported and not ema:
            raise StylexError(
                f"{run_dir} is an exported model (`stylex export`): it holds only the moving averages G_ema and E_ema, "
                "not the raw training weights; load it with ema=True, or load the original run folder."
            )
        config = TrainConfig.from_dict(info["train"], str(run_dir / "config.json"))
        config.validate()  # refuses absurd sizes from a hand-edited or hostile config.json
        num_classes = _num_classes(info, run_dir)
        _check_size(config, num_classes, run_dir / "config.json")
        with torch.random.fork_rng(devices=[]):  # the initial weights, replaced below, leave the caller's RNG alone
            G, E, _ = build_networks(config, num_classes)
        path = run_dir / (weights or WEIGHTS)
        tensors, metadata = read_weights(path)
        if exported:
            _no_links_out(run_dir)
            if (run_dir.parent / "card.json").is_file():  # its format version, as the zoo listing checks it
                from stylex.zoo import read_card

                read_card(run_dir.parent)
            tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}
            data = info.get("data")
            if isinstance(data, str):  # the shipped samples, beside the run folder, and nowhere else
                info["data"] = str(inside_export(run_dir, data, "data"))
            info.pop("data_relative", None)
        data, rel = info.get("data"), info.get("data_relative")
        if isinstance(data, str) and isinstance(rel, str) and not Path(data).exists() and (run_dir / rel).exists():
            info["data"] = str((run_dir / rel).resolve())  # the run, its data and classifier moved together
            info["data_moved_from"] = data
        names = {"G_ema": G, "E_ema": E} if ema else {"G": G, "E": E}
        load_modules(tensors, names, path)
        model = cls(G, E, config, info).to(device).eval()
        model.requires_grad_(False)
        model.step = int(metadata.get("step", 0))  # the training step of these weights (stats.jsonl may end earlier)
        return model

    def discriminator(self, run_dir: str | Path) -> Discriminator:
        """The discriminator D(x | c) of this model's run folder (its last training weights: D has no moving
        average), in eval mode on the model's device, e.g. for AttFind's discriminator filter. An exported model
        (`stylex export`) ships without it."""
        from stylex.training.checkpoint import WEIGHTS, load_modules, read_weights

        if isinstance(self.run_info.get("export"), dict):
            raise StylexError(
                f"{run_dir} is an exported model (`stylex export`): it ships without the discriminator; use the "
                "run folder it was exported from."
            )
        _, _, D = build_networks(self.config, self.num_classes)
        path = Path(run_dir) / WEIGHTS
        tensors, _ = read_weights(path)
        load_modules(tensors, {"D": D}, path)
        D = D.to(next(self.G.parameters()).device).eval()
        D.requires_grad_(False)
        return D

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, R, R] in [-1, 1] -> w [N, w_dim]."""
        if x.shape[-1] != self.resolution:
            raise StylexError(f"images are {x.shape[-1]} px but this model works at {self.resolution} px.")
        return self.E(x)

    def styles(self, x: torch.Tensor, c: torch.Tensor) -> StyleVector:
        """Styles of images x with classifier logits c [N, K] (ignored by a model trained without conditioning)."""
        return self.G.styles(self.encode(x), condition(c, self.config))

    def reconstruct(self, x: torch.Tensor, c: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x_rec = G(E(x), C(x)) [N, 3, R, R]; pass the classifier logits c [N, K] of x."""
        return self.G.synthesis(self.styles(x, c), noise)


MAX_CLASSES = 100_000
"""The most classes a run's config.json may declare (a hostile one asking for 1e9 asked for 64 GB)."""


def _num_classes(info: dict, run_dir: Path) -> int:
    k = info.get("num_classes")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_CLASSES:
        raise StylexError(f"{run_dir / 'config.json'} declares num_classes {k!r}; a run has 2 to {MAX_CLASSES:,}.")
    return k


def inside_export(run_dir: Path, recorded: str, what: str) -> Path:
    """A path an exported model's config.json records, which must stay inside the export's folder: a downloaded
    folder whose config pointed at "../../private" made stylex read (and put into reports) files outside it."""
    root = run_dir.resolve().parent
    path = (run_dir / recorded).resolve()
    if path != root and root not in path.parents:
        raise StylexError(
            f"{run_dir / 'config.json'} records its {what} at {recorded!r}, outside the exported model's folder "
            f"{root}; an export keeps everything inside it (pass {option('--data')} to use other images)."
        )
    return path


def _no_links_out(run_dir: Path) -> None:
    """Refuse an exported model's folder holding a symbolic link to a place outside it: stylex would read the file
    it points at (a private image, any file) into reports and the viewer as if it were the model's own."""
    root = run_dir.resolve().parent
    for path in root.rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            if target != root and root not in target.parents:
                raise StylexError(
                    f"{path} in the exported model's folder is a link to {target}, outside it; an export holds "
                    "plain files (remove the link, or copy the folder with the files it points at)."
                )


MAX_PARAMETERS = 1_000_000_000
"""The most parameters (G, E and D together) a run's config.json may ask for: each size is bounded alone
(`TrainConfig.validate`), but together the bounds still allow 12 billion (48 GB) from a hostile folder."""


def _check_size(config: TrainConfig, num_classes: int, source: Path) -> None:
    """Count the networks' parameters on the meta device (no memory) and refuse more than MAX_PARAMETERS."""
    with torch.device("meta"):
        networks = build_networks(config, num_classes)
    count = sum(p.numel() for net in networks for p in net.parameters())
    if count > MAX_PARAMETERS:
        raise StylexError(
            f"{source} asks for networks of {count / 1e9:.1f} billion parameters; stylex loads at most "
            f"{MAX_PARAMETERS / 1e9:.0f} billion."
        )

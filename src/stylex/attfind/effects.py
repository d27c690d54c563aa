"""AttFind step 1: the effect of every conv StyleSpace coordinate on every class logit.

For N images with styles s [N, S] (S conv coordinates), each coordinate j and direction d (0 = toward the
coordinate's minimum over the N images, 1 = toward its maximum), the edit is additive on s_j only:

    delta[i, d, j] = shift_size * (target_d[j] - s[i, j]),  target_0 = s_min, target_1 = s_max

and the effect is the change of every classifier logit against the unedited reconstruction, with the same
fixed noise: effects[i, d, j, k] = C(G(s_i + delta e_j))_k - C(G(s_i))_k, a table [N, 2, S, K].

How it is made fast (`StyleEffects`):
1. batched: many (image, coordinate, direction) edits run in one forward pass; on a CPU in batches small enough
   to stay in its caches (`cache_mb`; measured on a Xeon: 1.1-2x faster per edit than batches of 256);
2. cached: per image, the activations entering every conv layer are computed once
   (`Generator.synthesis_states`); an edit of layer l re-runs only layers >= l (`Generator.synthesis_from`);
3. optionally bf16 autocast + channels_last (`precision="bf16"`), the classifier's input included, with the
   cheap low-resolution layers kept in fp32 (`bf16_from`), where bf16 rounding costs the most accuracy;
4. fast mode (`fast=M`): the budget of M coordinates evaluated both ways (2M edits per image) goes to the 2M
   (coordinate, direction) pairs with the largest estimated effect. The estimate is first order,
   grad_s(logit_k) * delta, with the gradient taken at the image's styles and at `fast_points` randomly
   perturbed copies of them; a pair's score is the largest |estimate| over points and classes. (Measured on the
   shapes-32 model: the gradient at the image alone misses many coordinates whose effect it underestimates
   2-20x, those that only act once the edit is large; the maximum over a few perturbed points finds most of
   them, and ranking pairs rather than coordinates spends no edits on the direction that does little. In bf16,
   M = 30 with 3 points kept 0.92 of each image's exact top-10 at 1/54-1/60 of the plain loop's CPU time on a
   loaded 2-core Xeon; see benchmarks/attfind_speed.py.)

`reference_effects` is the plain loop the public ports run (one edit, one full forward); tests and
benchmarks compare against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylex.errors import StylexError
from stylex.failpoints import failpoint
from stylex.files import save_safetensors
from stylex.models.generator import Generator, SynthesisState
from stylex.models.stylespace import StyleLayout, StyleVector
from stylex.training.distributed import Distributed

EFFECTS_FORMAT = "stylex.attfind.effects"
EFFECTS_VERSION = 2  # 2: the exact mask is per (image, direction, coordinate), [N, 2, S]
PRECISIONS = ("fp32", "bf16")


# ------------------------------------------------------------------------------------------ edits and noise
def style_deltas(s_flat: torch.Tensor, s_min: torch.Tensor, s_max: torch.Tensor, shift_size: float) -> torch.Tensor:
    """The additive edit of every coordinate in both directions.

    Args:
        s_flat: conv styles [N, S].
        s_min, s_max: per-coordinate minimum / maximum over the AttFind images [S].
        shift_size: fraction of the way to the target (1 = all the way).

    Returns:
        delta [N, 2, S]: delta[:, 0] moves toward s_min, delta[:, 1] toward s_max.
    """
    targets = torch.stack([s_min, s_max]).to(s_flat)  # [2, S]
    return shift_size * (targets[None] - s_flat[:, None])  # [N, 2, S]


def edit_styles(
    s: StyleVector,
    edits: Sequence[tuple[int, int]],
    s_min: torch.Tensor,
    s_max: torch.Tensor,
    shift_size: float,
) -> StyleVector:
    """Apply attribute edits together to every row of `s`.

    Args:
        s: styles (batch N).
        edits: (flat coordinate j, direction d) pairs; each sets s_j += shift_size * (target_d[j] - s_j)
            with s_j the unedited value. A coordinate listed twice keeps its first edit.
        s_min, s_max: [S] targets of the two directions.
        shift_size: as in `style_deltas`.
    """
    flat = s.flatten().clone()  # [N, S]
    seen: set[int] = set()
    for j, d in edits:
        if j in seen:
            continue
        seen.add(j)
        target = (s_min if d == 0 else s_max)[j].to(flat)
        flat[:, j] = flat[:, j] + shift_size * (target - flat[:, j])
    return s.unflatten(flat)


def image_noise(G: Generator, keys: Sequence[int], seed: int = 0, device: torch.device | str | None = None):
    """Fixed per-image noise: image `key` always gets the same maps, whatever batch it is in.

    Args:
        G: the generator (`make_noise`).
        keys: one integer per image (e.g. its dataset index; -1 for an image file).
        seed: base seed.

    Returns:
        per-layer noise maps [N, 1, r, r], as from `G.make_noise`.
    """
    per_image = [
        G.make_noise(1, generator=torch.Generator().manual_seed((seed * 1_000_003 + int(k) + 1) % 2**63), device=device)
        for k in keys
    ]
    return [torch.cat([n[i] for n in per_image]) for i in range(len(per_image[0]))]


def _index_noise(noise: list[torch.Tensor], rows: torch.Tensor | slice | list[int]) -> list[torch.Tensor]:
    return [n[rows] for n in noise]


# ------------------------------------------------------------------------------------------------- result
@dataclass
class Effects:
    """The effect table and everything selection, sufficiency and rendering need without the images.

    Attributes:
        effects: [N, 2, S, K] float32 logit change per image, direction (0 min, 1 max), coordinate, class.
        s_min, s_max: [S] conv style minimum / maximum over the N images (the edit targets).
        base_logits: [N, K] logits of the unedited reconstructions (the same fixed noise).
        styles: [N, S] conv styles of the images.
        styles_rgb: [N, S_rgb] toRGB styles (so the full StyleVector can be rebuilt).
        exact: [N, 2, S] bool, True where the effect of that edit was evaluated exactly (all True unless fast
            mode; elsewhere `effects` holds the first-order estimate). An [N, S] mask (one flag for both
            directions, as in version 1 files) is accepted and expanded.
        shift_size: the edit size used.
        meta: JSON-ready facts: mode, fast, precision, seconds, indices, seed, ...
    """

    effects: torch.Tensor
    s_min: torch.Tensor
    s_max: torch.Tensor
    base_logits: torch.Tensor
    styles: torch.Tensor
    styles_rgb: torch.Tensor
    exact: torch.Tensor
    shift_size: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, two, s, k = self.effects.shape
        if self.exact.ndim == 2:
            self.exact = self.exact[:, None].expand(-1, 2, -1).clone()
        assert two == 2 and self.base_logits.shape == (n, k), (tuple(self.effects.shape), self.base_logits.shape)
        assert self.styles.shape == (n, s) and self.exact.shape == (n, 2, s), (self.styles.shape, self.exact.shape)
        assert self.s_min.shape == (s,) and self.s_max.shape == (s,)

    @property
    def num_images(self) -> int:
        return self.effects.shape[0]

    @property
    def num_coords(self) -> int:
        return self.effects.shape[2]

    @property
    def num_classes(self) -> int:
        return self.effects.shape[3]

    @property
    def predicted(self) -> torch.Tensor:
        """Predicted class of each unedited reconstruction [N]."""
        return self.base_logits.argmax(dim=1)

    def deltas(self) -> torch.Tensor:
        """delta [N, 2, S] of every edit (see `style_deltas`)."""
        return style_deltas(self.styles, self.s_min, self.s_max, self.shift_size)

    def style_vector(self, layout: StyleLayout) -> StyleVector:
        """The images' styles as a StyleVector (conv and toRGB) under `layout`."""
        conv = list(torch.split(self.styles[:, : sum(layout.conv_dims)], list(layout.conv_dims), dim=1))
        rgb = list(torch.split(self.styles_rgb, list(layout.rgb_dims), dim=1))
        return StyleVector(conv, rgb, layout)

    def coordinate_scores(self) -> torch.Tensor:
        """How strongly each coordinate moves each image: max over directions and classes of |effect|, [N, S]."""
        return self.effects.abs().amax(dim=(1, 3))

    def exact_coords(self) -> torch.Tensor:
        """[N, S] bool: both directions of the coordinate were evaluated exactly."""
        return self.exact.all(dim=1)

    def subset(self, rows: torch.Tensor | Sequence[int]) -> Effects:
        """The table for some images only (s_min / s_max stay those of all N images)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        meta = dict(self.meta)
        if "indices" in meta:
            meta["indices"] = [meta["indices"][i] for i in rows.tolist()]
        return Effects(
            self.effects[rows],
            self.s_min,
            self.s_max,
            self.base_logits[rows],
            self.styles[rows],
            self.styles_rgb[rows],
            self.exact[rows],
            self.shift_size,
            meta,
        )

    def save(self, path: str | Path) -> None:
        """Write one safetensors file (tensors, plus shift size and meta as JSON metadata), atomically."""

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "effects": self.effects.float(),
            "s_min": self.s_min.float(),
            "s_max": self.s_max.float(),
            "base_logits": self.base_logits.float(),
            "styles": self.styles.float(),
            "styles_rgb": self.styles_rgb.float(),
            "exact": self.exact.to(torch.uint8),
        }
        metadata = {
            "format": EFFECTS_FORMAT,
            "version": str(EFFECTS_VERSION),
            "shift_size": repr(float(self.shift_size)),
            "meta": json.dumps(self.meta),
        }
        tmp = path.with_name(path.name + ".tmp")
        save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Effects:
        """Read a file written by `save`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise StylexError(f"{path} does not exist; run `stylex attfind` first or point at its --out folder.")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for a damaged file
            raise StylexError(f"{path} is not a readable safetensors file ({e}); re-run `stylex attfind`.") from None
        if metadata.get("format") != EFFECTS_FORMAT:
            raise StylexError(f"{path} is not an AttFind effects file; re-run `stylex attfind`.")
        try:
            version = int(metadata.get("version", "0"))
            if version > EFFECTS_VERSION:
                raise StylexError(f"{path} was written by a newer stylex (format {version}); upgrade stylex.")
            shift_size = float(metadata["shift_size"])
            meta = json.loads(metadata.get("meta", "{}"))
            if not (math.isfinite(shift_size) and shift_size > 0) or not isinstance(meta, dict):
                raise ValueError("the shift size must be a positive number and meta a JSON object")
            _check_table(tensors)
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise StylexError(f"{path} is incomplete or malformed ({e}); re-run `stylex attfind`.") from None
        return cls(
            effects=tensors["effects"].float(),
            s_min=tensors["s_min"].float(),
            s_max=tensors["s_max"].float(),
            base_logits=tensors["base_logits"].float(),
            styles=tensors["styles"].float(),
            styles_rgb=tensors["styles_rgb"].float(),
            exact=tensors["exact"].bool(),  # [N, S] in version 1 files: expanded by __post_init__
            shift_size=shift_size,
            meta=meta,
        )


def _check_table(t: dict[str, torch.Tensor]) -> None:
    """Raise ValueError unless the tensors of an effects file have the shapes `Effects` documents."""
    effects = t["effects"]
    if effects.ndim != 4 or effects.shape[1] != 2:
        raise ValueError(f"effects must be [N, 2, S, K], got {list(effects.shape)}")
    n, _, s, k = effects.shape
    expected = {
        "s_min": (s,),
        "s_max": (s,),
        "base_logits": (n, k),
        "styles": (n, s),
    }
    for name, shape in expected.items():
        if tuple(t[name].shape) != shape:
            raise ValueError(f"{name} must be {list(shape)}, got {list(t[name].shape)}")
    if tuple(t["exact"].shape) not in ((n, 2, s), (n, s)):  # [N, S] in version 1 files
        raise ValueError(f"exact must be [{n}, 2, {s}], got {list(t['exact'].shape)}")
    if t["styles_rgb"].ndim != 2 or t["styles_rgb"].shape[0] != n:
        raise ValueError(f"styles_rgb must be [{n}, S_rgb], got {list(t['styles_rgb'].shape)}")
    for name in ("effects", "s_min", "s_max", "base_logits", "styles", "styles_rgb"):
        if not t[name].is_floating_point():
            raise ValueError(f"{name} must hold floats, got {t[name].dtype}")


# ---------------------------------------------------------------------------------------------- the search
def _fingerprint(*parts: torch.Tensor | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().float().cpu().contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        else:
            h.update(p.encode())
    return h.hexdigest()[:16]


class StyleEffects:
    """Computes the effect table [N, 2, S, K] (one verb: `compute`).

    Args:
        G: the generator (`layout`, `synthesis`, `synthesis_states`, `synthesis_from`).
        classifier: images [N, 3, R, R] in [-1, 1] -> logits [N, K].
        shift_size: edit size, the fraction of the way to the coordinate's min / max (1 in the paper).
        fast: None for the exact table; M > 0 for fast mode: per image, the 2M (coordinate, direction) pairs with
            the largest estimated |effect| (max over classes and gradient points, see the module docstring) are
            evaluated exactly, as many edits as M coordinates in both directions; the other entries hold the
            first-order estimate at the image and are marked False in `Effects.exact`.
        fast_points: fast mode only: randomly perturbed copies of each image's styles at which the gradient is
            also taken (each costs one forward and K backward passes per image, about 6 edits at K = 2); 0 ranks
            by the gradient at the image alone.
        fast_noise: fast mode only: standard deviation of those perturbations, as a fraction of each
            coordinate's range s_max - s_min.
        seed: seeds the perturbations (the same inputs give the same table).
        max_batch: at most this many edits per forward pass.
        cache_mb: on a CPU, a batch of edits is also kept small enough that its largest activation (at 4 bytes
            per element) fits in about this many MiB: cache-sized batches run faster per edit than large ones
            (8 MiB: 32 edits of the shapes-32 model; 16-64 ran fastest among 8-256). 0 turns this off. Not applied
            on GPUs.
        memory_mb: rough bound (MiB) on the memory of the activation cache plus one batch of edits; it lowers
            the batch and the images per chunk when needed. The classifier's own activations are not counted.
        images_per_chunk: images whose caches are held at once (also the unit of checkpointing).
        precision: "fp32", or "bf16" (autocast, also for fast mode's gradients; faster on recent CPUs and GPUs;
            bf16 rounding blurs small effects).
        bf16_from: with bf16, the generator's layers below this resolution still run in fp32: they cost little,
            and bf16 rounding there, spread over every pixel after them, costs the most accuracy. Measured on the
            shapes-32 model (share of each image's fp32 top-10 coordinates an exact bf16 table keeps): all layers
            bf16 0.958; the default 16 (4 and 8 px layers fp32, no measurable cost) 0.961; 32 (4-16 px fp32,
            ~15% slower) 0.975-0.983. None: the output resolution (only the last block in bf16); 0: all layers
            in bf16. Needs a `Generator` (`layers`, `to_rgbs`, `noise_sizes`); ignored otherwise.
        channels_last: keep cached activations, and the classifier's input, in channels_last memory format
            (pairs well with bf16; a classifier that cannot take such input gets a contiguous one).
        progress: show a tqdm bar over the edits.
    """

    def __init__(
        self,
        G: Generator,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        shift_size: float = 1.0,
        fast: int | None = None,
        fast_points: int = 3,
        fast_noise: float = 0.05,
        seed: int = 0,
        max_batch: int = 256,
        cache_mb: float = 8.0,
        memory_mb: float = 2048.0,
        images_per_chunk: int = 16,
        precision: str = "fp32",
        bf16_from: int | None = 16,
        channels_last: bool = False,
        progress: bool = True,
    ):
        if precision not in PRECISIONS:
            raise StylexError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        if fast is not None and (not isinstance(fast, int) or isinstance(fast, bool) or fast < 1):
            raise StylexError(f"fast mode needs an integer M >= 1 coordinates per image (or None), got {fast!r}.")
        if fast_points < 0 or not (math.isfinite(fast_noise) and fast_noise >= 0):
            raise StylexError("fast_points and fast_noise must be >= 0.")
        if max_batch < 1 or images_per_chunk < 1 or not 0 < memory_mb < math.inf or not 0 <= cache_mb < math.inf:
            raise StylexError(
                "max_batch, images_per_chunk and memory_mb must be positive (memory_mb finite), cache_mb finite and "
                f">= 0; got memory_mb {memory_mb}, cache_mb {cache_mb}."
            )
        self.G, self.C = G, classifier
        self.shift_size = float(shift_size)
        self.fast, self.fast_points, self.fast_noise, self.seed = fast, fast_points, float(fast_noise), seed
        self.max_batch, self.cache_mb, self.memory_mb = max_batch, cache_mb, memory_mb
        self.images_per_chunk = images_per_chunk
        self.precision, self.channels_last, self.progress = precision, channels_last, progress
        self.bf16_from = bf16_from
        self._classifier_channels_last = channels_last  # turned off if the classifier rejects such input

    # --- public -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compute(
        self,
        s: StyleVector,
        noise: list[torch.Tensor],
        s_min: torch.Tensor | None = None,
        s_max: torch.Tensor | None = None,
        checkpoint_dir: str | Path | None = None,
        meta: dict[str, Any] | None = None,
        dist: Distributed | None = None,
        key: str | None = None,
    ) -> Effects:
        """The effect table of the images with styles `s` and fixed `noise`.

        With several processes (`dist`), every process passes the same N images; each computes the rows of its
        share of them (`Distributed.share`) and the rows are summed across processes, so every process returns
        the whole table, equal to a 1-process table up to the order of float operations within a batch.

        Args:
            s: styles of the N images (batch N).
            noise: per-layer noise [N, 1, r, r] (see `image_noise`).
            s_min, s_max: edit targets [S]; default the minimum / maximum of `s` over the N images.
            checkpoint_dir: if given, finished image chunks are saved there and reused by a later call with
                the same inputs (resume after an interruption); the folder is removed when the table is done.
                With several processes it should be one folder they all see: each process adds its chunks,
                rank 0 alone reads the folder (so a run resumes with any number of processes) and removes it.
            meta: extra JSON-ready facts stored in `Effects.meta` (e.g. the dataset indices).
            dist: the process group (default: a single process).
            key: a fingerprint of the inputs that names the chunks in `checkpoint_dir` (`attfind.run.inputs_key`:
                weights, images and settings). Default: one of `s`, `noise` and the base logits, whose bits change
                with the number of threads, so that a resume with another process count recomputes every chunk.

        Returns:
            `Effects`; `meta` gains mode, fast, precision, seconds, seconds_per_image and, in fast mode,
            fast_points, fast_noise and `estimate_top10_overlap` (see `_estimate_agreement`).
        """
        if self.fast is not None and torch.is_inference_mode_enabled():  # said, not a raw autograd error
            raise StylexError(
                "fast mode ranks coordinates by gradients, which torch.inference_mode() turns off: call AttFind "
                "outside it (torch.no_grad() is fine), or without fast."
            )
        t0 = time.perf_counter()
        dist = dist or Distributed()
        n, S = s.batch_size, s.layout.num_coords
        device = s.conv[0].device
        s_flat = s.flatten().float()  # [N, S]
        bounds = [b for b in (s_min, s_max) if b is not None]  # given ones name the chunks; derived ones follow s
        s_min = s_flat.min(dim=0).values if s_min is None else s_min.to(s_flat)
        s_max = s_flat.max(dim=0).values if s_max is None else s_max.to(s_flat)
        delta = style_deltas(s_flat, s_min, s_max, self.shift_size).cpu()  # [N, 2, S]
        perturb = None  # [N, P, S] offsets of fast mode's extra gradient points
        if self.fast is not None and self.fast_points > 0:
            g = torch.Generator().manual_seed(self.seed)
            scale = self.fast_noise * (s_max - s_min).float().cpu()  # [S]
            perturb = torch.randn(n, self.fast_points, S, generator=g) * scale
        base = self._base_logits(s, noise)  # [N, K]
        K = base.shape[1]
        table = torch.zeros(n, 2, S, K)
        exact = torch.zeros(n, 2, S, dtype=torch.bool)
        done = torch.zeros(n, dtype=torch.bool)
        agreement: list[float] = []

        store = None
        if checkpoint_dir is not None:
            settings = f"{self.shift_size}|{self.fast}|{self.precision}|{self.channels_last}"
            if self.fast is not None:
                settings += f"|{self.fast_points}|{self.fast_noise}|{self.seed}"
            if key is None:
                key = _fingerprint(s_flat, torch.cat(s.rgb, dim=1), *noise, base)
            store = _ChunkStore(Path(checkpoint_dir), _fingerprint(key, *bounds, settings))
            if dist.is_main:  # rank 0 alone reads and prepares the folder; the other ranks only add chunks to it
                for rows, eff, ex, agree in store.load():
                    fits = (
                        rows.numel()
                        and 0 <= int(rows.min())
                        and int(rows.max()) < n
                        and eff.shape == (len(rows), 2, S, K)
                        and ex.shape == (len(rows), 2, S)
                    )
                    if fits:
                        table[rows], exact[rows], done[rows] = eff, ex, True
                        agreement += agree
                store.start()
            else:
                store.folder.mkdir(parents=True, exist_ok=True)
        if dist.enabled:  # the rows rank 0 loaded, on every rank (and no rank writes a chunk before it has them)
            done = dist.from_main(done.to(device, torch.uint8)).cpu().bool()

        chunk, batch = self._plan(s, noise)
        per_image = 2 * (S if self.fast is None else min(self.fast, S))
        todo = dist.share(torch.nonzero(~done).flatten())  # the rows left, this process's share of them
        from stylex.progress import progress_bar

        bar = progress_bar(
            total=len(todo) * per_image,
            desc="AttFind effects"
            + ("" if self.fast is None else f" (fast, M={self.fast})")
            + (f" (rank 0's share of {dist.world_size} processes)" if dist.enabled else ""),  # the others: alike
            unit="edit",
            disable=None if self.progress else True,  # None: no bar when stderr is not a terminal
        )
        for a in range(0, len(todo), chunk):
            rows = todo[a : a + chunk]  # [n_c]
            eff, ex, agree = self._chunk(
                s.index(rows),
                _index_noise(noise, rows),
                delta[rows],
                base[rows],
                None if perturb is None else perturb[rows],
                batch,
                bar,
            )
            table[rows], exact[rows] = eff, ex
            agreement += agree
            if store is not None:
                store.save(rows, eff, ex, agree)
        bar.close()

        total, count = sum(agreement), len(agreement)
        if dist.enabled:  # each row was loaded (rank 0) or computed by exactly one rank: the sums are the table
            table = dist.sum(table.to(device)).cpu()  # [N, 2, S, K]
            exact = dist.sum(exact.to(device, torch.uint8)).cpu().bool()  # [N, 2, S]
            sums = dist.sum(torch.tensor([total, count], dtype=torch.float64, device=device))
            total, count = float(sums[0]), int(sums[1])
        seconds = time.perf_counter() - t0
        info = dict(meta or {})
        info.update(
            mode="exact" if self.fast is None else "fast",
            fast=self.fast,
            precision=self.precision,
            channels_last=self.channels_last,
            num_images=n,
            num_coords=S,
            seconds=round(seconds, 3),
            seconds_per_image=round(seconds / max(n, 1), 4),
        )
        if self.fast is not None:
            info.update(fast_points=self.fast_points, fast_noise=self.fast_noise, fast_seed=self.seed)
            info["estimate_top10_overlap"] = round(total / max(count, 1), 4)
        rgb = torch.cat(s.rgb, dim=1).float().cpu()
        effects = Effects(table, s_min.cpu(), s_max.cpu(), base, s_flat.cpu(), rgb, exact, self.shift_size, info)
        if store is not None and dist.is_main:  # after the sums: every rank has written its last chunk
            store.remove()
        return effects

    # --- steps --------------------------------------------------------------------------------------------
    def _autocast(self):
        """bf16 autocast (with `bf16_from`'s fp32 layers), or nothing for fp32."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        device = self.G.const.device.type if hasattr(self.G, "const") else "cpu"
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type=device, dtype=torch.bfloat16))
        fp32 = _low_resolution_modules(self.G, self.bf16_from)
        stack.enter_context(_outside_autocast(fp32, device, self.channels_last))
        return stack

    def _classify(self, img: torch.Tensor) -> torch.Tensor:
        if self._classifier_channels_last and img.ndim == 4:
            try:
                return self.C(img.contiguous(memory_format=torch.channels_last)).float()  # [B, K]
            except RuntimeError:  # e.g. a `.view` that needs contiguous activations: use plain input from now on
                self._classifier_channels_last = False
        return self.C(img.contiguous()).float()  # [B, K]

    def _base_logits(self, s: StyleVector, noise: list[torch.Tensor]) -> torch.Tensor:
        """Logits of the unedited reconstructions [N, K], in the same precision as the edits."""
        from stylex.progress import progress_bar

        out = []
        with self._autocast(), progress_bar(
            total=s.batch_size, desc="unedited reconstructions", unit="image", disable=None if self.progress else True
        ) as bar:  # fmt: skip
            for a in range(0, s.batch_size, self.max_batch):
                rows = slice(a, a + self.max_batch)
                out.append(self._classify(self.G.synthesis(s.index(rows), _index_noise(noise, rows))))
                bar.update(len(out[-1]))
        return torch.cat(out).cpu()

    def _chunk(self, s, noise, delta, base, perturb, batch, bar) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """Effects [n, 2, S, K] and the exact mask [n, 2, S] of one chunk of n images.

        perturb: [n, P, S] offsets of fast mode's extra gradient points, or None.
        """
        n, S, K = s.batch_size, s.layout.num_coords, base.shape[1]
        with self._autocast():
            states = self._states(s, noise)
        if self.fast is None:
            table = torch.zeros(n, 2, S, K)
            exact = torch.ones(n, 2, S, dtype=torch.bool)
            estimate = None
        else:
            grads = self._gradients(s, noise, perturb, batch, start=states[0])  # [n, 1 + P, S, K]
            table = grads[:, 0, None] * delta[..., None]  # [n, 2, S, K] first-order estimate at the image
            score = (grads[:, :, None] * delta[:, None, :, :, None]).abs().amax(dim=(1, 4))  # [n, 2, S]
            top = score.reshape(n, 2 * S).topk(min(2 * self.fast, 2 * S), dim=1).indices  # [n, 2M] pairs
            exact = torch.zeros(n, 2 * S, dtype=torch.bool).scatter_(1, top, True).reshape(n, 2, S)
            estimate = table.clone()
        rows, dirs, coords = torch.nonzero(exact, as_tuple=True)  # [E] each, row-major
        layer_of = torch.bucketize(coords, torch.tensor(s.layout.offsets()[1:]), right=True)  # [E]
        with torch.inference_mode(), self._autocast():  # no autograd bookkeeping at all on the hot path
            for layer in layer_of.unique().tolist():
                sel = torch.nonzero(layer_of == layer).flatten()
                start = s.layout.synthesis_start(layer)  # a toRGB edit re-runs from the conv it reads
                for b in range(0, sel.numel(), batch):
                    e = sel[b : b + batch]  # edits in this forward pass
                    r, j, d = rows[e], coords[e], dirs[e]
                    table[r, d, j] = self._edited_logits(start, states, s, noise, r, j, delta[r, d, j]) - base[r]
                    bar.update(e.numel())
        agree = [] if estimate is None else _estimate_agreement(estimate, table, exact)
        return table, exact, agree

    def _states(self, s: StyleVector, noise: list[torch.Tensor]) -> list[SynthesisState]:
        """The activations entering every conv layer (`synthesis_states`); with `channels_last`, those entering
        the layers that run in bf16 are converted (fp32 layers keep their input's format, so an edit path
        computes what `_base_logits`'s path computes, bit for bit: fp32 convolutions round differently in the
        two formats)."""
        states = self.G.synthesis_states(s, noise)
        if not self.channels_last:
            return states
        fp32 = _low_resolution_modules(self.G, self.bf16_from) if self.precision == "bf16" else []
        layers = list(getattr(self.G, "layers", []))
        keep = {i for i, layer in enumerate(layers) if layer in fp32}
        return [
            st if i in keep else SynthesisState(st.x.contiguous(memory_format=torch.channels_last), st.img)
            for i, st in enumerate(states)
        ]

    def _edited_logits(self, layer, states, s, noise, rows, coords, deltas) -> torch.Tensor:
        """Logits [B, K] after adding deltas [B] to coords [B] of images rows [B], re-running layers >= layer."""
        st = states[layer]
        state = SynthesisState(st.x[rows], None if st.img is None else st.img[rows])  # [B, C, r, r]
        s_b = s.index(rows).shifted(coords, deltas, per_row=True)
        img = self.G.synthesis_from(layer, state, s_b, _index_noise(noise, rows))  # [B, 3, R, R]
        return self._classify(img).cpu()

    def _gradients(
        self,
        s: StyleVector,
        noise: list[torch.Tensor],
        perturb: torch.Tensor | None = None,
        batch: int = 256,
        start: SynthesisState | None = None,
    ) -> torch.Tensor:
        """d logit_k / d s_j at each image's styles and at its perturbed copies: [n, 1 + P, S, K].

        One forward and K backward passes per (image, point), `batch` of them at a time, in `precision`.

        Args:
            perturb: [n, P, S] offsets of the extra points (None: the images' own styles only).
            start: the state entering conv layer 0 (`_states(s, noise)[0]`, e.g. channels_last); default
                `synthesis` from its own start.
        """
        n, S = s.batch_size, s.layout.num_coords
        points = s.flatten().detach().float()[:, None]  # [n, 1, S]
        if perturb is not None:
            points = torch.cat([points, points + perturb.to(points)], dim=1)  # [n, 1 + P, S]
        p = points.shape[1]
        points = points.reshape(n * p, S)
        owner = torch.arange(n).repeat_interleave(p)  # image of each point [n * p]
        out = []
        for a in range(0, n * p, batch):
            rows = owner[a : a + batch]
            with torch.enable_grad(), self._autocast():
                flat = points[a : a + batch].clone().requires_grad_(True)  # [B, S]
                sv = s.index(rows).detach().unflatten(flat)
                noise_b = _index_noise(noise, rows)
                if start is None:
                    img = self.G.synthesis(sv, noise_b)  # [B, 3, R, R]
                else:
                    img = self.G.synthesis_from(0, SynthesisState(start.x[rows], None), sv, noise_b)
                logits = self._classify(img)  # [B, K]
                K = logits.shape[1]
                grads = [  # points are independent, so the gradient of the sum is each point's own gradient
                    torch.autograd.grad(logits[:, k].sum(), flat, retain_graph=k < K - 1)[0] for k in range(K)
                ]
            out.append(torch.stack(grads, dim=-1).float().cpu())  # [B, S, K]
        return torch.cat(out).reshape(n, p, S, -1)

    # --- memory -------------------------------------------------------------------------------------------
    def _probe(self, s: StyleVector, noise: list[torch.Tensor]) -> tuple[int, int]:
        """(bytes of one image's activation cache, largest activation in elements per image)."""
        with torch.no_grad(), self._autocast():
            states = self.G.synthesis_states(s.index(slice(0, 1)), _index_noise(noise, slice(0, 1)))
        cache = sum(st.x.numel() * st.x.element_size() + (0 if st.img is None else st.img.numel() * 4) for st in states)
        # an upsampling layer (odd index) works on its input at twice the size
        largest = max(st.x.numel() * (4 if i % 2 == 1 else 1) for i, st in enumerate(states))
        return cache, largest

    def _plan(self, s: StyleVector, noise: list[torch.Tensor]) -> tuple[int, int]:
        """(images per chunk, edits per forward pass): half the memory budget for each; on a CPU, batches whose
        largest activation, counted at 4 bytes per element, fits in `cache_mb`."""
        cache, largest = self._probe(s, noise)
        budget = self.memory_mb * 2**20 / 2
        per_edit = 8 * 4 * largest  # ~8 live fp32 tensors the size of the largest activation
        chunk = max(1, min(self.images_per_chunk, int(budget // max(cache, 1))))
        batch = max(1, min(self.max_batch, int(budget // per_edit)))
        if self.cache_mb > 0 and s.conv[0].device.type == "cpu":
            batch = max(1, min(batch, int(self.cache_mb * 2**20 // (4 * largest))))
        return chunk, batch


def _low_resolution_modules(G: Generator, bf16_from: int | None) -> list[nn.Module]:
    """The synthesis layers and toRGBs of `G` whose output resolution is below `bf16_from` (None: G's own)."""
    if not all(hasattr(G, a) for a in ("layers", "to_rgbs", "noise_sizes", "resolution")):
        return []
    limit = G.resolution if bf16_from is None else bf16_from
    sizes = list(G.noise_sizes)  # output resolution of each conv layer; toRGB k follows conv layer 2k
    layers = [layer for layer, r in zip(G.layers, sizes, strict=True) if r < limit]
    return layers + [rgb for k, rgb in enumerate(G.to_rgbs) if sizes[2 * k] < limit]


@contextlib.contextmanager
def _outside_autocast(modules: Sequence[nn.Module], device_type: str, channels_last: bool = False):
    """Inside an autocast region, run `modules` in fp32: autocast is off during their forward and their floating
    point inputs are cast to fp32 (their outputs stay fp32; the next autocast op casts them back). With
    `channels_last` their 4-d outputs are made channels_last, so the bf16 layers after them get that format on
    every path (the cached states, the base logits, the gradients)."""
    entered: list[torch.autocast] = []

    def pre(module, args):
        ctx = torch.autocast(device_type=device_type, enabled=False)
        ctx.__enter__()
        entered.append(ctx)
        return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def post(module, args, output):
        entered.pop().__exit__(None, None, None)
        if channels_last and isinstance(output, torch.Tensor) and output.ndim == 4:
            return output.contiguous(memory_format=torch.channels_last)
        return None

    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while entered:  # a forward that raised never reached its post hook
            entered.pop().__exit__(None, None, None)


def _estimate_agreement(estimate: torch.Tensor, exact_table: torch.Tensor, exact: torch.Tensor, k: int = 10):
    """Per image: share of the exact top-k (among the exactly evaluated edits) that the first-order estimate at
    the image also puts in its top-k there. A self-check of fast mode that needs no extra forwards.

    Args:
        estimate, exact_table: [n, 2, S, K]; exact: [n, 2, S] mask of the evaluated edits.
    """
    out = []
    for i in range(estimate.shape[0]):
        cols = torch.nonzero(exact[i].flatten()).flatten()  # evaluated (direction, coordinate) pairs
        kk = min(k, cols.numel())
        if kk == 0:
            continue
        est = estimate[i].flatten(0, 1)[cols].abs().amax(dim=1)  # [E]
        ex = exact_table[i].flatten(0, 1)[cols].abs().amax(dim=1)
        a = set(cols[est.topk(kk).indices].tolist())
        b = set(cols[ex.topk(kk).indices].tolist())
        out.append(len(a & b) / kk)
    return out


def top_overlap(a: Effects, b: Effects, k: int = 10) -> float:
    """Mean over images of |top-k(a) ∩ top-k(b)| / k, ranking coordinates by `Effects.coordinate_scores`.

    Use it to compare a fast table with the exact one of the same images.
    """
    if a.effects.shape != b.effects.shape:
        raise StylexError(f"effect tables differ in shape ({tuple(a.effects.shape)} vs {tuple(b.effects.shape)}).")
    ta = a.coordinate_scores().topk(k, dim=1).indices  # [N, k]
    tb = b.coordinate_scores().topk(k, dim=1).indices
    return sum(len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(ta, tb, strict=True)) / a.num_images


@torch.no_grad()
def reference_effects(
    G: Generator,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    s: StyleVector,
    noise: list[torch.Tensor],
    shift_size: float = 1.0,
    s_min: torch.Tensor | None = None,
    s_max: torch.Tensor | None = None,
    coords: Sequence[int] | None = None,
    progress: bool = False,
) -> torch.Tensor | None:
    """The plain loop of the public ports: one edit, one full forward pass at batch 1.

    Args:
        coords: only these flat coordinates (others stay 0); default all.

    Returns:
        effects [N, 2, S, K] (same definition as `StyleEffects.compute`); None for N = 0.
    """
    from stylex.progress import progress_bar

    s_flat = s.flatten().float()
    s_min = s_flat.min(dim=0).values if s_min is None else s_min
    s_max = s_flat.max(dim=0).values if s_max is None else s_max
    delta = style_deltas(s_flat, s_min, s_max, shift_size)  # [N, 2, S]
    coords = list(range(s.layout.num_coords)) if coords is None else list(coords)
    out = None
    for i in progress_bar(range(s.batch_size), desc="AttFind effects (loop)", disable=None if progress else True):
        s_i, noise_i = s.index([i]), _index_noise(noise, [i])
        base = classifier(G.synthesis(s_i, noise_i)).float()  # [1, K]
        if out is None:
            out = torch.zeros(s.batch_size, 2, s.layout.num_coords, base.shape[1])
        for j in coords:
            for d in range(2):
                logits = classifier(G.synthesis(s_i.shifted(j, delta[i, d, j]), noise_i)).float()
                out[i, d, j] = (logits - base)[0].cpu()
    return out


class _ChunkStore:
    """Finished image chunks of an interrupted `compute`, keyed by a fingerprint of its inputs.

    `meta.json` (the key) is written before the first chunk; each chunk is one safetensors file (rows, effects,
    exact mask, and the fast-mode agreement as metadata) written under a temporary name and renamed, so a crash
    at any moment leaves only complete chunks. Chunks of other inputs, damaged files and temporary files are
    discarded, never loaded.
    """

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = folder, key
        self.count = 0  # chunks saved by this process (for the crash tests' failpoint)

    def _key_on_disk(self) -> str | None:
        try:
            data = json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return data.get("key") if isinstance(data, dict) else None

    def load(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]]:
        """(rows [n], effects [n, 2, S, K], exact [n, 2, S], agreement) of each complete chunk of these inputs."""
        if self._key_on_disk() != self.key:
            return []
        from safetensors import safe_open

        out = []
        for f in sorted(self.folder.glob("chunk_*.safetensors")):
            try:
                with safe_open(str(f), framework="pt") as g:
                    t = {k: g.get_tensor(k) for k in ("rows", "effects", "exact")}
                    agreement = json.loads((g.metadata() or {}).get("agreement", "[]"))
            except Exception:  # noqa: BLE001 - a damaged chunk is recomputed, not trusted
                f.unlink(missing_ok=True)
                continue
            out.append((t["rows"].long(), t["effects"], t["exact"].bool(), list(agreement)))
        return out

    def start(self) -> None:
        """Make the folder hold chunks of these inputs only (stale chunks of other inputs are removed)."""
        if self._key_on_disk() == self.key:
            for f in self.folder.glob("*.tmp"):
                f.unlink()
            return
        if self.folder.is_dir():
            for f in self.folder.iterdir():
                if f.is_file():
                    f.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps({"key": self.key}))
        tmp.replace(self.folder / "meta.json")

    def save(self, rows: torch.Tensor, effects: torch.Tensor, exact: torch.Tensor, agreement: list[float]) -> None:

        name = f"chunk_{int(rows[0]):06d}_{len(rows):04d}.safetensors"
        tmp = self.folder / (name + ".tmp")
        save_safetensors(
            {"rows": rows.contiguous(), "effects": effects.contiguous(), "exact": exact.to(torch.uint8)},
            tmp,
            {"agreement": json.dumps([float(a) for a in agreement])},
        )
        tmp.replace(self.folder / name)
        self.count += 1
        failpoint("attfind-chunk", self.count)

    def remove(self) -> None:
        if self.folder.is_dir():
            for f in self.folder.iterdir():
                f.unlink()
            self.folder.rmdir()

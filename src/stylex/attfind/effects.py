"""AttFind step 1: the effect of every conv StyleSpace coordinate on every class logit.

For N images with styles s [N, S] (S conv coordinates), each coordinate j and direction d (0 = toward the
coordinate's minimum over the N images, 1 = toward its maximum), the edit is additive on s_j only:

    delta[i, d, j] = shift_size * (target_d[j] - s[i, j]),  target_0 = s_min, target_1 = s_max

and the effect is the change of every classifier logit against the unedited reconstruction, with the same
fixed noise: effects[i, d, j, k] = C(G(s_i + delta e_j))_k - C(G(s_i))_k, a table [N, 2, S, K].

How it is made fast (`StyleEffects`):
1. batched: many (image, coordinate, direction) edits run in one forward pass;
2. cached: per image, the activations entering every conv layer are computed once
   (`Generator.synthesis_states`); an edit of layer l re-runs only layers >= l (`Generator.synthesis_from`);
3. optionally bf16 autocast + channels_last (`precision="bf16"`);
4. fast mode (`fast=M`): one forward and K backward passes per image give d logit_k / d s_j; the first-order
   estimate grad * delta ranks the coordinates, and only the top M per image are evaluated exactly.

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
from stylex.models.generator import SynthesisState
from stylex.models.stylespace import StyleLayout, StyleVector
from stylex.training.distributed import Distributed

EFFECTS_FORMAT = "stylex.attfind.effects"
EFFECTS_VERSION = 1
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


def image_noise(G: nn.Module, keys: Sequence[int], seed: int = 0, device: torch.device | str | None = None):
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


def _index_noise(noise: list[torch.Tensor], rows: torch.Tensor | slice) -> list[torch.Tensor]:
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
        exact: [N, S] bool, True where the effect was evaluated exactly (all True unless fast mode).
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
        assert two == 2 and self.base_logits.shape == (n, k), (tuple(self.effects.shape), self.base_logits.shape)
        assert self.styles.shape == (n, s) and self.exact.shape == (n, s), (self.styles.shape, self.exact.shape)
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
        """The images' styles as a StyleVector (conv and toRGB)."""
        conv = list(torch.split(self.styles, list(layout.conv_dims), dim=1))
        rgb = list(torch.split(self.styles_rgb, list(layout.rgb_dims), dim=1))
        return StyleVector(conv, rgb, layout)

    def coordinate_scores(self) -> torch.Tensor:
        """How strongly each coordinate moves each image: max over directions and classes of |effect|, [N, S]."""
        return self.effects.abs().amax(dim=(1, 3))

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
        from safetensors.torch import save_file

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
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
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
            exact=tensors["exact"].bool(),
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
        "exact": (n, s),
    }
    for name, shape in expected.items():
        if tuple(t[name].shape) != shape:
            raise ValueError(f"{name} must be {list(shape)}, got {list(t[name].shape)}")
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
        fast: None for the exact table; M > 0 for fast mode: rank coordinates per image by the first-order
            estimate |grad * delta| (max over directions and classes) and evaluate only the top M exactly (both
            directions); the other entries hold the estimate and are marked in `Effects.exact`.
        max_batch: at most this many edits per forward pass.
        memory_mb: rough bound (MiB) on the memory of the activation cache plus one batch of edits; it lowers
            the batch and the images per chunk when needed. The classifier's own activations are not counted.
        images_per_chunk: images whose caches are held at once (also the unit of checkpointing).
        precision: "fp32", or "bf16" (autocast; faster on recent CPUs and GPUs; bf16 rounding blurs small effects).
        channels_last: keep cached activations in channels_last memory format (pairs well with bf16).
        progress: show a tqdm bar over the edits.
    """

    def __init__(
        self,
        G: nn.Module,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        shift_size: float = 1.0,
        fast: int | None = None,
        max_batch: int = 256,
        memory_mb: float = 2048.0,
        images_per_chunk: int = 16,
        precision: str = "fp32",
        channels_last: bool = False,
        progress: bool = True,
    ):
        if precision not in PRECISIONS:
            raise StylexError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        if fast is not None and fast < 1:
            raise StylexError(f"fast mode needs M >= 1 coordinates per image, got {fast}.")
        if max_batch < 1 or images_per_chunk < 1 or memory_mb <= 0:
            raise StylexError("max_batch, images_per_chunk and memory_mb must be positive.")
        self.G, self.C = G, classifier
        self.shift_size = float(shift_size)
        self.fast = fast
        self.max_batch, self.memory_mb, self.images_per_chunk = max_batch, memory_mb, images_per_chunk
        self.precision, self.channels_last, self.progress = precision, channels_last, progress

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

        Returns:
            `Effects`; `meta` gains mode, fast, precision, seconds, seconds_per_image and, in fast mode,
            `estimate_top10_overlap` (see `_estimate_agreement`).
        """
        t0 = time.perf_counter()
        dist = dist or Distributed()
        n, S = s.batch_size, s.layout.num_coords
        device = s.conv[0].device
        s_flat = s.flatten().float()  # [N, S]
        s_min = s_flat.min(dim=0).values if s_min is None else s_min.to(s_flat)
        s_max = s_flat.max(dim=0).values if s_max is None else s_max.to(s_flat)
        delta = style_deltas(s_flat, s_min, s_max, self.shift_size).cpu()  # [N, 2, S]
        base = self._base_logits(s, noise)  # [N, K]
        K = base.shape[1]
        table = torch.zeros(n, 2, S, K)
        exact = torch.zeros(n, S, dtype=torch.bool)
        done = torch.zeros(n, dtype=torch.bool)
        agreement: list[float] = []

        store = None
        if checkpoint_dir is not None:
            settings = f"{self.shift_size}|{self.fast}|{self.precision}|{self.channels_last}"
            key = _fingerprint(s_flat, torch.cat(s.rgb, dim=1), s_min, s_max, *noise, base, settings)
            store = _ChunkStore(Path(checkpoint_dir), key)
            if dist.is_main:  # rank 0 alone reads and prepares the folder; the other ranks only add chunks to it
                for rows, eff, ex, agree in store.load():
                    fits = (
                        rows.numel()
                        and 0 <= int(rows.min())
                        and int(rows.max()) < n
                        and eff.shape == (len(rows), 2, S, K)
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
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(todo) * per_image,
            desc="AttFind effects" + ("" if self.fast is None else f" (fast, M={self.fast})"),
            unit="edit",
            disable=not self.progress,
        )
        for a in range(0, len(todo), chunk):
            rows = todo[a : a + chunk]  # [n_c]
            eff, ex, agree = self._chunk(s.index(rows), _index_noise(noise, rows), delta[rows], base[rows], batch, bar)
            table[rows], exact[rows] = eff, ex
            agreement += agree
            if store is not None:
                store.save(rows, eff, ex, agree)
        bar.close()

        total, count = sum(agreement), len(agreement)
        if dist.enabled:  # each row was loaded (rank 0) or computed by exactly one rank: the sums are the table
            table = dist.sum(table.to(device)).cpu()  # [N, 2, S, K]
            exact = dist.sum(exact.to(device, torch.uint8)).cpu().bool()  # [N, S]
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
            info["estimate_top10_overlap"] = round(total / max(count, 1), 4)
        rgb = torch.cat(s.rgb, dim=1).float().cpu()
        effects = Effects(table, s_min.cpu(), s_max.cpu(), base, s_flat.cpu(), rgb, exact, self.shift_size, info)
        if store is not None and dist.is_main:  # after the sums: every rank has written its last chunk
            store.remove()
        return effects

    # --- steps --------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            device = self.G.const.device.type if hasattr(self.G, "const") else "cpu"
            return torch.autocast(device_type=device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _classify(self, img: torch.Tensor) -> torch.Tensor:
        return self.C(img).float()  # [B, K]

    def _base_logits(self, s: StyleVector, noise: list[torch.Tensor]) -> torch.Tensor:
        """Logits of the unedited reconstructions [N, K], in the same precision as the edits."""
        out = []
        with self._autocast():
            for a in range(0, s.batch_size, self.max_batch):
                rows = slice(a, a + self.max_batch)
                out.append(self._classify(self.G.synthesis(s.index(rows), _index_noise(noise, rows))))
        return torch.cat(out).cpu()

    def _chunk(self, s, noise, delta, base, batch, bar) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """Effects [n, 2, S, K] and the exact mask [n, S] of one chunk of n images."""
        n, S, K = s.batch_size, s.layout.num_coords, base.shape[1]
        agree: list[float] = []
        if self.fast is None:
            table = torch.zeros(n, 2, S, K)
            exact = torch.ones(n, S, dtype=torch.bool)
            coords = torch.arange(S).repeat(n)  # [n*S]
        else:
            grad = self._gradients(s, noise)  # [n, S, K]
            table = grad[:, None] * delta[..., None]  # [n, 2, S, K] first-order estimate
            score = delta.abs().amax(dim=1) * grad.abs().amax(dim=2)  # [n, S]
            m = min(self.fast, S)
            top = score.topk(m, dim=1).indices  # [n, M]
            exact = torch.zeros(n, S, dtype=torch.bool)
            exact[torch.arange(n)[:, None], top] = True
            coords = top.reshape(-1)  # [n*M]
        per_row = coords.numel() // n
        rows = torch.arange(n).repeat_interleave(per_row)  # [n*M]
        rows, coords = rows.repeat(2), coords.repeat(2)  # both directions
        dirs = torch.arange(2).repeat_interleave(rows.numel() // 2)
        estimate = table.clone() if self.fast is not None else None
        with self._autocast():
            states = self.G.synthesis_states(s, noise)
            if self.channels_last:
                states = [SynthesisState(st.x.contiguous(memory_format=torch.channels_last), st.img) for st in states]
            layer_of = torch.bucketize(coords, torch.tensor(s.layout.offsets()[1:]), right=True)  # [E]
            for layer in layer_of.unique().tolist():
                sel = torch.nonzero(layer_of == layer).flatten()
                for b in range(0, sel.numel(), batch):
                    e = sel[b : b + batch]  # edits in this forward pass
                    r, j, d = rows[e], coords[e], dirs[e]
                    table[r, d, j] = self._edited_logits(layer, states, s, noise, r, j, delta[r, d, j]) - base[r]
                    bar.update(e.numel())
        if estimate is not None:
            agree = _estimate_agreement(estimate, table, exact)
        return table, exact, agree

    def _edited_logits(self, layer, states, s, noise, rows, coords, deltas) -> torch.Tensor:
        """Logits [B, K] after adding deltas [B] to coords [B] of images rows [B], re-running layers >= layer."""
        st = states[layer]
        state = SynthesisState(st.x[rows], None if st.img is None else st.img[rows])  # [B, C, r, r]
        s_b = s.index(rows).shifted(coords, deltas)
        img = self.G.synthesis_from(layer, state, s_b, _index_noise(noise, rows))  # [B, 3, R, R]
        return self._classify(img).cpu()

    def _gradients(self, s: StyleVector, noise: list[torch.Tensor]) -> torch.Tensor:
        """d logit_k / d s_j for every image, coordinate and class [n, S, K] (fp32; one backward per class)."""
        with torch.enable_grad():
            flat = s.flatten().detach().float().requires_grad_(True)  # [n, S]
            conv = list(torch.split(flat, list(s.layout.conv_dims), dim=1))
            sv = StyleVector(conv, [t.detach() for t in s.rgb], s.layout)
            logits = self._classify(self.G.synthesis(sv, noise))  # [n, K]
            K = logits.shape[1]
            grads = [
                torch.autograd.grad(logits[:, k].sum(), flat, retain_graph=k < K - 1)[0] for k in range(K)
            ]  # images are independent, so the gradient of the sum is each image's own gradient
        return torch.stack(grads, dim=-1).cpu()  # [n, S, K]

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
        """(images per chunk, edits per forward pass): half the memory budget for each."""
        cache, largest = self._probe(s, noise)
        budget = self.memory_mb * 2**20 / 2
        per_edit = 8 * 4 * largest  # ~8 live fp32 tensors the size of the largest activation
        chunk = max(1, min(self.images_per_chunk, int(budget // max(cache, 1))))
        return chunk, max(1, min(self.max_batch, int(budget // per_edit)))


def _estimate_agreement(estimate: torch.Tensor, exact_table: torch.Tensor, exact: torch.Tensor, k: int = 10):
    """Per image: share of the exact top-k (among the exactly evaluated coordinates) that the first-order
    estimate also puts in its top-k there. A self-check of fast mode that needs no extra forwards."""
    out = []
    for i in range(estimate.shape[0]):
        cols = torch.nonzero(exact[i]).flatten()
        kk = min(k, cols.numel())
        if kk == 0:
            continue
        est = estimate[i][:, cols].abs().amax(dim=(0, 2))  # [M]
        ex = exact_table[i][:, cols].abs().amax(dim=(0, 2))
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
    G: nn.Module,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    s: StyleVector,
    noise: list[torch.Tensor],
    shift_size: float = 1.0,
    s_min: torch.Tensor | None = None,
    s_max: torch.Tensor | None = None,
    coords: Sequence[int] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The plain loop of the public ports: one edit, one full forward pass at batch 1.

    Args:
        coords: only these flat coordinates (others stay 0); default all.

    Returns:
        effects [N, 2, S, K] (same definition as `StyleEffects.compute`).
    """
    from tqdm.auto import tqdm

    s_flat = s.flatten().float()
    s_min = s_flat.min(dim=0).values if s_min is None else s_min
    s_max = s_flat.max(dim=0).values if s_max is None else s_max
    delta = style_deltas(s_flat, s_min, s_max, shift_size)  # [N, 2, S]
    coords = list(range(s.layout.num_coords)) if coords is None else list(coords)
    out = None
    for i in tqdm(range(s.batch_size), desc="AttFind effects (loop)", disable=not progress):
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
        """(rows [n], effects [n, 2, S, K], exact [n, S], agreement) of each complete chunk of these inputs."""
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
        from safetensors.torch import save_file

        name = f"chunk_{int(rows[0]):06d}_{len(rows):04d}.safetensors"
        tmp = self.folder / (name + ".tmp")
        save_file(
            {"rows": rows.contiguous(), "effects": effects.contiguous(), "exact": exact.to(torch.uint8)},
            str(tmp),
            metadata={"agreement": json.dumps([float(a) for a in agreement])},
        )
        tmp.replace(self.folder / name)
        self.count += 1
        failpoint("attfind-chunk", self.count)

    def remove(self) -> None:
        if self.folder.is_dir():
            for f in self.folder.iterdir():
                f.unlink()
            self.folder.rmdir()

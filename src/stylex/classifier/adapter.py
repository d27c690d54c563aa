"""ClassifierAdapter: the frozen classifier C as the rest of stylex sees it.

It takes stylex images ([N, 3, H, W] float in [-1, 1] at the model resolution), converts them to the
classifier's own input convention (an `InputSpec`), and returns float32 logits [N, K].
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylex.classifier.spec import InputSpec
from stylex.errors import StylexError

SOURCE_KINDS = ("stylex", "torchscript", "factory", "module")


@dataclass(frozen=True)
class ClassifierSource:
    """Where a classifier came from, so a StylEx run can reload it (stored in the run's config.json).

    Attributes:
        kind: "stylex" (a directory written by `train_classifier`), "torchscript" (a file for
            `torch.jit.load`), "factory" (`package.module:factory` plus optional safetensors weights), or
            "module" (an in-memory module; recorded but cannot be reloaded).
        location: The directory, the file, or "package.module:factory".
        weights: Safetensors file loaded into the module, or None (the source's own weights).
        input_spec: The input convention used.
        num_classes: K, when known.
        class_names: Class names, when known (a stylex directory records them).
        fingerprint: Short sha256 of the weights (see `weights_fingerprint`), when computed.
        search_path: For a factory found in the working directory: that directory, searched again when the run
            is used from elsewhere.
    """

    kind: str
    location: str
    weights: str | None = None
    input_spec: InputSpec = field(default_factory=InputSpec)
    num_classes: int | None = None
    class_names: list[str] | None = None
    fingerprint: str | None = None
    search_path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise TypeError(f"kind {self.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
        if not isinstance(self.location, str):  # a null location ended in a TypeError traceback when loaded
            raise TypeError(f"location must be a path or module:factory text, got {self.location!r}")
        for name in ("weights", "search_path"):
            if not isinstance(getattr(self, name), str | None):
                raise TypeError(f"{name} must be a path or null, got {getattr(self, name)!r}")

    def describe(self) -> str:
        """How messages name the classifier: `'runs/x/classifier'` or `'pkg.mod:build' (weights 'w.safetensors')`."""
        text = f"'{self.location}'"
        if self.weights is not None:
            text += f" (weights '{self.weights}')"
        return text

    def relative_to(self, base_dir: str | os.PathLike) -> ClassifierSource:
        """A copy whose location and weights are relative to `base_dir` when they lie inside it.

        Use it to store a classifier that lives inside a run folder (e.g. RUN/classifier) so the run can
        be moved; reload with `load_classifier_from_dict(d, base_dir=RUN)`.
        """
        base = os.path.abspath(base_dir)

        def rel(p: str | None) -> str | None:
            if p is None or self.kind == "factory" and p == self.location or not os.path.isabs(p):
                return p
            inside = os.path.commonpath([base, os.path.abspath(p)]) == base
            return os.path.relpath(p, base) if inside else p

        # rel() of a str is a str (a location is never None: __post_init__)
        return replace(self, location=rel(self.location), weights=rel(self.weights))  # type: ignore[arg-type]

    def resolved(self, base_dir: str | os.PathLike | None) -> ClassifierSource:
        """Inverse of `relative_to`: relative paths are joined to `base_dir` (None = leave them)."""
        if base_dir is None:
            return self

        base = os.fspath(base_dir)

        def absolute(p: str | None) -> str | None:
            if p is None or self.kind == "factory" and p == self.location or os.path.isabs(p):
                return p
            return os.path.join(base, p)

        # as in relative_to: absolute() of a str is a str
        return replace(self, location=absolute(self.location), weights=absolute(self.weights))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `ClassifierSource.from_dict(s.to_dict()) == s`."""
        return {
            "kind": self.kind,
            "location": self.location,
            "weights": self.weights,
            "input_spec": self.input_spec.to_dict(),
            "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
            "fingerprint": self.fingerprint,
        } | ({"search_path": self.search_path} if self.search_path else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierSource:
        """Inverse of `to_dict`."""
        try:
            return cls(
                kind=d["kind"],
                location=d["location"],
                weights=d.get("weights"),
                input_spec=InputSpec.from_dict(d.get("input_spec") or {}),
                num_classes=d.get("num_classes"),
                class_names=d.get("class_names"),
                fingerprint=d.get("fingerprint"),
                search_path=d.get("search_path"),
            )
        except (KeyError, TypeError, AssertionError) as e:
            raise StylexError(
                f"The classifier entry {d!r} is incomplete or malformed ({e}); "
                "re-create the run or point it at the classifier again."
            ) from e


def _error_line(e: Exception) -> str:
    """The line of an exception's message that says what went wrong: its first, except for TorchScript's, whose
    first line is a generic header and whose last line is the cause."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return line.removeprefix(f"{type(e).__name__}: ")  # TorchScript's cause line repeats the type the caller names


def weights_fingerprint(model: nn.Module, dtype: torch.dtype | None = None) -> str:
    """Short sha256 (16 hex digits) over the module's state: names, dtypes, shapes and raw bytes.

    Independent of file format and device, so the same weights give the same fingerprint whether they
    came from a stylex directory, a TorchScript file or a safetensors file. With `dtype` (e.g. torch.float16),
    floating-point tensors are rounded to it first, so that a copy stored in that precision matches.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


MAX_LOGIT = 100.0
"""Logits beyond this on random images get a warning (a model's usual logits are under about 20)."""


class ClassifierAdapter(nn.Module):
    """The frozen classifier C: stylex images in, float32 logits out, differentiable w.r.t. the images.

    The wrapped model is put in eval mode with `requires_grad=False` on every parameter, and stays in
    eval mode whatever `train()` is called with (the GAN trains *through* C, never C itself).

    Args:
        model: Any module mapping the classifier's own input [N, 3, size, size] to logits [N, K].
        input_spec: The classifier's input convention.
        source: Where it came from (recorded by `to_dict()`); None = an in-memory module.
        num_classes: K if known; else read from `model.num_classes` if present, else set by `check()`.
        class_names: Optional names of the K classes.
    """

    mean: torch.Tensor | None  # buffers: both set or both None (input_spec)
    std: torch.Tensor | None

    def __init__(
        self,
        model: nn.Module,
        input_spec: InputSpec | None = None,
        source: ClassifierSource | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if input_spec is None:
            input_spec = source.input_spec if source is not None else InputSpec()
        self.model = model
        self.input_spec = input_spec
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if num_classes is None and source is not None:
            num_classes = source.num_classes
        if num_classes is None:
            attr = getattr(model, "num_classes", None)
            num_classes = attr if isinstance(attr, int) and not isinstance(attr, bool) else None
        self._num_classes = num_classes
        if class_names is None and source is not None:
            class_names = source.class_names
        self.class_names = None if class_names is None else list(class_names)
        self._features_ok = True
        self.features_note: str | None = None  # why `features` is not used, when `check` found it unusable
        self._source = source if source is not None else ClassifierSource(kind="module", location=type(model).__name__)
        self._fingerprint: str | None = None
        self._checked_at: int | None = None  # the resolution `check` last passed at

        # Per-channel normalisation as non-persistent buffers so `.to(device)` moves them.
        lo, hi = input_spec.value_range
        self._scale = (hi - lo) / 2.0  # [-1, 1] -> [lo, hi]: x * scale + shift
        self._shift = (hi + lo) / 2.0
        if input_spec.mean is not None:
            self.register_buffer("mean", torch.tensor(input_spec.mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(input_spec.std).view(1, -1, 1, 1), persistent=False)
        else:
            self.register_buffer("mean", None, persistent=False)
            self.register_buffer("std", None, persistent=False)
        floats = [p.dtype for p in self.model.parameters() if p.is_floating_point()]
        self._input_dtype = floats[0] if floats else torch.float32

    # --- identity -------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """K, the number of logits."""
        if self._num_classes is None:
            raise StylexError(
                f"The number of classes of classifier {self._source.describe()} is not known yet; "
                "call check(resolution) first."
            )
        return self._num_classes

    @property
    def source(self) -> ClassifierSource:
        """Where the classifier came from, with its input spec, K, class names and fingerprint filled in."""
        return replace(
            self._source,
            input_spec=self.input_spec,
            num_classes=self._num_classes,
            class_names=self.class_names,
            fingerprint=self.fingerprint(),
        )

    def to_dict(self, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
        """JSON-ready record for a run's config.json; `load_classifier_from_dict` reloads it.

        Args:
            relative_to: If given (e.g. the run folder), paths inside it are stored relative to it;
                reload with `load_classifier_from_dict(d, base_dir=that folder)`.
        """
        source = self.source
        if relative_to is not None:
            source = source.relative_to(relative_to)
        return source.to_dict()

    def fingerprint(self) -> str:
        """Short sha256 hex of the wrapped model's weights (cached: the weights are frozen)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    # --- modes ----------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> ClassifierAdapter:
        """Sets the adapter's own flag only; the wrapped classifier always stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def has_features(self) -> bool:
        """True when the wrapped model has a `features(x) -> list[Tensor]` method (for a perceptual loss), and
        `check` did not find it returning something else (torchvision models name their trunk `features`)."""
        return self._features_ok and callable(getattr(self.model, "features", None))

    # --- the hot path ---------------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Stylex images -> the classifier's input convention.

        Args:
            x: [N, 3, H, W] float in [-1, 1].

        Returns:
            [N, 3, size, size] in the classifier's value range, normalised by mean/std if set.
        """
        assert x.ndim == 4 and x.shape[1] == 3, tuple(x.shape)
        spec = self.input_spec
        x = x.to(self._input_dtype)
        if spec.size is not None and tuple(x.shape[2:]) != (spec.size, spec.size):
            # Antialias only when shrinking: bilinear without it aliases badly on downsampling.
            downsampling = spec.size < max(x.shape[2], x.shape[3])
            x = F.interpolate(
                x, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=downsampling
            )
        if self._scale != 1.0 or self._shift != 0.0:
            x = x * self._scale + self._shift  # [-1, 1] -> value_range
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] images in [-1, 1] -> float32 logits [N, K]; gradients flow to x, not to C."""
        c = self._run(self.model, self.prepare(x))  # [N, K]
        assert isinstance(c, torch.Tensor) and c.ndim == 2, "classifier output is not [N, K]; see check()"
        return c.float()

    def features(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """The wrapped model's feature maps for images [N, 3, H, W] in [-1, 1], or None if it has none."""
        if not self.has_features:
            return None
        return list(self._run(self.model.features, self.prepare(x)))

    def _run(self, fn, x: torch.Tensor):
        """`fn(x)`; a TorchScript model runs without the JIT's optimising executor. Once that executor had profiled
        a call with gradients, later calls under torch.no_grad returned logits that required grad (training then
        failed with "backward through the graph a second time") and calls under inference_mode failed ("Inference
        tensors cannot be saved for backward"): so stylex could neither train nor run AttFind with a TorchScript
        classifier. Measured on a SmallCNN at batch 64: 1.72 ms per call unoptimised against 1.76 optimised."""
        if isinstance(self.model, torch.jit.ScriptModule):
            with torch.jit.optimized_execution(False):
                return fn(x)
        return fn(x)

    # --- validation -----------------------------------------------------------------------------------

    def check(self, resolution: int) -> int:
        """Run a batch of 2 random images at `resolution` and validate what comes back.

        Checks that the call succeeds, returns a float tensor [2, K] with K >= 2 (and K equal to a
        known `num_classes`), finite values, and that the logits depend differentiably on the input.

        Args:
            resolution: Side of the stylex images that will be fed in.

        Returns:
            K, which also becomes `num_classes`.

        Raises:
            StylexError: One sentence naming the classifier, what it returned and what is expected.
        """
        name = self._source.describe()
        device = next(
            (t.device for t in list(self.model.parameters()) + list(self.model.buffers())),
            torch.device("cpu"),
        )
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(2, 3, resolution, resolution, generator=gen) * 2 - 1).to(device).requires_grad_(True)
        size = self.input_spec.size or resolution
        fix = (
            "set the input size, value range and mean/std the classifier was trained with (--classifier-input-size, "
            "--classifier-range, --classifier-mean, --classifier-std; an InputSpec from Python)"
        )
        buffers = [b.detach().clone() for b in self.model.buffers()]
        try:
            with torch.enable_grad():
                c = self._run(self.model, self.prepare(x))
        except Exception as e:  # any failure inside user code becomes one actionable sentence
            line = _error_line(e)
            if "channels" in line:  # e.g. a grayscale model: "expected input ... to have 1 channels, but got 3"
                fix = (
                    "stylex gives classifiers RGB images (3 channels); wrap a model for other channels in a module "
                    "whose forward converts them, e.g. model(x.mean(1, keepdim=True)) for grayscale"
                )
            elif isinstance(e, TypeError) and "argument" in line:  # forward(x, *, temperature) and the like
                fix = "stylex calls forward(images) alone; wrap the model in a module whose forward takes only them"
            raise StylexError(
                f"Classifier {name} failed on a batch of 2 images [2, 3, {size}, {size}] "
                f"({self.input_spec.describe()}) with {type(e).__name__}: {line}; {fix}."
            ) from e
        if not isinstance(c, torch.Tensor):
            raise StylexError(
                f"Classifier {name} returned {type(c).__name__} instead of a logits tensor [2, K]; "
                "make its forward return only the logits, shape [N, num_classes]."
            )
        shape = list(c.shape)
        if c.ndim != 2 or shape[0] != 2:
            raise StylexError(
                f"Classifier {name} returned shape {shape} for a batch of 2 images, "
                "expected logits [2, K] with K >= 2; "
                "make its forward return one logit per class, shape [N, num_classes]."
            )
        if shape[1] < 2:
            raise StylexError(
                f"Classifier {name} returned shape {shape} (one logit), expected logits [2, K] with K >= 2 classes; "
                "for a binary classifier return two logits, torch.cat([torch.zeros_like(l), l], dim=1) (its softmax "
                "is sigmoid(l))."
            )
        if not c.is_floating_point():
            raise StylexError(
                f"Classifier {name} returned {c.dtype} values of shape {shape}, expected float logits [2, K]; "
                "return raw logits, not class indices."
            )
        if self._num_classes is not None and shape[1] != self._num_classes:
            raise StylexError(
                f"Classifier {name} returned {shape[1]} logits but is recorded with {self._num_classes} classes; "
                "point the run at the classifier it was trained with."
            )
        if not torch.isfinite(c).all():
            raise StylexError(
                f"Classifier {name} returned non-finite logits (NaN or inf) of shape {shape} on random images in "
                f"[{self.input_spec.value_range[0]:g}, {self.input_spec.value_range[1]:g}]; "
                "check its weights and input range."
            )
        values = c.detach().float().cpu()
        if (values >= 0).all() and (values <= 1).all() and torch.allclose(values.sum(1), torch.ones(2), atol=1e-3):
            raise StylexError(
                f"Classifier {name} returns probabilities (each row in [0, 1], summing to 1), expected logits; "
                "return the values before the softmax (stylex applies softmax itself)."
            )
        if torch.allclose(torch.logsumexp(values, 1), torch.zeros(2), atol=1e-3):
            warnings.warn(
                f"Classifier {name} returns log-probabilities (log_softmax): explanations are the same, but "
                "StylEx's generator is conditioned on these values; the logits before log_softmax are the usual input.",
                stacklevel=3,
            )
        if values.abs().max() > MAX_LOGIT:
            warnings.warn(
                f"Classifier {name} returns logits as large as {values.abs().max():.3g} on random images: the "
                "generator takes the logits as input and training compares them (KL), and at this scale training "
                f"diverges at once; divide them by a temperature (a module returning model(x) / T) to about "
                f"{MAX_LOGIT:g} or less.",
                stacklevel=3,
            )
        grad = None
        if c.requires_grad:
            with torch.enable_grad():  # the caller may be inside torch.no_grad()
                (grad,) = torch.autograd.grad(c.float().sum(), x, allow_unused=True)
        if grad is None or not torch.isfinite(grad).all():
            raise StylexError(
                f"Classifier {name} returns logits that are not differentiable w.r.t. its input "
                "(StylEx trains the generator through it); "
                "remove .detach(), torch.no_grad() or numpy steps from its forward."
            )
        with torch.no_grad():
            again = self._run(self.model, self.prepare(x.detach()))
        moved = any(not torch.equal(a, b) for a, b in zip(buffers, self.model.buffers(), strict=False))
        if moved or not torch.allclose(again.float(), c.detach().float(), rtol=1e-4, atol=1e-5):
            raise StylexError(
                f"Classifier {name} gives other logits for the same images on a second call"
                + (" and changes its buffers" if moved else "")
                + " (it runs in training mode: dropout, batch statistics); call model.eval() before "
                "torch.jit.trace or torch.jit.script, and save it again."
            )
        self._check_features(x.detach(), name)
        self._num_classes = shape[1]
        self._checked_at = resolution
        return shape[1]

    def _check_features(self, x: torch.Tensor, name: str) -> None:
        """Keep the perceptual loss only when `features` returns feature maps [2, C, H, W] for the 2 images."""
        if not self.has_features:
            return
        try:
            with torch.no_grad():
                feats = self.model.features(self.prepare(x))  # type: ignore[operator]  # has_features: a method
            ok = isinstance(feats, list | tuple) and len(feats) > 0
            ok = ok and all(isinstance(f, torch.Tensor) and f.ndim == 4 and f.shape[0] == 2 for f in feats)
        except Exception:
            ok = False
        if not ok:  # said by the trainer, the one user of the perceptual loss (not by attfind, explain, report)
            self._features_ok = False
            self.features_note = (
                f"Classifier {name} has a `features` that does not return a list of feature maps [N, C, H, W] (a "
                "torchvision model's convolutional trunk has that name); the perceptual loss is off for it."
            )


def as_classifier(classifier: Any, resolution: int, num_classes: int | None = None) -> ClassifierAdapter:
    """A classifier given from Python as a checked `ClassifierAdapter`.

    Args:
        classifier: a `ClassifierAdapter` (used as it is), or any `nn.Module` mapping images [N, 3, R, R] in [-1, 1]
            to logits [N, K], which is wrapped (and so put in eval mode with its parameters frozen). A model that
            expects other inputs (0..255, ImageNet statistics, another size) is wrapped by the caller:
            `ClassifierAdapter(module, InputSpec(...))`.
        resolution: the size of the images it will be given; `ClassifierAdapter.check` runs there once.
        num_classes: the number of logits the caller needs (a StylEx model's classes), if any.

    Raises:
        StylexError: not a module, a failed check, or another number of classes than `num_classes`.
    """
    if not isinstance(classifier, nn.Module):
        raise StylexError(
            f"the classifier must be a torch nn.Module returning logits [N, K] for images [N, 3, R, R], got "
            f"{type(classifier).__name__}; put a function inside an nn.Module's forward."
        )
    adapter = classifier if isinstance(classifier, ClassifierAdapter) else ClassifierAdapter(classifier)
    if adapter._checked_at != resolution:
        adapter.check(resolution)
    if num_classes is not None and adapter.num_classes != num_classes:
        raise StylexError(
            f"the classifier has {adapter.num_classes} outputs but the model explains {num_classes} classes; pass "
            "the classifier the model was trained with."
        )
    return adapter

"""What a classifier expects as input: size, value range and per-channel normalisation.

Inside stylex every image is float NCHW in [-1, 1] at the model resolution. An `InputSpec` says how
to turn such an image into what one particular classifier was trained on; only `classifier/` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stylex.errors import StylexError

#: torchvision's ImageNet statistics, for values in [0, 1]; `--classifier-mean imagenet` names them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """The input convention of one classifier.

    The adapter applies, in this order: resize to `size`, map [-1, 1] linearly onto `value_range`,
    then `(x - mean) / std` per channel (torchvision style, so mean/std are in `value_range` units).

    Attributes:
        size: Square side in pixels the classifier expects; None = the model resolution (no resize).
        value_range: (low, high) the classifier's pixels span, e.g. (-1, 1), (0, 1) or (0, 255).
            (-1, 1) is the identity.
        mean: Per-channel mean subtracted after the range mapping, 1 or 3 values; None = no centring.
        std: Per-channel standard deviation divided by after the mean, 1 or 3 values, all > 0;
            None = no scaling. Give mean and std together or neither.
    """

    size: int | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise sequences (e.g. JSON lists) to tuples of floats so equality and hashing work.
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        if self.std is not None:
            object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.size is not None and (isinstance(self.size, bool) or int(self.size) != self.size):
            raise StylexError(f"Classifier input size {self.size!r} is not a whole number of pixels.")
        if self.size is not None:
            object.__setattr__(self, "size", int(self.size))
            if self.size < 1:
                raise StylexError(f"Classifier input size {self.size} must be a positive number of pixels.")
        lo_hi = self.value_range
        if len(lo_hi) != 2 or not all(math.isfinite(v) for v in lo_hi) or lo_hi[0] >= lo_hi[1]:
            raise StylexError(
                f"Classifier value range {lo_hi} must be two finite numbers low < high, e.g. (0, 1) or (0, 255)."
            )
        if (self.mean is None) != (self.std is None):
            raise StylexError("Give the classifier's mean and std together (or neither), e.g. both 'imagenet'.")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and (len(values) not in (1, 3) or not all(math.isfinite(v) for v in values)):
                raise StylexError(f"Classifier {name} {values} must be 1 or 3 finite numbers (one per channel).")
        if self.std is not None and min(self.std) <= 0:
            raise StylexError(f"Classifier std {self.std} must be positive in every channel.")

    @property
    def is_identity(self) -> bool:
        """True when the classifier takes stylex images as they are (no resize, range or normalisation)."""
        return self.size is None and self.value_range == (-1.0, 1.0) and self.mean is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `InputSpec.from_dict(spec.to_dict()) == spec`."""
        return {
            "size": self.size,
            "value_range": list(self.value_range),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Inverse of `to_dict`; missing keys take their defaults, unknown keys are an error."""
        unknown = set(d) - {"size", "value_range", "mean", "std"}
        if unknown:
            raise StylexError(
                f"Classifier input spec has unknown keys {sorted(unknown)}; expected size, value_range, mean, std."
            )
        return cls(
            size=d.get("size"),
            value_range=tuple(d.get("value_range", (-1.0, 1.0))),
            mean=None if d.get("mean") is None else tuple(d["mean"]),
            std=None if d.get("std") is None else tuple(d["std"]),
        )

    @classmethod
    def from_options(
        cls,
        size: int | None = None,
        value_range: str | Sequence[float] | None = None,
        mean: str | Sequence[float] | None = None,
        std: str | Sequence[float] | None = None,
    ) -> InputSpec:
        """Build a spec from command-line style strings, with a clear error for each bad value.

        Args:
            size: Square input side in pixels, or None for the model resolution.
            value_range: "low,high" such as "0,1", "0,255", "-1,1" (also "0:255"); None = (-1, 1).
            mean: "r,g,b" or one number, or "imagenet" (scaled to the value range); None = no normalisation.
            std: "r,g,b" or one number, or "imagenet" (scaled to the value range); None = no normalisation.

        Returns:
            The validated InputSpec.
        """
        lo, hi = (-1.0, 1.0) if value_range is None else _parse_floats(value_range, "value range", (2,))
        # "imagenet" names torchvision's statistics of values in [0, 1], here in the units of the value range
        # (for 0,255: mean 123.7, 116.3, 103.5 and std 58.4, 57.1, 57.4), as mean and std are applied after it.
        imagenet_mean = tuple(lo + m * (hi - lo) for m in IMAGENET_MEAN)
        imagenet_std = tuple(v * (hi - lo) for v in IMAGENET_STD)
        return cls(
            size=size,
            value_range=(lo, hi),
            mean=None if mean is None else _parse_floats(mean, "mean", (1, 3), imagenet_mean),
            std=None if std is None else _parse_floats(std, "std", (1, 3), imagenet_std),
        )

    def describe(self) -> str:
        """One line for logs, e.g. `size 224, range (0, 1), mean (0.485, ...), std (...)`."""
        parts = [f"size {self.size if self.size is not None else 'model resolution'}"]
        parts.append(f"range ({self.value_range[0]:g}, {self.value_range[1]:g})")
        if self.mean is not None and self.std is not None:  # together or neither (__post_init__)
            parts.append(f"mean {tuple(round(v, 4) for v in self.mean)}, std {tuple(round(v, 4) for v in self.std)}")
        return ", ".join(parts)


def _parse_floats(
    value: str | Sequence[float],
    name: str,
    lengths: tuple[int, ...],
    imagenet: tuple[float, ...] | None = None,
) -> tuple[float, ...]:
    """'0,255' / '0:255' / 'imagenet' / [0, 255] -> (0.0, 255.0), checking the count."""
    if isinstance(value, str):
        text = value.strip()
        if imagenet is not None and text.lower() == "imagenet":
            return imagenet
        try:
            numbers = tuple(float(v) for v in text.replace(":", ",").split(",") if v.strip())
        except ValueError:
            numbers = ()
        if not numbers:
            example = "'0,1'" if imagenet is None else "'0.485,0.456,0.406' or 'imagenet'"
            raise StylexError(f"Classifier {name} '{value}' is not a comma-separated list of numbers, e.g. {example}.")
    else:
        numbers = tuple(float(v) for v in value)
    if len(numbers) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise StylexError(f"Classifier {name} '{value}' has {len(numbers)} numbers; give {want}.")
    return numbers

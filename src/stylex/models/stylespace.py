"""StyleSpace: the outputs of the generator's per-layer affine maps, and the one map (layer, channel) <-> flat index.

AttFind searches the styles of the modulated 3x3 convolutions ("conv styles"); the toRGB styles ride along
unchanged. A flat index j addresses conv style j in the order the generator applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StyleCoord:
    """One StyleSpace coordinate: conv layer `layer` (0 = first modulated conv), channel `channel`."""

    layer: int
    channel: int


@dataclass(frozen=True)
class StyleLayout:
    """Widths of the conv styles (in application order) and of the toRGB styles.

    Args:
        conv_dims: channels of each modulated conv's style, e.g. (128, 128, 128, ...).
        rgb_dims: channels of each toRGB style.
        conv_names: human-readable layer names, e.g. ("b4.conv1", "b8.conv0", ...).
    """

    conv_dims: tuple[int, ...]
    rgb_dims: tuple[int, ...]
    conv_names: tuple[str, ...]

    @property
    def num_coords(self) -> int:
        """S: the number of searchable (conv) style coordinates."""
        return sum(self.conv_dims)

    def offsets(self) -> list[int]:
        out, total = [], 0
        for d in self.conv_dims:
            out.append(total)
            total += d
        return out

    def flat_index(self, coord: StyleCoord) -> int:
        if not (0 <= coord.layer < len(self.conv_dims)) or not (0 <= coord.channel < self.conv_dims[coord.layer]):
            raise IndexError(f"{coord} is outside the style layout {self.conv_dims}")
        return self.offsets()[coord.layer] + coord.channel

    def coord(self, flat_index: int) -> StyleCoord:
        if not 0 <= flat_index < self.num_coords:
            raise IndexError(f"flat index {flat_index} outside [0, {self.num_coords})")
        for layer, (off, d) in enumerate(zip(self.offsets(), self.conv_dims, strict=True)):
            if flat_index < off + d:
                return StyleCoord(layer, flat_index - off)
        raise AssertionError("unreachable")


@dataclass
class StyleVector:
    """A batch of styles: one tensor [N, C_l] per modulated conv, and one per toRGB layer.

    A value object: every method returns a new StyleVector and never modifies this one.
    """

    conv: list[torch.Tensor]
    rgb: list[torch.Tensor]
    layout: StyleLayout

    def __post_init__(self):
        assert len(self.conv) == len(self.layout.conv_dims) and len(self.rgb) == len(self.layout.rgb_dims)

    @property
    def batch_size(self) -> int:
        return self.conv[0].shape[0]

    def flatten(self) -> torch.Tensor:
        """Conv styles as one tensor [N, S]."""
        return torch.cat(self.conv, dim=1)

    def unflatten(self, flat: torch.Tensor) -> StyleVector:
        """New StyleVector whose conv styles come from `flat` [N, S]; toRGB styles are kept (N must match)."""
        assert flat.ndim == 2 and flat.shape[1] == self.layout.num_coords, tuple(flat.shape)
        assert flat.shape[0] == self.batch_size, (flat.shape[0], self.batch_size)
        conv = list(torch.split(flat, list(self.layout.conv_dims), dim=1))
        return StyleVector(conv, list(self.rgb), self.layout)

    def index(self, idx: torch.Tensor | list[int] | slice) -> StyleVector:
        """Rows `idx` of the batch (repeats allowed)."""
        return StyleVector([t[idx] for t in self.conv], [t[idx] for t in self.rgb], self.layout)

    def shifted(self, coords: torch.Tensor | int, deltas: torch.Tensor | float) -> StyleVector:
        """Add `deltas` to flat coordinates `coords`.

        Args:
            coords: flat indices, an int or LongTensor [M] (the same coordinates for every row), or [N]
                (one coordinate per row, with deltas [N]).
            deltas: broadcastable to [N, M] (or [N] for per-row coordinates).
        """
        flat = self.flatten().clone()
        coords = torch.as_tensor(coords, device=flat.device)
        deltas = torch.as_tensor(deltas, dtype=flat.dtype, device=flat.device)
        if (
            coords.ndim == 1
            and coords.shape[0] == self.batch_size
            and deltas.ndim == 1
            and deltas.shape == coords.shape
        ):
            rows = torch.arange(self.batch_size, device=flat.device)
            flat[rows, coords] += deltas
        else:
            coords = coords.reshape(-1)
            flat[:, coords] += deltas.expand(flat.shape[0], coords.shape[0])
        return self.unflatten(flat)

    def detach(self) -> StyleVector:
        return StyleVector([t.detach() for t in self.conv], [t.detach() for t in self.rgb], self.layout)

    def to(self, *args, **kwargs) -> StyleVector:
        return StyleVector(
            [t.to(*args, **kwargs) for t in self.conv], [t.to(*args, **kwargs) for t in self.rgb], self.layout
        )

    @staticmethod
    def cat(vectors: list[StyleVector]) -> StyleVector:
        layout = vectors[0].layout
        conv = [torch.cat([v.conv[i] for v in vectors]) for i in range(len(layout.conv_dims))]
        rgb = [torch.cat([v.rgb[i] for v in vectors]) for i in range(len(layout.rgb_dims))]
        return StyleVector(conv, rgb, layout)

"""StyleSpace: the outputs of the generator's per-layer affine maps, and the one map (layer, channel) <-> flat index.

AttFind searches the styles of the modulated 3x3 convolutions ("conv styles"), as in the paper; the toRGB styles
ride along unchanged. A flat index j addresses conv style j in the order the generator applies them. A layout with
`search_rgb` (AttFind's `include_rgb`, not in the paper) adds the toRGB styles after them: flat indices
S_conv .. S_conv + S_rgb - 1, "layers" L .. L + R - 1 named toRGB0, toRGB1, ... (L conv layers, R toRGB layers).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from stylex.errors import StylexError


@dataclass(frozen=True)
class StyleCoord:
    """One StyleSpace coordinate: conv layer `layer` (0 = first modulated conv), channel `channel`; with a
    `search_rgb` layout, layer L + k (L conv layers) is toRGB layer k."""

    layer: int
    channel: int


@dataclass(frozen=True)
class StyleLayout:
    """Widths of the conv styles (in application order) and of the toRGB styles.

    Args:
        conv_dims: channels of each modulated conv's style, e.g. (128, 128, 128, ...).
        rgb_dims: channels of each toRGB style.
        conv_names: human-readable layer names, e.g. ("b4.conv1", "b8.conv0", ...).
        search_rgb: the searchable coordinates include the toRGB styles, after the conv styles.
        tints: how many of toRGB0's last channels are tint styles (`ModelConfig.tint_styles`): constant inputs
            whose styles each add one colour to every pixel.
    """

    conv_dims: tuple[int, ...]
    rgb_dims: tuple[int, ...]
    conv_names: tuple[str, ...]
    search_rgb: bool = False
    tints: int = 0

    def with_rgb(self, search_rgb: bool) -> StyleLayout:
        """This layout with the toRGB styles searchable (True) or not."""
        return self if search_rgb == self.search_rgb else replace(self, search_rgb=bool(search_rgb))

    @property
    def dims(self) -> tuple[int, ...]:
        """Widths of the searchable layers: the conv styles, then (search_rgb) the toRGB styles."""
        return self.conv_dims + (self.rgb_dims if self.search_rgb else ())

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the searchable layers, e.g. ("b4.conv1", ..., "toRGB0", ...)."""
        rgb = tuple(f"toRGB{k}" for k in range(len(self.rgb_dims))) if self.search_rgb else ()
        return self.conv_names + rgb

    @property
    def num_coords(self) -> int:
        """S: the number of searchable style coordinates (conv, and toRGB with search_rgb)."""
        return sum(self.dims)

    def offsets(self) -> list[int]:
        """Flat index of the first coordinate of each searchable layer."""
        out, total = [], 0
        for d in self.dims:
            out.append(total)
            total += d
        return out

    def synthesis_start(self, layer: int) -> int:
        """The conv layer synthesis re-runs from after an edit of searchable layer `layer`: itself for a conv
        layer; for toRGB k, conv layer 2k, whose output it reads (`Generator.synthesis_from`)."""
        n = len(self.conv_dims)
        return layer if layer < n else 2 * (layer - n)

    def flat_index(self, coord: StyleCoord) -> int:
        dims = self.dims
        if not (0 <= coord.layer < len(dims)) or not (0 <= coord.channel < dims[coord.layer]):
            raise IndexError(f"{coord} is outside the style layout {dims}")
        return self.offsets()[coord.layer] + coord.channel

    def coord(self, flat_index: int) -> StyleCoord:
        if not 0 <= flat_index < self.num_coords:
            raise IndexError(f"flat index {flat_index} outside [0, {self.num_coords})")
        for layer, (off, d) in enumerate(zip(self.offsets(), self.dims, strict=True)):
            if flat_index < off + d:
                return StyleCoord(layer, flat_index - off)
        raise AssertionError("unreachable")

    def tint_index(self, flat_index: int) -> int | None:
        """k when searchable coordinate `flat_index` is tint style k (0-based), else None."""
        coord = self.coord(flat_index)
        first = self.rgb_dims[0] - self.tints if self.rgb_dims else 0
        if self.tints and self.search_rgb and coord.layer == len(self.conv_dims) and coord.channel >= first:
            return coord.channel - first
        return None

    def describe(self, flat_index: int) -> str:
        """A coordinate's name, e.g. "b8.conv0[12]", "toRGB1[3]", or "toRGB0[65] (tint 1)" for a tint style."""
        coord = self.coord(flat_index)
        return coordinate_name(self.names[coord.layer], coord.channel, self.tint_index(flat_index))


def coordinate_name(layer_name: str, channel: int, tint: int | None = None) -> str:
    """ "b8.conv0[12]", or "toRGB0[65] (tint 1)" for tint style 1 (`StyleLayout.tint_index`)."""
    return f"{layer_name}[{channel}]" + ("" if tint is None else f" (tint {tint})")


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
        """The searchable styles as one tensor [N, S]: conv styles (then toRGB styles with `search_rgb`)."""
        return torch.cat(self.conv + (self.rgb if self.layout.search_rgb else []), dim=1)

    def unflatten(self, flat: torch.Tensor) -> StyleVector:
        """New StyleVector whose searchable styles come from `flat` [N, S]; the others are kept (N must match)."""
        assert flat.ndim == 2 and flat.shape[1] == self.layout.num_coords, tuple(flat.shape)
        assert flat.shape[0] == self.batch_size, (flat.shape[0], self.batch_size)
        parts = list(torch.split(flat, list(self.layout.dims), dim=1))
        n = len(self.layout.conv_dims)
        rgb = parts[n:] if self.layout.search_rgb else list(self.rgb)
        return StyleVector(parts[:n], rgb, self.layout)

    def with_layout(self, layout: StyleLayout) -> StyleVector:
        """The same styles under `layout` (e.g. `layout.with_rgb(True)`); the widths must match."""
        assert (layout.conv_dims, layout.rgb_dims) == (self.layout.conv_dims, self.layout.rgb_dims)
        return StyleVector(list(self.conv), list(self.rgb), layout)

    def index(self, idx: torch.Tensor | list[int] | slice) -> StyleVector:
        """Rows `idx` of the batch (repeats allowed)."""
        return StyleVector([t[idx] for t in self.conv], [t[idx] for t in self.rgb], self.layout)

    def shifted(
        self, coords: torch.Tensor | int, deltas: torch.Tensor | float, *, per_row: bool | None = None
    ) -> StyleVector:
        """Add `deltas` to flat coordinates `coords`.

        Args:
            coords: flat indices in [0, S), an int or LongTensor [M] (the same coordinates for every row; a
                coordinate listed twice gets both deltas), or, with `per_row`, [N] (one coordinate per row).
            deltas: broadcastable to [N, M]; with `per_row`, [N] (one delta per row) or one number for every row.
            per_row: True: row i gets deltas[i] on coords[i]. False: every row gets deltas on all of coords.
                None (default): decided by the shapes where they allow one reading only; N coordinates for N > 1
                rows could mean either and are refused.
        """
        flat = self.flatten().clone()
        n, S = flat.shape
        coords = torch.as_tensor(coords, device=flat.device)
        deltas = torch.as_tensor(deltas, dtype=flat.dtype, device=flat.device)
        if coords.dtype.is_floating_point or coords.dtype == torch.bool or coords.ndim > 1:
            raise StylexError(f"shifted() takes whole-number coordinates, one or a list; got {coords.dtype} "
                              f"{list(coords.shape)}.")  # fmt: skip
        if coords.device.type == "cpu" and coords.numel() and not (0 <= int(coords.min()) and int(coords.max()) < S):
            # (on a GPU this check would wait for the device at every edit batch of AttFind; indexing still fails)
            raise StylexError(f"shifted(): coordinates must be in [0, {S}); got {coords.tolist()}.")
        rows_n = coords.ndim == 1 and coords.shape[0] == n
        if per_row is None:
            if rows_n and n > 1 and deltas.ndim <= 1:
                raise StylexError(
                    f"shifted() got {n} coordinates for {n} rows: pass per_row=True (row i gets its delta on "
                    "coords[i]) or per_row=False (every row gets the deltas on every one of the coordinates)."
                )
            per_row = rows_n and deltas.shape == coords.shape
        if per_row:
            if deltas.ndim == 0 and rows_n:
                deltas = deltas.expand(coords.shape)
            if not (rows_n and deltas.shape == coords.shape):
                raise StylexError(
                    f"shifted(per_row=True) takes one coordinate and one delta per row ([{n}] each); got "
                    f"coords {list(coords.shape)} and deltas {list(deltas.shape)}."
                )
            flat[torch.arange(n, device=flat.device), coords] += deltas
            return self.unflatten(flat)
        coords = coords.reshape(-1)
        try:
            spread = deltas.expand(n, coords.shape[0])
        except RuntimeError:
            raise StylexError(
                f"shifted(): deltas {list(deltas.shape)} do not fit {n} rows and {coords.shape[0]} coordinates "
                f"(give one number, [{coords.shape[0]}], or [{n}, {coords.shape[0]}])."
            ) from None
        flat.index_add_(1, coords, spread)
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


def use_rgb_coordinates(G, on: bool | None) -> bool:
    """Make `G`'s StyleSpace searchable with (on) or without its toRGB styles: `G.layout` and so every
    StyleVector `G.styles` returns from now on. AttFind's `include_rgb`; a saved result records it
    (`AttFindResult.settings["include_rgb"]`), and whatever loads that result calls this with it.
    None: on exactly when `G` has tint styles (`ModelConfig.tint_styles`), which are toRGB coordinates.
    Returns the setting used."""
    on = getattr(G, "tint_styles", 0) > 0 if on is None else bool(on)
    G.layout = G.layout.with_rgb(on)
    return on
